"""Fuzzing Modbus value conversion: every signal type, array, bit, string, scaling and byte and
word order; any register words in (as a PLC or a garbled response delivers them), any Python
value out (what a station's output, a verdict or a serial asks to write)."""

from __future__ import annotations

import json
import math
import struct
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.config.plc import ModbusSignal
from gateway.devices.modbus_codec import (
    Codec,
    CodecError,
    NotFinite,
    ReadPlan,
    is_bits,
    plan_reads,
)
from tests.fuzz.harness import Known, fuzz, one_input

TYPES = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"]
TYPES += ["float32", "float64", "string"]
NUMERIC = set(TYPES) - {"bool", "string"}
INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "uint8": (0, 2**8 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
scales = st.one_of(
    st.just((1.0, 0.0)),
    st.just((1.0, 0.0)),
    st.tuples(st.sampled_from([0.1, 0.01, 2.0, -1.0, 1e-9, 1e9]), st.sampled_from([0.0, -40.0])),
    st.tuples(
        st.floats(allow_nan=False, allow_infinity=False).filter(bool),  # the config refuses 0
        st.floats(-1e6, 1e6),
    ),
)


@st.composite
def signals(draw: st.DrawFn) -> ModbusSignal:
    """A signal the config model accepts, of any type, table, bit, length and array size."""
    kind = draw(st.sampled_from(TYPES))
    table = draw(st.sampled_from(["holding_register", "input_register"]))
    fields: dict[str, Any] = {"type": kind, "address": draw(st.integers(0, 200))}
    if kind == "bool":
        table = draw(st.sampled_from(["coil", "discrete_input", "holding_register"]))
        if table == "holding_register" and draw(st.booleans()):
            fields["bit"] = draw(st.integers(0, 15))
    if kind == "string":
        fields["length"] = draw(st.integers(1, 8))
    if kind in NUMERIC:
        fields["scale"], fields["offset"] = draw(scales)
    if draw(st.booleans()):
        fields["array_length"] = draw(st.integers(1, 5))
    fields["writable"] = table in ("coil", "holding_register")
    try:
        return ModbusSignal.model_validate({"table": table, **fields})
    except ValidationError as exc:  # a combination the model refuses is no signal
        raise AssertionError(f"test strategy made an invalid signal: {exc}") from None


codecs = st.builds(
    Codec,
    byte_order=st.sampled_from(["big", "little"]),
    word_order=st.sampled_from(["big", "little"]),
)
words = st.integers(0, 0xFFFF)


def raw_of(sig: ModbusSignal, codec: Codec) -> st.SearchStrategy[list[Any]]:
    n = codec.size(sig)
    return st.lists(st.booleans() if is_bits(sig.table) else words, min_size=n, max_size=n)


def _plain(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(_plain(v) for v in value)
    return isinstance(value, bool | int | float | str)


# Findings fixed so far: modbus-non-finite-value, modbus-encode-huge-int, modbus-encode-scale-zero
# (docs/fuzzing.md). A new one goes here with its reproduction.
KNOWN: list[Known] = []


@fuzz(weight=3)
@given(codec=codecs, sig=signals(), data=st.data())
def test_fuzz_modbus_decode(codec: Codec, sig: ModbusSignal, data: st.DataObject) -> None:
    """Any register words (or bits) of the right count decode without an exception to a value
    of the signal's type (a tuple for an array), or NotFinite for NaN and infinities; any other
    count is the documented ValueError; and a read plan cuts any responses back into one value
    per signal."""
    raw = data.draw(raw_of(sig, codec))
    wrong = data.draw(st.lists(words, max_size=12).filter(lambda r: len(r) != codec.size(sig)))
    plan = plan_reads({"a": sig, "b": sig.model_copy(update={"address": 0})}, "ab", codec)
    results = [
        data.draw(
            st.sampled_from(["timeout", "modbus exception 2 (illegal data address)"])
            | st.lists(
                st.booleans() if is_bits(sig.table) else words, min_size=r.count, max_size=r.count
            )
        )
        for r in plan.reads
    ]
    with one_input("modbus.decode", KNOWN) as outcome:
        with pytest.raises(ValueError, match="words for a signal"):
            codec.decode(sig, wrong)
        outcome.reason = "rejected:wrong word count (ValueError)"
        _split(plan, results)
        try:
            value = codec.decode(sig, raw)
        except NotFinite as exc:
            assert str(exc).startswith("non-finite value")
            outcome.also("rejected:not finite")
            return
        assert _plain(value)
        if sig.array_length is not None:
            assert isinstance(value, tuple) and len(value) == sig.array_length
        outcome.also(f"ok:{sig.type}")
        _recordable(value)


def _split(plan: ReadPlan, results: list[Any]) -> None:
    for sv in plan.split(results):
        assert sv.name in ("a", "b")
        if sv.status == "good":
            assert _plain(sv.value)
            _recordable(sv.value)
        else:
            assert sv.value is None
            assert sv.status in results or sv.status.startswith("non-finite value")


def _recordable(value: Any) -> None:
    """What a trace event can carry: the journal renders parameters with allow_nan=False."""
    json.dumps(value, allow_nan=False)


anything = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(-(2**70), 2**70),
        st.just(10**400),
        st.floats(),
        st.text(max_size=20),
        st.binary(max_size=8),
        st.decimals(allow_nan=True),
        st.fractions(),
        st.complex_numbers(),
    ),
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=8,
)


