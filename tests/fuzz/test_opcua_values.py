"""Fuzzing OPC UA value conversion: what a server's variants carry (any built-in type, arrays,
nulls, a type other than the node's) into engineering units; any Python value into a variant
of the node's type, which must then encode on the wire."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from asyncua import ua
from asyncua.ua.ua_binary import variant_to_binary
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.config.plc import OpcuaSignal
from gateway.devices.opcua_values import (
    CONFIG_VARIANT,
    INT_RANGES,
    NotFinite,
    to_engineering,
    to_variant,
)
from tests.fuzz.harness import Known, fuzz, one_input

VT = ua.VariantType
TYPES = sorted(CONFIG_VARIANT)
NUMERIC = {t for t in TYPES if t not in ("bool", "string", "datetime")}


@st.composite
def signals(draw: st.DrawFn) -> OpcuaSignal:
    kind = draw(st.sampled_from(TYPES))
    fields: dict[str, Any] = {"node": "ns=2;s=x", "type": kind, "writable": True}
    if kind in NUMERIC and draw(st.booleans()):
        fields["scale"] = draw(
            st.sampled_from([0.1, 2.0, -1.0, 1e-9, 1e9, 1e300])
            | st.floats(allow_nan=False, allow_infinity=False).filter(bool)  # the config refuses 0
        )
        fields["offset"] = draw(st.sampled_from([0.0, -40.0]) | st.floats(-1e6, 1e6))
    if draw(st.booleans()):
        fields["array_length"] = draw(st.integers(1, 5))
    return OpcuaSignal.model_validate(fields)


datetimes = st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=datetime(9999, 12, 31),
    timezones=st.one_of(
        st.none(),
        st.just(UTC),
        st.builds(timezone, st.sampled_from([timedelta(hours=h) for h in (-12, 0, 5, 14)])),
    ),
)
# What asyncua hands over as Variant.Value: the Python form of each built-in type.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(width=32),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=12),
    datetimes,
    st.uuids(),
    st.builds(ua.LocalizedText, st.text(max_size=8)),
    st.builds(ua.QualifiedName, st.text(max_size=8), st.integers(0, 5)),
    st.builds(ua.NodeId, st.integers(0, 100), st.integers(0, 5)),
    st.builds(ua.StatusCode, st.sampled_from([0, 0x80000000, 0x40000000])),
)
variant_values = (
    scalars | st.lists(scalars, max_size=6) | st.lists(st.lists(scalars, max_size=3), max_size=3)
)
vtypes = st.none() | st.sampled_from(list(VT))

# Findings fixed so far: opcua-float-node-double-value, opcua-scaled-value-not-finite
# (docs/fuzzing.md). A new one goes here with its reproduction.
KNOWN_READ: list[Known] = []


def _recordable(value: Any) -> None:
    """A trace event can carry it: the journal renders parameters with allow_nan=False."""
    json.dumps(value, allow_nan=False)


@fuzz(weight=3)
@given(value=variant_values, sig=signals(), vtype=vtypes)
def test_fuzz_opcua_to_engineering(value: Any, sig: OpcuaSignal, vtype: VT | None) -> None:
    """Any variant value, any node type: an engineering value a trace can record (bool, int,
    finite float, str, None, tuples of those), or NotFinite."""
    with one_input("opcua.to_engineering", KNOWN_READ) as outcome:
        try:
            out = to_engineering(value, sig, vtype)
        except NotFinite as exc:
            assert str(exc)
            outcome.reason = "rejected:not finite"
            return
        _plain(out)
        _recordable(out)
        outcome.reason = f"ok:{type(out).__name__}"


def _plain(value: Any) -> None:
    if isinstance(value, tuple):
        for v in value:
            _plain(v)
    else:
        assert value is None or isinstance(value, bool | int | float | str), value


anything = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(-(2**70), 2**70),
        st.just(10**400),
        st.floats(),
        st.text(max_size=30),
        st.sampled_from(
            [
                "2026-11-25T17:06:24.123456Z",
                "2026-11-25T17:06:24",
                "0001-01-01T00:00:00+14:00",
                "9999-12-31T23:59:59-14:00",
                "2026-02-30T00:00:00Z",
                "now",
                "1e9",
            ]
        ),
        st.binary(max_size=8),
        datetimes,
        st.uuids(),
        st.decimals(allow_nan=True),
        st.complex_numbers(),
    ),
    lambda inner: st.lists(inner, max_size=6) | st.tuples(inner, inner),
    max_leaves=8,
)


def values_for(sig: OpcuaSignal) -> st.SearchStrategy[Any]:
    vt = CONFIG_VARIANT[sig.type]
    one: st.SearchStrategy[Any]
    if vt in INT_RANGES:
        low, high = INT_RANGES[vt]
        one = st.integers(low - 2, high + 2) | st.floats(float(low) - 2.0, float(high) + 2.0)
    elif vt is VT.Boolean:
        one = st.booleans() | st.sampled_from([0, 1, 2])
    elif vt is VT.DateTime:
        one = datetimes | st.floats(-1e12, 1e12) | st.floats()
    elif vt is VT.String:
        one = st.text(max_size=40)
    else:
        one = st.floats(width=32 if vt is VT.Float else 64) | st.integers()
    if sig.array_length is not None:
        one = st.lists(one, min_size=sig.array_length, max_size=sig.array_length) | st.lists(one)
    return st.one_of(one, one, anything)


# Findings fixed so far: opcua-write-huge-int, opcua-write-time-out-of-range,
# opcua-write-scale-zero (docs/fuzzing.md). A new one goes here with its reproduction.
KNOWN_WRITE: list[Known] = []


@fuzz(weight=3)
@given(sig=signals(), data=st.data())
def test_fuzz_opcua_to_variant(sig: OpcuaSignal, data: st.DataObject) -> None:
    """Any value to write, for the node's own type (or another one the server declares): a
    Variant that encodes for the wire, or ValueError / TypeError saying what does not fit."""
    vtype = data.draw(st.just(CONFIG_VARIANT[sig.type]) | st.sampled_from(list(VT)))
    value = data.draw(values_for(sig))
    with one_input("opcua.to_variant", KNOWN_WRITE) as outcome:
        try:
            variant = to_variant(value, sig, vtype)
        except (ValueError, TypeError) as exc:
            assert str(exc)
            outcome.reason = f"rejected:{_why(str(exc))}"
            return
        assert variant.VariantType is vtype
        variant_to_binary(variant)  # what the Write request will carry
        outcome.reason = f"ok:{vtype.name}"


def _why(message: str) -> str:
    kinds = {
        "is not a bool": "not a bool",
        "is not a number": "not a number",
        "is not a finite number": "not finite",
        "is not an integer": "not an integer",
        "is out of range": "out of range",
        "does not fit a Float": "too large for a Float",
        "is not a string": "not a string",
        "has no UTC offset": "time without offset",
        "Invalid isoformat": "not ISO 8601",
        "is not a time": "not a time",
        "is not supported": "type not supported",
        "a list for a scalar": "list for a scalar",
        "an array signal takes a list": "scalar for an array",
        "NaN": "NaN time",
    }
    return next((kind for text, kind in kinds.items() if text in message), message[:40])


# --- what the fuzzers found --------------------------------------------------------------------


def _signal(kind: str, **kw: Any) -> OpcuaSignal:
    return OpcuaSignal.model_validate({"node": "ns=2;s=x", "type": kind, **kw})


def test_bug_a_double_value_on_a_float_node_is_no_overflow() -> None:
    """Fixed: a Double beyond float32 range on a Float node is taken as the double it is."""
    assert to_engineering(1e300, _signal("float32"), VT.Float) == 1e300
    assert to_engineering(3.4028235e38, _signal("float32"), VT.Float) == 3.4028235e38


def test_bug_a_scaled_value_that_overflows_is_not_finite() -> None:
    with pytest.raises(NotFinite, match="non-finite value inf"):
        to_engineering(2**62, _signal("int64", scale=1e300), VT.Int64)
    with pytest.raises(NotFinite, match="non-finite value -inf"):
        to_engineering([1.0, -1e300], _signal("float64", scale=1e300), VT.Double)


def test_bug_a_huge_integer_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="out of range for Double"):
        to_variant(10**400, _signal("float64"), VT.Double)
    with pytest.raises(ValueError, match="out of range for Int32"):
        to_variant(10**400, _signal("int32", scale=0.1), VT.Int32)


def test_bug_epoch_seconds_out_of_range_are_a_value_error() -> None:
    for seconds in (1e20, 6.8e16):
        with pytest.raises(ValueError, match="out of range for a time"):
            to_variant(seconds, _signal("datetime"), VT.DateTime)


def test_bug_writing_a_signal_of_scale_0_is_a_value_error() -> None:
    """Fixed: the config refuses a scale of 0, so no write divides by it."""
    with pytest.raises(ValidationError, match="must not be 0"):
        _signal("int32", scale=0.0)
