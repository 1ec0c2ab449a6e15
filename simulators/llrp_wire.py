"""LLRP 1.1 on the wire, the part both directions share: message and parameter type numbers,
status codes and `LlrpError`, the message header, and TLV and TV parameters (built, split into
their parts, checked for cardinality, their fixed fields read).

Written from the LLRP 1.1 specification (EPCglobal) and its binary encoding, not from a client
library, so that sllurp and Wireshark's dissector judge it independently. Numbers are the
specification's message and parameter types. A fault in what a client sends raises `LlrpError`,
which carries the LLRPStatus parameter a reader answers with: M_* codes for the message itself,
M_ParameterError with a ParameterError (P_* code) for a fault inside a parameter. What a client
sends is parsed in `simulators.llrp_parse`, what a reader sends encoded in
`simulators.llrp_encode`; `simulators.llrp_codec` gathers the three.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

__all__ = [
    "HEADER", "HEADER_LEN", "MAX_MESSAGE_LEN", "TV_ACCESS_SPEC_ID", "TV_ANTENNA_ID", "TV_C1G2_CRC",
    "TV_C1G2_PC", "TV_CHANNEL_INDEX", "TV_EPC_96", "TV_FIRST_SEEN_UTC",
    "TV_INVENTORY_PARAMETER_SPEC_ID", "TV_LAST_SEEN_UTC", "TV_LENGTHS", "TV_PEAK_RSSI",
    "TV_ROSPEC_ID", "TV_SPEC_INDEX", "TV_TAG_SEEN_COUNT", "Header", "LlrpError", "Msg", "P",
    "Param", "Status", "children", "exact", "fault", "llrp_status", "message", "msg_name",
    "out_of_range", "parse_header", "split_params", "tlv", "tv", "unpack", "utf8v",
]  # fmt: skip

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


# --- the LLRPStatus parameter (what `LlrpError.status` answers with) ------------------------


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
