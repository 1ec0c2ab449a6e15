"""Values of the OPC UA adapter: from OPC UA variants to engineering units and back.

Pure functions, no I/O. What a read reports (`SignalValue.value`):
- numbers as `raw * scale + offset`; unscaled integers stay `int`. A Float (float32) node's value
  is the shortest decimal that is the same float32 (`12.1`, not `12.100000381469727`), so what
  a PLC program wrote as 12.1 is recorded as 12.1; scaled results lose the binary noise of one
  multiplication the same way (15 significant digits);
- strings as `str` (a null String as ""), bools as `bool`, arrays as tuples of those;
- DateTime values as RFC 3339 UTC text with microseconds (`2026-11-25T17:06:24.123456Z`): text
  cannot be mistaken for a measurement in a trace, and keeps OPC UA's resolution where the
  events' own times stop at milliseconds; a null DateTime (1601-01-01, OPC UA's "no time") as
  None. Writes take that text, any ISO 8601 text with an offset, or epoch seconds;
- NaN and infinities as value None with a status saying so: they have no place in a JSON trace.
  So is a scaled value that overflows (`NotFinite`). A Double beyond float32 range on a Float
  node is taken as the double it is.

Writes are converted to the node's own variant type (read from its DataType attribute at each
connect): a PLC refuses a value of the right number but another type (BadTypeMismatch).
"""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime
from typing import Any, Final

from asyncua import ua
from asyncua.ua.object_ids import ObjectIds

from gateway.config.plc import SignalBase, ValueType

VT = ua.VariantType

CONFIG_VARIANT: Final[dict[ValueType, ua.VariantType]] = {
    "bool": VT.Boolean,
    "int8": VT.SByte,
    "uint8": VT.Byte,
    "int16": VT.Int16,
    "uint16": VT.UInt16,
    "int32": VT.Int32,
    "uint32": VT.UInt32,
    "int64": VT.Int64,
    "uint64": VT.UInt64,
    "float32": VT.Float,
    "float64": VT.Double,
    "string": VT.String,
    "datetime": VT.DateTime,
}

INT_RANGES: Final[dict[ua.VariantType, tuple[int, int]]] = {
    VT.SByte: (-(2**7), 2**7 - 1),
    VT.Byte: (0, 2**8 - 1),
    VT.Int16: (-(2**15), 2**15 - 1),
    VT.UInt16: (0, 2**16 - 1),
    VT.Int32: (-(2**31), 2**31 - 1),
    VT.UInt32: (0, 2**32 - 1),
    VT.Int64: (-(2**63), 2**63 - 1),
    VT.UInt64: (0, 2**64 - 1),
}

# Standard DataTypes that are subtypes of a built-in type (OPC 10000-6, Part 3 5.8.2): what a
# value of such a node travels as.
_SUBTYPES: Final[dict[int, ua.VariantType]] = {
    ObjectIds.Duration: VT.Double,
    ObjectIds.UtcTime: VT.DateTime,
    ObjectIds.LocaleId: VT.String,
    ObjectIds.NumericRange: VT.String,
    ObjectIds.IntegerId: VT.UInt32,
    ObjectIds.Counter: VT.UInt32,
    ObjectIds.Enumeration: VT.Int32,
}

NULL_DATETIME_YEAR: Final = 1601


def variant_of_datatype(datatype: Any) -> ua.VariantType | None:
    """The variant type values of a node with this DataType (a NodeId) travel as, or None when
    it is not a standard type (a structure, a vendor's enumeration)."""
    if not isinstance(datatype, ua.NodeId) or datatype.NamespaceIndex != 0:
        return None
    ident = datatype.Identifier
    if not isinstance(ident, int):
        return None
    if VT.Boolean <= ident <= VT.DiagnosticInfo:
        return VT(ident)
    return _SUBTYPES.get(ident)


def status_text(code: ua.StatusCode | None) -> str:
    """ "good", or the status name (e.g. "BadNodeIdUnknown")."""
    if code is None or code.is_good():
        return "good"
    return code.name


def epoch(t: datetime | None) -> float | None:
    """Seconds since the epoch of an OPC UA timestamp; None for a missing or null one."""
    if t is None or t.year <= NULL_DATETIME_YEAR:
        return None
    if t.tzinfo is None:  # asyncua decodes to UTC-aware datetimes; be safe with naive ones
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


def iso(t: datetime) -> str | None:
    if t.year <= NULL_DATETIME_YEAR:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_F32 = struct.Struct("<f")


def shortest_float32(x: float) -> float:
    """The shortest decimal that round-trips to the same float32 as `x`; `x` itself when it is
    no float32 (a server may send a Double beyond float32 range for a Float node)."""
    for digits in range(6, 10):
        candidate = float(f"{x:.{digits}g}")
        try:
            if _F32.unpack(_F32.pack(candidate))[0] == x:
                return candidate
        except OverflowError:  # beyond float32 range: not a float32 value
            return x
    return x


class NotFinite(ValueError):
    """A float value that is NaN or infinite."""


