"""Builders of the namespace's twin service: its config file, StatefulSet, Service, tokens.

The twin is a one-replica StatefulSet (one writer of its SQLite state on the PVC). Its config
gathers every valid TwinModel of the namespace; models and things reach the running service by
config push (no restart), so the pod template's checksum covers only what needs one: MQTT and
HTTP settings, storage, and the Secrets it mounts.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from pydantic import ValidationError

from spine_operator import conditions as cond
from spine_operator import labels
from spine_operator.api.spine import SpineSpec
from spine_operator.api.twinmodel import TwinModelSpec
from spine_operator.build.common import checksum, metadata, resources, restricted_container_security
from spine_operator.build.logins import TWIN_USERNAME
from spine_operator.environment import Environment
from spine_runtime.common.configsource import describe_validation_error
from spine_runtime.config.twin import TwinConfig

COMPONENT = "twin"
DATA_VOLUME = "data"
RUNTIME_UID = 10001  # the image's non-root user
LIVE_FIELDS = {"models", "things", "gateways", "desiredTimeoutSeconds"}  # applied live


def generate_token() -> str:
    return secrets.token_urlsafe(32)


def build_tokens_secret(namespace: str, spine_name: str, write: str, admin: str) -> dict:
    """Bearer tokens: `write` for HTTP writes to the twin API, `admin` for config pushes."""
    meta = metadata(labels.TWIN_TOKENS_SECRET, namespace, COMPONENT, spine_name)
    meta["annotations"] = {labels.GENERATED: "true"}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "Opaque",
        "stringData": {"write": write, "admin": admin},
    }


def twin_config(
    spec: SpineSpec,
    env: Environment,
    namespace: str,
    models: list[tuple[str, TwinModelSpec]],
    gateways: list[str] | None = None,
) -> TwinConfig:
    """The twin's config document from the Spine and the namespace's valid TwinModels.

    `gateways`, the names of the namespace's Gateways, are the only ones whose sequence numbers
    the twin tracks; None leaves them unlisted (the twin then tracks a bounded number).
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
    return json.dumps(config.to_wire(), indent=1, sort_keys=True)


def restart_checksum(config: TwinConfig, *secret_digests: str) -> str:
    """What a running twin cannot pick up live: everything but models, things and timeouts."""
    wire = {key: value for key, value in config.to_wire().items() if key not in LIVE_FIELDS}
    return checksum(wire, *secret_digests)


@dataclass(frozen=True)
class TwinObjects:
    config_map: dict[str, Any]
    service: dict[str, Any]
    statefulset: dict[str, Any]
    network_policy: dict[str, Any]

    def all(self) -> list[dict[str, Any]]:
        return [self.config_map, self.service, self.statefulset, self.network_policy]


def build_twin(
    spec: SpineSpec,
    env: Environment,
    namespace: str,
    spine_name: str,
    config: TwinConfig,
    secret_digests: tuple[str, ...],
    login_secret: str,
) -> TwinObjects:
    select = labels.selector(COMPONENT, spine_name)
    pod_labels = labels.labels(COMPONENT, spine_name)
    secrets_dir = PurePosixPath(env.twin_secrets_dir)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(labels.TWIN_CONFIG_NAME, namespace, COMPONENT, spine_name),
        "data": {labels.TWIN_CONFIG_FILE: config_document(config)},
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(labels.TWIN_NAME, namespace, COMPONENT, spine_name),
        "spec": {
            "type": "ClusterIP",
            "selector": select,
            "ports": [
                {"name": "http", "port": env.twin_port, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }
    probe = {
        "httpGet": {"path": "/healthz", "port": "http"},
        "periodSeconds": 10,
        "timeoutSeconds": 3,
    }
    container = {
        "name": "twin",
        "image": env.runtime_image,
        "command": [
            "spine-runtime",
            "twin",
            "--config",
            f"{env.twin_config_dir}/{labels.TWIN_CONFIG_FILE}",
        ],
        "ports": [{"name": "http", "containerPort": env.twin_port, "protocol": "TCP"}],
        "readinessProbe": {**probe, "initialDelaySeconds": 2},
        "livenessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 6},
        "volumeMounts": [
            {"name": "config", "mountPath": env.twin_config_dir, "readOnly": True},
            {"name": "mqtt", "mountPath": str(secrets_dir / "mqtt"), "readOnly": True},
            {"name": "tokens", "mountPath": str(secrets_dir / "tokens"), "readOnly": True},
            {"name": DATA_VOLUME, "mountPath": env.twin_data_dir},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "resources": resources(spec.twin.resources),
        "securityContext": restricted_container_security(),
    }
    claim = {
        "metadata": {"name": DATA_VOLUME, "labels": pod_labels},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.twin.persistence.size}},
            **(
                {"storageClassName": spec.twin.persistence.storage_class_name}
                if spec.twin.persistence.storage_class_name
                else {}
            ),
        },
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(labels.TWIN_NAME, namespace, COMPONENT, spine_name),
        "spec": {
            "replicas": 1,
            "serviceName": labels.TWIN_NAME,
            "selector": {"matchLabels": select},
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain" if spec.twin.persistence.retain_on_delete else "Delete",
                "whenScaled": "Retain",
            },
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        labels.CONFIG_CHECKSUM: restart_checksum(config, *secret_digests)
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUNTIME_UID,
                        "runAsGroup": RUNTIME_UID,
                        "fsGroup": RUNTIME_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": labels.TWIN_CONFIG_NAME}},
                        {
                            "name": "mqtt",
                            "secret": {"secretName": login_secret, "defaultMode": 0o440},
                        },
                        {
                            "name": "tokens",
                            "secret": {
                                "secretName": labels.TWIN_TOKENS_SECRET,
                                "defaultMode": 0o440,
                            },
                        },
                        {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
                    ],
                },
            },
            "volumeClaimTemplates": [claim],
        },
    }
    # DESIGN.md: only the namespace's own workloads (and the operator, which pushes config and
    # reads /status) may reach the twin until the proxy fronts it.
    network_policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(labels.TWIN_NAME, namespace, COMPONENT, spine_name),
        "spec": {
            "podSelector": {"matchLabels": select},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {}},
                        {
                            "namespaceSelector": {
                                "matchLabels": {
                                    "kubernetes.io/metadata.name": env.operator_namespace
                                }
                            }
                        },
                    ],
                    "ports": [{"port": env.twin_port, "protocol": "TCP"}],
                }
            ],
        },
    }
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
