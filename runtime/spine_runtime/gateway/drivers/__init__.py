"""Protocol drivers: one per protocol, each on a well-kept library.

`make_driver` is what the connection runner calls; each driver module is imported only when a
connection uses it, so a gateway with Modbus devices alone never loads asyncua.
"""

from __future__ import annotations

from spine_runtime.config.gateway import Connection
from spine_runtime.gateway.addresses import Protocol
from spine_runtime.gateway.drivers.base import BoundTag, Driver
from spine_runtime.gateway.metrics import GatewayMetrics


def make_driver(connection: Connection, tags: list[BoundTag], metrics: GatewayMetrics) -> Driver:
    if connection.protocol is Protocol.MODBUS_TCP:
        from spine_runtime.gateway.drivers.modbus import ModbusDriver

        return ModbusDriver(connection, tags, metrics)
    if connection.protocol is Protocol.OPCUA:
        from spine_runtime.gateway.drivers.opcua import OpcUaDriver

        return OpcUaDriver(connection, tags, metrics)
    from spine_runtime.gateway.drivers.s7 import S7Driver

    return S7Driver(connection, tags, metrics)
