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

What the cycle was (identity, parameters, rules, commissioning) is gateway.binding.record's;
identities from the station's scanners or portal wait in its window (gateway.binding.window)
until a cycle takes them, or expire as `step.incomplete`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.binding import rules
from gateway.binding.env import Env
from gateway.binding.record import Record, Recorder
from gateway.binding.result import BindResult, WriteRequest
from gateway.binding.window import Read, Window
from gateway.config.models import StationConfig
from gateway.events import HandshakeMark, Identity, Signals, SignalValue, TraceEvent

__all__ = ["BindResult", "CycleStation", "WriteRequest"]


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
        env: Env,
        mark: HandshakeMark | None = None,
    ) -> None:
        self.st = st
        self.env = env
        self.recorder = Recorder(st, units, env)
        self.device = st.trigger.device if st.trigger else st.handshake.device  # type: ignore[union-attr]
        self._last_trigger: Any = None
        self._unreadable_since: float | None = None
        self._hs = _Handshake(mark=mark)
        # Scans and tag passes wait here for a cycle: stations that identify units by
        # scanners or a portal (not by the PLC, and not by commissioning).
        scanned = st.identity is not None and bool(st.identity.sources)
        by_window = (scanned or st.portal is not None) and st.commission is None
        self.window = Window(st.window) if by_window else None
        self._deferred: list[tuple[float, Signals]] = []  # cycles waiting for window.after_ms

    def offer(self, t: float, identity: Identity) -> BindResult:
        """An identity read at this station by its scanners or portal: it waits for a cycle."""
        if self.window is None:
            return BindResult()
        return self._incomplete(self.window.offer(t, identity), t)

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
                    self.env.orders.name(self.st.id),
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
        if self.window is not None and self.window.after_s > 0:
            self._deferred.append((obs.time, obs))  # recorded once its window has closed
            return BindResult()
        return self._recorded(self._record(obs, obs.time))

    def _record(self, obs: Signals, end: float) -> Record:
        candidates = self.window.take(end) if self.window is not None else None
        return self.recorder.record(obs, end, candidates)

    def _recorded(self, rec: Record) -> BindResult:
        return BindResult(events=[rec.event, *rec.events_after], changes=rec.changes)

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
                # and raised its request again without an ack. Acknowledge it (with what was
                # written before its ack, such as its serial, again); never record it twice.
                # `after` the recorded event: nothing to wait for (it is committed), but it
                # ties the ack to these writes (the ack only if they were done).
                mark = state.mark
                again = [
                    WriteRequest(hs.device, signal, value, mark.event_id, f"{self.st.id}/{signal}")
                    for signal, value in mark.written
                ]
                out.writes += again
                first = again[0].tag.partition("/")[2] if again else None
                after = mark.event_id if again else None
                out.writes += self._ack_writes(mark, after=after, if_written=first)
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
            rec = self._record(obs, obs.time)
            event = rec.event
            written = tuple((w.signal, w.value) for w in rec.before_ack)
            state.mark = HandshakeMark(self.st.id, event.event_id, data_hash, rec.verdict, written)
            state.acked_at, state.timeout_reported = None, False
            out.extend(self._recorded(rec))
            out.marks.append(state.mark)
            out.writes += rec.before_ack
            first = rec.before_ack[0].tag.partition("/")[2] if rec.before_ack else None
            out.writes += self._ack_writes(state.mark, after=event.event_id, if_written=first)
        else:
            state.active = False
            ack = obs.get(hs.ack)
            if ack is None or ack.value or not obs.initial:
                out.writes.append(
                    WriteRequest(hs.device, hs.ack, False, None, f"{self.st.id}/ack-drop")
                )
        return out

    def _ack_writes(
        self, mark: HandshakeMark, after: str | None, if_written: str | None = None
    ) -> list[WriteRequest]:
        hs = self.st.handshake
        assert hs is not None
        writes = []
        tag = f"{self.st.id}/"
        if hs.verdict is not None:
            writes.append(
                WriteRequest(
                    hs.device, hs.verdict, mark.verdict, after, tag + "verdict", None, if_written
                )
            )
        writes.append(WriteRequest(hs.device, hs.ack, True, after, tag + "ack", None, if_written))
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
                        self.env.orders.name(self.st.id),
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
        out = BindResult()
        window = self.window
        if window is not None:
            while self._deferred and self._deferred[0][0] + window.after_s <= now:
                end, obs = self._deferred.pop(0)
                out.extend(self._recorded(self._record(obs, end)))
            if not self._deferred:
                out.extend(self._incomplete(window.expired(now), now))
        out.extend(self._handshake_timeout(now))
        return out

    def _incomplete(self, reads: list[Read], now: float) -> BindResult:
        """Identities that no cycle took: `step.incomplete`, one per unit."""
        out = BindResult()
        seen: set[str] = set()
        for r in reads:
            if r.identity.value in seen:
                continue
            seen.add(r.identity.value)
            ev = TraceEvent(
                "step.incomplete",
                r.time,
                self.st.id,
                self.st.step_name,
                self.env.orders.name(self.st.id),
                ids=(r.identity,),
                reason="no_cycle",
                detail={"window_ms": self.st.window.before_ms},
            )
            out.events.append(ev)
            out.changes.append(rules.seen(r.identity, ev.event_id, r.time))
        return out

    def _handshake_timeout(self, now: float) -> BindResult:
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
                    self.env.orders.name(self.st.id),
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

    def _hash(self, obs: Signals) -> str:
        """The cycle's data, as the PLC presents it: what identifies one cycle among others."""
        hs = self.st.handshake
        names = {p.signal for p in self.st.parameters}
        if self.st.result is not None:
            names.add(self.st.result.signal)
        if self.st.identity is not None and self.st.identity.signal is not None:
            names.add(self.st.identity.signal.signal)
        if self.st.commission is not None:
            names.add(self.st.commission.counter)
        data = sorted(
            (v.name, repr(v.value))
            for v in obs.values
            if v.name in names and (hs is None or v.name != hs.ack)
        )
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:16]
