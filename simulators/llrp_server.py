"""The LLRP port of the simulated reader: an asyncio TCP server with one controlling client at a
time (a second one is refused with a ConnectionAttemptEvent, and the holder told), the framing
of requests and their dispatch (to the session-level handlers here, or to the reader's state),
the replies, keepalives, and the events and reports the reader sends: at once, held for an
ENABLE_EVENTS_AND_REPORTS, or counted as not delivered.

Invariants. Each message is one `write()`, so messages never interleave. A read counts as sent
once its RO_ACCESS_REPORT is written. The reader's state (`simulators.llrp_reader`) outlives
connections; a restart replaces it with the factory state. `silent` stops everything from
going out, TCP stays up. The test API on top of this is `simulators.llrp.LlrpReaderSim`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

import structlog

from simulators import llrp_codec as codec
from simulators.llrp_codec import ContentSelector, Header, LlrpError, Msg, Status
from simulators.llrp_models import READER_MODELS, VENDOR_OUI, ReaderModel
from simulators.llrp_reader import ReaderState
from simulators.llrp_rospec import Outlet, Reads
from simulators.llrp_scenario import PassTruth

log = structlog.get_logger("simulators.llrp")

CONNECTED, CLIENT_EXISTS, ANOTHER_ATTEMPT = 0, 2, 4  # ConnectionAttemptEvent status
MAX_REPORTS_PER_MESSAGE: Final = 1000
RESPONSES: Final[dict[int, int]] = {
    Msg.GET_READER_CAPABILITIES: Msg.GET_READER_CAPABILITIES_RESPONSE,
    Msg.GET_READER_CONFIG: Msg.GET_READER_CONFIG_RESPONSE,
    Msg.SET_READER_CONFIG: Msg.SET_READER_CONFIG_RESPONSE,
    Msg.CLOSE_CONNECTION: Msg.CLOSE_CONNECTION_RESPONSE,
    Msg.ADD_ROSPEC: Msg.ADD_ROSPEC_RESPONSE,
    Msg.DELETE_ROSPEC: Msg.DELETE_ROSPEC_RESPONSE,
    Msg.START_ROSPEC: Msg.START_ROSPEC_RESPONSE,
    Msg.STOP_ROSPEC: Msg.STOP_ROSPEC_RESPONSE,
    Msg.ENABLE_ROSPEC: Msg.ENABLE_ROSPEC_RESPONSE,
    Msg.DISABLE_ROSPEC: Msg.DISABLE_ROSPEC_RESPONSE,
    Msg.GET_ROSPECS: Msg.GET_ROSPECS_RESPONSE,
    Msg.ADD_ACCESSSPEC: Msg.ADD_ACCESSSPEC_RESPONSE,
    Msg.DELETE_ACCESSSPEC: Msg.DELETE_ACCESSSPEC_RESPONSE,
    Msg.ENABLE_ACCESSSPEC: Msg.ENABLE_ACCESSSPEC_RESPONSE,
    Msg.DISABLE_ACCESSSPEC: Msg.DISABLE_ACCESSSPEC_RESPONSE,
    Msg.GET_ACCESSSPECS: Msg.GET_ACCESSSPECS_RESPONSE,
    Msg.GET_SUPPORTED_VERSION: Msg.GET_SUPPORTED_VERSION_RESPONSE,
    Msg.SET_PROTOCOL_VERSION: Msg.SET_PROTOCOL_VERSION_RESPONSE,
}


@dataclass
class _Session:
    """One client connection. `holding`: the client asked (HoldEventsAndReportsUponReconnect)
    that events and reports wait for its ENABLE_EVENTS_AND_REPORTS."""

    writer: asyncio.StreamWriter
    holding: bool
    version: int = 1
    keepalive: asyncio.Task[None] | None = None
    closing: bool = False

    def alive(self) -> bool:
        return not self.closing and not self.writer.is_closing()


@dataclass(slots=True)
class _Outgoing:
    """An event or a report batch on its way to the client: sent at once, or held."""

    body: bytes | None = None  # a READER_EVENT_NOTIFICATION's body
    selector: ContentSelector | None = None
    reads: Reads = field(default_factory=list)


_SessionRequest = Callable[[_Session, Header, bytes], None]


class ReaderServer:
    """The LLRP server of a simulated reader on `host`:`port` (0: a free port, then in `port`);
    its counters and fault switches are documented on `LlrpReaderSim`."""

    def __init__(
        self,
        model: str | ReaderModel = "impinj-r700",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        seed: int = 0,
        clock_offset_s: float = 0.0,
        flush_after_s: float | None = 0.1,
    ) -> None:
        self.model = READER_MODELS[model] if isinstance(model, str) else model
        self.host, self.port = host, port
        self.clock_offset_s = clock_offset_s
        # Faults.
        self.keepalives_enabled = True
        self.silent = False  # nothing answered or sent; TCP stays up
        self.stale_s = 0.0  # after an abrupt drop, the old session "exists" this long
        self._refuse_next = 0
        self._stale_until = 0.0
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._session: _Session | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._change = asyncio.Event()
        oui = VENDOR_OUI.get(self.model.manufacturer, b"\x02\x00\x00")
        self._mac = oui + b"\xff\xfe" + self._rng.randbytes(3)  # EUI-64 from the MAC-48
        self._requests: dict[int, _SessionRequest] = {
            Msg.CLOSE_CONNECTION: self._close_connection,
            Msg.GET_SUPPORTED_VERSION: self._get_supported_version,
            Msg.SET_PROTOCOL_VERSION: self._set_protocol_version,
            Msg.ENABLE_EVENTS_AND_REPORTS: self._enable_events_and_reports,
            Msg.KEEPALIVE_ACK: self._keepalive_ack,
            Msg.CUSTOM_MESSAGE: self._custom_message,
        }
        self._outlet = Outlet(
            event=self._event,
            report=self._report,
            changed=self._changed,
            spawn=self._spawn,
            drain=self._drain,
            restart_keepalives=self._restart_keepalives,
        )
        self._reset_state(flush_after_s)
        self.connection_attempts = self.sessions = self.refused = 0
        self.keepalives_sent = self.keepalive_acks = self.reports_sent = 0
        self.messages_sent: Counter[str] = Counter()
        self.messages_received: Counter[str] = Counter()
        self.truth: list[PassTruth] = []

    def _reset_state(self, flush_after_s: float | None) -> None:
        self.state = ReaderState(self.model, self._mac, self._outlet, flush_after_s)
        self._held: list[_Outgoing] = []
        self._next_id = 1

    # --- life cycle -----------------------------------------------------------------------------

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

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, close the connection (FIN), end every timer."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.state.stop_timers()
        if self._session is not None:
            self._session.writer.close()
        tasks = [*self._connections, *self._tasks]
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def restart(self, down_s: float = 0.0) -> None:
        """A reboot: listener and connection closed, `down_s` offline, then listening again on
        the same port with the factory configuration and no ROSpecs. Counters are kept."""
        await self.stop()
        self._reset_state(self.state.flush_after_s)
        self._stale_until = 0.0
        if down_s:
            await asyncio.sleep(down_s)
        await self.start()
        self._changed()

    # --- connections ----------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.connection_attempts += 1
        session: _Session | None = None
        try:
            why = self._refusal()
            if why is not None:
                self.refused += 1
                log.info("llrp_connection_refused", reason=why)
                refusal = self._event_body(codec.connection_attempt_event(CLIENT_EXISTS))
                self._send(_Session(writer, holding=False), Msg.READER_EVENT_NOTIFICATION, refusal)
                await self._hang_up(reader, writer)
                return
            session = self._session = _Session(writer, holding=self.state.config.hold)
            self.sessions += 1
            attempt = codec.connection_attempt_event(CONNECTED)
            self._send(session, Msg.READER_EVENT_NOTIFICATION, self._event_body(attempt))
            self._restart_keepalives()
            self._changed()
            await self._read_loop(session, reader)
        except ConnectionResetError:
            self._go_stale()  # the client vanished without a goodbye: the session lingers
        except OSError as exc:
            log.info("llrp_connection_failed", error=str(exc))
        finally:
            if session is not None:
                session.closing = True
                if session.keepalive is not None:
                    session.keepalive.cancel()
                if self._session is session:
                    self._session = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self._connections.discard(task)
            self._changed()

    async def _hang_up(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Close after the refusal, without a reset: closing a socket with unread bytes (a
        client that sent its first request before reading) sends RST, and the client may then
        lose the refusal before it reads it."""
        await writer.drain()
        writer.write_eof()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                while await reader.read(4096):
                    pass

    def _refusal(self) -> str | None:
        if self._refuse_next > 0:
            self._refuse_next -= 1
            return "refused on request"
        holder = self._session
        if holder is not None and holder.alive():
            attempt = codec.connection_attempt_event(ANOTHER_ATTEMPT)
            self._send(holder, Msg.READER_EVENT_NOTIFICATION, self._event_body(attempt))
            return "a client is connected"
        if asyncio.get_running_loop().time() < self._stale_until:
            return "a stale session exists"
        return None

    def _go_stale(self) -> None:
        if self.stale_s > 0:
            self._stale_until = asyncio.get_running_loop().time() + self.stale_s

    async def _read_loop(self, session: _Session, reader: asyncio.StreamReader) -> None:
        while session.alive():
            try:
                head = await reader.readexactly(codec.HEADER_LEN)
            except asyncio.IncompleteReadError:
                return  # the client closed
            header = codec.parse_header(head)
            self.messages_received[codec.msg_name(header.type)] += 1
            if not codec.HEADER_LEN <= header.length <= codec.MAX_MESSAGE_LEN:
                # No way to find the next message in the stream: say why, then hang up.
                log.warning("llrp_frame_refused", type=header.type, length=header.length)
                if not self.silent:
                    text = f"message length {header.length} is impossible; closing"
                    status = codec.llrp_status(Status.M_FIELD_ERROR, text)
                    self._send(session, Msg.ERROR_MESSAGE, status, header.id)
                return
            try:
                body = await reader.readexactly(header.length - codec.HEADER_LEN)
            except asyncio.IncompleteReadError:
                return
            if not self.silent:
                self._handle(session, header, body)
            await self._drain()

    def _handle(self, session: _Session, header: Header, body: bytes) -> None:
        own = self._requests.get(header.type)
        request = self.state.requests.get(header.type)
        try:
            if header.version not in (1, 2) or (
                header.version != session.version
                and header.type not in (Msg.GET_SUPPORTED_VERSION, Msg.SET_PROTOCOL_VERSION)
            ):
                raise LlrpError(
                    Status.M_UNSUPPORTED_VERSION,
                    f"version {header.version} (this session speaks {session.version})",
                )
            if own is not None:
                own(session, header, body)
            elif request is not None:
                request(header, body, functools.partial(self._reply, session, header))
            else:
                raise LlrpError(
                    Status.M_UNSUPPORTED_MESSAGE,
                    f"{codec.msg_name(header.type)} is not supported",
                )
        except LlrpError as err:
            name = codec.msg_name(header.type)
            log.info("llrp_request_refused", message=name, status=err.code.name, detail=str(err))
            unsupported = err.code in (Status.M_UNSUPPORTED_MESSAGE, Status.M_UNSUPPORTED_VERSION)
            reply = Msg.ERROR_MESSAGE if unsupported else RESPONSES.get(header.type)
            self._send(session, reply or Msg.ERROR_MESSAGE, err.status(), header.id)

    def _reply(self, session: _Session, header: Header, *params: bytes) -> None:
        body = codec.llrp_status() + b"".join(params)
        self._send(session, RESPONSES[Msg(header.type)], body, header.id)

    def _send(self, session: _Session, mtype: int, body: bytes, msg_id: int | None = None) -> bool:
        """Write one message; whether the connection could take it."""
        if not session.alive():
            return False
        ident = self._take_id() if msg_id is None else msg_id
        session.writer.write(codec.message(mtype, ident, body, session.version))
        self.messages_sent[codec.msg_name(mtype)] += 1
        return True

    def _take_id(self) -> int:
        ident, self._next_id = self._next_id, (self._next_id + 1) & 0xFFFFFFFF
        return ident

    def _restart_keepalives(self) -> None:
        session = self._session
        if session is None:
            return
        if session.keepalive is not None:
            session.keepalive.cancel()
            session.keepalive = None
        kind, interval = self.state.config.keepalive
        if kind == 1 and interval > 0:
            session.keepalive = self._spawn(self._keepalives(session, interval / 1000))

    async def _keepalives(self, session: _Session, interval_s: float) -> None:
        while session.alive():
            await asyncio.sleep(interval_s)
            if self.keepalives_enabled and not self.silent:
                if self._send(session, Msg.KEEPALIVE, b""):
                    self.keepalives_sent += 1
                self._changed()

    # --- session requests -----------------------------------------------------------------------

    def _close_connection(self, session: _Session, header: Header, body: bytes) -> None:
        codec.children(body, None, {})
        self._reply(session, header)
        close = self._event_body(codec.connection_close_event())
        self._send(session, Msg.READER_EVENT_NOTIFICATION, close)
        session.closing = True  # the read loop ends; the connection is closed after it

    def _keepalive_ack(self, session: _Session, header: Header, body: bytes) -> None:
        codec.children(body, None, {})
        self.keepalive_acks += 1
        self._changed()

    def _enable_events_and_reports(self, session: _Session, header: Header, body: bytes) -> None:
        codec.children(body, None, {})
        if session.holding:
            session.holding = False
            held, self._held = self._held, []
            for item in held:
                self._send_item(session, item)

    def _custom_message(self, session: _Session, header: Header, body: bytes) -> None:
        vendor, subtype = codec.parse_custom_message(body)
        raise LlrpError(
            Status.M_UNSUPPORTED_MESSAGE,
            f"custom message of vendor {vendor}, subtype {subtype} is not supported",
        )

    def _get_supported_version(self, session: _Session, header: Header, body: bytes) -> None:
        codec.children(body, None, {})
        body = codec.supported_version(session.version, 2) + codec.llrp_status()
        self._send(session, Msg.GET_SUPPORTED_VERSION_RESPONSE, body, header.id)

    def _set_protocol_version(self, session: _Session, header: Header, body: bytes) -> None:
        version = codec.parse_set_protocol_version(body)
        if version not in (1, 2):
            raise LlrpError(Status.M_UNSUPPORTED_VERSION, f"version {version} is not supported")
        self._reply(session, header)
        session.version = version

    # --- the reader's outlet: events, reports, changes ------------------------------------------

    def _event(self, *params: bytes) -> None:
        self._deliver(_Outgoing(body=self._event_body(*params)))

    def _event_body(self, *params: bytes) -> bytes:
        return codec.reader_event(self._utc_us(time.time()), *params)

    def _report(self, selector: ContentSelector, reads: Reads) -> None:
        self._deliver(_Outgoing(selector=selector, reads=reads))

    def _deliver(self, item: _Outgoing) -> None:
        """Send an event or a report batch, hold it, or count it lost."""
        session = self._session
        live = session is not None and session.alive() and not self.silent
        if live and session is not None and not session.holding:
            self._send_item(session, item)
        elif self.state.config.hold and not self.silent:
            self._held.append(item)
        else:
            for _, truth in item.reads:
                truth.not_delivered += 1

    def _send_item(self, session: _Session, item: _Outgoing) -> None:
        if item.body is not None:
            self._send(session, Msg.READER_EVENT_NOTIFICATION, item.body)
            return
        assert item.selector is not None
        for at in range(0, len(item.reads), MAX_REPORTS_PER_MESSAGE):
            chunk = item.reads[at : at + MAX_REPORTS_PER_MESSAGE]
            body = codec.ro_access_report([r for r, _ in chunk], item.selector)
            sent = self._send(session, Msg.RO_ACCESS_REPORT, body)
            if sent:
                self.reports_sent += len(chunk)
            for read, truth in chunk:
                if sent:
                    truth.record_sent(read.antenna, read.rssi)
                else:
                    truth.not_delivered += 1

    def _changed(self) -> None:
        # Wake every waiter; the next ones wait on a fresh event.
        self._change.set()
        self._change = asyncio.Event()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _drain(self) -> None:
        session = self._session
        if session is not None and session.alive():
            with contextlib.suppress(ConnectionError):
                await session.writer.drain()

    def _utc_us(self, wall: float) -> int:
        return int((wall + self.clock_offset_s) * 1_000_000)
