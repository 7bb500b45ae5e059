"""Gateways of a local run, and the press simulators that stand in for their PLCs.

A local run has no plant. So that the very example a cluster gets runs unchanged, `spine up`
starts one press simulator (`spine-runtime sim`, one simulated press over Modbus TCP, OPC UA and
S7) for each thing the gateways read, serving the protocols of the connections that feed it,
and points each of those connections at it (OPC UA without security: the simulator has none).
`--plc CONNECTION=HOST:PORT` points a connection at a real PLC instead. The rewritten spec then
goes through the operator's own builder (`build.gateway`), checked against the TwinModels as
the operator checks it, and the gateway gets its own login from `gateway_login`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from spine_operator.api.gateway import GatewayConnection, GatewaySpec
from spine_operator.desired import gateway as gateway_build
from spine_operator.desired.plan import SecretInput
from spine_operator.environment import Environment
from spine_operator.local.materialize import write_config_map, write_secret
from spine_operator.local.ports import Ports
from spine_operator.local.stack import (
    HOST,
    NamespaceRun,
    http_probe,
    planned,
    read_or_make,
    runtime_argv,
    runtime_env,
)
from spine_operator.local.supervisor import Workload
from spine_operator.render import RenderError, Resource
from spine_runtime.common.configsource import describe_validation_error

PROTOCOL_OF = {"modbusTcp": "modbus", "opcua": "opcua", "s7": "s7"}
SIM_TICK_MS = 100


def connection_protocol(connection: GatewayConnection) -> str:
    if connection.modbus_tcp is not None:
        return "modbus"
    return "opcua" if connection.opcua is not None else "s7"


def describe_endpoint(connection: GatewayConnection) -> str:
    if connection.modbus_tcp is not None:
        return f"{connection.modbus_tcp.host}:{connection.modbus_tcp.port}"
    if connection.opcua is not None:
        return connection.opcua.endpoint
    assert connection.s7 is not None
    return f"{connection.s7.host}:{connection.s7.port}"


def point_at(connection: GatewayConnection, host: str, port: int) -> GatewayConnection:
    """The connection, reaching host:port instead (OPC UA: plain, no security)."""
    wire = connection.to_wire()
    if connection.modbus_tcp is not None:
        wire["modbusTcp"] = {**wire["modbusTcp"], "host": host, "port": port}
    elif connection.opcua is not None:
        wire["opcua"] = {
            "endpoint": f"opc.tcp://{host}:{port}",
            "securityPolicy": "None",
            "securityMode": "None",
            "timeout": connection.opcua.timeout,
        }
    else:
        wire["s7"] = {**wire["s7"], "host": host, "port": port}
    return GatewayConnection.model_validate(wire)


def parse_plc_address(text: str) -> tuple[str, int]:
    """HOST:PORT, or an OPC UA endpoint opc.tcp://HOST:PORT."""
    address = text.removeprefix("opc.tcp://").rstrip("/")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)


@dataclass
class SimulatedPlc:
    """One press simulator: the thing it plays and the connections it serves."""

    namespace: str
    thing: str
    http_port: int
    ports: dict[str, int] = field(default_factory=dict)  # protocol -> port
    serves: list[str] = field(default_factory=list)  # "gateway/connection (original endpoint)"

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def config(self) -> dict[str, Any]:
        """The simulator's config document: only the protocols asked for."""
        document: dict[str, Any] = {
            "tickIntervalMs": SIM_TICK_MS,
            "benchRegisters": 0,
            "http": {"host": HOST, "port": self.http_port},
        }
        for protocol in ("modbus", "opcua", "s7"):
            port = self.ports.get(protocol)
            document[protocol] = (
                {"enabled": True, "host": HOST, "port": port} if port else {"enabled": False}
            )
        if "modbus" in self.ports:
            document["modbus"]["unitId"] = 0  # answer whatever unit id the example uses
        return document


def _connection_things(spec: GatewaySpec) -> dict[str, list[str]]:
    """Connection name -> the things its tags feed, in tag order."""
    things: dict[str, list[str]] = {connection.name: [] for connection in spec.connections}
    for tag in spec.runtime_tags():
        if tag.thing not in things[tag.connection]:
            things[tag.connection].append(tag.thing)
    return things


def localize(
    run: NamespaceRun,
    gateway: str,
    spec: GatewaySpec,
    ports: Ports,
    plcs: dict[str, str],
    simulators: dict[str, SimulatedPlc],
    used_plcs: set[str],
) -> GatewaySpec:
    """The spec with every connection pointed at a local simulator or at its `--plc` address."""
    connection_things = _connection_things(spec)
    connections = []
    for connection in spec.connections:
        key = next((k for k in (f"{gateway}/{connection.name}", connection.name) if k in plcs), "")
        if key:
            used_plcs.add(key)
            host, port = parse_plc_address(plcs[key])
            connections.append(point_at(connection, host, port))
            continue
        thing = next(iter(connection_things[connection.name]), spec.thing or connection.name)
        simulator = simulators.get(thing)
        if simulator is None:
            simulator = SimulatedPlc(run.namespace, thing, ports.take("sim-http"))
            simulators[thing] = simulator
        protocol = connection_protocol(connection)
        if protocol not in simulator.ports:
            simulator.ports[protocol] = ports.take(protocol)
        simulator.serves.append(f"{gateway}/{connection.name} ({describe_endpoint(connection)})")
        connections.append(point_at(connection, HOST, simulator.ports[protocol]))
    return spec.model_copy(update={"connections": connections})


