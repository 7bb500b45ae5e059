"""The API security gateway against the real Debian HAProxy, through `spine-runtime proxy`.

One supervisor (and one HAProxy) serves the whole module, with the config the operator's renderer
produces; tests that need another config push it and push the module's config back after. The
attack matrix must give 0 bypass: every malformed, forged or insufficient token is refused with
the status and JSON body a client can act on, and the backend never sees the request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from spine_operator.desired.haproxy import (
    ProxyAuth,
    ProxyBackend,
    ProxyInputs,
    ProxyRoute,
    RateLimit,
)
from tests.support.processes import eventually, free_port, port_open, wait_until
from tests.support.proxy import (
    AUDIENCE,
    HAPROXY,
    ISSUER,
    EchoBackend,
    LocalProxy,
    TokenIssuer,
    b64url,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(HAPROXY).exists(), reason="needs Debian's haproxy"),
]

ORDERS = "/services/maintenance/v1"
BACKEND_TOKEN = "workload-token-from-env"


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer().add_rsa("rsa-1").add_ec("ec-1").add_rsa("rsa-2").add_rsa("impostor")


@pytest.fixture(scope="module")
def backend() -> Iterator[EchoBackend]:
    with EchoBackend() as echo:
        yield echo


def module_inputs(proxy: LocalProxy, issuer: TokenIssuer, backend: EchoBackend, **auth: object):
    def to_echo(prefix: str = "") -> ProxyBackend:
        return ProxyBackend(host="127.0.0.1", port=backend.port, path_prefix=prefix)

    return proxy.inputs(
        auth=ProxyAuth(
            issuer=ISSUER,
            audiences=[AUDIENCE],
            keys=issuer.verify_keys("rsa-1", "ec-1"),
            **auth,  # type: ignore[arg-type]
        ),
        routes=[
            ProxyRoute(
                name="orders",
                path=ORDERS,
                backend=to_echo("/api"),
                roles=["spine:read", "maintenance:admin"],
            ),
            ProxyRoute(
                name="twin-write",
                path="/twin",
                methods=["PUT", "POST"],
                backend=to_echo(),
                roles=["spine:write"],
                backend_token_env="SPINE_TEST_BACKEND_TOKEN",
            ),
            ProxyRoute(name="catalog", path="/catalog", public=True, backend=to_echo()),
            ProxyRoute(
                name="limited",
                path="/limited",
                backend=to_echo(),
                rate_limit=RateLimit(requests=3, per_seconds=60),
            ),
            ProxyRoute(
                name="open-limited",
                path="/open-limited",
                public=True,
                backend=to_echo(),
                rate_limit=RateLimit(requests=3, per_seconds=60),
            ),
            ProxyRoute(
                name="dead",
                path="/dead",
                backend=ProxyBackend(host="127.0.0.1", port=free_port()),
            ),
            ProxyRoute(
                name="unresolved",
                path="/unresolved",
                public=True,
                backend=ProxyBackend(host="no-such-service.invalid", port=8080),
            ),
        ],
    )


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, issuer, backend) -> Iterator[LocalProxy]:
    local = LocalProxy(
        tmp_path_factory.mktemp("proxy"), env={"SPINE_TEST_BACKEND_TOKEN": BACKEND_TOKEN}
    )
    try:
        local.start(module_inputs(local, issuer, backend))
        yield local
    finally:
        local.stop()


@contextmanager
def pushed(proxy: LocalProxy, inputs: ProxyInputs, restore: ProxyInputs) -> Iterator[None]:
    response = proxy.push(inputs)
    assert response.status_code == 200 and response.json()["applied"], response.text
    try:
        yield
    finally:
        restored = proxy.push(restore)
        assert restored.status_code == 200, restored.text


def sign_hs256(header: dict, claims: dict, secret: bytes) -> str:
    signing_input = f"{b64url(header)}.{b64url(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def tampered(token: str, **claims: object) -> str:
    header, payload, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"{header}.{b64url({**decoded, **claims})}.{signature}"


def with_header(token: str, **header: object) -> str:
    _, payload, signature = token.split(".")
    return f"{b64url(header)}.{payload}.{signature}"


# ---- the attack matrix -------------------------------------------------------------------------

ATTACKS = {
    # name: (token factory, expected status)
    "no token": (lambda i, p: None, 401),
    "garbage": (lambda i, p: "not-a-token", 401),
    "two-part token": (lambda i, p: ".".join(i.token().split(".")[:2]), 401),
    "bad signature": (lambda i, p: with_kid(i.token("impostor"), "rsa-1"), 401),
    "tampered payload": (
        lambda i, p: tampered(i.token(roles=["nothing"]), realm_access={"roles": ["spine:read"]}),
        401,
    ),
    "alg none, no signature": (
        lambda i, p: TokenIssuer.unsigned({"alg": "none", "kid": "rsa-1"}, i.claims()),
        401,
    ),
    "alg none, with signature": (
        lambda i, p: with_header(i.token(), alg="none", kid="rsa-1", typ="JWT"),
        401,
    ),
    "HS256 keyed with the public key PEM": (
        lambda i, p: sign_hs256(
            {"alg": "HS256", "kid": "rsa-1"}, i.claims(), i.public_pem("rsa-1").encode()
        ),
        401,
    ),
    "HS256 keyed with the key file path": (
        lambda i, p: sign_hs256(
            {"alg": "HS256", "kid": "rsa-1"}, i.claims(), key_path(i, p, "rsa-1").encode()
        ),
        401,
    ),
    "PS256": (lambda i, p: i.token(alg="PS256"), 401),
    "unknown kid": (lambda i, p: i.token(header={"kid": "rsa-9"}), 401),
    "ES256 token under an RSA kid": (
        lambda i, p: i.token("ec-1", header={"kid": "rsa-1"}),
        401,
    ),
    "expired": (lambda i, p: i.token(exp=int(time.time()) - 120), 401),
    "no exp": (lambda i, p: i.token(exp=None), 401),
    "exp not a number": (lambda i, p: i.token(exp="tomorrow"), 401),
    "future nbf": (lambda i, p: i.token(nbf=int(time.time()) + 300), 401),
    "nbf not a number": (lambda i, p: i.token(nbf="yesterday"), 401),
    "future nbf as a numeric string": (lambda i, p: i.token(nbf=str(int(time.time()) + 300)), 401),
    "wrong iss": (lambda i, p: i.token(iss=ISSUER + "-other"), 401),
    "iss that only starts with ours": (lambda i, p: i.token(iss=ISSUER + "x"), 401),
    "wrong aud string": (lambda i, p: i.token(aud="spine-other"), 401),
    "wrong aud array": (lambda i, p: i.token(aud=["account", "spine-other"]), 401),
    "no aud": (lambda i, p: i.token(aud=None), 401),
    "no sub": (lambda i, p: i.token(subject=None), 401),
    "sub with a space": (lambda i, p: i.token(subject="alice admin"), 401),
    "missing role": (lambda i, p: i.token(roles=["offline_access"]), 403),
    "role that only starts with ours": (lambda i, p: i.token(roles=["spine:readonly"]), 403),
    "role that ours starts with": (lambda i, p: i.token(roles=["spine:rea"]), 403),
    "roles as one string": (
        lambda i, p: i.token(claims={**i.claims(), "realm_access": {"roles": "x spine:read"}}),
        403,
    ),
    "role in another claim": (
        lambda i, p: i.token(roles=[], claims={**i.claims(roles=[]), "groups": ["spine:read"]}),
        403,
    ),
}


def with_kid(token: str, kid: str) -> str:
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    return with_header(token, **{**header, "kid": kid})


def key_path(issuer: TokenIssuer, proxy: LocalProxy, kid: str) -> str:
    return str(proxy.keys_dir / issuer.verify_keys(kid)[0].file_name())


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_is_refused(proxy, issuer, attack) -> None:
    make_token, expected = ATTACKS[attack]
    answer = proxy.get(f"{ORDERS}/orders", make_token(issuer, proxy))
    assert answer.status == expected, (attack, answer.body)
    assert answer.header("content-type") == "application/json"
    assert answer.body["code"] == expected and answer.body["message"]
    challenge = answer.header("www-authenticate") or ""
    assert challenge.startswith("Bearer ")
    if expected == 403:
        assert 'error="insufficient_scope"' in challenge
    elif make_token(issuer, proxy) is not None:
        assert 'error="invalid_token"' in challenge
    assert "path" not in answer.body  # the echo backend never answered


def test_the_key_file_path_in_the_attack_exists(proxy, issuer) -> None:
    """The HS256-with-the-path case uses the real path HAProxy reads the key from."""
    assert Path(key_path(issuer, proxy, "rsa-1")).is_file()


# ---- what a valid token gets ------------------------------------------------------------------


def test_rs256_token_reaches_the_backend_with_subject_and_roles(proxy, issuer) -> None:
    answer = proxy.get(f"{ORDERS}/orders?state=open", issuer.token(subject="alice"))
    assert answer.status == 200, answer.body
    assert answer.body["path"] == "/api/orders?state=open"
    assert answer.echoed("X-Spine-Subject") == ["alice"]
    assert answer.echoed("X-Spine-Roles") == ["spine:read"]


def test_es256_token_is_accepted(proxy, issuer) -> None:
    answer = proxy.get(ORDERS, issuer.token("ec-1"))
    assert answer.status == 200, answer.body
    assert answer.body["path"] == "/api"


def test_audience_array_containing_ours_is_accepted(proxy, issuer) -> None:
    answer = proxy.get(ORDERS, issuer.token(aud=["account", "broker", AUDIENCE]))
    assert answer.status == 200, answer.body


def test_role_in_the_middle_of_the_array_and_only_route_roles_forwarded(proxy, issuer) -> None:
    roles = ["offline_access", "spine:readonly", "maintenance:admin", "uma_authorization"]
    answer = proxy.get(ORDERS, issuer.token(roles=roles))
    assert answer.status == 200, answer.body
    assert answer.echoed("X-Spine-Roles") == ["maintenance:admin"]
    both = proxy.get(ORDERS, issuer.token(roles=["maintenance:admin", "x", "spine:read"]))
    assert both.echoed("X-Spine-Roles") == ["spine:read maintenance:admin"]


def test_forged_identity_headers_are_replaced(proxy, issuer) -> None:
    forged = {
        "X-Spine-Subject": "root",
        "X-Spine-Roles": "spine:admin",
        "x-spine-anything": "1",
        "X_Spine_Subject": "root",
    }
    answer = proxy.get(ORDERS, issuer.token(subject="bob"), **forged)
    assert answer.status == 200, answer.body
    assert answer.echoed("X-Spine-Subject") == ["bob"]
    assert answer.echoed("X-Spine-Roles") == ["spine:read"]
    assert answer.echoed("x-spine-anything") == [] and answer.echoed("X_Spine_Subject") == []
    public = proxy.get("/catalog/", None, **forged)
    assert public.status == 200, public.body
    assert not [name for name, _ in public.body["headers"] if "spine" in name.lower()]


def test_public_route_needs_no_token(proxy) -> None:
    answer = proxy.get("/catalog?page=1")
    assert answer.status == 200 and answer.body["path"] == "/?page=1"


def test_backend_token_from_the_environment_replaces_the_clients(proxy, issuer) -> None:
    answer = proxy.get("/twin/things/press-1", issuer.token(roles=["spine:write"]), method="PUT")
    assert answer.status == 200, answer.body
    assert answer.echoed("Authorization") == [f"Bearer {BACKEND_TOKEN}"]
    assert BACKEND_TOKEN not in (proxy.state_dir / "haproxy.cfg").read_text()


def test_method_outside_the_route_is_405_and_unknown_path_404(proxy, issuer) -> None:
    token = issuer.token(roles=["spine:write"])
    assert proxy.get("/twin/things/press-1", token, method="DELETE").status == 405
    missing = proxy.get("/nowhere", token)
    assert (missing.status, missing.body) == (
        404,
        {"code": 404, "message": "no route for this path"},
    )
    assert proxy.get(ORDERS + "x", issuer.token()).status == 404  # a prefix is whole segments
    assert proxy.get("/metrics").status == 404  # the exporter is not on the public port


def raw_request(port: int, target: str) -> tuple[int, str]:
    """A request line sent as is (httpx would normalise the dot segments away)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize(
    "target",
    [
        "/catalog/../twin/things",
        "/catalog/%2e%2e/twin",
        "/catalog/..%2ftwin",
        "/catalog/.%2E/twin",
        "/catalog/a\\..\\..\\twin",
    ],
)
def test_paths_a_backend_could_read_as_another_route_are_refused(proxy, target) -> None:
    status, body = raw_request(proxy.port, target)
    assert status == 400, body
    assert json.loads(body)["code"] == 400


