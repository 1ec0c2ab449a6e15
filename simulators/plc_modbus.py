"""A Modbus PLC simulator: a pymodbus server holding the variables of `StationProgram` (see
simulators.plc_model) at the addresses a device profile gives, so that a profile is tested
against the same map the gateway reads.

Modbus TCP, RTU framing over TCP (a serial-to-Ethernet gateway), or RTU on a serial line: a pty
pair joined to a second one by a relay, a null-modem cable whose far end (`serial_path`) the
gateway opens. Several unit ids on one server (a multi-drop line); each may run its own
`StationProgram` or hold static values. Faults on demand: a restart (stop, start on the same
port; memory survives, as a PLC's does a communication restart), slow answers, exception
responses for chosen addresses, a silent unit while the others answer, garbage on the wire.

    async with ModbusPlcSim("plcs/generic-modbus-tcp", units={1: CycleSpec(cycle_time_s=0.2)}):
        ...sim.port, sim.truth, sim.memory(1).write("result", 2), sim.faults.silent.add(2)

    python -m simulators.plc_modbus --profile plcs/generic-modbus-tcp --port 5020 --cycle-time 1

Values are converted with pymodbus' own converters, not the gateway's codec: the simulator is
an independent second opinion on byte order, word order, strings and scaling.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tty
from collections import Counter
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import yaml
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.config.loader import bundled_profiles_dir
from gateway.config.plc import ModbusConfig, ModbusSignal
from simulators import cli
from simulators.plc_model import RESULT_OK, CycleRecord, CycleSpec, StationProgram

Transport = Literal["tcp", "rtu_over_tcp", "rtu"]
DT = AsyncModbusTcpClient.DATATYPE
convert_to = AsyncModbusTcpClient.convert_to_registers
convert_from = AsyncModbusTcpClient.convert_from_registers

# function code -> table; and the code that reads (or, from the PLC side, sets) each table
_FC_TABLE = {1: "coil", 5: "coil", 15: "coil", 2: "discrete_input", 4: "input_register"}
_FC_TABLE.update(dict.fromkeys((3, 6, 16, 22, 23), "holding_register"))
_TABLE_FC = {"coil": 1, "discrete_input": 2, "holding_register": 3, "input_register": 4}
_SPARE = 16  # valid addresses after the last signal of a table


def load_layout(profile: str | Path | ModbusConfig) -> ModbusConfig:
    """A profile as the gateway would use it: `plcs/x` (bundled), a YAML path, or a config."""
    if isinstance(profile, ModbusConfig):
        return profile
    path = Path(profile)
    if not path.suffix:
        path = bundled_profiles_dir() / f"{profile}.yaml"
    doc = yaml.safe_load(path.read_text())
    if doc.get("kind") != "modbus":
        raise ValueError(f"{path} is not a Modbus profile (kind {doc.get('kind')!r})")
    entry = {"id": "simulator", "kind": "modbus", **doc["settings"], **doc.get("example", {})}
    return ModbusConfig.model_validate(entry)


def signal_size(sig: ModbusSignal) -> int:
    """Registers (bits, for coils and discrete inputs) a signal spans."""
    n = sig.array_length or 1
    if sig.table in ("coil", "discrete_input"):
        return n
    if sig.type == "bool":
        return n if sig.bit is None else (sig.bit + n + 15) // 16
    if sig.type == "string":
        return (sig.length or 1) * n
    width = {"int32": 2, "uint32": 2, "float32": 2, "int64": 4, "uint64": 4, "float64": 4}
    return width.get(sig.type, 1) * n


def _swap(register: int) -> int:
    return ((register & 0xFF) << 8) | (register >> 8)


def _now(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a datastore coroutine to its end, synchronously. `Memory` is synchronous (a PLC
    program reads its memory within a scan) while pymodbus' datastore API is async only; the
    datastore without an `action` never suspends, so its coroutines finish on the first step."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("the Modbus datastore suspended")


@dataclass
class Faults:
    """What the simulator does wrong, changeable while it runs."""

    delay_s: float = 0.0  # before every answer
    silent: set[int] = field(default_factory=set)  # unit ids that do not answer
    refuse: dict[tuple[int, str, int], int] = field(default_factory=dict)  # (unit, table, addr)
    garbage: bool = False  # answer with noise instead of a response


class UnitMemory:
    """`Memory` of one unit over the server's datastore, by the layout's signal names; names the
    layout lacks (a controller without part id) are kept aside, as static values."""

    def __init__(self, sim: ModbusPlcSim, unit: int) -> None:
        self._sim = sim
        self.unit = unit
        self.extra: dict[str, Any] = {}

    def read(self, name: str) -> Any:
        sig = self._sim.layout.signals.get(name)
        if sig is None:
            return self.extra.get(name)
        raw = self.get_raw(sig.table, sig.address, signal_size(sig))
        values = [self._decode(sig, raw, i) for i in range(sig.array_length or 1)]
        return values if sig.array_length else values[0]

    def write(self, name: str, value: Any) -> None:
        sig = self._sim.layout.signals.get(name)
        if sig is None:
            self.extra[name] = value
            return
        values = list(value) if sig.array_length else [value]
        if sig.table in ("coil", "discrete_input"):
            self.set_raw(sig.table, sig.address, [bool(v) for v in values])
        elif sig.type == "bool" and sig.bit is not None:
            raw = [self._word(r) for r in self.get_raw(sig.table, sig.address, signal_size(sig))]
            for i, v in enumerate(values):
                word, bit = divmod(sig.bit + i, 16)
                raw[word] = raw[word] | (1 << bit) if v else raw[word] & ~(1 << bit)
            self.set_raw(sig.table, sig.address, [self._word(r) for r in raw])
        else:
            regs: list[int] = []
            for v in values:
                regs += self._encode(sig, v)
            self.set_raw(sig.table, sig.address, regs)

    # raw access (tests put exact registers here)

    def get_raw(self, table: str, address: int, count: int) -> list[Any]:
        got = _now(self._sim.core.async_getValues(self.unit, _TABLE_FC[table], address, count))
        if isinstance(got, ExcCodes):
            raise ValueError(f"{table} {address}+{count} is not mapped ({got.name})")
        return list(got)

    def set_raw(self, table: str, address: int, values: list[int] | list[bool]) -> None:
        fc = _TABLE_FC[table]
        if _now(self._sim.core.async_setValues(self.unit, fc, address, values)):
            raise ValueError(f"{table} {address}+{len(values)} is not mapped")

    # conversions, independent of the gateway's codec

    def _word(self, register: int) -> int:
        return _swap(register) if self._sim.layout.byte_order == "little" else register

    def _encode(self, sig: ModbusSignal, v: Any) -> list[int]:
        if sig.type == "bool":
            regs = [1 if v else 0]
        elif sig.type == "string":
            regs = convert_to(str(v), DT.STRING, "big", "latin-1") if v else []
            regs = (regs + [0] * (sig.length or 1))[: sig.length]
        else:
            raw = (v - sig.offset) / sig.scale if (sig.scale, sig.offset) != (1, 0) else v
            if sig.type in ("int8", "uint8"):
                regs = [round(raw) & 0xFFFF]
            else:
                if not sig.type.startswith("float"):
                    raw = round(raw)
                word_order = self._sim.layout.word_order
                regs = convert_to(raw, DT[sig.type.upper()], word_order)
        return [self._word(r) for r in regs]

    def _decode(self, sig: ModbusSignal, raw: list[Any], i: int) -> Any:
        if sig.table in ("coil", "discrete_input"):
            return bool(raw[i])
        words = [self._word(int(r)) for r in raw]
        if sig.type == "bool":
            if sig.bit is None:
                return words[i] != 0
            word, bit = divmod(sig.bit + i, 16)
            return bool(words[word] >> bit & 1)
        width = len(raw) // (sig.array_length or 1)
        part = words[i * width : (i + 1) * width]
        if sig.type == "string":
            text = convert_from(part, DT.STRING, "big", "latin-1")
            return str(text).split("\0", 1)[0].rstrip(" ")
        if sig.type in ("int8", "uint8"):
            low = part[0] & 0xFF
            value: Any = low - 256 if sig.type == "int8" and low > 127 else low
        else:
            value = convert_from(part, DT[sig.type.upper()], self._sim.layout.word_order)
        return value * sig.scale + sig.offset if (sig.scale, sig.offset) != (1, 0) else value


class _Handler(ServerRequestHandler):
    """pymodbus answers each request in an untracked task that looks at `last_pdu` again after
    awaiting the datastore, so with a delayed answer a later request would get this one's
    transaction id (requesthandler.py). Here the request is taken when it arrives, the task is
    the simulator's (stop() ends it), and the faults apply."""

    def handle_later(self) -> None:
        pdu, addr = self.last_pdu, self.last_addr
        if pdu is not None:
            self.server.sim.spawn(self._answer(pdu, addr))

    async def _answer(self, pdu: ModbusPDU, addr: Any) -> None:
        sim: ModbusPlcSim = self.server.sim
        response = await sim.respond(pdu)
        if response is None or not self.transport:
            return
        if sim.faults.garbage:
            self.send(random.randbytes(random.randint(3, 40)))
            return
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        self.server_send(response, addr)  # type: ignore[no-untyped-call]


