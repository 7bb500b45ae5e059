"""Stand-in for the specs-keys branch's OIDC key cache, with the brief's interface.

The real module discovers the issuer's JWKS, fetches it with httpx and converts each key to a PEM
with joserfc; this stand-in fetches nothing and says so, so every protected route answers 503
(fail-closed) until that branch is merged. Used by the operator's key refresher (keyrefresh.py).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from spine_operator.desired.haproxy import VerifyKey


@dataclass(frozen=True)
class KeyState:
    keys: tuple[VerifyKey, ...]
    fetched_at: float | None
    error: str | None


class KeyCache:
    def __init__(self) -> None:
        self._states: dict[Hashable, KeyState] = {}

    async def refresh(
        self, key: Hashable, issuer: str, jwks_uri: str | None, algorithms: Sequence[str]
    ) -> KeyState:
        previous = self.state(key)
        state = KeyState(
            previous.keys,
            previous.fetched_at,
            f"the keys of {issuer} were not fetched: this build has no JWKS client",
        )
        self._states[key] = state
        return state

    def state(self, key: Hashable) -> KeyState:
        return self._states.get(key, KeyState((), None, None))

    def forget(self, key: Hashable) -> None:
        self._states.pop(key, None)