# ---- keys, reloads, limits --------------------------------------------------------------------


def test_no_keys_yet_means_503_for_protected_and_public_still_served(proxy, issuer, backend):
    base = module_inputs(proxy, issuer, backend)
    no_keys = base.model_copy(deep=True)
    assert no_keys.auth is not None
    no_keys.auth.keys = []
    with pushed(proxy, no_keys, restore=base):
        for token in (None, issuer.token(), "garbage"):
            answer = proxy.get(ORDERS, token)
            assert answer.status == 503, answer.body
            assert answer.body["code"] == 503 and answer.header("retry-after")
        assert proxy.get("/catalog").status == 200


def test_scope_claim_matches_whole_words(proxy, issuer, backend) -> None:
    base = module_inputs(proxy, issuer, backend)
    scoped = module_inputs(proxy, issuer, backend, roles_claim="scope")
    with pushed(proxy, scoped, restore=base):
        ok = proxy.get(ORDERS, issuer.token(scope="openid spine:read profile"))
        assert ok.status == 200, ok.body
        assert ok.echoed("X-Spine-Roles") == ["spine:read"]
        for scope in ("openid spine:readonly", "spine:rea", "openid", "xspine:read"):
            assert proxy.get(ORDERS, issuer.token(scope=scope)).status == 403, scope


