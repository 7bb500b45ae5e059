"""The broker as users get it: Debian's mosquitto on the exact config the operator renders.

Proves the security defaults (no anonymous access, deny-by-default ACLs applied through the
broker-access module), that logins and retained messages survive restarts, and that the queue
limits hold a QoS 1 burst for a consumer that is offline.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from spine_operator.api.spine import BrokerSpec
from spine_operator.broker_admin import BrokerAccessError, BrokerAdmin
from spine_operator.desired.logins import TWIN_USERNAME, Login, gateway_login, twin_login
from tests.support.mosquitto import LocalBroker, connect_result
from tests.support.processes import wait_until

pytestmark = pytest.mark.integration


class Observer:
    """An admin client subscribed to `#`, recording what the broker delivers."""

    def __init__(self, broker: LocalBroker) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = broker.client()
        self.client.on_message = self._record
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.subscribe("#", qos=1)
        assert subscribed.wait(5)

    def _record(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload))

    def topics(self) -> list[str]:
        with self.lock:
            return [topic for topic, _ in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


ALLOWED, DENIED = "allowed", "denied"


def publish_reason(client: mqtt.Client, topic: str, payload: bytes = b"x") -> str:
    """Publish at QoS 1; "allowed" for a success PUBACK (0, or 16: no subscribers), "denied"
    for reason 135 (not authorized), the raw code otherwise."""
    acked = threading.Event()
    codes: list[int] = []

    def on_publish(c, userdata, mid, reason, properties=None):
        codes.append(reason.value)
        acked.set()

    client.on_publish = on_publish
    client.publish(topic, payload, qos=1)
    assert acked.wait(5), "no PUBACK"
    code = codes[0]
    return ALLOWED if code in (0, 16) else DENIED if code == 135 else str(code)


@pytest.fixture
async def admin(broker: LocalBroker):
    client = BrokerAdmin(broker.host, broker.port, broker.admin_username, broker.admin_password)
    await client.start()
    await client.wait_connected(5)
    yield client
    await client.close()


def test_anonymous_and_wrong_password_are_refused(broker: LocalBroker) -> None:
    assert connect_result(broker, None, None) == "Not authorized"
    assert connect_result(broker, "admin", "wrong") == "Not authorized"
    assert connect_result(broker, "admin", broker.admin_password) == "Success"


async def test_login_may_publish_only_where_its_acl_allows(broker, admin) -> None:
    login = Login(
        "gw-press",
        publish=("spine/things/press-1/twin",),
        subscribe=("spine/things/press-1/desired",),
    )
    assert await admin.ensure_login(login, "s3cret-pw") is True
    observer = Observer(broker)
    client = await asyncio.to_thread(broker.client, "gw-press", "s3cret-pw")
    try:
        assert publish_reason(client, "spine/things/press-1/twin") == ALLOWED
        assert publish_reason(client, "spine/things/press-2/twin") == DENIED
        assert publish_reason(client, "other/topic") == DENIED
        wait_until(lambda: "spine/things/press-1/twin" in observer.topics(), 5, "allowed message")
        # The denied ones were never delivered: publish a marker after them and wait for it.
        assert publish_reason(client, "spine/things/press-1/twin", b"marker") == ALLOWED
        wait_until(lambda: observer.topics().count("spine/things/press-1/twin") == 2, 5, "marker")
        assert "spine/things/press-2/twin" not in observer.topics()
        assert "other/topic" not in observer.topics()
        # subscribe: allowed filter granted, another refused (v5 SUBACK reason 135)
        granted: list[list[int]] = []
        done = threading.Event()
        client.on_subscribe = lambda c, u, mid, codes, p=None: (
            granted.append([code.value for code in codes]),
            done.set(),
        )
        client.subscribe([("spine/things/press-1/desired", 1), ("spine/things/+/twin", 1)])
        assert done.wait(5)
        assert granted[0] == [1, 135]
    finally:
        client.disconnect()
        client.loop_stop()
        observer.close()


async def test_ensure_login_is_idempotent_and_converges(broker, admin) -> None:
    login = Login("flow-1", publish=("a/b",))
    assert await admin.ensure_login(login, "pw-1") is True
    assert await admin.ensure_login(login, "pw-1") is False  # nothing to change
    # a new password and a different ACL are applied in place
    narrowed = Login("flow-1", publish=("a/c",))
    assert await admin.ensure_login(narrowed, "pw-2") is True
    assert connect_result(broker, "flow-1", "pw-1") == "Not authorized"
    client = await asyncio.to_thread(broker.client, "flow-1", "pw-2")
    try:
        assert publish_reason(client, "a/c") == ALLOWED
        assert publish_reason(client, "a/b") == DENIED
    finally:
        client.disconnect()
        client.loop_stop()
    await admin.remove_login("flow-1")
    assert connect_result(broker, "flow-1", "pw-2") == "Not authorized"
    await admin.remove_login("flow-1")  # absent is fine


def test_hostile_topics_and_names_are_refused() -> None:
    for topic in ["a/#/b", "a/b#", "a+/b", "", "a\nlistener 1884", "a\x00b"]:
        with pytest.raises(ValueError):
            Login("x", publish=(topic,))
    with pytest.raises(ValueError):
        Login("x y")


async def test_logins_survive_a_restart_and_a_sigkill(broker, admin) -> None:
    await admin.ensure_login(Login("keeper", publish=("k/#",)), "pw-k")
    for stop in (broker.stop, broker.kill):
        stop()
        broker.start()
        client = await asyncio.to_thread(broker.client, "keeper", "pw-k")
        try:
            assert publish_reason(client, "k/1") == ALLOWED
            assert publish_reason(client, "x/1") == DENIED
        finally:
            client.disconnect()
            client.loop_stop()


async def test_admin_reapplies_logins_when_the_broker_comes_back_empty(broker, admin) -> None:
    await admin.ensure_login(Login("phoenix", publish=("p/#",)), "pw-p")
    before = admin.reapplied
    broker.kill()
    broker.dynsec_path().unlink()  # the broker comes back with only the seeded admin login
    broker.start()
    await asyncio.to_thread(wait_until, lambda: admin.reapplied > before, 20, "re-apply")
    client = await asyncio.to_thread(broker.client, "phoenix", "pw-p")
    try:
        assert publish_reason(client, "p/1") == ALLOWED
    finally:
        client.disconnect()
        client.loop_stop()


async def test_unreachable_broker_gives_a_clear_error(tmp_path) -> None:
    from tests.support.processes import free_port

    admin = BrokerAdmin("127.0.0.1", free_port(), "admin", "pw", request_timeout=0.5)
    await admin.start()
    try:
        with pytest.raises(BrokerAccessError, match="did not accept the admin login"):
            await admin.ensure_login(Login("x", publish=("a",)), "pw")
    finally:
        await admin.close()


def retained(broker: LocalBroker, topic: str) -> bytes | None:
    got: list[bytes] = []
    client = broker.client()
    client.on_message = lambda c, u, m: got.append(m.payload)
    client.subscribe(topic, qos=1)
    try:
        wait_until(lambda: got, 3, f"the retained message on {topic}")
    except AssertionError:
        return None
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]


async def test_retained_message_survives_clean_stop_and_sigkill_after_autosave(tmp_path) -> None:
    # autosaveInterval: 1 s here so the test waits for one snapshot; the default is 60 s.
    local = LocalBroker(tmp_path / "state", BrokerSpec(autosave_interval=1)).start()
    try:
        await local_admin_publish(local, "plant/retained/clean", b"v1")
        local.stop()  # clean stop writes the snapshot
        local.start()
        assert retained(local, "plant/retained/clean") == b"v1"

        await local_admin_publish(local, "plant/retained/kill", b"v2")
        db = local.data_dir / "mosquitto.db"
        saved_at = db.stat().st_mtime if db.exists() else 0.0
        # wait for the next autosave after the publish, then crash
        wait_until(lambda: db.exists() and db.stat().st_mtime > saved_at, 10, "an autosave")
        local.kill()
        local.start()
        assert retained(local, "plant/retained/kill") == b"v2"
    finally:
        local.stop()


async def local_admin_publish(broker: LocalBroker, topic: str, payload: bytes) -> None:
    admin = BrokerAdmin(broker.host, broker.port, broker.admin_username, broker.admin_password)
    await admin.start()
    try:
        await admin.ensure_login(Login("retainer", publish=("plant/#",)), "pw-r")
    finally:
        await admin.close()
    client = await asyncio.to_thread(broker.client, "retainer", "pw-r")
    info = client.publish(topic, payload, qos=1, retain=True)
    info.wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


async def test_offline_qos1_consumer_gets_a_burst_beyond_mosquittos_default_limit(broker, admin):
    """mosquitto's default max_queued_messages is 1000; the rendered config keeps 100,000."""
    count = 5000
    await admin.ensure_login(Login("producer", publish=("burst/#",)), "pw-prod")
    await admin.ensure_login(Login("consumer", subscribe=("burst/#",)), "pw-cons")
    consumer_id = f"consumer-{uuid.uuid4().hex[:6]}"
    props = mqtt.Properties(mqtt.PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    consumer = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=consumer_id, protocol=mqtt.MQTTv5)
    consumer.username_pw_set("consumer", "pw-cons")
    consumer.connect(broker.host, broker.port, clean_start=True, properties=props)
    consumer.loop_start()
    wait_until(consumer.is_connected, 5, "consumer connect")
    subscribed = threading.Event()
    consumer.on_subscribe = lambda *a: subscribed.set()
    consumer.subscribe("burst/#", qos=1)
    assert subscribed.wait(5)
    consumer.disconnect()
    consumer.loop_stop()

    producer = await asyncio.to_thread(broker.client, "producer", "pw-prod")
    infos = [producer.publish("burst/n", str(i).encode(), qos=1) for i in range(count)]
    for info in infos:
        info.wait_for_publish(10)
    producer.disconnect()
    producer.loop_stop()

    received: list[int] = []
    lock = threading.Lock()

    def on_message(c, u, m):
        with lock:
            received.append(int(m.payload))

    consumer = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=consumer_id, protocol=mqtt.MQTTv5)
    consumer.username_pw_set("consumer", "pw-cons")
    consumer.on_message = on_message
    consumer.connect(broker.host, broker.port, clean_start=False, properties=props)
    consumer.loop_start()
    try:
        wait_until(lambda: len(set(received)) >= count, 30, f"{count} queued messages")
    finally:
        consumer.disconnect()
        consumer.loop_stop()
    assert sorted(set(received)) == list(range(count))