class _TcpServer(ModbusTcpServer):
    sim: ModbusPlcSim

    def callback_new_connection(self) -> _Handler:
        return _Handler(self, self.trace_packet, self.trace_pdu, self.trace_connect)  # type: ignore[no-untyped-call]


class _SerialServer(ModbusSerialServer):
    sim: ModbusPlcSim

    def callback_new_connection(self) -> _Handler:
        return _Handler(self, self.trace_packet, self.trace_pdu, self.trace_connect)  # type: ignore[no-untyped-call]


class PtyLink:
    """Two pty pairs whose masters a relay joins: a null-modem cable between `server_path` and
    `client_path` (the slaves). The relay keeps a slave fd of each open, so neither master
    reports a hang-up (which would spin the loop's reader) while nobody has its end open."""

    def __init__(self) -> None:
        self._fds: list[int] = []
        self._masters: list[int] = []
        self.server_path = self.client_path = ""

    def open(self) -> None:
        loop = asyncio.get_running_loop()
        paths = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            self._fds += [master, slave]
            self._masters.append(master)
            paths.append(os.ttyname(slave))
        self.server_path, self.client_path = paths
        a, b = self._masters
        loop.add_reader(a, self._pump, a, b)
        loop.add_reader(b, self._pump, b, a)

    def _pump(self, src: int, dst: int) -> None:
        try:
            data = os.read(src, 4096)
            os.write(dst, data)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:  # the other end closed: the cable is cut
            self.close()

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for master in self._masters:
            loop.remove_reader(master)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds, self._masters = [], []


