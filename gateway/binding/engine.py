"""The binding engine: turns what devices saw into what the trace records.

Today's stations bind by scan: a code read by one of a station's identity sources becomes an
`identified` event for that station, step and work order, with the identity parsed and
canonicalised; a code that fails the station's rules becomes `rejected` with a reason; a scanner's
NOREAD becomes `noread`. Device state changes and losses become `device.state` and `gap` events
(not bound to a station). Nothing here guesses: every anomaly is an explicit event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.config.models import LineConfig, StationConfig
from gateway.events import (
    DeviceState,
    Loss,
    NoRead,
    Observation,
    Scan,
    TraceEvent,
)
from gateway.identifiers import IdentifierRejected, parse_code


@dataclass(frozen=True, slots=True)
class _StationRules:
    station: str
    step: str
    work_order: str | None
    schemes: frozenset[str]
    plain_pattern: re.Pattern[str] | None

    @classmethod
    def of(cls, st: StationConfig) -> _StationRules:
        pattern = st.identity.plain_pattern
        return cls(
            st.id,
            st.step_name,
            st.work_order,
            frozenset(st.identity.schemes),
            re.compile(pattern) if pattern is not None else None,
        )


_UNBOUND = _StationRules("", "", None, frozenset({"sgtin", "sscc", "lgtin", "gtin", "plain"}), None)


class Binder:
    """Stateless today (one event per observation); stations with cycles and windows will
    keep their state here, still as plain data."""

    def __init__(self, config: LineConfig) -> None:
        self._by_device: dict[str, _StationRules] = {}
        for st in config.stations:
            rules = _StationRules.of(st)
            for src in st.identity.sources:
                self._by_device[src] = rules

    def process(self, obs: Observation) -> list[TraceEvent]:
        match obs:
            case Scan():
                return [self._scan(obs)]
            case NoRead():
                r = self._by_device.get(obs.device, _UNBOUND)
                return [
                    TraceEvent(
                        "noread",
                        obs.time,
                        r.station or None,
                        r.step or None,
                        r.work_order,
                        detail={"source": obs.device, "raw": obs.text},
                    )
                ]
            case DeviceState():
                return [
                    TraceEvent(
                        "device.state",
                        obs.time,
                        detail={"device": obs.device, "state": obs.state, "detail": obs.detail},
                    )
                ]
            case Loss():
                return [
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
        raise TypeError(f"not an observation: {obs!r}")  # pragma: no cover

    def _scan(self, obs: Scan) -> TraceEvent:
        r = self._by_device.get(obs.device, _UNBOUND)
        station, step = r.station or None, r.step or None
        try:
            ident = parse_code(
                obs.text, source=obs.device, schemes=r.schemes, plain_pattern=r.plain_pattern
            )
        except IdentifierRejected as exc:
            return TraceEvent(
                "rejected",
                obs.time,
                station,
                step,
                r.work_order,
                reason=exc.reason,
                detail={"message": exc.message, "source": obs.device, "raw": obs.text},
            )
        return TraceEvent("identified", obs.time, station, step, r.work_order, ids=(ident,))
