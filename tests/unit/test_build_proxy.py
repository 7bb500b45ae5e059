"""The plan of a namespace's proxy and catalog (desired/proxy.py): nothing without a
ServiceRegistration or `auth`; a route per exposed HTTP API, the twin's and the catalog's; path
collisions refused for the younger registration only; invalid specs, missing Services and
ConfigMaps refused alone; MQTT logins allowed exactly their channels; nothing a user writes
reaches haproxy.cfg unchecked, and no secret reaches a ConfigMap."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from spine_operator import conditions as cond
from spine_operator import labels
from spine_operator.api.serviceregistration import ServiceRegistrationSpec
from spine_operator.api.spine import SpineSpec
from spine_operator.desired import proxy
from spine_operator.desired.haproxy import VerifyKey
from spine_operator.desired.plan import Plan, SecretInput
from spine_operator.environment import Environment
from spine_operator.errors import DependencyNotFound, ReconcileError
from spine_operator.render import RenderError, load_resources, render
from spine_runtime.config.catalog import CatalogConfig
from spine_runtime.config.proxy import ProxyConfig

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "press-line" / "registration.yaml"
ENV = Environment.cluster()
NAMESPACE = "plant-a"
TWIN_WRITE_TOKEN = "twin-write-token-value-never-in-a-configmap"
OPENAPI = json.dumps(
    {
        "openapi": "3.1.0",
        "info": {"title": "Orders", "version": "1"},
        "paths": {"/orders": {"get": {"responses": {"200": {"description": "ok"}}}}},
    }
).encode()
ASYNCAPI = b"asyncapi: 3.0.0\ninfo: {title: Events, version: '1'}\nchannels: {}\n"


def spine(spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "spine.iiot.dev/v1alpha1",
        "kind": "Spine",
        "metadata": {"name": "default", "namespace": NAMESPACE, "uid": "u-1"},
        "spec": spec or {},
    }


AUTH = {"issuer": "https://sso.example.com/realms/plant-a", "audience": "spine"}


def registration(name: str, created: str, *apis: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "spine.iiot.dev/v1alpha1",
        "kind": "ServiceRegistration",
        "metadata": {"name": name, "namespace": NAMESPACE, "creationTimestamp": created},
        "spec": {"type": "planner", "apis": list(apis)},
    }


def http_api(api_id: str = "orders", path: str = "/services/orders", **extra: Any) -> dict:
    return {
        "id": api_id,
        "protocol": "HTTP",
        "serviceRef": {"name": "planner", "port": 8080},
        "expose": {"path": path, "roles": ["orders:read"]},
        "spec": {"mediaType": "application/json", "value": OPENAPI.decode()},
        **extra,
    }


def mqtt_api(api_id: str = "events", **access: Any) -> dict:
    return {
        "id": api_id,
        "protocol": "MQTT",
        "access": access or {"publish": ["plant/orders/created"], "subscribe": ["plant/+/ack"]},
        "spec": {"mediaType": "application/yaml", "value": ASYNCAPI.decode()},
    }


def secrets_present(*names: str) -> dict[str, SecretInput]:
    return {name: SecretInput(name, {"username": "u", "password": "p"}) for name in names}


def inputs(
    spine_body: dict[str, Any],
    registrations: list[dict[str, Any]],
    services: dict[str, Any] | None = None,
    specs: dict | None = None,
    keys: proxy.KeysInput | None = None,
) -> proxy.ProxyPlanInputs:
    found_specs: dict = {}
    logins: dict[str, SecretInput] = {}
    for item in registrations:
        for api in item["spec"]["apis"]:
            if "value" in api.get("spec", {}):
                found_specs[(item["metadata"]["name"], api["id"])] = api["spec"]["value"].encode()
            logins.update(
                secrets_present(
                    labels.registration_login_secret_name(item["metadata"]["name"], api["id"])
                )
            )
    found_specs.update(specs or {})
    return proxy.ProxyPlanInputs(
        spine=spine_body,
        registrations=registrations,
        env=ENV,
        specs=found_specs,
        services={"planner": {}} if services is None else services,
        keys=keys or proxy.KeysInput(),
        proxy_token=SecretInput(labels.PROXY_TOKEN_SECRET, {"token": "proxy-admin"}),
        catalog_token=SecretInput(labels.CATALOG_TOKEN_SECRET, {"token": "catalog-admin"}),
        twin_tokens=SecretInput(
            labels.TWIN_TOKENS_SECRET, {"write": TWIN_WRITE_TOKEN, "admin": "a"}
        ),
        catalog_login=SecretInput("spine-mqtt-spine-catalog", {"password": "p"}),
        logins=logins,
    )


def plan_of(*args: Any, **kwargs: Any) -> Plan:
    result = proxy.plan_proxy(inputs(*args, **kwargs))
    assert not isinstance(result, ReconcileError), result
    return result


def find(plan: Plan, kind: str, name: str) -> dict[str, Any]:
    return next(o for o in plan.objects if o["kind"] == kind and o["metadata"]["name"] == name)


def proxy_document(plan: Plan) -> ProxyConfig:
    data = find(plan, "ConfigMap", labels.PROXY_CONFIG_NAME)["data"][labels.PROXY_CONFIG_FILE]
    return ProxyConfig.model_validate_json(data)


def catalog_document(plan: Plan) -> CatalogConfig:
    data = find(plan, "ConfigMap", labels.CATALOG_CONFIG_NAME)["data"][labels.CATALOG_CONFIG_FILE]
    return CatalogConfig.model_validate_json(data)


def verdict(plan: Plan, name: str) -> proxy.RegistrationVerdict:
    return plan.facts["registrations"][name]


def test_a_namespace_without_registrations_or_auth_gets_nothing() -> None:
    plan = plan_of(spine(), [])
    assert plan.objects == [] and plan.generated == [] and plan.logins == []


def test_auth_alone_gives_the_proxy_the_catalog_and_the_twin_routes() -> None:
    plan = plan_of(spine({"auth": AUTH}), [])
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in plan.objects)
    assert kinds == [
        ("ConfigMap", "spine-catalog-config"),
        ("ConfigMap", "spine-proxy-config"),
        ("Deployment", "spine-catalog"),
        ("Deployment", "spine-proxy"),
        ("NetworkPolicy", "spine-catalog"),
        ("NetworkPolicy", "spine-proxy"),
        ("Service", "spine-catalog"),
        ("Service", "spine-proxy"),
        ("Service", "spine-proxy-admin"),
    ]
    routes = {route.name: route for route in proxy_document(plan).routes}
    assert sorted(routes) == [
        "spine-catalog-read",
        "spine-catalog-write",
        "spine-twin-read",
        "spine-twin-write",
    ]
    assert routes["spine-twin-read"].owner == "Spine/default"
    assert [entry.id for entry in catalog_document(plan).entries] == ["spine-twin"]
    # No keys fetched yet: the auth has none, so every protected route answers 503.
    assert plan.facts["keys"] == 0 and plan.facts["issuer"] == AUTH["issuer"]


def test_twin_routes_carry_roles_and_the_write_token_only_by_environment() -> None:
    spec = {
        "auth": {
            **AUTH,
            "twin": {"readRoles": ["twin:r"], "writeRoles": ["twin:w"]},
            "catalog": {"writeRole": "cat:w"},
        }
    }
    result = proxy.plan_proxy(inputs(spine(spec), []))
    assert isinstance(result, Plan)
    routes = {
        route.name: route
        for route in proxy.haproxy_inputs(
            SpineSpec.model_validate(spec),
            ENV,
            proxy.KeysInput(),
            [
                route
                for route, _ in proxy.platform_routes(
                    SpineSpec.model_validate(spec), ENV, NAMESPACE, "default"
                )
            ],
        ).routes
    }
    assert routes["spine-twin-read"].methods == ["GET", "HEAD"]
    assert routes["spine-twin-read"].roles == ["twin:r"]
    assert routes["spine-twin-write"].roles == ["twin:w"]
    assert routes["spine-twin-write"].backend_token_env == proxy.TWIN_TOKEN_ENV
    assert routes["spine-twin-write"].backend.host == f"spine-twin.{NAMESPACE}.svc.cluster.local"
    assert routes["spine-catalog-read"].roles == []  # any valid token reads the catalog
    assert routes["spine-catalog-write"].roles == ["cat:w"]
    # The token reaches the proxy from the twin's Secret as an environment variable only.
    container = find(result, "Deployment", labels.PROXY_NAME)["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["env"] == [
        {
            "name": proxy.TWIN_TOKEN_ENV,
            "valueFrom": {"secretKeyRef": {"name": labels.TWIN_TOKENS_SECRET, "key": "write"}},
        }
    ]
    for obj in result.objects:
        assert TWIN_WRITE_TOKEN not in json.dumps(obj), obj["metadata"]["name"]
    assert TWIN_WRITE_TOKEN not in (result.push.document if result.push else "")


def test_each_exposed_http_api_gets_a_route_and_a_catalog_entry() -> None:
    item = registration("planner", "2026-01-01T00:00:00Z", http_api(), mqtt_api())
    item["spec"]["probe"] = {"path": "/healthz", "intervalSeconds": 15}
    plan = plan_of(spine(), [item])
    found = verdict(plan, "planner")
    assert found.reason == cond.RECONCILED and found.spec_valid is True
    assert found.routes == ("planner-orders",)
    orders = next(api for api in found.apis if api.id == "orders")
    assert orders.route_url == f"http://spine-proxy.{NAMESPACE}.svc:8443/services/orders"
    assert orders.spec_hash and len(orders.spec_hash) == 64
    route = next(r for r in proxy_document(plan).routes if r.name == "planner-orders")
    assert (route.path, route.owner) == ("/services/orders", "ServiceRegistration/planner")
    entry = next(e for e in catalog_document(plan).entries if e.id == "planner")
    assert entry.owner == "ServiceRegistration/planner"
    assert entry.probe is not None and entry.probe.url == (
        f"http://planner.{NAMESPACE}.svc.cluster.local:8080/healthz"
    )
    assert {api.id: api.protocol for api in entry.apis} == {"orders": "HTTP", "events": "MQTT"}
    assert next(api for api in entry.apis if api.id == "orders").spec.schema_["openapi"] == "3.1.0"
    # Without auth there are no twin routes; the catalog is still served through the proxy.
    names = sorted(r.name for r in proxy_document(plan).routes)
    assert names == ["planner-orders", "spine-catalog-read", "spine-catalog-write"]


def test_a_path_collision_refuses_the_younger_registration_only() -> None:
    older = registration("first", "2026-01-01T00:00:00Z", http_api(path="/shared"))
    younger = registration("second", "2026-01-02T00:00:00Z", http_api(path="/shared/v1"))
    other = registration("third", "2026-01-03T00:00:00Z", http_api(path="/elsewhere"))
    plan = plan_of(spine(), [younger, other, older])
    assert verdict(plan, "first").reason == cond.RECONCILED
    assert verdict(plan, "third").reason == cond.RECONCILED
    refused = verdict(plan, "second")
    assert refused.reason == cond.INVALID_REFERENCE
    assert "ServiceRegistration first" in refused.message and "/shared" in refused.message
    routes = {r.name: r.path for r in proxy_document(plan).routes}
    assert routes["first-orders"] == "/shared" and routes["third-orders"] == "/elsewhere"
    assert "second-orders" not in routes


def test_the_twin_and_catalog_paths_are_reserved() -> None:
    plan = plan_of(
        spine({"auth": AUTH}),
        [registration("sneaky", "2026-01-01T00:00:00Z", http_api(path="/twin/api"))],
    )
    refused = verdict(plan, "sneaky")
    assert refused.reason == cond.INVALID_REFERENCE and "the twin API" in refused.message


def test_an_invalid_spec_is_refused_alone_with_the_validator_message() -> None:
    bad = registration("bad", "2026-01-01T00:00:00Z", http_api(path="/bad"))
    good = registration("good", "2026-01-02T00:00:00Z", http_api(path="/good"))
    specs = {("bad", "orders"): b'{"openapi": "2.0", "info": {}}'}
    plan = plan_of(spine(), [bad, good], specs=specs)
    refused = verdict(plan, "bad")
    assert refused.reason == cond.INVALID_SPEC and refused.spec_valid is False
    assert "spec.apis[0].spec" in refused.message and "openapi" in refused.message
    assert verdict(plan, "good").reason == cond.RECONCILED
    assert [r.name for r in proxy_document(plan).routes if r.owner.startswith("Service")] == [
        "good-orders"
    ]


def test_a_missing_service_or_spec_configmap_waits_for_it() -> None:
    missing_service = registration("a", "2026-01-01T00:00:00Z", http_api(path="/a"))
    missing_spec = registration("b", "2026-01-02T00:00:00Z", http_api(path="/b"))
    specs = {("b", "orders"): DependencyNotFound("ConfigMap b-spec does not exist")}
    plan = plan_of(spine(), [missing_service, missing_spec], services={}, specs=specs)
    assert verdict(plan, "a").reason == cond.DEPENDENCY_NOT_FOUND
    assert "Service planner (spec.apis[0].serviceRef)" in verdict(plan, "a").message
    plan = plan_of(spine(), [missing_spec], specs=specs)
    assert verdict(plan, "b").reason == cond.DEPENDENCY_NOT_FOUND
    assert verdict(plan, "b").spec_valid is None and "b-spec" in verdict(plan, "b").message


def test_each_mqtt_api_gets_a_login_allowed_exactly_its_channels() -> None:
    item = registration(
        "planner",
        "2026-01-01T00:00:00Z",
        mqtt_api("events", publish=["plant/orders/created"], subscribe=["plant/+/ack", "x/#"]),
    )
    plan = plan_of(spine(), [item])
    login = next(login for login in plan.logins if login.username != proxy.CATALOG_USERNAME)
    assert login.username == "service-planner.events" and login.client_id == login.username
    assert login.secret == "planner-events-mqtt"
    assert login.acls() == [
        {
            "acltype": "publishClientSend",
            "topic": "plant/orders/created",
            "priority": 0,
            "allow": True,
        },
        {"acltype": "subscribePattern", "topic": "plant/+/ack", "priority": 0, "allow": True},
        {"acltype": "subscribePattern", "topic": "x/#", "priority": 0, "allow": True},
    ]
    assert verdict(plan, "planner").apis[0].login_secret == "planner-events-mqtt"
    secret = next(s for s in plan.generated if s["metadata"]["name"] == "planner-events-mqtt")
    assert secret["stringData"]["username"] == "service-planner.events"
    catalog = next(login for login in plan.logins if login.username == proxy.CATALOG_USERNAME)
    assert catalog.publish == ("sc/v3/announcement/#",)
    assert catalog.subscribe == ("sc/v3/announcement/+/+/alive",)


@pytest.mark.parametrize("topic", ["$SYS/#", "plant/#/x", "plant/a+", "line\nbreak", "x" * 300])
def test_an_mqtt_filter_that_could_widen_the_acl_is_refused(topic: str) -> None:
    api = mqtt_api(publish=[topic])
    with pytest.raises(ValidationError) as error:
        ServiceRegistrationSpec.model_validate({"type": "t", "apis": [api]})
    assert "apis.0.access" in str(error.value).replace("\n", " ")


HOSTILE = ["a\nb", "a#b", 'a"b', "a b", "a'b", "a\\b", "a\rb"]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize(
    ("where", "place"),
    [
        ("expose.path", lambda api, v: api["expose"].__setitem__("path", "/x/" + v)),
        ("expose.roles", lambda api, v: api["expose"].__setitem__("roles", [v])),
        ("id", lambda api, v: api.__setitem__("id", v)),
        ("spec.mediaType", lambda api, v: api["spec"].__setitem__("mediaType", "a/" + v)),
        ("serviceRef.name", lambda api, v: api["serviceRef"].__setitem__("name", v)),
    ],
)
def test_a_value_that_could_inject_into_haproxy_cfg_is_refused(value, where, place) -> None:
    api = http_api()
    place(api, value)
    with pytest.raises(ValidationError) as error:
        ServiceRegistrationSpec.model_validate({"type": "t", "apis": [api]})
    assert where.split(".")[0] in str(error.value)


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("field", ["issuer", "audience", "rolesClaim"])
def test_auth_values_that_could_inject_are_refused(value: str, field: str) -> None:
    auth = {**AUTH, field: (AUTH.get(field) or "realm_access.roles") + value}
    with pytest.raises(ValidationError) as error:
        SpineSpec.model_validate({"auth": auth})
    assert f"auth.{field}" in str(error.value)


def test_twin_roles_that_could_inject_are_refused() -> None:
    with pytest.raises(ValidationError) as error:
        SpineSpec.model_validate({"auth": {**AUTH, "twin": {"readRoles": ["spine:read\n#x"]}}})
    assert "auth.twin.readRoles" in str(error.value)


def test_ps_algorithms_are_refused_with_the_reason() -> None:
    with pytest.raises(ValidationError) as error:
        SpineSpec.model_validate({"auth": {**AUTH, "algorithms": ["RS256", "PS256"]}})
    assert "PS256 cannot be verified by HAProxy" in str(error.value)


def test_audience_is_a_string_or_a_list() -> None:
    assert SpineSpec.model_validate({"auth": AUTH}).auth.audience == ["spine"]
    listed = SpineSpec.model_validate({"auth": {**AUTH, "audience": ["a", "b"]}})
    assert listed.auth is not None and listed.auth.audience == ["a", "b"]


def test_keys_reach_the_proxy_config_as_content_addressed_files() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"
    keys = proxy.KeysInput((VerifyKey(kid="k1", alg="RS256", pem=pem),), 1.0, None)
    plan = plan_of(spine({"auth": AUTH}), [], keys=keys)
    document = proxy_document(plan)
    assert document.key_files == {VerifyKey(kid="k1", alg="RS256", pem=pem).file_name(): pem}
    assert plan.facts["keys"] == 1


def test_a_key_change_is_pushed_and_does_not_roll_the_proxy() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"
    before = plan_of(spine({"auth": AUTH}), [])
    after = plan_of(
        spine({"auth": AUTH}),
        [],
        keys=proxy.KeysInput((VerifyKey(kid="k1", alg="RS256", pem=pem),), 1.0, None),
    )
    template = lambda plan: find(plan, "Deployment", labels.PROXY_NAME)["spec"]["template"]  # noqa: E731
    assert template(before) == template(after)


def test_network_policies_open_only_the_route_port_to_everyone() -> None:
    plan = plan_of(spine({"auth": AUTH}), [])
    proxy_policy = find(plan, "NetworkPolicy", labels.PROXY_NAME)["spec"]["ingress"]
    assert {"ports": [{"port": ENV.proxy_port, "protocol": "TCP"}]} in proxy_policy
    admin_rule = next(rule for rule in proxy_policy if "from" in rule)
    assert admin_rule["ports"] == [{"port": ENV.proxy_admin_port, "protocol": "TCP"}]
    assert {"podSelector": {}} not in admin_rule["from"]
    catalog_rule = find(plan, "NetworkPolicy", labels.CATALOG_NAME)["spec"]["ingress"]
    sources = catalog_rule[0]["from"]
    assert sources[0] == {
        "podSelector": {"matchLabels": labels.selector(proxy.PROXY_COMPONENT, "default")}
    }
    assert {"podSelector": {}} not in sources


def test_the_proxy_service_type_and_tls_follow_the_spine() -> None:
    spec = {"auth": AUTH, "proxy": {"serviceType": "LoadBalancer", "tls": {"secretName": "t"}}}
    plain = inputs(spine(spec), [])
    refused = proxy.plan_proxy(plain)
    assert isinstance(refused, DependencyNotFound) and "Secret t" in refused.message
    plan = proxy.plan_proxy(
        proxy.ProxyPlanInputs(
            **{**plain.__dict__, "tls": SecretInput("t", {"tls.crt": "c", "tls.key": "k"})}
        )
    )
    assert isinstance(plan, Plan)
    assert find(plan, "Service", labels.PROXY_NAME)["spec"]["type"] == "LoadBalancer"
    assert find(plan, "Service", labels.PROXY_ADMIN_SERVICE)["spec"]["type"] == "ClusterIP"
    assert plan.facts["proxyUrl"].startswith("https://")


def test_the_example_registration_renders_with_the_press_line() -> None:
    objects = render(load_resources([ROOT / "examples" / "press-line"]), ENV)
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("Deployment", labels.PROXY_NAME) in names
    assert ("Deployment", labels.CATALOG_NAME) in names
    assert ("Secret", "maintenance-events-mqtt") in names
    config = next(o for o in objects if o["metadata"]["name"] == labels.PROXY_CONFIG_NAME)
    routes = json.loads(config["data"][labels.PROXY_CONFIG_FILE])["routes"]
    assert {
        "name": "maintenance-orders",
        "path": "/services/maintenance/v1",
        "owner": "ServiceRegistration/maintenance",
    } in routes


def test_render_names_a_refused_registration(tmp_path: Path) -> None:
    documents = [doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc]
    registration_doc = copy.deepcopy(documents[1])
    registration_doc["spec"]["apis"][0]["spec"]["value"] = '{"swagger": "2.0"}'
    (tmp_path / "r.yaml").write_text(yaml.safe_dump_all([registration_doc]))
    with pytest.raises(RenderError) as error:
        render(
            load_resources([ROOT / "examples" / "press-line" / "spine.yaml", tmp_path / "r.yaml"]),
            ENV,
        )
    assert "ServiceRegistration maintenance" in str(error.value)


def test_a_target_url_haproxy_cannot_hold_is_refused_for_that_registration_alone() -> None:
    api = http_api(path="/quoted")
    del api["serviceRef"]
    api["url"] = "http://legacy.example.com/a'b"
    long_doc = registration("documented", "2026-01-02T00:00:00Z", http_api(path="/doc"))
    long_doc["spec"]["doc"] = "https://docs.example.com/" + "a" * 1500
    good = registration("good", "2026-01-03T00:00:00Z", http_api(path="/good"))
    plan = plan_of(spine(), [registration("quoted", "2026-01-01T00:00:00Z", api), long_doc, good])
    refused = verdict(plan, "quoted")
    assert refused.reason == cond.INVALID_SPEC
    assert refused.message.startswith("spec.apis[0].url cannot be routed")
    assert verdict(plan, "documented").reason == cond.INVALID_SPEC
    assert "entry.doc" in verdict(plan, "documented").message
    assert verdict(plan, "good").reason == cond.RECONCILED


def test_when_the_proxy_config_is_full_the_youngest_registrations_wait() -> None:
    """Each route costs HAProxy lines (a role check per array slot): past what a ConfigMap holds
    the youngest registrations are refused, the older ones stay routed."""
    registrations = [
        registration(
            f"svc-{i:03d}",
            f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
            http_api(path=f"/services/s{i}"),
        )
        for i in range(420)
    ]
    plan = plan_of(spine({"auth": AUTH}), registrations, services={"planner": {}})
    data = find(plan, "ConfigMap", labels.PROXY_CONFIG_NAME)["data"][labels.PROXY_CONFIG_FILE]
    assert len(data) <= proxy.MAX_CONFIG_DOCUMENT_BYTES
    reasons = [verdict(plan, f"svc-{i:03d}").reason for i in range(420)]
    full = reasons.index(cond.PROXY_CONFIG_FULL)
    assert full > 100 and set(reasons[:full]) == {cond.RECONCILED}
    assert set(reasons[full:]) == {cond.PROXY_CONFIG_FULL}
    assert "older registrations are routed" in verdict(plan, "svc-419").message
    routed = {r.name for r in proxy_document(plan).routes}
    assert "svc-000-orders" in routed and "svc-419-orders" not in routed
    assert "svc-419" not in [e.id for e in catalog_document(plan).entries]


def test_embedded_specs_stop_at_the_catalogs_budget_and_are_listed_by_type() -> None:
    big = {
        "openapi": "3.1.0",
        "info": {"title": "Big", "version": "1", "description": "x" * 60_000},
        "paths": {},
    }
    registrations = [
        registration(f"big-{i}", f"2026-01-0{i + 1}T00:00:00Z", http_api(path=f"/big{i}"))
        for i in range(9)
    ]
    specs = {(f"big-{i}", "orders"): json.dumps(big).encode() for i in range(9)}
    plan = plan_of(spine(), registrations, specs=specs)
    entries = {e.id: e for e in catalog_document(plan).entries}
    embedded = [i for i in range(9) if entries[f"big-{i}"].apis[0].spec.schema_ is not None]
    assert embedded == list(range(len(embedded))) and 3 <= len(embedded) < 9  # oldest first
    data = find(plan, "ConfigMap", labels.CATALOG_CONFIG_NAME)["data"][labels.CATALOG_CONFIG_FILE]
    assert len(data) <= proxy.MAX_CONFIG_DOCUMENT_BYTES
    assert all(verdict(plan, f"big-{i}").reason == cond.RECONCILED for i in range(9))


def test_the_proxys_route_bound_matches_its_inputs_model() -> None:
    from spine_operator.desired.haproxy import ProxyInputs

    bound = next(
        item.max_length
        for item in ProxyInputs.model_fields["routes"].metadata
        if hasattr(item, "max_length")
    )
    assert bound == proxy.MAX_PROXY_ROUTES
