"""An identity arrives at a station (a scan, a tag pass): what the trace records.

Pure. The same path for every source, by what the station is:

- an aggregation station: the identity is a parent or a child (gateway.binding.genealogy);
- a station whose PLC ends cycles: `identified` now, and the identity waits in the cycle's window
  (gateway.binding.cycles) for the cycle that records the step;
- any other station: the station's rules decide (gateway.binding.rules): `identified` (the step
  done) or `rejected`; with a `verdict` signal, the verdict is written after the commit.

Scans are parsed here too (format and check digits): a code that fails is `rejected` with the
identifier's reason, and gets the rejection's verdict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.binding import rules
from gateway.binding.cycles import CycleStation
from gateway.binding.env import Env
from gateway.binding.genealogy import AggregationStation
from gateway.binding.result import BindResult, WriteRequest
from gateway.config.models import StationConfig
from gateway.config.serialization import VERDICT_NO_IDENTITY, VERDICT_OK
from gateway.events import Identity, NoRead, Scan, TraceEvent
from gateway.identifiers import SCHEMES, IdentifierRejected, parse_code

ANY_CODE = frozenset(s for s in SCHEMES if s in ("sgtin", "sscc", "lgtin", "gtin", "plain"))


@dataclass(frozen=True, slots=True)
class _ScanRules:
    schemes: frozenset[str]
    plain_pattern: re.Pattern[str] | None

    @classmethod
    def of(cls, st: StationConfig | None) -> _ScanRules:
        ident = st.identity if st is not None else None
        if ident is None:
            return cls(ANY_CODE, None)
        pattern = re.compile(ident.plain_pattern) if ident.plain_pattern is not None else None
        return cls(frozenset(ident.schemes), pattern)


class Stations:
    """The identity path of every station (module docstring)."""

    def __init__(
        self,
        stations: list[StationConfig],
        env: Env,
        cycles: dict[str, CycleStation],
        aggregations: dict[str, AggregationStation],
    ) -> None:
        self.env = env
        self.cycles = cycles
        self.aggregations = aggregations
        self.config = {st.id: st for st in stations}
        self.of_device: dict[str, StationConfig] = {}
        for st in stations:
            for src in st.identity.sources if st.identity else ():
                self.of_device[src] = st
        self._scan_rules = {dev: _ScanRules.of(st) for dev, st in self.of_device.items()}
        self._unbound = _ScanRules.of(None)

    def scan(self, obs: Scan) -> BindResult:
        st = self.of_device.get(obs.device)
        r = self._scan_rules.get(obs.device, self._unbound)
        try:
            ident = parse_code(
                obs.text, source=obs.device, schemes=r.schemes, plain_pattern=r.plain_pattern
            )
        except IdentifierRejected as exc:
            detail = {"message": exc.message, "source": obs.device, "raw": obs.text}
            ev = self._event(st, "rejected", obs.time, reason=exc.reason, detail=detail)
            return self._verdict(st, ev, rules.verdict_code(st, exc.reason) if st else 0)
        if st is None:  # a scanner no station names (validation forbids it; a reload race)
            return BindResult(events=[TraceEvent("identified", obs.time, ids=(ident,))])
        return self.identify(st, ident, obs.time, obs.device, {})

    def noread(self, obs: NoRead) -> BindResult:
        st = self.of_device.get(obs.device)
        ev = self._event(st, "noread", obs.time, detail={"source": obs.device, "raw": obs.text})
        return self._verdict(st, ev, VERDICT_NO_IDENTITY)

    def identify(
        self, st: StationConfig, ident: Identity, t: float, source: str, detail: dict[str, Any]
    ) -> BindResult:
        agg = self.aggregations.get(st.id)
        if agg is not None:
            return agg.offer(ident, t, source, detail)
        cycle = self.cycles.get(st.id)
        if cycle is not None and cycle.window is not None:
            ev = self._event(st, "identified", t, ids=(ident,), detail=detail)
            out = BindResult(events=[ev], changes=[rules.seen(ident, ev.event_id, t)])
            out.extend(cycle.offer(t, ident))
            return out
        refusal = rules.check(st, ident, self.env.view, self.env.orders.current(st.id))
        if refusal is not None:
            ev = self._event(
                st,
                "rejected",
                t,
                ids=(ident,),
                reason=refusal.reason,
                detail={**detail, "rule": refusal.rule, "message": refusal.message},
            )
            out = self._verdict(st, ev, rules.verdict_code(st, refusal.reason))
            out.changes.append(rules.seen(ident, ev.event_id, t))
            return out
        ev = self._event(st, "identified", t, ids=(ident,), detail=detail)
        out = self._verdict(st, ev, VERDICT_OK)
        out.changes.append(rules.step_done(st, ident, ev.event_id, t))
        return out

    def _event(self, st: StationConfig | None, kind: str, t: float, **kw: Any) -> TraceEvent:
        if st is None:
            return TraceEvent(kind, t, **kw)
        return TraceEvent(kind, t, st.id, st.step_name, self.env.orders.name(st.id), **kw)

    def _verdict(self, st: StationConfig | None, ev: TraceEvent, code: int) -> BindResult:
        out = BindResult(events=[ev])
        if st is not None and st.verdict is not None:
            v = st.verdict
            out.writes.append(
                WriteRequest(v.device, v.signal, code, ev.event_id, f"{st.id}/verdict")
            )
        return out