def prepare_gateways(
    run: NamespaceRun,
    resources: list[Resource],
    ports: Ports,
    log_dir: Path,
    plcs: dict[str, str],
    name_prefix: str = "",
) -> set[str]:
    """Add the simulators and gateways of one namespace to `run`; returns the `--plc` keys used.

    Each gateway is planned by the operator's own plan (name, spec, tags against the TwinModels,
    one source per property); RenderError lists every gateway that the operator would refuse."""
    problems: list[str] = []
    simulators: dict[str, SimulatedPlc] = {}
    used_plcs: set[str] = set()
    gateways: list[Workload] = []
    bodies = [_as_stored(resource, run.namespace) for resource in resources]
    for resource, body in zip(resources, bodies, strict=True):
        name = str(body["metadata"]["name"])
        try:
            spec = GatewaySpec.model_validate(body.get("spec") or {})
            spec = localize(run, name, spec, ports, plcs, simulators, used_plcs)
        except ValidationError as error:
            problems.append(f"{resource.label}: {describe_validation_error(error, 'spec')}")
            continue
        except ValueError as error:
            problems.append(f"{resource.label}: --plc {error}")
            continue
        local_body = {**body, "spec": spec.to_wire()}
        others = [other for other in bodies if other is not body]
        env = run.env.replace(gateway_port=ports.take("gateway"))
        try:
            gateways.append(
                write_gateway(run, local_body, others, env, log_dir, name_prefix, resource.label)
            )
        except RenderError as error:
            problems.append(str(error))
    if problems:
        raise RenderError("\n".join(problems))
    for simulator in simulators.values():
        run.workloads.append(simulator_workload(run, simulator, log_dir, name_prefix))
    run.workloads += gateways
    return used_plcs


def _as_stored(resource: Resource, namespace: str) -> dict[str, Any]:
    metadata = {"creationTimestamp": "", **(resource.body.get("metadata") or {})}
    metadata["namespace"] = namespace
    return {**resource.body, "metadata": metadata}


def write_gateway(
    run: NamespaceRun,
    body: dict[str, Any],
    others: list[dict[str, Any]],
    env: Environment,
    log_dir: Path,
    name_prefix: str,
    label: str,
) -> Workload:
    """The gateway's Secrets and ConfigMap as files, its login, and its pod's command."""
    name = body["metadata"]["name"]
    spec = GatewaySpec.model_validate(body["spec"])
    directories = env.gateway_directories(name)
    mounts = {mount.volume: mount for mount in gateway_build.secret_mounts(spec, env, name)}
    mqtt_dir, admin_dir = Path(mounts["mqtt"].directory), Path(mounts["admin"].directory)
    password = read_or_make(mqtt_dir / "password", gateway_build.generate_token)
    token = read_or_make(admin_dir / "token", gateway_build.generate_token)
    admin_secret = gateway_build.build_admin_token_secret(run.namespace, name, token)
    secrets = {
        mounts["mqtt"].secret_name: SecretInput(mounts["mqtt"].secret_name, {"password": password}),
        mounts["admin"].secret_name: SecretInput.of(mounts["admin"].secret_name, admin_secret),
    }
    plan = planned(
        gateway_build.plan_gateway(
            gateway_build.GatewayInputs(
                body, env, run.plan.spine_body, run.plan.model_bodies, others, secrets
            )
        ),
        label,
    )
    write_secret({"stringData": {"password": password}}, mqtt_dir)
    write_secret(admin_secret, admin_dir)
    run.logins += [(login, password) for login in plan.logins]
    write_config_map(plan.object_of("ConfigMap"), Path(directories.config_dir))
    Path(directories.data_dir).mkdir(parents=True, exist_ok=True)
    url = env.gateway_url(run.namespace, name)
    run.details.setdefault("gateways", {})[name] = {"url": url}
    return Workload(
        name=f"{name_prefix}gateway {name}",
        role="gateway",
        argv=runtime_argv(plan.container_command()),
        log_path=log_dir / f"{run.namespace}-gateway-{name}.log",
        probe=http_probe(f"{url}/healthz"),
        address=url,
        namespace=run.namespace,
        env=runtime_env(),
        extra={"gateway": name, "url": url},
    )


def simulator_workload(
    run: NamespaceRun, simulator: SimulatedPlc, log_dir: Path, name_prefix: str
) -> Workload:
    directory = run.state_dir / "simulators"
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / f"{simulator.thing}.yaml"
    config_path.write_text(yaml.safe_dump(simulator.config(), sort_keys=False))
    run.details.setdefault("simulators", {})[simulator.thing] = {
        "http": simulator.http_url,
        "ports": simulator.ports,
        "serves": simulator.serves,
    }
    return Workload(
        name=f"{name_prefix}sim {simulator.thing}",
        role="sim",
        argv=runtime_argv(["spine-runtime", "sim", "--config", str(config_path)]),
        log_path=log_dir / f"{run.namespace}-sim-{simulator.thing}.log",
        probe=http_probe(f"{simulator.http_url}/healthz"),
        address=simulator.http_url,
        namespace=run.namespace,
        env=runtime_env(),
        extra={"thing": simulator.thing, "ports": simulator.ports},
    )
