"""Modbus PLCs and controllers: Modbus TCP, RTU on a serial line, and RTU frames through a
serial-to-Ethernet gateway, with pymodbus' asyncio clients.

Owns the connection and the line: one request at a time (an RS-485 line or a TCP gateway serves
one at a time anyway), each with its own timeout; the polls of the watched signals, each poll
group on its own period; the snapshot read when a watched signal changes; and writes.

Failures are per signal: an exception response, a garbled response or a unit that does not
answer in `timeout_s` is reported as the status of the signals it concerns (and logged rate-
limited). A unit that timed out is skipped for the rest of that poll and asked again at its next
one; a unit that stays silent is asked less and less often (after n >= 2 timeouts in a row,
not before min(2^(n-1), 10) x `timeout_s`), so a switched-off unit on a multi-drop line takes at
most about a tenth of the line's time from the others, whatever the poll periods. Only the
connection failing (socket closed or reset, serial port gone) is `DeviceUnavailable`. Value
conversion and request planning are `gateway.devices.modbus_codec`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import termios
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from gateway import clock
from gateway.config.plc import ModbusConfig, ModbusSignal
from gateway.devices.base import (
    DeviceContext,
    DeviceMisconfigured,
    DevicePlan,
    DeviceUnavailable,
    WriteFailed,
    reraise_swallowed_cancel,
)
from gateway.devices.modbus_codec import Codec, CodecError, Raw, Read, ReadPlan, plan_reads
from gateway.devices.serial_scanner import resolve_port
from gateway.events import Signals, SignalValue
from gateway.log import Throttle, get_logger

TIMEOUT: Final = "timeout"
SILENT_HOLD_MAX_TIMEOUTS: Final = 10  # a silent unit is asked at least every 10 timeouts' time
CONNECT_TIMEOUT_MIN_S: Final = 3.0
# Unacknowledged data on a TCP connection for this long drops it: a PLC whose cable was pulled
# shows as `DeviceUnavailable`, not as timeouts for the 15 minutes TCP retransmits.
TCP_USER_TIMEOUT_S: Final = 10.0

EXCEPTION_NAMES: Final = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
# Exception codes that a merged read may owe to one of its signals (or to the unused addresses
# between them): such a read is split into one read per signal, once.
_SPLIT_ON: Final = frozenset({2, 3})
_PARITY: Final = {"none": "N", "even": "E", "odd": "O"}
_READ_FC: Final = {"coil": 1, "discrete_input": 2, "holding_register": 3, "input_register": 4}
_READ_METHOD: Final = {
    "coil": "read_coils",
    "discrete_input": "read_discrete_inputs",
    "holding_register": "read_holding_registers",
    "input_register": "read_input_registers",
}

Client = AsyncModbusTcpClient | AsyncModbusSerialClient


def exception_status(code: int) -> str:
    return f"modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown code')})"


@dataclass
class _Silence:
    """A unit that times out: how many times in a row, and until when it is not asked."""

    strikes: int = 0
    until: float = 0.0  # loop time


@dataclass
class ModbusStats:
    """Counters since the device was made (the benchmark reads them)."""

    polls: int = 0
    requests: int = 0
    values: int = 0


class _Line:
    """One connection: its client, one request at a time (`lock`), and noticing it go."""

    def __init__(self, where: str, timeout_s: float) -> None:
        self.where = where
        self.lock = asyncio.Lock()
        self.lost = asyncio.Event()
        self.client: Client | None = None
        self._timeout_s = timeout_s
        self._inflight: asyncio.Timeout | None = None

    def on_connect(self, up: bool) -> None:
        """pymodbus' trace_connect: called with False when the connection is lost (not when we
        close it). pymodbus leaves a request in flight waiting for its timeout then; end it."""
        if not up:
            self.lost.set()
            if self._inflight is not None:
                self._inflight.reschedule(asyncio.get_running_loop().time())

    def check(self) -> None:
        if self.lost.is_set() or self.client is None or not self.client.connected:
            raise DeviceUnavailable(f"connection to {self.where} lost")

    async def idle(self, delay_s: float) -> None:
        """Wait `delay_s`; raise DeviceUnavailable as soon as the connection goes."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self.lost.wait()
        self.check()

    async def request(self, call: Callable[[], Awaitable[ModbusPDU]], fc: int) -> ModbusPDU | str:
        """One request (the caller holds `lock`): the response, or what went wrong as a status.
        Raises DeviceUnavailable when the connection is gone. `call` makes the request when
        called: pymodbus raises ConnectionException when the request method is called, not
        when its coroutine is awaited, so the call belongs inside the handling below."""
        self.check()
        try:
            async with asyncio.timeout(self._timeout_s) as timeout:
                self._inflight = timeout
                try:
                    response = await call()
                finally:
                    self._inflight = None
        except TimeoutError:
            self.check()
            return TIMEOUT
        except ConnectionException as exc:
            raise DeviceUnavailable(f"connection to {self.where} lost: {exc}") from exc
        except ModbusIOException as exc:  # a response for another unit or transaction
            self.check()
            return f"bad response ({exc.string})"
        if response.isError():
            return exception_status(response.exception_code)
        if response.function_code != fc:
            return f"bad response (function code {response.function_code}, expected {fc})"
        return response


