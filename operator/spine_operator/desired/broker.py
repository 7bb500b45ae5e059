"""Builders of the namespace broker: mosquitto.conf, ConfigMap, admin Secret, Services, StatefulSet.

The broker is a one-replica StatefulSet (DESIGN.md, Singletons) whose PVC holds retained
messages, sessions and the dynamic-security file with every login. An init container running
`spine-runtime broker-seed` puts the admin login into that file before mosquitto starts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from spine_operator import conditions as cond
from spine_operator import labels
from spine_operator.api.spine import BrokerSpec, SpineSpec
from spine_operator.desired import workload
from spine_operator.desired.common import (
    CONFIG_TEMPLATES,
    checksum,
    controller_of,
    resources,
    restricted_container_security,
)
from spine_operator.desired.plan import Plan, Refusal, SecretInput, volume_condition
from spine_operator.desired.workload import build_generated_secret
from spine_operator.environment import Environment
from spine_operator.errors import InvalidReference, InvalidSpec, ReconcileError

COMPONENT = "broker"
BROKER_UID = 1883  # the mosquitto user of the eclipse-mosquitto image
ADMIN_USERNAME = "admin"

_templates = CONFIG_TEMPLATES


def render_mosquitto_conf(
    spec: BrokerSpec, env: Environment, namespace: str, spine_name: str
) -> str:
    """The broker's config file. Every value comes from a validated model: no newlines."""
    text = _templates.get_template("mosquitto.conf.j2").render(
        spec=spec, env=env, namespace=namespace, spine_name=spine_name
    )
    for line in text.splitlines():
        if "\x00" in line or "\r" in line:
            raise ValueError("a control character reached mosquitto.conf")
    return text


def admin_secret_name(spec: BrokerSpec) -> str:
    return spec.admin_secret_name or labels.BROKER_ADMIN_SECRET


def generate_password() -> str:
    return secrets.token_urlsafe(32)


def build_admin_secret(namespace: str, spine_name: str, password: str) -> dict[str, Any]:
    """The generated admin login. Created once; the operator never rewrites its data."""
    return build_generated_secret(
        labels.BROKER_ADMIN_SECRET,
        namespace,
        COMPONENT,
        spine_name,
        {"username": ADMIN_USERNAME, "password": password},
    )


def build_config_map(spec: BrokerSpec, env: Environment, namespace: str, spine_name: str) -> dict:
    return workload.build_config_map(
        labels.BROKER_CONFIG_NAME,
        namespace,
        COMPONENT,
        spine_name,
        {"mosquitto.conf": render_mosquitto_conf(spec, env, namespace, spine_name)},
    )


def _ports(spec: BrokerSpec, env: Environment) -> list[dict[str, Any]]:
    ports = [{"name": "mqtt", "port": env.broker_port, "targetPort": "mqtt", "protocol": "TCP"}]
    if spec.tls:
        ports.append(
            {"name": "mqtts", "port": env.broker_tls_port, "targetPort": "mqtts", "protocol": "TCP"}
        )
    return ports


def build_services(
    spec: BrokerSpec, env: Environment, namespace: str, spine_name: str
) -> list[dict]:
    """The client Service, and the headless one the StatefulSet needs for stable pod names."""
    ports = _ports(spec, env)
    return [
        workload.build_service(labels.BROKER_NAME, namespace, COMPONENT, spine_name, ports),
        workload.build_service(
            labels.BROKER_HEADLESS_NAME, namespace, COMPONENT, spine_name, ports, headless=True
        ),
    ]


@dataclass(frozen=True)
class SecretDigests:
    """Digests of the Secrets whose change must restart the broker (never their values)."""

    admin: str
    tls: str | None = None


