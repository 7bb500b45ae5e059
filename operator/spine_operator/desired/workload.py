"""The one builder of a runtime workload's pod template, StatefulSet and Deployment.

Every workload Spine runs (broker, twin, gateways; the flow engine and proxy next) gets the same
pod security (non-root, read-only root filesystem, no service-account token, no service links),
the same probes, a small writable /tmp, and a checksum annotation of exactly what needs a
restart. Singletons are StatefulSets with one replica (DESIGN.md, "Singletons"); workloads that
scale out are Deployments. Pure: dicts in, dicts out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from spine_operator import labels
from spine_operator.desired.common import checksum, metadata, restricted_container_security

TMP_VOLUME = {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}


@dataclass(frozen=True)
class RuntimeObjects:
    """A runtime's children: its config, its Service, its workload and its NetworkPolicy."""

    config_map: dict[str, Any]
    service: dict[str, Any]
    statefulset: dict[str, Any]
    network_policy: dict[str, Any]

    def all(self) -> list[dict[str, Any]]:
        return [self.config_map, self.service, self.statefulset, self.network_policy]


def probes(handler: dict[str, Any]) -> dict[str, Any]:
    """Readiness and liveness on one handler: ready soon, killed only after a minute of silence."""
    probe = {**handler, "periodSeconds": 10, "timeoutSeconds": 3}
    return {
        "readinessProbe": {**probe, "initialDelaySeconds": 2},
        "livenessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 6},
    }


def http_probes(port_name: str = "http") -> dict[str, Any]:
    return probes({"httpGet": {"path": "/healthz", "port": port_name}})


def tcp_probes(port_name: str) -> dict[str, Any]:
    return probes({"tcpSocket": {"port": port_name}})


def pod_security(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container(
    name: str,
    image: str,
    command: list[str],
    ports: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
    resources: dict[str, Any],
    health: dict[str, Any],
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "command": command,
        "ports": ports,
        **health,
        "volumeMounts": mounts,
        "resources": resources,
        "securityContext": restricted_container_security(),
    }


def claim_template(
    volume: str, size: str, storage_class: str | None, pod_labels: dict[str, str]
) -> dict[str, Any]:
    return {
        "metadata": {"name": volume, "labels": pod_labels},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
            **({"storageClassName": storage_class} if storage_class else {}),
        },
    }


def secret_volume(name: str, secret_name: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """A Secret mounted readable by the pod's group only; `keys` limits it to those files."""
    source: dict[str, Any] = {"secretName": secret_name}
    if keys:
        source["items"] = [{"key": key, "path": key} for key in keys]
    source["defaultMode"] = 0o440
    return {"name": name, "secret": source}


@dataclass(frozen=True)
class PodTemplate:
    """What differs between workloads; everything else is the same for all of them."""

    component: str
    instance: str
    uid: int
    containers: list[dict[str, Any]]
    volumes: list[dict[str, Any]]
    checksum: str
    init_containers: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # hostNetwork, nodeSelector, ...
    termination_grace_seconds: int | None = None

    def build(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
        }
        if self.termination_grace_seconds is not None:
            spec["terminationGracePeriodSeconds"] = self.termination_grace_seconds
        spec["securityContext"] = pod_security(self.uid)
        if self.init_containers:
            spec["initContainers"] = self.init_containers
        spec["containers"] = self.containers
        spec["volumes"] = self.volumes
        spec.update(self.extra)
        return {
            "metadata": {
                "labels": labels.labels(self.component, self.instance),
                "annotations": {labels.CONFIG_CHECKSUM: self.checksum},
            },
            "spec": spec,
        }


def build_statefulset(
    name: str,
    namespace: str,
    template: PodTemplate,
    service_name: str,
    claims: list[dict[str, Any]],
    retain_on_delete: bool,
) -> dict[str, Any]:
    """A one-replica StatefulSet: never two pods at once, even on a partitioned node."""
    spec: dict[str, Any] = {
        "replicas": 1,
        "serviceName": service_name,
        "podManagementPolicy": "OrderedReady",
        "updateStrategy": {"type": "RollingUpdate"},
        "selector": {"matchLabels": labels.selector(template.component, template.instance)},
        "persistentVolumeClaimRetentionPolicy": {
            "whenDeleted": "Retain" if retain_on_delete else "Delete",
            "whenScaled": "Retain",
        },
        "template": template.build(),
    }
    if claims:
        spec["volumeClaimTemplates"] = claims
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(name, namespace, template.component, template.instance),
        "spec": spec,
    }


def build_deployment(
    name: str, namespace: str, template: PodTemplate, replicas: int
) -> dict[str, Any]:
    """A Deployment for workloads that scale out (the flow engine, the proxy)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(name, namespace, template.component, template.instance),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels.selector(template.component, template.instance)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": template.build(),
        },
    }


def build_service(
    name: str,
    namespace: str,
    component: str,
    instance: str,
    ports: list[dict[str, Any]],
    headless: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"clusterIP": "None"} if headless else {"type": "ClusterIP"}
    spec["selector"] = labels.selector(component, instance)
    spec["ports"] = ports
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(name, namespace, component, instance),
        "spec": spec,
    }


def build_config_map(
    name: str, namespace: str, component: str, instance: str, data: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(name, namespace, component, instance),
        "data": data,
    }


def build_ingress_policy(
    name: str,
    namespace: str,
    component: str,
    instance: str,
    ports: list[int],
    operator_namespace: str,
    same_namespace: bool = True,
    cidrs: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A NetworkPolicy admitting to the workload's `ports` only the operator's namespace, the
    namespace's own pods (unless `same_namespace` is False) and the given address blocks."""
    sources: list[dict[str, Any]] = [{"podSelector": {}}] if same_namespace else []
    sources.append(
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": operator_namespace}}}
    )
    sources += [{"ipBlock": {"cidr": cidr}} for cidr in cidrs]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(name, namespace, component, instance),
        "spec": {
            "podSelector": {"matchLabels": labels.selector(component, instance)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": sources, "ports": [{"port": port, "protocol": "TCP"} for port in ports]}
            ],
        },
    }


def build_generated_secret(
    name: str, namespace: str, component: str, instance: str, values: dict[str, str]
) -> dict[str, Any]:
    """A Secret whose values the operator generates once and never rewrites (GENERATED marks it,
    so `spine render` shows it without data and users can tell it from their own)."""
    meta = metadata(name, namespace, component, instance)
    meta["annotations"] = {labels.GENERATED: "true"}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "Opaque",
        "stringData": values,
    }


def config_document(config: Any) -> str:
    """A runtime's config file: JSON of its validated model (every user-written value escaped,
    never a line of its own), the same bytes in the ConfigMap and in the push."""
    return json.dumps(config.to_wire(), indent=1, sort_keys=True)


def restart_checksum(config: Any, live_fields: frozenset[str], *secret_digests: str) -> str:
    """What a running runtime cannot take by config push (every field but `live_fields`), and
    the Secrets it mounts: the pod template's checksum, so exactly those changes roll the pod."""
    wire = {key: value for key, value in config.to_wire().items() if key not in live_fields}
    return checksum(wire, *secret_digests)


def pod_checksum(workload: dict[str, Any] | None) -> str | None:
    """The restart checksum a StatefulSet's or Deployment's pod template carries."""
    template = (workload or {}).get("spec", {}).get("template", {})
    return (template.get("metadata") or {}).get("annotations", {}).get(labels.CONFIG_CHECKSUM)