class ModbusPlcSim:
    """The simulated PLC (see the module docstring). `units` maps each unit id to the cycle its
    `StationProgram` runs, or None for a unit holding static values (set them through
    `memory(unit)`). `cycles` limits how many cycles each program works (None: endless).
    `driven`: the programs do not run by themselves; the caller works their cycles
    (`programs[unit].work(...)`), as a virtual line does with the parts it brings."""

    def __init__(
        self,
        profile: str | Path | ModbusConfig,
        *,
        transport: Transport = "tcp",
        host: str = "127.0.0.1",
        port: int = 0,
        units: Mapping[int, CycleSpec | None] | None = None,
        cycles: int | None = None,
        driven: bool = False,
    ) -> None:
        self.layout = load_layout(profile)
        self.driven = driven
        self.transport: Transport = transport
        self.host = host
        self.port = port
        self.specs = dict(units) if units is not None else {1: None}
        self.cycles = cycles
        self.faults = Faults()
        self.requests: Counter[int] = Counter()  # requests received, by unit id
        self.programs: dict[int, StationProgram] = {}
        self.on_cycle: list[Any] = []  # called with (unit, CycleRecord) after each cycle
        self.core: Any = None  # pymodbus' datastore, kept across restarts
        self.pty: PtyLink | None = None
        self._server: _TcpServer | _SerialServer | None = None
        self._memories = {u: UnitMemory(self, u) for u in self.specs}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._programs: set[asyncio.Task[None]] = set()

    # --- what tests use ---------------------------------------------------------------------

    @property
    def truth(self) -> list[CycleRecord]:
        """The first program's cycles (see `programs` for the others)."""
        return next(iter(self.programs.values())).truth

    @property
    def serial_path(self) -> str:
        """What a gateway opens for transport rtu."""
        if self.pty is None:
            raise RuntimeError("not an RTU simulator, or not started")
        return self.pty.client_path

    def memory(self, unit: int = 1) -> UnitMemory:
        return self._memories[unit]

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
        """Start serving, and the programs (first start only)."""
        if self.transport == "rtu" and self.pty is None:
            self.pty = PtyLink()
            self.pty.open()
        await self._serve()
        if not self.programs:
            for unit, spec in self.specs.items():
                if spec is not None:
                    self.programs[unit] = StationProgram(spec, self._memories[unit])
                    if self.driven:
                        continue
                    task = asyncio.create_task(self._run_program(unit), name=f"plc-unit-{unit}")
                    self._programs.add(task)

    async def stop(self) -> None:
        await self.stop_serving()
        programs, self._programs = self._programs, set()
        for task in programs:
            task.cancel()
        await asyncio.gather(*programs, return_exceptions=True)
        if self.pty is not None:
            self.pty.close()
            self.pty = None

    async def stop_serving(self) -> None:
        """Close the server and its connections (the PLC's communication goes down; its
        program runs on)."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]
            if server.reconnect_task is not None:  # a serial listener's pending reopen
                server.reconnect_task.cancel()
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let the closed transports call connection_lost

    async def restart(self) -> None:
        await self.stop_serving()
        await self._serve()

    async def wait(self) -> None:
        """Return when every program has worked its `cycles` (never when there are none)."""
        if self._programs:
            await asyncio.gather(*self._programs)
        else:
            await asyncio.Event().wait()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- serving ----------------------------------------------------------------------------

    def _devices(self) -> list[SimDevice]:
        ends: dict[str, int] = dict.fromkeys(_TABLE_FC, 0)
        for sig in self.layout.signals.values():
            ends[sig.table] = max(ends[sig.table], sig.address + signal_size(sig))
        sizes = {t: (end + _SPARE + 15) // 16 * 16 for t, end in ends.items()}
        return [
            SimDevice(
                unit,
                simdata=(
                    [SimData(0, count=sizes["coil"], values=False, datatype=DataType.BITS)],
                    [
                        SimData(
                            0, count=sizes["discrete_input"], values=False, datatype=DataType.BITS
                        )
                    ],
                    [SimData(0, count=sizes["holding_register"], datatype=DataType.REGISTERS)],
                    [SimData(0, count=sizes["input_register"], datatype=DataType.REGISTERS)],
                ),
            )
            for unit in self.specs
        ]

    async def serve(self) -> None:
        """Serve again after `stop_serving` (the PLC back on the network)."""
        await self._serve()

    async def _serve(self) -> None:
        server: _TcpServer | _SerialServer
        if self.transport == "rtu":
            assert self.pty is not None
            server = _SerialServer(self._devices(), port=self.pty.server_path, baudrate=19200)
        else:
            framer = FramerType.RTU if self.transport == "rtu_over_tcp" else FramerType.SOCKET
            server = _TcpServer(self._devices(), framer=framer, address=(self.host, self.port))
        server.sim = self
        if self.core is None:
            self.core = server.context
        else:  # memory outlives a communication restart, as in a PLC
            server.context = self.core
        await server.serve_forever(background=True)
        await asyncio.sleep(0)  # a serial transport is set up in a call_soon: before any close
        if self.transport != "rtu":
            self.port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._server = server

    async def respond(self, pdu: ModbusPDU) -> ModbusPDU | None:
        """The answer to one request (None: stay silent), faults applied."""
        unit, fc = pdu.dev_id, pdu.function_code
        self.requests[unit] += 1
        if unit in self.faults.silent or unit not in self.specs:
            return None  # on a multi-drop line nobody answers for a missing unit
        if self.faults.delay_s:
            await asyncio.sleep(self.faults.delay_s)
        table = _FC_TABLE.get(fc)
        first = getattr(pdu, "address", 0)
        count = max(1, getattr(pdu, "count", 1) or 1)
        for (u, t, address), code in self.faults.refuse.items():
            if u == unit and t == table and first <= address < first + count:
                return ExceptionResponse(fc, code)
        try:
            return await pdu.datastore_update(self.core, unit)
        except Exception:  # noqa: BLE001 - answered as a PLC would: its own failure
            return ExceptionResponse(fc, ExcCodes.DEVICE_FAILURE)

    async def _run_program(self, unit: int) -> None:
        program = self.programs[unit]
        done = 0
        while self.cycles is None or done < self.cycles:
            await program.run(1)
            done += 1
            for callback in self.on_cycle:
                callback(unit, program.truth[-1])


# --- command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulators.plc_modbus", description=__doc__)
    p.add_argument("--profile", required=True, help="plcs/NAME, or a profile YAML file")
    p.add_argument("--transport", choices=["tcp", "rtu_over_tcp", "rtu"], default="tcp")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5020, help="0: any free port")
    p.add_argument("--link", help="rtu: a symlink to create to the gateway's end of the line")
    p.add_argument("--units", default="1", help="unit ids, comma separated (each runs a program)")
    p.add_argument("--static", action="store_true", help="hold values; run no program")
    p.add_argument("--cycle-time", type=float, default=1.0)
    p.add_argument("--mode", choices=["handshake", "trigger", "commission"], default="handshake")
    p.add_argument("--cycles", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    return p


def _print_cycle(unit: int, c: CycleRecord) -> None:
    params = ", ".join(f"{k} {v}" for k, v in c.parameters.items())
    outcome = c.outcome + (f" (verdict {c.verdict})" if c.verdict is not None else "")
    result = "OK" if c.result == RESULT_OK else "NOK"
    marked = f", marked {c.marked!r}" if c.marked is not None else ""
    print(
        f"unit {unit} cycle {c.n}: {c.part_id!r}, {params}, {result}, {outcome}{marked}",
        flush=True,
    )


def _link(link: Path, target: str) -> str:
    _unlink(link)
    link.symlink_to(target)
    return f"{link} -> {target} (a pty: use parity none)"


def _unlink(link: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        link.unlink()


async def _main(args: argparse.Namespace) -> None:
    units = [int(u) for u in args.units.split(",")]
    specs = {
        u: None
        if args.static
        else CycleSpec(mode=args.mode, cycle_time_s=args.cycle_time, seed=args.seed + u)
        for u in units
    }
    sim = ModbusPlcSim(
        args.profile,
        transport=args.transport,
        host=args.host,
        port=args.port,
        units=specs,
        cycles=args.cycles,
    )
    sim.on_cycle.append(_print_cycle)
    async with sim:
        if sim.pty is not None:
            # A pty refuses parity bits: the gateway's end must be set to `parity: none`.
            where = f"{sim.serial_path} (a pty: use parity none)"
            if args.link:
                where = _link(Path(args.link), sim.serial_path)
        else:
            where = f"{sim.host}:{sim.port}"
        kind = {"tcp": "Modbus TCP", "rtu_over_tcp": "Modbus RTU over TCP", "rtu": "Modbus RTU"}
        mode = "static values" if args.static else f"{args.mode} mode, cycle {args.cycle_time} s"
        print(
            f"{kind[args.transport]} PLC ({args.profile}) listening on {where}, "
            f"units {args.units}, {mode}",
            flush=True,
        )
        try:
            await sim.wait()
        finally:
            if args.link:
                _unlink(Path(args.link))


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, _parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
