"""The record of one PLC cycle: its identity, parameters, result, and what the station's rules
and commissioning make of it. Pure (gateway.binding.cycles decides *when* a cycle ends; this
decides what it was).

- Identity: from the PLC's string signal (read with the cycle), the station's window of scans
  and tag passes (gateway.binding.window), or a serial from a pool (commissioning). None is a
  `noread`, several are `ambiguous`, one that fails the station's rules is `rejected`.
- The verdict a handshake writes back: 1 recorded, 2 rejected (or the reason's code), 3 no
  identity; commissioning writes the serial before it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.binding import rules
from gateway.binding.env import Env
from gateway.binding.result import WriteRequest
from gateway.config.models import StationConfig
from gateway.config.serialization import VERDICT_NO_IDENTITY, VERDICT_OK
from gateway.events import Identity, Parameter, Signals, SignalValue, TraceEvent, rfc3339
from gateway.identifiers import IdentifierRejected, parse_code
from gateway.trace_index import Change


@dataclass
class Record:
    event: TraceEvent
    verdict: int
    changes: list[Change] = field(default_factory=list)
    events_after: list[TraceEvent] = field(default_factory=list)  # e.g. pool.low
    before_ack: list[WriteRequest] = field(default_factory=list)  # e.g. the serial


class Recorder:
    def __init__(
        self, st: StationConfig, units: Mapping[tuple[str, str], str | None], env: Env
    ) -> None:
        self.st = st
        self.units = units
        self.env = env
        ident = st.identity
        self.schemes = frozenset(ident.schemes) if ident is not None else frozenset()
        self.pattern = re.compile(ident.plain_pattern) if ident and ident.plain_pattern else None

    def record(self, obs: Signals, end: float, candidates: list[Identity] | None) -> Record:
        """The cycle that ended at `end` with the snapshot `obs`; `candidates` are the window's
        identities (None: the station takes its identity from the PLC, or commissions)."""
        st = self.st
        params = {
            p.param_name: self._parameter(p.device, p.signal, p.min, p.max, obs)
            for p in st.parameters
        }
        result = None
        if st.result is not None:
            v = obs.get(st.result.signal)
            if v is not None and v.good:
                result = "OK" if v.value in st.result.ok_values else "NOK"
        detail: dict[str, Any] = {"device": obs.device, "trigger": self._trigger_name()}
        wo = self.env.orders.name(st.id)

        def event(kind: str, ids: tuple[Identity, ...] = (), **kw: Any) -> TraceEvent:
            return TraceEvent(
                kind, end, st.id, st.step_name, wo, ids=ids, parameters=params, result=result,
                **kw,
            )  # fmt: skip

        if st.commission is not None:
            return self._commission(event, detail)
        try:
            ids = self._identity(obs) if candidates is None else candidates
        except IdentifierRejected as exc:
            return Record(
                event("rejected", reason=exc.reason, detail={**detail, "message": exc.message}),
                rules.verdict_code(st, exc.reason),
            )
        if not ids and (st.identity is None and st.portal is None):
            # A station that identifies nothing (a machine's own cycle log): the step alone.
            return Record(event("step.completed", detail=detail), VERDICT_OK)
        if not ids:
            return Record(event("noread", reason="no_identity", detail=detail), VERDICT_NO_IDENTITY)
        if len(ids) > 1:
            ev = event("ambiguous", tuple(ids), reason="several_identities", detail=detail)
            return Record(
                ev, VERDICT_NO_IDENTITY, [rules.seen(i, ev.event_id, end, "candidate") for i in ids]
            )
        [ident] = ids
        refusal = rules.check(st, ident, self.env.view, self.env.orders.current(st.id))
        if refusal is not None:
            ev = event(
                "rejected",
                (ident,),
                reason=refusal.reason,
                detail={**detail, "rule": refusal.rule, "message": refusal.message},
            )
            return Record(
                ev, rules.verdict_code(st, refusal.reason), [rules.seen(ident, ev.event_id, end)]
            )
        ev = event("step.completed", (ident,), detail=detail)
        return Record(ev, VERDICT_OK, [rules.step_done(st, ident, ev.event_id, end, result)])

    def _commission(self, event: Any, detail: dict[str, Any]) -> Record:
        """Take the pool's next serial: `commissioned`, with the serial written before the
        ack; `rejected` (`pool_empty`, `no_work_order`) when there is none to give."""
        st = self.st
        cfg = st.commission
        assert cfg is not None and st.handshake is not None
        order = self.env.orders.current(st.id)
        gtin = cfg.gtin or (order.gtins[0] if order is not None and order.gtins else None)
        pool_detail = {**detail, "pool": cfg.pool}
        if gtin is None:
            ev = event(
                "rejected",
                reason="no_work_order",
                detail={**pool_detail, "message": "no GTIN: give commission.gtin or a work "
                        "order with gtins"},
            )  # fmt: skip
            return Record(ev, rules.verdict_code(st, "no_work_order"))
        probe = event("commissioned")
        taken = self.env.pools.take(cfg.pool, probe.event_id, st.id, probe.time)
        if taken is None:
            ev = event(
                "rejected",
                reason="pool_empty",
                detail={**pool_detail, "message": f"pool {cfg.pool!r} has no serial left"},
            )
            return Record(ev, rules.verdict_code(st, "pool_empty"))
        lot = order.lot if order is not None else None
        expiry = order.expiry if order is not None else None
        text = element_string(gtin, taken.serial, lot, expiry)
        try:
            ident = parse_code(text, source=st.id, schemes=frozenset({"sgtin"}))
        except IdentifierRejected as exc:
            # A serial of a pool loaded without GS1 checks (`gs1: false`) that makes no SGTIN
            # with this GTIN (a space, an empty serial): refused, and used up with it, so it
            # is never offered again. Found by the command fuzzer (docs/fuzzing.md).
            ev = TraceEvent(
                "rejected",
                probe.time,
                st.id,
                st.step_name,
                probe.work_order,
                reason=exc.reason,
                detail={
                    **pool_detail,
                    "serial": taken.serial,
                    "message": f"serial {taken.serial!r} of pool {cfg.pool!r} makes no SGTIN "
                    f"with GTIN {gtin}: {exc.message}",
                },
                event_id=probe.event_id,
            )
            return Record(ev, rules.verdict_code(st, exc.reason), list(taken.changes))
        written = {
            "serial": taken.serial,
            "element_string": text,
            "digital_link": ident.attrs.get("digital_link") or text,
        }[cfg.write_format]
        remaining = self.env.pools.remaining(cfg.pool)
        ev = TraceEvent(
            "commissioned",
            probe.time,
            st.id,
            st.step_name,
            probe.work_order,
            ids=(ident,),
            parameters=probe.parameters,
            result=probe.result,
            detail={**pool_detail, "remaining": remaining, "written": written},
            event_id=probe.event_id,
        )
        tag = f"{st.id}/serial"
        write = WriteRequest(st.handshake.device, cfg.write, written, ev.event_id, tag)
        return Record(
            ev,
            VERDICT_OK,
            [rules.step_done(st, ident, ev.event_id, ev.time, probe.result), *taken.changes],
            [taken.low] if taken.low is not None else [],
            [write],
        )

    def _identity(self, obs: Signals) -> list[Identity]:
        """The unit of this cycle from the PLC's string signal; [] when it holds none."""
        ident = self.st.identity
        if ident is None or ident.signal is None:
            return []
        v = obs.get(ident.signal.signal)
        text = v.value if v is not None and v.good and isinstance(v.value, str) else ""
        if not text.strip("\x00 \x1d"):
            return []
        return [
            parse_code(
                text, source=ident.signal.device, schemes=self.schemes, plain_pattern=self.pattern
            )
        ]

    def _parameter(
        self, device: str, signal: str, low: float | None, high: float | None, obs: Signals
    ) -> Parameter:
        v: SignalValue | None = obs.get(signal) if device == obs.device else None
        unit = self.units.get((device, signal))
        if v is None or not v.good:
            status = "not read" if v is None else v.status
            return Parameter(None, unit, device, low, high, None, None, status)
        in_tol = None
        if (low is not None or high is not None) and isinstance(v.value, int | float):
            in_tol = (low is None or v.value >= low) and (high is None or v.value <= high)
        plc_time = rfc3339(v.source_time) if v.source_time is not None else None
        return Parameter(v.value, unit, device, low, high, in_tol, plc_time)

    def _trigger_name(self) -> str:
        if self.st.trigger is not None:
            return self.st.trigger.signal
        assert self.st.handshake is not None
        return self.st.handshake.request


def element_string(gtin: str, serial: str, lot: str | None, expiry: str | None) -> str:
    """The GS1 element string a marker prints: (01) GTIN, (17) expiry, (10) lot, (21) serial,
    with GS (FNC1) after the variable-length lot."""
    out = f"01{gtin}"
    if expiry is not None:
        out += "17" + expiry[2:4] + expiry[5:7] + expiry[8:10]  # YYYY-MM-DD -> YYMMDD
    if lot is not None:
        out += f"10{lot}\x1d"
    return out + f"21{serial}"
