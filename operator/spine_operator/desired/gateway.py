"""Builders of one Gateway's workload: its config file, StatefulSet, Service, admin token.

Pure: the handler and `spine render` call them, and so does the local runner (`spine up`), which
writes the rendered config and the Secrets of `secret_mounts` where the Environment's paths say
a pod would find them. A gateway is a one-replica StatefulSet (DESIGN.md, Singletons: a PLC is
never polled twice at once) with its buffer on a PVC from the claim template, or an emptyDir.

What restarts: tags, publish settings and the resend timeout reach the running gateway by config
push (no restart); the pod template's checksum covers the rest of the config (connections,
buffer, broker and HTTP settings) and the Secrets the pod mounts, so those roll the pod.
`check_tags_against_models` is the operator's check of every tag against its thing's TwinModel.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from pydantic import ValidationError

from spine_operator import conditions as cond
from spine_operator import labels
from spine_operator.api.gateway import (
    CERTIFICATE_KEYS,
    CREDENTIALS_KEYS,
    SERVER_CERTIFICATE_KEY,
    GatewayConnection,
    GatewaySpec,
)
from spine_operator.api.spine import SpineSpec
from spine_operator.api.twinmodel import TwinModelSpec
from spine_operator.desired import workload
from spine_operator.desired.broker import keep_claim_templates
from spine_operator.desired.common import resources
from spine_operator.desired.logins import build_login_secret, gateway_login, gateway_username
from spine_operator.desired.plan import (
    ConfigPush,
    Plan,
    Refusal,
    SecretInput,
    VolumeResize,
    volume_condition,
)
from spine_operator.desired.twin import RUNTIME_UID, select_twin_models
from spine_operator.desired.workload import build_generated_secret, pod_checksum
from spine_operator.environment import Environment
from spine_operator.errors import (
    DependencyNotFound,
    DependencyNotReady,
    InvalidReference,
    InvalidSpec,
    ReconcileError,
    SpineNotFound,
)
from spine_runtime.config.base import DNS_LABEL_PATTERN
from spine_runtime.config.gateway import GatewayConfig

COMPONENT = "gateway"
CONTAINER = "gateway"
# Fields of the config a running gateway applies when pushed (spine_runtime.gateway.app also
# applies connections live, but DESIGN.md has a connection change roll the pod: it may bring new
# Secrets to mount, and a fresh process is the simplest state to reason about for a PLC).
LIVE_FIELDS = frozenset({"tags", "publish", "resendTimeoutSeconds"})
# A ConfigMap holds at most 1 MiB.
MAX_CONFIG_BYTES = 1_000_000


def gateway_name_problem(name: str) -> str | None:
    """Why a Gateway's metadata.name cannot name its children, or None."""
    if not re.match(DNS_LABEL_PATTERN, name) or len(name) > labels.GATEWAY_NAME_MAX_LENGTH:
        return (
            f"metadata.name {name!r}: a Gateway's name must be a DNS label of at most "
            f"{labels.GATEWAY_NAME_MAX_LENGTH} characters (lowercase letters, digits and '-'), "
            f"since it names StatefulSet {labels.GATEWAY_PREFIX}<name>; re-create it with a "
            "shorter name"
        )
    return None


def generate_token() -> str:
    return secrets.token_urlsafe(32)


def login_secret_name(gateway: str) -> str:
    """The Secret `brokeraccess` keeps the gateway's broker login in."""
    return labels.login_secret_name(gateway_username(gateway))


@dataclass(frozen=True)
class SecretMount:
    """Keys of one Secret the gateway reads as files: a volume in the pod, files when local."""

    volume: str
    secret_name: str
    directory: str
    keys: tuple[str, ...]
    field: str = ""  # where the spec names the Secret; empty for the ones the operator makes


# Where an OPC UA connection's Secrets appear, under <secrets>/opcua/<connection>/.
OPCUA_LOGIN_DIR, OPCUA_CERTIFICATE_DIR, OPCUA_SERVER_DIR = "login", "certificate", "server"


