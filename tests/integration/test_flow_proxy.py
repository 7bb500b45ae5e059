"""A Flow's exposed `http` source through the real Debian HAProxy, on the haproxy.cfg the proxy
plan renders, with tokens of the real development issuer, in front of the real flow engine on a
real mosquitto: a token with the role gets 202 and the message reaches the flow's sink; no token
is 401, a token without the role 403, and neither reaches the engine; a subject over the
route's rate limit gets 429."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from spine_operator import labels, oidc
from spine_operator.desired import flow as flow_plan
from spine_operator.desired import proxy
from spine_operator.desired.plan import Plan, SecretInput
from spine_operator.environment import Environment
from spine_runtime.config.flow import FlowSpec
from tests.integration.test_registration_haproxy import INTERNAL_TOKEN, start_haproxy
from tests.support.devissuer import DevIssuer
from tests.support.flow import Collector, start_flow_engine
from tests.support.mosquitto import LocalBroker
from tests.support.processes import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/usr/sbin/haproxy").exists(), reason="Debian haproxy missing"),
]

NAMESPACE = "plant-a"
INTAKE = {
    "source": {
        "http": {
            "path": "/orders",
            "methods": ["POST"],
            "expose": {"roles": ["orders:write"], "rateLimit": {"requests": 3, "perSeconds": 60}},
        }
    },
    "steps": [{"name": "stamp", "set": {"via": '"proxy"'}}],
    "sinks": [{"mqtt": {"topic": "spine/flows/intake/out", "qos": 1}}],
}


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[DevIssuer]:
    running = DevIssuer(tmp_path / "issuer").start()
    yield running
    running.stop()


def spine(issuer: DevIssuer) -> dict[str, Any]:
    return {
        "metadata": {"name": "default", "namespace": NAMESPACE},
        "spec": {"auth": {"issuer": issuer.issuer, "audience": "spine"}},
    }


def flow_body() -> dict[str, Any]:
    return {"metadata": {"name": "intake", "namespace": NAMESPACE}, "spec": INTAKE}


def planned_proxy(env: Environment, issuer: DevIssuer) -> Plan:
    jwks = httpx.get(issuer.jwks_uri, timeout=5).json()
    keys = tuple(oidc.jwks_to_verify_keys(jwks, ["RS256", "ES256"]))
    result = proxy.plan_proxy(
        proxy.ProxyPlanInputs(
            spine=spine(issuer),
            registrations=[],
            env=env,
            specs={},
            services={},
            keys=proxy.KeysInput(keys, 1.0, None),
            proxy_token=SecretInput(labels.PROXY_TOKEN_SECRET, {"token": "t"}),
            catalog_token=SecretInput(labels.CATALOG_TOKEN_SECRET, {"token": "t"}),
            twin_tokens=SecretInput(labels.TWIN_TOKENS_SECRET, {"write": INTERNAL_TOKEN}),
            catalog_login=SecretInput("spine-mqtt-spine-catalog", {"password": "p"}),
            flows=[flow_body()],
        )
    )
    assert isinstance(result, Plan), result
    assert result.facts["routes"]["intake.flow"] == "Flow/intake"
    return result


async def test_an_exposed_http_source_admits_exactly_tokens_with_its_role(
    tmp_path: Path, issuer: DevIssuer, broker: LocalBroker
) -> None:
    engine = await start_flow_engine(tmp_path / "engine", broker, [{**INTAKE, "name": "intake"}])
    proxy_port = free_port()
    env = Environment.for_local(
        tmp_path / "state",
        broker_port=broker.port,
        flow_port=engine.port,
        proxy_port=proxy_port,
        proxy_exporter_port=free_port(),
        catalog_port=free_port(),
    )
    # The flow engine's plan says where the source is exposed (the Flow's status.routeUrl).
    verdicts = flow_plan.select_flows(
        flow_plan.FlowInputs(spine(issuer), [flow_body()], [], env, SecretInput("t", None), {}),
        flow_plan.SpineSpec.model_validate(spine(issuer)["spec"]),
        NAMESPACE,
    )[1]
    assert verdicts["intake"].route_url == f"http://127.0.0.1:{proxy_port}/flows/intake/orders"
    haproxy = start_haproxy(planned_proxy(env, issuer), tmp_path, proxy_port)
    out = Collector(broker, ["spine/flows/#"])
    url = f"http://127.0.0.1:{proxy_port}/flows/intake/orders"
    try:

        def post(roles: list[str] | None, body: dict[str, Any]) -> httpx.Response:
            headers = {}
            if roles is not None:
                headers["Authorization"] = f"Bearer {issuer.token('alice', roles)}"
            return httpx.post(url, json=body, headers=headers, timeout=10)

        refused = post(None, {"order": 0})
        assert refused.status_code == 401, refused.text
        assert post(["orders:read"], {"order": 0}).status_code == 403
        admitted = post(["orders:write"], {"order": 1})
        assert admitted.status_code == 202, admitted.text
        assert admitted.json() == {"status": "accepted"}
        out.wait_for(1, topic="spine/flows/intake/out")
        # Only the admitted request reached the engine.
        assert out.on("spine/flows/intake/out") == [{"order": 1, "via": "proxy"}]
        assert engine.flow_status("intake")["received"] == 1
        # The route takes the source's methods only, and its own path only.
        wrong_method = httpx.put(url, json={}, timeout=10)  # the proxy's answer, no token read
        assert wrong_method.status_code == 405 and wrong_method.json()["code"] == 405
        other = httpx.post(
            f"http://127.0.0.1:{proxy_port}/flows/other/orders",
            json={},
            headers={"Authorization": f"Bearer {issuer.token('alice', ['orders:write'])}"},
            timeout=10,
        )
        assert other.status_code == 404
        # The route's rate limit counts per token subject and answers 429 before the engine.
        bob = {"Authorization": f"Bearer {issuer.token('bob', ['orders:write'])}"}
        answers = [httpx.post(url, json={"order": 2}, headers=bob, timeout=10) for _ in range(4)]
        assert [answer.status_code for answer in answers] == [202, 202, 202, 429]
        assert answers[-1].headers["retry-after"] == "60"
        assert answers[-1].json() == {"code": 429, "message": "too many requests"}
        assert engine.flow_status("intake")["received"] == 4  # alice's one and bob's three
    finally:
        out.stop()
        haproxy.stop()
        engine.stop()


def test_a_flow_refuses_to_be_exposed_without_the_spines_auth() -> None:
    env = Environment.cluster()
    bare = {"metadata": {"name": "default", "namespace": NAMESPACE}, "spec": {}}
    verdict = flow_plan.select_flows(
        flow_plan.FlowInputs(bare, [flow_body()], [], env, SecretInput("t", None), {}),
        flow_plan.SpineSpec(),
        NAMESPACE,
    )[1]["intake"]
    assert verdict.reason == "InvalidReference"
    assert verdict.message.startswith("spec.source.http.expose: the proxy admits a token only")
    assert FlowSpec.model_validate(INTAKE).source.http is not None