def values_for(sig: ModbusSignal) -> st.SearchStrategy[Any]:
    """Values of the signal's type and range (mostly), or anything at all."""
    if sig.type == "bool":
        one: st.SearchStrategy[Any] = st.booleans() | st.sampled_from([0, 1, 2])
    elif sig.type == "string":
        assert sig.length is not None
        one = st.text(max_size=2 * sig.length + 2)
    elif sig.type in INT_RANGES:
        low, high = INT_RANGES[sig.type]
        one = st.integers(low - 2, high + 2) | st.floats(float(low) - 2.0, float(high) + 2.0)
    else:
        one = st.floats(width=32 if sig.type == "float32" else 64)
    if sig.array_length is not None:
        n = sig.array_length
        one = st.lists(one, min_size=n, max_size=n) | st.lists(one, max_size=n + 1)
    return st.one_of(one, one, anything)


@fuzz(weight=3)
@given(codec=codecs, sig=signals(), data=st.data())
def test_fuzz_modbus_encode(codec: Codec, sig: ModbusSignal, data: st.DataObject) -> None:
    """Any value: registers (or bits) of the signal's size, or CodecError saying why; what is
    written reads back as what was meant, where the type can hold it."""
    value = data.draw(values_for(sig))
    current = data.draw(st.lists(words, min_size=codec.size(sig), max_size=codec.size(sig)))
    with one_input("modbus.encode", KNOWN) as outcome:
        in_bit = sig.type == "bool" and sig.bit is not None and not is_bits(sig.table)
        try:
            if in_bit:
                regs: list[Any] = codec.encode_bits(sig, value, current)
            else:
                regs = codec.encode(sig, value)
        except CodecError as exc:
            assert str(exc)
            outcome.reason = f"rejected:{_why(str(exc))}"
            return
        assert len(regs) == codec.size(sig)
        if is_bits(sig.table):
            assert all(isinstance(r, bool) for r in regs)
        else:
            assert all(isinstance(r, int) and 0 <= r <= 0xFFFF for r in regs)
        back = codec.decode(sig, regs)
        _check_round_trip(sig, value, back)
        outcome.reason = f"ok:{sig.type}"


def _why(message: str) -> str:
    """The kind of refusal, without the values."""
    kinds = {
        "out of range": "out of range",
        "not Latin-1": "not Latin-1",
        "do not fit": "too long",
        "expected a sequence": "not a sequence",
        " values, got ": "wrong array length",
        "expected a bool": "not a bool",
        "expected a string": "not a string",
        "expected a number": "not a number",
        "is not a number": "not finite",
    }
    return next((kind for text, kind in kinds.items() if text in message), message)