def opcua_directory(secrets_dir: PurePosixPath, connection: GatewayConnection) -> PurePosixPath:
    return secrets_dir / "opcua" / connection.name


def opcua_mounts(
    index: int, connection: GatewayConnection, secrets_dir: PurePosixPath
) -> list[SecretMount]:
    opcua = connection.opcua
    if opcua is None:
        return []
    directory = opcua_directory(secrets_dir, connection)
    field = f"spec.connections[{index}].opcua"
    wanted = (
        ("login", opcua.credentials_secret_name, CREDENTIALS_KEYS, OPCUA_LOGIN_DIR, "credentials"),
        (
            "cert",
            opcua.certificate_secret_name,
            CERTIFICATE_KEYS,
            OPCUA_CERTIFICATE_DIR,
            "certificate",
        ),
        (
            "server",
            opcua.server_certificate_secret_name,
            (SERVER_CERTIFICATE_KEY,),
            OPCUA_SERVER_DIR,
            "serverCertificate",
        ),
    )
    return [
        SecretMount(
            f"opcua-{index}-{volume}",
            secret,
            str(directory / subdirectory),
            keys,
            f"{field}.{spec_field}SecretName",
        )
        for volume, secret, keys, subdirectory, spec_field in wanted
        if secret is not None
    ]


def secret_mounts(spec: GatewaySpec, env: Environment, name: str) -> list[SecretMount]:
    """Every Secret the gateway reads: its broker login, its admin token, OPC UA Secrets."""
    secrets_dir = PurePosixPath(env.gateway_directories(name).secrets_dir)
    mounts = [
        SecretMount("mqtt", login_secret_name(name), str(secrets_dir / "mqtt"), ("password",)),
        SecretMount(
            "admin", labels.gateway_admin_secret_name(name), str(secrets_dir / "admin"), ("token",)
        ),
    ]
    for index, connection in enumerate(spec.connections):
        mounts += opcua_mounts(index, connection, secrets_dir)
    return mounts


def user_secret_mounts(spec: GatewaySpec, env: Environment, name: str) -> list[SecretMount]:
    """The Secrets the spec names (the user makes them); the handler checks they exist."""
    return [mount for mount in secret_mounts(spec, env, name) if mount.field]


def build_admin_token_secret(namespace: str, name: str, token: str) -> dict[str, Any]:
    """The bearer token of the gateway's admin endpoint (config push), generated once."""
    return build_generated_secret(
        labels.gateway_admin_secret_name(name), namespace, COMPONENT, name, {"token": token}
    )


def _runtime_connection(
    connection: GatewayConnection, secrets_dir: PurePosixPath
) -> dict[str, Any]:
    """A connection as the runtime reads it: OPC UA Secrets become the paths of their files."""
    wire = connection.to_wire()
    opcua = connection.opcua
    if opcua is None:
        return wire
    directory = opcua_directory(secrets_dir, connection)
    files: dict[str, str] = {}
    if opcua.credentials_secret_name:
        files["usernameFile"] = str(directory / OPCUA_LOGIN_DIR / "username")
        files["passwordFile"] = str(directory / OPCUA_LOGIN_DIR / "password")
    if opcua.certificate_secret_name:
        files["certificateFile"] = str(directory / OPCUA_CERTIFICATE_DIR / "tls.crt")
        files["privateKeyFile"] = str(directory / OPCUA_CERTIFICATE_DIR / "tls.key")
    if opcua.server_certificate_secret_name:
        files["serverCertificateFile"] = str(directory / OPCUA_SERVER_DIR / SERVER_CERTIFICATE_KEY)
    wire["opcua"] = {
        "endpoint": opcua.endpoint,
        "securityPolicy": opcua.security_policy,
        "securityMode": opcua.security_mode,
        "timeout": opcua.timeout,
        **files,
    }
    return wire


