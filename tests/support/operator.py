"""Run the real operator (kopf runtime and our handlers) against the realistic emulator.

kopf runs in its own thread and event loop: stopping it cancels every task it did not start,
so it must not share the test's loop, where the emulator serves. The sync kubernetes client is
called from tests only through `asyncio.to_thread` for the same reason.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import kmock
import kopf
import kubernetes
import yaml

from spine_operator import k8s as k8s_module
from spine_operator.api.kinds import GROUP, KINDS, VERSION
from tests.support.emulator import RealisticEmulator


def resource_key(plural: str) -> str:
    return f"{GROUP}/{VERSION}/{plural}"


@asynccontextmanager
async def emulated_cluster() -> AsyncIterator[RealisticEmulator]:
    async with RealisticEmulator() as emulator, kmock.Server(emulator, host="127.0.0.1"):
        emulator.resources.load_bundled()
        verbs = {"get", "list", "watch", "create", "update", "patch", "delete"}
        for info in KINDS:
            emulator.resources[resource_key(info.plural)] = kmock.ResourceInfo(
                kind=info.kind,
                singular=info.singular,
                namespaced=True,
                subresources={"status"},
                verbs=verbs,
            )
        yield emulator


def write_kubeconfig(server_url: str, path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "emulator",
                "clusters": [{"name": "emulator", "cluster": {"server": server_url}}],
                "users": [{"name": "emulator", "user": {"token": "test"}}],
                "contexts": [
                    {"name": "emulator", "context": {"cluster": "emulator", "user": "emulator"}}
                ],
            }
        )
    )
    return path


def point_clients_at(kubeconfig: Path, monkeypatch: Any) -> None:
    """kopf's default login and the operator's adapter both read $KUBECONFIG."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setattr(
        kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig)
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    k8s_module.reset_api_client()


class RunningOperator:
    def __init__(self) -> None:
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.thread: threading.Thread | None = None

    async def start(self) -> None:
        import spine_operator.handlers  # noqa: F401 - registers the handlers once per process

        settings = kopf.OperatorSettings()
        settings.queueing.exit_timeout = 0.5
        self.thread = threading.Thread(
            target=kopf.run,
            name="kopf",
            daemon=True,
            kwargs={
                "standalone": True,
                "clusterwide": True,
                "settings": settings,
                "stop_flag": self.stop_flag,
                "ready_flag": self.ready_flag,
            },
        )
        self.thread.start()
        started = await asyncio.to_thread(self.ready_flag.wait, 15)
        assert started, "the operator did not start within 15 s"

    async def stop(self) -> None:
        self.stop_flag.set()
        if self.thread is not None:
            await asyncio.to_thread(self.thread.join, 15)
            assert not self.thread.is_alive(), "the operator did not stop within 15 s"
