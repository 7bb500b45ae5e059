"""The haproxy.cfg that the proxy plan renders for a ServiceRegistration, run by the real Debian
HAProxy with keys from the real development issuer: the registration's route admits only tokens
with its role, the twin's write route sends the internal write token from the environment
(never from the config), reads of the catalog need any valid token, and unknown paths get 404.
The real catalog process serves the plan's entries and reports its probes as the poller reads."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from spine_operator import labels, oidc
from spine_operator.desired import proxy
from spine_operator.desired.plan import Plan, SecretInput
from spine_operator.environment import Environment
from spine_runtime.config.proxy import ProxyConfig
from tests.support.devissuer import DevIssuer
from tests.support.processes import ManagedProcess, eventually, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/usr/sbin/haproxy").exists(), reason="Debian haproxy missing"),
]

HAPROXY = "/usr/sbin/haproxy"
NAMESPACE = "plant-a"
INTERNAL_TOKEN = "internal-twin-write-token"


class EchoBackend:
    """An HTTP service that answers every request with what it received."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                headers = {key.lower(): value for key, value in self.headers.items()}
                record = {"method": self.command, "path": self.path, "headers": headers}
                backend.seen.append(record)
                body = json.dumps({"path": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> EchoBackend:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[DevIssuer]:
    running = DevIssuer(tmp_path / "issuer").start()
    yield running
    running.stop()


def planned(
    env: Environment, issuer: DevIssuer, service_port: int, *extra: str, **expose: Any
) -> Plan:
    jwks = httpx.get(issuer.jwks_uri, timeout=5).json()
    keys = tuple(oidc.jwks_to_verify_keys(jwks, ["RS256", "ES256"]))
    return planned_with(env, issuer.issuer, service_port, keys, *extra, **expose)


def planned_without_keys(env: Environment, issuer: str, service_port: int) -> Plan:
    return planned_with(env, issuer, service_port, ())


def planned_with(
    env: Environment, issuer: str, service_port: int, keys: tuple, *extra: str, **expose: Any
) -> Plan:
    """A plan with the registration `planner` (and one more per name in `extra`, routed at
    /services/<name>)."""
    spine = {
        "metadata": {"name": "default", "namespace": NAMESPACE},
        "spec": {"auth": {"issuer": issuer, "audience": "spine"}},
    }
    registration = {
        "metadata": {"name": "planner", "namespace": NAMESPACE, "creationTimestamp": "1"},
        "spec": {
            "type": "planner",
            "apis": [
                {
                    "id": "orders",
                    "protocol": "HTTP",
                    "serviceRef": {"name": "planner", "port": service_port},
                    "expose": {"path": "/services/orders", "roles": ["orders:read"], **expose},
                    "spec": {"mediaType": "application/json", "value": "{}"},
                }
            ],
            "probe": {"path": "/healthz", "intervalSeconds": 5},
        },
    }
    openapi = {
        "openapi": "3.1.0",
        "info": {"title": "Orders", "version": "1"},
        "paths": {"/orders": {"get": {"responses": {"200": {"description": "ok"}}}}},
    }
    registrations = [registration]
    for name in extra:
        more = json.loads(json.dumps(registration))
        more["metadata"]["name"] = name
        more["spec"]["apis"][0]["expose"]["path"] = f"/services/{name}"
        registrations.append(more)
    result = proxy.plan_proxy(
        proxy.ProxyPlanInputs(
            spine=spine,
            registrations=registrations,
            env=env,
            specs={
                (item["metadata"]["name"], "orders"): json.dumps(openapi).encode()
                for item in registrations
            },
            services={"planner": {}},
            keys=proxy.KeysInput(keys, 1.0, None),
            proxy_token=SecretInput(labels.PROXY_TOKEN_SECRET, {"token": "t"}),
            catalog_token=SecretInput(labels.CATALOG_TOKEN_SECRET, {"token": "t"}),
            twin_tokens=SecretInput(labels.TWIN_TOKENS_SECRET, {"write": INTERNAL_TOKEN}),
            catalog_login=SecretInput("spine-mqtt-spine-catalog", {"password": "p"}),
        )
    )
    assert isinstance(result, Plan), result
    assert result.facts["registrations"]["planner"].reason == "Reconciled"
    return result


def start_haproxy(plan: Plan, tmp_path: Path, port: int) -> ManagedProcess:
    """As the supervisor would: key files first, `haproxy -c`, then HAProxy itself."""
    config_map = next(o for o in plan.objects if o["metadata"]["name"] == labels.PROXY_CONFIG_NAME)
    document = ProxyConfig.model_validate_json(config_map["data"][labels.PROXY_CONFIG_FILE])
    assert INTERNAL_TOKEN not in config_map["data"][labels.PROXY_CONFIG_FILE]
    document.haproxy.keys_dir.mkdir(parents=True, exist_ok=True)
    for name, pem in document.key_files.items():
        (document.haproxy.keys_dir / name).write_text(pem)
    config = tmp_path / "haproxy.cfg"
    config.write_text(document.haproxy_cfg)
    environment = {"SPINE_TWIN_WRITE_TOKEN": INTERNAL_TOKEN}
    check = subprocess.run(
        [HAPROXY, "-c", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=environment,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    process = ManagedProcess(
        [HAPROXY, "-db", "-f", str(config)], tmp_path / "haproxy.log", env=environment
    )
    process.start().wait_for_port(port)
    return process


def test_the_rendered_proxy_admits_exactly_the_roles_each_route_names(
    tmp_path: Path, issuer: DevIssuer
) -> None:
    proxy_port = free_port()
    with EchoBackend() as service, EchoBackend() as twin, EchoBackend() as catalog:
        env = Environment.for_local(
            tmp_path / "state",
            broker_port=free_port(),
            twin_port=twin.port,
            proxy_port=proxy_port,
            proxy_exporter_port=free_port(),
            catalog_port=catalog.port,
        )
        haproxy = start_haproxy(planned(env, issuer, service.port), tmp_path, proxy_port)
        try:
            base = f"http://127.0.0.1:{proxy_port}"

            def call(method: str, path: str, roles: list[str] | None = None) -> httpx.Response:
                headers = {}
                if roles is not None:
                    headers["Authorization"] = f"Bearer {issuer.token('alice', roles)}"
                return httpx.request(method, base + path, headers=headers, timeout=5)

            refused = call("GET", "/services/orders/orders")
            assert refused.status_code == 401 and refused.json()["code"] == 401
            assert call("GET", "/services/orders/orders", ["other"]).status_code == 403
            assert not service.seen
            admitted = call("GET", "/services/orders/orders", ["orders:read"])
            assert admitted.status_code == 200, admitted.text
            assert service.seen[-1]["path"] == "/orders"
            assert service.seen[-1]["headers"].get("x-spine-subject") == "alice"

            # The twin: reads with a read role; writes with a write role carry the internal
            # token, which no client ever sees or sends.
            assert call("GET", "/twin/api/2/things", ["spine:twin:read"]).status_code == 200
            assert call("PUT", "/twin/api/2/things/x", ["spine:twin:read"]).status_code == 403
            assert call("PUT", "/twin/api/2/things/x", ["spine:twin:write"]).status_code == 200
            assert twin.seen[-1]["method"] == "PUT"
            assert twin.seen[-1]["headers"]["authorization"] == f"Bearer {INTERNAL_TOKEN}"

            # The catalog: any valid token reads; writes need the catalog's write role.
            assert call("GET", "/catalog/", []).status_code == 200
            assert call("GET", "/catalog/").status_code == 401
            assert call("POST", "/catalog/", []).status_code == 403
            assert call("GET", "/nowhere", ["orders:read"]).status_code == 404
        finally:
            haproxy.stop()


async def test_the_planned_catalog_serves_the_entry_and_reports_its_probe(tmp_path: Path) -> None:
    """The real catalog process on the plan's config: the registration's entry with its route
    URL and spec, and a /status the operator's poller reads into Reachable."""
    from spine_operator.poller import catalog_report, fetch_report
    from spine_operator.statuses import reachable_condition
    from tests.support.catalog import CatalogHandle

    with EchoBackend() as service:
        env = Environment.for_local(
            tmp_path / "state", broker_port=free_port(), catalog_port=free_port()
        )
        plan = planned_without_keys(env, "https://sso.example.com/r", service.port)
        config_map = next(
            o for o in plan.objects if o["metadata"]["name"] == labels.CATALOG_CONFIG_NAME
        )
        config = json.loads(config_map["data"][labels.CATALOG_CONFIG_FILE])
        Path(config["mqtt"]["passwordFile"]).parent.mkdir(parents=True, exist_ok=True)
        Path(config["mqtt"]["passwordFile"]).write_text("unused: no broker listens")
        Path(config["storeFile"]).parent.mkdir(parents=True, exist_ok=True)
        catalog = CatalogHandle.start(tmp_path / "catalog", config)
        try:
            entry = httpx.get(f"{catalog.url}/planner", timeout=5).json()
            assert entry["apis"][0]["url"].endswith("/services/orders")
            assert entry["apis"][0]["spec"]["schema"]["openapi"] == "3.1.0"

            def probed() -> Any:
                found = catalog.status()["entries"]
                return any(e["id"] == "planner" and e["reachable"] is True for e in found)

            await eventually(probed, 15, "the catalog's first probe of the planner")
            async with httpx.AsyncClient() as client:
                report, result = await fetch_report(client, catalog.url, catalog_report)
            assert result == "ok"
            assert any(seen["path"] == "/healthz" for seen in service.seen)
            # The catalog's half of Reachable (the proxy's routes are another test's).
            verdict = dataclasses.replace(plan.facts["registrations"]["planner"], routes=())
            reachable = reachable_condition(verdict, "planner", None, report, 1)
            assert reachable["status"] == "True", reachable
        finally:
            catalog.stop()


def test_before_the_first_keys_every_protected_route_answers_503(
    tmp_path: Path, issuer: DevIssuer
) -> None:
    """The issuer was never reached: the proxy runs, and fails closed."""
    proxy_port = free_port()
    with EchoBackend() as service, EchoBackend() as twin, EchoBackend() as catalog:
        env = Environment.for_local(
            tmp_path / "state",
            broker_port=free_port(),
            twin_port=twin.port,
            proxy_port=proxy_port,
            proxy_exporter_port=free_port(),
            catalog_port=catalog.port,
        )
        plan = planned_without_keys(env, issuer.issuer, service.port)
        haproxy = start_haproxy(plan, tmp_path, proxy_port)
        try:
            token = issuer.token("alice", ["orders:read", "spine:twin:write"])
            for method, path in (
                ("GET", "/services/orders/orders"),
                ("PUT", "/twin/api/2/things/x"),
                ("GET", "/catalog/"),
            ):
                answer = httpx.request(
                    method,
                    f"http://127.0.0.1:{proxy_port}{path}",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=5,
                )
                assert answer.status_code == 503, (path, answer.text)
                assert answer.json()["code"] == 503
            assert not service.seen and not twin.seen and not catalog.seen
        finally:
            haproxy.stop()


def test_a_registrations_rate_limit_answers_429(tmp_path: Path, issuer: DevIssuer) -> None:
    proxy_port = free_port()
    with EchoBackend() as service:
        env = Environment.for_local(
            tmp_path / "state",
            broker_port=free_port(),
            proxy_port=proxy_port,
            proxy_exporter_port=free_port(),
        )
        plan = planned(env, issuer, service.port, rateLimit={"requests": 3, "perSeconds": 60})
        haproxy = start_haproxy(plan, tmp_path, proxy_port)
        try:
            token = issuer.token("alice", ["orders:read"])
            codes = [
                httpx.get(
                    f"http://127.0.0.1:{proxy_port}/services/orders/orders",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=5,
                ).status_code
                for _ in range(5)
            ]
            assert codes == [200, 200, 200, 429, 429], codes
            assert len(service.seen) == 3
        finally:
            haproxy.stop()


async def test_the_supervisor_runs_the_plans_document_and_takes_its_pushes(
    tmp_path: Path, issuer: DevIssuer
) -> None:
    """`spine-runtime proxy` on the very document the plan puts in the ConfigMap, as the pod
    runs it; a second registration arrives by the operator's push, and the poller reads each
    route's health from the supervisor's /status."""
    from spine_operator.external import push_config
    from spine_operator.poller import fetch_report, proxy_report
    from spine_operator.statuses import reachable_condition

    with EchoBackend() as service:
        env = Environment.for_local(
            tmp_path / "state",
            broker_port=free_port(),
            proxy_port=free_port(),
            proxy_admin_port=free_port(),
            proxy_exporter_port=free_port(),
        )
        plan = planned(env, issuer, service.port)
        config_map = next(
            o for o in plan.objects if o["metadata"]["name"] == labels.PROXY_CONFIG_NAME
        )
        document = ProxyConfig.model_validate_json(config_map["data"][labels.PROXY_CONFIG_FILE])
        assert document.http.admin_token_file is not None
        document.http.admin_token_file.parent.mkdir(parents=True, exist_ok=True)
        document.http.admin_token_file.write_text("push-token")
        Path(env.proxy_run_dir).mkdir(parents=True, exist_ok=True)
        config_file = Path(env.proxy_config_dir) / labels.PROXY_CONFIG_FILE
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(config_map["data"][labels.PROXY_CONFIG_FILE])
        supervisor = ManagedProcess(
            [sys.executable, "-m", "spine_runtime.cli", "proxy", "--config", str(config_file)],
            tmp_path / "supervisor.log",
            env={"SPINE_TWIN_WRITE_TOKEN": INTERNAL_TOKEN},
        )
        supervisor.start().wait_for_port(env.proxy_admin_port)
        try:
            async with httpx.AsyncClient() as client:

                async def report() -> Any:
                    found, _ = await fetch_report(client, env.proxy_url(NAMESPACE), proxy_report)
                    return found

                async def route_up(name: str) -> bool:
                    found = await report()
                    return found.reachable and (found.routes.get(name) or {}).get("up") is True

                for _ in range(200):  # HAProxy's first health check: 15 s at most
                    if await route_up("planner-orders"):
                        break
                    await asyncio.sleep(0.075)
                found = await report()
                verdict = plan.facts["registrations"]["planner"]
                assert reachable_condition(verdict, "planner", found, None, 1)["status"] == "True"

                # A second registration arrives by push, as the operator delivers it.
                second = planned(env, issuer, service.port, "billing")
                assert second.facts["registrations"]["billing"].routes == ("billing-orders",)
                pushed = next(
                    o for o in second.objects if o["metadata"]["name"] == labels.PROXY_CONFIG_NAME
                )["data"][labels.PROXY_CONFIG_FILE]
                result = await push_config(env.proxy_url(NAMESPACE), "push-token", pushed)
                assert result.delivered, result.message
                token = issuer.token("alice", ["orders:read"])
                answer = await client.get(
                    f"http://127.0.0.1:{env.proxy_port}/services/billing/orders",
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert answer.status_code == 200, answer.text
                assert "billing-orders" in (await report()).routes
                refused = await push_config(env.proxy_url(NAMESPACE), "wrong-token", pushed)
                assert not refused.delivered
        finally:
            supervisor.stop()
