"""Adapter: the OIDC issuer's signing keys, as the PEM files the namespace's proxy verifies with.

The operator's key refresh calls `KeyCache.refresh` every `auth.refreshSeconds` per Spine; it
finds the JWKS through the issuer's discovery document (unless `jwksUri` is set), fetches it
with httpx (timeouts, a size limit) and turns it into `VerifyKey`s with `jwks_to_verify_keys`
(joserfc). An outage keeps the last good keys and reports the error, so a rotated key appears
after the next good refresh and a flaky issuer never empties the proxy's key files.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import ssl
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from spine_operator.desired.haproxy import KEY_ID_PATTERN, VerifyKey
from spine_operator.external import unreachable_cause

DISCOVERY_PATH = "/.well-known/openid-configuration"
FETCH_TIMEOUT = httpx.Timeout(5.0, connect=2.0)
# For discovery and JWKS together, so an issuer dripping bytes cannot hold a refresh longer.
REFRESH_DEADLINE_SECONDS = 10.0
# Made once: httpx would build a TLS context (the CA bundle loaded, ~15 ms of CPU) per client.
_TLS_CONTEXT = ssl.create_default_context()
MAX_DOCUMENT_BYTES = 256 * 1024  # a JWKS of a few dozen keys is a few tens of KB
MAX_KEYS = 32  # ProxyAuth.keys holds at most this many
MIN_RSA_BITS = 2048
# HAProxy 2.6's jwt_verify: RS* and ES*; PS* is refused when the config is parsed.
RSA_ALGORITHMS = ("RS256", "RS384", "RS512")
EC_ALGORITHM_OF_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
UNSUPPORTED_BY_HAPROXY = ("PS256", "PS384", "PS512")
_KID = re.compile(KEY_ID_PATTERN)


class JwksError(ValueError):
    """A document that is not a usable JWKS; the message says why."""


def convert_jwks(jwks: Any, algorithms: Sequence[str]) -> tuple[list[VerifyKey], list[str]]:
    """The verify keys (one per usable key and algorithm) and why each other key was dropped."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise JwksError('not a JWKS: expected a JSON object with a "keys" list')
    keys: list[VerifyKey] = []
    dropped: list[str] = []
    seen: set[tuple[str, str]] = set()
    for index, entry in enumerate(jwks["keys"]):
        name = f"key {index}"
        if isinstance(entry, dict) and isinstance(entry.get("kid"), str):
            name = f"key {entry['kid'][:64]!r}"
        try:
            for verify_key in _convert_one(entry, algorithms):
                pair = (verify_key.kid, verify_key.alg)
                if pair in seen:
                    raise JwksError(f"a second key with kid {verify_key.kid} and {verify_key.alg}")
                if len(keys) >= MAX_KEYS:
                    raise JwksError(f"more than {MAX_KEYS} keys; the proxy takes the first ones")
                seen.add(pair)
                keys.append(verify_key)
        except JwksError as reason:
            dropped.append(f"{name}: {reason}")
    return keys, dropped


def jwks_to_verify_keys(jwks: dict, algorithms: Sequence[str]) -> list[VerifyKey]:
    """The public keys of a JWKS as PEM, each pinned to one algorithm (pure)."""
    return convert_jwks(jwks, algorithms)[0]