def gateway_config(
    spec: GatewaySpec, env: Environment, namespace: str, name: str, twin_namespace: str
) -> GatewayConfig:
    """The gateway's config document; Secrets appear in it as file paths only."""
    directories = env.gateway_directories(name)
    secrets_dir = PurePosixPath(directories.secrets_dir)
    username = gateway_username(name)
    return GatewayConfig.model_validate(
        {
            "name": name,
            "twinNamespace": twin_namespace,
            "mqtt": {
                "host": env.broker_host(namespace),
                "port": env.broker_port,
                "username": username,
                "passwordFile": str(secrets_dir / "mqtt" / "password"),
                "clientId": username,
            },
            "http": {
                "host": env.gateway_bind_address,
                "port": env.gateway_port,
                "adminTokenFile": str(secrets_dir / "admin" / "token"),
            },
            "connections": [
                _runtime_connection(connection, secrets_dir) for connection in spec.connections
            ],
            "tags": [tag.to_wire() for tag in spec.runtime_tags()],
            "publish": spec.publish.to_wire(),
            "buffer": {
                "path": directories.data_dir,
                "maxMessages": spec.buffer.max_messages,
                "maxBytes": spec.buffer.max_bytes,
                "fsync": spec.buffer.fsync,
            },
        }
    )


def config_document(config: GatewayConfig) -> str:
    return workload.config_document(config)


def config_size_problem(config: GatewayConfig) -> str | None:
    size = len(config_document(config).encode())
    if size > MAX_CONFIG_BYTES:
        return (
            f"spec.tags: the gateway's config is {size} bytes, more than a ConfigMap holds "
            f"({MAX_CONFIG_BYTES}); split the tags over two Gateways"
        )
    return None


def restart_checksum(config: GatewayConfig, *secret_digests: str) -> str:
    """What a running gateway does not take by push: everything but tags and publish settings,
    and the Secrets it mounts."""
    return workload.restart_checksum(config, LIVE_FIELDS, *secret_digests)


GatewayObjects = workload.RuntimeObjects


def _secret_volume(mount: SecretMount) -> dict[str, Any]:
    return workload.secret_volume(mount.volume, mount.secret_name, mount.keys)


def _buffer_volume(spec: GatewaySpec, pod_labels: dict[str, str]) -> tuple[list, list]:
    """(pod volumes, claim templates) holding the buffer."""
    storage = spec.buffer.storage
    if storage.type == "emptyDir":
        return [{"name": labels.GATEWAY_BUFFER_VOLUME, "emptyDir": {"sizeLimit": storage.size}}], []
    claim = workload.claim_template(
        labels.GATEWAY_BUFFER_VOLUME, storage.size, storage.storage_class_name, pod_labels
    )
    return [], [claim]


