"""One LLRP connection, driven from the event loop: no sllurp thread.

sllurp is two things: a socket client that runs a select loop in a thread of its own, and a
protocol state machine (`LLRPClient`) that only needs to be handed each message and given a
function to send with. We use the second alone, from an asyncio Protocol: its callbacks then run
on the loop, like everything else. It does the connect-and-configure sequence (capabilities,
reader config with the keepalive and GPI events, deleting old specs, ADD_ROSPEC, ENABLE_ROSPEC);
once the ROSpec is enabled, the session handles the rest itself: tag reports (the fast decoder
of `llrp_wire`), keepalives, GPI events, and the few requests the adapter makes, matched to
their responses by message ID (ours count up from 2^31, sllurp's from 1).

Invariants: `failure` is set once, and from then on nothing is emitted, every waiter gets it,
and nothing more is sent but the close. Reads are emitted only once the ROSpec is enabled.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from sllurp.llrp import (
    LLRPClient,
    LLRPMessage,
    LLRPReaderState,
)
from sllurp.llrp_errors import LLRPError

from gateway import clock
from gateway.config.rfid import LlrpConfig
from gateway.devices import llrp_wire as wire
from gateway.devices.base import DeviceContext, DeviceMisconfigured, DeviceUnavailable
from gateway.devices.llrp_setup import ReaderFacts, reader_facts, rospec_changes, sllurp_config
from gateway.events import Gpi
from gateway.log import Throttle

FIRST_OWN_ID: Final = 1 << 31
ROSPEC_ID: Final = 1  # the ID sllurp gives the one ROSpec it adds
# What sllurp's decoders raise on bytes that do not parse: besides its own LLRPError, whatever
# the struct, dict and list operations inside them hit.
DECODE_ERRORS: Final = (LLRPError, struct.error, KeyError, IndexError, ValueError, TypeError)
CONNECTION_EVENTS: Final = {
    "Failed (a Client initiated connection already exists)": (
        "a client-initiated connection already exists (another client, or an earlier "
        "session of this gateway the reader has not dropped yet)"
    ),
    "Failed (a Reader initiated connection already exists)": (
        "a reader-initiated connection already exists"
    ),
}


class Refused(Exception):
    """The reader answered a request with an error status (the message says which)."""


@dataclass
class LlrpStats:
    """Counters since the device was made (the benchmark reads them)."""

    messages: int = 0
    reads: int = 0


class _Client(LLRPClient):  # type: ignore[misc]
    """sllurp's state machine with our choices where its options fall short (llrp_setup)."""

    def __init__(self, config: LlrpConfig, send: Callable[[bytes], None], on_state: Any) -> None:
        super().__init__(
            sllurp_config(config), transport_tx_write=send, state_change_callback=on_state
        )
        self.settings = config
        self.facts: ReaderFacts | None = None

    def parseCapabilities(self, capdict: dict[str, Any]) -> None:
        facts = reader_facts(self.settings, capdict)  # raises DeviceMisconfigured
        self.config.tx_power = dict.fromkeys(self.settings.antennas, facts.power_index)
        super().parseCapabilities(capdict)
        self.facts = facts

    def getROSpec(self, force_new: bool = False) -> dict[str, Any]:
        rospec: dict[str, Any] = super().getROSpec(force_new)
        rospec_changes(rospec, self.settings)
        return rospec