def _convert_one(entry: Any, algorithms: Sequence[str]) -> list[VerifyKey]:
    if not isinstance(entry, dict):
        raise JwksError("not a JSON object")
    if entry.get("use", "sig") != "sig":
        raise JwksError(f"use {entry.get('use')!r}, not sig")
    operations = entry.get("key_ops")
    if isinstance(operations, list) and "verify" not in operations:
        raise JwksError("key_ops does not include verify")
    kty = entry.get("kty")
    if kty not in ("RSA", "EC"):
        # oct keys are shared secrets: never written to a file or a ConfigMap.
        raise JwksError(f"kty {kty!r}: the proxy verifies RSA and EC keys only")
    if kty == "RSA":
        # Checked before joserfc reads the key: it only warns about a short one.
        bits = _rsa_bits(entry.get("n"))
        if bits < MIN_RSA_BITS:
            raise JwksError(f"an RSA key of {bits} bits; at least {MIN_RSA_BITS} are needed")
    try:
        # One key at a time: a malformed key is dropped, the others stay usable.
        key = KeySet.import_key_set({"keys": [entry]}).keys[0]
    except (JoseError, ValueError, TypeError, KeyError) as error:
        raise JwksError(f"cannot be read ({error})") from None
    kid = entry.get("kid")
    if kid is None:
        # Tokens of an issuer without kids are matched by RFC 7638's thumbprint, which is
        # stable across refreshes (the proxy's ACLs and file names must not change).
        kid = key.thumbprint()
    if not isinstance(kid, str) or not _KID.match(kid):
        raise JwksError("kid must be up to 128 letters, digits, '.', '_' and '-'")
    if not isinstance(key, (RSAKey, ECKey)):
        raise JwksError("not an RSA or EC key")
    pem = key.as_pem(private=False).decode()  # never the private parts, if the JWKS had them
    return [
        VerifyKey.model_validate({"kid": kid, "alg": alg, "pem": pem})
        for alg in _algorithms_of(key, entry, algorithms)
    ]


def _rsa_bits(modulus: Any) -> int:
    if not isinstance(modulus, str):
        raise JwksError("an RSA key without its modulus n")
    try:
        raw = base64.urlsafe_b64decode(modulus + "=" * (-len(modulus) % 4))
    except ValueError:
        raise JwksError("an RSA key whose n is not base64url") from None
    return int.from_bytes(raw, "big").bit_length()


def _algorithms_of(
    key: RSAKey | ECKey, entry: dict[str, Any], algorithms: Sequence[str]
) -> list[str]:
    if isinstance(key, RSAKey):
        fitting: tuple[str, ...] = RSA_ALGORITHMS
    else:
        curve = entry.get("crv")
        if curve not in EC_ALGORITHM_OF_CURVE:
            raise JwksError(f"curve {curve!r}: the proxy verifies P-256, P-384 and P-521")
        fitting = (EC_ALGORITHM_OF_CURVE[curve],)
    declared = entry.get("alg")
    if declared is not None:
        if declared in UNSUPPORTED_BY_HAPROXY:
            raise JwksError(f"alg {declared}: HAProxy 2.6 cannot verify PS* signatures")
        if declared not in fitting:
            raise JwksError(f"alg {declared!r} does not fit a {entry.get('kty')} key")
        if declared not in algorithms:
            raise JwksError(f"alg {declared} is not among the Spine's algorithms")
        return [declared]
    chosen = [alg for alg in algorithms if alg in fitting]
    if not chosen:
        raise JwksError(
            f"none of the Spine's algorithms ({', '.join(algorithms)}) fits a "
            f"{entry.get('kty')} key"
        )
    return chosen


@dataclass(frozen=True)
class KeyState:
    keys: tuple[VerifyKey, ...]
    fetched_at: float | None  # time.time() of the last good refresh
    error: str | None  # of the LAST attempt; keys are the last good ones
    dropped: tuple[str, ...] = field(default=())  # keys of the last good JWKS left out, and why


EMPTY_STATE = KeyState(keys=(), fetched_at=None, error=None)