class ModbusDevice:
    """One Modbus connection (a PLC, or several units on one line). One instance per configured
    device; the supervisor calls `run` again after each failure."""

    def __init__(self, config: ModbusConfig, plan: DevicePlan, state_dir: Path) -> None:
        self.config = config
        self.plan = plan
        self.stats = ModbusStats()
        self._codec = Codec(config.byte_order, config.word_order)
        self._log = get_logger(__name__, device=config.id)
        self._order = {name: i for i, name in enumerate(config.signals)}
        self._line: _Line | None = None
        self._alone: set[str] = set()  # signals whose merged read the device refused
        self._plans: dict[tuple[str, ...], ReadPlan] = {}
        self._timeouts: dict[int, Throttle] = {}
        self._silence: dict[int, _Silence] = {}
        self._failures: dict[Read, Throttle] = {}

    # --- run -----------------------------------------------------------------------------------

    async def run(self, ctx: DeviceContext) -> None:
        groups = self._poll_groups()
        line = await self._connect()
        self._line = line
        self._silence.clear()  # a new connection asks every unit again
        try:
            ctx.connected(line.where)
            values = await self._read(line, self._ordered(self._wanted()), set())
            ctx.emit(Signals(self.config.id, clock.now(), values, initial=True))
            last = {v.name: v for v in values if v.name in self.plan.watch}
            await self._poll_forever(ctx, line, groups, last)
        finally:
            self._line = None
            if line.client is not None:
                line.client.close()

    def _poll_groups(self) -> dict[str, tuple[str, ...]]:
        """Watched signals by poll group; DeviceMisconfigured if the plan names unknown signals
        or signals that cannot be read."""
        cfg = self.config
        wanted = self._wanted()
        missing = sorted(wanted - cfg.signals.keys())
        if missing:
            raise DeviceMisconfigured(
                f"device {cfg.id} has no signal {', '.join(map(repr, missing))} (used by a station)"
            )
        try:
            self._plan(self._ordered(wanted))
        except ValueError as exc:
            raise DeviceMisconfigured(f"device {cfg.id}: {exc}") from None
        groups: dict[str, list[str]] = {}
        for name in self._ordered(self.plan.watch):
            groups.setdefault(cfg.signals[name].poll, []).append(name)
        return {g: tuple(names) for g, names in groups.items()}

    def _wanted(self) -> set[str]:
        """Every signal the plan reads: the watched ones and their snapshots."""
        watch, snapshot_of = self.plan.watch, self.plan.snapshot_of
        return {*watch, *(name for w in watch for name in snapshot_of(w))}

    def _ordered(self, names: Iterable[str]) -> tuple[str, ...]:
        """In the order the device's signals are declared: the order of `Signals` emitted."""
        return tuple(sorted(set(names), key=self._order.__getitem__))

    async def _connect(self) -> _Line:
        cfg = self.config
        connect_s = max(cfg.timeout_s, CONNECT_TIMEOUT_MIN_S)
        # pymodbus' own timeout (connect and each response) never fires first: ours end every
        # wait (pymodbus would log each response timeout at ERROR, flooding the journal with
        # a silent unit).
        library_timeout = connect_s + cfg.timeout_s + 1.0
        if cfg.transport == "rtu":
            assert cfg.serial_port is not None  # the config model requires it
            target = resolve_port(cfg.serial_port)  # raises Unavailable / Misconfigured
            shown = (
                cfg.serial_port if target == cfg.serial_port else f"{cfg.serial_port} -> {target}"
            )
            line = _Line(
                f"{shown} at {cfg.baudrate} 8{_PARITY[cfg.parity]}{cfg.stopbits}", cfg.timeout_s
            )
            client: Client = AsyncModbusSerialClient(
                target,
                framer=FramerType.RTU,
                baudrate=cfg.baudrate,
                bytesize=8,
                parity=_PARITY[cfg.parity],
                stopbits=cfg.stopbits,
                name=cfg.id,
                timeout=library_timeout,
                # The supervisor is the one owner of retries and reconnection: pymodbus'
                # own are off (no request retried, no reconnect task after a loss).
                retries=0,
                reconnect_delay=0,
                trace_connect=line.on_connect,
            )
        else:
            assert cfg.host is not None
            rtu = cfg.transport == "rtu_over_tcp"
            line = _Line(f"{cfg.host}:{cfg.port}{' (RTU framing)' if rtu else ''}", cfg.timeout_s)
            client = AsyncModbusTcpClient(
                cfg.host,
                port=cfg.port,
                framer=FramerType.RTU if rtu else FramerType.SOCKET,
                name=cfg.id,
                timeout=library_timeout,
                retries=0,  # as above: the supervisor owns retries
                reconnect_delay=0,
                trace_connect=line.on_connect,
            )
        # pymodbus closes a TCP connection after retries+3 requests in a row without an answer,
        # whichever unit they were for: one silent unit behind a gateway would take the others
        # down. Whether the line is usable is decided here, not by counting timeouts.
        client.set_max_no_responses(2**31)
        line.client = client
        try:
            async with asyncio.timeout(connect_s):
                connected = await client.connect()
        except TimeoutError:
            client.close()
            raise DeviceUnavailable(
                f"{line.where} did not accept the connection within {connect_s} s"
            ) from None
        except (termios.error, ValueError) as exc:
            # pymodbus catches only OSError: a port refusing the line settings (termios EINVAL,
            # e.g. parity on a pty or an adapter without it) or a baud rate pyserial rejects
            # comes through as is. Retrying cannot help.
            client.close()
            raise DeviceMisconfigured(
                f"serial port {line.where} rejects the settings: {exc}"
            ) from exc
        if not connected:  # pymodbus logs the cause (refused, no such port) and returns False
            client.close()
            raise DeviceUnavailable(f"cannot connect to {line.where}")
        if cfg.transport == "rtu":
            # pymodbus sets a serial transport up in a call_soon callback (serialtransport.py),
            # which fails if the port is closed before it ran (a cancelled run): let it run.
            await asyncio.sleep(0)
        else:
            _set_user_timeout(client)
        return line

    # --- polling -------------------------------------------------------------------------------

    async def _poll_forever(
        self,
        ctx: DeviceContext,
        line: _Line,
        groups: dict[str, tuple[str, ...]],
        last: dict[str, SignalValue],
    ) -> None:
        """Poll each group on its period, one scheduler: requests share one line anyway. A
        poll that overruns its period makes the next one start at once, never a burst."""
        loop = asyncio.get_running_loop()
        period = {g: self.config.poll_groups[g].period_ms / 1000 for g in groups}
        due = {g: loop.time() + period[g] for g in groups}
        if not due:  # nothing watched: keep the connection for writes until it goes
            await line.lost.wait()
            raise DeviceUnavailable(f"connection to {line.where} lost")
        while True:
            reraise_swallowed_cancel()
            group = min(due, key=due.__getitem__)
            delay = due[group] - loop.time()
            if delay > 0:
                await line.idle(delay)
            await self._poll(ctx, line, groups[group], last)
            due[group] = max(due[group] + period[group], loop.time())

    async def _poll(
        self, ctx: DeviceContext, line: _Line, names: tuple[str, ...], last: dict[str, SignalValue]
    ) -> None:
        timed_out: set[int] = set()
        values = await self._read(line, names, timed_out)
        seen = clock.now()
        self.stats.polls += 1
        for value in values:  # in declaration order: several changes, one Signals each
            before = last[value.name]
            if before.status == value.status and _same(before.value, value.value):
                continue
            last[value.name] = value
            snapshot_names = tuple(s for s in self.plan.snapshot_of(value.name) if s != value.name)
            snapshot = (
                await self._read(line, self._ordered(snapshot_names), timed_out)
                if snapshot_names
                else ()
            )
            ctx.emit(Signals(self.config.id, seen, (value, *snapshot)))

    async def _read(
        self, line: _Line, names: tuple[str, ...], timed_out: set[int]
    ) -> tuple[SignalValue, ...]:
        """Read `names` in as few requests as the plan allows. A merged read that the device
        refuses (illegal address or value) is split into one read per signal, for good, and
        read again at once: one bad address must not take its neighbours' values with it."""
        plan = self._plan(names)
        results = await self._fetch(line, plan, timed_out)
        refused = {
            name
            for i, result in enumerate(results)
            if isinstance(result, str) and _refused(result) and len(plan.signals_of(i)) > 1
            for name in plan.signals_of(i)
        }
        if refused:
            self._log.warning("modbus_read_split", signals=sorted(refused))
            self._alone |= refused
            self._plans.clear()
            plan = self._plan(names)
            results = await self._fetch(line, plan, timed_out)
        values = plan.split(results)
        self.stats.values += len(values)
        return values

    def _plan(self, names: tuple[str, ...]) -> ReadPlan:
        plan = self._plans.get(names)
        if plan is None:
            cfg = self.config
            plan = plan_reads(
                cfg.signals,
                names,
                self._codec,
                max_registers=cfg.max_registers_per_read,
                max_gap=cfg.max_gap_registers,
                alone=self._alone,
            )
            self._plans[names] = plan
        return plan

    async def _fetch(self, line: _Line, plan: ReadPlan, timed_out: set[int]) -> list[Raw | str]:
        results: list[Raw | str] = []
        now = asyncio.get_running_loop().time()
        for read in plan.reads:
            silence = self._silence.get(read.unit_id)
            if read.unit_id in timed_out or (silence is not None and now < silence.until):
                results.append(TIMEOUT)  # not asked: it was silent in this poll, or is held off
                continue
            async with line.lock:
                response = await line.request(_read_call(line, read), _READ_FC[read.table])
            self.stats.requests += 1
            results.append(self._outcome(read, response, timed_out))
        return results

    def _outcome(self, read: Read, response: ModbusPDU | str, timed_out: set[int]) -> Raw | str:
        unit = read.unit_id
        if isinstance(response, str):
            if response == TIMEOUT:
                timed_out.add(unit)
                silence = self._silence.setdefault(unit, _Silence())
                silence.strikes += 1
                hold = 0 if silence.strikes == 1 else 2 ** min(silence.strikes - 1, 10)
                timeout_s = self.config.timeout_s
                silence.until = asyncio.get_running_loop().time() + timeout_s * min(
                    hold, SILENT_HOLD_MAX_TIMEOUTS
                )
                self._timeout_log(unit).hit(unit_id=unit, timeout_s=timeout_s)
            else:
                self._failure_log(read, response)
            return response
        data: Raw = (
            list(response.bits[: read.count])
            if read.table in ("coil", "discrete_input")
            else list(response.registers)
        )
        if len(data) != read.count:
            status = f"bad response ({len(data)} values for {read.count})"
            self._failure_log(read, status)
            return status
        self._silence.pop(unit, None)
        if unit in self._timeouts:  # the episode may have begun on an earlier connection
            self._timeouts[unit].clear(unit_id=unit)
        if read in self._failures:
            self._failures[read].clear(unit_id=unit, table=read.table, address=read.address)
        return data

    def _timeout_log(self, unit: int) -> Throttle:
        if unit not in self._timeouts:
            self._timeouts[unit] = Throttle(self._log, "modbus_unit_timed_out")
        return self._timeouts[unit]

    def _failure_log(self, read: Read, status: str) -> None:
        if read not in self._failures:
            self._failures[read] = Throttle(self._log, "modbus_read_failed")
        self._failures[read].hit(
            unit_id=read.unit_id,
            table=read.table,
            address=read.address,
            count=read.count,
            status=status,
        )

    # --- writes --------------------------------------------------------------------------------

    async def write(self, signal: str, value: Any) -> None:
        """Write `value` (engineering units) to `signal` on the current connection. Coils with
        function 5 (15 for arrays), registers with 6 (16 for several); a bit in a register is
        read, modified and written back under the line lock (no write of ours comes between;
        the PLC itself must not write that register). Raises WriteFailed; never retries."""
        dev = self.config.id
        sig = self.config.signals.get(signal)
        if sig is None:
            raise WriteFailed(f"cannot write {signal!r} of {dev}: no such signal")
        if not sig.writable:
            raise WriteFailed(f"cannot write {signal} of {dev}: the signal is not writable")
        line = self._line
        if line is None:
            raise WriteFailed(f"cannot write {signal} of {dev}: not connected")
        try:
            async with line.lock:
                outcome = await self._write(line, sig, value)
        except CodecError as exc:
            raise WriteFailed(f"cannot write {value!r} to {signal} of {dev}: {exc}") from None
        except DeviceUnavailable as exc:
            raise WriteFailed(f"cannot write {signal} of {dev}: not connected ({exc})") from None
        if outcome is not None:
            raise WriteFailed(f"cannot write {signal} of {dev}: {outcome}")

    async def _write(self, line: _Line, sig: ModbusSignal, value: Any) -> str | None:
        """The write itself (line lock held): None when done, else what went wrong."""
        client, unit, address = line.client, sig.unit_id, sig.address
        assert client is not None
        codec = self._codec
        call: Callable[[], Awaitable[ModbusPDU]]
        if sig.table == "coil":
            bits = [bool(b) for b in codec.encode(sig, value)]
            if len(bits) == 1:
                call, fc = functools.partial(client.write_coil, address, bits[0], device_id=unit), 5
            else:
                call, fc = functools.partial(client.write_coils, address, bits, device_id=unit), 15
        else:
            if sig.type == "bool" and sig.bit is not None:
                n = codec.size(sig)
                read = Read(unit, "holding_register", address, n)
                current = await line.request(_read_call(line, read), 3)
                self.stats.requests += 1
                if isinstance(current, str):
                    return f"reading the register before setting its bit: {current}"
                if len(current.registers) != n:
                    return f"bad response ({len(current.registers)} registers for {n})"
                registers = codec.encode_bits(sig, value, current.registers)
            else:
                registers = [int(r) for r in codec.encode(sig, value)]
            if len(registers) == 1:
                call = functools.partial(
                    client.write_register, address, registers[0], device_id=unit
                )
                fc = 6
            else:
                call = functools.partial(client.write_registers, address, registers, device_id=unit)
                fc = 16
        outcome = await line.request(call, fc)
        self.stats.requests += 1
        return outcome if isinstance(outcome, str) else None


def _read_call(line: _Line, read: Read) -> Callable[[], Awaitable[ModbusPDU]]:
    method = getattr(line.client, _READ_METHOD[read.table])
    return functools.partial(method, read.address, count=read.count, device_id=read.unit_id)


_SPLIT_STATUSES: Final = frozenset(exception_status(code) for code in _SPLIT_ON)


def _refused(status: str) -> bool:
    return status in _SPLIT_STATUSES


def _same(a: Any, b: Any) -> bool:
    # NaN is not equal to itself; repr tells two NaN readings (or tuples holding them) alike.
    return bool(a == b) or repr(a) == repr(b)


def _set_user_timeout(client: Client) -> None:
    # pymodbus has no option for it: the socket is that of the asyncio transport its
    # transaction manager (`client.ctx`, public) holds.
    transport = client.ctx.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if sock is not None and option is not None:
        sock.setsockopt(socket.IPPROTO_TCP, option, int(TCP_USER_TIMEOUT_S * 1000))
