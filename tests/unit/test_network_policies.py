"""Every workload's NetworkPolicy admits exactly what DESIGN.md says: the broker and the twin
the namespace's own pods and the operator (the broker also the address blocks the Spine names),
a gateway's HTTP port the operator alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

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
        next(r for r in resources if r.body["kind"] == "Spine").body["spec"] = {"broker": broker}
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
    assert sorted(found) == ["spine-broker", "spine-gateway-press-line-1", "spine-twin"]
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
