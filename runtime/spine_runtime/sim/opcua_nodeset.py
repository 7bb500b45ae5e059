"""The trimmed OPC UA standard address space the press simulator serves, and its generator.

asyncua's server loads the whole standard nodeset (6,000 nodes from 25 generated modules,
about 50 MiB of the simulator's memory). A PLC's clients need far less: the folders, the
`Server` object (namespace array, status, capabilities), every ReferenceType (for browsing),
the built-in DataTypes, `BaseEventType`, and the types and data types those nodes name. This
module picks that subset once (`python -m spine_runtime.sim.opcua_nodeset` writes it, OPC UA
binary-encoded and compressed, to `opcua_nodeset.bin`; a unit test fails when it is stale), and
`TrimmedInternalServer` loads it instead of asyncua's modules. Type nodes come without their
instance declarations: a client that browses, say, `ServerType` finds no children.
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.server.internal_server import InternalServer
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary

NODESET_FILE = Path(__file__).with_name("opcua_nodeset.bin")

# Forward references that make a node part of its parent's tree (children come with it).
CHILD_REFERENCES = {
    ua.ObjectIds.HasComponent,
    ua.ObjectIds.HasOrderedComponent,
    ua.ObjectIds.HasProperty,
    ua.ObjectIds.Organizes,
}
# Served with everything below them: asyncua's server writes into the Server object's tree
# (status, namespace array, operation limits), and event filters name BaseEventType's fields.
WHOLE_TREES = (ua.ObjectIds.Server, ua.ObjectIds.BaseEventType)
# Parts of the Server object for features asyncua's server does not implement (role and
# certificate management, PubSub, ...): their methods do nothing, so they go, two thirds of it.
UNIMPLEMENTED = (
    ua.ObjectIds.Server_ServerCapabilities_RoleSet,
    ua.ObjectIds.ServerConfiguration,
    ua.ObjectIds.PublishSubscribe,
    ua.ObjectIds.Resources,
    ua.ObjectIds.ServerLog,
    ua.ObjectIds.DefaultHAConfiguration,
    ua.ObjectIds.DefaultHEConfiguration,
)
# The built-in data types and their abstract bases (Number, Integer, Enumeration, ...) have the
# lowest ids; other data types are served when a served node names them.
LAST_BUILT_IN_DATA_TYPE = 30
# Served without their children, except the type nodes organized in the type folders (and,
# from the Root folder, the folders themselves): the Objects folder then holds only Server.
FOLDERS = (
    ua.ObjectIds.RootFolder,
    ua.ObjectIds.ObjectsFolder,
    ua.ObjectIds.TypesFolder,
    ua.ObjectIds.ViewsFolder,
    ua.ObjectIds.ObjectTypesFolder,
    ua.ObjectIds.VariableTypesFolder,
    ua.ObjectIds.DataTypesFolder,
    ua.ObjectIds.ReferenceTypesFolder,
)
TYPE_CLASSES = {
    ua.NodeClass.ObjectType,
    ua.NodeClass.VariableType,
    ua.NodeClass.DataType,
    ua.NodeClass.ReferenceType,
}


def standard_node_id(identifier: int) -> ua.NodeId:
    return ua.NodeId(ua.Int32(identifier), ua.Int16(0))


class _Recorder:
    """Stands in for asyncua's node management service while its generated modules run."""

    def __init__(self) -> None:
        self.nodes: list[ua.AddNodesItem] = []
        self.references: list[ua.AddReferencesItem] = []

    def add_nodes(self, items: list[ua.AddNodesItem]) -> None:
        self.nodes.extend(items)

    def add_references(self, references: list[ua.AddReferencesItem]) -> None:
        self.references.extend(references)


