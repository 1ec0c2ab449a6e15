"""OPC UA PLC simulator: an asyncua `Server` holding one station's PLC variables exactly where a
device profile says they are, so every profile is tested against it with the same signal names,
types and addresses the gateway uses.

Layout, from the profile's signals: a `node` with a string identifier is created at that NodeId,
under objects named by its dotted prefixes (`ns=3;s="DB_Trace"."Torque"` -> object
`"DB_Trace"`, browse names `3:DB_Trace` / `3:Torque`, the Siemens style; `s=MAIN.fTorque` the
TwinCAT style), below the vendor's own objects (`PLC_1/DataBlocksGlobal`, `PLC1`); an `nsu=`
NodeId in the namespace of that URI. A `path` is created along its browse names from Objects,
with numeric NodeIds that a program download renumbers (`download_program`). Namespaces are
registered with the vendor's URIs where known, up to the highest index used. Writable signals
are writable over OPC UA; the others refuse writes.

The PLC's memory (`memory`, the `simulators.plc_model.Memory` the station program runs on) is
the PLC's own: its OPC UA server mirrors it, with source timestamps from the PLC's clock (`clock`)
and server timestamps from the server's. A restart of the OPC UA server leaves it as it was; the
gateway's writes (ack, verdict) land in it.

    async with OpcuaPlcSim("plcs/siemens-s7-1500") as sim:     # 127.0.0.1, a free port
        sim.endpoint                                           # opc.tcp://127.0.0.1:<port>/
        async with sim.running_program(CycleSpec(mode="handshake")) as program:
            ...                                                # program.truth: what happened
        await sim.put("request", True)   # PLC memory, and wait until the node holds it
        await sim.restart()      # stop and start on the same port
        await sim.kill()         # vanish at once (connections reset); start() brings it back
        sim.pause(); sim.resume()            # stop answering (reads and writes hang)
        sim.slow(0.5)                        # every read and write takes 0.5 s longer
        await sim.download_program()         # path nodes renumbered (live, or restart=True)

    python -m simulators.plc_opcua --profile plcs/siemens-s7-1500 --port 4840 --cycle-time 1

Counters for tests: `sessions_created` (CreateSession requests), `activations` (ActivateSession
attempts, refused ones included), `refused`, `monitored` (monitored items created, by signal);
`writes` lists the gateway's writes with the variant type they came in.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, cast

import yaml
from asyncua import ua
from asyncua.common.callback import CallbackType, ServerItemCallback
from asyncua.common.node import Node
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.config.loader import bundled_profiles_dir
from gateway.config.plc import OpcuaSignal
from simulators import cli
from simulators.plc_model import CycleSpec, StationProgram

DI: Final = "http://opcfoundation.org/UA/DI/"


@dataclass(frozen=True)
class Vendor:
    """How a vendor's server lays out the PLC: namespace URIs from index 2 (the PLC's last),
    and the objects (string identifier, browse name) the PLC's variables hang under."""

    namespaces: tuple[str, ...] = ()
    root: tuple[tuple[str, str], ...] = ()
    product: str = "Tracegate PLC simulator"


VENDORS: Final[dict[str, Vendor]] = {
    "plcs/siemens-s7-1500": Vendor(
        (DI, "http://www.siemens.com/simatic-s7-opcua"),
        (("PLC", "PLC_1"), ("DataBlocksGlobal", "DataBlocksGlobal")),
        "SIMATIC S7-1500 OPC UA server (simulated)",
    ),
    "plcs/beckhoff-twincat3": Vendor(
        (DI, "http://PLCopen.org/OpcUa/IEC61131-3/", "urn:BeckhoffAutomation:Ua:PLC1"),
        (("PLC1", "PLC1"),),
        "TwinCAT OPC UA Server (simulated)",
    ),
}
NULL_TIME: Final = datetime(1601, 1, 1, tzinfo=UTC)
# What each profile type is in the PLC, written here rather than taken from the adapter so that
# the simulator stays an independent oracle for it.
PLC_TYPES: Final[dict[str, ua.VariantType]] = {
    "bool": ua.VariantType.Boolean,
    "int8": ua.VariantType.SByte,
    "uint8": ua.VariantType.Byte,
    "int16": ua.VariantType.Int16,
    "uint16": ua.VariantType.UInt16,
    "int32": ua.VariantType.Int32,
    "uint32": ua.VariantType.UInt32,
    "int64": ua.VariantType.Int64,
    "uint64": ua.VariantType.UInt64,
    "float32": ua.VariantType.Float,
    "float64": ua.VariantType.Double,
    "string": ua.VariantType.String,
    "datetime": ua.VariantType.DateTime,
}


