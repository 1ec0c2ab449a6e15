"""What happens to each unit on a virtual line, decided before it enters: its label, its work
order, the values its stations measure, the faults that strike it, and what the serialization
contract (docs/serialization.md) says the gateway must make of it at each station.

Pure and deterministic for a scenario's seed. The planner walks each unit along the route with
its own model of the rules (written from the contract, not from the gateway's code): rules in
the contract's order, `gtin_not_allowed`, `duplicate_serial`, `missing_step`,
`previous_step_nok`; a rejected unit is not recorded as having done the step, and is diverted.
Boards (parts from a `mark` station) are planned with the units they go into, the serials
they get from their pool in order; cases are filled with the units that reach packing.

A work order's units are extended until its last case is full, so that a changeover never
leaves a part-filled case behind (the line drains between work orders).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from simulators.codes import GS, CodeGenerator, gs1_check_digit
from simulators.epc import encode_sscc96
from simulators.line_scenario import ParameterSpec, Pool, Scenario, ScenarioError, Station

OK, NOK = "OK", "NOK"


def sgtin_key(gtin: str, serial: str) -> str:
    return f"(01){gtin}(21){serial}"


def yymmdd(expiry: str) -> str:
    return expiry[2:4] + expiry[5:7] + expiry[8:10]


@dataclass(frozen=True)
class Label:
    """A housing's pre-printed GS1 DataMatrix label."""

    gtin: str
    serial: str
    lot: str
    expiry: str  # YYYY-MM-DD

    @property
    def key(self) -> str:
        return sgtin_key(self.gtin, self.serial)

    def text(self) -> str:
        """What a scanner sends (AIM prefix, GS separators)."""
        return f"]d201{self.gtin}21{self.serial}{GS}10{self.lot}{GS}17{yymmdd(self.expiry)}"


@dataclass
class Work:
    """What a unit goes through at one station, and what the gateway must record of it."""

    station: str
    program: str
    outcome: str = "recorded"  # recorded, rejected, skipped
    reason: str | None = None  # rejected: the contract's reason
    verdict: int | None = None  # handshake stations: what the PLC must be answered
    parameters: dict[str, float] = field(default_factory=dict)
    result: str | None = None  # OK, NOK (stations with a result)
    misreads: tuple[str, ...] = ()  # scans that fail first: "unit", "part", "case"
    diverted: bool = False  # taken off the line after this station


@dataclass
class UnitPlan:
    n: int  # entering order, from 1
    phase: int  # index of its work order
    label: Label
    work: list[Work] = field(default_factory=list)  # the route, up to where it leaves
    anomalies: list[str] = field(default_factory=list)
    board: int | None = None  # index into Plan.boards
    case: int | None = None  # index into Plan.cases

    @property
    def id(self) -> str:
        return f"U{self.n:04d}"

    def at(self, station: str) -> Work | None:
        return next((w for w in self.work if w.station == station), None)


@dataclass
class BoardPlan:
    """A part marked at a `mark` station: the serial its pool must give it."""

    k: int  # from 0: the order of commissioning
    phase: int
    station: str
    pool: str
    gtin: str
    serial: str
    lot: str
    expiry: str
    remaining: int  # in the pool after this serial is taken
    unit: int  # the unit it goes into
    misread: bool = False

    @property
    def id(self) -> str:
        return f"B{self.k + 1:04d}"

    @property
    def key(self) -> str:
        return sgtin_key(self.gtin, self.serial)


@dataclass
class CasePlan:
    k: int
    phase: int
    sscc: str
    company_prefix_digits: int
    units: list[int] = field(default_factory=list)  # unit numbers, in packing order
    misread: bool = False

    @property
    def id(self) -> str:
        return f"C{self.k + 1:03d}"

    @property
    def key(self) -> str:
        return f"(00){self.sscc}"

    @property
    def label(self) -> str:
        return f"]C100{self.sscc}"

    @property
    def epc(self) -> str:
        return encode_sscc96(self.sscc, self.company_prefix_digits)


