"""Builders of the namespace broker: mosquitto.conf, ConfigMap, admin Secret, Services, StatefulSet.

The broker is a one-replica StatefulSet (DESIGN.md, Singletons) whose PVC holds retained
messages, sessions and the dynamic-security file with every login. An init container running
`spine-runtime broker-seed` puts the admin login into that file before mosquitto starts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import jinja2

from spine_operator import labels
from spine_operator.api.spine import BrokerSpec
from spine_operator.desired.common import (
    checksum,
    metadata,
    resources,
    restricted_container_security,
)
from spine_operator.environment import Environment

COMPONENT = "broker"
BROKER_UID = 1883  # the mosquitto user of the eclipse-mosquitto image
ADMIN_USERNAME = "admin"

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("spine_operator", "templates"),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,
)


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
    meta = metadata(labels.BROKER_ADMIN_SECRET, namespace, COMPONENT, spine_name)
    meta["annotations"] = {labels.GENERATED: "true"}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "Opaque",
        "stringData": {"username": ADMIN_USERNAME, "password": password},
    }


def build_config_map(spec: BrokerSpec, env: Environment, namespace: str, spine_name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(labels.BROKER_CONFIG_NAME, namespace, COMPONENT, spine_name),
        "data": {"mosquitto.conf": render_mosquitto_conf(spec, env, namespace, spine_name)},
    }


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
    select = labels.selector(COMPONENT, spine_name)
    client = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(labels.BROKER_NAME, namespace, COMPONENT, spine_name),
        "spec": {"type": "ClusterIP", "selector": select, "ports": _ports(spec, env)},
    }
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(labels.BROKER_HEADLESS_NAME, namespace, COMPONENT, spine_name),
        "spec": {"clusterIP": "None", "selector": select, "ports": _ports(spec, env)},
    }
    return [client, headless]


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
    select = labels.selector(COMPONENT, spine_name)
    pod_labels = labels.labels(COMPONENT, spine_name)
    data_dir = env.broker_data_dir
    secrets_dir = env.broker_secrets_dir
    mounts = [
        {"name": "config", "mountPath": env.broker_config_dir, "readOnly": True},
        {"name": labels.BROKER_DATA_VOLUME, "mountPath": data_dir},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": labels.BROKER_CONFIG_NAME}},
        {
            "name": "admin",
            "secret": {"secretName": admin_secret_name(spec), "defaultMode": 0o440},
        },
    ]
    container_ports = [{"name": "mqtt", "containerPort": env.broker_port, "protocol": "TCP"}]
    if spec.tls:
        mounts.append({"name": "tls", "mountPath": env.broker_tls_dir, "readOnly": True})
        volumes.append(
            {"name": "tls", "secret": {"secretName": spec.tls.secret_name, "defaultMode": 0o440}}
        )
        container_ports.append(
            {"name": "mqtts", "containerPort": env.broker_tls_port, "protocol": "TCP"}
        )
    probe = {"tcpSocket": {"port": "mqtt"}, "periodSeconds": 10, "timeoutSeconds": 3}
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
    mosquitto = {
        "name": "mosquitto",
        "image": spec.image or env.broker_image,
        "command": ["mosquitto", "-c", f"{env.broker_config_dir}/mosquitto.conf"],
        "ports": container_ports,
        "readinessProbe": {**probe, "initialDelaySeconds": 2},
        "livenessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 6},
        "volumeMounts": mounts,
        "resources": resources(spec.resources),
        "securityContext": restricted_container_security(),
    }
    claim = {
        "metadata": {"name": labels.BROKER_DATA_VOLUME, "labels": pod_labels},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.persistence.size}},
            **(
                {"storageClassName": spec.persistence.storage_class_name}
                if spec.persistence.storage_class_name
                else {}
            ),
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(labels.BROKER_NAME, namespace, COMPONENT, spine_name),
        "spec": {
            "replicas": 1,
            "serviceName": labels.BROKER_HEADLESS_NAME,
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": select},
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain" if spec.persistence.retain_on_delete else "Delete",
                "whenScaled": "Retain",
            },
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        labels.CONFIG_CHECKSUM: checksum(conf, digests.admin, digests.tls)
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": BROKER_UID,
                        "runAsGroup": BROKER_UID,
                        "fsGroup": BROKER_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "initContainers": [seed],
                    "containers": [mosquitto],
                    "volumes": volumes,
                },
            },
            "volumeClaimTemplates": [claim],
        },
    }


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

    def all(self) -> list[dict[str, Any]]:
        return [self.config_map, *self.services, self.statefulset]


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
    )


def broker_endpoint(env: Environment, namespace: str, tls: bool = False) -> str:
    port = env.broker_tls_port if tls else env.broker_port
    return f"{env.broker_host(namespace)}:{port}"
