"""A Flow's `serviceRef` end to end on a real flow engine, a real mosquitto and a real HTTP
backend: the operator's plan resolves the reference to the registered Service (locally
127.0.0.1 at its port, as `spine up` and the proxy reach it), and the engine calls it from a
`call` step and posts to it from an `http` sink, at the path the reference names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spine_operator.desired import flow as flow_plan
from spine_operator.desired.flow_services import Unresolved
from spine_operator.environment import Environment
from spine_runtime.config.flow import FlowSpec
from tests.support.flow import Collector, HttpReceiver, publish_all, start_flow_engine
from tests.support.mosquitto import LocalBroker
from tests.support.processes import free_port, wait_until

pytestmark = pytest.mark.integration

NAMESPACE = "plant-a"
OPENAPI = '{"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {}}'


def contacts(path: str, body: Any) -> dict[str, Any]:
    return {"contact": "maintenance-a@example.com"} if path == "/contacts" else {}


@pytest.fixture
def backend() -> Iterator[tuple[HttpReceiver, int]]:
    port = free_port()
    server = HttpReceiver(port, reply=contacts)
    yield server, port
    server.stop()


def registration(port: int) -> dict[str, Any]:
    """The registration of the backend: an HTTP API served by Service maintenance-planner."""
    return {
        "apiVersion": "spine.iiot.dev/v1alpha1",
        "kind": "ServiceRegistration",
        "metadata": {"name": "maintenance", "namespace": NAMESPACE, "generation": 1},
        "spec": {
            "type": "maintenance-planner",
            "apis": [
                {
                    "id": "orders",
                    "protocol": "HTTP",
                    "serviceRef": {"name": "maintenance-planner", "port": port},
                    "spec": {"mediaType": "application/json", "value": OPENAPI},
                },
                {
                    "id": "events",
                    "protocol": "MQTT",
                    "access": {"publish": ["plant-a/maintenance/#"]},
                    "spec": {"mediaType": "application/yaml", "value": "asyncapi: 3.0.0"},
                },
            ],
        },
    }


FLOW = {
    "source": {"mqtt": {"topic": "in/alarms", "qos": 1}},
    "steps": [
        {
            "name": "contact",
            "call": {
                "serviceRef": {"name": "maintenance", "path": "/contacts"},
                "body": '{"thing": thing}',
                "result": '$merge([$, {"contact": $response.contact}])',
            },
        }
    ],
    "sinks": [
        {"http": {"serviceRef": {"name": "maintenance", "api": "orders", "path": "/orders"}}},
        {"mqtt": {"topic": "spine/flows/alarm-orders/out", "qos": 1}},
    ],
}


async def test_the_engine_calls_and_posts_to_the_registered_service(
    tmp_path: Path, broker: LocalBroker, backend: tuple[HttpReceiver, int]
) -> None:
    server, port = backend
    # What `spine up` renders with: Services are local processes on 127.0.0.1.
    env = Environment.for_local(tmp_path / "state", broker.port)
    resolved = flow_plan.resolve(
        FlowSpec.model_validate(FLOW),
        {},
        {"maintenance": registration(port)},
        env,
        NAMESPACE,
    )
    assert not isinstance(resolved, Unresolved), resolved
    assert resolved["steps"][0]["call"]["url"] == f"http://127.0.0.1:{port}/contacts"
    engine = await start_flow_engine(tmp_path / "engine", broker, [{**resolved, "name": "alarms"}])
    out = Collector(broker, ["spine/flows/#"])
    try:
        publish_all(engine, "in/alarms", [b'{"thing": "press-1", "alarm": true}'])
        out.wait_for(1, topic="spine/flows/alarm-orders/out")
        enriched = {"thing": "press-1", "alarm": True, "contact": "maintenance-a@example.com"}
        assert out.on("spine/flows/alarm-orders/out") == [enriched]
        wait_until(lambda: len(server.requests) == 2, 10, "the call and the sink's post")
        assert server.requests == [
            ("POST", "/contacts", {"thing": "press-1"}),
            ("POST", "/orders", enriched),
        ]
    finally:
        out.stop()
        engine.stop()
