"""KeyCache against the real development issuer process: discovery, JWKS, rotation, outages.

What the operator's key refresh sees, and so what the proxy verifies with: the keys it gets
must verify the issuer's tokens; a rotated key appears after the next refresh with the old one
kept; an outage or a garbage answer keeps the last good keys and says what went wrong.
"""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from spine_operator.desired.haproxy import VerifyKey
from spine_operator.oidc import KeyCache, jwks_to_verify_keys
from spine_runtime.devissuer.main import WARNING_HEADER
from tests.support.devissuer import DevIssuer
from tests.support.processes import free_port

ALGORITHMS = ["RS256", "ES256"]


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[DevIssuer]:
    running = DevIssuer(tmp_path / "state").start()
    yield running
    running.stop()


def verifies(token: str, keys: tuple[VerifyKey, ...]) -> bool:
    """Whether one of the keys, chosen by the token's kid as the proxy does, verifies it."""
    encoded_header = token.split(".")[0]
    header = json.loads(base64.urlsafe_b64decode(encoded_header + "=" * (-len(encoded_header) % 4)))
    for key in keys:
        if key.kid == header["kid"] and key.alg == header["alg"]:
            jwt.decode(token, RSAKey.import_key(key.pem), algorithms=[key.alg])
            return True
    return False


async def test_discovery_and_jwks_give_keys_that_verify_the_issuers_tokens(
    issuer: DevIssuer,
) -> None:
    cache = KeyCache()
    state = await cache.refresh("plant-a", issuer.issuer, None, ALGORITHMS)
    assert state.error is None
    assert state.fetched_at is not None
    assert [key.alg for key in state.keys] == ["RS256"]
    assert verifies(issuer.token("alice", ["maintenance:read"]), state.keys)
    assert cache.state("plant-a") == state


async def test_an_explicit_jwks_uri_skips_discovery(issuer: DevIssuer) -> None:
    state = await KeyCache().refresh("k", "https://not-contacted.test", issuer.jwks_uri, ALGORITHMS)
    assert state.error is None and len(state.keys) == 1


async def test_a_rotated_key_is_picked_up_after_the_next_refresh_and_the_old_one_kept(
    issuer: DevIssuer,
) -> None:
    cache = KeyCache()
    before = await cache.refresh("plant-a", issuer.issuer, None, ALGORITHMS)
    old_token = issuer.token("alice")
    new_kid = issuer.rotate()
    new_token = issuer.token("alice")
    assert not verifies(new_token, before.keys)  # the proxy's old keys cannot know it yet
    after = await cache.refresh("plant-a", issuer.issuer, None, ALGORITHMS)
    assert after.error is None
    assert new_kid in [key.kid for key in after.keys]
    assert {key.kid for key in before.keys} < {key.kid for key in after.keys}
    assert verifies(new_token, after.keys)
    assert verifies(old_token, after.keys)  # tokens in flight stay valid


async def test_an_outage_keeps_the_last_good_keys_and_reports_it(issuer: DevIssuer) -> None:
    cache = KeyCache(timeout=httpx.Timeout(1.0))
    good = await cache.refresh("plant-a", issuer.issuer, None, ALGORITHMS)
    issuer.stop()
    state = await cache.refresh("plant-a", issuer.issuer, None, ALGORITHMS)
    assert state.keys == good.keys
    assert state.fetched_at == good.fetched_at
    assert state.error is not None
    assert "is not reachable (no connection)" in state.error
    assert issuer.issuer in state.error


async def test_an_issuer_unreachable_from_the_start_gives_no_keys() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    state = await KeyCache().refresh("plant-a", url, None, ALGORITHMS)
    assert state.keys == () and state.fetched_at is None
    assert state.error is not None and "not reachable" in state.error


async def test_an_issuer_mismatch_is_refused(issuer: DevIssuer) -> None:
    configured = f"http://localhost:{issuer.port}"  # the same server, another issuer string
    state = await KeyCache().refresh("plant-a", configured, None, ALGORITHMS)
    assert state.keys == ()
    assert state.error is not None
    assert f"names issuer '{issuer.issuer}', not '{configured}'" in state.error


def test_the_issuer_says_it_is_for_development_and_keeps_its_key_private(
    issuer: DevIssuer,
) -> None:
    response = httpx.get(f"{issuer.issuer}/.well-known/openid-configuration", timeout=5)
    assert "development" in response.headers["X-Spine-Development-Only"]
    assert response.json()["spine_development_only"] is True
    assert response.json()["jwks_uri"] == issuer.jwks_uri
    key_dir = issuer.state_dir / "dev-issuer"
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    for file in key_dir.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
    jwks = httpx.get(issuer.jwks_uri, timeout=5).json()
    assert all(set(key) & {"d", "p", "q"} == set() for key in jwks["keys"])
    missing = httpx.get(f"{issuer.issuer}/token", timeout=5)
    assert missing.status_code == 404
    assert WARNING_HEADER in missing.headers