def _check_round_trip(sig: ModbusSignal, value: Any, back: Any) -> None:
    if sig.array_length is None:
        _same(sig, value, back)
    else:
        assert len(back) == sig.array_length
        for v, b in zip(value, back, strict=True):
            _same(sig, v, b)


def _same(sig: ModbusSignal, value: Any, back: Any) -> None:
    scaled = sig.scale != 1.0 or sig.offset != 0.0
    if sig.type == "bool":
        assert back is bool(value)
    elif sig.type == "string":
        assert back == value.split("\0", 1)[0].rstrip(" ")
    elif scaled or isinstance(value, Decimal | Fraction):
        return  # rounding to the raw step: covered by the unit tests
    elif sig.type in INT_RANGES:
        assert back == round(value)
    elif isinstance(value, float | int) and math.isfinite(value):
        if sig.type == "float64":
            assert back == float(value)
        else:  # the shortest decimal that is the same float32
            assert struct.pack(">f", back) == struct.pack(">f", value)


# --- what the fuzzers found --------------------------------------------------------------------


def test_bug_a_huge_integer_is_a_codec_error() -> None:
    """Fixed: an int is range-checked as it is, and one that cannot be scaled is out of range."""
    sig = ModbusSignal(table="holding_register", address=0, type="int16", writable=True)
    with pytest.raises(CodecError, match="out of range for int16"):
        Codec().encode(sig, 10**400)
    scaled = sig.model_copy(update={"scale": 0.1})
    with pytest.raises(CodecError, match="out of range for int16"):
        Codec().encode(scaled, 10**400)
    double = ModbusSignal(table="holding_register", address=0, type="float64", writable=True)
    with pytest.raises(CodecError, match="out of range for float64"):
        Codec().encode(double, -(10**400))


def test_bug_writing_a_signal_of_scale_0_is_a_codec_error() -> None:
    """Fixed: the config refuses a scale of 0, so no write divides by it."""
    with pytest.raises(ValidationError, match="must not be 0"):
        ModbusSignal(table="holding_register", address=0, type="int16", scale=0.0, writable=True)


def test_bug_a_nan_register_value_does_not_break_the_event() -> None:
    """Fixed: NaN registers are the signal's value None with a status, which the event records
    as the parameter's status; the event renders."""
    from gateway.binding import Binder
    from gateway.config.models import LineConfig
    from gateway.events import EventContext, Signals, SignalValue, render_members

    signal = {"table": "holding_register", "address": 10, "type": "float32"}
    sig = ModbusSignal.model_validate(signal)
    with pytest.raises(NotFinite, match="non-finite value nan"):
        Codec().decode(sig, [0x7FC0, 0])
    plan = plan_reads({"torque": sig}, ["torque"], Codec())
    [torque] = plan.split([[0x7FC0, 0]])
    assert (torque.value, torque.status) == (None, "non-finite value nan")
    line = LineConfig.model_validate(
        {
            "gateway": {"id": "g", "site": "s", "line": "l"},
            "devices": [
                {
                    "id": "plc",
                    "kind": "modbus",
                    "host": "h",
                    "signals": {
                        "trig": {"table": "coil", "address": 0, "type": "bool"},
                        "torque": signal,
                    },
                }
            ],
            "stations": [
                {
                    "id": "st1",
                    "trigger": {"device": "plc", "signal": "trig"},
                    "parameters": [{"device": "plc", "signal": "torque"}],
                }
            ],
        }
    )
    binder = Binder(line)
    binder.process(Signals("plc", 0.0, (SignalValue("trig", False),), True))
    out = binder.process(Signals("plc", 1.0, (SignalValue("trig", True), torque)))
    [event] = out.events
    doc = json.loads("{" + render_members(event, EventContext("g", "l", "cfg")) + "}")
    assert doc["parameters"]["torque"] == {
        "value": None,
        "unit": None,
        "source": "plc",
        "status": "non-finite value nan",
    }


def test_an_overflowing_scale_is_not_finite() -> None:
    sig = ModbusSignal(table="holding_register", address=0, type="int16", scale=1e308)
    assert Codec().decode(sig, [1]) == 1e308
    with pytest.raises(NotFinite, match="non-finite value inf"):
        Codec().decode(sig, [2])