def test_rotated_key_works_after_a_push_and_in_flight_request_finishes(proxy, issuer, backend):
    base = module_inputs(proxy, issuer, backend)
    assert proxy.get(ORDERS, issuer.token("rsa-2")).status == 401
    old_token = issuer.token("rsa-1", subject="before-rotation")
    assert proxy.get(ORDERS, old_token).status == 200  # verified once: in the worker's cache
    backend.slow("/api/slow", 1.5)
    in_flight: dict[str, object] = {}

    def slow_call() -> None:
        try:
            in_flight["answer"] = proxy.get(f"{ORDERS}/slow", issuer.token("rsa-1"))
        except httpx.HTTPError as error:
            in_flight["error"] = error

    caller = threading.Thread(target=slow_call)
    caller.start()
    wait_until(lambda: "/api/slow" in backend.handler.delayed, 5, "the slow request at the backend")
    rotated = base.model_copy(deep=True)
    assert rotated.auth is not None
    rotated.auth.keys = issuer.verify_keys("rsa-2", "ec-1")
    old_key_file = proxy.keys_dir / issuer.verify_keys("rsa-1")[0].file_name()
    with pushed(proxy, rotated, restore=base):
        assert proxy.get(ORDERS, issuer.token("rsa-2")).status == 200
        assert proxy.get(ORDERS, issuer.token("rsa-1")).status == 401
        assert proxy.get(ORDERS, old_token).status == 401  # the reload emptied the cache
        assert not old_key_file.exists()  # pruned after the reload
        caller.join(timeout=10)
        answer = in_flight.get("answer")
        assert answer is not None, in_flight.get("error")
        assert answer.status == 200 and answer.body["path"] == "/api/slow"  # type: ignore[attr-defined]
    assert proxy.get(ORDERS, issuer.token("rsa-1")).status == 200


