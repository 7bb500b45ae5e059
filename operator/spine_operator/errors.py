"""The error tree of a reconcile: each error carries its condition reason and its retry policy.

CONVENTIONS.md's table in one place, so every kind fails the same way:

| error | condition (Ready=False unless said) | retried? |
| --- | --- | --- |
| InvalidSpec | InvalidSpec: what to fix | no: re-checked when the spec changes |
| InvalidReference | InvalidReference: both sides named | no: re-checked on either side |
| DependencyNotFound, SpineNotFound | the same reason | yes, with backoff; and when it appears |
| DependencyNotReady | DependencyNotReady | yes, with backoff; and when it is ready |
| DependencyUnavailable | Degraded=True, DependencyUnavailable | yes, with backoff |
| ApplyConflict (409, 429, 5xx) | none: it heals by itself | yes, after 5 s |
| ApplyRefused (other 4xx) | ApplyFailed: the API server's answer | yes, after 60 s |

Pure: the reconcile core turns these into kopf's errors; plans return them as refusals.
"""

from __future__ import annotations

from pydantic import ValidationError

from spine_operator import conditions as cond
from spine_runtime.common.configsource import describe_validation_error


class ReconcileError(Exception):
    """Why a reconcile did not reach its goal; `message` is one or two sentences to act on."""

    reason: str = cond.APPLY_FAILED
    retried: bool = True
    delay: float | None = None  # None: the operator's retry delay for missing dependencies
    degraded: bool = False  # reported as Degraded=True as well as Ready=False
    reported: bool = True  # written into the status (conflicts heal without a word)

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message[:1].upper() + message[1:]
        if reason is not None:
            self.reason = reason


class InvalidSpec(ReconcileError):
    reason = cond.INVALID_SPEC
    retried = False

    @classmethod
    def of(cls, error: ValidationError, prefix: str = "spec") -> InvalidSpec:
        return cls(f"Invalid spec: {describe_validation_error(error, prefix=prefix)}")


class InvalidReference(ReconcileError):
    reason = cond.INVALID_REFERENCE
    retried = False


class DependencyNotFound(ReconcileError):
    reason = cond.DEPENDENCY_NOT_FOUND


class SpineNotFound(DependencyNotFound):
    reason = cond.SPINE_NOT_FOUND

    @classmethod
    def in_namespace(cls, namespace: str, what: str) -> SpineNotFound:
        return cls(
            f"Namespace {namespace} has no Spine: apply one (kind: Spine, spec: {{}}) to get "
            f"a broker and a twin service; {what} as soon as it exists"
        )


class DependencyNotReady(ReconcileError):
    reason = cond.DEPENDENCY_NOT_READY


class DependencyUnavailable(ReconcileError):
    reason = cond.DEPENDENCY_UNAVAILABLE
    degraded = True


class ApplyConflict(ReconcileError):
    reason = cond.APPLY_FAILED
    delay = 5.0
    reported = False


class ApplyRefused(ReconcileError):
    reason = cond.APPLY_FAILED
    delay = 60.0


def is_permanent(reason: str) -> bool:
    """Whether a reason reported earlier can only heal by a change of the spec or a reference."""
    return reason in (cond.INVALID_SPEC, cond.INVALID_REFERENCE, cond.DUPLICATE_SPINE)
