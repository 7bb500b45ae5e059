"""Builders of the namespace's twin service: its config file, StatefulSet, Service, tokens.

The twin is a one-replica StatefulSet (one writer of its SQLite state on the PVC). Its config
gathers every valid TwinModel of the namespace; models and things reach the running service by
config push (no restart), so the pod template's checksum covers only what needs one: MQTT and
HTTP settings, storage, and the Secrets it mounts.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from pydantic import ValidationError

from spine_operator import conditions as cond
from spine_operator import labels
from spine_operator.api.spine import SpineSpec
from spine_operator.api.twinmodel import TwinModelSpec
from spine_operator.desired import workload
from spine_operator.desired.broker import keep_claim_templates
from spine_operator.desired.common import resources
from spine_operator.desired.logins import TWIN_USERNAME, build_login_secret, twin_login
from spine_operator.desired.plan import ConfigPush, Plan, Refusal, SecretInput
from spine_operator.desired.workload import build_generated_secret
from spine_operator.environment import Environment
from spine_operator.errors import DependencyNotReady, ReconcileError
from spine_runtime.common.configsource import describe_validation_error
from spine_runtime.config.base import DNS_LABEL_PATTERN
from spine_runtime.config.twin import TwinConfig
from spine_runtime.flow.twin import twin_identity

COMPONENT = "twin"
DATA_VOLUME = "data"
RUNTIME_UID = 10001  # the image's non-root user
# applied without a restart
LIVE_FIELDS = frozenset({"models", "things", "gateways", "desiredTimeoutSeconds"})


def generate_token() -> str:
    return secrets.token_urlsafe(32)


def build_tokens_secret(namespace: str, spine_name: str, write: str, admin: str) -> dict:
    """Bearer tokens: `write` for HTTP writes to the twin API, `admin` for config pushes."""
    return build_generated_secret(
        labels.TWIN_TOKENS_SECRET,
        namespace,
        COMPONENT,
        spine_name,
        {"write": write, "admin": admin},
    )


def twin_config(
    spec: SpineSpec,
    env: Environment,
    namespace: str,
    models: list[tuple[str, TwinModelSpec]],
    gateways: list[str] | None = None,
) -> TwinConfig:
    """The twin's config document from the Spine and the namespace's valid TwinModels.

    `gateways`, the names of the namespace's Gateways (and `flow.<flow>` of each Flow with a
    twin sink), are the only ones whose sequence numbers the twin tracks; None leaves them
    unlisted (the twin then tracks a bounded number).
    """
    secrets_dir = PurePosixPath(env.twin_secrets_dir)
    return TwinConfig.model_validate(
        {
            "namespace": spec.twin_namespace(namespace),
            "mqtt": {
                "host": env.broker_host(namespace),
                "port": env.broker_port,
                "username": TWIN_USERNAME,
                "passwordFile": str(secrets_dir / "mqtt" / "password"),
                "clientId": TWIN_USERNAME,
            },
            "http": {
                "host": env.twin_bind_address,
                "port": env.twin_port,
                "adminTokenFile": str(secrets_dir / "tokens" / "admin"),
            },
            "writeTokenFile": str(secrets_dir / "tokens" / "write"),
            "storage": {"path": str(PurePosixPath(env.twin_data_dir) / "twin.db")},
            "desiredTimeoutSeconds": spec.twin.desired_timeout_seconds,
            "models": [model.thing_model(name).to_wire() for name, model in models],
            "things": [
                thing.to_wire() for name, model in models for thing in model.thing_instances(name)
            ],
            **({} if gateways is None else {"gateways": sorted(set(gateways))}),
        }
    )


def config_document(config: TwinConfig) -> str:
    return workload.config_document(config)


def restart_checksum(config: TwinConfig, *secret_digests: str) -> str:
    """What a running twin cannot pick up live: everything but models, things and timeouts."""
    return workload.restart_checksum(config, LIVE_FIELDS, *secret_digests)


TwinObjects = workload.RuntimeObjects


def build_twin(
    spec: SpineSpec,
    env: Environment,
    namespace: str,
    spine_name: str,
    config: TwinConfig,
    secret_digests: tuple[str, ...],
    login_secret: str,
) -> TwinObjects:
    pod_labels = labels.labels(COMPONENT, spine_name)
    secrets_dir = PurePosixPath(env.twin_secrets_dir)
    config_map = workload.build_config_map(
        labels.TWIN_CONFIG_NAME,
        namespace,
        COMPONENT,
        spine_name,
        {labels.TWIN_CONFIG_FILE: config_document(config)},
    )
    http_port = {"name": "http", "port": env.twin_port, "targetPort": "http", "protocol": "TCP"}
    service = workload.build_service(
        labels.TWIN_NAME, namespace, COMPONENT, spine_name, [http_port]
    )
    container = workload.container(
        "twin",
        env.runtime_image,
        ["spine-runtime", "twin", "--config", f"{env.twin_config_dir}/{labels.TWIN_CONFIG_FILE}"],
        [{"name": "http", "containerPort": env.twin_port, "protocol": "TCP"}],
        [
            {"name": "config", "mountPath": env.twin_config_dir, "readOnly": True},
            {"name": "mqtt", "mountPath": str(secrets_dir / "mqtt"), "readOnly": True},
            {"name": "tokens", "mountPath": str(secrets_dir / "tokens"), "readOnly": True},
            {"name": DATA_VOLUME, "mountPath": env.twin_data_dir},
            workload.TMP_MOUNT,
        ],
        resources(spec.twin.resources),
        workload.http_probes(),
    )
    template = workload.PodTemplate(
        component=COMPONENT,
        instance=spine_name,
        uid=RUNTIME_UID,
        containers=[container],
        volumes=[
            {"name": "config", "configMap": {"name": labels.TWIN_CONFIG_NAME}},
            workload.secret_volume("mqtt", login_secret),
            workload.secret_volume("tokens", labels.TWIN_TOKENS_SECRET),
            workload.TMP_VOLUME,
        ],
        checksum=restart_checksum(config, *secret_digests),
    )
    persistence = spec.twin.persistence
    claim = workload.claim_template(
        DATA_VOLUME, persistence.size, persistence.storage_class_name, pod_labels
    )
    statefulset = workload.build_statefulset(
        labels.TWIN_NAME,
        namespace,
        template,
        labels.TWIN_NAME,
        [claim],
        persistence.retain_on_delete,
    )
    # DESIGN.md: only the namespace's own workloads (and the operator, which pushes config and
    # reads /status) may reach the twin until the proxy fronts it.
    network_policy = workload.build_ingress_policy(
        labels.TWIN_NAME,
        namespace,
        COMPONENT,
        spine_name,
        [env.twin_port],
        env.operator_namespace,
        monitoring_namespace=env.monitoring_namespace,
    )
    return TwinObjects(config_map, service, statefulset, network_policy)


@dataclass(frozen=True)
class ModelSelection:
    """Which TwinModels of a namespace go into the twin, and why the others do not."""

    accepted: list[tuple[str, TwinModelSpec]]
    rejected: dict[str, tuple[str, str]]  # model name -> (reason, message)


def select_twin_models(items: list[dict[str, Any]]) -> ModelSelection:
    """Valid models, oldest first; a thing already defined by an older model is refused.

    Pure, so the Spine's reconcile (building the config) and each TwinModel's status (saying
    whether it is in) always agree.
    """
    ordered = sorted(
        items,
        key=lambda item: (
            item["metadata"].get("creationTimestamp") or "",
            item["metadata"]["name"],
        ),
    )
    accepted: list[tuple[str, TwinModelSpec]] = []
    rejected: dict[str, tuple[str, str]] = {}
    owners: dict[str, str] = {}
    for item in ordered:
        name = item["metadata"]["name"]
        if item["metadata"].get("deletionTimestamp"):
            continue
        try:
            spec = TwinModelSpec.model_validate(item.get("spec") or {})
            spec.thing_model(name)
        except ValidationError as error:
            rejected[name] = (
                cond.INVALID_SPEC,
                f"Invalid spec: {describe_validation_error(error, 'spec')}",
            )
            continue
        clashes = [
            (thing.name, owners[thing.name]) for thing in spec.things if thing.name in owners
        ]
        if clashes:
            thing, owner = clashes[0]
            rejected[name] = (
                cond.INVALID_REFERENCE,
                f"Thing {thing} is already defined by TwinModel {owner}: a thing "
                "belongs to one model; rename it or remove it from one of them",
            )
            continue
        owners.update({thing.name: name for thing in spec.things})
        accepted.append((name, spec))
    return ModelSelection(accepted, rejected)


@dataclass(frozen=True)
class TwinInputs:
    """What the plan of a namespace's twin reads: the Spine that owns it, every TwinModel of the
    namespace, its generated Secrets (None offline: `spine render`), and the live StatefulSet."""

    spine: dict[str, Any]
    models: list[dict[str, Any]]
    env: Environment
    tokens: SecretInput
    login: SecretInput
    existing: dict[str, Any] | None = None
    # Who may send numbered updates: the namespace's Gateways, and `flow.<name>` of each Flow
    # with a twin sink. The twin keeps sequence numbers (and acks) for these alone.
    publishers: list[str] | None = None


@dataclass(frozen=True)
class ModelStatus:
    """One TwinModel's place in the twin: accepted (reason Reconciled) or refused, and why."""

    reason: str
    message: str
    things: int | None = None
    version: str | None = None


