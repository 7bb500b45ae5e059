"""Broker access: "this workload needs a login allowed to publish X and subscribe Y".

`Login` is the pure description (role name, ACLs, topic checks). `BrokerAdmin` is the operator's
admin client of one namespace's broker: it applies logins through Mosquitto's dynamic-security
plugin over MQTT, idempotently, and re-applies every declared login whenever the broker comes
back (DESIGN.md, "What restarts"), so a broker that lost its file converges without a restart.
Changes are made only where the broker differs, because modifying a client's roles or password
disconnects it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from spine_operator import labels
from spine_operator.api.registry import API_VERSION, SPINE
from spine_operator.api.spine import SpineSpec
from spine_operator.build.broker import admin_secret_name
from spine_operator.build.common import secret_values
from spine_operator.environment import Environment

if TYPE_CHECKING:  # `spine up` uses BrokerAdmin alone; the kubernetes client costs ~30 MB RSS
    from spine_operator.k8s import Kubernetes

log = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"


class BrokerAccessError(RuntimeError):
    """The broker refused a dynamic-security command or could not be reached in time."""


def check_topic_filter(topic: str) -> str:
    """An MQTT topic filter that cannot smuggle anything: no control characters, wildcards
    only as whole levels, `#` only last."""
    if not topic or len(topic) > 512:
        raise ValueError(f"topic {topic!r}: must be 1 to 512 characters")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in topic):
        raise ValueError(f"topic {topic!r}: must not contain control characters")
    levels = topic.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise ValueError(f"topic {topic!r}: '#' must be a whole level and the last one")
        if "+" in level and level != "+":
            raise ValueError(f"topic {topic!r}: '+' must be a whole level")
    return topic


@dataclass(frozen=True)
class Login:
    """A workload's broker login and exactly the topics it may use."""

    username: str
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not self.username or any(not (c.isalnum() or c in "-_.") for c in self.username):
            raise ValueError(f"login name {self.username!r}: use letters, digits, '-', '_', '.'")
        for topic in (*self.publish, *self.subscribe):
            check_topic_filter(topic)

    @property
    def role_name(self) -> str:
        return f"spine-{self.username}"

    def acls(self) -> list[dict[str, Any]]:
        acls = [
            {"acltype": "publishClientSend", "topic": topic, "priority": 0, "allow": True}
            for topic in sorted(set(self.publish))
        ]
        acls += [
            {"acltype": "subscribePattern", "topic": topic, "priority": 0, "allow": True}
            for topic in sorted(set(self.subscribe))
        ]
        return acls


def _acl_set(acls: Iterable[dict[str, Any]]) -> set[tuple[str, str, bool]]:
    return {(acl["acltype"], acl["topic"], bool(acl.get("allow"))) for acl in acls}


@dataclass
class _Declared:
    login: Login
    password: str


