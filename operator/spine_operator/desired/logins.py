"""Broker logins: "this workload needs a login allowed to publish X and subscribe Y".

Pure, so plans and `spine up` share it: `Login` is the description (role name, ACLs, topic
checks) and the functions below give each kind of workload exactly the topics of
docs/protocol.md. The operator applies them through `brokeraccess`; the tests start the twin
and the gateways with the same logins, so an ACL too wide or too narrow shows in a test.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from spine_operator import labels
from spine_operator.desired.workload import build_generated_secret
from spine_operator.environment import Environment


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
    # The only client id this login may connect with (dynamic security's `clientid`). Every
    # login the operator makes is bound to its username, so no login can connect as another
    # workload: kick it off, wipe its persistent session, or inherit its subscriptions.
    client_id: str | None = None
    # The Secret with its password; `spine-mqtt-<username>` unless a resource names it.
    secret_name: str | None = None

    def __post_init__(self) -> None:
        for value in (self.username, self.client_id or "x"):
            if not value or len(value) > 128 or any(not (c.isalnum() or c in "-_.") for c in value):
                raise ValueError(
                    f"login name or client id {value!r}: use letters, digits, '-', '_', '.' "
                    "(at most 128)"
                )
        for topic in (*self.publish, *self.subscribe):
            check_topic_filter(topic)

    @property
    def secret(self) -> str:
        return self.secret_name or labels.login_secret_name(self.username)

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


TWIN_USERNAME = "spine-twin"


def thing_topic(thing: str, channel: str) -> str:
    """`spine/things/<thing>/<channel>`; channel is twin, desired, events or errors."""
    return f"spine/things/{thing}/{channel}"


def gateway_ack_topic(gateway: str) -> str:
    return f"spine/gateways/{gateway}/acks"


def gateway_twin_topic(gateway: str, thing: str) -> str:
    """Where a gateway publishes a thing's updates: the topic names the gateway, and only that
    gateway's login may publish there, so the twin takes its identity from the topic."""
    return f"spine/gateways/{gateway}/things/{thing}/twin"


def twin_login() -> Login:
    return Login(
        TWIN_USERNAME,
        client_id=TWIN_USERNAME,
        publish=(
            thing_topic("+", "desired"),
            thing_topic("+", "events"),
            thing_topic("+", "errors"),
            gateway_ack_topic("+"),
        ),
        subscribe=(thing_topic("+", "twin"), gateway_twin_topic("+", "+")),
        description="Spine twin service",
    )


def gateway_username(gateway: str) -> str:
    return f"gateway-{gateway}"


def gateway_login(gateway: str, things: Iterable[str], writable_things: Iterable[str]) -> Login:
    """A gateway publishes only its own things' updates and hears only its own commands."""
    return Login(
        gateway_username(gateway),
        client_id=gateway_username(gateway),
        publish=tuple(sorted({gateway_twin_topic(gateway, thing) for thing in things})),
        subscribe=(
            gateway_ack_topic(gateway),
            *sorted({thing_topic(thing, "desired") for thing in writable_things}),
        ),
        description=f"Spine gateway {gateway}",
    )


def build_login_secret(
    namespace: str, login: Login, owner_name: str, env: Environment, password: str
) -> dict[str, Any]:
    """The Secret a workload mounts for its broker login; the password is generated once."""
    return build_generated_secret(
        login.secret,
        namespace,
        "mqtt-login",
        owner_name,
        {
            "username": login.username,
            "password": password,
            "host": env.broker_host(namespace),
            "port": str(env.broker_port),
        },
    )


def generate_password() -> str:
    return secrets.token_urlsafe(24)
