"""LLRP 1.1 on the wire, for the reader simulator: the message header, TLV and TV parameters,
the messages a reader sends (encoded here) and the ones a client sends (parsed here into plain
data that the simulator acts on).

Written from the LLRP 1.1 specification (EPCglobal) and its binary encoding, not from a client
library, so that sllurp and Wireshark's dissector judge it independently. Numbers are the
specification's message and parameter types. A fault in what a client sends raises `LlrpError`,
which carries the LLRPStatus parameter a reader answers with: M_* codes for the message itself,
M_ParameterError with a ParameterError (P_* code) for a fault inside a parameter.

Only the C1G2 air protocol exists here. Custom (vendor) parameters are refused, as a reader that
does not know the vendor must do.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final

HEADER: Final = struct.Struct("!HII")  # 3 reserved bits, 3 version bits, 10 type bits; length; id
HEADER_LEN: Final = HEADER.size  # the length field counts these 10 bytes too
MAX_MESSAGE_LEN: Final = 1 << 20  # what this reader accepts from a client


class Msg(IntEnum):
    GET_READER_CAPABILITIES = 1
    GET_READER_CONFIG = 2
    SET_READER_CONFIG = 3
    CLOSE_CONNECTION_RESPONSE = 4
    GET_READER_CAPABILITIES_RESPONSE = 11
    GET_READER_CONFIG_RESPONSE = 12
    SET_READER_CONFIG_RESPONSE = 13
    CLOSE_CONNECTION = 14
    ADD_ROSPEC = 20
    DELETE_ROSPEC = 21
    START_ROSPEC = 22
    STOP_ROSPEC = 23
    ENABLE_ROSPEC = 24
    DISABLE_ROSPEC = 25
    GET_ROSPECS = 26
    ADD_ROSPEC_RESPONSE = 30
    DELETE_ROSPEC_RESPONSE = 31
    START_ROSPEC_RESPONSE = 32
    STOP_ROSPEC_RESPONSE = 33
    ENABLE_ROSPEC_RESPONSE = 34
    DISABLE_ROSPEC_RESPONSE = 35
    GET_ROSPECS_RESPONSE = 36
    ADD_ACCESSSPEC = 40
    DELETE_ACCESSSPEC = 41
    ENABLE_ACCESSSPEC = 42
    DISABLE_ACCESSSPEC = 43
    GET_ACCESSSPECS = 44
    CLIENT_REQUEST_OP = 45
    GET_SUPPORTED_VERSION = 46
    SET_PROTOCOL_VERSION = 47
    ADD_ACCESSSPEC_RESPONSE = 50
    DELETE_ACCESSSPEC_RESPONSE = 51
    ENABLE_ACCESSSPEC_RESPONSE = 52
    DISABLE_ACCESSSPEC_RESPONSE = 53
    GET_ACCESSSPECS_RESPONSE = 54
    CLIENT_REQUEST_OP_RESPONSE = 55
    GET_SUPPORTED_VERSION_RESPONSE = 56
    SET_PROTOCOL_VERSION_RESPONSE = 57
    GET_REPORT = 60
    RO_ACCESS_REPORT = 61
    KEEPALIVE = 62
    READER_EVENT_NOTIFICATION = 63
    ENABLE_EVENTS_AND_REPORTS = 64
    KEEPALIVE_ACK = 72
    ERROR_MESSAGE = 100
    CUSTOM_MESSAGE = 1023


def msg_name(mtype: int) -> str:
    try:
        return Msg(mtype).name
    except ValueError:
        return f"type {mtype}"


class P(IntEnum):
    """TLV parameter types used here (TV types are the `TV_*` constants)."""

    UTC_TIMESTAMP = 128
    GENERAL_DEVICE_CAPABILITIES = 137
    RECEIVE_SENSITIVITY_ENTRY = 139
    PER_ANTENNA_AIR_PROTOCOL = 140
    GPIO_CAPABILITIES = 141
    LLRP_CAPABILITIES = 142
    REGULATORY_CAPABILITIES = 143
    UHF_BAND_CAPABILITIES = 144
    TRANSMIT_POWER_ENTRY = 145
    FREQUENCY_INFORMATION = 146
    FREQUENCY_HOP_TABLE = 147
    FIXED_FREQUENCY_TABLE = 148
    RO_SPEC = 177
    RO_BOUNDARY_SPEC = 178
    RO_SPEC_START_TRIGGER = 179
    PERIODIC_TRIGGER_VALUE = 180
    GPI_TRIGGER_VALUE = 181
    RO_SPEC_STOP_TRIGGER = 182
    AI_SPEC = 183
    AI_SPEC_STOP_TRIGGER = 184
    TAG_OBSERVATION_TRIGGER = 185
    INVENTORY_PARAMETER_SPEC = 186
    RF_SURVEY_SPEC = 187
    LLRP_CONFIGURATION_STATE_VALUE = 217
    IDENTIFICATION = 218
    GPO_WRITE_DATA = 219
    KEEPALIVE_SPEC = 220
    ANTENNA_PROPERTIES = 221
    ANTENNA_CONFIGURATION = 222
    RF_RECEIVER = 223
    RF_TRANSMITTER = 224
    GPI_PORT_CURRENT_STATE = 225
    EVENTS_AND_REPORTS = 226
    RO_REPORT_SPEC = 237
    TAG_REPORT_CONTENT_SELECTOR = 238
    ACCESS_REPORT_SPEC = 239
    TAG_REPORT_DATA = 240
    EPC_DATA = 241
    READER_EVENT_NOTIFICATION_SPEC = 244
    EVENT_NOTIFICATION_STATE = 245
    READER_EVENT_NOTIFICATION_DATA = 246
    GPI_EVENT = 248
    RO_SPEC_EVENT = 249
    CONNECTION_ATTEMPT_EVENT = 256
    CONNECTION_CLOSE_EVENT = 257
    LLRP_STATUS = 287
    FIELD_ERROR = 288
    PARAMETER_ERROR = 289
    C1G2_LLRP_CAPABILITIES = 327
    UHF_C1G2_RF_MODE_TABLE = 328
    UHF_C1G2_RF_MODE_TABLE_ENTRY = 329
    C1G2_INVENTORY_COMMAND = 330
    C1G2_FILTER = 331
    C1G2_RF_CONTROL = 335
    C1G2_SINGULATION_CONTROL = 336
    C1G2_EPC_MEMORY_SELECTOR = 348
    LOOP_SPEC = 355
    CUSTOM = 1023


TV_ANTENNA_ID: Final = 1
TV_FIRST_SEEN_UTC: Final = 2
TV_LAST_SEEN_UTC: Final = 4
TV_PEAK_RSSI: Final = 6
TV_CHANNEL_INDEX: Final = 7
TV_TAG_SEEN_COUNT: Final = 8
TV_ROSPEC_ID: Final = 9
TV_INVENTORY_PARAMETER_SPEC_ID: Final = 10
TV_C1G2_CRC: Final = 11
TV_C1G2_PC: Final = 12
TV_EPC_96: Final = 13
TV_SPEC_INDEX: Final = 14
TV_ACCESS_SPEC_ID: Final = 16
# Value lengths of every TV parameter LLRP 1.1 defines: a TV parameter has no length field.
TV_LENGTHS: Final = {1: 2, 2: 8, 3: 8, 4: 8, 5: 8, 6: 1, 7: 2, 8: 2, 9: 4, 10: 2, 11: 2, 12: 2}
TV_LENGTHS.update({13: 12, 14: 2, 15: 2, 16: 4, 17: 2, 18: 4, 19: 2, 20: 2})


class Status(IntEnum):
    M_SUCCESS = 0
    M_PARAMETER_ERROR = 100
    M_FIELD_ERROR = 101
    M_UNEXPECTED_PARAMETER = 102
    M_MISSING_PARAMETER = 103
    M_DUPLICATE_PARAMETER = 104
    M_OVERFLOW_PARAMETER = 105
    M_OVERFLOW_FIELD = 106
    M_UNKNOWN_PARAMETER = 107
    M_UNKNOWN_FIELD = 108
    M_UNSUPPORTED_MESSAGE = 109
    M_UNSUPPORTED_VERSION = 110
    M_UNSUPPORTED_PARAMETER = 111
    P_PARAMETER_ERROR = 200
    P_FIELD_ERROR = 201
    P_UNEXPECTED_PARAMETER = 202
    P_MISSING_PARAMETER = 203
    P_DUPLICATE_PARAMETER = 204
    P_OVERFLOW_PARAMETER = 205
    P_OVERFLOW_FIELD = 206
    P_UNKNOWN_PARAMETER = 207
    P_UNKNOWN_FIELD = 208
    P_UNSUPPORTED_PARAMETER = 209
    A_INVALID = 300
    A_OUT_OF_RANGE = 301
    R_DEVICE_ERROR = 401


# The M_ code of a fault at message level, and the P_ code of the same fault in a parameter.
_FAULTS: Final = {
    "error": (Status.M_PARAMETER_ERROR, Status.P_PARAMETER_ERROR),
    "field": (Status.M_FIELD_ERROR, Status.P_FIELD_ERROR),
    "unexpected": (Status.M_UNEXPECTED_PARAMETER, Status.P_UNEXPECTED_PARAMETER),
    "missing": (Status.M_MISSING_PARAMETER, Status.P_MISSING_PARAMETER),
    "duplicate": (Status.M_DUPLICATE_PARAMETER, Status.P_DUPLICATE_PARAMETER),
    "unsupported": (Status.M_UNSUPPORTED_PARAMETER, Status.P_UNSUPPORTED_PARAMETER),
}


class LlrpError(Exception):
    """What a client sent is wrong; `status()` is the LLRPStatus parameter to answer with."""

    def __init__(
        self,
        code: Status,
        description: str,
        *,
        param: int | None = None,
        param_code: Status | None = None,
        field_num: int | None = None,
        field_code: Status | None = None,
    ) -> None:
        super().__init__(description)
        self.code, self.description = code, description
        self.param, self.param_code = param, param_code
        self.field_num, self.field_code = field_num, field_code

    def status(self) -> bytes:
        return llrp_status(
            self.code,
            self.description,
            param=self.param,
            param_code=self.param_code,
            field_num=self.field_num,
            field_code=self.field_code,
        )


def fault(kind: str, parent: int | None, text: str, *, field_num: int | None = None) -> LlrpError:
    """A fault of `kind` (see `_FAULTS`) in the parameter `parent`, or in the message if None."""
    m_code, p_code = _FAULTS[kind]
    field_code = Status.A_INVALID if field_num is not None else None
    if parent is None:
        return LlrpError(m_code, text, field_num=field_num, field_code=field_code)
    return LlrpError(
        Status.M_PARAMETER_ERROR,
        text,
        param=parent,
        param_code=p_code,
        field_num=field_num,
        field_code=field_code,
    )


def out_of_range(parent: int | None, field_num: int, text: str) -> LlrpError:
    if parent is None:
        return LlrpError(
            Status.M_FIELD_ERROR, text, field_num=field_num, field_code=Status.A_OUT_OF_RANGE
        )
    return LlrpError(
        Status.M_PARAMETER_ERROR,
        text,
        param=parent,
        param_code=Status.P_FIELD_ERROR,
        field_num=field_num,
        field_code=Status.A_OUT_OF_RANGE,
    )


# --- framing ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    version: int
    type: int
    length: int
    id: int


def parse_header(data: bytes) -> Header:
    word, length, msg_id = HEADER.unpack_from(data)
    return Header((word >> 10) & 0x7, word & 0x3FF, length, msg_id)


def message(mtype: int, msg_id: int, body: bytes = b"", version: int = 1) -> bytes:
    return HEADER.pack(((version & 0x7) << 10) | mtype, HEADER_LEN + len(body), msg_id) + body


def tlv(ptype: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack("!HH", ptype, 4 + len(body)) + body


def tv(ptype: int, value: bytes) -> bytes:
    return bytes([0x80 | ptype]) + value


def utf8v(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("!H", len(raw)) + raw


# --- parameters: splitting, cardinality, fields ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Param:
    type: int
    body: bytes  # after the 4-byte TLV header, or after a TV parameter's type byte
    raw: bytes  # the whole parameter as received


def split_params(data: bytes, parent: int | None) -> list[Param]:
    out: list[Param] = []
    pos = 0
    while pos < len(data):
        first = data[pos]
        if first & 0x80:
            ptype = first & 0x7F
            size = TV_LENGTHS.get(ptype)
            if size is None:
                raise fault("error", parent, f"unknown TV parameter type {ptype}")
            end = pos + 1 + size
            if end > len(data):
                raise fault("error", parent, f"TV parameter {ptype} is truncated")
            out.append(Param(ptype, data[pos + 1 : end], data[pos:end]))
        else:
            if pos + 4 > len(data):
                raise fault("error", parent, "a parameter header is truncated")
            ptype, length = struct.unpack_from("!HH", data, pos)
            ptype &= 0x3FF
            if length < 4 or pos + length > len(data):
                # At the top of a message, the parameter at fault is this one: name it.
                raise fault(
                    "error",
                    ptype if parent is None else parent,
                    f"parameter {ptype} claims {length} bytes, {len(data) - pos} are left",
                )
            end = pos + length
            out.append(Param(ptype, data[pos + 4 : end], data[pos:end]))
        pos = end
    return out


def children(data: bytes, parent: int | None, spec: Mapping[int, str]) -> dict[int, list[Param]]:
    """The parameters in `data`, grouped by type, checked against `spec`: type -> one of "1",
    "0-1", "1-n", "0-n". A custom parameter is refused as unsupported; others as unexpected."""
    found: dict[int, list[Param]] = {t: [] for t in spec}
    for p in split_params(data, parent):
        if p.type not in spec:
            kind = "unsupported" if p.type == P.CUSTOM else "unexpected"
            raise fault(kind, parent, f"parameter {_pname(p.type)} is not {kind} here")
        found[p.type].append(p)
    for ptype, card in spec.items():
        n = len(found[ptype])
        if n == 0 and card in ("1", "1-n"):
            raise fault("missing", parent, f"parameter {_pname(ptype)} is missing")
        if n > 1 and card in ("1", "0-1"):
            raise fault("duplicate", parent, f"parameter {_pname(ptype)} appears {n} times")
    return found


def _pname(ptype: int) -> str:
    try:
        return P(ptype).name
    except ValueError:
        return str(ptype)


def unpack(fmt: str, body: bytes, ptype: int | None) -> tuple[tuple[Any, ...], bytes]:
    """Fixed fields at the start of `body`, and what follows them."""
    st = struct.Struct("!" + fmt)
    if len(body) < st.size:
        raise fault("error", ptype, f"{_pname(ptype) if ptype else 'message'} is too short")
    return st.unpack_from(body), body[st.size :]


def exact(fmt: str, body: bytes, ptype: int | None) -> tuple[Any, ...]:
    values, rest = unpack(fmt, body, ptype)
    if rest:
        raise fault("error", ptype, f"{_pname(ptype) if ptype else 'message'} is too long")
    return values


# --- what a client sends ------------------------------------------------------------------------


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


# --- what a reader sends ------------------------------------------------------------------------


def llrp_status(
    code: int = Status.M_SUCCESS,
    description: str = "",
    *,
    param: int | None = None,
    param_code: int | None = None,
    field_num: int | None = None,
    field_code: int | None = None,
) -> bytes:
    field_error = b""
    if field_num is not None and field_code is not None:
        field_error = tlv(P.FIELD_ERROR, struct.pack("!HH", field_num, field_code))
    inner: list[bytes] = []
    if param is not None and param_code is not None:
        inner.append(tlv(P.PARAMETER_ERROR, struct.pack("!HH", param, param_code), field_error))
    elif field_error:
        inner.append(field_error)
    return tlv(P.LLRP_STATUS, struct.pack("!H", code), utf8v(description), *inner)


def supported_version(current: int, supported: int) -> bytes:
    """The fields of GET_SUPPORTED_VERSION_RESPONSE, before its LLRPStatus."""
    return struct.pack("!BB", current, supported)


def reader_event(time_us: int, *events: bytes) -> bytes:
    """The ReaderEventNotificationData parameter (a READER_EVENT_NOTIFICATION's body)."""
    stamp = tlv(P.UTC_TIMESTAMP, struct.pack("!Q", time_us))
    return tlv(P.READER_EVENT_NOTIFICATION_DATA, stamp, *events)


def connection_attempt_event(status: int) -> bytes:
    return tlv(P.CONNECTION_ATTEMPT_EVENT, struct.pack("!H", status))


def connection_close_event() -> bytes:
    return tlv(P.CONNECTION_CLOSE_EVENT)


def gpi_event(port: int, state: bool) -> bytes:
    return tlv(P.GPI_EVENT, struct.pack("!HB", port, 0x80 if state else 0))


def rospec_event(kind: int, rospec_id: int, preempting: int = 0) -> bytes:
    """kind: 0 start, 1 end, 2 preemption."""
    return tlv(P.RO_SPEC_EVENT, struct.pack("!BII", kind, rospec_id, preempting))


@dataclass(frozen=True, slots=True)
class TagRead:
    """One TagReportData: a tag seen `count` times on one antenna between the timestamps."""

    epc: str  # hex
    antenna: int
    rssi: int  # dBm
    first_us: int
    last_us: int
    count: int
    rospec_id: int
    spec_index: int = 1
    inventory_spec_id: int = 1
    channel: int = 1


def epc_bits(epc: str) -> int:
    return 4 * len(epc)


def pc_word(epc: str) -> int:
    """The Gen2 Protocol Control word: EPC length in 16-bit words, no user memory, no XPC."""
    return ((epc_bits(epc) + 15) // 16) << 11


def crc16(data: bytes) -> int:
    """The Gen2 CRC-16 (ISO/IEC 13239: polynomial 0x1021, preset 0xFFFF, complemented)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc ^ 0xFFFF


def epc_bytes(epc: str) -> bytes:
    return bytes.fromhex(epc + "0" * (len(epc) % 2))


def tag_report_data(read: TagRead, sel: ContentSelector) -> bytes:
    """TagReportData with the fields `sel` enables, in the specification's order."""
    raw = epc_bytes(read.epc)
    if epc_bits(read.epc) == 96:
        parts = [tv(TV_EPC_96, raw)]  # the compact form, required for 96-bit EPCs
    else:
        parts = [tlv(P.EPC_DATA, struct.pack("!H", epc_bits(read.epc)), raw)]
    optional = (
        (sel.rospec_id, TV_ROSPEC_ID, "I", read.rospec_id),
        (sel.spec_index, TV_SPEC_INDEX, "H", read.spec_index),
        (sel.inventory_spec_id, TV_INVENTORY_PARAMETER_SPEC_ID, "H", read.inventory_spec_id),
        (sel.antenna_id, TV_ANTENNA_ID, "H", read.antenna),
        (sel.peak_rssi, TV_PEAK_RSSI, "b", read.rssi),
        (sel.channel_index, TV_CHANNEL_INDEX, "H", read.channel),
        (sel.first_seen, TV_FIRST_SEEN_UTC, "Q", read.first_us),
        (sel.last_seen, TV_LAST_SEEN_UTC, "Q", read.last_us),
        (sel.seen_count, TV_TAG_SEEN_COUNT, "H", read.count),
    )
    parts += [tv(t, struct.pack("!" + fmt, v)) for on, t, fmt, v in optional if on]
    pc = pc_word(read.epc)
    if sel.pc_bits:
        parts.append(tv(TV_C1G2_PC, struct.pack("!H", pc)))
    if sel.crc:
        parts.append(tv(TV_C1G2_CRC, struct.pack("!H", crc16(struct.pack("!H", pc) + raw))))
    if sel.access_spec_id:
        parts.append(tv(TV_ACCESS_SPEC_ID, struct.pack("!I", 0)))  # no AccessSpec ran
    return tlv(P.TAG_REPORT_DATA, *parts)


def ro_access_report(reads: Iterable[TagRead], sel: ContentSelector) -> bytes:
    return b"".join(tag_report_data(r, sel) for r in reads)


@dataclass(frozen=True, slots=True)
class RfMode:
    """A UHFC1G2RFModeTableEntry."""

    id: int
    m: int  # 0 FM0, 1 Miller-2, 2 Miller-4, 3 Miller-8
    bdr: int  # backscatter data rate, bit/s
    pie: int  # 1000 x PIE ratio
    min_tari: int  # ns
    max_tari: int
    step_tari: int = 0
    dr_64_3: bool = True
    flm: int = 0  # forward link modulation: 0 PR-ASK, 1 SSB-ASK, 2 DSB-ASK
    mask: int = 2  # spectral mask: 1 single, 2 multi, 3 dense interrogator
    conformant: bool = False


@dataclass(frozen=True, slots=True)
class ReaderModel:
    """What GET_READER_CAPABILITIES reports for a reader model."""

    name: str
    manufacturer: int  # IANA private enterprise number
    model_number: int
    firmware: str
    power_table_cdbm: Sequence[int]  # transmit power per index 1..n, in 1/100 dBm
    modes: Sequence[RfMode]
    num_gpi: int = 4
    num_gpo: int = 4
    country: int = 276  # ISO 3166 numeric
    comm_standard: int = 2  # 2: ETSI EN 302 208
    hopping: bool = False
    frequencies_khz: Sequence[int] = (865700, 866300, 866900, 867500)
    max_rospecs: int = 8
    antennas: int = 4

    def power_dbm(self, index: int) -> float:
        return self.power_table_cdbm[index - 1] / 100


def capabilities(model: ReaderModel, antennas: int, requested: int) -> bytes:
    """The parameters of GET_READER_CAPABILITIES_RESPONSE after its LLRPStatus."""
    general = tlv(
        P.GENERAL_DEVICE_CAPABILITIES,
        struct.pack("!HHII", antennas, 0x4000, model.manufacturer, model.model_number),
        utf8v(model.firmware),  # flags: no antenna properties to set, a UTC clock
        tlv(P.RECEIVE_SENSITIVITY_ENTRY, struct.pack("!Hh", 1, 0)),
        tlv(P.GPIO_CAPABILITIES, struct.pack("!HH", model.num_gpi, model.num_gpo)),
        *(
            tlv(P.PER_ANTENNA_AIR_PROTOCOL, struct.pack("!HHB", a, 1, 1))
            for a in range(1, antennas + 1)
        ),
    )
    # Flags: only SupportsEventAndReportHolding. One AISpec per ROSpec, one
    # InventoryParameterSpec per AISpec. The limits cannot say "no AccessSpecs" (0 means "no
    # limit", as Wireshark shows it): one AccessSpec of one OpSpec, which the simulator refuses.
    llrp = tlv(
        P.LLRP_CAPABILITIES,
        struct.pack("!BBHIIIII", 0x08, 7, 0, model.max_rospecs, 1, 1, 1, 1),
    )
    freqs = b"".join(struct.pack("!I", f) for f in model.frequencies_khz)
    n = len(model.frequencies_khz)
    table = (
        tlv(P.FREQUENCY_HOP_TABLE, struct.pack("!BBH", 1, 0, n), freqs)
        if model.hopping
        else tlv(P.FIXED_FREQUENCY_TABLE, struct.pack("!H", n), freqs)
    )
    band = tlv(
        P.UHF_BAND_CAPABILITIES,
        *(
            tlv(P.TRANSMIT_POWER_ENTRY, struct.pack("!Hh", i, cdbm))
            for i, cdbm in enumerate(model.power_table_cdbm, start=1)
        ),
        tlv(P.FREQUENCY_INFORMATION, bytes([0x80 if model.hopping else 0]), table),
        tlv(P.UHF_C1G2_RF_MODE_TABLE, *(_rf_mode(m) for m in model.modes)),
    )
    regulatory = tlv(
        P.REGULATORY_CAPABILITIES, struct.pack("!HH", model.country, model.comm_standard), band
    )
    air = tlv(P.C1G2_LLRP_CAPABILITIES, struct.pack("!BH", 0, 2))
    chosen = {1: [general], 2: [llrp], 3: [regulatory], 4: [air]}
    return b"".join(chosen.get(requested, [general, llrp, regulatory, air]))


def _rf_mode(m: RfMode) -> bytes:
    flags = (0x80 if m.dr_64_3 else 0) | (0x40 if m.conformant else 0)
    return tlv(
        P.UHF_C1G2_RF_MODE_TABLE_ENTRY,
        struct.pack("!IBBBB", m.id, flags, m.m, m.flm, m.mask),
        struct.pack("!IIIII", m.bdr, m.pie, m.min_tari, m.max_tari, m.step_tari),
    )


# Reader configuration parameters (GET_READER_CONFIG_RESPONSE)


def identification(mac: bytes) -> bytes:
    return tlv(P.IDENTIFICATION, struct.pack("!BH", 0, len(mac)), mac)  # 0: MAC (EUI-64)


def antenna_properties(antenna: int, connected: bool = True, gain_cdbi: int = 0) -> bytes:
    flags = 0x80 if connected else 0
    return tlv(P.ANTENNA_PROPERTIES, struct.pack("!BHh", flags, antenna, gain_cdbi))


def antenna_configuration(
    antenna: int,
    *,
    sensitivity: int,
    channel: int,
    power_index: int,
    mode_index: int,
    tari: int,
    session: int,
    population: int,
    transit_ms: int,
) -> bytes:
    inventory = tlv(
        P.C1G2_INVENTORY_COMMAND,
        b"\x00",
        tlv(P.C1G2_RF_CONTROL, struct.pack("!HH", mode_index, tari)),
        tlv(P.C1G2_SINGULATION_CONTROL, struct.pack("!BHI", session << 6, population, transit_ms)),
    )
    return tlv(
        P.ANTENNA_CONFIGURATION,
        struct.pack("!H", antenna),
        tlv(P.RF_RECEIVER, struct.pack("!H", sensitivity)),
        tlv(P.RF_TRANSMITTER, struct.pack("!HHH", 1, channel, power_index)),
        inventory,
    )


def event_notification_spec(states: Mapping[int, bool]) -> bytes:
    return tlv(
        P.READER_EVENT_NOTIFICATION_SPEC,
        *(
            tlv(P.EVENT_NOTIFICATION_STATE, struct.pack("!HB", ev, 0x80 if on else 0))
            for ev, on in sorted(states.items())
        ),
    )


def ro_report_spec(spec: ReportSpec) -> bytes:
    flags = sum(0x8000 >> i for i, name in enumerate(CONTENT_FLAGS) if getattr(spec.content, name))
    memory = (0x80 if spec.content.crc else 0) | (0x40 if spec.content.pc_bits else 0)
    selector = tlv(
        P.TAG_REPORT_CONTENT_SELECTOR,
        struct.pack("!H", flags),
        tlv(P.C1G2_EPC_MEMORY_SELECTOR, bytes([memory])),
    )
    return tlv(P.RO_REPORT_SPEC, struct.pack("!BH", spec.trigger, spec.n), selector)


def access_report_spec(trigger: int) -> bytes:
    return tlv(P.ACCESS_REPORT_SPEC, bytes([trigger]))


def configuration_state(value: int) -> bytes:
    return tlv(P.LLRP_CONFIGURATION_STATE_VALUE, struct.pack("!I", value))


def keepalive_spec(kind: int, interval_ms: int) -> bytes:
    return tlv(P.KEEPALIVE_SPEC, struct.pack("!BI", kind, interval_ms))


def gpi_port_state(port: int, enabled: bool, state: int) -> bytes:
    """state: 0 low, 1 high, 2 unknown."""
    return tlv(P.GPI_PORT_CURRENT_STATE, struct.pack("!HBB", port, 0x80 if enabled else 0, state))


def gpo_write_data(port: int, data: bool) -> bytes:
    return tlv(P.GPO_WRITE_DATA, struct.pack("!HB", port, 0x80 if data else 0))


def events_and_reports(hold: bool) -> bytes:
    return tlv(P.EVENTS_AND_REPORTS, bytes([0x80 if hold else 0]))


def rospec_with_state(raw: bytes, state: int) -> bytes:
    """An added ROSpec parameter with its CurrentState field (after type, length, ID, priority)
    set to `state` (0 disabled, 1 inactive, 2 active)."""
    return raw[:9] + bytes([state]) + raw[10:]
