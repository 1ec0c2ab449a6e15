"""The stations of a virtual line: each one takes the units (or cases) its conveyor brings, in
order, works them on its simulated devices the way the real station would, tells the ground
truth what the gateway must record of it, and passes them on (or takes them off the line).

- label: the camera scans the label (NOREAD first when the plan says misread);
- mark: the laser's PLC asks for a serial, marks the board with what the gateway wrote, and
  puts it in the magazine of the assembly station it feeds;
- handshake: the PLC works the unit (`cycle_s`), its camera's read in `part_id`, and hands the
  cycle over (request, ack, verdict);
- trigger: the scanner reads the unit, the PLC tests it and counts its cycle counter up;
- assembly: the operator scans the next board of the magazine, then the housing;
- packing: once a case's units are all there, each is scanned, then the case's label;
- portal: the case's SSCC-96 tag passes the reader's antennas.

Stations whose records depend on scanners or a reader (all but handshake and mark) work each
job inside `Interlock.job()`: what a scanner sent into a gateway that dies before committing
it is lost by contract, so a fault that could lose it first lets the running jobs end and
holds new ones (the line's interlock with its traceability system). Handshake stations never
wait for it: their PLC waits for the ack by itself, which is what the kills put to the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from simulators.codes import GS
from simulators.line_plan import NOK, BoardPlan, CasePlan, Planner, UnitPlan, Work, yymmdd
from simulators.line_scenario import Scenario, Station
from simulators.line_truth import PlcCheck, Truth
from simulators.llrp import LlrpReaderSim, TagPass
from simulators.plc_model import RESULT_NOK, RESULT_OK, StationProgram
from simulators.scanner import ScannerSim

Item = UnitPlan | CasePlan
Slot = tuple[float, Item] | None  # (when it arrives, what) on a conveyor; None: the run is over
MISS_SHARE = 0.1  # RFID reads lost in the air at the portal


class Interlock:
    """Jobs of the holdable stations run inside `job()`; `hold()` lets the running ones end and
    keeps new ones from starting until it is left. One holder at a time (the fault driver)."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._busy = 0

    @contextlib.asynccontextmanager
    async def job(self) -> AsyncIterator[None]:
        while not self._open.is_set():
            await self._open.wait()
        self._busy += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._busy -= 1
            if self._busy == 0:
                self._idle.set()

    @property
    def held(self) -> bool:
        """A fault holds the line (its stations are stopped on purpose, not stalled)."""
        return not self._open.is_set()

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        self._open.clear()
        try:
            await self._idle.wait()
            yield
        finally:
            self._open.set()


@dataclass
class LineCore:
    """What the stations share: the plan, the truth, the conveyors, the devices."""

    sc: Scenario
    planner: Planner
    truth: Truth
    interlock: Interlock
    scanners: dict[str, ScannerSim]
    programs: dict[str, StationProgram]  # PLC device id -> its station program
    readers: dict[str, LlrpReaderSim]
    inboxes: dict[str, asyncio.Queue[Slot]] = field(default_factory=dict)
    magazines: dict[str, asyncio.Queue[tuple[BoardPlan, str] | None]] = field(
        default_factory=dict
    )  # assembly station -> marked boards
    board_plans: dict[str, asyncio.Queue[BoardPlan | None]] = field(default_factory=dict)
    in_flight: int = 0  # units and cases on the line
    empty: asyncio.Event = field(default_factory=asyncio.Event)

    def enter(self, n: int = 1) -> None:
        self.in_flight += n
        self.empty.clear()

    def leave(self, n: int = 1) -> None:
        self.in_flight -= n
        if self.in_flight == 0:
            self.empty.set()

    async def forward(self, station: str, item: Item) -> None:
        route = self.sc.route
        k = route.index(station) + 1
        if k == len(route):
            self.leave()
            return
        await self.inboxes[route[k]].put((time.monotonic() + self.sc.transfer_s, item))

    async def end(self, station: str) -> None:
        route = self.sc.route
        k = route.index(station) + 1
        if k < len(route):
            await self.inboxes[route[k]].put(None)