def to_engineering(value: Any, sig: SignalBase, vtype: ua.VariantType | None) -> Any:
    """A read value in engineering units (see the module docstring). Raises NotFinite."""
    if isinstance(value, list | tuple):
        return tuple(_scalar_in(v, sig, vtype) for v in value)
    if value is None and sig.type == "string":
        return ""
    return _scalar_in(value, sig, vtype)


def _scalar_in(v: Any, sig: SignalBase, vtype: ua.VariantType | None) -> Any:
    scaled = sig.scale != 1.0 or sig.offset != 0.0
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return _scaled_in(v, sig) if scaled else v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise NotFinite(f"non-finite value {v}")
        if vtype is VT.Float:
            v = shortest_float32(v)
        return _scaled_in(v, sig) if scaled else v
    if isinstance(v, datetime):
        return iso(v)
    if isinstance(v, bytes):
        return v.hex()
    return str(v)


def _scaled_in(v: float, sig: SignalBase) -> float:
    """`v x scale + offset`, without the binary noise of the multiplication; NotFinite when it
    overflows."""
    try:
        x = v * sig.scale + sig.offset
    except OverflowError:  # an int beyond a float's range
        raise NotFinite(f"non-finite value (raw {v} x {sig.scale} + {sig.offset})") from None
    if not math.isfinite(x):
        raise NotFinite(f"non-finite value {x} (raw {v} x {sig.scale} + {sig.offset})")
    return float(f"{x:.15g}")


def to_variant(value: Any, sig: SignalBase, vtype: ua.VariantType) -> ua.Variant:
    """`value` (engineering units) as a variant of the node's own type. Raises ValueError (or
    TypeError) saying what does not fit."""
    if isinstance(value, list | tuple):
        if sig.array_length is None:
            raise ValueError(f"a list for a scalar signal ({sig.type})")
        return ua.Variant([_scalar_out(v, sig, vtype) for v in value], vtype, is_array=True)
    if sig.array_length is not None:
        raise ValueError(f"an array signal takes a list of {sig.array_length}, not {value!r}")
    return ua.Variant(_scalar_out(value, sig, vtype), vtype)


def _scalar_out(v: Any, sig: SignalBase, vtype: ua.VariantType) -> Any:
    scaled = sig.scale != 1.0 or sig.offset != 0.0
    if vtype is VT.Boolean:
        if isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)):
            return bool(v)
        raise ValueError(f"{v!r} is not a bool")
    if vtype in INT_RANGES:
        return _int_out(v, sig, vtype, scaled)
    if vtype in (VT.Float, VT.Double):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"{v!r} is not a number")
        try:  # an int beyond a float's range
            raw = (v - sig.offset) / sig.scale if scaled else float(v)
        except OverflowError:
            raise ValueError(f"{v!r} is out of range for {vtype.name}") from None
        if vtype is VT.Float and math.isfinite(raw) and abs(raw) > 3.4028234663852886e38:
            raise ValueError(f"{v!r} does not fit a Float (float32)")
        return float(raw)
    if vtype is VT.String:
        if not isinstance(v, str):
            raise ValueError(f"{v!r} is not a string")
        return v
    if vtype is VT.DateTime:
        return _datetime_out(v)
    raise ValueError(f"writing a {vtype.name} is not supported")


def _int_out(v: Any, sig: SignalBase, vtype: ua.VariantType, scaled: bool) -> int:
    if not isinstance(v, int | float):
        raise ValueError(f"{v!r} is not a number")
    try:  # an int beyond a float's range cannot be scaled
        raw: float | int = (v - sig.offset) / sig.scale if scaled else v
    except OverflowError:
        raise ValueError(f"{v!r} is out of range for {vtype.name}") from None
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise ValueError(f"{v!r} is not a finite number")
        if scaled:
            raw = round(raw)  # engineering -> raw: the nearest step of the PLC's integer
        elif raw.is_integer():
            raw = int(raw)
        else:
            raise ValueError(f"{v!r} is not an integer ({vtype.name})")
    low, high = INT_RANGES[vtype]
    if not low <= int(raw) <= high:
        raise ValueError(f"{v!r} is out of range for {vtype.name} ({low}..{high})")
    return int(raw)


def _datetime_out(v: Any) -> datetime:
    if isinstance(v, datetime):
        return v if v.tzinfo is not None else v.replace(tzinfo=UTC)
    if isinstance(v, str):
        t = datetime.fromisoformat(v)  # Python 3.11 accepts the `Z` suffix
        if t.tzinfo is None:
            raise ValueError(f"{v!r} has no UTC offset")
        return t
    if isinstance(v, int | float) and not isinstance(v, bool):
        try:
            return datetime.fromtimestamp(v, UTC)
        except (OverflowError, OSError) as exc:  # beyond what a datetime (or the C library) holds
            raise ValueError(f"{v!r} is out of range for a time (epoch seconds): {exc}") from None
    raise ValueError(f"{v!r} is not a time (ISO 8601 text or epoch seconds)")
