"""The binding engine: turns what devices saw into what the trace records.

- A code read by one of a station's scanners becomes an `identified` event for that station,
  step and work order, with the identity parsed and canonicalised; a code that fails the
  station's rules becomes `rejected` with a reason; a scanner's NOREAD becomes `noread`.
- A PLC station's cycle (trigger edge or handshake, see gateway.binding.cycles) becomes a
  `step.completed` event with its parameters (with tolerances) and result, its identity from a
  PLC signal or the station's latest scan; `rejected` or `noread` when the identity fails.
- Device state changes and losses become `device.state` and `gap` events (no station).

Nothing here guesses: every anomaly is an explicit event. `plans()` derives what each PLC must
read from the stations that use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.binding.cycles import BindResult, CycleStation
from gateway.config.models import LineConfig, StationConfig
from gateway.config.plc import ModbusConfig, OpcuaConfig
from gateway.devices.base import DevicePlan
from gateway.events import (
    DeviceState,
    HandshakeMark,
    Loss,
    NoRead,
    Observation,
    Scan,
    Signals,
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

    def marks(self) -> dict[str, HandshakeMark]:
        """Handshakes in progress, to hand to the binder of a reloaded configuration."""
        return {st: c.mark for st, c in self._by_station.items() if c.mark is not None}

    def process(self, obs: Observation) -> BindResult:
        match obs:
            case Scan():
                return self._scan(obs)
            case Signals():
                out = BindResult()
                for cycle in self._cycles.get(obs.device, ()):
                    out.extend(cycle.signals(obs))
                return out
            case WriteDone():
                station, _, what = obs.tag.partition("/")
                target = self._by_station.get(station)
                if target is None:
                    return BindResult()
                return target.write_done(obs.signal, what, obs.error, obs.time)
            case Tick():
                out = BindResult()
                for cycle in self._by_station.values():
                    out.extend(cycle.tick(obs.time))
                return out
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


def plans(config: LineConfig) -> dict[str, DevicePlan]:
    """What each PLC must read for the stations: the signals that end cycles are watched; the
    cycle's data (identity, parameters, result, and the handshake's ack) is read with them."""
    watch: dict[str, set[str]] = {}
    snap: dict[str, dict[str, list[str]]] = {}
    for st in config.stations:
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
