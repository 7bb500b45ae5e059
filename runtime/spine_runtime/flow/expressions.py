"""JSONata for flows, behind one small interface: compile once, evaluate many times, bounded.

The config model (`spine_runtime.config.flow`) compiles every expression when a flow is
validated, so the operator refuses a bad one when a Flow is applied and the engine never starts
a flow it cannot run. The engine is jlens (Rust, MIT), pinned in pyproject.toml: of the
candidates measured (benchmarks/reports/flow.md) it is among the fastest and the only one that
reports the position of a compile or run-time error, and it bounds an evaluation (time, depth,
result size). Nothing outside this module imports jlens, so the engine can be swapped here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jlens

ENGINE = f"jlens {jlens.__version__}"
MAX_EXPRESSION_CHARS = 4096
# Bounds on one evaluation: a user expression cannot stall the engine or fill its memory.
DEFAULT_TIMEOUT_SECONDS = 0.25
MAX_DEPTH = 64
MAX_RESULT_BYTES = 1024 * 1024
MAX_ARRAY_LENGTH = 100_000
MAX_STRING_BYTES = 1024 * 1024


class ExpressionError(ValueError):
    """An expression that does not compile or failed to evaluate; says where and why."""

    def __init__(self, message: str, code: str | None = None, position: int | None = None):
        self.message = message
        self.code = code
        self.position = position
        where = f" at position {position}" if position is not None else ""
        tag = f" ({code})" if code else ""
        super().__init__(f"{message}{tag}{where}")


def _error_from(error: Exception) -> ExpressionError:
    code = getattr(error, "code", None)
    position = getattr(error, "position", None)
    message = str(error) or type(error).__name__
    return ExpressionError(
        message,
        code if isinstance(code, str) else None,
        position if isinstance(position, int) else None,
    )


@dataclass(frozen=True)
class Expression:
    """A compiled JSONata expression. `evaluate` returns None for an undefined result."""

    source: str
    _compiled: Any
    timeout: float = DEFAULT_TIMEOUT_SECONDS

    def evaluate(self, data: Any, bindings: dict[str, Any] | None = None) -> Any:
        try:
            return self._compiled.evaluate(
                data,
                bindings,
                timeout=self.timeout,
                max_depth=MAX_DEPTH,
                max_result_size=MAX_RESULT_BYTES,
                max_array_length=MAX_ARRAY_LENGTH,
                max_string_length=MAX_STRING_BYTES,
            )
        except jlens.JlensError as error:
            raise _error_from(error) from None
        except (ValueError, TypeError, OverflowError, RecursionError) as error:
            raise ExpressionError(str(error) or type(error).__name__) from None

    def with_timeout(self, seconds: float) -> Expression:
        return Expression(self.source, self._compiled, seconds)


def compile_expression(source: str) -> Expression:
    """Compile `source`; raises ExpressionError naming the position of the problem."""
    if len(source) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"is longer than {MAX_EXPRESSION_CHARS} characters")
    if not source.strip():
        raise ExpressionError("is empty")
    try:
        return Expression(source, jlens.Expression(source))
    except jlens.JlensError as error:
        raise _error_from(error) from None
    except (ValueError, TypeError, RecursionError) as error:
        raise ExpressionError(str(error) or type(error).__name__) from None


def truthy(value: Any) -> bool:
    """JSONata's boolean cast ($boolean), for filters: undefined, null, false, 0, "", an empty
    array or object, and an array of only such values are false."""
    if value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value != ""
    if isinstance(value, list):
        return any(truthy(item) for item in value)
    if isinstance(value, dict):
        return len(value) > 0
    return True
