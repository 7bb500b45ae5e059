"""The operator's admin client of one namespace's broker, over MQTT (an adapter: it does I/O).

`BrokerAdmin` applies `Login`s through Mosquitto's dynamic-security plugin, idempotently, and
re-applies every declared login whenever the broker comes back (DESIGN.md, "What restarts"), so
a broker that lost its file converges without a restart. Changes are made only where the broker
differs, because modifying a client's roles or password disconnects it. `spine up` uses it too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from spine_operator.desired.logins import Login

log = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"


class BrokerAccessError(RuntimeError):
    """The broker refused a dynamic-security command or could not be reached in time."""


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
        self.passwords: dict[str, str] = {}  # username -> the password the broker holds

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
                        **({"clientid": login.client_id} if login.client_id else {}),
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
                if client_existed and (client.get("clientid") or None) != login.client_id:
                    fixes.append(
                        {
                            "command": "modifyClient",
                            "username": login.username,
                            "clientid": login.client_id or "",
                        }
                    )
                if client_existed and not await self.password_known(login, password):
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
            self.passwords[login.username] = password
            return changed

    async def remove_login(self, username: str) -> None:
        """Delete a login and its role; absent ones are fine."""
        async with self._lock:
            declared = self.declared.pop(username, None)
            self.passwords.pop(username, None)
            role = declared.login.role_name if declared else f"spine-{username}"
            responses = await self.execute(
                [
                    {"command": "deleteClient", "username": username},
                    {"command": "deleteRole", "rolename": role},
                ]
            )
            self._raise_for(responses[0], "Client not found")
            self._raise_for(responses[1], "Role not found")

    async def prune_logins(self, pattern: str, keep: set[str]) -> list[str]:
        """Remove every login whose username matches `pattern` and is not in `keep`, and the
        persistent session of its client id (bound logins use their username as client id):
        mosquitto keeps handing an offline member of a shared subscription its share of the
        messages, so a session left behind by a replica scaled away would swallow that share
        until it expired. Returns the names removed."""
        family = re.compile(pattern)
        gone = [name for name in await self.usernames() if family.match(name) and name not in keep]
        for username in gone:
            await self.remove_login(username)
            await self.discard_session(username)
        return gone

    async def discard_session(self, client_id: str) -> None:
        """End the persistent session of a client id: connect under it with a clean start and
        no session expiry (the admin login is bound to no client id), then disconnect."""

        def attempt() -> None:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
            )
            client.username_pw_set(self.username, self.password)
            result: list[Any] = []
            client.on_connect = lambda c, u, f, reason, p=None: result.append(reason)
            try:
                client.connect(self.host, self.port, keepalive=5, clean_start=True)
                deadline = 50
                while not result and deadline:
                    client.loop(timeout=0.1)
                    deadline -= 1
            except OSError as error:
                raise BrokerAccessError(f"cannot end the session of {client_id}: {error}") from None
            finally:
                client.disconnect()
            if not result or result[0].is_failure:
                raise BrokerAccessError(
                    f"cannot end the session of {client_id}: {result[0] if result else 'no answer'}"
                )

        await asyncio.to_thread(attempt)

    async def usernames(self) -> list[str]:
        """Every login the broker's dynamic security holds."""
        responses = await self.execute(
            [{"command": "listClients", "verbose": False, "count": -1, "offset": 0}]
        )
        self._raise_for(responses[0])
        clients = responses[0].get("data", {}).get("clients") or []
        return [str(client) for client in clients if isinstance(client, str)]

    async def password_known(self, login: Login, password: str) -> bool:
        """Whether the broker holds this password for the login. A login bound to a client id
        cannot be probed without kicking its workload off (the probe would take its id), so its
        password is trusted once this connection set or created it, and set again otherwise:
        after an operator restart, each bound workload reconnects once."""
        if login.client_id:
            return self.passwords.get(login.username) == password
        return await self.login_works(login.username, password)

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