def build_statefulset(
    spec: BrokerSpec,
    env: Environment,
    namespace: str,
    spine_name: str,
    conf: str,
    digests: SecretDigests,
) -> dict[str, Any]:
    pod_labels = labels.labels(COMPONENT, spine_name)
    data_dir = env.broker_data_dir
    secrets_dir = env.broker_secrets_dir
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": env.broker_config_dir, "readOnly": True},
        {"name": labels.BROKER_DATA_VOLUME, "mountPath": data_dir},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": labels.BROKER_CONFIG_NAME}},
        workload.secret_volume("admin", admin_secret_name(spec)),
    ]
    container_ports: list[dict[str, Any]] = [
        {"name": "mqtt", "containerPort": env.broker_port, "protocol": "TCP"}
    ]
    if spec.tls:
        mounts.append({"name": "tls", "mountPath": env.broker_tls_dir, "readOnly": True})
        volumes.append(workload.secret_volume("tls", spec.tls.secret_name))
        container_ports.append(
            {"name": "mqtts", "containerPort": env.broker_tls_port, "protocol": "TCP"}
        )
    seed = {
        "name": "seed-logins",
        "image": env.runtime_image,
        "command": [
            "spine-runtime",
            "broker-seed",
            "--file",
            f"{data_dir}/dynamic-security.json",
            "--username-file",
            f"{secrets_dir}/username",
            "--password-file",
            f"{secrets_dir}/password",
        ],
        "volumeMounts": [
            {"name": labels.BROKER_DATA_VOLUME, "mountPath": data_dir},
            {"name": "admin", "mountPath": secrets_dir, "readOnly": True},
        ],
        "resources": {
            "requests": {"cpu": "10m", "memory": "32Mi"},
            "limits": {"cpu": "200m", "memory": "64Mi"},
        },
        "securityContext": restricted_container_security(),
    }
    mosquitto = workload.container(
        "mosquitto",
        spec.image or env.broker_image,
        ["mosquitto", "-c", f"{env.broker_config_dir}/mosquitto.conf"],
        container_ports,
        mounts,
        resources(spec.resources),
        workload.tcp_probes("mqtt"),
    )
    template = workload.PodTemplate(
        component=COMPONENT,
        instance=spine_name,
        uid=BROKER_UID,
        containers=[mosquitto],
        volumes=volumes,
        checksum=checksum(conf, digests.admin, digests.tls),
        init_containers=[seed],
        termination_grace_seconds=30,
    )
    claim = workload.claim_template(
        labels.BROKER_DATA_VOLUME,
        spec.persistence.size,
        spec.persistence.storage_class_name,
        pod_labels,
    )
    return workload.build_statefulset(
        labels.BROKER_NAME,
        namespace,
        template,
        labels.BROKER_HEADLESS_NAME,
        [claim],
        spec.persistence.retain_on_delete,
    )


def keep_claim_templates(
    desired: dict[str, Any], existing: dict[str, Any] | None
) -> dict[str, Any]:
    """volumeClaimTemplates are immutable: re-apply the existing ones (sizes grow on the PVCs)."""
    if not existing:
        return desired
    current = existing.get("spec", {}).get("volumeClaimTemplates")
    if current is None:
        return desired
    kept = [
        {
            "metadata": {k: v for k, v in t.get("metadata", {}).items() if k in ("name", "labels")},
            "spec": t.get("spec", {}),
        }
        for t in current
    ]
    return {**desired, "spec": {**desired["spec"], "volumeClaimTemplates": kept}}


@dataclass(frozen=True)
class BrokerObjects:
    config_map: dict[str, Any]
    services: list[dict[str, Any]]
    statefulset: dict[str, Any]
    network_policy: dict[str, Any]

    def all(self) -> list[dict[str, Any]]:
        return [self.config_map, *self.services, self.statefulset, self.network_policy]


def build_broker(
    spec: BrokerSpec, env: Environment, namespace: str, spine_name: str, digests: SecretDigests
) -> BrokerObjects:
    """Every object of the broker except its admin Secret (created once, see the handler)."""
    config_map = build_config_map(spec, env, namespace, spine_name)
    conf = config_map["data"]["mosquitto.conf"]
    return BrokerObjects(
        config_map=config_map,
        services=build_services(spec, env, namespace, spine_name),
        statefulset=build_statefulset(spec, env, namespace, spine_name, conf, digests),
        # The namespace's workloads, the operator (the logins' admin client) and the address
        # blocks the Spine names: nothing else reaches the broker.
        network_policy=workload.build_ingress_policy(
            labels.BROKER_NAME,
            namespace,
            COMPONENT,
            spine_name,
            [env.broker_port, *([env.broker_tls_port] if spec.tls else [])],
            env.operator_namespace,
            cidrs=tuple(spec.external_clients),
        ),
    )


