"""Render one namespace's workloads into a state directory, as the operator renders them for a pod.

`prepare_namespace` takes a validated `NamespacePlan`, picks ports, and writes what each pod
would mount (mosquitto.conf and the seeded dynamic-security file, the twin's ConfigMap key, its
token and login Secrets, each gateway's config and login) with the operator's own builders and
an `Environment.for_local`. It returns the `Workload`s to start, in order, with the command of
each pod's container run by this Python, and the broker logins to create once the broker is up.
Secrets already in the state directory are reused, so a kept state directory runs again.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import spine_runtime
from spine_operator import labels
from spine_operator.desired import broker as broker_build
from spine_operator.desired import flow as flow_build
from spine_operator.desired import twin as twin_build
from spine_operator.desired.logins import (
    TWIN_USERNAME,
    Login,
    build_login_secret,
    generate_password,
    twin_login,
)
from spine_operator.desired.plan import Plan, Refusal, SecretInput
from spine_operator.environment import Environment
from spine_operator.errors import ReconcileError
from spine_operator.local.broker import prepare_local_broker
from spine_operator.local.materialize import write_config_map, write_secret
from spine_operator.local.plan import NamespacePlan
from spine_operator.local.ports import Ports
from spine_operator.local.probes import HOST, HttpProbe, TcpProbe
from spine_operator.local.runview import DEMO_USERNAME
from spine_operator.local.supervisor import Probe, Workload
from spine_operator.render import RenderError

# Where `spine_runtime` lives: the children run the same code as this process.
RUNTIME_ROOT = Path(spine_runtime.__file__).resolve().parents[1]


def demo_login() -> Login:
    """For the person trying Spine: read everything under spine/, publish nothing."""
    return Login(
        DEMO_USERNAME,
        subscribe=("spine/#",),
        description="spine up: demo, read-only",
        client_id=DEMO_USERNAME,
    )


def runtime_argv(container_command: list[str]) -> list[str]:
    """A pod's `spine-runtime ...` command, run by this Python interpreter."""
    if not container_command or container_command[0] != "spine-runtime":
        raise ValueError(f"not a spine-runtime command: {container_command}")
    return [sys.executable, "-m", "spine_runtime.cli", *container_command[1:]]