def plan_twin(inputs: TwinInputs) -> Plan | Refusal:
    """The twin workload with every accepted TwinModel, its login, the config push, and what each
    TwinModel's status says (`facts["models"]`: name -> ModelStatus). Independent of the
    broker's own settings: a broker problem never blocks a TwinModel."""
    metadata_ = inputs.spine["metadata"]
    namespace, spine_name = metadata_["namespace"], metadata_["name"]
    try:
        spec = SpineSpec.model_validate(inputs.spine.get("spec") or {})
    except ValidationError:
        return DependencyNotReady(
            f"Spine {spine_name} has an invalid spec (its status says what to fix); the twin "
            "is applied once it is valid"
        )
    env = inputs.env
    selection = select_twin_models(inputs.models)
    try:
        token_digest = inputs.tokens.require(("write", "admin"), "the twin service")
        login_digest = inputs.login.require(("username", "password"), "the twin's broker login")
    except ReconcileError as error:
        return error
    config = twin_config(spec, env, namespace, selection.accepted, inputs.publishers)
    objects = build_twin(
        spec, env, namespace, spine_name, config, (token_digest, login_digest), inputs.login.name
    )
    statefulset = keep_claim_templates(objects.statefulset, inputs.existing)
    twin_api = env.twin_url(namespace)
    statuses: dict[str, ModelStatus] = {
        name: ModelStatus(reason, message) for name, (reason, message) in selection.rejected.items()
    }
    for name, model in selection.accepted:
        statuses[name] = ModelStatus(
            cond.RECONCILED,
            f"{len(model.things)} things in the twin service at {twin_api}",
            len(model.things),
            model.version,
        )
    return Plan(
        objects=[objects.config_map, objects.service, statefulset, objects.network_policy],
        generated=[
            build_tokens_secret(namespace, spine_name, "", ""),
            build_login_secret(namespace, twin_login(), spine_name, env, ""),
        ],
        logins=[twin_login()],
        push=ConfigPush(
            twin_api, (inputs.tokens.values or {}).get("admin", ""), config_document(config)
        ),
        secret_digests={inputs.tokens.name: token_digest, inputs.login.name: login_digest},
        facts={
            "things": len(config.things),
            "api": twin_api,
            "twinNamespace": spec.twin_namespace(namespace),
            "models": statuses,
        },
    )