def broker_endpoint(env: Environment, namespace: str, tls: bool = False) -> str:
    port = env.broker_tls_port if tls else env.broker_port
    return f"{env.broker_host(namespace)}:{port}"


@dataclass(frozen=True)
class SpineInputs:
    """What the plan of a Spine's broker reads: the Spine, its Secrets, and what is live."""

    body: dict[str, Any]
    env: Environment
    admin_secret: SecretInput  # the user's (spec.broker.adminSecretName) or the generated one
    tls_secret: SecretInput | None
    existing: dict[str, Any] | None = None  # the broker StatefulSet, if any
    pvc: dict[str, Any] | None = None
    storage_class: dict[str, Any] | None = None


def plan_spine(inputs: SpineInputs) -> Plan | Refusal:
    """The broker of a namespace: ConfigMap, Services, StatefulSet, admin Secret, volume size.

    The twin is planned on its own (`plan_twin`), so a broker problem never blocks TwinModels.
    """
    metadata_ = inputs.body["metadata"]
    namespace, name = metadata_["namespace"], metadata_["name"]
    generation = int(metadata_.get("generation") or 0)
    try:
        spec = SpineSpec.model_validate(inputs.body.get("spec") or {}).broker
    except ValidationError as error:
        return InvalidSpec.of(error)
    owner = controller_of(inputs.existing, "Spine")
    if owner is not None and metadata_.get("uid") and owner[0] != metadata_["uid"]:
        return InvalidReference(
            f"Spine {owner[1]} already runs this namespace's broker: a namespace has one "
            f"Spine; delete {name} or move it to another namespace",
            reason=cond.DUPLICATE_SPINE,
        )
    try:
        hint = (
            ""
            if not spec.admin_secret_name
            else (", or remove spec.broker.adminSecretName to let the operator generate one")
        )
        admin = inputs.admin_secret.require(
            ("username", "password"), "the broker admin login", hint
        )
        tls = (
            inputs.tls_secret.require(
                ("tls.crt", "tls.key"),
                "the TLS listener",
                " (a kubernetes.io/tls Secret, e.g. from cert-manager)",
            )
            if inputs.tls_secret is not None
            else None
        )
    except ReconcileError as error:
        return error
    objects = build_broker(spec, inputs.env, namespace, name, SecretDigests(admin, tls))
    statefulset = keep_claim_templates(objects.statefulset, inputs.existing)
    persistence, resize = volume_condition(
        labels.broker_pvc_name(),
        spec.persistence.size,
        "spec.broker.persistence.size",
        inputs.pvc,
        inputs.storage_class,
        generation,
    )
    digests = {inputs.admin_secret.name: admin}
    if inputs.tls_secret is not None and tls is not None:
        digests[inputs.tls_secret.name] = tls
    generated = [] if spec.admin_secret_name else [build_admin_secret(namespace, name, "")]
    return Plan(
        objects=[objects.config_map, *objects.services, statefulset, objects.network_policy],
        generated=generated,
        resizes=[resize] if resize else [],
        conditions=[persistence],
        secret_digests=digests,
        facts={
            "endpoint": broker_endpoint(inputs.env, namespace),
            "tlsEndpoint": broker_endpoint(inputs.env, namespace, tls=True) if spec.tls else None,
            "adminSecretName": admin_secret_name(spec),
        },
    )


def spine_secret_names(spec: dict[str, Any]) -> set[str]:
    """The Secrets a Spine's broker reads, from the raw spec (for the operator's Secret index)."""
    broker = spec.get("broker") or {}
    names = {broker.get("adminSecretName") or labels.BROKER_ADMIN_SECRET}
    if isinstance(broker.get("tls"), dict) and broker["tls"].get("secretName"):
        names.add(broker["tls"]["secretName"])
    return {name for name in names if isinstance(name, str)}
