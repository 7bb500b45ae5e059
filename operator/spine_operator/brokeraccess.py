"""Broker access for the operator: each workload's login Secret and its ACL on the broker.

`BrokerAccess.ensure_login(namespace, login, owner)` keeps the login's password in a Secret the
workload mounts (generated once) and makes the namespace's broker hold exactly the login's ACLs
through one `BrokerAdmin` connection per namespace.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Any

from spine_operator import labels
from spine_operator.api.kinds import API_VERSION, SPINE
from spine_operator.api.spine import SpineSpec
from spine_operator.broker_admin import BrokerAccessError, BrokerAdmin
from spine_operator.desired.broker import admin_secret_name
from spine_operator.desired.common import secret_values
from spine_operator.desired.logins import Login
from spine_operator.environment import Environment

if TYPE_CHECKING:
    from spine_operator.k8s import Kubernetes

__all__ = ["BrokerAccess", "BrokerAccessError", "SpineNotFound"]


class SpineNotFound(LookupError):
    """The namespace has no Spine, so no broker to hold a login."""


class BrokerAccess:
    """Logins on each namespace's broker, with their credentials in Secrets.

    `ensure_login(namespace, login, owner)` returns the name of a Secret (keys username,
    password, host, port) that the workload mounts; the password is generated once and kept,
    and the broker holds exactly the login's ACLs. One admin connection per namespace.
    """

    def __init__(self, k8s: Kubernetes, environment: Environment) -> None:
        self.k8s = k8s
        self.environment = environment
        self._admins: dict[str, tuple[str, BrokerAdmin]] = {}
        self._lock = asyncio.Lock()

    async def _admin_credentials(self, namespace: str) -> tuple[str, str]:
        from spine_operator.k8s import resource_path

        spines = await self.k8s.request("GET", resource_path(API_VERSION, SPINE.kind, namespace))
        items = spines.get("items") or []
        if not items:
            raise SpineNotFound(
                f"namespace {namespace} has no Spine: apply one (kind: Spine, spec: {{}}) first"
            )
        spec = SpineSpec.model_validate(items[0].get("spec") or {})
        secret = await self.k8s.get("v1", "Secret", namespace, admin_secret_name(spec.broker))
        data = secret_values(secret)
        if not data.get("username") or not data.get("password"):
            raise BrokerAccessError(
                f"the broker admin Secret of namespace {namespace} is missing or incomplete"
            )
        return data["username"], data["password"]

    async def admin(self, namespace: str) -> BrokerAdmin:
        """The started admin connection of a namespace's broker (new credentials: reconnect)."""
        username, password = await self._admin_credentials(namespace)
        fingerprint = f"{username}:{hash(password)}"
        async with self._lock:
            current = self._admins.get(namespace)
            if current is not None and current[0] == fingerprint:
                return current[1]
            admin = BrokerAdmin(
                self.environment.broker_host(namespace),
                self.environment.broker_port,
                username,
                password,
            )
            if current is not None:
                admin.declared.update(current[1].declared)
                await current[1].close()
            await admin.start()
            self._admins[namespace] = (fingerprint, admin)
            return admin

    async def ensure_login(
        self, namespace: str, login: Login, owner: dict[str, Any], wait: bool = True
    ) -> str:
        """The login's Secret name; the ACL is applied now, or (wait=False and the broker not
        reachable yet) as soon as the admin connection comes up."""
        name = labels.login_secret_name(login.username)
        secret = await self.k8s.get_or_create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": labels.labels("mqtt-login", owner["metadata"]["name"]),
                    "annotations": {labels.GENERATED: "true"},
                },
                "stringData": {
                    "username": login.username,
                    "password": secrets.token_urlsafe(24),
                    "host": self.environment.broker_host(namespace),
                    "port": str(self.environment.broker_port),
                },
            },
            owner=owner,
        )
        password = secret_values(secret).get("password", "")
        admin = await self.admin(namespace)
        if wait or admin.connected:
            await admin.ensure_login(login, password)
        else:
            admin.declare(login, password)
        return name

    async def remove_login(self, namespace: str, username: str) -> None:
        entry = self._admins.get(namespace)
        if entry is not None:
            await entry[1].remove_login(username)

    async def close(self) -> None:
        for _, admin in self._admins.values():
            await admin.close()
        self._admins.clear()
