"""An MQTT API's login, as the proxy plan gives it for the example registration, on the real
mosquitto: its clients publish and subscribe exactly the declared channels and are refused
every other one (MQTT v5 reason 135), and the refused messages are never delivered."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
import yaml

from spine_operator.api.serviceregistration import ServiceRegistrationSpec
from spine_operator.desired.proxy import registration_logins
from tests.integration.test_broker import ALLOWED, DENIED, Observer, publish_reason
from tests.support.mosquitto import LocalBroker
from tests.support.processes import wait_until
from tests.support.twin import ensure_login

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "press-line" / "registration.yaml"


async def test_an_mqtt_api_login_may_use_exactly_its_declared_channels(
    broker: LocalBroker,
) -> None:
    registration = next(
        doc
        for doc in yaml.safe_load_all(EXAMPLE.read_text())
        if doc["kind"] == "ServiceRegistration"
    )
    spec = ServiceRegistrationSpec.model_validate(registration["spec"])
    (login,) = registration_logins("maintenance", spec)
    await ensure_login(broker, login, "s3cret-pw")
    observer = Observer(broker)
    client = await asyncio.to_thread(broker.client, login.username, "s3cret-pw", login.client_id)
    try:
        assert publish_reason(client, "plant-a/maintenance/orders/created") == ALLOWED
        assert publish_reason(client, "plant-a/maintenance/orders/deleted") == DENIED
        assert publish_reason(client, "spine/things/press-1/twin") == DENIED
        assert publish_reason(client, "plant-a/maintenance/orders/created", b"marker") == ALLOWED
        wait_until(
            lambda: observer.topics().count("plant-a/maintenance/orders/created") == 2,
            5,
            "the allowed messages",
        )
        assert "plant-a/maintenance/orders/deleted" not in observer.topics()
        assert "spine/things/press-1/twin" not in observer.topics()
        granted: list[list[int]] = []
        done = threading.Event()
        client.on_subscribe = lambda c, u, mid, codes, p=None: (
            granted.append([code.value for code in codes]),
            done.set(),
        )
        client.subscribe([("spine/things/press-1/events", 1), ("spine/things/+/twin", 1)])
        assert done.wait(5)
        assert granted[0] == [1, 135]
    finally:
        client.disconnect()
        client.loop_stop()
        observer.close()