class StationDriver:
    def __init__(self, st: Station, core: LineCore) -> None:
        self.st = st
        self.core = core
        self.truth = core.truth
        self.scanner = core.scanners[st.scanner.id] if st.scanner is not None else None
        self.program = core.programs[st.plc.id] if st.plc is not None else None
        self._packed: list[UnitPlan] = []
        self.current: str | None = None  # what it works on (for a stuck line's report)

    async def run(self) -> None:
        if self.st.program == "mark":
            await self._mark_all()
            return
        inbox = self.core.inboxes[self.st.id]
        while (slot := await inbox.get()) is not None:
            arrives, item = slot
            await asyncio.sleep(max(0.0, arrives - time.monotonic()))  # on the conveyor
            self.current = item.id
            await self.work(item)
            self.current = None
            if self.st.index_s:
                await asyncio.sleep(self.st.index_s)  # the station unloads and loads
        await self.core.end(self.st.id)

    async def work(self, item: Item) -> None:
        st, core = self.st, self.core
        if isinstance(item, CasePlan):
            await self._portal(item)
            core.leave()
            return
        work = item.at(st.id)
        assert work is not None, f"{item.id} has no plan for {st.id}"
        if work.outcome == "skipped":
            await core.forward(st.id, item)  # it goes past the station, unseen
            return
        program = st.program
        if program == "label":
            await self._label(item, work)
        elif program == "handshake":
            await self._handshake(item, work)
        elif program == "trigger":
            await self._trigger(item, work)
        elif program == "assembly":
            await self._assembly(item, work)
        elif program == "packing":
            await self._packing(item, work)
            return  # the case goes on, not the unit
        self.truth.done(item.id, st.id)
        if work.diverted:
            core.leave()
        else:
            await core.forward(st.id, item)

    # --- scanning ----------------------------------------------------------------------------

    async def _scan(
        self, text: str, misread: bool, what: str, phase: int, expect: Callable[[], None] | None
    ) -> None:
        """One scan of `what` (after a NOREAD when `misread`); `expect` registers the event the
        scan must cause, just before it is sent."""
        sim, st = self.scanner, self.st
        assert sim is not None and st.scanner is not None
        async with asyncio.timeout(30):
            await sim.wait_client()  # the station waits for its traceability connection
        if misread:
            self.truth.noread(st, phase, st.scanner.id, what)
            await sim.send_noread()
            await asyncio.sleep(st.scan_gap_s)  # the operator or the camera tries again
        if expect is not None:
            expect()
        frame = await sim.send(text)
        if not frame.delivered:
            self.truth.notes.append(f"{st.id}: the scan of {what} found no gateway connected")

    async def _label(self, unit: UnitPlan, work: Work) -> None:
        async with self.core.interlock.job():
            await self._scan(
                unit.label.text(),
                "unit" in work.misreads,
                unit.id,
                unit.phase,
                lambda: self.truth.identified(self.st, unit, work),
            )

    # --- PLC cycles --------------------------------------------------------------------------

    async def _cycle(self, unit: UnitPlan, work: Work) -> None:
        program = self.program
        assert program is not None
        self.truth.cycle(self.st, unit, work)
        result = RESULT_NOK if work.result == NOK else RESULT_OK
        cycle = await program.work(unit.label.text(), dict(work.parameters), result)
        if cycle.outcome not in ("acked", "pulsed"):
            self.truth.notes.append(f"{self.st.id}: the cycle of {unit.id} ended {cycle.outcome}")
        if program.spec.mode == "handshake":
            check = PlcCheck(self.st.id, unit.id, work.verdict or 0, cycle.verdict)
            self.truth.plc_checks.append(check)

    async def _handshake(self, unit: UnitPlan, work: Work) -> None:
        await asyncio.sleep(self.st.cycle_s)  # the machine works the unit
        await self._cycle(unit, work)

    async def _trigger(self, unit: UnitPlan, work: Work) -> None:
        async with self.core.interlock.job():
            await self._scan(
                unit.label.text(),
                "unit" in work.misreads,
                unit.id,
                unit.phase,
                lambda: self.truth.identified(self.st, unit, work),
            )
            await asyncio.sleep(self.st.cycle_s)  # the test runs
            await self._cycle(unit, work)

    # --- marking, assembly, packing, shipping -----------------------------------------------------

    async def _mark_all(self) -> None:
        st, program = self.st, self.program
        assert st.feeds is not None and program is not None
        plans, magazine = self.core.board_plans[st.id], self.core.magazines[st.feeds]
        while (board := await plans.get()) is not None:
            self.current = board.id
            await asyncio.sleep(st.cycle_s)
            self.truth.commissioned(st, board)
            cycle = await program.work()
            marked = cycle.marked or ""
            self.truth.plc_checks.append(
                PlcCheck(
                    st.id, board.id, 1, cycle.verdict, _fields(element(board)), _fields(marked)
                )
            )
            self.truth.done(board.id, st.id)
            self.current = None
            await magazine.put((board, marked))
        await magazine.put(None)

    async def _assembly(self, unit: UnitPlan, work: Work) -> None:
        got = await self.core.magazines[self.st.id].get()
        assert got is not None, "the magazine ran dry"
        board, marked = got
        if board.unit != unit.n:
            self.truth.notes.append(
                f"{self.st.id}: {unit.id} got {board.id}, planned for U{board.unit:04d}"
            )
        # The laser marked what the gateway wrote; a blank board gets the planned code (and
        # the marking check in the truth says so).
        code = "]d2" + (marked or element(board))
        async with self.core.interlock.job():
            await self._scan(code, board.misread, board.id, unit.phase, None)
            await asyncio.sleep(self.st.scan_gap_s)
            await self._scan(
                unit.label.text(),
                "unit" in work.misreads,
                unit.id,
                unit.phase,
                lambda: self.truth.aggregated(
                    self.st,
                    unit.phase,
                    unit.label.key,
                    [board.key],
                    f"{board.id} assembled into {unit.id}",
                ),
            )

    async def _packing(self, unit: UnitPlan, work: Work) -> None:
        self._packed.append(unit)
        case = self.core.planner.cases[unit.case] if unit.case is not None else None
        if case is None or case.units[-1] != unit.n:
            return  # the case waits for its next unit
        units, self._packed = self._packed, []
        if [u.n for u in units] != case.units:
            self.truth.notes.append(f"{self.st.id}: {case.id} got {[u.id for u in units]}")
        async with self.core.interlock.job():
            for u in units:
                w = u.at(self.st.id)
                misread = w is not None and "unit" in w.misreads
                await self._scan(u.label.text(), misread, u.id, u.phase, None)
                await asyncio.sleep(self.st.scan_gap_s)
            await self._scan(
                case.label,
                case.misread,
                case.id,
                case.phase,
                lambda: self.truth.aggregated(
                    self.st,
                    case.phase,
                    case.key,
                    [u.label.key for u in units],
                    f"{len(units)} units packed into {case.id}",
                ),
            )
        for u in units:
            self.truth.done(u.id, self.st.id)
        self.core.enter()  # the case, before its units leave: the line is never empty between
        self.core.leave(len(units))
        await self.core.forward(self.st.id, case)

    async def _portal(self, case: CasePlan) -> None:
        st = self.st
        assert st.reader is not None
        reader = self.core.readers[st.reader.id]
        async with self.core.interlock.job():
            await reader.wait_inventorying(timeout=30)
            self.truth.passed(st, case)
            tag = TagPass(case.epc, st.direction, (1, 2), 0.0, st.pass_s)
            [seen] = await reader.run_passes([tag], miss_share=MISS_SHARE)
        if seen.reads_delivered < 4 or seen.not_delivered:
            self.truth.notes.append(
                f"{st.id}: {case.id} passed with {seen.reads_delivered} reads delivered "
                f"({seen.not_delivered} not delivered)"
            )
        self.truth.done(case.id, st.id)


def element(board: BoardPlan) -> str:
    """The GS1 element string of a board as the contract says the gateway writes it."""
    return f"01{board.gtin}17{yymmdd(board.expiry)}10{board.lot}{GS}21{board.serial}"


def parse_element_string(text: str) -> dict[str, str]:
    """The AIs of a GS1 element string a marker holds (01, 17, 10, 21; FNC1 as GS), read
    independently of the gateway; what is not understood is kept under `rest`."""
    out: dict[str, str] = {}
    fixed = {"01": 14, "17": 6, "11": 6, "15": 6}
    i = 0
    while i < len(text):
        ai = text[i : i + 2]
        if ai in fixed:
            out[ai] = text[i + 2 : i + 2 + fixed[ai]]
            i += 2 + fixed[ai]
        elif ai in ("10", "21"):
            end = text.find(GS, i + 2)
            end = len(text) if end < 0 else end
            out[ai] = text[i + 2 : end]
            i = end + 1
        else:
            out["rest"] = text[i:]
            break
    return out


def _fields(text: str) -> str:
    """An element string's meaning, comparable whatever the order of its AIs."""
    return ";".join(f"{k}={v}" for k, v in sorted(parse_element_string(text).items()))
