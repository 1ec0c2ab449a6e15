"""What devices saw (observations) and what the gateway records (trace events).

Observations flow from device adapters to the binder; trace events flow from the binder to the
journal. Both are immutable values with wall-clock times in seconds since the epoch.

The wire format of an event (DESIGN section 4, schema `tracegate.event/1`) is owned here: the
binder's event is rendered to JSON members once, before commit, and the journal composes the final
document with the two members only it knows, `seq` and `recorded`. What is committed is exactly what
is published, byte for byte, on every re-send.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

SCHEMA: Final = "tracegate.event/1"

# Topic segment used for events that belong to no station (device states, gaps).
NO_STATION: Final = "_gateway"


# --- observations (devices -> binding) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scan:
    """A code read by a scanner: the text between two terminators, decoded as Latin-1."""

    device: str
    time: float
    text: str


@dataclass(frozen=True, slots=True)
class NoRead:
    """The scanner was triggered but decoded nothing, and said so (its NOREAD string)."""

    device: str
    time: float
    text: str


@dataclass(frozen=True, slots=True)
class DeviceState:
    """The supervisor saw a device change state: connecting, connected, disconnected, failed."""

    device: str
    time: float
    state: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Loss:
    """Observations of `device` that could not be kept (bounded queue full): `count` of them,
    seen between `first_time` and `last_time`. Becomes a `gap` event."""

    device: str
    time: float
    count: int
    first_time: float
    last_time: float
    reason: str


Observation = Scan | NoRead | DeviceState | Loss


# --- trace events (binding -> journal -> forwarder) ------------------------------------------


@dataclass(frozen=True, slots=True)
class Identity:
    """A canonical identity: `value` is the key two reads of the same unit share, whatever the
    carrier (DataMatrix, Digital Link QR, RFID). `attrs` holds parsed fields such as gtin, serial,
    lot, expiry."""

    scheme: str
    value: str
    raw: str
    source: str
    attrs: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "scheme": self.scheme,
            "value": self.value,
            "raw": self.raw,
            "source": self.source,
        }
        doc.update(self.attrs)
        return doc


@dataclass(frozen=True, slots=True)
class Parameter:
    """A process parameter captured with an event: value, engineering unit, source device."""

    value: float | int | str | bool
    unit: str | None
    source: str

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "unit": self.unit, "source": self.source}


def _new_event_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One record of the trace. `event_id` is fixed at creation and survives every re-send."""

    type: str
    time: float
    station: str | None = None
    step: str | None = None
    work_order: str | None = None
    ids: tuple[Identity, ...] = ()
    parameters: Mapping[str, Parameter] = field(default_factory=dict)
    result: str | None = None
    reason: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    event_id: str = field(default_factory=_new_event_id)


@dataclass(frozen=True, slots=True)
class EventContext:
    """What every event of this gateway carries: who recorded it, under which configuration."""

    gateway: str
    line: str
    config_hash: str


def rfc3339(t: float) -> str:
    """UTC, millisecond precision, `Z` suffix: 2026-11-25T17:06:24.123Z."""
    dt = datetime.fromtimestamp(t, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def render_members(event: TraceEvent, ctx: EventContext) -> str:
    """The JSON members of an event, without braces and without `seq`/`recorded` (see compose)."""
    doc: dict[str, Any] = {
        "event_id": event.event_id,
        "gateway": ctx.gateway,
        "type": event.type,
        "time": rfc3339(event.time),
        "line": ctx.line,
        "station": event.station,
        "step": event.step,
        "work_order": event.work_order,
        "ids": [i.to_json() for i in event.ids],
        "parameters": {k: p.to_json() for k, p in event.parameters.items()},
        "result": event.result,
        "config": ctx.config_hash,
    }
    if event.reason is not None:
        doc["reason"] = event.reason
    if event.detail:
        doc["detail"] = dict(event.detail)
    return _dumps(doc)[1:-1]


def compose(seq: int, recorded: float, members: str) -> str:
    """The final event document: done by the journal inside the commit that assigns `seq`."""
    return f'{{"schema":"{SCHEMA}","seq":{seq},"recorded":"{rfc3339(recorded)}",{members}}}'
