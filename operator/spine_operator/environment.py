"""Where the rendered workloads run: in a cluster, or as local processes for `spine up` and tests.

DESIGN.md, "Local or cluster": builders take an Environment that supplies addresses, ports,
images and file paths, so one builder renders both. Paths that differ between the container
image and Debian's packages (the dynamic-security plugin, data directories) live here, never in
a template.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from spine_operator import labels

# eclipse-mosquitto 2.0.x matches Debian 12's mosquitto 2.0.11, on which the tests run it;
# 2.1 renamed plugin options, so the minor version is pinned.
BROKER_IMAGE = "eclipse-mosquitto:2.0.21"
RUNTIME_IMAGE = "ghcr.io/spine-iiot/spine:0.1.0"
DEBIAN_DYNSEC_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"


@dataclass(frozen=True)
class GatewayDirectories:
    """Where one gateway finds its config file, keeps its buffer and reads its Secrets."""

    config_dir: str
    data_dir: str
    secrets_dir: str


@dataclass(frozen=True)
class Environment:
    """Addresses, ports, images and paths of one place where workloads run."""

    local: bool = False
    runtime_image: str = RUNTIME_IMAGE
    broker_image: str = BROKER_IMAGE
    broker_host_override: str | None = None  # local: 127.0.0.1
    broker_bind_address: str = ""  # empty: every interface of the pod
    broker_port: int = 1883
    broker_tls_port: int = 8883
    dynsec_plugin_path: str = "/usr/lib/mosquitto_dynamic_security.so"
    broker_config_dir: str = "/mosquitto/config"
    broker_data_dir: str = "/mosquitto/data"
    broker_tls_dir: str = "/mosquitto/certs"
    broker_secrets_dir: str = "/var/run/spine/broker-admin"
    twin_host_override: str | None = None  # local: 127.0.0.1
    twin_bind_address: str = "0.0.0.0"
    twin_port: int = 8080
    twin_config_dir: str = "/etc/spine"
    twin_data_dir: str = "/var/lib/spine/twin"
    twin_secrets_dir: str = "/var/run/spine"
    # Gateways: one pod each in a cluster. Locally several share one state directory, so
    # `gateway_directories` gives each its own subdirectory, and a local runner gives each its
    # own port with `env.replace(gateway_port=...)` before rendering it.
    gateway_host_override: str | None = None  # local: 127.0.0.1
    gateway_bind_address: str = "0.0.0.0"
    gateway_port: int = 8080
    gateway_config_dir: str = "/etc/spine"
    gateway_data_dir: str = "/var/lib/spine/gateway"
    gateway_secrets_dir: str = "/var/run/spine"
    flow_host_override: str | None = None  # local: 127.0.0.1
    flow_bind_address: str = "0.0.0.0"
    flow_port: int = 8080
    flow_config_dir: str = "/etc/spine"
    flow_secrets_dir: str = "/var/run/spine"
    # The proxy: HAProxy on proxy_port, its supervisor's /status and admin on proxy_admin_port.
    proxy_host_override: str | None = None  # local: 127.0.0.1
    proxy_bind_address: str = "0.0.0.0"
    proxy_port: int = 8443
    proxy_admin_port: int = 8080
    proxy_exporter_port: int = 8405
    proxy_config_dir: str = "/etc/spine"
    proxy_run_dir: str = "/var/run/spine-proxy"  # haproxy.cfg, key files, master socket
    proxy_secrets_dir: str = "/var/run/spine"
    proxy_tls_dir: str = "/etc/spine/tls"
    haproxy_binary: str = "/usr/sbin/haproxy"
    catalog_host_override: str | None = None  # local: 127.0.0.1
    catalog_bind_address: str = "0.0.0.0"
    catalog_port: int = 8080
    catalog_config_dir: str = "/etc/spine"
    catalog_data_dir: str = "/var/lib/spine/catalog"
    catalog_secrets_dir: str = "/var/run/spine"
    # Where the backends of serviceRef routes are: a Service's DNS name in a cluster; locally
    # (`spine up`, tests) a fixed host, the port being the serviceRef's.
    service_host_override: str | None = None
    # HAProxy resolves backend names without the pod's DNS search list: they must be complete.
    cluster_domain: str = "cluster.local"
    operator_namespace: str = "spine-system"
    # Where Prometheus scrapes from: admitted to the runtimes' http port (/metrics), if set.
    monitoring_namespace: str | None = None

    @classmethod
    def cluster(cls, runtime_image: str = RUNTIME_IMAGE) -> Environment:
        return cls(runtime_image=runtime_image)

    @classmethod
    def for_local(
        cls,
        state_dir: Path,
        broker_port: int,
        broker_tls_port: int = 0,
        twin_port: int = 8080,
        gateway_port: int = 8081,
        flow_port: int = 8082,
        proxy_port: int = 8443,
        proxy_admin_port: int = 8083,
        proxy_exporter_port: int = 8405,
        catalog_port: int = 8084,
    ) -> Environment:
        broker_dir = state_dir / "broker"
        twin_dir = state_dir / "twin"
        gateway_dir = state_dir / "gateways"
        flow_dir = state_dir / "flows"
        proxy_dir = state_dir / "proxy"
        catalog_dir = state_dir / "catalog"
        return cls(
            local=True,
            broker_host_override="127.0.0.1",
            broker_bind_address="127.0.0.1",
            broker_port=broker_port,
            broker_tls_port=broker_tls_port,
            dynsec_plugin_path=find_dynsec_plugin(),
            broker_config_dir=str(broker_dir / "config"),
            broker_data_dir=str(broker_dir / "data"),
            broker_tls_dir=str(broker_dir / "certs"),
            broker_secrets_dir=str(broker_dir / "admin"),
            twin_host_override="127.0.0.1",
            twin_bind_address="127.0.0.1",
            twin_port=twin_port,
            twin_config_dir=str(twin_dir / "config"),
            twin_data_dir=str(twin_dir / "data"),
            twin_secrets_dir=str(twin_dir / "secrets"),
            gateway_host_override="127.0.0.1",
            gateway_bind_address="127.0.0.1",
            gateway_port=gateway_port,
            gateway_config_dir=str(gateway_dir / "config"),
            gateway_data_dir=str(gateway_dir / "data"),
            gateway_secrets_dir=str(gateway_dir / "secrets"),
            flow_host_override="127.0.0.1",
            flow_bind_address="127.0.0.1",
            flow_port=flow_port,
            flow_config_dir=str(flow_dir / "config"),
            flow_secrets_dir=str(flow_dir / "secrets"),
            proxy_host_override="127.0.0.1",
            proxy_bind_address="127.0.0.1",
            proxy_port=proxy_port,
            proxy_admin_port=proxy_admin_port,
            proxy_exporter_port=proxy_exporter_port,
            proxy_config_dir=str(proxy_dir / "config"),
            proxy_run_dir=str(proxy_dir / "run"),
            proxy_secrets_dir=str(proxy_dir / "secrets"),
            proxy_tls_dir=str(proxy_dir / "tls"),
            catalog_host_override="127.0.0.1",
            catalog_bind_address="127.0.0.1",
            catalog_port=catalog_port,
            catalog_config_dir=str(catalog_dir / "config"),
            catalog_data_dir=str(catalog_dir / "data"),
            catalog_secrets_dir=str(catalog_dir / "secrets"),
            service_host_override="127.0.0.1",
        )

    def broker_host(self, namespace: str) -> str:
        return self.broker_host_override or f"spine-broker.{namespace}.svc"

    def twin_url(self, namespace: str) -> str:
        host = self.twin_host_override or f"spine-twin.{namespace}.svc"
        return f"http://{host}:{self.twin_port}"

    def gateway_url(self, namespace: str, gateway: str) -> str:
        """Where the operator reaches a gateway's /status and /admin/config."""
        host = self.gateway_host_override or f"{labels.gateway_name(gateway)}.{namespace}.svc"
        return f"http://{host}:{self.gateway_port}"

    def flow_engine_url(self, namespace: str) -> str:
        """Where the operator reaches the flow engine's /status and /admin/config."""
        host = self.flow_host_override or f"{labels.FLOW_ENGINE_NAME}.{namespace}.svc"
        return f"http://{host}:{self.flow_port}"

    def flow_engine_replica_urls(self, namespace: str, replicas: int) -> list[str]:
        """Where the operator reaches each engine replica (a push and a /status read per
        replica; the Service would pick one). Locally one engine runs, as replica 0."""
        if self.flow_host_override:
            return [self.flow_engine_url(namespace)]
        pods = f"{labels.FLOW_ENGINE_PODS_NAME}.{namespace}.svc"
        return [
            f"http://{labels.FLOW_ENGINE_NAME}-{ordinal}.{pods}:{self.flow_port}"
            for ordinal in range(replicas)
        ]

    def proxy_url(self, namespace: str) -> str:
        """Where the operator reaches the proxy supervisor's /status and /admin/config."""
        host = self.proxy_host_override or f"{labels.PROXY_ADMIN_SERVICE}.{namespace}.svc"
        return f"http://{host}:{self.proxy_admin_port}"

    def proxy_public_url(self, namespace: str, tls: bool) -> str:
        """The proxy's routes, as a client inside the cluster calls them."""
        host = self.proxy_host_override or f"{labels.PROXY_NAME}.{namespace}.svc"
        return f"{'https' if tls else 'http'}://{host}:{self.proxy_port}"

    def catalog_url(self, namespace: str) -> str:
        """Where the proxy and the operator reach the catalog (/status, /admin/config)."""
        host = self.catalog_host_override or f"{labels.CATALOG_NAME}.{namespace}.svc"
        return f"http://{host}:{self.catalog_port}"

    def service_host(self, namespace: str, service: str) -> str:
        """A Service of the namespace by its complete DNS name, as HAProxy (which ignores the
        search list) and the catalog's probes reach it."""
        return self.service_host_override or f"{service}.{namespace}.svc.{self.cluster_domain}"

    def proxy_backend_host(self, namespace: str, service: str, override: str | None) -> str:
        """The twin's or the catalog's Service as the proxy reaches it."""
        return override or self.service_host(namespace, service)

    def gateway_directories(self, gateway: str) -> GatewayDirectories:
        """Config, buffer and Secret directories of one gateway, as its process sees them."""
        if not self.local:
            return GatewayDirectories(
                self.gateway_config_dir, self.gateway_data_dir, self.gateway_secrets_dir
            )
        return GatewayDirectories(
            str(PurePosixPath(self.gateway_config_dir) / gateway),
            str(PurePosixPath(self.gateway_data_dir) / gateway),
            str(PurePosixPath(self.gateway_secrets_dir) / gateway),
        )

    def replace(self, **changes: object) -> Environment:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def find_dynsec_plugin() -> str:
    """The dynamic-security plugin of the locally installed mosquitto (Debian's package)."""
    if Path(DEBIAN_DYNSEC_PLUGIN).exists():
        return DEBIAN_DYNSEC_PLUGIN
    try:
        listing = subprocess.run(
            ["dpkg", "-L", "mosquitto"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    for line in listing.splitlines():
        if line.endswith("mosquitto_dynamic_security.so"):
            return line
    return DEBIAN_DYNSEC_PLUGIN


def operator_environment() -> Environment:
    """The environment the operator renders for: its own image runs the runtime workloads."""
    monitoring = os.environ.get("SPINE_MONITORING_NAMESPACE") or None
    if monitoring is not None and not re.fullmatch(
        r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", monitoring
    ):
        raise ValueError(f"SPINE_MONITORING_NAMESPACE {monitoring!r} is not a namespace name")
    domain = os.environ.get("SPINE_CLUSTER_DOMAIN") or "cluster.local"
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", domain):
        raise ValueError(f"SPINE_CLUSTER_DOMAIN {domain!r} is not a DNS domain")
    return Environment(
        cluster_domain=domain,
        runtime_image=os.environ.get("SPINE_RUNTIME_IMAGE", RUNTIME_IMAGE),
        operator_namespace=os.environ.get("SPINE_OPERATOR_NAMESPACE", "spine-system"),
        monitoring_namespace=monitoring,
    )
