"""The ground truth of a virtual line: what really happened to every unit, board and case, and
the events the contract (docs/serialization.md) says the gateway must record for it.

The station drivers (simulators.line_stations) call `Truth` as they act on the devices, in
the order things happen on the line: each physical action that must leave a record adds an
`Expect`, built here from the plan (simulators.line_plan) and the contract. So the expected
events of each station are in the order the station caused them, and `expected` holds, at any
moment, what the gateway owes so far (the line waits for it before a fault that could lose
it). Physical facts the line observes are kept too: when each unit was at each station, the
verdicts the PLCs received, what the marking laser marked, the reads the RFID reader
delivered, when each fault began and ended.

An `Expect`'s `fields` are what a delivered event must match, normalised the same way by the
oracle (simulators.line_oracle.normalize): `step`, `work_order` always; then by type
`result` and `parameters` (name -> value, unit, in_tolerance), `reason`, `source` (noreads of
a scanner), `direction` (portal passes), `gtin`/`serial`/`lot`/`expiry`/`pool`/`remaining`
(commissioned), `action`/`kind`/`parent`/`children` (aggregated).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from simulators.line_plan import BoardPlan, CasePlan, Planner, UnitPlan, Work
from simulators.line_scenario import Scenario, Station

# Gateway events that need no cause in the truth (the gateway's own), and those a fault may
# cause at its station while it lasts (a write to a restarting PLC fails, and so on).
OWN_EVENTS = frozenset({"device.state", "outbox.state"})
FAULT_EVENTS = frozenset({"handshake.error", "handshake.timeout", "trigger.error"})


@dataclass(frozen=True)
class Expect:
    """One event the gateway must record. `key`: the unit in `ids` (None: noreads and the
    gateway's own events); `children`: the keys an aggregation holds."""

    station: str | None
    type: str
    key: str | None
    fields: dict[str, Any]
    cause: str
    children: tuple[str, ...] = ()

    @property
    def tally_key(self) -> tuple[str | None, str, str | None]:
        return (self.station, self.type, self.key)


@dataclass
class FaultRecord:
    kind: str  # gateway_kill, broker_outage, plc_restart, reader_disconnect, changeover,
    # scanner_/plc_/reader_ + restart|silence|garbage, and the campaign's own (disk, clock)
    target: str | None
    start: float
    end: float | None = None
    stations: tuple[str, ...] = ()  # where it may cause FAULT_EVENTS
    note: str = ""
    # When the gateway was back: online again and what it owed delivered (None: not measured).
    recovered: float | None = None


@dataclass
class PlcCheck:
    """What a PLC saw of the gateway's answer, against what the contract says it must be."""

    station: str
    item: str  # unit or board id
    verdict_expected: int
    verdict_seen: int | None
    marked_expected: str | None = None  # mark stations: the element string's fields
    marked_seen: str | None = None


def parameter_fields(
    st: Station, values: dict[str, float], units: dict[str, str | None]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in st.parameters:
        v = values[p.name]
        doc: dict[str, Any] = {"value": v, "unit": units.get(p.name)}
        if p.min is not None or p.max is not None:
            doc["in_tolerance"] = (p.min is None or v >= p.min) and (p.max is None or v <= p.max)
        out[p.name] = doc
    return out


class Truth:
    """The ground truth of one run (module docstring)."""

    def __init__(
        self, scenario: Scenario, planner: Planner, units: dict[str, dict[str, str | None]]
    ) -> None:
        self.sc = scenario
        self.planner = planner
        self.signal_units = units  # station -> parameter -> engineering unit
        self.expected: list[Expect] = []
        self.tally: Counter[tuple[str | None, str, str | None]] = Counter()  # of `expected`
        self.faults: list[FaultRecord] = []
        self.plc_checks: list[PlcCheck] = []
        self.notes: list[str] = []
        self.stopped: str | None = None  # why the line was stopped before it was done
        self.times: dict[tuple[str, str], float] = {}  # (item id, station) -> when done
        self.listener: Callable[[], None] | None = None  # told of each item done
        self.started = time.time()

    # --- the contract, per physical action -----------------------------------------------------

    def _add(self, e: Expect) -> None:
        self.expected.append(e)
        self.tally[e.tally_key] += 1

    def _base(self, st: Station, phase: int) -> dict[str, Any]:
        return {"step": st.step, "work_order": self.sc.work_orders[phase].work_order}

    def noread(self, st: Station, phase: int, device: str, what: str) -> None:
        """A scanner could not read `what` (and said NOREAD)."""
        fields = {**self._base(st, phase), "reason": None, "source": device}
        self._add(Expect(st.id, "noread", None, fields, f"misread of {what} at {st.id}"))

    def identified(self, st: Station, unit: UnitPlan, work: Work) -> None:
        """A scan of the unit at a station whose outcome is the scan's own (label), or that
        waits for the cycle (trigger: always `identified` first)."""
        base = self._base(st, unit.phase)
        cause = f"{unit.id} scanned at {st.id}"
        if st.program == "trigger" or work.outcome == "recorded":
            self._add(Expect(st.id, "identified", unit.label.key, base, cause))
        else:
            fields = {**base, "reason": work.reason}
            self._add(Expect(st.id, "rejected", unit.label.key, fields, cause))

    def cycle(self, st: Station, unit: UnitPlan, work: Work) -> None:
        """A PLC cycle of the unit (handshake or trigger): its step, or its rejection, with the
        cycle's parameters and result either way."""
        fields = {
            **self._base(st, unit.phase),
            "result": work.result,
            "parameters": parameter_fields(st, work.parameters, self.signal_units[st.id]),
        }
        cause = f"{unit.id} worked at {st.id}"
        if work.outcome == "rejected":
            fields["reason"] = work.reason
            self._add(Expect(st.id, "rejected", unit.label.key, fields, cause))
        else:
            self._add(Expect(st.id, "step.completed", unit.label.key, fields, cause))

    def commissioned(self, st: Station, board: BoardPlan) -> None:
        fields = {
            **self._base(st, board.phase),
            "gtin": board.gtin,
            "serial": board.serial,
            "lot": board.lot,
            "expiry": board.expiry,
            "pool": board.pool,
            "remaining": board.remaining,
        }
        self._add(Expect(st.id, "commissioned", board.key, fields, f"{board.id} marked"))
        low = self.planner.pool_low_after(board.pool)
        if low is not None and board.k + 1 == low:
            doc = {
                "step": None,
                "work_order": None,
                "pool": board.pool,
                "remaining": board.remaining,
            }
            self._add(Expect(None, "pool.low", None, doc, f"{board.id} took the pool below"))

    def aggregated(
        self, st: Station, phase: int, parent: str, children: list[str], cause: str
    ) -> None:
        fields = {
            **self._base(st, phase),
            "action": "add",
            "kind": "assembly" if st.program == "assembly" else "packing",
            "parent": parent,
            "children": list(children),
        }
        self._add(Expect(st.id, "aggregated", parent, fields, cause, tuple(children)))

    def passed(self, st: Station, case: CasePlan) -> None:
        fields = {**self._base(st, case.phase), "direction": st.direction}
        self._add(Expect(st.id, "identified", case.key, fields, f"{case.id} through {st.id}"))

    def work_order_changed(self, phase: int) -> None:
        wo = self.sc.work_orders[phase].work_order
        previous = self.sc.work_orders[phase - 1].work_order if phase else None
        fields = {"step": None, "work_order": wo, "previous": previous}
        self._add(Expect(None, "work_order.changed", None, fields, f"cmd/work-order {wo}"))

    def pool_loaded(self, pool: str, added: int) -> None:
        fields = {
            "step": None,
            "work_order": None,
            "pool": pool,
            "added": added,
            "remaining": added,
        }
        self._add(Expect(None, "pool.loaded", None, fields, f"cmd/serial-pool {pool}"))

    # --- physical facts -------------------------------------------------------------------------

    def done(self, item: str, station: str) -> None:
        self.times[(item, station)] = time.time()
        if self.listener is not None:
            self.listener()

    def fault(
        self, kind: str, target: str | None, stations: tuple[str, ...] = (), note: str = ""
    ) -> FaultRecord:
        rec = FaultRecord(kind, target, time.time(), stations=stations, note=note)
        self.faults.append(rec)
        return rec

    # --- the file -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        p = self.planner

        def unit(u: UnitPlan) -> dict[str, Any]:
            wo = self.sc.work_orders[u.phase].work_order
            route = []
            for w in u.work:
                doc = asdict(w)
                doc["time"] = self.times.get((u.id, w.station))
                route.append(doc)
            return {
                "id": u.id,
                "work_order": wo,
                "key": u.label.key,
                "label": u.label.text(),
                "anomalies": u.anomalies,
                "route": route,
                "board": p.boards[u.board].id if u.board is not None else None,
                "case": p.cases[u.case].id if u.case is not None else None,
            }

        return {
            "scenario": self.sc.line.line,
            "started": self.started,
            "units": [unit(u) for u in p.units.values()],
            "boards": [{**asdict(b), "id": b.id, "key": b.key} for b in p.boards],
            "cases": [
                {**asdict(c), "id": c.id, "key": c.key, "epc": c.epc, "label": c.label}
                for c in p.cases
            ],
            "expected_events": [asdict(e) for e in self.expected],
            "plc_checks": [asdict(c) for c in self.plc_checks],
            "faults": [asdict(f) for f in self.faults],
            "notes": self.notes,
            "stopped": self.stopped,
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n")
