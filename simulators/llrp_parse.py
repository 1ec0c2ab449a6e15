"""What an LLRP client sends, parsed into plain data that the reader simulator acts on: the
ROSpec of ADD_ROSPEC with its triggers, AISpecs and report spec; SET_READER_CONFIG as a
`ReaderConfigUpdate`; the fields of the other requests.

Each parser checks what the specification asks of the message (cardinality of parameters,
fields in range) and raises `LlrpError` on a fault; what a particular reader model cannot do
is checked by the simulator. Only the C1G2 air protocol exists here. Custom (vendor)
parameters are refused, as a reader that does not know the vendor must do.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from simulators.llrp_wire import (
    LlrpError,
    P,
    Param,
    Status,
    children,
    exact,
    fault,
    out_of_range,
    unpack,
)

__all__ = [
    "CONTENT_FLAGS", "AiSpec", "AntennaConfig", "ConfigRequest", "ContentSelector", "GpiTrigger",
    "InventoryCommand", "ReaderConfigUpdate", "ReportSpec", "RoSpec", "StartTrigger",
    "StopTrigger", "parse_add_rospec", "parse_antenna_config", "parse_custom_message",
    "parse_get_capabilities", "parse_get_reader_config", "parse_set_protocol_version",
    "parse_set_reader_config", "parse_spec_id",
]  # fmt: skip


@dataclass(slots=True)
class GpiTrigger:
    port: int
    event: bool  # the GPI level that fires
    timeout_ms: int


@dataclass(slots=True)
class StartTrigger:
    kind: int  # 0 null, 1 immediate, 2 periodic, 3 GPI
    offset_ms: int = 0
    period_ms: int = 0
    gpi: GpiTrigger | None = None

    NAMES = ("null", "immediate", "periodic", "gpi")


@dataclass(slots=True)
class StopTrigger:
    kind: int  # 0 null, 1 duration, 2 GPI with timeout (AISpec: 3 tag observation)
    duration_ms: int = 0
    gpi: GpiTrigger | None = None
    n_tags: int | None = None  # AISpec stop "upon N tags"

    NAMES = ("null", "duration", "gpi", "tag_observation")


@dataclass(slots=True)
class InventoryCommand:
    state_aware: bool
    filters: int = 0
    mode_index: int | None = None
    tari: int | None = None
    session: int | None = None
    tag_population: int | None = None
    tag_transit_ms: int | None = None


@dataclass(slots=True)
class AntennaConfig:
    antenna: int  # 0: all antennas
    receiver_sensitivity: int | None = None
    hop_table: int | None = None
    channel: int | None = None
    power_index: int | None = None
    inventory: InventoryCommand | None = None


@dataclass(slots=True)
class AiSpec:
    antennas: list[int]  # [0]: all
    stop: StopTrigger
    inventory_specs: list[int]  # InventoryParameterSpecIDs
    antenna_configs: list[AntennaConfig]


CONTENT_FLAGS: Final = (
    "rospec_id",
    "spec_index",
    "inventory_spec_id",
    "antenna_id",
    "channel_index",
    "peak_rssi",
    "first_seen",
    "last_seen",
    "seen_count",
    "access_spec_id",
)


@dataclass(slots=True)
class ContentSelector:
    """TagReportContentSelector (and the C1G2EPCMemorySelector in it)."""

    rospec_id: bool = False
    spec_index: bool = False
    inventory_spec_id: bool = False
    antenna_id: bool = True
    channel_index: bool = False
    peak_rssi: bool = True
    first_seen: bool = True
    last_seen: bool = True
    seen_count: bool = True
    access_spec_id: bool = False
    crc: bool = False
    pc_bits: bool = False

    def enabled(self) -> list[str]:
        names = [*CONTENT_FLAGS, "crc", "pc_bits"]
        return [n for n in names if getattr(self, n)]


@dataclass(slots=True)
class ReportSpec:
    trigger: int  # 0 none, 1 N tags or end of AISpec, 2 ... or end of ROSpec, 3-6 timed
    n: int
    content: ContentSelector = field(default_factory=ContentSelector)

    TRIGGERS = (
        "none",
        "n_tags_or_end_of_aispec",
        "n_tags_or_end_of_rospec",
        "n_seconds",
        "n_seconds_or_end_of_rospec",
        "n_milliseconds",
        "n_milliseconds_or_end_of_rospec",
    )


@dataclass(slots=True)
class RoSpec:
    id: int
    priority: int
    start: StartTrigger
    stop: StopTrigger
    aispecs: list[AiSpec]
    report: ReportSpec | None
    raw: bytes  # the ROSpec parameter as added (GET_ROSPECS returns it, state patched)


@dataclass(slots=True)
class ReaderConfigUpdate:
    reset: bool
    events: dict[int, bool] = field(default_factory=dict)  # EventNotificationState
    antenna_configs: list[AntennaConfig] = field(default_factory=list)
    antenna_properties: list[tuple[int, bool, int]] = field(default_factory=list)
    report: ReportSpec | None = None
    access_report_trigger: int | None = None
    keepalive: tuple[int, int] | None = None  # trigger type, interval ms
    gpo_writes: dict[int, bool] = field(default_factory=dict)
    gpi_configs: dict[int, bool] = field(default_factory=dict)
    hold_events: bool | None = None


@dataclass(frozen=True, slots=True)
class ConfigRequest:
    antenna: int
    requested: int
    gpi_port: int
    gpo_port: int


def parse_spec_id(body: bytes) -> int:
    """The ROSpecID or AccessSpecID of START/STOP/ENABLE/DISABLE/DELETE messages."""
    return int(exact("I", body, None)[0])


def parse_get_capabilities(body: bytes) -> int:
    (requested,), rest = unpack("B", body, None)
    children(rest, None, {})
    if requested > 4:
        raise out_of_range(None, 0, f"RequestedData {requested} does not exist")
    return int(requested)


def parse_get_reader_config(body: bytes) -> ConfigRequest:
    # Field order of the specification: AntennaID, then RequestedData (see the module of
    # the simulator on sllurp, which packs RequestedData first).
    (antenna, requested, gpi, gpo), rest = unpack("HBHH", body, None)
    children(rest, None, {})
    if requested > 11:
        raise out_of_range(None, 1, f"RequestedData {requested} does not exist")
    return ConfigRequest(antenna, requested, gpi, gpo)


def _gpi_trigger(p: Param) -> GpiTrigger:
    port, flags, timeout = exact("HBI", p.body, P.GPI_TRIGGER_VALUE)
    return GpiTrigger(port, bool(flags & 0x80), timeout)


def _start_trigger(p: Param) -> StartTrigger:
    (kind,), rest = unpack("B", p.body, p.type)
    kids = children(rest, p.type, {P.PERIODIC_TRIGGER_VALUE: "0-1", P.GPI_TRIGGER_VALUE: "0-1"})
    trigger = StartTrigger(kind)
    if kind > 3:
        raise out_of_range(p.type, 0, f"ROSpecStartTriggerType {kind} does not exist")
    periodic, gpi = kids[P.PERIODIC_TRIGGER_VALUE], kids[P.GPI_TRIGGER_VALUE]
    if kind == 2:
        if not periodic:
            raise fault("missing", p.type, "a periodic start trigger needs PeriodicTriggerValue")
        (trigger.offset_ms, trigger.period_ms), tail = unpack(
            "II", periodic[0].body, P.PERIODIC_TRIGGER_VALUE
        )
        children(tail, P.PERIODIC_TRIGGER_VALUE, {P.UTC_TIMESTAMP: "0-1"})
    if kind == 3:
        if not gpi:
            raise fault("missing", p.type, "a GPI start trigger needs GPITriggerValue")
        trigger.gpi = _gpi_trigger(gpi[0])
    return trigger


def _stop_trigger(p: Param, extra: Mapping[int, str] | None = None) -> StopTrigger:
    (kind, duration), rest = unpack("BI", p.body, p.type)
    spec: dict[int, str] = {P.GPI_TRIGGER_VALUE: "0-1", **(extra or {})}
    kids = children(rest, p.type, spec)
    top = 3 if extra else 2
    if kind > top:
        raise out_of_range(p.type, 0, f"stop trigger type {kind} does not exist")
    trigger = StopTrigger(kind, duration)
    if kind == 2:
        if not kids[P.GPI_TRIGGER_VALUE]:
            raise fault("missing", p.type, "a GPI stop trigger needs GPITriggerValue")
        trigger.gpi = _gpi_trigger(kids[P.GPI_TRIGGER_VALUE][0])
    if kind == 3:
        obs = kids.get(P.TAG_OBSERVATION_TRIGGER, [])
        if not obs:
            raise fault("missing", p.type, "a tag observation trigger needs its parameter")
        obs_type, _, n_tags, _attempts, _t, _timeout = exact(
            "BBHHHI", obs[0].body, P.TAG_OBSERVATION_TRIGGER
        )
        if obs_type != 0:
            raise LlrpError(
                Status.M_PARAMETER_ERROR,
                f"TagObservationTrigger type {obs_type} is not supported (only upon N tags)",
                param=P.TAG_OBSERVATION_TRIGGER,
                param_code=Status.P_FIELD_ERROR,
                field_num=0,
                field_code=Status.A_INVALID,
            )
        trigger.n_tags = n_tags
    return trigger


def parse_antenna_config(p: Param) -> AntennaConfig:
    (antenna,), rest = unpack("H", p.body, p.type)
    kids = children(
        rest,
        p.type,
        {P.RF_RECEIVER: "0-1", P.RF_TRANSMITTER: "0-1", P.C1G2_INVENTORY_COMMAND: "0-n"},
    )
    conf = AntennaConfig(antenna)
    if kids[P.RF_RECEIVER]:
        (conf.receiver_sensitivity,) = exact("H", kids[P.RF_RECEIVER][0].body, P.RF_RECEIVER)
    if kids[P.RF_TRANSMITTER]:
        conf.hop_table, conf.channel, conf.power_index = exact(
            "HHH", kids[P.RF_TRANSMITTER][0].body, P.RF_TRANSMITTER
        )
    for cmd in kids[P.C1G2_INVENTORY_COMMAND]:
        conf.inventory = _inventory_command(cmd)
    return conf


def _inventory_command(p: Param) -> InventoryCommand:
    (flags,), rest = unpack("B", p.body, p.type)
    kids = children(
        rest,
        p.type,
        {P.C1G2_FILTER: "0-n", P.C1G2_RF_CONTROL: "0-1", P.C1G2_SINGULATION_CONTROL: "0-1"},
    )
    cmd = InventoryCommand(bool(flags & 0x80), filters=len(kids[P.C1G2_FILTER]))
    if kids[P.C1G2_RF_CONTROL]:
        cmd.mode_index, cmd.tari = exact("HH", kids[P.C1G2_RF_CONTROL][0].body, P.C1G2_RF_CONTROL)
    if kids[P.C1G2_SINGULATION_CONTROL]:
        sc = kids[P.C1G2_SINGULATION_CONTROL][0]
        (session, cmd.tag_population, cmd.tag_transit_ms), _ = unpack("BHI", sc.body, sc.type)
        cmd.session = session >> 6
    return cmd


def _report_spec(p: Param) -> ReportSpec:
    (trigger, n), rest = unpack("BH", p.body, p.type)
    if trigger > 6:
        raise out_of_range(p.type, 0, f"ROReportTrigger {trigger} does not exist")
    kids = children(rest, p.type, {P.TAG_REPORT_CONTENT_SELECTOR: "1"})
    sel = kids[P.TAG_REPORT_CONTENT_SELECTOR][0]
    (flags,), tail = unpack("H", sel.body, sel.type)
    content = ContentSelector(
        **{name: bool(flags & (0x8000 >> i)) for i, name in enumerate(CONTENT_FLAGS)}
    )
    for mem in children(tail, sel.type, {P.C1G2_EPC_MEMORY_SELECTOR: "0-n"})[
        P.C1G2_EPC_MEMORY_SELECTOR
    ]:
        (bits,) = exact("B", mem.body, mem.type)
        content.crc, content.pc_bits = bool(bits & 0x80), bool(bits & 0x40)
    return ReportSpec(trigger, n, content)


def _aispec(p: Param) -> AiSpec:
    (count,), rest = unpack("H", p.body, p.type)
    if len(rest) < 2 * count:
        raise fault("error", p.type, "AISpec antenna list is truncated")
    antennas = list(struct.unpack_from(f"!{count}H", rest))
    if not antennas:
        raise fault("field", p.type, "AISpec names no antenna", field_num=0)
    kids = children(
        rest[2 * count :],
        p.type,
        {P.AI_SPEC_STOP_TRIGGER: "1", P.INVENTORY_PARAMETER_SPEC: "1-n"},
    )
    stop = _stop_trigger(kids[P.AI_SPEC_STOP_TRIGGER][0], {P.TAG_OBSERVATION_TRIGGER: "0-1"})
    spec_ids: list[int] = []
    configs: list[AntennaConfig] = []
    for ips in kids[P.INVENTORY_PARAMETER_SPEC]:
        (spec_id, protocol), tail = unpack("HB", ips.body, ips.type)
        if protocol != 1:
            raise out_of_range(ips.type, 1, f"air protocol {protocol} is not supported (C1G2 1)")
        spec_ids.append(spec_id)
        for ac in children(tail, ips.type, {P.ANTENNA_CONFIGURATION: "0-n"})[
            P.ANTENNA_CONFIGURATION
        ]:
            configs.append(parse_antenna_config(ac))
    return AiSpec(antennas, stop, spec_ids, configs)


def parse_add_rospec(body: bytes) -> RoSpec:
    (param,) = children(body, None, {P.RO_SPEC: "1"})[P.RO_SPEC]
    (spec_id, priority, state), rest = unpack("IBB", param.body, P.RO_SPEC)
    spec: dict[int, str] = {P.RO_BOUNDARY_SPEC: "1", P.AI_SPEC: "0-n", P.RF_SURVEY_SPEC: "0-n"}
    kids = children(rest, P.RO_SPEC, spec | {P.LOOP_SPEC: "0-1", P.RO_REPORT_SPEC: "0-1"})
    if spec_id == 0:
        raise out_of_range(P.RO_SPEC, 0, "ROSpecID 0 is reserved")
    if priority > 7:
        raise out_of_range(P.RO_SPEC, 1, f"priority {priority} is above 7")
    if state != 0:
        raise fault("field", P.RO_SPEC, "an ROSpec is added in state Disabled", field_num=2)
    if kids[P.RF_SURVEY_SPEC] or kids[P.LOOP_SPEC]:
        raise fault("unsupported", P.RO_SPEC, "RFSurveySpec and LoopSpec are not supported")
    if not kids[P.AI_SPEC]:
        raise fault("missing", P.RO_SPEC, "an ROSpec needs at least one AISpec")
    bounds = children(
        kids[P.RO_BOUNDARY_SPEC][0].body,
        P.RO_BOUNDARY_SPEC,
        {P.RO_SPEC_START_TRIGGER: "1", P.RO_SPEC_STOP_TRIGGER: "1"},
    )
    report = kids[P.RO_REPORT_SPEC]
    return RoSpec(
        spec_id,
        priority,
        _start_trigger(bounds[P.RO_SPEC_START_TRIGGER][0]),
        _stop_trigger(bounds[P.RO_SPEC_STOP_TRIGGER][0]),
        [_aispec(a) for a in kids[P.AI_SPEC]],
        _report_spec(report[0]) if report else None,
        param.raw,
    )


def parse_set_reader_config(body: bytes) -> ReaderConfigUpdate:
    (flags,), rest = unpack("B", body, None)
    kids = children(
        rest,
        None,
        {
            P.READER_EVENT_NOTIFICATION_SPEC: "0-1",
            P.ANTENNA_PROPERTIES: "0-n",
            P.ANTENNA_CONFIGURATION: "0-n",
            P.RO_REPORT_SPEC: "0-1",
            P.ACCESS_REPORT_SPEC: "0-1",
            P.KEEPALIVE_SPEC: "0-1",
            P.GPO_WRITE_DATA: "0-n",
            P.GPI_PORT_CURRENT_STATE: "0-n",
            P.EVENTS_AND_REPORTS: "0-1",
        },
    )
    update = ReaderConfigUpdate(reset=bool(flags & 0x80))
    for spec in kids[P.READER_EVENT_NOTIFICATION_SPEC]:
        states = children(spec.body, spec.type, {P.EVENT_NOTIFICATION_STATE: "1-n"})
        for st in states[P.EVENT_NOTIFICATION_STATE]:
            event, on = exact("HB", st.body, st.type)
            if event > 9:
                raise out_of_range(st.type, 0, f"event type {event} does not exist")
            update.events[event] = bool(on & 0x80)
    for prop in kids[P.ANTENNA_PROPERTIES]:
        on, antenna, gain = exact("BHh", prop.body, prop.type)
        update.antenna_properties.append((antenna, bool(on & 0x80), gain))
    update.antenna_configs = [parse_antenna_config(a) for a in kids[P.ANTENNA_CONFIGURATION]]
    if kids[P.RO_REPORT_SPEC]:
        update.report = _report_spec(kids[P.RO_REPORT_SPEC][0])
    if kids[P.ACCESS_REPORT_SPEC]:
        (update.access_report_trigger,) = exact(
            "B", kids[P.ACCESS_REPORT_SPEC][0].body, P.ACCESS_REPORT_SPEC
        )
    if kids[P.KEEPALIVE_SPEC]:
        kind, interval = exact("BI", kids[P.KEEPALIVE_SPEC][0].body, P.KEEPALIVE_SPEC)
        if kind > 1:
            raise out_of_range(P.KEEPALIVE_SPEC, 0, f"KeepaliveTriggerType {kind} does not exist")
        update.keepalive = (kind, interval)
    for gpo in kids[P.GPO_WRITE_DATA]:
        port, data = exact("HB", gpo.body, gpo.type)
        update.gpo_writes[port] = bool(data & 0x80)
    for gpi in kids[P.GPI_PORT_CURRENT_STATE]:
        port, enabled, _state = exact("HBB", gpi.body, gpi.type)
        update.gpi_configs[port] = bool(enabled & 0x80)
    for ev in kids[P.EVENTS_AND_REPORTS]:
        (hold,) = exact("B", ev.body, ev.type)
        update.hold_events = bool(hold & 0x80)
    return update


def parse_set_protocol_version(body: bytes) -> int:
    return int(exact("B", body, None)[0])


def parse_custom_message(body: bytes) -> tuple[int, int]:
    """Vendor and subtype of a CUSTOM_MESSAGE."""
    (vendor, subtype), _ = unpack("IB", body, None)
    return int(vendor), int(subtype)
