"""The Modbus codec and read planner, pure: known register images, round trips of every type,
order and scaling (hypothesis), and plans that cover every signal exactly within the limits."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.config.plc import ModbusSignal
from gateway.devices.modbus_codec import (
    MAX_BITS_PER_READ,
    Codec,
    CodecError,
    NotFinite,
    plan_reads,
)
from gateway.events import SignalValue

ORDERS = ("big", "little")
INT_TYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64")
NUMBER_TYPES = (*INT_TYPES, "float32", "float64")
BITS = {"int8": 8, "uint8": 8, "int16": 16, "uint16": 16, "int32": 32, "uint32": 32}
BITS |= {"int64": 64, "uint64": 64}


def sig(**fields: Any) -> ModbusSignal:
    return ModbusSignal.model_validate({"table": "holding_register", "address": 0, **fields})


def int_range(type_: str) -> tuple[int, int]:
    n = BITS[type_]
    return (-(2 ** (n - 1)), 2 ** (n - 1) - 1) if type_.startswith("int") else (0, 2**n - 1)


# --- known register images ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("byte_order", "word_order", "registers"),
    [
        ("big", "big", [0x4148, 0x0000]),  # 12.5 = 0x41480000
        ("big", "little", [0x0000, 0x4148]),  # Modicon
        ("little", "big", [0x4841, 0x0000]),
        ("little", "little", [0x0000, 0x4841]),
    ],
)
def test_float32_register_images(byte_order: str, word_order: str, registers: list[int]) -> None:
    codec = Codec(byte_order, word_order)  # type: ignore[arg-type]
    torque = sig(type="float32")
    assert codec.encode(torque, 12.5) == registers
    assert codec.decode(torque, registers) == 12.5


def test_integer_images_and_signs() -> None:
    codec = Codec()
    assert codec.encode(sig(type="uint32"), 0x12345678) == [0x1234, 0x5678]
    assert Codec(word_order="little").encode(sig(type="uint32"), 0x12345678) == [0x5678, 0x1234]
    assert codec.decode(sig(type="int16"), [0xFFFE]) == -2
    assert codec.decode(sig(type="uint16"), [0xFFFE]) == 65534
    assert codec.decode(sig(type="int64"), [0xFFFF] * 4) == -1
    assert codec.encode(sig(type="int8"), -3) == [0xFFFD]  # sign-extended
    assert codec.decode(sig(type="int8"), [0x12FD]) == -3  # high byte ignored
    assert codec.decode(sig(type="uint8"), [0x00FD]) == 253
    assert Codec(byte_order="little").decode(sig(type="uint8"), [0xFD00]) == 253


def test_float32_reads_as_the_shortest_decimal() -> None:
    codec = Codec()
    raw = codec.encode(sig(type="float32"), 12.123)
    assert struct.unpack(">f", struct.pack(">HH", *raw))[0] != 12.123  # not exact in float32
    assert codec.decode(sig(type="float32"), raw) == 12.123


def test_scaling_reads_engineering_values_and_writes_undo_it() -> None:
    codec = Codec()
    temp = sig(type="int16", scale=0.1, offset=-40.0, unit="degC")
    assert codec.decode(temp, [653]) == 25.3
    assert codec.encode(temp, 25.3) == [653]
    assert codec.encode(temp, 25.34) == [653]  # rounded to the integer type
    assert codec.decode(sig(type="uint16", scale=0.1), [3]) == 0.3  # not 0.30000000000000004
    with pytest.raises(CodecError, match=r"\(raw 32768\) is out of range for int16"):
        codec.encode(temp, 3236.8)
    with pytest.raises(CodecError, match="out of range for uint16"):
        codec.encode(sig(type="uint16"), -1)
    with pytest.raises(CodecError, match="out of range for float32"):
        codec.encode(sig(type="float32"), 1e39)
    with pytest.raises(CodecError, match="not a number"):
        codec.encode(sig(type="int32"), math.nan)
    for value in (math.nan, math.inf, -math.inf):  # they would read back as no value
        with pytest.raises(CodecError, match="is not a number a float32 can hold"):
            codec.encode(sig(type="float32"), value)
    with pytest.raises(CodecError, match="is not a number a float64 can hold"):
        codec.encode(sig(type="float64", scale=1e-300), 1e300)  # raw beyond a double
    with pytest.raises(CodecError, match="expected a number"):
        codec.encode(sig(type="int32"), "12")


def test_strings() -> None:
    name = sig(type="string", length=3)
    big, little = Codec(), Codec(byte_order="little")
    assert big.encode(name, "ABCD") == [0x4142, 0x4344, 0x0000]
    assert little.encode(name, "ABCD") == [0x4241, 0x4443, 0x0000]
    assert big.decode(name, [0x4142, 0x4320, 0x2020]) == "ABC"  # trailing spaces stripped
    assert big.decode(name, [0x4142, 0x0044, 0x4546]) == "AB"  # ends at the first NUL
    assert big.decode(name, [0xE94B, 0, 0]) == "éK"  # Latin-1
    with pytest.raises(CodecError, match="7 characters do not fit in 6"):
        big.encode(name, "ABCDEFG")
    with pytest.raises(CodecError, match="not Latin-1"):
        big.encode(name, "€")


def test_bools_coils_bits_and_arrays() -> None:
    codec = Codec()
    assert codec.decode(sig(table="coil", type="bool"), [True]) is True
    flags = sig(type="bool", bit=14, array_length=4)  # bits 14, 15 of one register, 0, 1 of next
    assert codec.size(flags) == 2
    assert codec.decode(flags, [0x4000, 0x0002]) == (True, False, False, True)
    assert codec.encode_bits(flags, [False, True, True, False], [0x4001, 0x8002]) == [
        0x8001,
        0x8001,
    ]
    assert codec.encode(sig(type="bool"), True) == [1]  # a whole register
    assert codec.encode(sig(table="coil", type="bool", array_length=2), [1, False]) == [True, False]
    with pytest.raises(CodecError, match="expected a bool"):
        codec.encode(sig(table="coil", type="bool"), "yes")
    with pytest.raises(CodecError, match="expected 3 int16 values, got 2"):
        codec.encode(sig(type="int16", array_length=3), [1, 2])
    assert codec.decode(sig(type="int16", array_length=3), [1, 0xFFFF, 3]) == (1, -1, 3)


# --- round trips -------------------------------------------------------------------------------

codecs = st.builds(Codec, st.sampled_from(ORDERS), st.sampled_from(ORDERS))
scalings = st.sampled_from([(1.0, 0.0), (0.1, 0.0), (0.01, -40.0), (2.0, 5.0), (0.001, 0.0)])


@st.composite
def number_signals(draw: st.DrawFn, scaled: bool) -> ModbusSignal:
    type_ = draw(st.sampled_from(NUMBER_TYPES))
    scale, offset = draw(scalings) if scaled else (1.0, 0.0)
    return sig(
        type=type_,
        table=draw(st.sampled_from(["holding_register", "input_register"])),
        array_length=draw(st.none() | st.integers(1, 4)),
        scale=scale,
        offset=offset,
    )


def raw_of(codec: Codec, s: ModbusSignal, data: st.DataObject) -> list[int]:
    return data.draw(
        st.lists(st.integers(0, 0xFFFF), min_size=codec.size(s), max_size=codec.size(s))
    )


@given(codecs, number_signals(scaled=False), st.data())
def test_registers_to_value_and_back_are_the_same_registers(
    codec: Codec, s: ModbusSignal, data: st.DataObject
) -> None:
    assume(s.type not in ("int8", "uint8"))  # their high byte is not kept (written as the sign)
    raw = raw_of(codec, s, data)
    try:
        value = codec.decode(s, raw)
    except NotFinite:
        # NaN and infinities are no value (and so nothing to write back): see the test below.
        assume(False)
    assert codec.encode(s, value) == raw


@pytest.mark.parametrize(
    "words", [[0x7FC0, 0], [0x7F80, 0], [0xFF80, 0]], ids=["nan", "inf", "-inf"]
)
def test_non_finite_registers_are_no_value_but_a_status(words: list[int]) -> None:
    s = ModbusSignal(table="holding_register", address=0, type="float32", array_length=2)
    with pytest.raises(NotFinite, match="non-finite value"):
        Codec().decode(s, [0x3F80, 0, *words])
    [value] = plan_reads({"t": s}, ["t"], Codec()).split([[0x3F80, 0, *words]])
    assert value.value is None
    assert value.status.startswith("non-finite value")


@st.composite
def values_of(draw: st.DrawFn, s: ModbusSignal) -> Any:
    scaled = (s.scale, s.offset) != (1.0, 0.0)

    def one() -> Any:
        if s.type in BITS:
            low, high = int_range(s.type)
            if scaled and BITS[s.type] == 64:  # beyond 2**52 a float cannot tell raw values apart
                low, high = max(low, -(2**52)), min(high, 2**52)
            raw = draw(st.integers(low, high))
            return raw * s.scale + s.offset if scaled else raw
        floats = st.floats(
            width=32 if s.type == "float32" else 64, allow_nan=False, allow_infinity=False
        )
        value = draw(floats) * s.scale
        # The largest floats times a scale overflow to infinity, which encode refuses (a
        # non-finite value is no value: test_non_finite_registers_are_no_value_but_a_status).
        assume(math.isfinite(value))
        return value

    return tuple(one() for _ in range(s.array_length)) if s.array_length else one()


@given(codecs, number_signals(scaled=True), st.data())
def test_values_written_read_back_equal(codec: Codec, s: ModbusSignal, data: st.DataObject) -> None:
    value = data.draw(values_of(s))
    back = codec.decode(s, codec.encode(s, value))
    expected, got = (value, back) if s.array_length else ((value,), (back,))
    for e, g in zip(expected, got, strict=True):
        if s.type == "float32":  # 24 bits of mantissa, of the raw value (offset included)
            assert g == pytest.approx(e, rel=1e-6, abs=1e-6 * abs(s.offset) + 1e-37)
        elif s.type == "float64":
            assert g == pytest.approx(e, rel=1e-9, abs=1e-9 * abs(s.offset))
        else:
            assert g == pytest.approx(e, rel=1e-9, abs=s.scale / 2)


@given(
    codecs,
    st.integers(1, 8),
    st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=16),
)
def test_strings_round_trip(codec: Codec, length: int, text: str) -> None:
    text = text[: 2 * length].rstrip(" ")
    s = sig(type="string", length=length)
    assert codec.decode(s, codec.encode(s, text)) == text


@given(codecs, st.integers(0, 15), st.integers(1, 40), st.data())
def test_bits_in_registers_round_trip(codec: Codec, bit: int, n: int, data: st.DataObject) -> None:
    s = sig(type="bool", bit=bit, array_length=n)
    raw = raw_of(codec, s, data)
    value = codec.decode(s, raw)
    assert codec.encode_bits(s, value, raw) == raw
    flipped = tuple(not v for v in value)
    changed = codec.encode_bits(s, flipped, raw)
    assert codec.decode(s, changed) == flipped
    # Only the signal's bits changed.
    words = [codec._word(r) ^ codec._word(c) for r, c in zip(raw, changed, strict=True)]
    assert sum(bin(w).count("1") for w in words) == n


# --- planning ----------------------------------------------------------------------------------


@st.composite
def signal_sets(draw: st.DrawFn) -> dict[str, ModbusSignal]:
    out: dict[str, ModbusSignal] = {}
    for i in range(draw(st.integers(1, 25))):
        table = draw(
            st.sampled_from(["coil", "discrete_input", "holding_register", "input_register"])
        )
        unit = draw(st.sampled_from([1, 2]))
        address = draw(st.integers(0, 400))
        if table in ("coil", "discrete_input"):
            fields: dict[str, Any] = {
                "type": "bool",
                "array_length": draw(st.none() | st.integers(1, 2100)),
            }
        else:
            kind = draw(st.sampled_from(["number", "string", "bit"]))
            if kind == "string":
                fields = {"type": "string", "length": draw(st.integers(1, 125))}
            elif kind == "bit":
                fields = {"type": "bool", "bit": draw(st.integers(0, 15))}
            else:
                fields = {
                    "type": draw(st.sampled_from(NUMBER_TYPES)),
                    "array_length": draw(st.none() | st.integers(1, 80)),
                }
        out[f"s{i}"] = ModbusSignal.model_validate(
            {"table": table, "unit_id": unit, "address": address, **fields}
        )
    return out


def memory_reads(
    plan: Any, memory: dict[tuple[int, str, int], int]
) -> list[list[int] | list[bool]]:
    results: list[list[int] | list[bool]] = []
    for read in plan.reads:
        words = [
            memory[read.unit_id, read.table, a]
            for a in range(read.address, read.address + read.count)
        ]
        results.append(
            [bool(w & 1) for w in words] if read.table in ("coil", "discrete_input") else words
        )
    return results


@settings(max_examples=150, deadline=None)
@given(
    signal_sets(),
    codecs,
    st.integers(1, 125),
    st.integers(0, 20),
    st.data(),
)
def test_plan_covers_every_signal_exactly_within_the_limits(
    signals: dict[str, ModbusSignal],
    codec: Codec,
    max_registers: int,
    max_gap: int,
    data: st.DataObject,
) -> None:
    rng = data.draw(st.randoms(use_true_random=False))
    alone = data.draw(st.sets(st.sampled_from(sorted(signals))))
    names = list(signals)
    plan = plan_reads(
        signals, names, codec, max_registers=max_registers, max_gap=max_gap, alone=alone
    )
    bit_limit = min(MAX_BITS_PER_READ, max_registers * 16)
    for read in plan.reads:
        limit = bit_limit if read.table in ("coil", "discrete_input") else max_registers
        assert 1 <= read.count <= limit
        assert read.address + read.count <= 65536

    # Exactly each signal's span, and merged reads decode as one read per signal would.
    memory: dict[tuple[int, str, int], int] = {}
    for s in signals.values():
        for a in range(s.address, s.address + codec.size(s)):
            memory.setdefault((s.unit_id, s.table, a), rng.randrange(0x10000))
    for read in plan.reads:  # the unused addresses a merged read spans
        for a in range(read.address, read.address + read.count):
            memory.setdefault((read.unit_id, read.table, a), rng.randrange(0x10000))
    values = plan.split(memory_reads(plan, memory))
    assert [v.name for v in values] == names
    for name, value in zip(names, values, strict=True):
        s = signals[name]
        alone_plan = plan_reads({name: s}, [name], codec, max_registers=max_registers, max_gap=0)
        (expected,) = alone_plan.split(memory_reads(alone_plan, memory))
        assert repr(value) == repr(expected)  # NaN equals no NaN; their reprs are alike
        assert sum(p.count for p in plan.pieces[name]) == codec.size(s)
        if name in alone:
            assert plan.signals_of(plan.pieces[name][0].read) == (name,)

    # Merging never costs requests.
    per_signal = sum(
        len(plan_reads(signals, [n], codec, max_registers=max_registers).reads) for n in names
    )
    assert len(plan.reads) <= per_signal

    # A failed read fails exactly the signals it serves.
    failed = data.draw(st.integers(0, len(plan.reads) - 1))
    results: list[Any] = memory_reads(plan, memory)
    results[failed] = "timeout"
    hit = set(plan.signals_of(failed))
    for value in plan.split(results):
        assert (value.status == "timeout") == (value.name in hit)
        assert value.status != "timeout" or value.value is None


def test_plan_merges_across_small_gaps_only() -> None:
    signals = {
        "a": sig(type="int16", address=0),
        "b": sig(type="float32", address=9),
        "c": sig(type="int16", address=30),
        "d": sig(table="coil", type="bool", address=0),
        "e": sig(table="coil", type="bool", address=128),
        "f": sig(table="coil", type="bool", address=129, unit_id=2),
    }
    plan = plan_reads(signals, signals, Codec(), max_gap=8)
    shapes = [(r.unit_id, r.table, r.address, r.count) for r in plan.reads]
    assert shapes == [
        (1, "coil", 0, 129),  # a gap of 8 registers is 128 bits
        (1, "holding_register", 0, 11),
        (1, "holding_register", 30, 1),
        (2, "coil", 129, 1),
    ]
    assert len(plan_reads(signals, signals, Codec(), max_gap=7).reads) == 6


def test_plan_splits_what_exceeds_a_request() -> None:
    signals = {
        "curve": sig(type="float32", array_length=100),  # 200 registers
        "id": sig(type="string", length=125, address=200),
    }
    plan = plan_reads(signals, signals, Codec())
    assert [(r.address, r.count) for r in plan.reads] == [(0, 125), (125, 75), (200, 125)]
    with pytest.raises(ValueError, match="beyond the last address"):
        plan_reads({"x": sig(type="uint32", address=65535)}, ["x"], Codec())


def test_split_reports_failure_status_per_signal() -> None:
    signals = {"a": sig(type="int16"), "b": sig(type="int16", address=200)}
    plan = plan_reads(signals, ["b", "a"], Codec())
    assert plan.split([[7], "modbus exception 2 (illegal data address)"]) == (
        SignalValue("b", None, "modbus exception 2 (illegal data address)"),
        SignalValue("a", 7),
    )
