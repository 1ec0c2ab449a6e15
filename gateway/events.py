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
import math
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

from gateway import clock

SCHEMA: Final = "tracegate.event/1"

# Topic segment used for events that belong to no station (device states, gaps).
NO_STATION: Final = "_gateway"

# The default of mapping fields of these frozen values: one shared immutable empty mapping
# (dataclasses refuse it as a plain default, hence the factories returning it).
EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


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


@dataclass(frozen=True, slots=True)
class SignalValue:
    """One PLC signal as read: `value` already scaled to engineering units (bool, int, float,
    str, or a tuple of those for arrays). `status` is "good", or what went wrong reading it
    (e.g. "BadNodeIdUnknown", "modbus exception 2 (illegal data address)", "timeout"); the value
    is then None. `source_time` / `server_time`: the PLC's own timestamps when the protocol
    carries them (OPC UA), else None."""

    name: str
    value: Any
    status: str = "good"
    source_time: float | None = None
    server_time: float | None = None

    @property
    def good(self) -> bool:
        return self.status == "good"


@dataclass(frozen=True, slots=True)
class Signals:
    """Values of a PLC read together: one change of a watched signal, with the snapshot of
    the signals read in the same request when that change fires (a consistent set of
    parameters for a cycle), or the initial values after (re)connecting (`initial`)."""

    device: str
    time: float
    values: tuple[SignalValue, ...]
    initial: bool = False

    def get(self, name: str) -> SignalValue | None:
        for v in self.values:
            if v.name == name:
                return v
        return None


@dataclass(frozen=True, slots=True)
class WriteDone:
    """The outcome of a write the binder asked for (after a commit): `error` None when the
    PLC took it."""

    device: str
    time: float
    signal: str
    value: Any
    error: str | None = None
    tag: str = ""


@dataclass(frozen=True, slots=True)
class TagRead:
    """One tag report of an RFID reader: `epc` in lowercase hex; `antenna` 1-based; `rssi` the
    peak RSSI in dBm; `seen_count` how often the reader saw it for this report; `first_seen` /
    `last_seen` in seconds since the epoch, by the reader's clock (None when not reported)."""

    device: str
    time: float
    epc: str
    antenna: int | None = None
    rssi: float | None = None
    seen_count: int = 1
    first_seen: float | None = None
    last_seen: float | None = None


@dataclass(frozen=True, slots=True)
class Gpi:
    """A reader input changed (a light barrier, a switch)."""

    device: str
    time: float
    port: int
    state: bool


@dataclass(frozen=True, slots=True)
class Command:
    """A command from the MES (MQTT `{prefix}/gateway/{id}/cmd/{name}`), not yet validated:
    `payload` as received. `reply_to` is where the answer goes (the `.../reply` topic or the MQTT
    5 response topic), `correlation` the MQTT 5 correlation data, echoed back."""

    device: str  # "" (no device: for the queue's accounting)
    time: float
    name: str
    payload: bytes
    reply_to: str
    correlation: bytes | None = None


@dataclass(frozen=True, slots=True)
class Tick:
    """The passing of time, for the binder's timeouts (it has no clock of its own)."""

    time: float
    device: str = ""


Observation = (
    Scan | NoRead | DeviceState | Loss | Signals | WriteDone | TagRead | Gpi | Command | Tick
)


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
    attrs: Mapping[str, str] = field(default_factory=lambda: EMPTY)

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
    """A process parameter captured with an event: value (engineering units), unit, source
    device; with tolerances when configured (`low`, `high`, `in_tolerance`), the PLC's own
    timestamp when it has one, and `status` when it could not be read (value None)."""

    value: Any
    unit: str | None
    source: str
    low: float | None = None
    high: float | None = None
    in_tolerance: bool | None = None
    plc_time: str | None = None
    status: str = "good"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"value": self.value, "unit": self.unit, "source": self.source}
        if self.low is not None:
            doc["low"] = self.low
        if self.high is not None:
            doc["high"] = self.high
        if self.in_tolerance is not None:
            doc["in_tolerance"] = self.in_tolerance
        if self.plc_time is not None:
            doc["plc_time"] = self.plc_time
        if self.status != "good":
            doc["status"] = self.status
        return doc


_random_bits = random.Random(int.from_bytes(os.urandom(32), "big")).getrandbits