def _nid(ident: int | str, ns: int = 0) -> ua.NodeId:
    """A NodeId (asyncua annotates its parts with its own int and str subclasses)."""
    return ua.NodeId(ua.String(ident) if isinstance(ident, str) else ua.Int32(ident), ua.Int16(ns))


def _time(t: datetime) -> ua.DateTime:
    return cast(ua.DateTime, t)  # for the type checker: asyncua's DateTime is a datetime


HAS_COMPONENT: Final = _nid(ObjectIds.HasComponent)
OBJECTS: Final = _nid(ObjectIds.ObjectsFolder)


def load_signals(profile: str | Path) -> dict[str, OpcuaSignal]:
    """The signals of a profile: a name under device_profiles/ or a path to a YAML file."""
    path = Path(profile)
    if not path.suffix:
        path = bundled_profiles_dir() / f"{profile}.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    signals = (doc.get("settings") or {}).get("signals") or {}
    return {name: OpcuaSignal.model_validate(spec) for name, spec in signals.items()}


@dataclass
class _Var:
    """Where one signal lives on the server of the current generation."""

    name: str
    sig: OpcuaSignal
    node_id: ua.NodeId
    browse_name: ua.QualifiedName
    parent: ua.NodeId

    @property
    def vtype(self) -> ua.VariantType:
        return PLC_TYPES[self.sig.type]


def _split_dotted(identifier: str) -> list[str]:
    """`"DB_Trace"."Torque"` -> ['"DB_Trace"', '"Torque"']; `MAIN.fTorque` -> ['MAIN', 'fTorque']
    (dots inside quotes do not split)."""
    parts, current, quoted = [], "", False
    for ch in identifier:
        if ch == '"':
            quoted = not quoted
        if ch == "." and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def default_value(sig: OpcuaSignal) -> Any:
    scalar: Any = {
        "bool": False,
        "string": "",
        "datetime": NULL_TIME,
        "float32": 0.0,
        "float64": 0.0,
    }.get(sig.type, 0)
    return [scalar] * sig.array_length if sig.array_length else scalar


def to_raw(sig: OpcuaSignal, value: Any) -> Any:
    """A program value as the node's Python value (ints for integer types, floats for reals,
    datetimes for DateTime)."""
    if isinstance(value, list | tuple):
        return [to_raw(sig, v) for v in value]
    if sig.type == "bool":
        return bool(value)
    if sig.type in ("float32", "float64"):
        return float(value)
    if sig.type == "string":
        return str(value)
    if sig.type == "datetime":
        if isinstance(value, datetime):
            return value
        return datetime.fromtimestamp(float(value), UTC)
    return int(value)


class NodeMemory:
    """The PLC's memory (`simulators.plc_model.Memory`), mirrored into the server's nodes."""

    def __init__(self, sim: OpcuaPlcSim) -> None:
        self._sim = sim
        self.values: dict[str, Any] = {n: default_value(s) for n, s in sim.signals.items()}

    def read(self, name: str) -> Any:
        return self.values.get(name)

    def write(self, name: str, value: Any) -> None:
        self.values[name] = value
        self._sim._mirror(name, value)


ANONYMOUS: Final = User(role=UserRole.Anonymous)


class _CountingServer(InternalServer):
    def __init__(self, sim: OpcuaPlcSim, user_manager: UserManager) -> None:
        super().__init__(user_manager=user_manager)
        self._sim = sim
        self.sessions: list[InternalSession] = []

    def create_session(
        self, name: str, user: User = ANONYMOUS, external: bool = False
    ) -> InternalSession:
        session = super().create_session(name, user=user, external=external)
        if external:
            self._sim.sessions_created += 1
            self.sessions.append(session)
        return session

    async def close_sessions(self) -> None:
        # asyncua 2.1's Server.stop leaves the sessions of clients that did not close theirs
        # (a session with a subscription outlives its connection, for a reconnect) running,
        # with their subscriptions, until they time out. A stopped PLC server has none.
        for session in self.sessions:
            await session.close_session(True)
        self.sessions.clear()


