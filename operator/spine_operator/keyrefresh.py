"""The operator's one background task that keeps each namespace's OIDC keys fresh.

The proxy reconcile (`reconcile/kinds.py`) tells it which namespaces set `auth` (`watch`); the
task, started with the operator (`handlers.configure`), refreshes each one's `oidc.KeyCache`
entry every `refreshSeconds` and, when the keys (or whether they could be fetched) change,
reconciles that namespace's proxy, which pushes the new key files and haproxy.cfg. An outage keeps
the last good keys; the Spine reports it as Degraded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from spine_operator.api.spine import AuthSpec
from spine_operator.desired.haproxy import VerifyKey
from spine_operator.desired.proxy import KeysInput
from spine_operator.oidc import KeyCache, KeyState

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0  # how often due namespaces are looked for; each has its own refreshSeconds


@dataclass
class Watched:
    auth: AuthSpec
    due: float = 0.0  # loop time of the next refresh; 0: at once


def _fingerprint(state: KeyState) -> tuple:
    return (tuple((key.kid, key.alg, key.pem) for key in state.keys), state.error is None)


class KeyRefresher:
    def __init__(self, cache: KeyCache | None = None) -> None:
        self.cache = cache or KeyCache()
        self.watched: dict[str, Watched] = {}
        # (namespace, issuer, jwks URI) whose keys this operator run has fetched or tried to.
        self.primed: set[tuple[str, str, str | None]] = set()
        self.on_change: Callable[[str], Awaitable[None]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def reset(self) -> None:
        """Forget an earlier operator run in this process (tests start several)."""
        self.watched.clear()
        self.primed.clear()
        self.cache = type(self.cache)()

    def inputs(self, namespace: str) -> KeysInput:
        """What the proxy plan of a namespace gets: the last good keys and the last error."""
        state = self.cache.state(namespace)
        return KeysInput(state.keys, state.fetched_at, state.error)

    def watch(self, namespace: str, auth: AuthSpec | None) -> None:
        """Keep (or stop keeping) a namespace's keys; a new issuer is fetched at once."""
        current = self.watched.get(namespace)
        if auth is None:
            if current is not None:
                del self.watched[namespace]
                self.cache.forget(namespace)
            return
        if current is None or current.auth != auth:
            if current is not None and current.auth.issuer != auth.issuer:
                self.cache.forget(namespace)
            self.watched[namespace] = Watched(auth)
            self._wake.set()

    async def prime(self, namespace: str, deployed: Sequence[VerifyKey]) -> None:
        """Before a namespace's first proxy plan in this operator run (or for a new issuer):
        the keys the running proxy already has are the last good ones, then one fetch. So an
        operator restart neither renders a proxy without keys (every route 503) until the
        refresher's first round, nor drops the keys while the issuer is down."""
        watched = self.watched.get(namespace)
        if watched is None:
            return
        auth = watched.auth
        source = (namespace, auth.issuer, auth.jwks_uri)
        if source in self.primed:
            return
        self.primed.add(source)
        allowed = [key for key in deployed if key.alg in auth.algorithms]
        self.cache.seed(namespace, auth.issuer, auth.jwks_uri, allowed)
        await self.refresh(namespace, notify=False)

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self.run(), name="spine-key-refresher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run(self) -> None:
        while True:
            await self.refresh_due()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_SECONDS)

    async def refresh_due(self) -> None:
        now = asyncio.get_running_loop().time()
        due = [ns for ns, watched in self.watched.items() if watched.due <= now]
        await asyncio.gather(*(self.refresh(namespace) for namespace in due))

    async def refresh(self, namespace: str, notify: bool = True) -> None:
        watched = self.watched.get(namespace)
        if watched is None:
            return
        auth = watched.auth
        watched.due = asyncio.get_running_loop().time() + auth.refresh_seconds
        before = _fingerprint(self.cache.state(namespace))
        try:
            state = await self.cache.refresh(
                namespace, auth.issuer, auth.jwks_uri, list(auth.algorithms)
            )
        except Exception:  # one issuer's trouble must never stop the others' refreshes
            log.exception("Refreshing the keys of %s failed", auth.issuer)
            return
        if state.error:
            log.warning("Keys of %s (namespace %s): %s", auth.issuer, namespace, state.error)
        if notify and _fingerprint(state) != before and self.on_change is not None:
            try:
                await self.on_change(namespace)
            except Exception:
                log.exception("Reconciling the proxy of %s after a key change failed", namespace)