def test_rendered_config_is_what_mosquitto_runs(broker: LocalBroker) -> None:
    text = broker.config_path.read_text()
    assert "allow_anonymous false" in text
    assert f"listener {broker.port} 127.0.0.1" in text
    assert json.loads(broker.dynsec_path().read_text())["defaultACLAccess"]["subscribe"] is False
    assert time.time()  # the broker started on it: the fixture waited for its port


def test_the_broker_log_survives_a_sigkill(tmp_path: Path) -> None:
    """The log is written line by line: what mosquitto said before a crash is on disk."""
    local = LocalBroker(tmp_path / "state").start()
    assert local.process is not None
    log = local.process.log_path
    try:
        wait_until(
            lambda: "running" in log.read_text(), 10, "mosquitto's start-up lines in its log"
        )
    finally:
        local.process.kill()
    assert "listen socket on port" in log.read_text()


async def test_no_login_can_take_over_another_workloads_client_id(broker: LocalBroker) -> None:
    """Every login the operator makes is bound to its own client id: the read-only demo login
    and a gateway's login cannot connect as the twin, so they can neither kick it off nor
    inherit its persistent session and its subscriptions."""
    admin = BrokerAdmin(broker.host, broker.port, broker.admin_username, broker.admin_password)
    await admin.start()
    try:
        twin, gateway = twin_login(), gateway_login("line-1", ["press-1"], [])
        demo = Login("spine-demo", subscribe=("spine/#",), client_id="spine-demo")
        for login in (twin, gateway, demo):
            await admin.ensure_login(login, f"pw-{login.username}")
        assert await admin.ensure_login(twin, "pw-spine-twin") is False  # nothing to change
    finally:
        await admin.close()
    twin_client = broker.client(
        TWIN_USERNAME, "pw-spine-twin", client_id=TWIN_USERNAME, clean_start=False
    )
    disconnected: list[object] = []
    twin_client.on_disconnect = lambda *args: disconnected.append(args)
    try:
        for username in ("spine-demo", "gateway-line-1"):
            result = await asyncio.to_thread(
                connect_result, broker, username, f"pw-{username}", TWIN_USERNAME
            )
            assert result != "Success", f"{username} connected as the twin"
        assert twin_client.is_connected() and not disconnected
        # Each with its own id, as its workload connects:
        own = await asyncio.to_thread(
            connect_result, broker, "spine-demo", "pw-spine-demo", "spine-demo"
        )
        assert own == "Success"
    finally:
        twin_client.disconnect()
        twin_client.loop_stop()