class Session(asyncio.Protocol):
    """The connection to one reader. `ready` resolves when the ROSpec is enabled (and
    `ctx.connected` has been called); `ended` fails with the reason the session is over."""

    def __init__(
        self,
        config: LlrpConfig,
        ctx: DeviceContext,
        log: Any,
        throttles: dict[str, Throttle],
        stats: LlrpStats,
    ) -> None:
        self.config = config
        self.where = f"{config.host}:{config.port}"
        self._ctx = ctx
        self._log = log
        self._throttles = throttles
        self.stats = stats
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.ready: asyncio.Future[None] = loop.create_future()
        self.ended: asyncio.Future[None] = loop.create_future()
        self.lost = asyncio.Event()
        self.failure: BaseException | None = None
        self.last_heard = loop.time()
        self.facts: ReaderFacts | None = None
        self.window_open = False
        self._transport: asyncio.Transport | None = None
        self._splitter = wire.Splitter()
        self._client = _Client(config, self._send, self._state_changed)
        self._greeted = False
        self._enabled = False
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._next_id = FIRST_OWN_ID
        self._stage = "the reader's connection event"

    @property
    def usable(self) -> bool:
        return self._enabled and self.failure is None and not self._closing()

    @property
    def stage(self) -> str:
        """What the configuration waits for (for a timeout's message)."""
        return self._stage

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.last_heard = self._loop.time()

    def data_received(self, data: bytes) -> None:
        if self.failure is not None:
            return
        frames = self._splitter.feed(data)
        if frames:
            # Whole messages only: bytes alone prove nothing (a corrupt length that swallows
            # everything after it would otherwise keep a dead session "alive" on keepalives).
            self.last_heard = self._loop.time()
        for frame in frames:  # the whole messages before any garbage are the reader's
            self.stats.messages += 1
            self._dispatch(*frame)
            if self.failure is not None:
                return
        exc = self._splitter.error
        if exc is not None:
            self.throttle("garbage", "llrp_message_undecodable").hit(problem=str(exc))
            self.fail(DeviceUnavailable(f"{self.where} sent a malformed message: {exc}"))

    def eof_received(self) -> bool | None:
        self.fail(DeviceUnavailable(f"{self.where} closed the connection"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        detail = f": {exc}" if exc is not None else ""
        self.fail(DeviceUnavailable(f"connection to {self.where} lost{detail}"))
        self.lost.set()

    # --- dispatch ---------------------------------------------------------------------------

    def _dispatch(self, mtype: int, version: int, message_id: int, frame: bytes) -> None:
        if mtype == wire.RO_ACCESS_REPORT:
            self._reports(frame)
        elif mtype == wire.KEEPALIVE:
            self._send(wire.keepalive_ack(message_id))
        elif message_id in self._pending:
            waiter = self._pending.pop(message_id)
            if not waiter.done():
                waiter.set_result(frame)
        elif mtype == wire.READER_EVENT_NOTIFICATION:
            self._event(frame)
        elif not self._enabled:
            self._configure(frame)
        else:
            self.throttle("unexpected", "llrp_message_unexpected").hit(type=mtype)

    def _reports(self, frame: bytes) -> None:
        if not self._enabled:
            return  # of a ROSpec from before this session: ours is not enabled yet
        try:
            reads, skipped = wire.tag_reads(frame, self._ctx.device_id, clock.now())
        except wire.ReportError as exc:
            self.throttle("garbage", "llrp_message_undecodable").hit(
                problem=str(exc), message="RO_ACCESS_REPORT", bytes=len(frame)
            )
            return
        emit = self._ctx.emit
        for read in reads:
            emit(read)
        self.stats.reads += len(reads)
        if skipped:
            self.throttle("no_epc", "llrp_tag_report_without_epc").hit(count=skipped)

    def _decode(self, frame: bytes) -> tuple[str, dict[str, Any]]:
        msg = LLRPMessage(msgbytes=frame)
        name: str = msg.getName()
        return name, msg.msgdict[name]

    def _configure(self, frame: bytes) -> None:
        """A message of the configuration sequence: for sllurp's state machine, unless the
        reader refused the request (sllurp would log it and stall until the timeout)."""
        try:
            msg = LLRPMessage(msgbytes=frame)
            name = msg.getName()
            status = msg.msgdict[name].get("LLRPStatus")
            if status is not None and status.get("StatusCode") != "Success":
                self.fail(
                    DeviceUnavailable(
                        f"{self.where} refused the configuration ({name}): {_status(status)}"
                    )
                )
                return
            self._client.handleMessage(msg)
        except DeviceMisconfigured as exc:
            self.fail(exc)
        except DECODE_ERRORS as exc:
            self.fail(DeviceUnavailable(f"configuring {self.where} failed: {exc!r}"))

    def _event(self, frame: bytes) -> None:
        try:
            _, body = self._decode(frame)
        except DECODE_ERRORS as exc:
            self.throttle("garbage", "llrp_message_undecodable").hit(
                problem=repr(exc), message="READER_EVENT_NOTIFICATION"
            )
            return
        data = body.get("ReaderEventNotificationData") or {}
        attempt = (data.get("ConnectionAttemptEvent") or {}).get("Status")
        if attempt is not None and not self._greeted:
            if attempt != "Success":
                why = CONNECTION_EVENTS.get(attempt, attempt)
                self.fail(DeviceUnavailable(f"{self.where} refused the connection: {why}"))
                return
            self._greeted = True
            self._configure(frame)  # starts sllurp's sequence
        elif attempt == "Another connection attempted":
            self.throttle("intruder", "llrp_other_client_refused").hit()
        if "ConnectionCloseEvent" in data:
            self.fail(DeviceUnavailable(f"{self.where} is closing the connection"))
            return
        gpi = data.get("GPIEvent")
        if gpi is not None and self._enabled:
            port, level = int(gpi["GPIPortNumber"]), bool(gpi["GPIEvent"])
            self._ctx.emit(Gpi(self._ctx.device_id, clock.now(), port, level))
            self.gpi_changed(port, level)
        exception = data.get("ReaderExceptionEvent")
        if exception is not None:
            message = exception.get("Message", b"")
            if isinstance(message, bytes):
                message = message.decode("latin-1")
            self.throttle("exception", "llrp_reader_exception").hit(message=message)

    def _state_changed(self, state: int) -> None:
        """sllurp's state callback (inside handleMessage, on the loop)."""
        name = LLRPReaderState.getStateName(state).removeprefix("STATE_")
        if name.startswith("SENT_"):
            self._stage = f"the answer to {name.removeprefix('SENT_')}"
        if state == LLRPReaderState.STATE_INVENTORYING and not self._enabled:
            self.facts = self._client.facts
            assert self.facts is not None  # capabilities come before any ROSpec
            self._enabled = True
            self._ctx.connected(self.facts.detail(self.config))
            if not self.ready.done():
                self.ready.set_result(None)

    # --- read window (gpi, commanded) ---------------------------------------------------------

    def gpi_changed(self, port: int, level: bool) -> None:
        trigger = self.config.gpi_trigger
        if self._enabled and trigger is not None and port == trigger.port:
            self.set_window(level == trigger.active, "gpi")

    def query_gpi(self) -> None:
        """Open the window if the trigger input is already active (GPI events tell changes
        only). Events are enabled before this asks, so none is missed in between."""

        def answered(fut: asyncio.Future[bytes]) -> None:
            if fut.cancelled() or fut.exception() is not None or self.config.gpi_trigger is None:
                return
            try:
                _, body = self._decode(fut.result())
            except DECODE_ERRORS as exc:
                self.fail(DeviceUnavailable(f"{self.where}: undecodable GPI state: {exc!r}"))
                return
            states = body.get("GPIPortCurrentState", [])
            # sllurp gives a list of port states only in a GET_READER_CONFIG_RESPONSE; one state
            # in another answer comes as the state itself.
            for port in [states] if isinstance(states, dict) else states:
                if not isinstance(port, dict) or "GPIPortNum" not in port:
                    continue
                if int(port["GPIPortNum"]) == self.config.gpi_trigger.port:
                    self.gpi_changed(int(port["GPIPortNum"]), port.get("GPIState") == 1)

        self.request(wire.get_reader_config_all).add_done_callback(answered)

    def set_window(self, want_open: bool, reason: str) -> asyncio.Future[bytes] | None:
        """Start or stop the ROSpec; None when it already is as wanted. A refusal ends the
        session (the next one starts from a known state); `write` also reports it."""
        if want_open == self.window_open:
            return None
        self.window_open = want_open
        command = wire.START_ROSPEC if want_open else wire.STOP_ROSPEC
        done = self.request(lambda mid: wire.rospec_command(command, mid, ROSPEC_ID))
        event = "llrp_read_window_opened" if want_open else "llrp_read_window_closed"
        self._log.info(event, reason=reason)

        def answered(fut: asyncio.Future[bytes]) -> None:
            if fut.cancelled() or fut.exception() is not None:
                return
            try:
                check(fut.result(), "START_ROSPEC" if want_open else "STOP_ROSPEC")
            except Refused as exc:
                self.fail(DeviceUnavailable(f"{self.where}: {exc}"))

        done.add_done_callback(answered)
        return done

    # --- requests -------------------------------------------------------------------------------

    def request(self, build: Callable[[int], bytes]) -> asyncio.Future[bytes]:
        """Send the message `build(message_id)` makes; the future gets the response (or the
        session's failure)."""
        fut: asyncio.Future[bytes] = self._loop.create_future()
        if self.failure is not None:
            fut.set_exception(self.failure)
            return fut
        message_id = self._next_id
        self._next_id = message_id + 1 if message_id < 0xFFFFFFFF else FIRST_OWN_ID
        self._pending[message_id] = fut
        self._send(build(message_id))
        return fut

    def _send(self, data: bytes) -> None:
        if self._closing():
            self.fail(DeviceUnavailable(f"connection to {self.where} lost"))
            return
        assert self._transport is not None
        self._transport.write(data)

    def _closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def throttle(self, key: str, event: str) -> Throttle:
        if key not in self._throttles:
            self._throttles[key] = Throttle(self._log, event)
        return self._throttles[key]

    def fail(self, exc: BaseException) -> None:
        if self.failure is not None:
            return
        self.failure = exc
        waiters: list[asyncio.Future[Any]] = [self.ready, self.ended, *self._pending.values()]
        self._pending.clear()
        for fut in waiters:
            if not fut.done():
                fut.set_exception(exc)

    # --- end ------------------------------------------------------------------------------------

    async def close(self, timeout_s: float) -> None:
        """What sllurp does on disconnect, when the connection still works: delete every
        AccessSpec and ROSpec (the reader stops reading), then close. Each step waits at most
        `timeout_s`."""
        transport = self._transport
        if transport is None:
            return
        try:
            if self.failure is None and not transport.is_closing():
                deleted = [
                    self.request(wire.delete_all_accessspecs),
                    self.request(lambda mid: wire.rospec_command(wire.DELETE_ROSPEC, mid, 0)),
                ]
                try:
                    async with asyncio.timeout(timeout_s):
                        await asyncio.gather(*deleted)
                except (TimeoutError, DeviceUnavailable, DeviceMisconfigured):
                    pass  # closing anyway; a reader drops the specs of a closed session
            self.fail(DeviceUnavailable("closed"))
            transport.close()
            if not self.lost.is_set():
                try:
                    async with asyncio.timeout(timeout_s):
                        await self.lost.wait()
                except TimeoutError:
                    pass
        finally:
            transport.abort()
            for fut in (self.ready, self.ended):
                if fut.done() and not fut.cancelled():
                    fut.exception()  # retrieved: no "exception was never retrieved" at exit


def check(frame: bytes, what: str) -> None:
    """Raise Refused unless the response carries a Success status."""
    error = wire.HEADER.unpack_from(frame)[0] & 0x3FF == wire.ERROR_MESSAGE
    prefix = "does not understand" if error else "refused"
    try:
        msg = LLRPMessage(msgbytes=frame)
        status = msg.msgdict[msg.getName()].get("LLRPStatus") or {}
    except DECODE_ERRORS as exc:
        raise Refused(f"undecodable answer to {what}: {exc!r}") from None
    if status.get("StatusCode") != "Success":
        raise Refused(f"the reader {prefix} {what}: {_status(status)}")


def _status(status: dict[str, Any]) -> str:
    description = status.get("ErrorDescription", b"")
    if isinstance(description, bytes):
        description = description.decode("latin-1")
    code = status.get("StatusCode", "?")
    return f"{code} ({description})" if description else str(code)
