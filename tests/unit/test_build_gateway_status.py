"""A gateway's /status into its resource's status: the poller's mapping, its results, and the
conditions (Ready, Progressing, Connected, Degraded) the status writer derives. Pure or with
httpx's mock transport; tests/integration/test_gateway_operator.py reads a real gateway."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from spine_operator.desired.plan import Plan
from spine_operator.errors import InvalidReference
from spine_operator.external import PushResult
from spine_operator.metrics import OperatorMetrics
from spine_operator.poller import RuntimePoller, RuntimeReport, fetch_report, report_from_status
from spine_operator.reconcile.core import Outcome
from spine_operator.statuses import gateway_conditions

URL = "http://spine-gateway-press-line-1.plant-a.svc:8080"

# The shape spine_runtime.gateway.app.Gateway.status() answers.
STATUS: dict[str, Any] = {
    "gateway": "press-line-1",
    "version": "0.1.0",
    "broker": {"connected": True, "lastError": None, "lastRefusal": None},
    "connections": [
        {
            "name": "plc-modbus",
            "protocol": "modbusTcp",
            "state": "connected",
            "lastSuccess": "2025-01-01T10:00:00.000Z",
            "lastError": None,
            "lastErrorAt": None,
            "connectedSince": "2025-01-01T09:00:00.000Z",
            "reconnects": 0,
            "cycles": 1234,
            "overruns": 0,
            "tags": 4,
            "requestsPerCycle": {"1s": 1},
        },
        {
            "name": "plc-opcua",
            "protocol": "opcua",
            "state": "disconnected",
            "lastSuccess": None,
            "lastError": "cannot connect to OPC UA server opc.tcp://plc:4840: timed out",
        },
    ],
    "tags": {
        "total": 5,
        "ok": 3,
        "waiting": 1,
        "failing": [{"name": "pressure", "reason": "connection plc-opcua is disconnected"}],
    },
    "buffer": {"messages": 17, "bytes": 4096, "oldestAgeSeconds": 12.64, "dropped": 0},
    "publish": {"ratePerSecond": 4.25, "inFlight": 3},
    "writes": {"ok": 0, "rejected": 0, "error": 0, "recent": []},
}


def test_report_maps_the_gateways_status() -> None:
    report = report_from_status(STATUS)
    assert report.reachable and report.broker_connected is True
    assert report.status_fields() == {
        "connections": [
            {
                "name": "plc-modbus",
                "protocol": "modbusTcp",
                "state": "connected",
                "lastSuccess": "2025-01-01T10:00:00.000Z",
            },
            {
                "name": "plc-opcua",
                "protocol": "opcua",
                "state": "disconnected",
                "lastError": "cannot connect to OPC UA server opc.tcp://plc:4840: timed out",
            },
        ],
        "tags": {"total": 5, "ok": 3, "waiting": 1, "failing": 1},
        "buffered": 17,
        "oldestBufferedSeconds": 13.0,
        "publishRate": 4.2,
    }
    assert report.down() == [
        "plc-opcua (opcua) is disconnected: cannot connect to OPC UA server "
        "opc.tcp://plc:4840: timed out"
    ]


def test_a_broker_session_that_is_down_counts_as_a_connection_down() -> None:
    status = copy.deepcopy(STATUS)
    status["connections"] = status["connections"][:1]
    status["broker"] = {"connected": False, "lastError": "connection refused", "lastRefusal": None}
    assert report_from_status(status).down() == ["the broker session is down: connection refused"]


@pytest.mark.parametrize(
    "document", [[], {"gateway": "x"}, {"connections": [{"state": "connected"}]}, "text"]
)
def test_an_answer_that_is_not_a_gateways_status_is_refused(document) -> None:
    with pytest.raises(ValueError, match="gateway's /status"):
        report_from_status(document)


def test_long_errors_are_cut() -> None:
    status = copy.deepcopy(STATUS)
    status["connections"][1]["lastError"] = "x" * 5000
    report = report_from_status(status)
    assert len(report.connections[1].last_error or "") == 300


async def fetch(handler) -> tuple[RuntimeReport, str]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        return await fetch_report(client, URL)


async def test_fetch_results_ok_invalid_and_unreachable() -> None:
    report, result = await fetch(lambda request: httpx.Response(200, json=STATUS))
    assert result == "ok" and report.reachable and report.buffered == 17

    report, result = await fetch(lambda request: httpx.Response(503, json={"error": "x"}))
    assert result == "invalid" and not report.reachable and "answered 503" in (report.error or "")

    report, result = await fetch(lambda request: httpx.Response(200, text="<html>"))
    assert result == "invalid" and not report.reachable

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    report, result = await fetch(refuse)
    assert result == "unreachable"
    assert report.error == f"{URL} is not reachable (no connection)"


async def test_one_poll_reads_every_target_counts_it_and_delivers_the_report() -> None:
    registry = CollectorRegistry()
    delivered: dict[tuple[str, str], RuntimeReport] = {}

    async def deliver(key: tuple[str, str], report: RuntimeReport) -> None:
        delivered[key] = report

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "down":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json=STATUS)

    poller = RuntimePoller(
        "Gateway",
        targets=lambda: [("plant-a", "up"), ("plant-a", "down")],
        url_of=lambda key: f"http://{key[1]}:8080",
        deliver=deliver,
        metrics=OperatorMetrics(registry),
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        await poller.poll_once(client)
    assert delivered[("plant-a", "up")].reachable
    assert not delivered[("plant-a", "down")].reachable
    for result in ("ok", "unreachable"):
        labels = {"kind": "Gateway", "result": result}
        assert registry.get_sample_value("spine_runtime_health_polls_total", labels) == 1


# Conditions ----------------------------------------------------------------------------------

BODY = {"metadata": {"name": "press-line-1", "namespace": "plant-a", "generation": 3}}
READY_STS = {
    "metadata": {"generation": 2},
    "spec": {"replicas": 1},
    "status": {"observedGeneration": 2, "readyReplicas": 1},
}


def conditions(outcome, statefulset=READY_STS, report=None) -> dict[str, dict[str, Any]]:
    found = gateway_conditions(BODY, outcome, statefulset, report, URL)
    return {item["type"]: item for item in found}


def test_a_reconciled_gateway_whose_pod_runs_is_ready_and_awaits_its_first_poll() -> None:
    found = conditions(Outcome(3, plan=Plan([], facts={"connections": 2, "tags": 5})))
    assert found["Ready"]["status"] == "True" and found["Ready"]["reason"] == "Reconciled"
    assert "with 2 connections and 5 tags" in found["Ready"]["message"]
    assert found["Progressing"]["status"] == "False"
    assert found["Connected"]["status"] == "Unknown"
    assert found["Connected"]["reason"] == "AwaitingStatus"
    assert all(item["observedGeneration"] == 3 for item in found.values())


def test_a_push_that_did_not_arrive_is_said_but_not_an_error() -> None:
    push = PushResult(False, f"{URL} is not reachable (ConnectError)")
    ready = conditions(Outcome(3, plan=Plan([]), push=push))["Ready"]
    assert ready["status"] == "True"
    assert "config push not delivered" in ready["message"]
    assert "reads its ConfigMap within about a minute" in ready["message"]


def test_a_pod_not_ready_is_progressing() -> None:
    found = conditions(Outcome(3), statefulset=None)
    assert found["Ready"]["reason"] == "Progressing"
    assert (
        "StatefulSet spine-gateway-press-line-1: the StatefulSet does not exist yet"
        in (found["Ready"]["message"])
    )
    assert found["Progressing"]["status"] == "True"
    assert found["Connected"]["message"] == "The gateway pod is not ready yet"


def test_an_older_outcome_or_a_failure_is_reported_as_such() -> None:
    assert conditions(Outcome(2))["Ready"]["message"] == "Reconciling the latest change"
    failed = conditions(Outcome(3, error=InvalidReference("Tags do not fit")))
    assert failed["Ready"] == {
        "type": "Ready",
        "status": "False",
        "reason": "InvalidReference",
        "message": "Tags do not fit",
        "observedGeneration": 3,
    }


def test_connected_follows_the_report() -> None:
    down = conditions(Outcome(3), report=report_from_status(STATUS))
    assert down["Connected"]["status"] == "False"
    assert down["Connected"]["reason"] == "ConnectionsDown"
    assert down["Connected"]["message"].startswith("Down: plc-opcua (opcua) is disconnected")
    assert down["Degraded"]["status"] == "False"

    status = copy.deepcopy(STATUS)
    status["connections"] = status["connections"][:1]
    up = conditions(Outcome(3), report=report_from_status(status))
    assert up["Connected"]["status"] == "True" and up["Connected"]["reason"] == "AllConnected"

    lost = report_from_status(status).unreachable(f"{URL} is not reachable (ConnectTimeout)")
    unreachable = conditions(Outcome(3), report=lost)
    assert unreachable["Degraded"]["status"] == "True"
    assert unreachable["Degraded"]["reason"] == "DependencyUnavailable"
    assert unreachable["Connected"]["status"] == "Unknown"
    assert "is not reachable (ConnectTimeout)" in unreachable["Degraded"]["message"]
    assert lost.status_fields()["buffered"] == 17  # the last known figures stay


def test_the_cause_of_an_unreachable_runtime_does_not_flap() -> None:
    """A refused and a timed-out connect say the same: the status is not rewritten per poll."""
    from spine_operator.external import unreachable_cause

    request = httpx.Request("GET", URL)
    refused = unreachable_cause(httpx.ConnectError("refused", request=request))
    timed_out = unreachable_cause(httpx.ConnectTimeout("slow", request=request))
    assert refused == timed_out == "no connection"
    assert unreachable_cause(httpx.ReadTimeout("slow", request=request)) == "no answer in time"
