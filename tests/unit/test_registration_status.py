"""A ServiceRegistration's status and the Spine's key condition, from the proxy plan's verdicts
and the poller's reads of the proxy's and the catalog's /status; and the key refresher that
reconciles a namespace's proxy when its issuer's keys change."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import pytest

from spine_operator import conditions as cond
from spine_operator.api.spine import AuthSpec
from spine_operator.desired import proxy
from spine_operator.desired.haproxy import VerifyKey
from spine_operator.desired.plan import Plan
from spine_operator.desired.proxy import ApiVerdict, RegistrationVerdict
from spine_operator.keyrefresh import KeyRefresher
from spine_operator.oidc import KeyState
from spine_operator.poller import (
    CatalogReport,
    ProxyReport,
    RuntimeReport,
    catalog_report,
    proxy_report,
)
from spine_operator.reconcile.core import Outcome
from spine_operator.statuses import keys_conditions, registration_status
from tests.unit.test_build_proxy import AUTH
from tests.unit.test_build_proxy import inputs as proxy_inputs
from tests.unit.test_build_proxy import spine as spine_with

READY_DEPLOYMENT = {
    "metadata": {"generation": 1},
    "spec": {"replicas": 1},
    "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1},
}
BODY = {"metadata": {"name": "planner", "namespace": "plant-a", "generation": 3}}
ROUTED = RegistrationVerdict(
    cond.RECONCILED,
    "Registered in the catalog with 1 routes on the proxy",
    spec_valid=True,
    spec_reason=cond.SPEC_VALIDATED,
    spec_message="Every API's spec is valid",
    apis=(ApiVerdict("orders", "HTTP", "http://p/services/orders", None, "ab" * 32, True),),
    routes=("planner-orders",),
)


def outcome(verdict: RegistrationVerdict, **facts: Any) -> Outcome:
    return Outcome(1, plan=Plan(objects=[], facts={"registrations": {"planner": verdict}, **facts}))


def status_of(verdict: RegistrationVerdict, reports: tuple[Any, Any]) -> dict[str, Any]:
    found = registration_status(
        BODY, outcome(verdict), (READY_DEPLOYMENT, READY_DEPLOYMENT), reports, None
    )
    assert found is not None
    return found


def by_type(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["type"]: item for item in status["conditions"]}


def test_a_routed_registration_is_ready_and_reachable_once_both_checks_answer() -> None:
    proxy = proxy_report({"ready": True, "routes": [{"name": "planner-orders", "up": True}]})
    catalog = catalog_report({"ready": True, "entries": [{"id": "planner", "reachable": True}]})
    status = status_of(ROUTED, (proxy, catalog))
    found = by_type(status)
    assert found["Ready"]["status"] == "True" and found["SpecValid"]["status"] == "True"
    assert found["Reachable"]["status"] == "True"
    assert status["routes"] == ["http://p/services/orders"] and status["routeCount"] == 1
    assert status["apis"][0]["specHash"] == "ab" * 32


def test_reachable_says_which_check_failed() -> None:
    proxy = ProxyReport(True, routes={"planner-orders": {"up": False, "detail": "L4 refused"}})
    catalog = CatalogReport(True, entries={"planner": {"reachable": False, "detail": "503"}})
    found = by_type(status_of(ROUTED, (proxy, catalog)))["Reachable"]
    assert found["status"] == "False" and found["reason"] == cond.PROBE_FAILED
    assert "route planner-orders is down: L4 refused" in found["message"]
    assert "the catalog's probe failed: 503" in found["message"]


def test_reachable_is_unknown_while_the_checks_have_not_answered() -> None:
    away = RuntimeReport(False, "http://spine-proxy-admin.plant-a.svc:8080 is not reachable")
    found = by_type(status_of(ROUTED, (away, None)))["Reachable"]
    assert found["status"] == "Unknown" and "is not reachable" in found["message"]
    found = by_type(status_of(ROUTED, (None, None)))["Reachable"]
    assert found["status"] == "Unknown" and found["reason"] == cond.AWAITING_STATUS


def test_a_refused_registration_has_no_routes_and_is_not_probed() -> None:
    refused = RegistrationVerdict(
        cond.INVALID_SPEC,
        "spec.apis[0].spec (API orders) is not a valid openapi document at /info: bad",
        spec_valid=False,
        spec_reason=cond.INVALID_SPEC,
        spec_message="spec.apis[0].spec (API orders) is not a valid openapi document",
    )
    status = status_of(refused, (None, None))
    found = by_type(status)
    assert found["Ready"]["reason"] == cond.INVALID_SPEC
    assert found["SpecValid"]["status"] == "False"
    assert found["Reachable"]["reason"] == cond.NOT_ROUTED
    assert status["routes"] == [] and status["routeCount"] == 0


def test_a_registration_waits_for_the_proxy_pods() -> None:
    found = registration_status(BODY, outcome(ROUTED), (None, READY_DEPLOYMENT), (None, None), None)
    assert found is not None
    assert by_type(found)["Ready"]["reason"] == cond.PROGRESSING_REASON
    assert "spine-proxy" in by_type(found)["Ready"]["message"]


@pytest.mark.parametrize(
    ("keys", "error", "status", "words"),
    [
        (0, None, "True", "every protected route answers 503"),
        (0, "connection refused", "True", "connection refused"),
        (2, "connection refused", "True", "keeps its last 2 good keys"),
        (2, None, "False", "2 verification keys"),
    ],
)
def test_the_spine_is_degraded_while_its_issuer_gives_no_fresh_keys(
    keys: int, error: str | None, status: str, words: str
) -> None:
    proxy = Outcome(
        1,
        plan=Plan(
            objects=[],
            facts={"issuer": "https://sso.example.com/r", "keys": keys, "keysError": error},
        ),
    )
    (found,) = keys_conditions(proxy, 1)
    assert found["type"] == cond.DEGRADED and found["status"] == status
    assert words in found["message"]
    if status == "True":
        assert found["reason"] == cond.DEPENDENCY_UNAVAILABLE
        assert "https://sso.example.com/r" in found["message"]


@pytest.mark.parametrize("document", [[], {"routes": "x"}, {"ready": True}])
def test_a_proxy_status_of_another_shape_is_refused(document: Any) -> None:
    with pytest.raises(ValueError, match="proxy's /status"):
        proxy_report(document)
    with pytest.raises(ValueError, match="catalog's /status"):
        catalog_report(document)


PEM = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"


class FakeCache:
    """A KeyCache whose issuer answers what the test says next."""

    def __init__(self) -> None:
        self.answers: list[tuple[tuple[VerifyKey, ...], str | None]] = []
        self.states: dict[Hashable, KeyState] = {}
        self.calls = 0

    async def refresh(
        self, key: Hashable, issuer: str, jwks_uri: str | None, algorithms: Sequence[str]
    ) -> KeyState:
        self.calls += 1
        keys, error = self.answers.pop(0)
        previous = self.state(key)
        state = KeyState(keys, 1.0, None) if error is None else KeyState(previous.keys, 1.0, error)
        self.states[key] = state
        return state

    def state(self, key: Hashable) -> KeyState:
        return self.states.get(key, KeyState((), None, None))

    def forget(self, key: Hashable) -> None:
        self.states.pop(key, None)


async def test_a_key_change_reconciles_the_namespace_and_an_outage_keeps_the_keys() -> None:
    cache = FakeCache()
    refresher = KeyRefresher(cache)  # type: ignore[arg-type]
    changed: list[str] = []

    async def on_change(namespace: str) -> None:
        changed.append(namespace)

    refresher.on_change = on_change
    refresher.watch("plant-a", AuthSpec(issuer="https://sso.example.com/r", audience=["spine"]))
    key = VerifyKey(kid="k1", alg="RS256", pem=PEM)
    cache.answers = [((key,), None), ((key,), None), ((), "timed out")]
    await refresher.refresh_due()  # first fetch, at once
    assert changed == ["plant-a"] and refresher.inputs("plant-a").keys == (key,)
    await refresher.refresh_due()  # not due yet: refreshSeconds has not passed
    assert cache.calls == 1
    await refresher.refresh("plant-a")  # the same keys: nothing to re-render
    assert changed == ["plant-a"]
    await refresher.refresh("plant-a")  # the issuer is away: keys stay, the error is news
    assert changed == ["plant-a", "plant-a"]
    assert refresher.inputs("plant-a").keys == (key,)
    assert refresher.inputs("plant-a").error == "timed out"
    refresher.watch("plant-a", None)  # auth removed: forgotten
    assert refresher.inputs("plant-a").keys == () and "plant-a" not in refresher.watched


async def test_after_an_operator_restart_the_running_proxys_keys_stay_while_the_issuer_is_down(
    unused_tcp_port: int,
) -> None:
    """The first proxy plan of an operator run starts from the keys the applied proxy config
    names (never an empty set, which makes every route 503), then tries the issuer once; an
    issuer that does not answer leaves those keys and an error (the Spine is Degraded)."""
    key = VerifyKey(kid="k1", alg="RS256", pem=PEM)
    other = VerifyKey(kid="k2", alg="ES256", pem=PEM.replace("MFkw", "MFkx"))
    keys = proxy.KeysInput((key, other), 1.0, None)
    applied = proxy.plan_proxy(proxy_inputs(spine_with({"auth": AUTH}), [], keys=keys))
    assert isinstance(applied, Plan)
    config_map = next(o for o in applied.objects if o["metadata"]["name"] == "spine-proxy-config")
    assert proxy.deployed_keys(config_map) == [key, other]
    assert proxy.deployed_keys(None) == [] and proxy.deployed_keys({"data": {}}) == []

    refresher = KeyRefresher()
    issuer = f"http://127.0.0.1:{unused_tcp_port}"  # nothing listens: refused at once
    refresher.watch("plant-a", AuthSpec(issuer=issuer, audience=["spine"], algorithms=["RS256"]))
    await refresher.prime("plant-a", proxy.deployed_keys(config_map))
    state = refresher.inputs("plant-a")
    assert state.keys == (key,)  # ES256 is no longer allowed: not kept
    assert state.error and issuer in state.error
    calls_before = refresher.cache.state("plant-a")
    await refresher.prime("plant-a", [])  # once per run and issuer
    assert refresher.cache.state("plant-a") is calls_before
