"""Stand-in for the specs-keys branch's spec fetcher, with the brief's interface.

It checks the URL against the allowed hosts and prefixes and fetches it with httpx, a timeout and
a size limit; the real module replaces this file when that branch is merged. Called by the
proxy reconcile's gather step (reconcile/gather.py).
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit

import httpx

from spine_operator.errors import DependencyUnavailable, InvalidSpec
from spine_operator.specs import MAX_SPEC_BYTES


async def fetch_spec(
    url: str,
    *,
    allowed_hosts: Collection[str],
    allowed_prefixes: Collection[str],
    timeout: float = 5.0,
    max_bytes: int = MAX_SPEC_BYTES,
) -> bytes:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidSpec(f"spec URL {url} is not http(s)")
    if parts.hostname not in allowed_hosts and not any(url.startswith(p) for p in allowed_prefixes):
        raise InvalidSpec(
            f"spec URL {url} is neither a Service of the namespace nor under the Spine's "
            "proxy.specUrlAllowList"
        )
    try:
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code // 100 != 2:
                raise DependencyUnavailable(f"spec URL {url} answered {response.status_code}")
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise DependencyUnavailable(f"spec URL {url} is larger than {max_bytes}")
            return body
    except httpx.HTTPError as error:
        raise DependencyUnavailable(f"spec URL {url} cannot be read: {error!r}"[:300]) from None
