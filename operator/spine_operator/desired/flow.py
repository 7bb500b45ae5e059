"""The namespace's flow engine, planned from every Flow of the namespace (an aggregate, as the
twin is of TwinModels).

`plan_flows` checks each Flow (its spec compiles; the TwinModels and ServiceRegistrations it
names exist), resolves its references into what the engine runs (a twin source's model into its
things, a validate step's model into a JSON Schema, a serviceRef into a URL), gives it its own
broker login allowed exactly its topics, and renders the engine's config with every accepted
flow: one change reaches the running engine by config push, and only that flow restarts there.
No Flow, no engine: a namespace pays nothing for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from pydantic import ValidationError

from spine_operator import conditions as cond
from spine_operator import labels
from spine_operator.api.spine import SpineSpec
from spine_operator.api.twinmodel import TwinModelSpec
from spine_operator.desired import workload
from spine_operator.desired.common import resources
from spine_operator.desired.flow_routes import flow_route
from spine_operator.desired.flow_services import Unresolved, resolve_service_ref
from spine_operator.desired.logins import Login, build_login_secret
from spine_operator.desired.plan import ConfigPush, Plan, Refusal, SecretInput
from spine_operator.desired.twin import RUNTIME_UID, select_twin_models
from spine_operator.environment import Environment
from spine_operator.errors import DependencyNotReady, InvalidSpec, ReconcileError
from spine_runtime.common.configsource import describe_validation_error
from spine_runtime.config.flow import (
    POD_NAME_VARIABLE,
    FlowEngineConfig,
    FlowSpec,
    replica_suffix,
    shared_group,
)
from spine_runtime.flow.twin import twin_acl_topics, twin_identity

COMPONENT = "flow-engine"
LIVE_FIELDS = frozenset({"flows"})  # a flow's change is pushed; the engine restarts it alone


# The logins of replicas 1, 2, ... (`flow-<flow>.<n>`): the broker holds exactly those of the
# replicas and flows that exist; a '.' is never part of a Flow's name (a DNS label).
REPLICA_LOGIN_PATTERN = r"^flow-[a-z0-9]([-a-z0-9]*[a-z0-9])?\.[0-9]+$"


def flow_username(flow: str, ordinal: int = 0) -> str:
    """The login (and client id) replica `ordinal` runs a flow under: `flow-<flow>` on replica
    0, as before replicas existed, so its persistent session carries over; `flow-<flow>.<n>`."""
    return f"flow-{flow}{replica_suffix(ordinal)}"


def flow_login(name: str, spec: FlowSpec, ordinal: int = 0) -> Login:
    """Exactly the flow's topics: its source (also as a shared subscription, so replicas
    split it), its sinks, its dead letters, and this replica's own twin updates and acks.

    Bound to one client id, its username, like every login: each replica runs each flow on one
    connection (source and sinks) under exactly that id, so no replica can take another's
    session over, and none can write the twin under another's sequence numbers."""
    twin_publish, twin_acks = twin_acl_topics(name, ordinal)
    suffix = f" (replica {ordinal})" if ordinal else ""
    return Login(
        flow_username(name, ordinal),
        client_id=flow_username(name, ordinal),
        publish=tuple(spec.publish_topics(name, twin_publish)),
        subscribe=tuple(spec.subscribe_topics(twin_acks, shared_group(name))),
        description=f"Spine flow {name}{suffix}",
    )


def login_volume_path(flow: str, ordinal: int) -> str:
    """Where a replica's password lies below the logins volume: `<flow>[.<n>]/password`."""
    return f"{flow}{replica_suffix(ordinal)}/password"


@dataclass(frozen=True)
class FlowInputs:
    """What the plan of a namespace's flow engine reads."""

    spine: dict[str, Any]
    flows: list[dict[str, Any]]
    models: list[dict[str, Any]]
    env: Environment
    token: SecretInput
    logins: dict[str, SecretInput]  # login Secret name -> its values
    existing: dict[str, Any] | None = None  # the live StatefulSet
    existing_ready: bool = False
    # The Deployment an operator before replicas ran the engine as: removed for the StatefulSet.
    legacy_deployment: bool = False
    registrations: list[dict[str, Any]] = field(default_factory=list)  # for serviceRefs


@dataclass(frozen=True)
class FlowVerdict:
    """One Flow's place in the engine: running (Reconciled) or refused, and why."""

    reason: str
    message: str
    login_secret: str | None = None
    route_url: str | None = None  # where the proxy exposes its http source


def _model_schema(model: TwinModelSpec) -> dict[str, Any]:
    """A TwinModel's properties as a JSON Schema of a message carrying them as fields."""
    return {
        "type": "object",
        "properties": {name: prop.to_wire() for name, prop in model.properties.items()},
    }