def build_gateway(
    spec: GatewaySpec,
    env: Environment,
    namespace: str,
    name: str,
    config: GatewayConfig,
    secret_digests: tuple[str, ...],
) -> GatewayObjects:
    """ConfigMap, headless Service and StatefulSet of one gateway."""
    workload_name = labels.gateway_name(name)
    pod_labels = labels.labels(COMPONENT, name)
    directories = env.gateway_directories(name)
    mounts = secret_mounts(spec, env, name)
    config_map = workload.build_config_map(
        labels.gateway_config_name(name),
        namespace,
        COMPONENT,
        name,
        {labels.GATEWAY_CONFIG_FILE: config_document(config)},
    )
    # Headless: the StatefulSet's governing Service, and the name the operator pushes config
    # to and reads /status from (the pod's own address, also with hostNetwork).
    http_port = {"name": "http", "port": env.gateway_port, "targetPort": "http", "protocol": "TCP"}
    service = workload.build_service(
        workload_name, namespace, COMPONENT, name, [http_port], headless=True
    )
    buffer_volumes, claims = _buffer_volume(spec, pod_labels)
    container = workload.container(
        CONTAINER,
        spec.image or env.runtime_image,
        [
            "spine-runtime",
            "gateway",
            "--config",
            str(PurePosixPath(directories.config_dir) / labels.GATEWAY_CONFIG_FILE),
        ],
        [{"name": "http", "containerPort": env.gateway_port, "protocol": "TCP"}],
        [
            {"name": "config", "mountPath": directories.config_dir, "readOnly": True},
            *(
                {"name": mount.volume, "mountPath": mount.directory, "readOnly": True}
                for mount in mounts
            ),
            {"name": labels.GATEWAY_BUFFER_VOLUME, "mountPath": directories.data_dir},
            workload.TMP_MOUNT,
        ],
        resources(spec.resources),
        workload.http_probes(),
    )
    extra: dict[str, Any] = {}
    if spec.host_network:
        # Without ClusterFirstWithHostNet a host-network pod resolves with the node's DNS and
        # cannot find the broker's Service name.
        extra["hostNetwork"] = True
        extra["dnsPolicy"] = "ClusterFirstWithHostNet"
    if spec.node_selector:
        extra["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        extra["tolerations"] = [toleration.to_wire() for toleration in spec.tolerations]
    template = workload.PodTemplate(
        component=COMPONENT,
        instance=name,
        uid=RUNTIME_UID,
        containers=[container],
        volumes=[
            {"name": "config", "configMap": {"name": labels.gateway_config_name(name)}},
            *(_secret_volume(mount) for mount in mounts),
            *buffer_volumes,
            workload.TMP_VOLUME,
        ],
        checksum=restart_checksum(config, *secret_digests),
        extra=extra,
    )
    statefulset = workload.build_statefulset(
        workload_name,
        namespace,
        template,
        workload_name,
        claims,
        spec.buffer.storage.retain_on_delete,
    )
    # Only the operator (config push, /status) may reach the gateway's HTTP port. A pod on the
    # host network is not isolated by a NetworkPolicy: the README says so.
    network_policy = workload.build_ingress_policy(
        workload_name,
        namespace,
        COMPONENT,
        name,
        [env.gateway_port],
        env.operator_namespace,
        same_namespace=False,
    )
    return GatewayObjects(config_map, service, statefulset, network_policy)


def keep_buffer_storage(
    desired: dict[str, Any], existing: dict[str, Any] | None
) -> tuple[dict[str, Any], str | None]:
    """The StatefulSet to apply over `existing`, and why its buffer volume cannot be as asked.

    A StatefulSet's volumeClaimTemplates cannot change, so the existing kind of volume (PVC or
    emptyDir) and storage class stay; a larger size is applied to the PVC itself by the handler.
    """
    if existing is None:
        return desired, None
    workload = desired["metadata"]["name"]
    current = existing.get("spec", {}).get("volumeClaimTemplates") or []
    wanted = desired["spec"].get("volumeClaimTemplates") or []
    pod_spec = desired["spec"]["template"]["spec"]
    if current and not wanted:
        kept = keep_claim_templates(desired, existing)
        template = kept["spec"]["template"]
        volumes = [v for v in pod_spec["volumes"] if v["name"] != labels.GATEWAY_BUFFER_VOLUME]
        kept = {
            **kept,
            "spec": {
                **kept["spec"],
                "template": {**template, "spec": {**template["spec"], "volumes": volumes}},
            },
        }
        return kept, (
            "spec.buffer.storage.type: the buffer stays on its PVC, since a StatefulSet's volume "
            f"claims cannot change; to use an emptyDir, delete StatefulSet {workload} when "
            "status.buffered is 0, and the operator re-creates it"
        )
    if not current and wanted:
        size = wanted[0]["spec"]["resources"]["requests"]["storage"]
        volumes = [v for v in pod_spec["volumes"] if v["name"] != labels.GATEWAY_BUFFER_VOLUME] + [
            {"name": labels.GATEWAY_BUFFER_VOLUME, "emptyDir": {"sizeLimit": size}}
        ]
        spec = {
            key: value for key, value in desired["spec"].items() if key != "volumeClaimTemplates"
        }
        template = spec["template"]
        spec["template"] = {**template, "spec": {**template["spec"], "volumes": volumes}}
        return {**desired, "spec": spec}, (
            "spec.buffer.storage.type: the buffer stays on an emptyDir, since a StatefulSet's "
            f"volume claims cannot change; to use a PVC, delete StatefulSet {workload} (its "
            "buffered updates are lost with the pod), and the operator re-creates it"
        )
    kept = keep_claim_templates(desired, existing)
    if current and wanted:
        had = current[0].get("spec", {}).get("storageClassName")
        asked = wanted[0]["spec"].get("storageClassName")
        if asked is not None and asked != had:
            return kept, (
                f"spec.buffer.storage.storageClassName: the PVC keeps storage class "
                f"{had or '(cluster default)'}, since a StatefulSet's volume claims cannot "
                f"change; to move it, delete StatefulSet {workload} and its PVC (losing the "
                "updates buffered on it), and the operator re-creates them"
            )
    return kept, None


# The mapping check -------------------------------------------------------------------------


@dataclass(frozen=True)
class MappingProblem:
    """A tag that does not fit its thing's TwinModel; `reason` is a condition reason."""

    tag: str
    reason: str
    message: str


def models_by_thing(
    models: Iterable[tuple[str, TwinModelSpec]],
) -> dict[str, tuple[str, TwinModelSpec]]:
    """Thing name -> (TwinModel name, its spec), from the namespace's accepted models."""
    return {thing.name: (name, spec) for name, spec in models for thing in spec.things}


def json_type_fits(published: str | None, property_type: str) -> bool:
    """A published value fits the property's JSON type; an integer is a number too, and None
    (an OPC UA tag without a type) is whatever the server sends, which only the twin can judge."""
    if published is None or published == property_type:
        return True
    return published == "integer" and property_type == "number"


def check_tags_against_models(
    config: GatewayConfig, models: dict[str, tuple[str, TwinModelSpec]]
) -> list[MappingProblem]:
    """Every tag against its thing's TwinModel: the thing and property exist, the published type
    fits the property's, a writable tag's property is not readOnly. Pure; messages name both."""
    problems: list[MappingProblem] = []
    unknown_things: dict[str, list[str]] = {}
    for tag in config.tags:
        found = models.get(tag.thing)
        if found is None:
            unknown_things.setdefault(tag.thing, []).append(tag.name)
            continue
        model_name, model = found
        prop = model.properties.get(tag.property)
        if prop is None:
            known = ", ".join(sorted(model.properties)) or "none"
            problems.append(
                MappingProblem(
                    tag.name,
                    cond.INVALID_REFERENCE,
                    f"tag {tag.name}: TwinModel {model_name} (thing {tag.thing}) has no property "
                    f"{tag.property}; its properties: {known}",
                )
            )
            continue
        published = config.published_json_type(tag)
        if not json_type_fits(published, prop.type):
            detail = f"{tag.type}, scaled" if tag.scale is not None else tag.type
            problems.append(
                MappingProblem(
                    tag.name,
                    cond.INVALID_REFERENCE,
                    f"tag {tag.name} publishes {published} values ({detail}) but property "
                    f"{tag.property} of TwinModel {model_name} has type {prop.type}",
                )
            )
        if tag.writable and prop.read_only:
            problems.append(
                MappingProblem(
                    tag.name,
                    cond.INVALID_REFERENCE,
                    f"tag {tag.name} is writable but property {tag.property} of TwinModel "
                    f"{model_name} is readOnly, so no desired value can reach it; drop writable "
                    "from the tag or readOnly from the property",
                )
            )
    for thing, tags in unknown_things.items():
        named = ", ".join(tags[:3]) + (f" and {len(tags) - 3} more" if len(tags) > 3 else "")
        problems.append(
            MappingProblem(
                tags[0],
                cond.DEPENDENCY_NOT_FOUND,
                f"thing {thing} (tag{'s' if len(tags) > 1 else ''} {named}) is in no TwinModel "
                "of the namespace; apply the TwinModel that lists it under spec.things",
            )
        )
    return problems


def fed_properties(body: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(thing, property) -> tag name of a Gateway resource; empty if its spec is invalid
    (an invalid Gateway applies nothing, so it feeds nothing)."""
    try:
        spec = GatewaySpec.model_validate(body.get("spec") or {})
    except ValueError:
        return {}
    return {(tag.thing, tag.property): tag.name for tag in spec.runtime_tags()}


def feeding_conflicts(
    body: dict[str, Any], config: GatewayConfig, others: Iterable[dict[str, Any]]
) -> list[MappingProblem]:
    """Tags of this Gateway that feed a property which another Gateway of the namespace
    created earlier feeds too (by creationTimestamp, then name).

    One property has one source: two gateways writing it would make the twin's value (and a
    desired value's "reached") flip between two PLCs. The first Gateway keeps the property,
    so applying a second one never takes data away from a running one. Pure."""
    problems: list[MappingProblem] = []
    own = {(tag.thing, tag.property): tag.name for tag in config.tags}
    for other in sorted(others, key=_age):
        if _age(other) >= _age(body):
            continue
        other_name = other["metadata"]["name"]
        for target, other_tag in fed_properties(other).items():
            if target in own:
                problems.append(
                    MappingProblem(
                        own[target],
                        cond.INVALID_REFERENCE,
                        f"tag {own[target]} feeds {target[0]}/{target[1]}, which tag "
                        f"{other_tag} of Gateway {other_name} already feeds: give each "
                        "property one source",
                    )
                )
    return problems


def _age(body: dict[str, Any]) -> tuple[str, str]:
    metadata = body.get("metadata") or {}
    return str(metadata.get("creationTimestamp") or ""), str(metadata.get("name") or "")


SHOWN_PROBLEMS = 5


def _listed(problems: list[str]) -> str:
    shown = problems[:SHOWN_PROBLEMS]
    if len(problems) > SHOWN_PROBLEMS:
        shown.append(f"and {len(problems) - SHOWN_PROBLEMS} more")
    return "; ".join(shown)


def mapping_refusal(problems: list[MappingProblem]) -> Refusal:
    """One refusal for all tags that do not fit: what cannot heal by waiting comes first."""
    invalid = [p.message for p in problems if p.reason == cond.INVALID_REFERENCE]
    if invalid:
        return InvalidReference("Tags do not fit their TwinModels: " + _listed(invalid))
    return DependencyNotFound(
        "Waiting for TwinModels: "
        + _listed([p.message for p in problems])
        + ". The gateway is applied as soon as they exist"
    )


@dataclass(frozen=True)
class GatewayInputs:
    """What the plan of a Gateway reads. Offline (`spine render`, `spine up`) the lists hold what
    is rendered together, and Secrets are placeholders."""

    body: dict[str, Any]
    env: Environment
    spine: dict[str, Any] | None  # the namespace's Spine (its twin namespace is in the config)
    models: list[dict[str, Any]]  # the namespace's TwinModels, to check every tag against
    others: list[dict[str, Any]]  # the namespace's other Gateways, for one source per property
    secrets: dict[str, SecretInput]  # every Secret the pod mounts, by name
    existing: dict[str, Any] | None = None  # the live StatefulSet
    existing_ready: bool = False
    pvc: dict[str, Any] | None = None
    storage_class: dict[str, Any] | None = None
    check_models: bool = True  # offline, only what is rendered together can be checked


def plan_gateway(inputs: GatewayInputs) -> Plan | Refusal:
    """ConfigMap, Service and StatefulSet of a gateway, its broker login, its buffer volume, and
    the config push when the running pod keeps its restart checksum."""
    metadata_ = inputs.body["metadata"]
    namespace, name = metadata_["namespace"], metadata_["name"]
    generation = int(metadata_.get("generation") or 0)
    name_problem = gateway_name_problem(name)
    if name_problem is not None:
        return InvalidSpec(f"Invalid name: {name_problem}")
    try:
        spec = GatewaySpec.model_validate(inputs.body.get("spec") or {})
    except ValidationError as error:
        return InvalidSpec.of(error)
    if inputs.spine is None:
        return SpineNotFound.in_namespace(namespace, "this gateway is applied")
    try:
        twin_namespace = SpineSpec.model_validate(inputs.spine.get("spec") or {}).twin_namespace(
            namespace
        )
    except ValidationError:
        return DependencyNotReady(
            f"Spine {inputs.spine['metadata']['name']} has an invalid spec (its status says what "
            "to fix); this gateway is applied once it is valid"
        )
    env = inputs.env
    config = gateway_config(spec, env, namespace, name, twin_namespace)
    size_problem = config_size_problem(config)
    if size_problem is not None:
        return InvalidSpec(f"Invalid spec: {size_problem}")
    if inputs.check_models:
        selection = select_twin_models(inputs.models)
        problems = check_tags_against_models(config, models_by_thing(selection.accepted))
        if problems:
            return mapping_refusal(problems)
    conflicts = feeding_conflicts(inputs.body, config, inputs.others)
    if conflicts:
        return InvalidReference(_listed([problem.message for problem in conflicts]))
    digests: dict[str, str] = {}
    try:
        for mount in secret_mounts(spec, env, name):
            secret = inputs.secrets.get(mount.secret_name) or SecretInput(
                mount.secret_name, None, mount.field
            )
            digests[mount.secret_name] = secret.require(mount.keys, mount.field or "the gateway")
    except ReconcileError as error:
        return error
    objects = build_gateway(
        spec, env, namespace, name, config, tuple(digests[key] for key in sorted(digests))
    )
    statefulset, storage_problem = keep_buffer_storage(objects.statefulset, inputs.existing)
    storage = spec.buffer.storage
    resize: VolumeResize | None = None
    if storage_problem is not None:
        persistence = cond.condition(
            cond.PERSISTENCE_SYNCED, False, cond.VOLUME_CLAIM_IMMUTABLE, storage_problem, generation
        )
    elif storage.type == "emptyDir":
        persistence = cond.condition(
            cond.PERSISTENCE_SYNCED,
            True,
            cond.VOLUME_SIZE_MATCHES,
            f"The buffer is on an emptyDir of {storage.size}",
            generation,
        )
    else:
        persistence, resize = volume_condition(
            labels.gateway_pvc_name(name),
            storage.size,
            "spec.buffer.storage.size",
            inputs.pvc,
            inputs.storage_class,
            generation,
        )
    # A running pod whose restart checksum stays gets the change by push (tags, publish
    # settings); one that rolls reads the new ConfigMap when it starts.
    push = None
    if inputs.existing_ready and pod_checksum(inputs.existing) == pod_checksum(statefulset):
        token = inputs.secrets.get(labels.gateway_admin_secret_name(name))
        push = ConfigPush(
            env.gateway_url(namespace, name),
            ((token.values if token else None) or {}).get("token", ""),
            config_document(config),
        )
    login = gateway_login(name, config.things(), config.writable_things())
    return Plan(
        objects=[objects.config_map, objects.service, statefulset, objects.network_policy],
        generated=[
            build_login_secret(namespace, login, name, env, ""),
            build_admin_token_secret(namespace, name, ""),
        ],
        logins=[login],
        resizes=[resize] if resize else [],
        push=push,
        conditions=[persistence],
        secret_digests=digests,
        facts={"connections": len(config.connections), "tags": len(config.tags)},
    )


def gateway_secret_names(name: str, spec: dict[str, Any]) -> set[str]:
    """The Secrets a Gateway's pod mounts, from the raw spec (for the operator's Secret index)."""
    names = {login_secret_name(name), labels.gateway_admin_secret_name(name)}
    for connection in spec.get("connections") or []:
        opcua = connection.get("opcua") if isinstance(connection, dict) else None
        if isinstance(opcua, dict):
            for field_name in (
                "credentialsSecretName",
                "certificateSecretName",
                "serverCertificateSecretName",
            ):
                if isinstance(opcua.get(field_name), str):
                    names.add(opcua[field_name])
    return names