@dataclass
class _History:
    """The contract's view of one unit: steps recorded (latest result), commissioned or not."""

    steps: dict[str, str | None] = field(default_factory=dict)
    commissioned: bool = False


def pool_serials(pool: Pool, site: str, line: str, station: str, year: int) -> Iterator[str]:
    """The serials of a pool's delivery in the order they are given out."""
    for first, last in pool.load.ranges:
        for seq in range(first, last + 1):
            yield pool.template.format(
                seq=seq,
                yy=f"{year % 100:02d}",
                yyyy=str(year),
                plant=site,
                line=line,
                station=station,
            )
    yield from pool.load.serials


def pool_size(pool: Pool) -> int:
    return sum(b - a + 1 for a, b in pool.load.ranges) + len(pool.load.serials)


class Planner:
    """Units one at a time (`next_unit`), with the boards and cases they make."""

    def __init__(self, scenario: Scenario, year: int | None = None) -> None:
        self.sc = scenario
        self.year = year if year is not None else time.gmtime().tm_year
        self.boards: list[BoardPlan] = []
        self.cases: list[CasePlan] = []
        self.units: dict[int, UnitPlan] = {}
        self._codes = CodeGenerator(scenario.seed, scenario.company_prefix)
        self._histories: dict[str, _History] = {}
        self._serial_gtins: dict[str, set[str]] = {}  # commissioned serials
        self._n = 0
        self._phase = 0
        self._in_phase = 0
        self._packing: list[int] = []  # units packed into the open case
        self._recent: list[UnitPlan] = []  # units of this phase recorded at a commission step
        self._serials: dict[str, Iterator[str]] = {}
        self._taken: dict[str, int] = {}
        self._marks = {s.id: s for s in scenario.stations if s.program == "mark"}
        self._counted = self._counted_faults()

    # --- units ---------------------------------------------------------------------------------

    def next_unit(self) -> UnitPlan | None:
        """The next unit to enter the line, or None when the run is over (`units` entered,
        and the last case full: a run may end inside its first work order)."""
        units = self.sc.units
        if units is not None and self._n >= units and not self._packing:
            return None
        if not self._continue_phase():
            if self._phase + 1 >= len(self.sc.work_orders):
                return None
            self._phase, self._in_phase, self._recent = self._phase + 1, 0, []
        self._n += 1
        self._in_phase += 1
        rng = random.Random(f"{self.sc.seed}:{self._n}")
        wo = self.sc.work_orders[self._phase]
        label = Label(rng.choice(wo.gtins), self._codes.serial(), wo.lot, wo.expiry)
        unit = UnitPlan(self._n, self._phase, label)
        self._faults(unit, rng)
        self._walk(unit, rng)
        self.units[unit.n] = unit
        return unit

    def __iter__(self) -> Iterator[UnitPlan]:
        while (unit := self.next_unit()) is not None:
            yield unit

    def _continue_phase(self) -> bool:
        if self._n == 0:
            return True
        full = not self._packing  # the open case is empty: a changeover may come
        wo = self.sc.work_orders[self._phase]
        last = self._phase == len(self.sc.work_orders) - 1
        if last:
            return True  # until the run is over (next_unit)
        assert wo.units is not None
        return self._in_phase < wo.units or not full

    def _counted_faults(self) -> dict[int, list[tuple[str, str | None]]]:
        """Units struck by faults given as a count, spread over the run (from unit 5 on)."""
        f = self.sc.faults
        counted = [(f.duplicate_labels, "duplicate_label")] if f.duplicate_labels else []
        counted += [(s, "skip") for s in f.skips]
        out: dict[int, list[tuple[str, str | None]]] = {}
        rng = random.Random(f"{self.sc.seed}:faults")
        for spec, kind in counted:
            if spec.count is None:
                continue
            if self.sc.units is None:
                raise ScenarioError([f"faults: a `count` of {kind}s needs a finite `units`"])
            free = [n for n in range(5, self.sc.units + 1) if n not in out]
            for n in rng.sample(free, min(spec.count, len(free))):
                out.setdefault(n, []).append((kind, spec.station))
        return out

    def _faults(self, unit: UnitPlan, rng: random.Random) -> None:
        f = self.sc.faults
        struck = list(self._counted.get(unit.n, []))
        dup = f.duplicate_labels
        if dup is not None and dup.share and rng.random() < dup.share:
            struck.append(("duplicate_label", None))
        for s in f.skips:
            if s.share and rng.random() < s.share:
                struck.append(("skip", s.station))
        # A copied label is rejected at once: nothing else happens to that unit.
        original = self._duplicable(rng) if ("duplicate_label", None) in struck else None
        if original is not None:
            unit.label = original.label
            unit.anomalies.append(f"duplicate_label_of:{original.id}")
            return
        unit.anomalies += [f"skip:{station}" for kind, station in struck if kind == "skip"]
        for sid, share in sorted(f.nok.items()):
            if rng.random() < share:
                unit.anomalies.append(f"nok:{sid}")

    def _duplicable(self, rng: random.Random) -> UnitPlan | None:
        """An earlier unit of this work order whose label was commissioned (not the last two:
        the copy comes later down the label roll)."""
        pool = self._recent[:-2]
        return rng.choice(pool) if pool else None

    # --- the route, by the contract --------------------------------------------------------------

    def _walk(self, unit: UnitPlan, rng: random.Random) -> None:
        wo = self.sc.work_orders[unit.phase]
        history = self._histories.setdefault(unit.label.key, _History())
        for st in self.sc.route_stations:
            if st.program == "portal":
                break  # cases, not units, pass portals
            if f"skip:{st.id}" in unit.anomalies:
                unit.work.append(Work(st.id, st.program, outcome="skipped"))
                continue
            work = Work(st.id, st.program)
            unit.work.append(work)
            work.misreads = self._misreads(st, rng)
            if st.program in ("handshake", "trigger"):
                nok = f"nok:{st.id}" in unit.anomalies
                work.parameters, work.result = measure(st.parameters, nok, rng)
            reason = rule_check(st, unit.label, history, wo.gtins, self._serial_gtins)
            if reason is not None:
                work.outcome, work.reason = "rejected", reason
                work.verdict = int(st.rules.get("verdict_codes", {}).get(reason, 2))
                work.diverted = True
                if st.program in ("assembly", "packing"):
                    raise ScenarioError(
                        [
                            f"unit {unit.id} would be rejected at {st.program} station {st.id} "
                            f"({reason}): the line cannot take it back out of an open "
                            "aggregation; divert it earlier (`divert_nok`, rules)"
                        ]
                    )
                return
            work.verdict = 1
            history.steps[st.step] = work.result
            if st.rules.get("commission"):
                history.commissioned = True
                self._serial_gtins.setdefault(unit.label.serial, set()).add(unit.label.gtin)
                self._recent.append(unit)
            if st.program == "assembly":
                unit.board = self._board(st, unit, rng)
            elif st.program == "packing":
                self._pack(st, unit, rng)
            if work.result == NOK and st.divert_nok:
                work.diverted = True
                return

    def _misreads(self, st: Station, rng: random.Random) -> tuple[str, ...]:
        m = self.sc.faults.misreads
        if st.id not in m.stations:
            return ()
        return ("unit",) if rng.random() < m.share else ()

    def _board(self, assembly: Station, unit: UnitPlan, rng: random.Random) -> int:
        mark = next(s for s in self._marks.values() if s.feeds == assembly.id)
        assert mark.commission is not None
        pool = next(p for p in self.sc.pools if p.id == mark.commission.pool)
        if pool.id not in self._serials:
            names = self.sc.line
            self._serials[pool.id] = pool_serials(pool, names.site, names.line, mark.id, self.year)
            self._taken[pool.id] = 0
        serial = next(self._serials[pool.id], None)
        if serial is None:
            raise ScenarioError([f"pools: pool {pool.id!r} is too small for the run's boards"])
        self._taken[pool.id] += 1
        wo = self.sc.work_orders[unit.phase]
        misread = assembly.id in self.sc.faults.misreads.stations and (
            rng.random() < self.sc.faults.misreads.share
        )
        board = BoardPlan(
            len(self.boards),
            unit.phase,
            mark.id,
            pool.id,
            mark.commission.gtin,
            serial,
            wo.lot,
            wo.expiry,
            pool_size(pool) - self._taken[pool.id],
            unit.n,
            misread,
        )
        self.boards.append(board)
        history = self._histories.setdefault(board.key, _History())
        history.commissioned = True
        history.steps[mark.step] = None
        return board.k

    def _pack(self, st: Station, unit: UnitPlan, rng: random.Random) -> None:
        self._packing.append(unit.n)
        if len(self._packing) < st.case_size:
            return
        k = len(self.cases)
        prefix = self.sc.company_prefix
        body = f"0{prefix}{k + 1:0{16 - len(prefix)}d}"
        m = self.sc.faults.misreads
        misread = st.id in m.stations and rng.random() < m.share
        case = CasePlan(k, unit.phase, body + gs1_check_digit(body), len(prefix), misread=misread)
        case.units = list(self._packing)
        self._packing.clear()
        self.cases.append(case)
        for n in case.units[:-1]:
            self.units[n].case = k
        unit.case = k

    def pool_low_after(self, pool_id: str) -> int | None:
        """After how many serials taken the pool reports `pool.low` (None: never)."""
        pool = next(p for p in self.sc.pools if p.id == pool_id)
        if pool.low_water == 0:
            return None
        return max(1, pool_size(pool) - pool.low_water + 1)


