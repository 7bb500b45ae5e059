"""The broker login of each kind of workload: exactly the topics of docs/protocol.md.

One source for ACLs: the operator applies these through `brokeraccess`, and the tests start the
twin and the gateways with the same logins, so an ACL too wide or too narrow shows in a test.
"""

from __future__ import annotations

from collections.abc import Iterable

from spine_operator.brokeraccess import Login

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
        publish=tuple(sorted({gateway_twin_topic(gateway, thing) for thing in things})),
        subscribe=(
            gateway_ack_topic(gateway),
            *sorted({thing_topic(thing, "desired") for thing in writable_things}),
        ),
        description=f"Spine gateway {gateway}",
    )
