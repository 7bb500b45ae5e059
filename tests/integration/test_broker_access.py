"""Broker access end to end: the login's Secret in the (emulated) cluster, its ACL on the real
broker. This is the call every later kind makes for its workloads."""

from __future__ import annotations

import asyncio

import pytest

from spine_operator import labels
from spine_operator.api.kinds import API_VERSION
from spine_operator.brokeraccess import BrokerAccess
from spine_operator.desired.broker import build_admin_secret
from spine_operator.desired.common import secret_values
from spine_operator.desired.logins import Login
from spine_operator.errors import SpineNotFound
from spine_operator.k8s import Kubernetes
from tests.integration.test_broker import ALLOWED, DENIED, connect_result, publish_reason

pytestmark = pytest.mark.integration


@pytest.fixture
async def access(cluster, broker):
    k8s = Kubernetes()
    spine = await k8s.create(
        {
            "apiVersion": API_VERSION,
            "kind": "Spine",
            "metadata": {"name": "default", "namespace": "plant-a"},
            "spec": {},
        }
    )
    await k8s.create(build_admin_secret("plant-a", "default", broker.admin_password))
    broker_access = BrokerAccess(k8s, broker.env)
    yield broker_access, spine
    await broker_access.close()


async def test_login_secret_is_created_once_and_the_acl_is_enforced(access, broker) -> None:
    broker_access, owner = access
    k8s = broker_access.k8s
    login = Login("gateway-line-1", publish=("spine/things/press-1/twin",))
    assert await broker_access.ensure_login("plant-a", login, owner) is True
    name = labels.login_secret_name("gateway-line-1")
    secret = await k8s.get("v1", "Secret", "plant-a", name)
    values = secret_values(secret)
    assert values["username"] == "gateway-line-1" and len(values["password"]) >= 24
    assert values["host"] == "127.0.0.1" and values["port"] == str(broker.port)
    assert secret["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]

    client = await asyncio.to_thread(broker.client, values["username"], values["password"])
    try:
        assert publish_reason(client, "spine/things/press-1/twin") == ALLOWED
        assert publish_reason(client, "spine/things/press-2/twin") == DENIED
    finally:
        client.disconnect()
        client.loop_stop()

    # again, with a wider ACL: the same Secret and password, the new ACL in place
    wider = Login("gateway-line-1", publish=("spine/things/+/twin",))
    assert await broker_access.ensure_login("plant-a", wider, owner) is True
    assert secret_values(await k8s.get("v1", "Secret", "plant-a", name)) == values
    client = await asyncio.to_thread(broker.client, values["username"], values["password"])
    try:
        assert publish_reason(client, "spine/things/press-2/twin") == ALLOWED
    finally:
        client.disconnect()
        client.loop_stop()

    await broker_access.remove_login("plant-a", "gateway-line-1")
    assert connect_result(broker, values["username"], values["password"]) == "Not authorized"


async def test_namespace_without_a_spine_is_a_clear_error(cluster, broker) -> None:
    broker_access = BrokerAccess(Kubernetes(), broker.env)
    with pytest.raises(SpineNotFound, match="Namespace plant-z has no Spine"):
        await broker_access.ensure_login(
            "plant-z",
            Login("x", publish=("a",)),
            {
                "apiVersion": API_VERSION,
                "kind": "Spine",
                "metadata": {"name": "default", "uid": "u"},
            },
        )
