"""The virtual line: one scenario (simulators.line_scenario) drives every simulator of a line
consistently, the same physical unit at each device of each station in route order with a
line's timing, and writes the ground truth of what happened (simulators.line_truth). It also
writes the gateway's line file for it (simulators.line_config), so that `tracegate run` on
that file is the system under test; simulators.line_oracle compares what reached the broker
with the truth.

    scenario = load_scenario("simulators/scenarios/line-assembly.yaml")
    async with VirtualLine(scenario, workdir, broker) as line:   # simulators up
        line.line_file                      # the gateway's line file (workdir/line.yaml)
        truth = await line.run(gateway)     # plays it; `gateway` starts/kills the gateway
    truth.expected, truth.to_json()         # also written to workdir/truth.json

    python -m simulators.line simulators/scenarios/line-assembly.yaml --workdir /tmp/line

`gateway` (a `GatewayControl`: `start()`, `kill()`) is what the scenario's gateway kills use;
without one, the caller runs the gateway (as `tracegate demo` does) and a scenario that kills
it is refused. The MES (simulators.line_mes) delivers the pools and work orders by command.
Between work orders the line drains (a changeover), so that every event carries the order
its unit was made under. Faults run from simulators.line_faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from gateway.config import load_line
from gateway.config.models import SerialScannerConfig, TcpScannerConfig
from gateway.config.plc import ModbusConfig, OpcuaConfig
from simulators.broker import Mosquitto
from simulators.line_config import Endpoints, parameter_units, write_line_file
from simulators.line_mes import Mes
from simulators.line_plan import Planner, pool_size
from simulators.line_scenario import Scenario, Station
from simulators.line_stations import Interlock, LineCore, StationDriver
from simulators.line_truth import Truth
from simulators.llrp import READER_MODELS, LlrpReaderSim
from simulators.plc_modbus import ModbusPlcSim
from simulators.plc_model import CycleSpec, ParameterModel, StationProgram
from simulators.plc_opcua import OpcuaPlcSim
from simulators.scanner import ScannerSim, SerialScannerSim, TcpScannerSim

HOLDABLE = frozenset({"label", "trigger", "assembly", "packing", "portal"})
READY_S = 60.0  # how long the gateway may take to (re)connect everything
OWED_S = 20.0  # how long the line waits for what the gateway owes before it gives up on it


class GatewayControl(Protocol):
    """How the line starts and kills the gateway under test (SIGKILL: nothing cleanly)."""

    async def start(self) -> None: ...

    async def kill(self) -> None: ...


class VirtualLine:
    def __init__(
        self,
        scenario: Scenario,
        workdir: Path,
        broker: Mosquitto | tuple[str, int],
        *,
        year: int | None = None,
        log: tuple[str, str] = ("info", "json"),
    ) -> None:
        self.sc = scenario
        self.log = log  # the gateway's log_level and log_format in the line file
        self.workdir = workdir
        self.broker = broker if isinstance(broker, Mosquitto) else None
        self.broker_at = (broker.host, broker.port) if isinstance(broker, Mosquitto) else broker
        self.planner = Planner(scenario, year)
        self.truth = Truth(scenario, self.planner, parameter_units(scenario))
        self.line_file = workdir / "line.yaml"
        self.scanners: dict[str, ScannerSim] = {}
        self.opcua: dict[str, OpcuaPlcSim] = {}
        self.modbus: dict[str, ModbusPlcSim] = {}
        self.readers: dict[str, LlrpReaderSim] = {}
        self.programs: dict[str, StationProgram] = {}
        self.gateway: GatewayControl | None = None
        # Whether the kill in progress is aimed between a commit and its ack (the PLC's writes
        # held): a control that kills in its own way must then strike at once.
        self.kill_aimed = False
        self.entered = 0  # units that entered the line
        self.fed_all = False
        self.given_up: set[tuple[str | None, str, str | None]] = set()
        self._stack = contextlib.AsyncExitStack()
        self._change = asyncio.Event()
        self._moved = asyncio.Event()
        self.running = asyncio.Event()  # set when units start entering
        names = scenario.line
        self.mes = Mes(*self.broker_at, f"tracegate/{names.site}", names.gateway)
        self.core = LineCore(
            scenario,
            self.planner,
            self.truth,
            Interlock(),
            self.scanners,
            self.programs,
            self.readers,
        )

    # --- simulators ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start every simulator and the MES, and write the line file pointing at them."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A first line file (no ports yet) gives the devices as the gateway will see them.
        draft = write_line_file(self.sc, Endpoints(), self.workdir / "line.draft.yaml")
        configs = {d.id: d for d in load_line(draft).config.devices}
        draft.unlink()
        at = Endpoints(broker=self.broker_at, log_level=self.log[0], log_format=self.log[1])
        for k, st in enumerate(self.sc.stations):
            await self._start_devices(st, configs, at, seed=self.sc.seed * 100 + k)
        write_line_file(self.sc, at, self.line_file)
        for st in self.sc.stations:
            self.core.inboxes[st.id] = asyncio.Queue(maxsize=10)
            if st.feeds is not None:
                self.core.board_plans[st.id] = asyncio.Queue()
                self.core.magazines[st.feeds] = asyncio.Queue(maxsize=16)
        await self.mes.start()
        self._stack.callback(self.mes.stop)

    async def _start_devices(
        self, st: Station, configs: dict[str, Any], at: Endpoints, seed: int
    ) -> None:
        enter = self._stack.enter_async_context
        if st.scanner is not None:
            cfg = configs[st.scanner.id]
            noread = cfg.framing.noread[0] if cfg.framing.noread else "NOREAD"
            if isinstance(cfg, TcpScannerConfig):
                term = (
                    "crlf" if cfg.framing.terminator in ("crlf", "any") else cfg.framing.terminator
                )
                tcp = await enter(TcpScannerSim(terminator=term, noread_text=noread, seed=seed))
                self.scanners[st.scanner.id] = tcp
                at.ports[st.scanner.id] = tcp.port
            else:
                assert isinstance(cfg, SerialScannerConfig)
                link = self.workdir / f"tty-{st.scanner.id}"
                ser = SerialScannerSim(link, terminator="cr", noread_text=noread, seed=seed)
                self.scanners[st.scanner.id] = await enter(ser)
                at.paths[st.scanner.id] = str(link)
        if st.plc is not None:
            cfg = configs[st.plc.id]
            spec = _spec(st, seed)
            if isinstance(cfg, OpcuaConfig):
                sim = await enter(OpcuaPlcSim(signals=cfg.signals, security=False))
                self.opcua[st.plc.id] = sim
                self.programs[st.plc.id] = sim.load_program(spec)
                at.ports[st.plc.id] = sim.port
            else:
                assert isinstance(cfg, ModbusConfig)
                mb = await enter(ModbusPlcSim(cfg, units={1: spec}, driven=True))
                self.modbus[st.plc.id] = mb
                self.programs[st.plc.id] = mb.programs[1]
                at.ports[st.plc.id] = mb.port
        if st.reader is not None:
            model = Path(st.reader.profile).name
            reader = LlrpReaderSim(model if model in READER_MODELS else "impinj-r700", seed=seed)
            self.readers[st.reader.id] = await enter(reader)
            at.ports[st.reader.id] = self.readers[st.reader.id].port

    async def stop(self) -> None:
        await self._stack.aclose()

    # --- running ---------------------------------------------------------------------------------

    async def run(
        self,
        gateway: GatewayControl | None = None,
        *,
        deadline_s: float | None = None,
        stall_s: float = 30.0,
    ) -> Truth:
        """Play the scenario (forever if it is endless); the truth once the line is empty and
        the gateway has delivered what it owes (or `OWED_S` passed). A line still running
        after `deadline_s`, or on which nothing moved for `stall_s` (a station waiting for a
        gateway that never answers), is stopped where it is, and the truth says where."""
        from simulators.line_faults import FaultDriver

        faults = FaultDriver(self)
        if faults.needs_gateway and gateway is None:
            raise ValueError("the scenario kills the gateway: give a GatewayControl")
        self.gateway = gateway
        if gateway is not None:
            await gateway.start()
        stations = [StationDriver(st, self.core) for st in self.sc.stations]
        self.truth.listener = self.progressed
        try:
            async with asyncio.timeout(deadline_s):
                await self.ready(onlines=1)
                await self._deliveries()
                async with asyncio.TaskGroup() as tg:
                    drivers = [tg.create_task(d.run(), name=f"line-{d.st.id}") for d in stations]
                    fault_task = tg.create_task(faults.run(), name="line-faults")
                    watch = tg.create_task(self._watch(stall_s), name="line-watch")
                    self.running.set()
                    await self._source()
                    await asyncio.gather(*drivers)
                    # The line is empty: nothing is to move any more (a fault may still last,
                    # such as a long broker outage, with the gateway holding what it owes).
                    watch.cancel()
                    await fault_task
            await self.owed(None, OWED_S, "the last events")
        except* (TimeoutError, LineStalled) as stop:
            why = "; ".join(str(e) for e in stop.exceptions if str(e)) or f"after {deadline_s} s"
            busy = [f"{d.st.id} with {d.current}" for d in stations if d.current is not None]
            last = self.truth.faults[-1] if self.truth.faults else None
            after = (
                f"; the last fault: {last.kind} {last.target}, {time.time() - last.start:.0f} s ago"
                if last is not None
                else ""
            )
            self.truth.stopped = (
                f"the line was stopped ({why}) with {self.core.in_flight} units and cases on "
                f"it, {self.entered} entered; stations at work: {', '.join(busy) or 'none'}" + after
            )
            await self.owed(None, 2.0, "the events of a stopped line")
        # In a thread: the truth of a long run takes a second to write, and the loop serves the
        # PLC simulators, which a gateway still polling would see time out.
        await asyncio.to_thread(self.truth.write, self.workdir / "truth.json")
        return self.truth

    async def _deliveries(self) -> None:
        """What the MES delivers before the line starts: serials, then the first work order."""
        for pool in self.sc.pools:
            self.truth.pool_loaded(pool.id, pool_size(pool))
            doc: dict[str, Any] = {"pool": pool.id}
            if pool.load.ranges:
                doc["ranges"] = [list(r) for r in pool.load.ranges]
            if pool.load.serials:
                doc["serials"] = list(pool.load.serials)
            await self.mes.command("serial-pool", doc)
        await self._work_order(0)

    async def _work_order(self, phase: int) -> None:
        wo = self.sc.work_orders[phase]
        self.truth.work_order_changed(phase)
        doc = wo.model_dump(exclude={"units"}, exclude_none=True)
        await self.mes.command("work-order", doc)

    async def _source(self) -> None:
        """Units enter route[0] one a takt; a changeover between work orders."""
        loop = asyncio.get_running_loop()
        core, first = self.core, self.sc.route[0]
        marks = {s.feeds: s.id for s in self.sc.stations if s.feeds is not None}
        phase, due = 0, loop.time()
        for unit in self.planner:
            if unit.phase != phase:
                await self._changeover(unit.phase)
                phase, due = unit.phase, loop.time()
            due += self.sc.takt_s
            await asyncio.sleep(max(0.0, due - loop.time()))  # the line's pace
            core.enter()
            if unit.board is not None:
                board = self.planner.boards[unit.board]
                assembly = next(w.station for w in unit.work if w.program == "assembly")
                await core.board_plans[marks[assembly]].put(board)
            await core.inboxes[first].put((time.monotonic(), unit))
            self.entered = unit.n
            self.wake()
        self.fed_all = True
        self.wake()
        await core.inboxes[first].put(None)
        for plans in core.board_plans.values():
            await plans.put(None)

    async def _changeover(self, phase: int) -> None:
        rec = self.truth.fault("changeover", self.sc.work_orders[phase].work_order)
        async with asyncio.timeout(300):
            while self.core.in_flight:
                await self.core.empty.wait()
        await self.owed(None, OWED_S, "the events of the last work order")
        await self._work_order(phase)
        rec.end = time.time()

    # --- waiting for the gateway -----------------------------------------------------------------

    def wake(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    async def until(self, cond: Any) -> None:
        while not cond():
            await self._change.wait()

    def owing(self, stations: frozenset[str] | None) -> list[tuple[str | None, str, str | None]]:
        return [
            k
            for k, n in self.truth.tally.items()
            if (stations is None or k[0] in stations)
            and k not in self.given_up
            and self.mes.count(k) < n
        ]

    async def owed(self, stations: frozenset[str] | None, within_s: float, what: str) -> None:
        """Until the broker has delivered every event the truth expects so far (of
        `stations`); what has not come within `within_s` is noted and not waited for again."""
        try:
            await self.mes.wait(lambda: not self.owing(stations), within_s, what)
        except TimeoutError:
            missing = self.owing(stations)
            self.given_up.update(missing)
            self.truth.notes.append(
                f"waited {within_s} s for {what}; still missing {len(missing)}: "
                + ", ".join(map(str, missing[:5]))
            )

    def held_stations(self) -> frozenset[str]:
        return frozenset(s.id for s in self.sc.stations if s.program in HOLDABLE)

    async def ready(self, onlines: int) -> None:
        """Until the gateway has connected to every device whose reads depend on it being
        there (scanners, readers, trigger PLCs polled a few times) and has said `online` to
        the broker `onlines` times in all (one per connect). TimeoutError names what is not."""
        polls = {d: sum(s.requests.values()) for d, s in self.modbus.items()}
        for name, sim in self.scanners.items():
            await _within(sim.wait_client(), f"the gateway connected to scanner {name}")
        for name, reader in self.readers.items():
            inventorying = reader.wait_for(functools.partial(getattr, reader, "inventorying"), None)
            await _within(inventorying, f"reader {name} inventorying")
        for st in self.sc.stations:
            if st.program == "trigger" and st.plc is not None and st.plc.id in self.modbus:
                mb, before = self.modbus[st.plc.id], polls[st.plc.id]
                polled = poll_until(lambda mb=mb, n=before: sum(mb.requests.values()) >= n + 3)
                await _within(polled, f"the gateway polling {st.plc.id}")
        await self.mes.wait(lambda: self.mes.onlines >= onlines, READY_S, "the gateway online")

    async def gone(self) -> None:
        """Until every device has seen the (killed) gateway's connections close."""
        for name, sim in self.scanners.items():
            if isinstance(sim, TcpScannerSim):
                await _within(sim.wait_no_client(), f"scanner {name} left by the gateway")
            else:
                gone = poll_until(lambda sim=sim: not sim.client_connected)
                await _within(gone, f"scanner {name} closed by the gateway")
        for name, reader in self.readers.items():
            disconnected = reader.wait_for(functools.partial(_offline, reader), None)
            await _within(disconnected, f"reader {name} disconnected")

    def progressed(self) -> None:
        self._moved.set()

    async def _watch(self, stall_s: float) -> None:
        """The line stalls when no station finishes anything for `stall_s`, unless a fault
        holds it (faults struck back to back may hold it longer; each bounds its own wait)."""
        while True:
            self._moved.clear()
            try:
                async with asyncio.timeout(stall_s):
                    await self._moved.wait()
            except TimeoutError:
                if not self.core.interlock.held:
                    raise LineStalled(f"nothing moved on the line for {stall_s} s") from None


