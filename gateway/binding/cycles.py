"""Stations whose cycle a PLC ends: by a trigger edge, or by the request/acknowledge handshake.

Pure like the rest of the binder: PLC `Signals` (a watched signal's change with the snapshot
read in the same request), write outcomes and clock ticks in; events, writes to perform after
a commit, and handshake marks out.

The handshake, level-triggered so that nothing is lost or recorded twice across a restart:

    PLC raises request (data ready)   -> record committed -> verdict, then ack written (after it)
    PLC drops request                 -> ack dropped; the station is idle again

With the record, a *mark* (station, event id, hash of the cycle's data, verdict) is committed in
the same transaction: the station's last recorded cycle. A raised request whose data is that
cycle's (after a restart or a reconnect, or a PLC that dropped and raised its request again for
want of an ack) is acknowledged again and never recorded twice; other data is a new cycle. A PLC
that does not drop its request within `ack_timeout_s` of the ack is reported once
(`handshake.timeout`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.config.models import StationConfig
from gateway.events import (
    HandshakeMark,
    Identity,
    Parameter,
    Signals,
    SignalValue,
    TraceEvent,
    rfc3339,
)
from gateway.identifiers import IdentifierRejected, parse_code

VERDICT_OK = 1
VERDICT_REJECTED = 2
VERDICT_NO_IDENTITY = 3


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """A write the pipeline performs: after the commit of `after` (an event id) when given;
    with `pulse_s`, the opposite value is written that long after (unless written again)."""

    device: str
    signal: str
    value: Any
    after: str | None
    tag: str
    pulse_s: float | None = None


@dataclass
class BindResult:
    events: list[TraceEvent] = field(default_factory=list)
    writes: list[WriteRequest] = field(default_factory=list)
    marks: list[HandshakeMark] = field(default_factory=list)
    notes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # for the log

    def extend(self, other: BindResult) -> None:
        self.events += other.events
        self.writes += other.writes
        self.marks += other.marks
        self.notes += other.notes


@dataclass
class _Handshake:
    mark: HandshakeMark | None = None  # the station's last recorded cycle (persisted)
    active: bool = False  # a raised request is being handled (in memory only)
    acked_at: float | None = None
    timeout_reported: bool = False


class CycleStation:
    """One station whose cycles a PLC ends (trigger or handshake)."""

    def __init__(
        self,
        st: StationConfig,
        units: Mapping[tuple[str, str], str | None],
        mark: HandshakeMark | None = None,
    ) -> None:
        self.st = st
        self.units = units
        ident = st.identity
        self.schemes = frozenset(ident.schemes) if ident is not None else frozenset()
        self.pattern = re.compile(ident.plain_pattern) if ident and ident.plain_pattern else None
        self.device = st.trigger.device if st.trigger else st.handshake.device  # type: ignore[union-attr]
        self._last_trigger: Any = None
        self._unreadable_since: float | None = None
        self._hs = _Handshake(mark=mark)
        self.pending_scan: Identity | None = None  # latest scan from the station's scanners

    @property
    def mark(self) -> HandshakeMark | None:
        """The station's last recorded handshake cycle (kept across a reload)."""
        return self._hs.mark

    # --- observations --------------------------------------------------------------------------

    def signals(self, obs: Signals) -> BindResult:
        if self.st.trigger is not None:
            return self._trigger(obs)
        return self._handshake(obs)

    def _unreadable(self, v: SignalValue, obs: Signals) -> BindResult:
        """The signal that ends this station's cycles cannot be read: say so, once per episode
        (cycles ending meanwhile cannot be seen; the PLC's own state says whether it waits)."""
        if self._unreadable_since is not None:
            return BindResult()
        self._unreadable_since = obs.time
        return BindResult(
            events=[
                TraceEvent(
                    "handshake.error" if self.st.handshake else "trigger.error",
                    obs.time,
                    self.st.id,
                    self.st.step_name,
                    self.st.work_order,
                    reason="signal_unreadable",
                    detail={"device": obs.device, "signal": v.name, "status": v.status},
                )
            ]
        )

    def _ending_signal(self, name: str, obs: Signals) -> SignalValue | BindResult:
        """The value of the signal that ends cycles, if this observation has a good one; else
        what to report (nothing, or the signal being unreadable)."""
        v = obs.get(name)
        if v is None:
            return BindResult()
        if not v.good:
            return self._unreadable(v, obs)
        self._unreadable_since = None
        return v

    def _trigger(self, obs: Signals) -> BindResult:
        trig = self.st.trigger
        assert trig is not None
        v = self._ending_signal(trig.signal, obs)
        if isinstance(v, BindResult):
            return v
        prev, self._last_trigger = self._last_trigger, v.value
        if prev is None:  # no baseline yet (first connect): a level is not an edge
            return BindResult()
        fired = {
            "rising": not prev and bool(v.value),
            "falling": bool(prev) and not v.value,
            "change": v.value != prev,
        }[trig.edge]
        if not fired:
            return BindResult()
        event, _ = self._cycle_event(obs)
        return BindResult(events=[event])

    def _handshake(self, obs: Signals) -> BindResult:
        hs = self.st.handshake
        assert hs is not None
        req = self._ending_signal(hs.request, obs)
        if isinstance(req, BindResult):
            return req
        out = BindResult()
        state = self._hs
        if req.value:
            if state.active and not obs.initial:
                return out  # being handled; the PLC keeps its request up until it sees the ack
            state.active = True
            data_hash = self._hash(obs)
            if state.mark is not None and data_hash == state.mark.data_hash:
                # The cycle recorded last: after a restart or reconnect, or a PLC that dropped
                # and raised its request again without an ack. Acknowledge it; never record it
                # twice.
                out.writes += self._ack_writes(state.mark, after=None)
                out.notes.append(
                    (
                        "handshake_reacknowledged",
                        {
                            "station": self.st.id,
                            "event_id": state.mark.event_id,
                            "initial": obs.initial,
                        },
                    )
                )
                return out
            event, verdict = self._cycle_event(obs)
            state.mark = HandshakeMark(self.st.id, event.event_id, data_hash, verdict)
            state.acked_at, state.timeout_reported = None, False
            out.events.append(event)
            out.marks.append(state.mark)
            out.writes += self._ack_writes(state.mark, after=event.event_id)
        else:
            state.active = False
            ack = obs.get(hs.ack)
            if ack is None or ack.value or not obs.initial:
                out.writes.append(
                    WriteRequest(hs.device, hs.ack, False, None, f"{self.st.id}/ack-drop")
                )
        return out

    def _ack_writes(self, mark: HandshakeMark, after: str | None) -> list[WriteRequest]:
        hs = self.st.handshake
        assert hs is not None
        writes = []
        if hs.verdict is not None:
            writes.append(
                WriteRequest(hs.device, hs.verdict, mark.verdict, after, f"{self.st.id}/verdict")
            )
        writes.append(WriteRequest(hs.device, hs.ack, True, after, f"{self.st.id}/ack"))
        return writes

    def write_done(self, signal: str, tag: str, error: str | None, time: float) -> BindResult:
        hs = self.st.handshake
        if hs is None:
            return BindResult()
        if error is not None:
            return BindResult(
                events=[
                    TraceEvent(
                        "handshake.error",
                        time,
                        self.st.id,
                        self.st.step_name,
                        self.st.work_order,
                        reason="write_failed",
                        detail={
                            "device": hs.device,
                            "signal": signal,
                            "write": tag,
                            "error": error,
                        },
                    )
                ]
            )
        if tag == "ack" and self._hs.active:
            self._hs.acked_at = time
        return BindResult()

    def tick(self, now: float) -> BindResult:
        hs, state = self.st.handshake, self._hs
        if hs is None or not state.active or state.acked_at is None or state.timeout_reported:
            return BindResult()
        if now - state.acked_at < hs.ack_timeout_s:
            return BindResult()
        state.timeout_reported = True
        return BindResult(
            events=[
                TraceEvent(
                    "handshake.timeout",
                    now,
                    self.st.id,
                    self.st.step_name,
                    self.st.work_order,
                    reason="request_not_dropped",
                    detail={
                        "device": hs.device,
                        "request": hs.request,
                        "ack_timeout_s": hs.ack_timeout_s,
                        "event_id": state.mark.event_id if state.mark else None,
                    },
                )
            ]
        )

    # --- the cycle's record --------------------------------------------------------------------

    def _cycle_event(self, obs: Signals) -> tuple[TraceEvent, int]:
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
        try:
            ids = self._identity(obs)
        except IdentifierRejected as exc:
            return TraceEvent(
                "rejected",
                obs.time,
                st.id,
                st.step_name,
                st.work_order,
                parameters=params,
                result=result,
                reason=exc.reason,
                detail={**detail, "message": exc.message},
            ), VERDICT_REJECTED
        if ids is None:
            return TraceEvent(
                "noread",
                obs.time,
                st.id,
                st.step_name,
                st.work_order,
                parameters=params,
                result=result,
                reason="no_identity",
                detail=detail,
            ), VERDICT_NO_IDENTITY
        return TraceEvent(
            "step.completed",
            obs.time,
            st.id,
            st.step_name,
            st.work_order,
            ids=ids,
            parameters=params,
            result=result,
            detail=detail,
        ), VERDICT_OK

    def _identity(self, obs: Signals) -> tuple[Identity, ...] | None:
        """The unit of this cycle: from the PLC signal, else the latest scan at the station;
        () when the station identifies nothing, None when it should have and could not."""
        ident = self.st.identity
        if ident is None:
            return ()
        if ident.signal is not None:
            v = obs.get(ident.signal.signal)
            text = v.value if v is not None and v.good and isinstance(v.value, str) else ""
            if not text.strip("\x00 \x1d"):
                return None
            return (
                parse_code(
                    text,
                    source=ident.signal.device,
                    schemes=self.schemes,
                    plain_pattern=self.pattern,
                ),
            )
        scan, self.pending_scan = self.pending_scan, None
        return (scan,) if scan is not None else None

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

    def _hash(self, obs: Signals) -> str:
        """The cycle's data, as the PLC presents it: what identifies one cycle among others."""
        hs = self.st.handshake
        names = {p.signal for p in self.st.parameters}
        if self.st.result is not None:
            names.add(self.st.result.signal)
        if self.st.identity is not None and self.st.identity.signal is not None:
            names.add(self.st.identity.signal.signal)
        data = sorted(
            (v.name, repr(v.value))
            for v in obs.values
            if v.name in names and (hs is None or v.name != hs.ack)
        )
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:16]