def _new_event_id() -> str:
    """A random (version 4) UUID. uuid.uuid4() costs a system call and an object per event;
    ids need uniqueness, not secrecy, so a PRNG seeded from the OS per process does."""
    n = (_random_bits(128) & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class Aggregation:
    """What an `aggregated` event says: `children` put into (`add`) or taken out of (`delete`)
    `parent`, by assembly or packing. Rendered as the event's top-level members."""

    action: str  # "add" or "delete"
    kind: str  # "assembly" or "packing"
    parent: Identity
    children: tuple[Identity, ...]


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One record of the trace. `event_id` is fixed at creation and survives every re-send."""

    type: str
    time: float
    station: str | None = None
    step: str | None = None
    work_order: str | None = None
    ids: tuple[Identity, ...] = ()
    parameters: Mapping[str, Parameter] = field(default_factory=lambda: EMPTY)
    result: str | None = None
    reason: str | None = None
    detail: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    event_id: str = field(default_factory=_new_event_id)
    aggregation: Aggregation | None = None


@dataclass(frozen=True, slots=True)
class HandshakeMark:
    """Committed in the same transaction as a handshake's record, and kept until the PLC has
    dropped its request: what lets a restarted gateway tell a request it already recorded from
    a new one (see gateway.binding.cycles)."""

    station: str
    event_id: str
    data_hash: str
    verdict: int
    # What was written before the verdict (a commissioned serial): written again with a
    # re-acknowledgement, so a PLC never gets an ack for a value it was not given.
    written: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class EventContext:
    """What every event of this gateway carries: who recorded it, under which configuration."""

    gateway: str
    line: str
    config_hash: str


_last_second: list[Any] = [None, ""]


def rfc3339(t: float) -> str:
    """UTC, millisecond precision, `Z` suffix: 2026-11-25T17:06:24.123Z. The part up to the
    second is cached: events come in bursts within the same second."""
    frac, whole = math.modf(t)  # rounded as datetime.fromtimestamp rounds
    us = round(frac * 1e6)
    second = int(whole)
    if us >= 1_000_000:
        second, us = second + 1, us - 1_000_000
    elif us < 0:
        second, us = second - 1, us + 1_000_000
    if second != _last_second[0]:
        _last_second[1] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _last_second[0] = second
    return f"{_last_second[1]}{us // 1000:03d}Z"


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


_q = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) quotes strings with
_BASE_KEYS = frozenset({"scheme", "value", "raw", "source"})


def _qn(value: str | None) -> str:
    return "null" if value is None else _q(value)


def _identity_json(i: Identity) -> str:
    if _BASE_KEYS.intersection(i.attrs):  # never in practice; keep json.dumps' exact semantics
        return _dumps(i.to_json())
    attrs = "".join(f",{_q(k)}:{_q(v)}" for k, v in i.attrs.items())
    return (
        f'{{"scheme":{_q(i.scheme)},"value":{_q(i.value)},"raw":{_q(i.raw)},'
        f'"source":{_q(i.source)}{attrs}}}'
    )


def render_members(event: TraceEvent, ctx: EventContext) -> str:
    """The JSON members of an event, without braces and without `seq`/`recorded` (see compose).

    Written out by hand, per scan: byte for byte what json.dumps of the event's document gives
    (separators `,` `:`, ensure_ascii off, NaN refused), about twice as fast; a property test
    holds the two together (tests/test_events.py)."""
    ids = ",".join(_identity_json(i) for i in event.ids)
    params = (
        _dumps({k: p.to_json() for k, p in event.parameters.items()}) if event.parameters else "{}"
    )
    result = (
        _qn(event.result)
        if event.result is None or isinstance(event.result, str)
        else _dumps(event.result)
    )
    out = (
        f'"event_id":{_q(event.event_id)},"gateway":{_q(ctx.gateway)},"type":{_q(event.type)},'
        f'"time":"{rfc3339(clock.to_wall(event.time))}","line":{_q(ctx.line)},"station":{_qn(event.station)},'
        f'"step":{_qn(event.step)},"work_order":{_qn(event.work_order)},"ids":[{ids}],'
        f'"parameters":{params},"result":{result},"config":{_q(ctx.config_hash)}'
    )
    if event.reason is not None:
        out += f',"reason":{_q(event.reason)}'
    agg = event.aggregation
    if agg is not None:
        children = ",".join(_identity_json(i) for i in agg.children)
        out += (
            f',"action":{_q(agg.action)},"kind":{_q(agg.kind)},'
            f'"parent":{_identity_json(agg.parent)},"children":[{children}]'
        )
    if event.detail:
        out += f',"detail":{_dumps(dict(event.detail))}'
    return out


def compose(seq: int, recorded: float, members: str) -> str:
    """The final event document: done by the journal inside the commit that assigns `seq`."""
    return f'{{"schema":"{SCHEMA}","seq":{seq},"recorded":"{rfc3339(recorded)}",{members}}}'