def _offline(reader: LlrpReaderSim) -> bool:
    return not reader.connected


class LineStalled(Exception):
    pass


async def _within(aw: Any, what: str) -> None:
    try:
        async with asyncio.timeout(READY_S):
            await aw
    except TimeoutError:
        raise TimeoutError(f"waited {READY_S} s for {what}") from None


async def poll_until(cond: Any) -> None:
    """For conditions nothing announces (a pty's reader, a Modbus server's request count):
    check every 10 ms (the caller bounds the wait)."""
    while not cond():  # noqa: ASYNC110
        await asyncio.sleep(0.01)


def _spec(st: Station, seed: int) -> CycleSpec:
    params = tuple(
        ParameterModel(
            p.name,
            p.mean,
            p.sd,
            p.min if p.min is not None else p.mean - 10 * p.sd,
            p.max if p.max is not None else p.mean + 10 * p.sd,
        )
        for p in st.parameters
    )
    mode: Any = {"mark": "commission", "trigger": "trigger"}.get(st.program, "handshake")
    # A line's PLC waits for the gateway as long as it takes (it retries its request).
    return CycleSpec(
        mode=mode,
        parameters=params,
        ack_timeout_s=5.0,
        max_retries=1_000_000,
        pulse_ms=30,
        seed=seed,
    )


if __name__ == "__main__":
    from simulators.line_cli import main

    sys.exit(main())
