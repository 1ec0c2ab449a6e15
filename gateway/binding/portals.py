"""Portal stations: an RFID reader's tag reads become one `identified` event per tag pass.

Each station with a `portal` owns a PassBuilder (gateway.binding.portal) over its antennas of
the reader. A closed pass is an identity arriving at the station (the tag's EPC decoded,
gateway.identifiers.epc: an SGTIN gives the same key as a DataMatrix of the unit), taken the
station's identity path like a scan (gateway.binding.identify), with `detail.pass` saying when,
how often, on which antennas and which way.

Passes of tags the portal does not want (`schemes`) are ignored and counted, like strays and
filtered reads; the counts are logged when they change (at most every `COUNT_NOTE_S`).

A station's `read_window` (a PLC bool signal) opens and closes the reader's inventory: each
change becomes a write of `inventory` to the reader, performed at once (nothing to commit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.binding.env import Env
from gateway.binding.portal import PassBuilder, TagPass
from gateway.binding.result import BindResult, WriteRequest
from gateway.config.models import StationConfig
from gateway.events import Identity, Signals, TagRead, TraceEvent
from gateway.identifiers import SCHEMES, IdentifierRejected
from gateway.identifiers.epc import epc_identity

# The station's identity path (gateway.binding.identify.Stations.identify).
Identify = Callable[[StationConfig, Identity, float, str, dict[str, Any]], BindResult]

COUNT_NOTE_S = 60.0
ALL_SCHEMES = frozenset(SCHEMES)  # a portal filters by `schemes` itself: ignored, not rejected


@dataclass
class _Counts:
    strays: int = 0
    filtered: int = 0
    ignored: int = 0  # passes of schemes the portal does not want
    noted_at: float = 0.0


class PortalStation:
    def __init__(
        self, st: StationConfig, reader_antennas: list[int], env: Env, identify: Identify
    ) -> None:
        assert st.portal is not None
        self.st = st
        self.env = env
        self.reader = st.portal.device
        self.builder = PassBuilder(st.portal, reader_antennas)
        self.schemes = frozenset(st.portal.schemes)
        self._identify = identify
        self.ignored = 0
        self._noted = _Counts()

    def accepts(self, r: TagRead) -> bool:
        return self.builder.accepts(r)

    def read(self, r: TagRead) -> BindResult | None:
        """None when the read closed no pass (most reads: no allocation on the hot path)."""
        closed = self.builder.read(r)
        return self._events(closed, r.time) if closed else None

    def tick(self, now: float) -> BindResult:
        out = self._events(self.builder.tick(now), now)
        self._note_counts(now, out)
        return out

    def flush(self, now: float, why: str) -> BindResult:
        """Close every open pass (the gateway stops): reported with `closed_by: why`."""
        passes = self.builder.close_all(why)
        return self._events(passes, now)

    def _events(self, passes: list[TagPass], now: float) -> BindResult:
        out = BindResult()
        st = self.st
        for p in passes:
            try:
                ident = epc_identity(p.epc, source=self.reader, schemes=ALL_SCHEMES)
            except IdentifierRejected as exc:
                # Not an EPC at all (odd length, not hex): recorded, never dropped.
                out.events.append(
                    TraceEvent(
                        "rejected",
                        p.last_rx,
                        st.id,
                        st.step_name,
                        self.env.orders.name(st.id),
                        reason=exc.reason,
                        detail={
                            "message": exc.message,
                            "source": self.reader,
                            "raw": p.epc,
                            "pass": p.summary(),
                        },
                    )
                )
                continue
            if self.schemes and ident.scheme not in self.schemes:
                self.ignored += 1
                continue
            detail = {"source": self.reader, "pass": p.summary()}
            out.extend(self._identify(st, ident, p.last_rx, self.reader, detail))
        return out

    def _note_counts(self, now: float, out: BindResult) -> None:
        b, n = self.builder, self._noted
        if (b.strays, b.filtered, self.ignored) == (n.strays, n.filtered, n.ignored):
            return
        if now - n.noted_at < COUNT_NOTE_S:
            return
        fields: dict[str, Any] = {
            "station": self.st.id,
            "device": self.reader,
            "strays": b.strays,
            "filtered_reads": b.filtered,
            "ignored_passes": self.ignored,
            "open_passes": len(b.open),
        }
        out.notes.append(("portal_counts", fields))
        self._noted = _Counts(b.strays, b.filtered, self.ignored, now)


class ReadWindow:
    """A PLC bool signal that opens a reader's inventory while true."""

    def __init__(self, st: StationConfig) -> None:
        assert st.read_window is not None and st.portal is not None
        self.station = st.id
        self.plc = st.read_window.device
        self.signal = st.read_window.signal
        self.reader = st.portal.device
        self._open: bool | None = None

    def signals(self, obs: Signals) -> BindResult:
        v = obs.get(self.signal)
        if v is None or not v.good:
            return BindResult()
        state = bool(v.value)
        if state == self._open and not obs.initial:
            return BindResult()
        self._open = state
        return BindResult(
            writes=[WriteRequest(self.reader, "inventory", state, None, f"{self.station}/window")],
            notes=[
                ("read_window", {"station": self.station, "open": state, "device": self.reader})
            ],
        )
