"""The press simulator's trimmed OPC UA standard address space (`spine_runtime.sim.opcua_nodeset`).

The file it loads is generated from asyncua's own standard nodeset: it must match what the
generator gives with the asyncua installed, and hold the nodes asyncua's server writes at start
and a PLC client reads. The simulator's integration tests (tests/integration/test_sim.py) and the
gateway's OPC UA tests check the served space with real clients.
"""

from __future__ import annotations

import zlib

from asyncua import Server, ua

from spine_runtime.sim.opcua_nodeset import (
    NODESET_FILE,
    TrimmedInternalServer,
    build_nodeset,
    decode,
)


def test_the_packaged_nodeset_matches_its_generator() -> None:
    # Compared uncompressed: another zlib build may compress the same bytes differently.
    packaged, generated = NODESET_FILE.read_bytes(), build_nodeset()
    assert zlib.decompress(packaged) == zlib.decompress(generated), (
        "runtime/spine_runtime/sim/opcua_nodeset.bin is stale: regenerate it with "
        "`python -m spine_runtime.sim.opcua_nodeset`"
    )


def test_the_nodeset_keeps_what_servers_and_clients_use_and_drops_the_rest() -> None:
    nodes, references = decode(NODESET_FILE.read_bytes())
    served = {node.RequestedNewNodeId for node in nodes}
    for needed in (
        ua.ObjectIds.Server_NamespaceArray,
        ua.ObjectIds.Server_ServerStatus_State,
        ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
        ua.ObjectIds.BaseDataVariableType,
        ua.ObjectIds.PropertyType,
        ua.ObjectIds.FolderType,
        ua.ObjectIds.HierarchicalReferences,
        ua.ObjectIds.UInt16,
        ua.ObjectIds.ServerStatusDataType,
        ua.ObjectIds.ServerState_EnumStrings,
        ua.ObjectIds.BaseEventType_Severity,
    ):
        assert ua.NodeId(needed) in served, ua.ObjectIds.__dict__.get(needed, needed)
    for dropped in (
        ua.ObjectIds.AlarmConditionType,
        ua.ObjectIds.PubSubConnectionType,
        ua.ObjectIds.Server_ServerCapabilities_RoleSet,
        ua.ObjectIds.ServerConfiguration,
        ua.ObjectIds.AggregateFunction_Average,
    ):
        assert ua.NodeId(dropped) not in served, ua.ObjectIds.__dict__.get(dropped, dropped)
    assert all(r.SourceNodeId in served and r.TargetNodeId in served for r in references)
    assert len(nodes) < 500


async def test_a_server_starts_on_the_trimmed_space_and_serves_its_own_nodes() -> None:
    server = Server(iserver=TrimmedInternalServer())
    await server.init()
    namespace = await server.register_namespace("urn:test")
    press = await server.nodes.objects.add_object(namespace, "Press")
    speed = await press.add_variable(namespace, "speed", ua.Variant(30, ua.VariantType.UInt16))
    assert await speed.read_data_type_as_variant_type() == ua.VariantType.UInt16
    namespaces = await server.get_namespace_array()
    assert namespaces[0] == "http://opcfoundation.org/UA/"
    assert namespaces[namespace] == "urn:test"
    children = await server.nodes.objects.get_children()
    assert {(await child.read_browse_name()).Name for child in children} == {"Server", "Press"}
