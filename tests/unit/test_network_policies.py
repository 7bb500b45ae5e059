"""Every workload's NetworkPolicy admits exactly what DESIGN.md says: the broker, the twin and
the flow engine the namespace's own pods and the operator (the broker also the address blocks
the Spine names), a gateway's HTTP port the operator alone; the proxy's route port everyone
and its admin port the operator alone; the catalog the proxy and the operator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from spine_operator import labels
from spine_operator.api.spine import SpineSpec
from spine_operator.environment import Environment
from spine_operator.render import load_resources, render

PRESS_LINE = Path(__file__).resolve().parents[2] / "examples" / "press-line"
ENV = Environment.cluster()
OPERATOR = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "spine-system"}}}
NAMESPACE_PODS = {"podSelector": {}}


def policies(tmp_path: Path, broker: dict[str, Any] | None = None) -> dict[str, dict]:
    resources = load_resources([PRESS_LINE])
    if broker is not None:
        spine = next(r for r in resources if r.body["kind"] == "Spine").body
        spine["spec"] = {**spine["spec"], "broker": broker}
    return {
        obj["metadata"]["name"]: obj["spec"]
        for obj in render(resources, ENV)
        if obj["kind"] == "NetworkPolicy"
    }


def only_rule(policy: dict[str, Any]) -> tuple[list[dict], list[int]]:
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    return rule["from"], [port["port"] for port in rule["ports"]]


def test_every_workload_has_its_allow_list(tmp_path: Path) -> None:
    found = policies(tmp_path)
    assert sorted(found) == [
        "spine-broker",
        "spine-catalog",
        "spine-flow-engine",
        "spine-gateway-press-line-1",
        "spine-proxy",
        "spine-twin",
    ]
    proxy_selector = {"podSelector": {"matchLabels": labels.selector("proxy", "default")}}
    assert only_rule(found["spine-catalog"]) == ([proxy_selector, OPERATOR], [ENV.catalog_port])
    admin, routes = found["spine-proxy"]["ingress"]
    assert (admin["from"], admin["ports"]) == (
        [OPERATOR],
        [{"port": ENV.proxy_admin_port, "protocol": "TCP"}],
    )
    assert routes == {"ports": [{"port": ENV.proxy_port, "protocol": "TCP"}]}  # every client
    assert only_rule(found["spine-flow-engine"]) == ([NAMESPACE_PODS, OPERATOR], [ENV.flow_port])
    assert only_rule(found["spine-broker"]) == ([NAMESPACE_PODS, OPERATOR], [ENV.broker_port])
    assert only_rule(found["spine-twin"]) == ([NAMESPACE_PODS, OPERATOR], [ENV.twin_port])
    assert only_rule(found["spine-gateway-press-line-1"]) == ([OPERATOR], [ENV.gateway_port])
    assert (
        found["spine-gateway-press-line-1"]["podSelector"]["matchLabels"][
            "app.kubernetes.io/component"
        ]
        == "gateway"
    )


def test_the_spine_names_the_address_blocks_outside_the_namespace(tmp_path: Path) -> None:
    broker = {"externalClients": ["10.20.0.0/24", "192.168.1.10/32"], "tls": {"secretName": "t"}}
    sources, ports = only_rule(policies(tmp_path, broker)["spine-broker"])
    assert sources == [
        NAMESPACE_PODS,
        OPERATOR,
        {"ipBlock": {"cidr": "10.20.0.0/24"}},
        {"ipBlock": {"cidr": "192.168.1.10/32"}},
    ]
    assert ports == [ENV.broker_port, ENV.broker_tls_port]


@pytest.mark.parametrize("cidr", ["10.20.0.1/24", "everyone", "10.0.0.0/33", "0.0.0.0/0\n"])
def test_an_address_block_that_is_not_cidr_is_refused(cidr: str) -> None:
    with pytest.raises(ValidationError, match="not an address block"):
        SpineSpec.model_validate({"broker": {"externalClients": [cidr]}})


def test_the_monitoring_namespace_may_scrape_every_runtime_but_not_the_broker() -> None:
    """With SPINE_MONITORING_NAMESPACE (chart: metrics.scrapeNamespace) Prometheus reaches each
    runtime's /metrics; mosquitto serves none, so the broker stays closed to it."""
    env = Environment.cluster().replace(monitoring_namespace="monitoring")
    scraper = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    found = {
        obj["metadata"]["name"]: obj["spec"]
        for obj in render(load_resources([PRESS_LINE]), env)
        if obj["kind"] == "NetworkPolicy"
    }
    for name in (
        "spine-twin",
        "spine-flow-engine",
        "spine-gateway-press-line-1",
        "spine-catalog",
    ):
        assert scraper in only_rule(found[name])[0], name
    assert scraper not in only_rule(found["spine-broker"])[0]


def test_a_monitoring_namespace_that_is_no_name_is_refused(monkeypatch) -> None:
    from spine_operator.environment import operator_environment

    monkeypatch.setenv("SPINE_MONITORING_NAMESPACE", "bad/ns")
    with pytest.raises(ValueError, match="is not a namespace name"):
        operator_environment()