class KeyCache:
    """The last good keys of each Spine's issuer (keyed by whatever the caller chooses)."""

    def __init__(
        self,
        *,
        timeout: httpx.Timeout = FETCH_TIMEOUT,
        max_bytes: int = MAX_DOCUMENT_BYTES,
        deadline: float = REFRESH_DEADLINE_SECONDS,
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.deadline = deadline
        self._states: dict[Hashable, KeyState] = {}
        self._sources: dict[Hashable, tuple[str, str | None]] = {}

    def state(self, key: Hashable) -> KeyState:
        return self._states.get(key, EMPTY_STATE)

    def forget(self, key: Hashable) -> None:
        self._states.pop(key, None)
        self._sources.pop(key, None)

    def seed(
        self, key: Hashable, issuer: str, jwks_uri: str | None, keys: Sequence[VerifyKey]
    ) -> None:
        """Take keys fetched by an earlier run (the running proxy's) as the last good ones,
        unless this cache has fetched for `key` already."""
        if key in self._states or not keys:
            return
        self._states[key] = KeyState(tuple(keys), None, None)
        self._sources[key] = (issuer, jwks_uri)

    def _last_good(
        self, key: Hashable, source: tuple[str, str | None], algorithms: Sequence[str]
    ) -> KeyState:
        """What an outage keeps: the keys of the same issuer (and JWKS URI) only, and only for
        algorithms still allowed; keys of an issuer the Spine no longer names would keep
        verifying for it, so a changed issuer that fails leaves none (the proxy answers 503)."""
        previous = self.state(key)
        if self._sources.get(key) != source:
            return EMPTY_STATE
        kept = tuple(verify_key for verify_key in previous.keys if verify_key.alg in algorithms)
        return KeyState(kept, previous.fetched_at, previous.error, previous.dropped)

    async def refresh(
        self, key: Hashable, issuer: str, jwks_uri: str | None, algorithms: Sequence[str]
    ) -> KeyState:
        source = (issuer, jwks_uri)
        previous = self._last_good(key, source, algorithms)
        try:
            async with asyncio.timeout(self.deadline):
                keys, dropped = await self._fetch_keys(issuer, jwks_uri, algorithms)
        except (JwksError, httpx.HTTPError, TimeoutError) as error:
            if isinstance(error, JwksError):
                message = str(error)
            elif isinstance(error, httpx.HTTPError):
                message = _describe(error)
            else:
                message = f"issuer {issuer} did not answer within {self.deadline:g} s"
            state = KeyState(previous.keys, previous.fetched_at, message, previous.dropped)
        else:
            state = KeyState(tuple(keys), time.time(), None, tuple(dropped))
            self._sources[key] = source
        self._states[key] = state
        return state

    async def _fetch_keys(
        self, issuer: str, jwks_uri: str | None, algorithms: Sequence[str]
    ) -> tuple[list[VerifyKey], list[str]]:
        async with httpx.AsyncClient(
            timeout=self.timeout,
            follow_redirects=True,
            max_redirects=3,
            trust_env=False,
            verify=_TLS_CONTEXT,
        ) as client:
            if jwks_uri is None:
                discovery_url = issuer.rstrip("/") + DISCOVERY_PATH
                discovery = await self._get_json(client, discovery_url, "discovery document")
                if not isinstance(discovery, dict):
                    raise JwksError(f"discovery document {discovery_url} is not a JSON object")
                if discovery.get("issuer") != issuer:
                    raise JwksError(
                        f"discovery document {discovery_url} names issuer "
                        f"{str(discovery.get('issuer'))[:200]!r}, not {issuer!r} as the Spine "
                        "says; set auth.issuer to exactly the issuer's own value"
                    )
                jwks_uri = discovery.get("jwks_uri")
                if not isinstance(jwks_uri, str) or not jwks_uri.startswith(
                    ("https://", "http://")
                ):
                    raise JwksError(f"discovery document {discovery_url} has no http(s) jwks_uri")
            jwks = await self._get_json(client, jwks_uri, "JWKS")
        try:
            keys, dropped = convert_jwks(jwks, algorithms)
        except JwksError as error:
            raise JwksError(f"JWKS {jwks_uri}: {error}") from None
        if not keys:
            reasons = "; ".join(dropped) or "it lists no keys"
            raise JwksError(f"JWKS {jwks_uri} has no key the proxy can use: {reasons}"[:1000])
        return keys, dropped

    async def _get_json(self, client: httpx.AsyncClient, url: str, what: str) -> Any:
        async with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
            if not response.is_success:
                raise JwksError(f"{what} {url} answered HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self.max_bytes:
                    raise JwksError(f"{what} {url} is larger than {self.max_bytes} bytes")
        try:
            return json.loads(body)
        except ValueError:
            raise JwksError(f"{what} {url} is not JSON") from None


def _describe(error: httpx.HTTPError) -> str:
    url = ""
    with contextlib.suppress(RuntimeError):  # an error raised before a request was built
        url = f" {error.request.url}"
    return f"issuer{url} is not reachable ({unreachable_cause(error)})"
