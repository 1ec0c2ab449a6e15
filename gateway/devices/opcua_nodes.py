"""Where the OPC UA adapter's signals are on a server, and reading many of them at once.

A signal is configured by NodeId (`ns=3;s="DB_Trace"."Torque"`, or `nsu=<namespace URI>;...`
whose index is looked up on the server) or by browse path from the Objects folder
(`["4:PLC1", "4:MAIN", "4:fTorque"]`). Both are resolved again at every connect: a PLC program
download may renumber nodes, and only the browse names stay. Resolution also reads each node's
DataType, the type its values travel as (what writes must use). A signal that cannot be resolved
keeps the reason as its status ("BadNodeIdUnknown", "BadNoMatch"); the others work on.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, cast

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaStringParsingError

from gateway.config.plc import OpcuaSignal
from gateway.devices.base import DeviceMisconfigured
from gateway.devices.opcua_values import (
    CONFIG_VARIANT,
    NotFinite,
    epoch,
    status_text,
    to_engineering,
    variant_of_datatype,
)
from gateway.events import SignalValue


def std_node(ident: int) -> ua.NodeId:
    """A NodeId of namespace 0 (asyncua annotates identifiers with its own int subclasses)."""
    return ua.NodeId(ua.Int32(ident))


def _b(value: bool) -> ua.Boolean:
    """asyncua annotates booleans with its own `Boolean` class, which no bool is (bool cannot
    be subclassed): a cast for the type checker only."""
    return cast(ua.Boolean, value)


SERVER_STATE: Final = std_node(ObjectIds.Server_ServerStatus_State)  # i=2259
PRODUCT_NAME: Final = std_node(ObjectIds.Server_ServerStatus_BuildInfo_ProductName)
NAMESPACES: Final = std_node(ObjectIds.Server_NamespaceArray)
OBJECTS: Final = std_node(ObjectIds.ObjectsFolder)
HIERARCHICAL: Final = std_node(ObjectIds.HierarchicalReferences)
PATH_END: Final = 0xFFFFFFFF  # BrowsePathTarget.RemainingPathIndex of a fully resolved path
_PATH_ELEMENT: Final = re.compile(r"^(\d+):(.+)$")


@dataclass(frozen=True)
class Target:
    """Where a signal is, as configured: a NodeId or a browse path."""

    node_id: ua.NodeId = field(default_factory=ua.NodeId)
    namespace_uri: str | None = None  # `nsu=` NodeIds: the index is looked up at each connect
    path: ua.RelativePath | None = None


def parse_target(name: str, sig: OpcuaSignal) -> Target:
    """Raises DeviceMisconfigured for a `node` that is no NodeId."""
    if sig.node is not None:
        try:
            node_id = ua.NodeId.from_string(sig.node)
        except (UaStringParsingError, ValueError) as exc:
            raise DeviceMisconfigured(f"signal {name}: {sig.node!r} is not a NodeId") from exc
        plain = ua.NodeId(node_id.Identifier, node_id.NamespaceIndex, node_id.NodeIdType)
        if isinstance(node_id, ua.ExpandedNodeId) and node_id.NamespaceUri:
            return Target(node_id=plain, namespace_uri=node_id.NamespaceUri)
        return Target(node_id=plain)
    assert sig.path is not None  # the config model requires node or path
    elements = []
    for part in sig.path:
        m = _PATH_ELEMENT.match(part)
        qname = ua.QualifiedName(m.group(2), int(m.group(1))) if m else ua.QualifiedName(part, 0)
        elements.append(
            ua.RelativePathElement(
                ReferenceTypeId=HIERARCHICAL,
                IsInverse=_b(False),  # asyncua's default is True
                IncludeSubtypes=_b(True),
                TargetName=qname,
            )
        )
    return Target(path=ua.RelativePath(Elements=elements))


@dataclass
class Node:
    """A signal as resolved on the current connection."""

    name: str
    sig: OpcuaSignal
    node_id: ua.NodeId | None = None
    status: str = "good"
    vtype: ua.VariantType | None = None  # of the node's DataType; None: not a standard type

    @property
    def write_type(self) -> ua.VariantType:
        return self.vtype if self.vtype is not None else CONFIG_VARIANT[self.sig.type]

    @property
    def where(self) -> str:
        return self.sig.node if self.sig.node is not None else "/".join(self.sig.path or ())


async def resolve(
    client: Client, signals: dict[str, OpcuaSignal], targets: dict[str, Target]
) -> tuple[dict[str, Node], str | None]:
    """Every target's NodeId and variant type on this connection, and the server's product
    name: three requests (namespaces and product name, browse paths, DataTypes)."""
    ns_dv, product_dv = await read(client, [NAMESPACES, PRODUCT_NAME])
    namespaces = list(ns_dv.Value.Value or []) if ns_dv.Value is not None else []
    product = product_dv.Value.Value if product_dv.Value is not None else None
    nodes = {name: Node(name, signals[name]) for name in targets}
    paths: list[tuple[str, ua.RelativePath]] = []
    for name, target in targets.items():
        if target.path is not None:
            paths.append((name, target.path))
        elif target.namespace_uri is None:
            nodes[name].node_id = target.node_id
        elif target.namespace_uri in namespaces:
            index = ua.Int16(namespaces.index(target.namespace_uri))
            nodes[name].node_id = dataclasses.replace(target.node_id, NamespaceIndex=index)
        else:
            nodes[name].status = f"namespace {target.namespace_uri} not on the server"
    if paths:
        results = await client.uaclient.translate_browsepaths_to_nodeids(
            [ua.BrowsePath(StartingNode=OBJECTS, RelativePath=path) for _, path in paths]
        )
        for (name, _), result in zip(paths, results, strict=True):
            ends = [t.TargetId for t in result.Targets if t.RemainingPathIndex == PATH_END]
            if not result.StatusCode.is_good() or not ends:
                status = status_text(result.StatusCode)
                nodes[name].status = "BadNoMatch" if status == "good" else status
            else:
                nodes[name].node_id = ua.NodeId(
                    ends[0].Identifier, ends[0].NamespaceIndex, ends[0].NodeIdType
                )
    found = [n for n in nodes.values() if n.node_id is not None]
    if found:
        types = await read(client, [n.node_id for n in found], AttributeIds.DataType)
        for node, dv in zip(found, types, strict=True):
            node.status = status_text(dv.StatusCode)
            if node.status == "good" and dv.Value is not None:
                node.vtype = variant_of_datatype(dv.Value.Value)
    return nodes, product if isinstance(product, str) else None


async def read(
    client: Client,
    node_ids: Sequence[ua.NodeId | None],
    attr: AttributeIds = AttributeIds.Value,
) -> list[ua.DataValue]:
    """One Read request, both timestamps returned."""
    params = ua.ReadParameters(
        TimestampsToReturn=ua.TimestampsToReturn.Both,
        NodesToRead=[ua.ReadValueId(NodeId=n, AttributeId=attr) for n in node_ids],
    )
    return await client.uaclient.read(params)


async def read_values(
    client: Client, nodes: dict[str, Node], names: Sequence[str]
) -> list[SignalValue]:
    """The values of `names` in one Read request (unresolved ones with their status)."""
    readable = [nodes[n] for n in names if nodes[n].node_id is not None]
    dvs = await read(client, [n.node_id for n in readable]) if readable else []
    got = {node.name: signal_value(node, dv) for node, dv in zip(readable, dvs, strict=True)}
    return [got.get(n) or SignalValue(n, None, nodes[n].status) for n in names]


def signal_value(node: Node, dv: ua.DataValue) -> SignalValue:
    status = status_text(dv.StatusCode)
    src, srv = epoch(dv.SourceTimestamp), epoch(dv.ServerTimestamp)
    if status != "good":
        return SignalValue(node.name, None, status, src, srv)
    raw = dv.Value.Value if dv.Value is not None else None
    try:
        value = to_engineering(raw, node.sig, node.vtype)
    except NotFinite as exc:
        return SignalValue(node.name, None, str(exc), src, srv)
    return SignalValue(node.name, value, "good", src, srv)