def flow_engine_replicas(spine: dict[str, Any]) -> int:
    """The Spine's flowEngine.replicas (1 while its spec is invalid: the engine waits then)."""
    try:
        return SpineSpec.model_validate(spine.get("spec") or {}).flow_engine.replicas
    except ValidationError:
        return 1


def numbered_publishers(
    gateways: list[dict[str, Any]], flows: list[dict[str, Any]], flow_replicas: int = 1
) -> list[str]:
    """The names under which Gateways and Flows with a twin sink send numbered updates: a
    flow's on each replica of the engine (`flow.<flow>`, `flow.<flow>.1`, ...).

    Only names their own plans accept (a Gateway's: a DNS label of at most 38 characters; a
    Flow's: a DNS label), so a resource refused for its name can never make the twin's config
    invalid for the whole namespace."""
    names = [
        item["metadata"]["name"]
        for item in gateways
        if _label(item["metadata"]["name"], labels.GATEWAY_NAME_MAX_LENGTH)
    ]
    for item in flows:
        sinks = (item.get("spec") or {}).get("sinks") or []
        name = item["metadata"]["name"]
        if _label(name, 63) and any(isinstance(sink, dict) and sink.get("twin") for sink in sinks):
            names.extend(twin_identity(name, ordinal) for ordinal in range(flow_replicas))
    return sorted(set(names))


def _label(name: Any, longest: int) -> bool:
    return (
        isinstance(name, str) and len(name) <= longest and bool(re.match(DNS_LABEL_PATTERN, name))
    )