@dataclass
class BrokerAdmin:
    """The operator's admin connection to one broker, with the logins it must hold."""

    host: str
    port: int
    username: str
    password: str
    request_timeout: float = 5.0
    declared: dict[str, _Declared] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._pending: dict[str, asyncio.Future[list[dict[str, Any]]]] = {}
        self._connected = asyncio.Event()
        self._lock = asyncio.Lock()
        self._reapply_task: asyncio.Task[None] | None = None
        self.reapplied = 0  # how many times the declared logins were re-applied on connect

    # connection -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect in the background; reconnects by itself with backoff."""
        self._loop = asyncio.get_running_loop()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"spine-operator-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(self.username, self.password)
        client.reconnect_delay_set(min_delay=1, max_delay=15)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        client.connect_async(self.host, self.port, keepalive=30)
        client.loop_start()

    async def close(self) -> None:
        if self._reapply_task is not None:
            self._reapply_task.cancel()
        if self._client is not None:
            client, self._client = self._client, None
            client.disconnect()
            # paho joins its network thread, which may sit in a DNS lookup or a connect
            # timeout: wait briefly, never block a reconcile on it (the thread is a daemon).
            stopper = threading.Thread(target=client.loop_stop, daemon=True)
            stopper.start()
            await asyncio.to_thread(stopper.join, 2.0)
        for future in self._pending.values():
            if not future.done():
                future.cancel()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            raise BrokerAccessError(
                f"the broker at {self.host}:{self.port} did not accept the admin login "
                f"within {timeout:g} s"
            ) from None

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        if reason.is_failure:
            log.warning("Broker %s:%s refused the admin login: %s", self.host, self.port, reason)
            return
        client.subscribe(RESPONSE_TOPIC, qos=1)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._became_connected)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._connected.clear)

    def _became_connected(self) -> None:
        self._connected.set()
        if self.declared:
            self._reapply_task = asyncio.ensure_future(self._reapply())

    async def _reapply(self) -> None:
        try:
            for declared in list(self.declared.values()):
                await self.ensure_login(declared.login, declared.password)
            self.reapplied += 1
            log.info(
                "Re-applied %d broker logins on %s:%s", len(self.declared), self.host, self.port
            )
        except (BrokerAccessError, asyncio.CancelledError) as error:
            log.warning(
                "Re-applying broker logins on %s:%s failed: %s", self.host, self.port, error
            )

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            responses = json.loads(message.payload).get("responses", [])
        except (ValueError, AttributeError):
            return
        if not responses:
            return
        batch = str(responses[0].get("correlationData", "")).split(":")[0]
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._resolve, batch, responses)

    def _resolve(self, batch: str, responses: list[dict[str, Any]]) -> None:
        future = self._pending.pop(batch, None)
        if future is not None and not future.done():
            future.set_result(responses)

    # commands ---------------------------------------------------------------------------

    async def execute(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send one batch of dynamic-security commands and return the broker's responses."""
        await self.wait_connected(self.request_timeout)
        assert self._loop is not None and self._client is not None
        batch = uuid.uuid4().hex
        payload = [
            {**command, "correlationData": f"{batch}:{index}"}
            for index, command in enumerate(commands)
        ]
        future: asyncio.Future[list[dict[str, Any]]] = self._loop.create_future()
        self._pending[batch] = future
        self._client.publish(CONTROL_TOPIC, json.dumps({"commands": payload}), qos=1)
        try:
            return await asyncio.wait_for(future, self.request_timeout)
        except TimeoutError:
            self._pending.pop(batch, None)
            raise BrokerAccessError(
                f"the broker at {self.host}:{self.port} did not answer within "
                f"{self.request_timeout:g} s"
            ) from None

    @staticmethod
    def _raise_for(response: dict[str, Any], allowed: str | None = None) -> bool:
        """True if the response is the allowed error; raise on any other error."""
        error = response.get("error")
        if error is None:
            return False
        if error == allowed:
            return True
        raise BrokerAccessError(f"{response.get('command')}: {error}")

    def declare(self, login: Login, password: str) -> None:
        """Remember a login to apply on the next (re)connect, without talking to the broker."""
        self.declared[login.username] = _Declared(login, password)

    async def ensure_login(self, login: Login, password: str) -> bool:
        """Make the broker hold exactly this login; returns whether anything changed."""
        async with self._lock:
            self.declared[login.username] = _Declared(login, password)
            acls = login.acls()
            roles = [{"rolename": login.role_name, "priority": 0}]
            created = await self.execute(
                [
                    {
                        "command": "createRole",
                        "rolename": login.role_name,
                        "textdescription": login.description,
                        "acls": acls,
                    },
                    {
                        "command": "createClient",
                        "username": login.username,
                        "password": password,
                        "textdescription": login.description,
                        "roles": roles,
                    },
                ]
            )
            role_existed = self._raise_for(created[0], "Role already exists")
            client_existed = self._raise_for(created[1], "Client already exists")
            changed = not (role_existed and client_existed)
            fixes: list[dict[str, Any]] = []
            if role_existed or client_existed:
                found = await self.execute(
                    [
                        {"command": "getRole", "rolename": login.role_name},
                        {"command": "getClient", "username": login.username},
                    ]
                )
                self._raise_for(found[0])
                self._raise_for(found[1])
                role = found[0].get("data", {}).get("role", {})
                client = found[1].get("data", {}).get("client", {})
                if role_existed and _acl_set(role.get("acls", [])) != _acl_set(acls):
                    fixes.append(
                        {"command": "modifyRole", "rolename": login.role_name, "acls": acls}
                    )
                current_roles = {r.get("rolename") for r in client.get("roles", [])}
                if client_existed and current_roles != {login.role_name}:
                    fixes.append(
                        {"command": "modifyClient", "username": login.username, "roles": roles}
                    )
                if client_existed and not await self.login_works(login.username, password):
                    fixes.append(
                        {
                            "command": "modifyClient",
                            "username": login.username,
                            "password": password,
                        }
                    )
            if fixes:
                for response in await self.execute(fixes):
                    self._raise_for(response)
                changed = True
            return changed

    async def remove_login(self, username: str) -> None:
        """Delete a login and its role; absent ones are fine."""
        async with self._lock:
            declared = self.declared.pop(username, None)
            role = declared.login.role_name if declared else f"spine-{username}"
            responses = await self.execute(
                [
                    {"command": "deleteClient", "username": username},
                    {"command": "deleteRole", "rolename": role},
                ]
            )
            self._raise_for(responses[0], "Client not found")
            self._raise_for(responses[1], "Role not found")

    async def login_works(self, username: str, password: str) -> bool:
        """Whether the broker accepts this password (a throwaway connection, clean session)."""

        def attempt() -> bool:
            probe = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=f"spine-probe-{uuid.uuid4().hex[:8]}",
                protocol=mqtt.MQTTv5,
            )
            probe.username_pw_set(username, password)
            result: list[bool] = []
            probe.on_connect = lambda c, u, f, reason, p=None: result.append(not reason.is_failure)
            try:
                probe.connect(self.host, self.port, keepalive=5)
                deadline = 50
                while not result and deadline:
                    probe.loop(timeout=0.1)
                    deadline -= 1
                return bool(result and result[0])
            except OSError:
                return False
            finally:
                probe.disconnect()

        return await asyncio.to_thread(attempt)


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
