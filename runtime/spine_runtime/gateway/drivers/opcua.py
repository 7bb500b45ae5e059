"""OPC UA driver on asyncua: subscriptions for `subscribe` tags, one Read per poll group.

The connection runner drives it. Subscribed tags are grouped into one subscription per
publishing interval (it belongs to the subscription), with one monitored item per node,
sampling interval and queue size. All notifications of one publish response become one batch,
so the pipeline sends one update per thing for it. asyncua's own watchdog reads the server
state every second, which is polling: it is switched off, and a dead session shows instead as
a subscription with no publish response (keep-alives are requested every few seconds) or as a
failed Read.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from asyncua import Client, Node, ua
from asyncua.crypto import security_policies

from spine_runtime.config.gateway import EffectiveSubscription, effective_subscription
from spine_runtime.gateway.addresses import OpcUaAddress
from spine_runtime.gateway.drivers.base import (
    BoundTag,
    ConnectionLost,
    Deliver,
    Driver,
    PeerRefused,
    PollGroup,
    Reading,
)

log = logging.getLogger(__name__)

WATCHDOG_OFF_SECONDS = 24 * 3600.0
KEEPALIVE_SECONDS = 5.0  # the server sends an empty publish response at least this often
READ_CHUNK = 500  # nodes per Read request; servers limit MaxNodesPerRead, often to 1000+
REFUSALS = {
    "BadUserAccessDenied",
    "BadIdentityTokenInvalid",
    "BadIdentityTokenRejected",
    "BadSecurityPolicyRejected",
    "BadSecurityModeRejected",
    "BadCertificateUntrusted",
    "BadCertificateInvalid",
    "BadCertificateRevoked",
    "BadSecurityChecksFailed",
}
UA_ERRORS: tuple[type[BaseException], ...] = (
    ua.UaError,
    OSError,
    asyncio.TimeoutError,
    ConnectionError,
)


def node_id_of(tag: BoundTag) -> str:
    location = tag.address.location
    assert isinstance(location, OpcUaAddress)
    return location.node_id


def unix_time(moment: datetime.datetime | None) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def coerce_for_variant(raw: Any, variant_type: ua.VariantType) -> Any:
    """The Python value asyncua encodes as `variant_type` (servers reject type mismatches)."""
    if variant_type is ua.VariantType.Boolean:
        if not isinstance(raw, bool):
            raise ValueError(f"{raw!r} is not a boolean")
        return raw
    if variant_type in (ua.VariantType.Float, ua.VariantType.Double):
        return float(raw)
    if variant_type is ua.VariantType.String:
        return str(raw)
    if isinstance(raw, float):
        if not raw.is_integer():
            raise ValueError(f"{raw} is not a whole number for {variant_type.name}")
        return int(raw)
    return raw


class _SubscriptionHandler:
    """asyncua calls these from its publish loop; they only collect and hand over."""

    def __init__(self, driver: OpcUaDriver) -> None:
        self.driver = driver

    def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        self.driver.notification(node, data)

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        self.driver.failure = f"the server ended the subscription: {status.Status.name}"


class OpcUaDriver(Driver):
    protocol = "opcua"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = self.connection.opcua
        assert settings is not None
        self.settings = settings
        self.client: Client | None = None
        self.nodes: dict[str, Node] = {}  # configured NodeId text -> node, namespace resolved
        self.unresolved: dict[str, str] = {}  # configured NodeId text -> why it has no node
        self.variant_types: dict[str, ua.VariantType] = {}
        # (node id, sampling interval, queue size) -> tags fed by that monitored item
        self.monitored: dict[tuple[str, float, int], list[BoundTag]] = {}
        self.batch: list[Reading] = []
        self.batches: asyncio.Queue[list[Reading]] = asyncio.Queue()
        self.flush_scheduled = False
        self.failure: str | None = None
        self.subscriptions: list[Any] = []

    async def connect(self) -> None:
        settings = self.settings
        client = Client(
            settings.endpoint, timeout=settings.timeout, watchdog_intervall=WATCHDOG_OFF_SECONDS
        )
        longest_poll = max((group.interval for group in self.group_by_interval()), default=0)
        # The server drops a session that is silent this long: long enough for the slowest
        # poll group, short enough that a killed gateway's sessions do not pile up.
        client.session_timeout = max(120_000, int(longest_poll * 4000))
        if settings.username_file is not None and settings.password_file is not None:
            client.set_user(settings.username_file.read_text().strip())
            client.set_password(settings.password_file.read_text().strip())
        if settings.security_policy != "None":
            policy = getattr(
                security_policies, "SecurityPolicy" + settings.security_policy.replace("_", "")
            )
            await client.set_security(
                policy,
                certificate=str(settings.certificate_file),
                private_key=str(settings.private_key_file),
                server_certificate=(
                    str(settings.server_certificate_file)
                    if settings.server_certificate_file
                    else None
                ),
                mode=getattr(ua.MessageSecurityMode, settings.security_mode),
            )
        self.client = client
        try:
            async with asyncio.timeout(settings.timeout * 3):
                await client.connect()
        except ua.UaStatusCodeError as error:
            name = ua.StatusCode(error.code).name
            message = f"the OPC UA server {settings.endpoint} refused the session: {name}"
            raise (PeerRefused if name in REFUSALS else ConnectionLost)(message) from error
        except Exception as error:  # asyncua raises many kinds on a failed connect
            raise ConnectionLost(
                f"cannot connect to OPC UA server {settings.endpoint}: "
                f"{error or type(error).__name__}"
            ) from error
        try:
            await self._resolve_nodes(client)
        except UA_ERRORS as error:
            raise ConnectionLost(f"reading the server's namespace array failed: {error}") from error
        self.groups = self.group_by_interval()

    async def _resolve_nodes(self, client: Client) -> None:
        """Nodes for the configured NodeIds; `nsu=<uri>` becomes the index the server uses
        today (indexes may change when a server is reconfigured, URIs do not)."""
        namespaces: list[str] | None = None
        self.nodes, self.unresolved = {}, {}
        for text in {node_id_of(tag) for tag in self.tags}:
            node_id = ua.NodeId.from_string(text)
            uri = getattr(node_id, "NamespaceUri", None)
            if uri:
                if namespaces is None:
                    namespaces = await client.get_namespace_array()
                if uri not in namespaces:
                    self.unresolved[text] = f"the server has no namespace {uri}"
                    continue
                node_id = ua.NodeId(
                    node_id.Identifier, ua.Int16(namespaces.index(uri)), node_id.NodeIdType
                )
            self.nodes[text] = client.get_node(node_id)

    def unresolved_readings(self, tags: Sequence[BoundTag]) -> list[Reading]:
        return [
            Reading(tag, error=self.unresolved[node_id_of(tag)], reason="bad_address")
            for tag in tags
            if node_id_of(tag) in self.unresolved
        ]

    async def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            try:
                async with asyncio.timeout(2):
                    await client.disconnect()
            except Exception:  # the session may be half gone already; it is being dropped
                log.debug(
                    "Closing OPC UA session of %s failed", self.connection.name, exc_info=True
                )

    def reading_of(self, tag: BoundTag, data_value: ua.DataValue) -> Reading:
        now = time.time()
        status = data_value.StatusCode
        source = unix_time(data_value.SourceTimestamp) or unix_time(data_value.ServerTimestamp)
        source_time = source if source is not None and math.isfinite(source) else now
        if status is not None and not status.is_good():
            return Reading(
                tag, error=f"the server reports {status.name}", reason="bad_status", source_time=now
            )
        variant = data_value.Value
        if variant is not None and variant.VariantType is not ua.VariantType.Null:
            self.variant_types[node_id_of(tag)] = variant.VariantType
        value = variant.Value if variant is not None else None
        return Reading(tag, value, source_time=source_time)

    async def _read(self, tags: Sequence[BoundTag]) -> list[Reading]:
        client = self.client
        if client is None:
            raise ConnectionLost("not connected")
        readings = self.unresolved_readings(tags)
        tags = [tag for tag in tags if node_id_of(tag) not in self.unresolved]
        for first in range(0, len(tags), READ_CHUNK):
            chunk = tags[first : first + READ_CHUNK]
            started = time.monotonic()
            try:
                values = await client.read_attributes([self.nodes[node_id_of(t)] for t in chunk])
            except UA_ERRORS as error:
                self.record_read(False, time.monotonic() - started)
                raise ConnectionLost(
                    f"OPC UA Read failed: {error or type(error).__name__}"
                ) from error
            self.record_read(True, time.monotonic() - started)
            readings += [
                self.reading_of(tag, value) for tag, value in zip(chunk, values, strict=True)
            ]
        return readings

    async def poll(self, group: PollGroup) -> list[Reading]:
        readings = await self._read(group.tags)
        group.requests_last_cycle = math.ceil(len(group.tags) / READ_CHUNK)
        return readings

    # Subscriptions ----------------------------------------------------------------------

    def notification(self, node: Node, data: Any) -> None:
        item = data.subscription_data
        key = (node.nodeid.to_string(), float(item.sampling_interval), int(item.queuesize))
        for tag in self.monitored.get(key, []):
            self.batch.append(self.reading_of(tag, data.monitored_item.Value))
        if not self.flush_scheduled:
            # asyncua hands over each notification in its own task, all scheduled at once for
            # one publish response: flushing after them collects the whole response.
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.batch:
            batch, self.batch = self.batch, []
            self.batches.put_nowait(batch)

    async def run_subscriptions(self, deliver: Deliver) -> None:
        client = self.client
        assert client is not None
        subscribed = [tag for tag in self.tags if tag.subscribed]
        if not subscribed:
            await asyncio.Event().wait()
        by_interval: dict[float, list[BoundTag]] = {}
        for tag in subscribed:
            if node_id_of(tag) in self.unresolved:
                continue
            by_interval.setdefault(self.subscription_of(tag).publishing_interval, []).append(tag)
        failed = self.unresolved_readings(subscribed)
        try:
            for interval, tags in sorted(by_interval.items()):
                failed += await self._subscribe(client, interval, tags)
        except UA_ERRORS as error:
            raise ConnectionLost(f"creating subscriptions failed: {error}") from error
        if failed:
            await deliver(failed)
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns a result that lands
            # in the same loop step as a cancel and loses the cancel, so the runner could not
            # stop this loop (issue 10).
            batch = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    batch = await self.batches.get()
            if batch:
                self.metrics.notifications.labels(self.connection.name).inc(len(batch))
                await deliver(batch)
            if self.failure:
                raise ConnectionLost(self.failure)
            for subscription, stale_after in self.subscriptions:
                last = subscription.last_publish_at
                if last is not None and time.monotonic() - last > stale_after:
                    raise ConnectionLost(
                        f"no publish response from the server for {stale_after:.0f} s"
                    )

    def subscription_of(self, tag: BoundTag) -> EffectiveSubscription:
        assert tag.config.subscribe is not None
        return effective_subscription(tag.config.subscribe, self.settings.subscription)

    async def _subscribe(
        self, client: Client, interval: float, tags: list[BoundTag]
    ) -> list[Reading]:
        keepalive = max(1, math.ceil(KEEPALIVE_SECONDS * 1000 / interval))
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=interval,
            RequestedLifetimeCount=keepalive * 4,
            RequestedMaxKeepAliveCount=keepalive,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        subscription = await client.create_subscription(params, _SubscriptionHandler(self))
        revised = subscription.parameters.RequestedPublishingInterval or interval
        stale_after = 2 * keepalive * revised / 1000 + self.settings.timeout
        self.subscriptions.append((subscription, stale_after))
        items: dict[tuple[float, int], dict[str, list[BoundTag]]] = {}
        for tag in tags:
            settings = self.subscription_of(tag)
            items.setdefault(
                (float(settings.sampling_interval), settings.queue_size), {}
            ).setdefault(node_id_of(tag), []).append(tag)
        failed: list[Reading] = []
        for (sampling, queue_size), by_node in items.items():
            for node_id, node_tags in by_node.items():
                # notifications name the node as the server knows it: key by that
                key = (self.nodes[node_id].nodeid.to_string(), sampling, queue_size)
                self.monitored.setdefault(key, []).extend(node_tags)
            node_ids = list(by_node)
            results = await subscription.subscribe_data_change(
                [self.nodes[node_id] for node_id in node_ids],
                queuesize=queue_size,
                sampling_interval=ua.Double(sampling),
            )
            for node_id, result in zip(node_ids, results, strict=True):
                if isinstance(result, ua.StatusCode):
                    failed += [
                        Reading(
                            tag,
                            error=f"the server refused to monitor it: {result.name}",
                            reason="bad_status",
                        )
                        for tag in by_node[node_id]
                    ]
        return failed

    # Writes -----------------------------------------------------------------------------

    async def write(self, tag: BoundTag, raw: Any) -> None:
        client = self.client
        if client is None:
            raise ConnectionLost("not connected")
        if node_id_of(tag) in self.unresolved:
            raise ValueError(self.unresolved[node_id_of(tag)])
        node = self.nodes[node_id_of(tag)]
        try:
            variant_type = await self._variant_type(tag, node)
            value = coerce_for_variant(raw, variant_type)
            await node.write_value(ua.DataValue(ua.Variant(value, variant_type)))
        except ua.UaStatusCodeError as error:
            raise ValueError(
                f"the server refused the write to {node_id_of(tag)}: "
                f"{ua.StatusCode(error.code).name}"
            ) from error
        except UA_ERRORS as error:
            raise ConnectionLost(f"OPC UA Write failed: {error}") from error

    async def _variant_type(self, tag: BoundTag, node: Node) -> ua.VariantType:
        if tag.address.value_type is not None:
            return ua.VariantType[tag.address.value_type.name]
        known = self.variant_types.get(node_id_of(tag))
        if known is None:
            known = await node.read_data_type_as_variant_type()
            self.variant_types[node_id_of(tag)] = known
        return known

    async def read_back(self, tag: BoundTag) -> Reading:
        return (await self._read([tag]))[0]
