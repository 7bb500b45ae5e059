"""Adapter: fetch a ServiceRegistration's spec from its `spec.url`, and only from where allowed.

The registration reconcile calls `fetch_spec` with the namespace's Service DNS names as
`allowed_hosts` and the Spine's allow-list as `allowed_prefixes`, so a user cannot make the
operator read arbitrary addresses from inside the cluster. Redirects are followed only to
allowed targets; one deadline covers the whole fetch; the body is streamed with a byte limit.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Collection
from urllib.parse import unquote, urlsplit

import httpx

from spine_operator.errors import DependencyUnavailable, InvalidSpec
from spine_operator.external import unreachable_cause
from spine_operator.specs import MAX_SPEC_BYTES

MAX_REDIRECTS = 3
_TLS_CONTEXT = ssl.create_default_context()  # once: httpx would load the CA bundle per client
ACCEPT = "application/json, application/yaml, application/x-yaml, text/yaml;q=0.9, */*;q=0.1"


def service_host_names(service: str, namespace: str) -> list[str]:
    """The names a Service of the namespace answers to: what `allowed_hosts` should hold."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def url_refusal(
    url: str, allowed_hosts: Collection[str], allowed_prefixes: Collection[str]
) -> str | None:
    """Why the operator may not fetch `url` (None if it may).

    A prefix is matched by its parts, not as text, so `http://specs` does not admit
    `http://specs.evil.example/` and `http://specs/a/` does not admit `/a/../admin`.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        return f"{url!r} is not a valid URL ({error})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http:// or https:// URL"
    if parts.username is not None or parts.password is not None:
        return f"{url!r} carries credentials; put none in a spec URL"
    segments = unquote(parts.path).split("/")
    if ".." in segments or "." in segments:
        return f"{url!r} has '.' or '..' segments in its path"
    host = parts.hostname.rstrip(".").lower()
    if host in {name.rstrip(".").lower() for name in allowed_hosts}:
        return None
    for prefix in allowed_prefixes:
        try:
            allowed = urlsplit(prefix)
            allowed_port = allowed.port
        except ValueError:
            continue
        if (
            allowed.scheme == parts.scheme
            and (allowed.hostname or "").rstrip(".").lower() == host
            and (allowed_port or _default_port(allowed.scheme))
            == (port or _default_port(parts.scheme))
            and _path_within(parts.path or "/", allowed.path or "/")
        ):
            return None
    return (
        f"{url!r} is neither a Service of this namespace nor under a prefix the Spine allows "
        "for spec URLs"
    )


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _path_within(path: str, prefix: str) -> bool:
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


async def fetch_spec(
    url: str,
    *,
    allowed_hosts: Collection[str],
    allowed_prefixes: Collection[str],
    timeout: float = 5.0,
    max_bytes: int = MAX_SPEC_BYTES,
) -> bytes:
    """The spec's bytes; InvalidSpec if the URL (or a redirect) is not allowed,
    DependencyUnavailable for a timeout, no connection, non-2xx or a body over `max_bytes`."""
    refusal = url_refusal(url, allowed_hosts, allowed_prefixes)
    if refusal is not None:
        raise InvalidSpec(f"Spec URL refused: {refusal}")
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(url, allowed_hosts, allowed_prefixes, timeout, max_bytes)
    except TimeoutError:
        raise DependencyUnavailable(f"Spec {url} did not arrive within {timeout:g} s") from None
    except httpx.HTTPError as error:
        raise DependencyUnavailable(
            f"Spec {url} is not reachable ({unreachable_cause(error)})"
        ) from None


async def _fetch(
    url: str,
    allowed_hosts: Collection[str],
    allowed_prefixes: Collection[str],
    timeout: float,
    max_bytes: int,
) -> bytes:
    # trust_env=False: an HTTP(S)_PROXY of the operator's environment must not carry in-cluster
    # fetches elsewhere; redirects are followed here, each target checked first.
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False, verify=_TLS_CONTEXT
    ) as client:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            async with client.stream("GET", current, headers={"Accept": ACCEPT}) as response:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    target = str(response.url.join(location))
                    refusal = url_refusal(target, allowed_hosts, allowed_prefixes)
                    if refusal is not None:
                        raise InvalidSpec(f"Spec URL {url} redirects to a refused URL: {refusal}")
                    current = target
                    continue
                if not response.is_success:
                    raise DependencyUnavailable(
                        f"Spec {current} answered HTTP {response.status_code}"
                        f" {response.reason_phrase}".rstrip()
                    )
                return await _read_limited(response, current, max_bytes)
        raise DependencyUnavailable(f"Spec {url} redirects more than {MAX_REDIRECTS} times")


async def _read_limited(response: httpx.Response, url: str, max_bytes: int) -> bytes:
    too_large = DependencyUnavailable(f"Spec {url} is larger than {max_bytes} bytes")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    return bytes(body)