def test_rate_limit_per_subject_answers_429_and_restarts_on_a_reload(proxy, issuer, backend):
    token = issuer.token(subject="greedy")
    statuses = [proxy.get("/limited", token).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = proxy.get("/limited", token)
    assert limited.status == 429 and limited.header("retry-after") == "60"
    assert limited.body == {"code": 429, "message": "too many requests"}
    assert proxy.get("/limited", issuer.token(subject="modest")).status == 200
    # a reload starts the counters from zero, as the README says
    base = module_inputs(proxy, issuer, backend)
    changed = base.model_copy(deep=True)
    changed.routes[0].roles.append("maintenance:viewer")
    with pushed(proxy, changed, restore=base):
        assert proxy.get("/limited", token).status == 200


def test_rate_limit_on_a_public_route_is_per_source_address(proxy) -> None:
    statuses = [proxy.get("/open-limited").status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_bad_config_push_is_refused_and_the_running_proxy_keeps_serving(proxy, issuer, backend):
    before = proxy.status()
    good = proxy.document(module_inputs(proxy, issuer, backend))
    broken = {
        **good,
        "haproxyCfg": good["haproxyCfg"] + "\nbackend broken\n    nonsense-directive 1\n",
    }
    refused = proxy.push(document=broken)
    assert refused.status_code == 400
    assert "haproxy -c refused the config" in refused.json()["detail"]
    assert proxy.get(ORDERS, issuer.token()).status == 200
    status = proxy.status()
    assert status["configDigest"] == before["configDigest"]
    assert "nonsense-directive" in status["lastError"]
    # a key file the config names but the document does not carry: refused, never "valid"
    missing_key = {**good, "keyFiles": {}}
    refused = proxy.push(document=missing_key)
    assert refused.status_code == 400 and "not among keyFiles" in refused.json()["detail"]
    assert proxy.get(ORDERS, issuer.token()).status == 200
    restored = proxy.push(document=good)
    assert restored.status_code == 200
    assert proxy.status()["lastError"] is None


def test_status_reports_route_health_from_haproxy_stats(proxy) -> None:
    def routes_known() -> dict:
        routes = {route["name"]: route for route in proxy.status()["routes"]}
        return routes if routes["orders"]["up"] is True and routes["dead"]["up"] is False else {}

    routes = wait_until(routes_known, 20, "orders up and dead down in /status")
    assert routes["orders"]["path"] == ORDERS
    assert routes["orders"]["owner"] == "ServiceRegistration/orders"
    assert "DOWN" in routes["dead"]["detail"]
    status = proxy.status()
    assert status["ready"] is True and len(status["configDigest"]) == 64


def test_metrics_have_the_supervisors_and_haproxys(proxy) -> None:
    text = proxy.admin("GET", "/metrics").text
    assert 'spine_proxy_reloads_total{result="applied"}' in text
    assert "spine_proxy_config_info{digest=" in text
    assert 'haproxy_frontend_http_requests_total{proxy="public"}' in text


async def test_a_changed_config_file_is_applied_without_a_push(proxy, issuer, backend) -> None:
    base = module_inputs(proxy, issuer, backend)
    changed = base.model_copy(deep=True)
    changed.routes.append(
        ProxyRoute(name="late", path="/late", public=True, backend=changed.routes[0].backend)
    )
    proxy.config_path.write_text(json.dumps(proxy.document(changed)))
    try:
        await eventually(lambda: proxy.get("/late").status == 200, 10, "the file's new route")
    finally:
        proxy.config_path.write_text(json.dumps(proxy.document(base)))
        await eventually(lambda: proxy.get("/late").status == 404, 10, "the route gone again")


def test_a_verified_token_does_not_vouch_for_a_changed_one(proxy, issuer) -> None:
    """The verification cache is keyed by the whole token: any changed byte is verified anew."""
    token = issuer.token(subject="cached", roles=["offline_access"])
    assert proxy.get(ORDERS, token).status == 403  # signature verified (and cached), no role
    forged = tampered(token, realm_access={"roles": ["spine:read"]})
    assert proxy.get(ORDERS, forged).status == 401
    header, payload, signature = token.split(".")
    assert proxy.get(ORDERS, f"{header}.{payload}.{signature[:-4]}AAAA").status == 401


def test_a_refused_config_at_start_serves_nothing_until_a_good_push(tmp_path, issuer, backend):
    """Fail-closed from the first second: no HAProxy runs on a config it refuses."""
    fresh = LocalProxy(tmp_path, env={"SPINE_TEST_BACKEND_TOKEN": BACKEND_TOKEN})
    inputs = module_inputs(fresh, issuer, backend)
    try:
        fresh.start(inputs, haproxy_cfg="global\n    no-such-directive\n")
        status = fresh.status()
        assert status["ready"] is False and "no-such-directive" in status["lastError"]
        with pytest.raises(httpx.ConnectError):
            fresh.get(ORDERS, issuer.token())
        assert fresh.push(inputs).status_code == 200
        assert fresh.status()["ready"] is True and fresh.status()["lastError"] is None
        assert fresh.get(ORDERS, issuer.token()).status == 200
    finally:
        fresh.stop()


def test_haproxy_does_not_outlive_a_killed_supervisor(tmp_path, issuer, backend) -> None:
    fresh = LocalProxy(tmp_path)
    try:
        fresh.start(module_inputs(fresh, issuer, backend))
        assert port_open(fresh.port)
        assert fresh.process is not None
        fresh.process.kill()  # SIGKILL: the supervisor cannot stop HAProxy itself
        wait_until(lambda: not port_open(fresh.port), 10, "HAProxy to stop with its supervisor")
    finally:
        fresh.stop()


def test_a_backend_name_that_does_not_resolve_is_503_for_its_route_only(proxy, issuer) -> None:
    """The config with that name was accepted (zero-warning would refuse a name resolved at
    start); only its route answers 503, in JSON."""
    answer = proxy.get("/unresolved/x")
    assert answer.status == 503 and answer.body["code"] == 503, answer.body
    assert proxy.get(ORDERS, issuer.token()).status == 200
    routes = {route["name"]: route for route in proxy.status()["routes"]}
    assert routes["unresolved"]["up"] is not True