def measure(
    specs: list[ParameterSpec], nok: bool, rng: random.Random
) -> tuple[dict[str, float], str | None]:
    """The values a station measures, in tolerance by a margin; a NOK unit has its first
    toleranced parameter clearly outside (the PLC then says NOK)."""
    values: dict[str, float] = {}
    bad = next((p.name for p in specs if p.min is not None or p.max is not None), None)
    for p in specs:
        lo = p.min if p.min is not None else p.mean - 4 * p.sd - 1
        hi = p.max if p.max is not None else p.mean + 4 * p.sd + 1
        margin = max((hi - lo) * 0.02, 0.002)
        if nok and p.name == bad:
            beyond = margin + abs(rng.gauss(0, max(p.sd, margin)))
            below = p.min is not None and (p.max is None or rng.random() < 0.5)
            v = (lo - beyond) if below else (hi + beyond)
        else:
            v = min(max(rng.gauss(p.mean, p.sd), lo + margin), hi - margin)
        values[p.name] = round(v, 3)
    return values, NOK if nok else OK


def rule_check(
    st: Station,
    label: Label,
    history: _History,
    gtins: list[str],
    serial_gtins: dict[str, set[str]],
) -> str | None:
    """The contract's rules, in its order; the reason of the first that fails."""
    rules: dict[str, Any] = st.rules
    if rules.get("gtins") == "work_order" and label.gtin not in gtins:
        return "gtin_not_allowed"
    if rules.get("commission"):
        if history.commissioned:
            return "duplicate_serial"
        others = serial_gtins.get(label.serial, set()) - {label.gtin}
        if rules.get("serial_unique_across_gtins") and others:
            return "serial_reused"
    for step in rules.get("requires", []):
        if step not in history.steps:
            return "missing_step"
        if rules.get("requires_ok", True) and history.steps[step] == NOK:
            return "previous_step_nok"
    return None