def resolve(
    spec: FlowSpec,
    models: dict[str, TwinModelSpec],
    registrations: dict[str, dict[str, Any]] | None = None,
    env: Environment | None = None,
    namespace: str = "",
) -> dict[str, Any] | Unresolved:
    """The flow as the engine runs it (the wire form), or why a reference does not resolve.
    `registrations`: the namespace's ServiceRegistrations by name, for `serviceRef`s."""
    missing = [name for name in spec.model_refs() if name not in models]
    if missing:
        return Unresolved(
            cond.DEPENDENCY_NOT_FOUND,
            f"TwinModel {', '.join(missing)} does not exist in the namespace (or is refused): "
            "apply it, and the flow starts as soon as it is accepted",
        )
    urls: dict[str, str] = {}
    for where, ref in spec.service_ref_sites():
        found = resolve_service_ref(
            ref, f"spec.{where}", registrations or {}, env or Environment(), namespace
        )
        if isinstance(found, Unresolved):
            return found
        urls[where] = found
    wire = spec.to_wire()
    targets = [(f"steps[{i}].call", step.get("call")) for i, step in enumerate(wire["steps"])]
    targets += [(f"sinks[{i}].http", sink.get("http")) for i, sink in enumerate(wire["sinks"])]
    for where, target in targets:
        if where in urls:  # the engine calls the URL; serviceRef is the operator's to read
            del target["serviceRef"]
            target["url"] = urls[where]
    twin_source = wire["source"].get("twin")
    if twin_source is not None and twin_source.get("model"):
        model = models[twin_source["model"]]
        things = [thing.name for thing in model.things]
        twin_source["things"] = sorted(set(twin_source.get("things") or []) | set(things))
    for step in wire.get("steps", []):
        validate = step.get("validate")
        if validate is not None and validate.get("schema") is None:
            validate["schema"] = _model_schema(models[validate["model"]])
    return wire


def exposure(
    name: str, flow_spec: FlowSpec, spec: SpineSpec, env: Environment, namespace: str
) -> str | FlowVerdict | None:
    """The URL where the proxy exposes the flow's http source, None if it asks for no route,
    or why it cannot be exposed (the proxy checks tokens only with `auth`)."""
    route = flow_route(name, flow_spec, env, namespace)
    if route is None:
        return None
    if isinstance(route, str):
        return FlowVerdict(cond.INVALID_SPEC, route)
    if spec.auth is None:
        return FlowVerdict(
            cond.INVALID_REFERENCE,
            "spec.source.http.expose: the proxy admits a token only if the Spine names its "
            "issuer, and the namespace's Spine has no auth: set spec.auth on the Spine, or "
            "remove expose",
        )
    return env.proxy_public_url(namespace, spec.proxy.tls is not None) + route.path


def engine_config(
    spec: SpineSpec, env: Environment, namespace: str, flows: list[dict[str, Any]]
) -> FlowEngineConfig:
    secrets_dir = PurePosixPath(env.flow_secrets_dir)
    return FlowEngineConfig.model_validate(
        {
            "broker": {"host": env.broker_host(namespace), "port": env.broker_port},
            "http": {
                "host": env.flow_bind_address,
                "port": env.flow_port,
                "adminTokenFile": str(secrets_dir / "token" / "token"),
            },
            "twinNamespace": spec.twin_namespace(namespace),
            "replicas": spec.flow_engine.replicas,
            "flows": flows,
        }
    )


def login_file(env: Environment, flow: str, ordinal: int = 0) -> str:
    return str(PurePosixPath(env.flow_secrets_dir) / "logins" / login_volume_path(flow, ordinal))


def login_document(env: Environment, flow: str, login: Login, ordinal: int) -> dict[str, Any]:
    return {
        "username": login.username,
        "passwordFile": login_file(env, flow, ordinal),
        "clientId": login.client_id,
    }