class _Users(UserManager):
    def __init__(self, sim: OpcuaPlcSim) -> None:
        self._sim = sim

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        sim = self._sim
        sim.activations += 1
        if username is None and sim.allow_anonymous:
            return User(role=UserRole.User)
        if username is not None and sim.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        sim.refused += 1
        return None


class OpcuaPlcSim:
    """A simulated PLC with an OPC UA server (see the module docstring)."""

    def __init__(
        self,
        profile: str | Path | None = None,
        *,
        signals: Mapping[str, OpcuaSignal] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        security: bool = True,
        users: Mapping[str, str] | None = None,
        allow_anonymous: bool = True,
        vendor: Vendor | None = None,
        min_session_timeout_s: float = 1.0,
    ) -> None:
        self.profile = str(profile) if profile is not None else None
        self.signals: dict[str, OpcuaSignal] = {
            **(load_signals(profile) if profile is not None else {}),
            **(signals or {}),
        }
        self.host, self.port = host, port
        self.security = security
        self.users: dict[str, str] = dict(users or {})
        self.allow_anonymous = allow_anonymous
        # A session whose client vanished (with its subscription) lives this long at least.
        self.min_session_timeout_s = min_session_timeout_s
        self.vendor = vendor or VENDORS.get(self.profile or "", Vendor())
        # Namespace URIs from index 2, as registered at the next start.
        self.namespaces: list[str] = list(self.vendor.namespaces)
        self.clock: Callable[[], float] = time.time  # the PLC's clock: source timestamps
        self.memory = NodeMemory(self)
        self.program: StationProgram | None = None
        self.trusted: list[bytes] | None = None  # client certificates (DER); None: any
        self.sessions_created = self.activations = self.refused = 0
        self.writes: list[tuple[str, Any, ua.VariantType]] = []
        self.monitored: Counter[str] = Counter()  # monitored items created, by signal
        self.generation = 0
        self.certificate: bytes = b""  # the server's (DER), when security is on
        self._key_pem = b""
        self._server: Server | None = None
        self._vars: dict[str, _Var] = {}
        self._by_node: dict[ua.NodeId, str] = {}
        self._objects: dict[tuple[ua.NodeId, int, str], ua.NodeId] = {}
        self._pending: asyncio.Queue[tuple[_Var, ua.DataValue]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._answering = asyncio.Event()
        self._answering.set()
        self._writes_open = asyncio.Event()
        self._writes_open.set()
        self._delay_s = 0.0

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/"

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def truth(self) -> list[Any]:
        return self.program.truth if self.program is not None else []

    def node_id(self, name: str) -> ua.NodeId:
        """Where signal `name` is in the current generation."""
        return self._vars[name].node_id

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- server lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            return
        server = Server(iserver=_CountingServer(self, _Users(self)))
        await server.init()  # about 1.5 s: share a started simulator where you can
        server.iserver.min_session_timeout_ms = self.min_session_timeout_s * 1000
        server.set_endpoint(self.endpoint)
        uri = f"urn:tracegate:simulator:{(self.profile or 'plc').replace('/', ':')}"
        await server.set_application_uri(uri)
        server.set_server_name(self.vendor.product)
        await server.set_build_info(
            "urn:tracegate:simulator", "Tracegate", server.name, "1.0", "0", datetime.now(UTC)
        )
        policies = [ua.SecurityPolicyType.NoSecurity]
        if self.security:
            if not self.certificate:
                self.certificate, self._key_pem = _server_certificate(uri)
            await server.load_certificate(self.certificate, format="der")
            await server.load_private_key(self._key_pem, format="pem")
            server.set_certificate_validator(self._validate)
            policies += [
                ua.SecurityPolicyType.Basic256Sha256_Sign,
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ]
        server.set_security_policy(policies)
        tokens: list[type] = [ua.UserNameIdentityToken]
        if self.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        await self._build(server)
        server.subscribe_server_callback(CallbackType.PreRead, self._before_request)
        server.subscribe_server_callback(CallbackType.PreWrite, self._before_write)
        server.subscribe_server_callback(CallbackType.PostWrite, self._after_write)
        server.subscribe_server_callback(CallbackType.ItemSubscriptionCreated, self._monitoring)
        await server.start()
        assert server.bserver is not None
        self.port = server.bserver.port
        self._server = server
        self._writer = asyncio.create_task(self._write_loop(server), name="plc-opcua-writer")

    async def stop(self) -> None:
        """Stop the OPC UA server (closing its connections); the PLC's memory stays."""
        server, self._server = self._server, None
        if server is None:
            return
        self.resume()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        self._pending = asyncio.Queue()
        await server.stop()
        assert isinstance(server.iserver, _CountingServer)
        await server.iserver.close_sessions()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def kill(self) -> None:
        """The server vanishes at once (a crash, a power cut): connections are reset."""
        if self._server is not None:
            for transport in list(self._server.iserver.asyncio_transports):
                transport.abort()
        await self.stop()

    def pause(self) -> None:
        """Stop answering: reads and writes (keepalives included) hang until `resume`."""
        self._answering.clear()

    def resume(self) -> None:
        self._answering.set()

    def hold_writes(self, held: bool) -> None:
        """Let writes wait (a PLC busy in its scan) until called again with False; reads go on
        (on other sessions: asyncua serves one session's requests in order)."""
        if held:
            self._writes_open.clear()
        else:
            self._writes_open.set()

    def slow(self, delay_s: float) -> None:
        """Answer every read and write `delay_s` later (0: at once again)."""
        self._delay_s = delay_s

    async def download_program(
        self, restart: bool = False, new_namespace: str | None = None
    ) -> None:
        """Renumber the NodeIds of path-addressed signals, as a program download does (their
        browse names stay). Live: each old node reports BadNodeIdUnknown, then leaves the
        browse tree for a new one. With `restart`: stop, renumber, start; `new_namespace` is
        then registered first, moving every other namespace one index up (as a server that
        gained a namespace does: `ns=` NodeIds point elsewhere, `nsu=` ones still resolve)."""
        self.generation += 1
        if new_namespace is not None:
            self.namespaces.insert(0, new_namespace)
            restart = True
        if restart or self._server is None:
            await self.stop()
            await self.start()
            return
        server = self._server
        bad = ua.DataValue(StatusCode=ua.StatusCode(ua.UInt32(StatusCodes.BadNodeIdUnknown)))
        for var in list(self._vars.values()):
            if var.sig.path is None:
                continue
            await server.write_attribute_value(var.node_id, bad)
            # Unlinked, not deleted: asyncua 2.1's delete_nodes calls the (async) data change
            # callbacks of monitored items without awaiting them.
            await server.get_node(var.parent).delete_reference(var.node_id, HAS_COMPONENT)
            del self._by_node[var.node_id]
            var.node_id = self._path_node_id(var.node_id.NamespaceIndex, var.name)
            await self._add_variable(server, var)

    # --- program ----------------------------------------------------------------------------

    def load_program(self, spec: CycleSpec) -> StationProgram:
        """A `StationProgram` on this PLC's memory (`program`), not yet running."""
        needed = {"part_id", "result", "cycle_counter", "request", "ack", "trigger"}
        if spec.mode == "commission":
            needed.add(spec.serial_signal)
        missing = needed - set(self.signals)
        if missing:
            raise ValueError(f"the profile lacks the program's variables {sorted(missing)}")
        self.program = StationProgram(spec, self.memory)
        return self.program

    @contextlib.asynccontextmanager
    async def running_program(
        self, spec: CycleSpec, cycles: int | None = None
    ) -> AsyncIterator[StationProgram]:
        """Run a `StationProgram` on this PLC's memory for the block."""
        program = self.load_program(spec)
        task = asyncio.create_task(program.run(cycles), name="plc-program")
        try:
            yield program
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def flush(self) -> None:
        """Return once every memory write so far is in the server's nodes."""
        await self._pending.join()

    async def put(self, name: str, value: Any) -> None:
        """Write `value` into the PLC's memory and wait until its node holds it."""
        self.memory.write(name, value)
        await self.flush()

    # --- internals --------------------------------------------------------------------------

    def _mirror(self, name: str, value: Any) -> None:
        var = self._vars.get(name)
        if var is None or self._server is None:
            return  # not on the server (or the server is down): memory only
        source = datetime.fromtimestamp(self.clock(), UTC)
        variant = ua.Variant(to_raw(var.sig, value), var.vtype)
        dv = ua.DataValue(
            variant, SourceTimestamp=_time(source), ServerTimestamp=_time(datetime.now(UTC))
        )
        self._pending.put_nowait((var, dv))

    async def _write_loop(self, server: Server) -> None:
        # One writer, so the server sees the PLC's writes in their order.
        while True:
            var, dv = await self._pending.get()
            try:
                await server.write_attribute_value(var.node_id, dv)
            finally:
                self._pending.task_done()

    async def _build(self, server: Server) -> None:
        uris = list(self.namespaces)
        highest = max((_ns_index(s) for s in self.signals.values()), default=1)
        uris += [f"urn:tracegate:simulator:ns{i}" for i in range(len(uris) + 2, highest + 1)]
        uris += sorted({u for s in self.signals.values() if (u := _ns_uri(s)) not in uris} - {""})
        for uri in uris:
            await server.register_namespace(uri)
        self._vars, self._by_node = {}, {}
        self._objects = {}
        plc_ns = uris.index(self.vendor.namespaces[-1]) + 2 if self.vendor.namespaces else 1
        root = OBJECTS
        for ident, bname in self.vendor.root:
            qname = ua.QualifiedName(bname, plc_ns)
            root = await self._object(server, root, _nid(ident, plc_ns), qname)
        for name, sig in self.signals.items():
            if sig.node is not None:
                var = await self._place_node(server, root, name, sig, uris)
            else:
                var = await self._place_path(server, name, sig)
            await self._add_variable(server, var)

    async def _place_node(
        self, server: Server, root: ua.NodeId, name: str, sig: OpcuaSignal, uris: list[str]
    ) -> _Var:
        """At its NodeId, under objects named by the identifier's dotted prefixes."""
        assert sig.node is not None
        parsed = ua.NodeId.from_string(sig.node)
        ns = uris.index(_ns_uri(sig)) + 2 if _ns_uri(sig) else int(parsed.NamespaceIndex)
        ident = parsed.Identifier
        node_id = _nid(ident, ns) if isinstance(ident, int | str) else parsed
        chain = _split_dotted(ident) if isinstance(ident, str) else [name]
        parent = root
        for depth in range(1, len(chain)):
            qname = ua.QualifiedName(chain[depth - 1].strip('"'), ns)
            obj_id = _nid(".".join(chain[:depth]), ns)
            parent = await self._object(server, parent, obj_id, qname)
        return _Var(name, sig, node_id, ua.QualifiedName(chain[-1].strip('"'), ns), parent)

    async def _place_path(self, server: Server, name: str, sig: OpcuaSignal) -> _Var:
        """Along its browse path from Objects, with numeric NodeIds of this generation."""
        assert sig.path is not None
        names = [ua.QualifiedName.from_string(p) for p in sig.path]
        parent = OBJECTS
        for depth, qname in enumerate(names[:-1], start=1):
            obj_id = self._path_node_id(qname.NamespaceIndex, "/".join(sig.path[:depth]))
            parent = await self._object(server, parent, obj_id, qname)
        node_id = self._path_node_id(names[-1].NamespaceIndex, name)
        return _Var(name, sig, node_id, names[-1], parent)

    async def _object(
        self, server: Server, parent: ua.NodeId, node_id: ua.NodeId, bname: ua.QualifiedName
    ) -> ua.NodeId:
        """The object named `bname` under `parent`, created with `node_id` if new."""
        key = (parent, bname.NamespaceIndex, bname.Name)
        if key not in self._objects:
            node: Node = await server.get_node(parent).add_object(node_id, bname)
            self._objects[key] = node.nodeid
        return self._objects[key]

    def _path_node_id(self, ns: int, key: str) -> ua.NodeId:
        # Numeric and generation dependent: what a program download changes.
        base = 1000 * (self.generation + 1)
        ordinal = sorted({*self.signals, *_prefixes(self.signals)}).index(key)
        return _nid(base + ordinal, ns)

    async def _add_variable(self, server: Server, var: _Var) -> None:
        value = to_raw(var.sig, self.memory.values[var.name])
        parent = server.get_node(var.parent)
        node = await parent.add_variable(var.node_id, var.browse_name, value, var.vtype)
        if var.sig.writable:
            await node.set_writable()
        self._vars[var.name] = var
        self._by_node[var.node_id] = var.name

    async def _before_request(self, event: ServerItemCallback, _: Any) -> None:
        if not event.is_external:
            return
        if self._delay_s:
            await asyncio.sleep(self._delay_s)
        await self._answering.wait()

    async def _before_write(self, event: ServerItemCallback, arg: Any) -> None:
        await self._before_request(event, arg)
        if event.is_external:
            await self._writes_open.wait()

    async def _after_write(self, event: ServerItemCallback, _: Any) -> None:
        if not event.is_external or event.response_params is None:
            return
        results = zip(event.request_params.NodesToWrite, event.response_params, strict=True)
        for item, status in results:
            name = self._by_node.get(item.NodeId)
            if name is None or not status.is_good() or item.Value.Value is None:
                continue
            variant = item.Value.Value
            self.memory.values[name] = variant.Value
            self.writes.append((name, variant.Value, variant.VariantType))

    async def _monitoring(self, event: ServerItemCallback, _: Any) -> None:
        results = zip(event.request_params.ItemsToCreate, event.response_params, strict=True)
        for item, result in results:
            name = self._by_node.get(item.ItemToMonitor.NodeId)
            if name is not None and result.StatusCode.is_good():
                self.monitored[name] += 1

    async def _validate(self, cert: x509.Certificate, _: ua.ApplicationDescription) -> None:
        if self.trusted is not None:
            der = cert.public_bytes(serialization.Encoding.DER)
            if der not in self.trusted:
                raise ServiceError(StatusCodes.BadCertificateUntrusted)


def _ns_uri(sig: OpcuaSignal) -> str:
    """The namespace URI of an `nsu=` NodeId, else ""."""
    if sig.node is None:
        return ""
    parsed = ua.NodeId.from_string(sig.node)
    return getattr(parsed, "NamespaceUri", None) or ""


def _ns_index(sig: OpcuaSignal) -> int:
    if sig.node is not None:
        return int(ua.NodeId.from_string(sig.node).NamespaceIndex)
    return max(ua.QualifiedName.from_string(p).NamespaceIndex for p in sig.path or ())


def _prefixes(signals: Mapping[str, OpcuaSignal]) -> set[str]:
    return {"/".join(s.path[:d]) for s in signals.values() if s.path for d in range(1, len(s.path))}


def _server_certificate(app_uri: str) -> tuple[bytes, bytes]:
    key = cert_gen.generate_private_key()
    host = socket.gethostname()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        "Tracegate PLC simulator",
        {},
        [x509.UniformResourceIdentifier(app_uri), x509.DNSName(host), x509.DNSName("localhost")],
        extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    return cert.public_bytes(serialization.Encoding.DER), cert_gen.dump_private_key_as_pem(key)


# --- command line ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.plc_opcua",
        description="Simulated PLC with an OPC UA server, laid out as a device profile says.",
    )
    parser.add_argument("--profile", default="plcs/siemens-s7-1500")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4840, help="0: any free port (printed)")
    parser.add_argument("--cycle-time", type=float, default=1.0, help="seconds per cycle")
    parser.add_argument(
        "--mode", choices=("handshake", "trigger", "commission"), default="handshake"
    )
    parser.add_argument("--cycles", type=int, help="number of cycles (default: endless)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--user", help="accept this user (with --password) besides anonymous")
    parser.add_argument("--password")
    return parser


async def _main(args: argparse.Namespace) -> None:
    users = {args.user: args.password or ""} if args.user else {}
    spec = CycleSpec(mode=args.mode, cycle_time_s=args.cycle_time, seed=args.seed)
    async with OpcuaPlcSim(args.profile, host=args.host, port=args.port, users=users) as sim:
        print(f"OPC UA PLC ({args.profile}) listening on {sim.endpoint}", flush=True)
        print("security: None, Basic256Sha256 Sign and SignAndEncrypt", flush=True)
        for name, sig in sim.signals.items():
            print(f"  {name:<14} {sig.type:<8} {sim.node_id(name).to_string()}", flush=True)
        program = sim.load_program(spec)
        while args.cycles is None or len(program.truth) < args.cycles:
            await program.run(1)
            cycle = program.truth[-1]
            verdict = f", verdict {cycle.verdict}" if cycle.verdict is not None else ""
            if cycle.marked is not None:
                verdict += f", marked {cycle.marked!r}"
            print(
                f"cycle {cycle.n}: {cycle.part_id!r} {cycle.parameters} result {cycle.result}"
                f" -> {cycle.outcome}{verdict}",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, _parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
