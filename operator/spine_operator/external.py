"""Adapter for the operator's HTTP calls to runtimes: config push, with explicit timeouts.

DESIGN.md, Config delivery: the operator pushes a runtime's new config to its admin endpoint so
it applies within a second; the runtime also watches its mounted ConfigMap, so a failed push is
a delay (about a minute), never a loss.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import httpx

PUSH_TIMEOUT = httpx.Timeout(3.0, connect=1.0)
# httpx builds a TLS context for every client (the CA bundle loaded, ~15 ms of CPU on the event
# loop: two thirds of the operator's busy time with 200 Spines, benchmarks/reports/operator.md).
# Pushes are plain HTTP inside the cluster; one context, made once, serves every client.
_TLS_CONTEXT = ssl.create_default_context()


def unreachable_cause(error: httpx.HTTPError) -> str:
    """Why a runtime could not be reached, in words that stay the same from one attempt to the
    next: the status carries it, and a message that flips between ConnectError and
    ConnectTimeout would rewrite the status on every poll with no news in it."""
    if isinstance(error, httpx.TimeoutException) and not isinstance(error, httpx.ConnectTimeout):
        return "no answer in time"
    if isinstance(error, httpx.TransportError):
        return "no connection"
    return "HTTP error"


@dataclass(frozen=True)
class PushResult:
    delivered: bool
    message: str


async def push_config(base_url: str, token: str, document: str) -> PushResult:
    """PUT the document to `<base_url>/admin/config`; never raises for network trouble."""
    try:
        async with httpx.AsyncClient(timeout=PUSH_TIMEOUT, verify=_TLS_CONTEXT) as client:
            response = await client.put(
                f"{base_url}/admin/config",
                content=document,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
    except httpx.HTTPError as error:
        return PushResult(False, f"{base_url} is not reachable ({unreachable_cause(error)})")
    if response.status_code == 200:
        applied = response.json().get("applied")
        return PushResult(True, "applied" if applied else "already current")
    try:
        detail = response.json().get("detail") or response.json().get("error")
    except ValueError:
        detail = response.text[:200]
    return PushResult(False, f"{base_url} refused the config ({response.status_code}): {detail}")