def select_flows(
    inputs: FlowInputs, spec: SpineSpec, namespace: str
) -> tuple[list[dict[str, Any]], dict[str, FlowVerdict], list[Login]]:
    """(engine config of each accepted flow, each Flow's verdict, the accepted flows' logins)."""
    models = dict(select_twin_models(inputs.models).accepted)
    registrations = {item["metadata"]["name"]: item for item in inputs.registrations}
    accepted: list[dict[str, Any]] = []
    verdicts: dict[str, FlowVerdict] = {}
    logins: list[Login] = []
    for item in sorted(inputs.flows, key=lambda flow: flow["metadata"]["name"]):
        name = item["metadata"]["name"]
        if item["metadata"].get("deletionTimestamp"):
            continue
        try:
            flow_spec = FlowSpec.model_validate(item.get("spec") or {})
        except ValidationError as error:
            message = f"Invalid spec: {describe_validation_error(error, 'spec')}"
            verdicts[name] = FlowVerdict(cond.INVALID_SPEC, message)
            continue
        resolved = resolve(flow_spec, models, registrations, inputs.env, namespace)
        if isinstance(resolved, Unresolved):
            message = resolved.message  # one that starts with a field path keeps its spelling
            if not message.startswith("spec."):
                message = message[:1].upper() + message[1:]
            verdicts[name] = FlowVerdict(resolved.reason, message)
            continue
        exposed = exposure(name, flow_spec, spec, inputs.env, namespace)
        if isinstance(exposed, FlowVerdict):
            verdicts[name] = exposed
            continue
        replica_logins = [
            flow_login(name, flow_spec, ordinal) for ordinal in range(spec.flow_engine.replicas)
        ]
        document = {
            **resolved,
            "name": name,
            # A Flow without its own maxInFlight or batchWindowMs takes the namespace's default
            # from the Spine.
            **{
                alias: getattr(spec.flow_engine, field)
                for field, alias in (
                    ("max_in_flight", "maxInFlight"),
                    ("batch_window_ms", "batchWindowMs"),
                )
                if field not in flow_spec.model_fields_set
            },
            "login": login_document(inputs.env, name, replica_logins[0], 0),
            "replicaLogins": [
                login_document(inputs.env, name, login, ordinal)
                for ordinal, login in enumerate(replica_logins)
                if ordinal
            ],
        }
        try:
            engine_config(spec, inputs.env, namespace, [document])
        except ValidationError as error:
            message = f"Invalid spec: {describe_validation_error(error, 'spec')}"
            verdicts[name] = FlowVerdict(cond.INVALID_SPEC, message)
            continue
        accepted.append(document)
        logins.extend(replica_logins)
        verdicts[name] = FlowVerdict(
            cond.RECONCILED,
            "Running on the namespace's flow engine",
            labels.login_secret_name(replica_logins[0].username),
            exposed,
        )
    return accepted, verdicts, logins