class SwitchingIssuer:
    """An issuer that first serves the dev issuer's discovery and keys as its own, then, once
    `answer` is set, garbage (the same issuer URL all along)."""

    def __init__(self, jwks: dict) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.good_jwks = json.dumps(jwks).encode()
        self.answer: tuple[bytes, bytes] | None = None
        self.dripping = False
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)

    async def discovery(self, request: web.Request) -> web.StreamResponse:
        if self.dripping:
            response = web.StreamResponse()
            await response.prepare(request)
            for _ in range(100):  # each byte within the read timeout; only a deadline ends it
                await response.write(b" ")
                await asyncio.sleep(0.05)
            return response
        body = DISCOVERY if self.answer is None else self.answer[0]
        return web.Response(body=body.replace(b"@URL@", self.url.encode()))

    async def jwks(self, _: web.Request) -> web.Response:
        return web.Response(body=self.good_jwks if self.answer is None else self.answer[1])

    async def start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()


DISCOVERY = b'{"issuer": "@URL@", "jwks_uri": "@URL@/jwks"}'


@pytest.fixture
async def switching(issuer: DevIssuer) -> AsyncIterator[SwitchingIssuer]:
    server = SwitchingIssuer(httpx.get(issuer.jwks_uri, timeout=5).json())
    await server.start()
    yield server
    await server.runner.cleanup()


@pytest.mark.parametrize(
    ("discovery", "jwks", "wanted"),
    [
        (
            b"<html>login</html>",
            b"",
            "discovery document @URL@/.well-known/openid-configuration is not JSON",
        ),
        (b"[1, 2]", b"", "is not a JSON object"),
        (b'{"issuer": "@URL@"}', b"", "has no http(s) jwks_uri"),
        (DISCOVERY, b"{not json", "JWKS @URL@/jwks is not JSON"),
        (DISCOVERY, b'{"keys": "none"}', 'not a JWKS: expected a JSON object with a "keys" list'),
        (
            DISCOVERY,
            b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}',
            "has no key the proxy can use: key 0: kty 'oct'",
        ),
        (
            DISCOVERY,
            b'{"keys": [' + b'{"kty": "RSA"},' * 20000 + b"{}]}",
            "is larger than 262144 bytes",
        ),
    ],
)
async def test_an_issuer_serving_garbage_gets_a_clear_error_and_keeps_the_last_keys(
    switching: SwitchingIssuer, discovery: bytes, jwks: bytes, wanted: str
) -> None:
    cache = KeyCache()
    good = await cache.refresh("plant-a", switching.url, None, ALGORITHMS)
    assert good.error is None and len(good.keys) == 1
    switching.answer = (discovery, jwks)
    state = await cache.refresh("plant-a", switching.url, None, ALGORITHMS)
    assert state.error is not None
    assert wanted.replace("@URL@", switching.url) in state.error
    assert state.keys == good.keys
    assert state.fetched_at == good.fetched_at


async def test_a_changed_issuer_that_fails_leaves_no_keys_of_the_old_one(
    issuer: DevIssuer,
) -> None:
    cache = KeyCache()
    good = await cache.refresh("plant-a", issuer.issuer, None, ALGORITHMS)
    assert good.keys
    elsewhere = f"http://127.0.0.1:{free_port()}"
    state = await cache.refresh("plant-a", elsewhere, None, ALGORITHMS)
    assert state.keys == ()  # fail closed: the proxy answers 503, never the old issuer's keys
    assert state.error is not None and elsewhere in state.error


async def test_a_slow_issuer_times_out_and_keeps_the_last_keys(switching: SwitchingIssuer) -> None:
    cache = KeyCache(timeout=httpx.Timeout(1.0), deadline=0.5)
    good = await cache.refresh("plant-a", switching.url, None, ALGORITHMS)
    switching.dripping = True
    started = time.monotonic()
    state = await cache.refresh("plant-a", switching.url, None, ALGORITHMS)
    assert time.monotonic() - started < 2.0
    assert state.error == f"issuer {switching.url} did not answer within 0.5 s"
    assert state.keys == good.keys


async def test_an_outage_keeps_only_keys_of_algorithms_the_spine_still_allows(
    issuer: DevIssuer,
) -> None:
    cache = KeyCache(timeout=httpx.Timeout(1.0))
    good = await cache.refresh("plant-a", issuer.issuer, None, ["RS256", "ES256"])
    assert [key.alg for key in good.keys] == ["RS256"]
    issuer.stop()
    state = await cache.refresh("plant-a", issuer.issuer, None, ["RS256", "ES256"])
    assert state.keys == good.keys
    state = await cache.refresh("plant-a", issuer.issuer, None, ["ES256"])  # RS256 now refused
    assert state.keys == ()
    assert state.error is not None


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_the_pem_is_byte_for_byte_what_openssl_writes(tmp_path: Path, kind: str) -> None:
    """HAProxy reads the key files with OpenSSL: the PEM must be the SPKI form it writes."""
    private = tmp_path / "private.pem"
    algorithm = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
    if kind == "ec":
        algorithm = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    subprocess.run(["openssl", "genpkey", *algorithm, "-out", str(private)], check=True)
    public = subprocess.run(
        ["openssl", "pkey", "-in", str(private), "-pubout"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    key_class = RSAKey if kind == "rsa" else ECKey
    jwk = key_class.import_key(private.read_bytes()).as_dict(private=True)
    [verify_key] = jwks_to_verify_keys({"keys": [{**jwk, "kid": "k1"}]}, ["RS256", "ES256"])
    assert verify_key.pem == public
