"""Broker access for the operator: each workload's login Secret and its ACL on the broker.

`BrokerAccess.ensure_login(namespace, login, owner)` keeps the login's password in a Secret the
workload mounts (generated once) and makes the namespace's broker hold exactly the login's ACLs
through one `BrokerAdmin` connection per namespace.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from spine_operator.api.kinds import API_VERSION, SPINE
from spine_operator.api.spine import SpineSpec
from spine_operator.broker_admin import BrokerAccessError, BrokerAdmin
from spine_operator.desired.broker import admin_secret_name
from spine_operator.desired.common import oldest, secret_values
from spine_operator.desired.logins import Login, build_login_secret, generate_password
from spine_operator.environment import Environment
from spine_operator.errors import DependencyNotReady, SpineNotFound

if TYPE_CHECKING:
    from spine_operator.k8s import Kubernetes

__all__ = ["BrokerAccess", "BrokerAccessError"]


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
        spine = oldest(await self.k8s.list(API_VERSION, SPINE.kind, namespace))
        if spine is None:
            raise SpineNotFound.in_namespace(namespace, "its workloads get broker logins")
        try:
            spec = SpineSpec.model_validate(spine.get("spec") or {})
        except ValidationError:
            raise DependencyNotReady(
                f"Spine {spine['metadata']['name']} has an invalid spec (its status says what to "
                "fix); broker logins are applied once it is valid"
            ) from None
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
    ) -> bool:
        """Whether the broker holds the login now. With wait=False and the broker not reachable
        yet, it is applied as soon as the admin connection comes up (and False is returned)."""
        secret = await self.k8s.get_or_create(
            build_login_secret(
                namespace, login, owner["metadata"]["name"], self.environment, generate_password()
            ),
            owner=owner,
        )
        password = secret_values(secret).get("password", "")
        admin = await self.admin(namespace)
        if wait or admin.connected:
            await admin.ensure_login(login, password)
            return True
        admin.declare(login, password)
        return False

    async def remove_login(self, namespace: str, username: str) -> None:
        entry = self._admins.get(namespace)
        if entry is not None:
            await entry[1].remove_login(username)

    async def prune_logins(self, namespace: str, pattern: str, keep: set[str]) -> list[str]:
        """Remove every login whose username matches `pattern` and is not in `keep` (the
        replica logins of a flow engine scaled down) with its session; returns their names.
        Nothing while the
        broker is away: the next reconcile prunes (a stale login is bound to a client id that
        no pod uses any more)."""
        entry = self._admins.get(namespace)  # only a broker this operator talks to already
        if entry is None or not entry[1].connected:
            return []
        return await entry[1].prune_logins(pattern, keep)

    async def close(self) -> None:
        for _, admin in self._admins.values():
            await admin.close()
        self._admins.clear()
