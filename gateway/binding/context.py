"""Work orders: which one is active, for the line and per station, and changing it.

A work order comes from the `work-order` command, from a station's PLC string signal
(`work_order_signal`), or from the line file (`work_order`, until one of the others sets one).
Each change is a `work_order.changed` event and a durable state entry (`wo:<station>`, `wo:*`
for the line) committed with it, so a restarted gateway stamps the same work order as before.
Pure: the binder hands it changes, it hands back events and state.

Which work order a station's events carry: its own (set for it), else the line's (set for the
whole line), else the line file's `work_order` of the station.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.config.models import LineConfig
from gateway.events import TraceEvent
from gateway.trace_index import StateSet

LINE = "*"


@dataclass(frozen=True, slots=True)
class WorkOrder:
    work_order: str
    product: str | None = None
    gtins: tuple[str, ...] = ()
    lot: str | None = None
    expiry: str | None = None  # YYYY-MM-DD

    def to_json(self) -> dict[str, Any]:
        return {
            "work_order": self.work_order,
            "product": self.product,
            "gtins": list(self.gtins),
            "lot": self.lot,
            "expiry": self.expiry,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> WorkOrder:
        return cls(
            doc["work_order"],
            doc.get("product"),
            tuple(doc.get("gtins") or ()),
            doc.get("lot"),
            doc.get("expiry"),
        )


@dataclass
class Change:
    event: TraceEvent
    state: StateSet


@dataclass
class WorkOrders:
    """The active work orders. `name(station)` is what events are stamped with."""

    defaults: dict[str, str | None]  # station -> the line file's work order
    active: dict[str, WorkOrder] = field(default_factory=dict)  # station or LINE -> set one
    _names: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def of(cls, config: LineConfig, state: Mapping[str, str]) -> WorkOrders:
        wo = cls({st.id: st.work_order for st in config.stations})
        for key, value in state.items():
            if key.startswith("wo:"):
                wo.active[key[3:]] = WorkOrder.from_json(json.loads(value))
        wo._refresh()
        return wo

    def _refresh(self) -> None:
        line = self.active.get(LINE)
        self._names = {}
        for station, default in self.defaults.items():
            own = self.active.get(station)
            chosen = own or line
            self._names[station] = chosen.work_order if chosen is not None else default

    def name(self, station: str | None) -> str | None:
        if station is None:
            return None
        return self._names.get(station)

    def current(self, station: str) -> WorkOrder | None:
        """The work order in force at `station`, with its GTINs, lot and expiry (None when it
        only has the line file's name)."""
        return self.active.get(station) or self.active.get(LINE)

    def set(
        self,
        station: str | None,
        order: WorkOrder | None,
        *,
        time: float,
        source: str,
        correlation_id: str | None = None,
    ) -> Change | None:
        """Make `order` active for `station` (None: the line); None clears it. Returns the event
        and state to commit, or None when nothing changes."""
        scope = station or LINE
        before = self.active.get(scope)
        if before == order:
            return None
        if order is None:
            self.active.pop(scope, None)
        else:
            self.active[scope] = order
        self._refresh()
        detail: dict[str, Any] = {
            "scope": "line" if station is None else "station",
            "previous": before.work_order if before is not None else None,
            "source": source,
        }
        if order is not None:
            detail.update({k: v for k, v in order.to_json().items() if k != "work_order"})
        if correlation_id is not None:
            detail["correlation_id"] = correlation_id
        event = TraceEvent(
            "work_order.changed",
            time,
            station,
            None,
            order.work_order if order is not None else None,
            detail=detail,
        )
        value = json.dumps(order.to_json()) if order is not None else None
        return Change(event, StateSet(event.event_id, f"wo:{scope}", value))
