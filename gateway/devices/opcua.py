"""OPC UA PLCs (Siemens S7-1500, Beckhoff TwinCAT 3, any OPC UA server): watched signals through
a subscription, each change with its snapshot read in one request, writes in the node's type.

One `run` is one session (`opcua_session`): connect once, resolve every signal
(`opcua_nodes`), report the initial values, subscribe to the watched signals and turn each
data change into a `Signals` observation, until the session ends. Everything that ends it is
`DeviceUnavailable`, and the supervisor starts a new run after its backoff: a lost connection,
a keepalive read of the server state unanswered for `watchdog_s`, a silent or failed
subscription, a watched signal turning bad (its node vanished in a program download: the next
run resolves the browse paths again), a backlog of notifications we cannot keep up with (the
next run reads the levels again rather than changes being dropped here).

Tasks of a session, in one TaskGroup: asyncua's publish task fills a bounded queue (its
subscription iterator); `_consume` drains it, reading each change's snapshot; `_keepalive` and
`_watch_connection` end the session when the server stops answering or the socket drops.
Value conversion is `opcua_values`'; certificates and credentials are `opcua_security`'.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import (
    DataChangeEvent,
    OverflowPolicy,
    StatusChangeEvent,
    Subscription,
)
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaStatusCodeError

from gateway import clock
from gateway.aio import TaskGroup
from gateway.config.plc import OpcuaConfig
from gateway.devices import opcua_nodes as nodes_
from gateway.devices import opcua_security as security
from gateway.devices.base import (
    DeviceContext,
    DeviceMisconfigured,
    DevicePlan,
    DeviceUnavailable,
    WriteFailed,
    reraise_swallowed_cancel,
)
from gateway.devices.opcua_nodes import Node
from gateway.devices.opcua_session import close_session, make_client, open_session, public_url
from gateway.devices.opcua_values import CONFIG_VARIANT, to_variant
from gateway.events import Signals, SignalValue
from gateway.log import Throttle, get_logger

OVERFLOW_BITS: Final = 0x0480  # StatusCode info bits: DataValue info type + Overflow
# Notifications waiting for our consumer (which reads one snapshot per change). Full means we
# cannot keep up: the session is dropped rather than changes silently lost.
NOTIFICATION_QUEUE: Final = 10_000


@dataclass(frozen=True)
class _Session:
    client: Client
    nodes: dict[str, Node]


class OpcuaDevice:
    """One OPC UA server. The supervisor calls `run` again after each failure; `write` works
    while a run is connected."""

    def __init__(self, config: OpcuaConfig, plan: DevicePlan, state_dir: Path) -> None:
        self.config = config
        self.plan = plan
        self.state_dir = state_dir
        self._log = get_logger(__name__, device=config.id)
        self._session: _Session | None = None
        self._throttles: dict[str, Throttle] = {}
        planned = set(plan.watch).union(*plan.snapshot.values())
        # Resolved at each connect: everything planned, and whatever may be written.
        self._wanted = sorted(planned | {n for n, s in config.signals.items() if s.writable})
        self._missing = sorted(planned - set(config.signals))

    async def run(self, ctx: DeviceContext) -> None:
        """One session, until it ends (module docstring); raises DeviceUnavailable or
        DeviceMisconfigured."""
        cfg = self.config
        if self._missing:
            raise DeviceMisconfigured(f"{cfg.id} has no signals {', '.join(self._missing)}")
        targets = {n: nodes_.parse_target(n, cfg.signals[n]) for n in self._wanted}
        identity = None
        if cfg.security_mode != "None":
            identity = await security.app_identity(cfg, self.state_dir, self._log)
            if security.expires_soon(identity):
                self._throttle("expiry", "opcua_certificate_expires_soon").hit(
                    path=str(identity.source), valid_until=identity.not_after.isoformat()
                )
        client = make_client(cfg)
        await open_session(client, cfg, identity)
        try:
            with self._peer_errors("resolving the signals"):
                nodes, product = await nodes_.resolve(client, cfg.signals, targets)
            self._report_resolution(nodes)
            self._session = _Session(client, nodes)
            ctx.connected(self._detail(client, nodes, product))
            await self._stream(ctx, client, nodes)
        finally:
            self._session = None
            await close_session(client)

    def _detail(self, client: Client, nodes: dict[str, Node], product: str | None) -> str:
        cfg = self.config
        mode = (
            "None" if cfg.security_mode == "None" else f"{cfg.security_mode} {cfg.security_policy}"
        )
        user = f", user {cfg.username}" if cfg.username else ""
        server = f", server {product!r}" if product else ""
        good = sum(1 for n in nodes.values() if n.status == "good")
        return (
            f"{client.server_url.geturl()} (security {mode}{user}){server}, "
            f"{good} of {len(nodes)} signals resolved"
        )

    def _report_resolution(self, nodes: dict[str, Node]) -> None:
        for node in nodes.values():
            unresolved = self._throttle(f"unresolved:{node.name}", "opcua_signal_unresolved")
            if node.status != "good":
                unresolved.hit(signal=node.name, status=node.status, where=node.where)
                continue
            unresolved.clear(signal=node.name)
            if node.vtype is not None and node.vtype is not CONFIG_VARIANT[node.sig.type]:
                self._throttle(f"type:{node.name}", "opcua_signal_type_differs").hit(
                    signal=node.name,
                    configured=node.sig.type,
                    node_type=node.vtype.name,
                    note="writes use the node's type",
                )

    def _throttle(self, key: str, event: str) -> Throttle:
        if key not in self._throttles:
            self._throttles[key] = Throttle(self._log, event)
        return self._throttles[key]

    # --- streaming --------------------------------------------------------------------------

    def _initial_names(self) -> list[str]:
        names = sorted(self.plan.watch)
        for watched in sorted(self.plan.watch):
            names += [n for n in self.plan.snapshot_of(watched) if n not in names]
        return names

    async def _stream(self, ctx: DeviceContext, client: Client, nodes: dict[str, Node]) -> None:
        with self._peer_errors("reading the initial values"):
            initial = await nodes_.read_values(client, nodes, self._initial_names())
        ctx.emit(Signals(ctx.device_id, clock.now(), tuple(initial), initial=True))
        last = {v.name: v for v in initial}
        # A watched signal that cannot be read now is reported (above), not monitored. Between
        # that read and the monitored items' creation (one round trip) a pulse can pass unseen;
        # a level or a counter cannot: the first notification of an item carries its value at
        # creation, reported when it differs from the one read (see _consume).
        watched = [nodes[n] for n in sorted(self.plan.watch) if last[n].good]
        sub, overflow = None, asyncio.Event()
        if watched:
            with self._peer_errors("subscribing"):
                sub = await self._subscribe(client, watched, overflow)
        try:
            async with TaskGroup() as tg:
                tg.create_task(self._watch_connection(client))
                tg.create_task(self._keepalive(client, sub))
                if sub is not None:
                    tg.create_task(self._overflowed(overflow))
                    tg.create_task(
                        self._consume(ctx, client, nodes, sub=sub, watched=watched, last=last)
                    )
        except* (DeviceUnavailable, DeviceMisconfigured) as group:
            raise group.exceptions[0] from None

    async def _subscribe(
        self, client: Client, watched: list[Node], overflow: asyncio.Event
    ) -> Subscription:
        cfg = self.config
        interval = cfg.publishing_interval_ms
        # The server sends a keepalive after this many empty publishing intervals: about two
        # per watchdog period, so a dead subscription is told from a quiet line.
        keepalive = max(1, math.floor(cfg.watchdog_s * 500 / interval))
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=interval,
            RequestedLifetimeCount=3 * keepalive,
            RequestedMaxKeepAliveCount=keepalive,
            MaxNotificationsPerPublish=10_000,
            Priority=0,
        )
        # Iterator mode: asyncua's publish task puts notifications into a bounded queue, our
        # consumer task takes them out, so no request (snapshot reads) runs inside asyncua's
        # task. On overflow its DISCONNECT policy calls the hook we replace: ends this session.
        sub = await client.create_subscription(
            params, None, queue_maxsize=NOTIFICATION_QUEUE, overflow=OverflowPolicy.DISCONNECT
        )
        sub.set_overflow_disconnect_handler(overflow.set)
        requests = [
            ua.MonitoredItemCreateRequest(
                ItemToMonitor=ua.ReadValueId(NodeId=node.node_id, AttributeId=AttributeIds.Value),
                MonitoringMode=ua.MonitoringMode.Reporting,
                RequestedParameters=ua.MonitoringParameters(
                    ClientHandle=handle,
                    SamplingInterval=float(node.sig.sampling_ms),
                    # More than 1, or the changes between two publishes are lost (a short
                    # pulse among them). Should it still overflow, the oldest go: the last value
                    # is then right, and flagged (Overflow bit, logged in _consume).
                    QueueSize=node.sig.queue_size,
                ),  # DiscardOldest defaults to True
            )
            for handle, node in enumerate(watched)
        ]
        results = await sub.create_monitored_items(requests)
        for node, result in zip(watched, results, strict=True):
            if isinstance(result, ua.StatusCode):
                raise DeviceUnavailable(
                    f"{public_url(cfg.endpoint)} refused to monitor {node.name}: {result.name}"
                )
        return sub

    async def _consume(
        self,
        ctx: DeviceContext,
        client: Client,
        nodes: dict[str, Node],
        *,
        sub: Subscription,
        watched: list[Node],
        last: dict[str, SignalValue],
    ) -> None:
        reported_first: set[int] = set()
        async for event in sub:
            reraise_swallowed_cancel()
            if isinstance(event, StatusChangeEvent):
                status = event.notification.Status.name
                raise DeviceUnavailable(f"subscription of {self.config.id} ended: {status}")
            if not isinstance(event, DataChangeEvent):
                continue
            item = event.data.monitored_item
            node = watched[item.ClientHandle]
            value = nodes_.signal_value(node, item.Value)
            if item.ClientHandle not in reported_first:
                # A new monitored item first reports the current value: the one just read for
                # the initial Signals, unless it changed in between.
                reported_first.add(item.ClientHandle)
                if (value.value, value.status) == (last[node.name].value, last[node.name].status):
                    continue
            if not value.good:
                raise DeviceUnavailable(
                    f"watched signal {node.name} turned {value.status}: resolving it again"
                )
            code = item.Value.StatusCode
            if code is not None and code.value & OVERFLOW_BITS == OVERFLOW_BITS:
                self._throttle(f"overflow:{node.name}", "opcua_server_queue_overflowed").hit(
                    signal=node.name, queue_size=node.sig.queue_size
                )
            snapshot = await self._snapshot(client, nodes, node.name)
            ctx.emit(Signals(ctx.device_id, clock.now(), (value, *snapshot)))
        raise DeviceUnavailable(f"subscription of {self.config.id} was closed")

    async def _snapshot(
        self, client: Client, nodes: dict[str, Node], watched: str
    ) -> list[SignalValue]:
        names = self.plan.snapshot_of(watched)
        if not names:
            return []
        timeouts = self._throttle("snapshot", "opcua_snapshot_timed_out")
        try:
            with self._peer_errors(f"reading the snapshot of {watched}", timeouts=False):
                values = await nodes_.read_values(client, nodes, names)
        except TimeoutError:
            # The change still counts (a trigger edge is a cycle); its parameters are missing.
            timeouts.hit(signal=watched)
            return [SignalValue(n, None, "timeout") for n in names]
        timeouts.clear()
        return values

    async def _watch_connection(self, client: Client) -> None:
        async with client.subscribe_state() as states:
            while client.state is UaClientState.CONNECTED:
                await states.next_change()
        raise DeviceUnavailable(f"connection to {public_url(self.config.endpoint)} lost")

    async def _keepalive(self, client: Client, sub: Subscription | None) -> None:
        """Reads the server state every watchdog_s / 2; no answer for watchdog_s ends the
        session, and so does a subscription that sent nothing (not even its keepalive)."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        answered, subscribed = loop.time(), time.monotonic()  # asyncua's clock for publishes
        while True:
            await asyncio.sleep(cfg.watchdog_s / 2)
            reraise_swallowed_cancel()
            published = (sub.last_publish_at or subscribed) if sub is not None else None
            if published is not None and time.monotonic() - published > cfg.watchdog_s:
                raise DeviceUnavailable(
                    f"subscription of {cfg.id} silent for more than {cfg.watchdog_s} s"
                )
            try:
                async with asyncio.timeout_at(answered + cfg.watchdog_s):
                    with self._peer_errors("the keepalive read", timeouts=False):
                        (state,) = await nodes_.read(client, [nodes_.SERVER_STATE])
            except TimeoutError:
                if loop.time() >= answered + cfg.watchdog_s:
                    raise DeviceUnavailable(
                        f"{public_url(cfg.endpoint)} answered no keepalive read for "
                        f"{cfg.watchdog_s} s"
                    ) from None
                continue  # asyncua's own request timeout came first: ask again
            answered = loop.time()
            value = state.Value.Value if state.Value is not None else None
            if isinstance(value, int) and value != ua.ServerState.Running:
                raise DeviceUnavailable(f"server state {ua.ServerState(value).name}")

    @staticmethod
    async def _overflowed(overflow: asyncio.Event) -> None:
        await overflow.wait()
        raise DeviceUnavailable(
            f"more than {NOTIFICATION_QUEUE} notifications waiting: dropping the session "
            "(the next one reads the levels again)"
        )

    @contextlib.contextmanager
    def _peer_errors(self, doing: str, timeouts: bool = True) -> Iterator[None]:
        """Failures of a request on the session as DeviceUnavailable (timeouts too, unless the
        caller handles them)."""
        where = public_url(self.config.endpoint)
        try:
            yield
        except TimeoutError:
            if not timeouts:
                raise
            raise DeviceUnavailable(
                f"{where} did not answer {doing} within {self.config.request_timeout_s} s"
            ) from None
        except UaStatusCodeError as exc:
            name = ua.StatusCode(exc.code).name
            raise DeviceUnavailable(f"{where} refused {doing}: {name}") from exc
        except (ConnectionError, OSError) as exc:
            raise DeviceUnavailable(f"connection to {where} lost while {doing}") from exc

    # --- write ------------------------------------------------------------------------------

    async def write(self, signal: str, value: Any) -> None:
        """Write `value` (engineering units) to `signal` in the node's own type."""
        cfg = self.config
        sig = cfg.signals.get(signal)
        if sig is None:
            raise WriteFailed(f"{cfg.id} has no signal {signal!r}")
        if not sig.writable:
            raise WriteFailed(f"{signal} of {cfg.id} is not writable")
        session = self._session
        if session is None or session.client.state is not UaClientState.CONNECTED:
            raise WriteFailed(f"{cfg.id} is not connected: {signal} not written")
        node = session.nodes[signal]
        if node.node_id is None or node.status != "good":
            raise WriteFailed(f"{signal} of {cfg.id} is not resolved ({node.status})")
        try:
            variant = to_variant(value, sig, node.write_type)
        except (ValueError, TypeError) as exc:
            raise WriteFailed(f"{signal} of {cfg.id}: {exc}") from None
        # The value only: no timestamps, no status. Several PLC servers (the S7-1500 among
        # them) refuse a write that carries a SourceTimestamp, which asyncua's
        # Node.write_value adds.
        params = ua.WriteParameters(
            NodesToWrite=[
                ua.WriteValue(
                    NodeId=node.node_id,
                    AttributeId=AttributeIds.Value,
                    Value=ua.DataValue(variant, StatusCode=None),
                )
            ]
        )
        try:
            (status,) = await session.client.uaclient.write(params)
        except TimeoutError:
            raise WriteFailed(
                f"{signal} of {cfg.id}: no answer within {cfg.request_timeout_s} s"
            ) from None
        except UaStatusCodeError as exc:
            raise WriteFailed(f"{signal} of {cfg.id}: {ua.StatusCode(exc.code).name}") from None
        except (ConnectionError, OSError) as exc:
            raise WriteFailed(f"{signal} of {cfg.id}: connection lost ({exc!r})") from None
        if not status.is_good():
            raise WriteFailed(f"{signal} of {cfg.id} refused by the server: {status.name}")
