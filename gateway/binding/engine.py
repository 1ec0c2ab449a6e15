"""The binding engine: turns what devices saw into what the trace records.

- A code read by one of a station's scanners becomes an `identified` event for that station,
  step and work order, with the identity parsed and canonicalised; a code that fails the
  station's rules becomes `rejected` with a reason; a scanner's NOREAD becomes `noread`.
- A PLC station's cycle (trigger edge or handshake, see gateway.binding.cycles) becomes a
  `step.completed` event with its parameters (with tolerances) and result, its identity from a
  PLC signal or the station's latest scan; `rejected` or `noread` when the identity fails.
- An RFID portal's tag reads become one `identified` event per tag pass (see
  gateway.binding.portals); a station's `read_window` opens and closes the reader's inventory.
- Device state changes and losses become `device.state` and `gap` events (no station).
- A station's `outputs` (stack lights, gates) are written after the events that fire them are
  committed.

Nothing here guesses: every anomaly is an explicit event. `plans()` derives what each PLC must
read from the stations that use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.binding.cycles import BindResult, CycleStation, WriteRequest
from gateway.binding.portals import PortalStation, ReadWindow
from gateway.config.models import LineConfig, OutputRule, StationConfig
from gateway.config.plc import ModbusConfig, OpcuaConfig
from gateway.config.rfid import LlrpConfig
from gateway.devices.base import DevicePlan
from gateway.events import (
    DeviceState,
    Gpi,
    HandshakeMark,
    Loss,
    NoRead,
    Observation,
    Scan,
    Signals,
    TagRead,
    Tick,
    TraceEvent,
    WriteDone,
)
from gateway.identifiers import IdentifierRejected, parse_code


@dataclass(frozen=True, slots=True)
class _ScanRules:
    station: str
    step: str
    work_order: str | None
    schemes: frozenset[str]
    plain_pattern: re.Pattern[str] | None

    @classmethod
    def of(cls, st: StationConfig) -> _ScanRules:
        ident = st.identity
        pattern = ident.plain_pattern if ident is not None else None
        schemes = frozenset(ident.schemes) if ident is not None else frozenset()
        return cls(
            st.id,
            st.step_name,
            st.work_order,
            schemes,
            re.compile(pattern) if pattern is not None else None,
        )


_UNBOUND = _ScanRules("", "", None, frozenset({"sgtin", "sscc", "lgtin", "gtin", "plain"}), None)


class Binder:
    """Observations in, `BindResult`s out. Holds only plain state: the handshake and trigger
    state of PLC stations (restored from the journal's marks after a restart)."""

    def __init__(
        self, config: LineConfig, marks: Mapping[str, HandshakeMark] | None = None
    ) -> None:
        marks = marks or {}
        units = {
            (d.id, name): sig.unit
            for d in config.devices
            if isinstance(d, OpcuaConfig | ModbusConfig)
            for name, sig in d.signals.items()
        }
        self._by_scanner: dict[str, _ScanRules] = {}
        self._cycles_by_scanner: dict[str, CycleStation] = {}
        self._cycles: dict[str, list[CycleStation]] = {}
        self._by_station: dict[str, CycleStation] = {}
        self._portals: dict[str, list[PortalStation]] = {}  # reader -> its portals
        self._portal_of: dict[str, PortalStation] = {}  # station -> its portal
        self._windows: dict[str, list[ReadWindow]] = {}  # PLC -> read windows it opens
        self._outputs: dict[str, list[OutputRule]] = {
            st.id: list(st.outputs) for st in config.stations if st.outputs
        }
        antennas = {d.id: d.antennas for d in config.devices if isinstance(d, LlrpConfig)}
        for st in config.stations:
            cycle = None
            if st.trigger is not None or st.handshake is not None:
                cycle = CycleStation(st, units, marks.get(st.id))
                self._cycles.setdefault(cycle.device, []).append(cycle)
                self._by_station[st.id] = cycle
            for src in st.identity.sources if st.identity else ():
                self._by_scanner[src] = _ScanRules.of(st)
                if cycle is not None:
                    self._cycles_by_scanner[src] = cycle
            if st.portal is not None:
                portal = PortalStation(st, antennas.get(st.portal.device, [1]), cycle)
                self._portals.setdefault(portal.reader, []).append(portal)
                self._portal_of[st.id] = portal
            if st.read_window is not None:
                window = ReadWindow(st)
                self._windows.setdefault(window.plc, []).append(window)

    def adopt_passes(self, old: Binder) -> None:
        """Keep the open tag passes of portals a reload leaves unchanged (a reload must not cut
        a pass in two)."""
        for station, portal in self._portal_of.items():
            before = old._portal_of.get(station)
            if before is not None and before.st.portal == portal.st.portal:
                portal.builder.open = before.builder.open

    def flush(self, now: float) -> BindResult:
        """The gateway stops: close the open tag passes (`closed_by: stop`)."""
        out = BindResult()
        for portal in self._portal_of.values():
            out.extend(portal.flush(now, "stop"))
        return self._fire_outputs(out)

    def marks(self) -> dict[str, HandshakeMark]:
        """Handshakes in progress, to hand to the binder of a reloaded configuration."""
        return {st: c.mark for st, c in self._by_station.items() if c.mark is not None}

    def process(self, obs: Observation) -> BindResult:
        if type(obs) is TagRead:  # the hot path: most reads close no pass
            out = BindResult()
            for portal in self._portals.get(obs.device, ()):
                if portal.accepts(obs):
                    closed = portal.read(obs)
                    if closed is not None:
                        out.extend(closed)
            return self._fire_outputs(out) if out.events else out
        out = self._process(obs)
        return self._fire_outputs(out) if self._outputs and out.events else out

    def _fire_outputs(self, out: BindResult) -> BindResult:
        """The writes of the stations' `outputs` for these events, after their commit."""
        for ev in out.events:
            rules = self._outputs.get(ev.station or "")
            for rule in rules or ():
                if _fires(rule, ev):
                    out.writes.append(
                        WriteRequest(
                            rule.device,
                            rule.signal,
                            rule.value,
                            ev.event_id,
                            f"{ev.station}/output",
                            rule.pulse_ms / 1000 if rule.pulse_ms else None,
                        )
                    )
        return out

    def _process(self, obs: Observation) -> BindResult:
        match obs:
            case Scan():
                return self._scan(obs)
            case Signals():
                return self._signals(obs)
            case Gpi():
                return BindResult()  # the reader acts on its inputs itself (inventory: gpi)
            case WriteDone():
                station, _, what = obs.tag.partition("/")
                target = self._by_station.get(station)
                if target is None:
                    return BindResult()
                return target.write_done(obs.signal, what, obs.error, obs.time)
            case Tick():
                return self._tick(obs.time)
            case NoRead():
                r = self._by_scanner.get(obs.device, _UNBOUND)
                return BindResult(
                    events=[
                        TraceEvent(
                            "noread",
                            obs.time,
                            r.station or None,
                            r.step or None,
                            r.work_order,
                            detail={"source": obs.device, "raw": obs.text},
                        )
                    ]
                )
            case DeviceState():
                return BindResult(
                    events=[
                        TraceEvent(
                            "device.state",
                            obs.time,
                            detail={"device": obs.device, "state": obs.state, "detail": obs.detail},
                        )
                    ]
                )
            case Loss():
                return BindResult(
                    events=[
                        TraceEvent(
                            "gap",
                            obs.time,
                            reason=obs.reason,
                            detail={
                                "device": obs.device,
                                "lost": obs.count,
                                "first_time": obs.first_time,
                                "last_time": obs.last_time,
                            },
                        )
                    ]
                )
        raise TypeError(f"not an observation: {obs!r}")  # pragma: no cover

    def _signals(self, obs: Signals) -> BindResult:
        out = BindResult()
        for cycle in self._cycles.get(obs.device, ()):
            out.extend(cycle.signals(obs))
        for window in self._windows.get(obs.device, ()):
            out.extend(window.signals(obs))
        return out

    def _tick(self, now: float) -> BindResult:
        out = BindResult()
        for cycle in self._by_station.values():
            out.extend(cycle.tick(now))
        for portal in self._portal_of.values():
            out.extend(portal.tick(now))
        return out

    def _scan(self, obs: Scan) -> BindResult:
        r = self._by_scanner.get(obs.device, _UNBOUND)
        station, step = r.station or None, r.step or None
        try:
            ident = parse_code(
                obs.text, source=obs.device, schemes=r.schemes, plain_pattern=r.plain_pattern
            )
        except IdentifierRejected as exc:
            return BindResult(
                events=[
                    TraceEvent(
                        "rejected",
                        obs.time,
                        station,
                        step,
                        r.work_order,
                        reason=exc.reason,
                        detail={"message": exc.message, "source": obs.device, "raw": obs.text},
                    )
                ]
            )
        cycle = self._cycles_by_scanner.get(obs.device)
        if cycle is not None:
            cycle.pending_scan = ident  # the unit of the station's next cycle
        return BindResult(
            events=[TraceEvent("identified", obs.time, station, step, r.work_order, ids=(ident,))]
        )


def _fires(rule: OutputRule, ev: TraceEvent) -> bool:
    if ev.type not in rule.events:
        return False
    if rule.result is not None and ev.result != rule.result:
        return False
    if rule.direction is not None:
        p = ev.detail.get("pass")
        return isinstance(p, dict) and p.get("direction") == rule.direction
    return True


def plans(config: LineConfig) -> dict[str, DevicePlan]:
    """What each PLC must read for the stations: the signals that end cycles are watched; the
    cycle's data (identity, parameters, result, and the handshake's ack) is read with them."""
    watch: dict[str, set[str]] = {}
    snap: dict[str, dict[str, list[str]]] = {}
    for st in config.stations:
        if st.read_window is not None:
            watch.setdefault(st.read_window.device, set()).add(st.read_window.signal)
        if st.trigger is not None:
            device, signal = st.trigger.device, st.trigger.signal
        elif st.handshake is not None:
            device, signal = st.handshake.device, st.handshake.request
        else:
            continue
        watch.setdefault(device, set()).add(signal)
        data = [p.signal for p in st.parameters if p.device == device]
        if st.result is not None and st.result.device == device:
            data.append(st.result.signal)
        if (
            st.identity is not None
            and st.identity.signal is not None
            and st.identity.signal.device == device
        ):
            data.append(st.identity.signal.signal)
        if st.handshake is not None:
            data.append(st.handshake.ack)
        group = snap.setdefault(device, {}).setdefault(signal, [])
        group += [d for d in data if d not in group and d != signal]
    return {
        device: DevicePlan(frozenset(names), {k: tuple(v) for k, v in snap.get(device, {}).items()})
        for device, names in watch.items()
    }
