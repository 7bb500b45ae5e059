"""The newest valid config of a runtime, from its mounted file or pushed by the operator.

DESIGN.md, "Config delivery": the operator pushes a new document to the runtime's admin endpoint
so it applies within a second, and the runtime also watches its mounted file (kubelet refreshes a
ConfigMap within about a minute) so a missed push still converges. Only a *change* of the file is
acted on, so a file that still holds the previous document never reverts a newer push.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from spine_runtime.common.errors import ConfigError
from spine_runtime.config.base import PATTERN_HINTS

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


def describe_validation_error(error: ValidationError, prefix: str = "") -> str:
    """One part per problem, `path.to.field: reason`, the way users read a spec error."""
    lines = []
    for problem in error.errors():
        parts = [prefix] if prefix else []
        for part in problem["loc"]:
            if isinstance(part, int):
                parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
            else:
                parts.append(str(part))
        path = ".".join(parts) or "(document)"
        lines.append(f"{path}: {_readable(problem)}")
    return "; ".join(lines)


def _readable(problem: Any) -> str:
    if problem["type"] == "string_pattern_mismatch":
        pattern = problem.get("ctx", {}).get("pattern", "")
        hint = PATTERN_HINTS.get(pattern, f"must match the pattern {pattern}")
        return (
            f"{str(problem.get('input'))[:80]!r} {hint.replace('must', 'is invalid: it must', 1)}"
        )
    message = str(problem["msg"])
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


@functools.cache
def _no_alias_loader() -> Any:
    """A YAML SafeLoader without anchors and aliases: a config needs none, and a few nested
    aliases expand into an exponential amount of work for the validation that walks the
    document. Built on first use: the rendered configs are JSON, and a runtime that never reads
    YAML does not carry PyYAML (1.5 MiB of its RSS)."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, "aliases (*name) are not allowed in a config", event.start_mark
                )
            return super().compose_node(parent, index)

    return NoAliasLoader


def parse_config(model: type[M], raw: bytes | str) -> M:
    """Parse a JSON or YAML document into `model`, raising ConfigError with a readable message."""
    try:
        # JSON (what the operator renders and pushes) first: far cheaper than YAML.
        data = json.loads(raw)
    except ValueError:
        data = _parse_yaml(raw)
    except RecursionError:
        raise ConfigError("the document is nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError("the document must be a mapping")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error)) from None
    except RecursionError:
        raise ConfigError("the document is nested too deeply") from None


def _parse_yaml(raw: bytes | str) -> Any:
    import yaml

    try:
        return yaml.load(raw, Loader=_no_alias_loader())  # a SafeLoader
    except yaml.YAMLError as error:
        raise ConfigError(f"not valid JSON or YAML: {error}") from None
    except RecursionError:
        raise ConfigError("the document is nested too deeply") from None


def digest_of(config: BaseModel) -> str:
    canonical = json.dumps(config.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ConfigSource(Generic[M]):
    """Holds the current config and applies a new one at most once per distinct content."""

    def __init__(
        self,
        model: type[M],
        path: Path,
        on_change: Callable[[M], Awaitable[None]] | None = None,
    ) -> None:
        self.model = model
        self.path = path
        self.on_change = on_change
        self.current: M = parse_config(model, path.read_bytes())
        self.digest = digest_of(self.current)
        self._file_digest = self._read_file_digest()
        self._lock = asyncio.Lock()

    def _read_file_digest(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    async def offer(self, raw: bytes | str, origin: str) -> bool:
        """Validate a document and apply it if it differs from the current one.

        Returns whether it was applied; raises ConfigError (nothing changes) when it is invalid.
        """
        config = parse_config(self.model, raw)
        digest = digest_of(config)
        async with self._lock:
            if digest == self.digest:
                return False
            if self.on_change is not None:
                await self.on_change(config)
            self.current, self.digest = config, digest
        log.info("Applied config %s from %s", digest[:12], origin)
        return True

    async def watch(self, interval: float = 0.5) -> None:
        """Poll the mounted file's content; ConfigMap updates swap a symlink, so mtimes lie."""
        while True:
            await asyncio.sleep(interval)
            file_digest = await asyncio.to_thread(self._read_file_digest)
            if file_digest is None or file_digest == self._file_digest:
                continue
            self._file_digest = file_digest
            try:
                await self.offer(await asyncio.to_thread(self.path.read_bytes), str(self.path))
            except ConfigError as error:
                log.error("Ignored invalid config file %s: %s", self.path, error)