def runtime_env() -> dict[str, str]:
    python_path = os.pathsep.join(filter(None, [str(RUNTIME_ROOT), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1"}


def http_probe(url: str) -> Probe:
    """Healthy when `url` answers 200."""
    return HttpProbe(url)


def tcp_probe(port: int, host: str = HOST) -> Probe:
    """Healthy when the port accepts a connection (mosquitto has no HTTP endpoint)."""
    return TcpProbe(port, host)


def read_or_make(path: Path, make: Callable[[], str]) -> str:
    """A secret kept in the state directory from an earlier run, or a new one."""
    try:
        value = path.read_text().strip()
    except OSError:
        value = ""
    return value or make()


@dataclass
class NamespaceRun:
    """Everything started for one namespace, and what the screen and the state file show."""

    plan: NamespacePlan
    env: Environment
    state_dir: Path
    admin_username: str
    admin_password: str
    demo_password: str
    logins: list[tuple[Login, str]] = field(default_factory=list)
    workloads: list[Workload] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.plan.namespace

    @property
    def twin_url(self) -> str:
        return self.env.twin_url(self.namespace)

    @property
    def write_token_file(self) -> Path:
        return Path(self.env.twin_secrets_dir) / "tokens" / "write"

    @property
    def demo_password_file(self) -> Path:
        return self.state_dir / "demo-login" / "password"


def prepare_namespace(
    plan: NamespacePlan, state_root: Path, log_dir: Path, ports: Ports, name_prefix: str = ""
) -> NamespaceRun:
    """Write every file the namespace's workloads read; returns them, not yet started."""
    namespace = plan.namespace
    state_dir = state_root / namespace
    gateway_ports: dict[str, int] = {}
    if plan.registration_bodies or plan.spine.auth is not None:
        gateway_ports = {
            "proxy_port": ports.take("proxy"),
            "proxy_admin_port": ports.take("proxy-admin"),
            "proxy_exporter_port": ports.take("proxy-exporter"),
            "catalog_port": ports.take("catalog"),
        }
    env = Environment.for_local(
        state_dir,
        broker_port=ports.take("broker"),
        twin_port=ports.take("twin"),
        flow_port=ports.take("flow") if plan.flow_bodies else 0,
        **gateway_ports,
    )
    admin_dir = Path(env.broker_secrets_dir)
    admin_password = read_or_make(admin_dir / "password", broker_build.generate_password)
    write_secret(
        broker_build.build_admin_secret(namespace, plan.spine_name, admin_password), admin_dir
    )
    broker_files = prepare_local_broker(
        plan.spine.broker, env, namespace, plan.spine_name, admin_password, keep_user=True
    )
    demo_dir = state_dir / "demo-login"
    demo_password = read_or_make(demo_dir / "password", lambda: secrets.token_urlsafe(12))
    write_secret(
        build_login_secret(namespace, demo_login(), plan.spine_name, env, demo_password), demo_dir
    )
    run = NamespaceRun(
        plan,
        env,
        state_dir,
        broker_files.admin_username,
        admin_password,
        demo_password,
        logins=[(demo_login(), demo_password)],
    )

    def log_path(short: str) -> Path:
        return log_dir / f"{namespace}-{short.replace('/', '-')}.log"

    run.workloads.append(
        Workload(
            name=f"{name_prefix}broker",
            role="broker",
            argv=broker_files.argv,
            log_path=log_path("broker"),
            probe=tcp_probe(env.broker_port),
            address=f"mqtt://{HOST}:{env.broker_port}",
            namespace=namespace,
        )
    )
    run.workloads.append(prepare_twin(run, log_path("twin"), name_prefix))
    if plan.flow_bodies:
        run.workloads.append(prepare_flow_engine(run, log_path("flow-engine"), name_prefix))
    return run


def planned(result: Plan | Refusal, label: str) -> Plan:
    """The plan, or RenderError with the operator's own words for the refusal."""
    if isinstance(result, ReconcileError):
        raise RenderError(f"{label}: {result.reason}: {result.message}")
    return result


def prepare_twin(run: NamespaceRun, log_path: Path, name_prefix: str) -> Workload:
    """The twin's Secrets and ConfigMap as files, and the command of its StatefulSet's pod,
    from the operator's own plan."""
    plan, env, namespace = run.plan, run.env, run.namespace
    secrets_dir = Path(env.twin_secrets_dir)
    tokens_dir = secrets_dir / "tokens"
    tokens = twin_build.build_tokens_secret(
        namespace,
        plan.spine_name,
        read_or_make(tokens_dir / "write", twin_build.generate_token),
        read_or_make(tokens_dir / "admin", twin_build.generate_token),
    )
    write_secret(tokens, tokens_dir)
    password = read_or_make(secrets_dir / "mqtt" / "password", broker_build.generate_password)
    login = build_login_secret(namespace, twin_login(), plan.spine_name, env, password)
    write_secret(login, secrets_dir / "mqtt")
    twin_plan = planned(
        twin_build.plan_twin(
            twin_build.TwinInputs(
                plan.spine_body,
                plan.model_bodies,
                env,
                SecretInput.of(labels.TWIN_TOKENS_SECRET, tokens),
                SecretInput.of(labels.login_secret_name(TWIN_USERNAME), login),
                publishers=twin_build.numbered_publishers(
                    [resource.body for resource in plan.gateways], plan.flow_bodies
                ),
            )
        ),
        plan.source,
    )
    run.logins += [(twin_login_, password) for twin_login_ in twin_plan.logins]
    write_config_map(twin_plan.object_of("ConfigMap"), Path(env.twin_config_dir))
    Path(env.twin_data_dir).mkdir(parents=True, exist_ok=True)
    url = env.twin_url(namespace)
    return Workload(
        name=f"{name_prefix}twin",
        role="twin",
        argv=runtime_argv(twin_plan.container_command()),
        log_path=log_path,
        probe=http_probe(f"{url}/healthz"),
        address=url,
        namespace=namespace,
        env=runtime_env(),
    )


def prepare_flow_engine(run: NamespaceRun, log_path: Path, name_prefix: str) -> Workload:
    """The flow engine's token, each flow's login and the engine's config as files, from the
    operator's own plan (which refuses a Flow as the operator would)."""
    plan, env, namespace = run.plan, run.env, run.namespace
    secrets_dir = Path(env.flow_secrets_dir)
    token = {"token": read_or_make(secrets_dir / "token" / "token", twin_build.generate_token)}
    write_secret({"stringData": token}, secrets_dir / "token")
    inputs = flow_build.FlowInputs(
        plan.spine_body,
        plan.flow_bodies,
        plan.model_bodies,
        env,
        SecretInput(labels.FLOW_ENGINE_TOKEN_SECRET, token),
        {},
        registrations=plan.registration_bodies,  # a serviceRef leads to 127.0.0.1:<its port>
    )
    _, verdicts, logins = flow_build.select_flows(inputs, plan.spine, namespace)
    refused = [f"Flow {name}: {v.message}" for name, v in verdicts.items() if not v.login_secret]
    if refused:
        raise RenderError(f"{plan.source}: " + "; ".join(refused))
    secrets_by_name = {}
    for login in logins:
        flow_name = login.username.removeprefix("flow-")
        password = read_or_make(secrets_dir / "logins" / flow_name / "password", generate_password)
        write_secret({"stringData": {"password": password}}, secrets_dir / "logins" / flow_name)
        secret = labels.login_secret_name(login.username)
        secrets_by_name[secret] = SecretInput(secret, {"password": password})
        run.logins.append((login, password))
    engine_plan = planned(
        flow_build.plan_flows(dataclasses.replace(inputs, logins=secrets_by_name)), plan.source
    )
    write_config_map(engine_plan.object_of("ConfigMap"), Path(env.flow_config_dir))
    url = env.flow_engine_url(namespace)
    run.details["flowEngine"] = {"url": url, "flows": sorted(verdicts)}
    return Workload(
        name=f"{name_prefix}flow engine",
        role="flow",
        argv=runtime_argv(engine_plan.container_command()),
        log_path=log_path,
        probe=http_probe(f"{url}/healthz"),
        address=url,
        namespace=namespace,
        env=runtime_env(),
    )