def plan_flows(inputs: FlowInputs) -> Plan | Refusal:
    """The flow engine (ConfigMap, Services, StatefulSet, NetworkPolicy, its token, one login per
    flow and replica), or nothing while the namespace has no Flow; `facts["flows"]` has every
    verdict."""
    metadata_ = inputs.spine["metadata"]
    namespace, spine_name = metadata_["namespace"], metadata_["name"]
    try:
        spec = SpineSpec.model_validate(inputs.spine.get("spec") or {})
    except ValidationError:
        return DependencyNotReady(
            f"Spine {spine_name} has an invalid spec (its status says what to fix); flows run "
            "once it is valid"
        )
    env = inputs.env
    accepted, verdicts, logins = select_flows(inputs, spec, namespace)
    if not inputs.flows:  # the last Flow went: so do the replica logins of every flow
        return Plan(objects=[], prune_logins=REPLICA_LOGIN_PATTERN, facts={"flows": {}})
    digests: dict[str, str] = {}
    try:
        digests[inputs.token.name] = inputs.token.require(("token",), "the flow engine")
        for login in logins:
            secret = labels.login_secret_name(login.username)
            found = inputs.logins.get(secret) or SecretInput(secret, None)
            digests[secret] = found.require(("password",), f"flow login {login.username}")
    except ReconcileError as error:
        return error
    try:
        config = engine_config(spec, env, namespace, accepted)
    except ValidationError as error:  # each flow passed alone: only their sum can fail here
        return InvalidSpec(f"The flows together: {describe_validation_error(error, 'flows')}")
    secrets_dir = PurePosixPath(env.flow_secrets_dir)
    config_map = workload.build_config_map(
        labels.FLOW_ENGINE_CONFIG_NAME,
        namespace,
        COMPONENT,
        spine_name,
        {labels.FLOW_ENGINE_CONFIG_FILE: workload.config_document(config)},
    )
    http_port = {"name": "http", "port": env.flow_port, "targetPort": "http", "protocol": "TCP"}
    service = workload.build_service(
        labels.FLOW_ENGINE_NAME, namespace, COMPONENT, spine_name, [http_port]
    )
    replicas = spec.flow_engine.replicas
    # The StatefulSet's governing Service: one DNS name per replica, for pushes and polls.
    pods_service = workload.build_service(
        labels.FLOW_ENGINE_PODS_NAME, namespace, COMPONENT, spine_name, [http_port], headless=True
    )
    # A replica that is starting must get its push too (it reads its ConfigMap otherwise).
    pods_service["spec"]["publishNotReadyAddresses"] = True
    # One projected volume holds the password of every flow on every replica at
    # logins/<flow>[.<n>]/password: the pods share one template, so each mounts all of them.
    logins_volume = {
        "name": "logins",
        "projected": {
            "defaultMode": 0o440,
            "sources": [
                {
                    "secret": {
                        "name": labels.login_secret_name(flow_username(flow["name"], ordinal)),
                        "items": [
                            {"key": "password", "path": login_volume_path(flow["name"], ordinal)}
                        ],
                    }
                }
                for flow in accepted
                for ordinal in range(replicas)
            ],
        },
    }
    container = workload.container(
        "flow-engine",
        env.runtime_image,
        [
            "spine-runtime",
            "flow",
            "--config",
            f"{env.flow_config_dir}/{labels.FLOW_ENGINE_CONFIG_FILE}",
        ],
        [{"name": "http", "containerPort": env.flow_port, "protocol": "TCP"}],
        [
            {"name": "config", "mountPath": env.flow_config_dir, "readOnly": True},
            {"name": "token", "mountPath": str(secrets_dir / "token"), "readOnly": True},
            {"name": "logins", "mountPath": str(secrets_dir / "logins"), "readOnly": True},
            workload.TMP_MOUNT,
        ],
        resources(spec.flow_engine.resources),
        workload.http_probes(),
    )
    # The replica learns its ordinal from its pod's name (`spine-flow-engine-<n>`).
    container["env"] = [
        {"name": POD_NAME_VARIABLE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]
    # A new flow (or replica) adds login Secrets to the projected volume: the pods' only restart.
    checksum = workload.restart_checksum(
        config, LIVE_FIELDS, *sorted(digests.values()), *sorted(digests)
    )
    template = workload.PodTemplate(
        component=COMPONENT,
        instance=spine_name,
        uid=RUNTIME_UID,
        containers=[container],
        volumes=[
            {"name": "config", "configMap": {"name": labels.FLOW_ENGINE_CONFIG_NAME}},
            workload.secret_volume("token", labels.FLOW_ENGINE_TOKEN_SECRET),
            logins_volume,
            workload.TMP_VOLUME,
        ],
        checksum=checksum,
    )
    # A StatefulSet, not a Deployment: each replica's logins are bound to client ids carrying
    # its ordinal, and a StatefulSet never runs two pods of one ordinal at once (a rolling
    # update stops replica n before its successor starts; a Deployment's surge pod, or a
    # replacement beside a pod on a partitioned node, would take every flow's session over and
    # be taken over in turn). Parallel: a replica that cannot start does not hold the others
    # back; the ordinals need no order, the shared subscriptions split among whoever is there.
    statefulset = workload.build_statefulset(
        labels.FLOW_ENGINE_NAME,
        namespace,
        template,
        labels.FLOW_ENGINE_PODS_NAME,
        claims=[],
        retain_on_delete=False,
    )
    statefulset["spec"]["replicas"] = replicas
    statefulset["spec"]["podManagementPolicy"] = "Parallel"
    del statefulset["spec"]["persistentVolumeClaimRetentionPolicy"]  # no volumes to keep
    network_policy = workload.build_ingress_policy(
        labels.FLOW_ENGINE_NAME,
        namespace,
        COMPONENT,
        spine_name,
        [env.flow_port],
        env.operator_namespace,
        monitoring_namespace=env.monitoring_namespace,
    )
    pushes: list[ConfigPush] = []
    if inputs.existing_ready and workload.pod_checksum(inputs.existing) == checksum:
        token = (inputs.token.values or {}).get("token", "")
        document = workload.config_document(config)
        pushes = [
            ConfigPush(url, token, document)
            for url in env.flow_engine_replica_urls(namespace, replicas)
        ]
    # Replica logins of ordinals (or flows) that are gone leave the broker once no pod of
    # theirs runs any more: a replica still stopping finishes its messages under its login.
    pods = int(((inputs.existing or {}).get("status") or {}).get("replicas") or 0)
    prune_held = pods > replicas
    return Plan(
        objects=[config_map, service, pods_service, statefulset, network_policy],
        removals=(
            [("apps/v1", "Deployment", labels.FLOW_ENGINE_NAME)] if inputs.legacy_deployment else []
        ),
        generated=[
            workload.build_generated_secret(
                labels.FLOW_ENGINE_TOKEN_SECRET, namespace, COMPONENT, spine_name, {"token": ""}
            ),
            *(build_login_secret(namespace, login, spine_name, env, "") for login in logins),
        ],
        prune_logins=None if prune_held else REPLICA_LOGIN_PATTERN,
        prune_keep=[
            flow_username(item["metadata"]["name"], ordinal)
            for item in inputs.flows
            if not item["metadata"].get("deletionTimestamp")
            for ordinal in range(1, replicas)
        ],
        logins=logins,
        push=pushes[0] if pushes else None,
        more_pushes=pushes[1:],
        secret_digests=digests,
        facts={
            "flows": verdicts,
            "replicas": replicas,
            "pruneHeld": prune_held,
            "identities": [
                twin_identity(flow["name"], ordinal)
                for flow in accepted
                for ordinal in range(replicas)
            ],
        },
    )