def select_nodes(
    nodes: list[ua.AddNodesItem], references: list[ua.AddReferencesItem]
) -> tuple[list[ua.AddNodesItem], list[ua.AddReferencesItem]]:
    """The served subset of the standard nodes, and the references between them."""
    by_id = {node.RequestedNewNodeId: node for node in nodes}
    children: dict[ua.NodeId, list[ua.NodeId]] = defaultdict(list)
    properties: dict[ua.NodeId, list[ua.NodeId]] = defaultdict(list)
    related: dict[ua.NodeId, list[ua.NodeId]] = defaultdict(list)  # type definition, supertype
    for reference in references:
        source, target = reference.SourceNodeId, reference.TargetNodeId
        if not reference.IsForward:
            source, target = target, source
        kind = reference.ReferenceTypeId.Identifier
        if kind in CHILD_REFERENCES:
            children[source].append(target)
            if kind == ua.ObjectIds.HasProperty:
                properties[source].append(target)
        elif kind == ua.ObjectIds.HasTypeDefinition:
            related[source].append(target)
        elif kind == ua.ObjectIds.HasSubtype:
            related[target].append(source)
    for node in nodes:
        data_type = getattr(node.NodeAttributes, "DataType", None)
        if isinstance(data_type, ua.NodeId) and not data_type.is_null():
            related[node.RequestedNewNodeId].append(data_type)
        if node.NodeClass == ua.NodeClass.DataType:
            # A data type comes with its EnumStrings, EnumValues or OptionSetValues.
            related[node.RequestedNewNodeId] += properties[node.RequestedNewNodeId]

    keep: set[ua.NodeId] = set()
    for node in nodes:
        node_id = node.RequestedNewNodeId
        if node.NodeClass == ua.NodeClass.ReferenceType or (
            node.NodeClass == ua.NodeClass.DataType
            and node_id.NamespaceIndex == 0
            and isinstance(node_id.Identifier, int)
            and node_id.Identifier <= LAST_BUILT_IN_DATA_TYPE
        ):
            keep.add(node_id)
    for folder in map(standard_node_id, FOLDERS):
        keep.add(folder)
        for child in children[folder]:
            child_class = by_id[child].NodeClass if child in by_id else None
            if child_class in TYPE_CLASSES or child.Identifier in FOLDERS:
                keep.add(child)
    left_out = set(map(standard_node_id, UNIMPLEMENTED))
    pending = [standard_node_id(root) for root in WHOLE_TREES]
    while pending:
        node_id = pending.pop()
        if node_id not in keep and node_id not in left_out:
            keep.add(node_id)
            pending += children[node_id]
    pending = list(keep)
    while pending:
        for type_id in related[pending.pop()]:
            if type_id not in keep:
                keep.add(type_id)
                pending.append(type_id)
    keep &= by_id.keys()
    return (
        [node for node in nodes if node.RequestedNewNodeId in keep],
        [
            reference
            for reference in references
            if reference.SourceNodeId in keep and reference.TargetNodeId in keep
        ],
    )


def build_nodeset() -> bytes:
    """Run asyncua's generated standard nodeset against a recorder; the encoded subset."""
    from asyncua.server.standard_address_space import standard_address_space_services

    recorder = _Recorder()
    standard_address_space_services.create_standard_address_space_Services(recorder)
    nodes, references = select_nodes(recorder.nodes, recorder.references)
    for node in nodes:
        attributes = node.NodeAttributes
        # A few generated values are bare lists; asyncua wraps them in a Variant when it adds
        # the node, and the binary encoding needs that Variant now.
        if hasattr(attributes, "Value") and not isinstance(attributes.Value, ua.Variant):
            attributes.Value = ua.Variant(attributes.Value)
    return encode(nodes, references)


def encode(nodes: list[ua.AddNodesItem], references: list[ua.AddReferencesItem]) -> bytes:
    node_part = struct_to_binary(ua.AddNodesParameters(NodesToAdd=nodes))
    reference_part = struct_to_binary(ua.AddReferencesParameters(ReferencesToAdd=references))
    # zlib stores no timestamp or file name: the same nodes give the same file.
    return zlib.compress(struct.pack("<I", len(node_part)) + node_part + reference_part, 9)


def decode(blob: bytes) -> tuple[list[ua.AddNodesItem], list[ua.AddReferencesItem]]:
    data = zlib.decompress(blob)
    (node_length,) = struct.unpack_from("<I", data)
    nodes = struct_from_binary(ua.AddNodesParameters, Buffer(data[4 : 4 + node_length]))
    references = struct_from_binary(ua.AddReferencesParameters, Buffer(data[4 + node_length :]))
    return list(nodes.NodesToAdd), list(references.ReferencesToAdd)


def add_to(node_service: Any, nodes: Iterable[ua.AddNodesItem], references: list[Any]) -> None:
    """Add nodes in any order (a node can name a type that comes later), then references."""
    remaining = list(nodes)
    while remaining:
        failed = list(node_service.try_add_nodes(remaining, check=False))
        if len(failed) == len(remaining):
            raise RuntimeError(f"{len(failed)} nodes cannot be added, e.g. {failed[0]}")
        remaining = failed
    failed_references = list(node_service.try_add_references(references))
    if failed_references:
        raise RuntimeError(f"{len(failed_references)} references cannot be added")


class TrimmedInternalServer(InternalServer):
    """asyncua's internal server with the trimmed standard address space."""

    async def load_standard_address_space(self, shelf_file: Path | None = None) -> None:
        nodes, references = decode(NODESET_FILE.read_bytes())
        add_to(self.node_mgt_service, nodes, references)


def main() -> int:
    NODESET_FILE.write_bytes(build_nodeset())
    nodes, references = decode(NODESET_FILE.read_bytes())
    sys.stderr.write(f"Wrote {NODESET_FILE}: {len(nodes)} nodes, {len(references)} references\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
