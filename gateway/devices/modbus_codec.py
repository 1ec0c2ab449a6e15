"""Modbus values and read requests, pure: registers and bits in, engineering values out (and
back), and the planning of as few read requests as a poll needs.

Conventions, per device (`byte_order`, `word_order`) and per signal (`type`, `bit`, `length`,
`array_length`, `scale`, `offset`):
- a register's two bytes are high byte first unless `byte_order` is little; a 32/64-bit value
  is most significant register first unless `word_order` is little (strings never word-swap);
- `bit` n of a register is bit n of its value after the byte order (0 = least significant); an
  array of such bools runs on into the next registers;
- int8/uint8 take a register each, the value in its low-order byte (written sign-extended);
- a string is `length` registers of two Latin-1 characters; it ends at the first NUL (a PLC
  buffer keeps leftovers of a longer string after it), trailing spaces are stripped; it is
  written NUL-padded;
- numbers: engineering = raw x scale + offset; a scaled value is rounded to 12 significant
  digits (3 x 0.1 reads 0.3); a float32 reads as the shortest decimal that is the same float32
  (12.123, not 12.123000144958496). Writes undo the scaling and round to the integer type,
  refusing what does not fit (`CodecError`), NaN and infinities too;
- NaN and infinities (a float register pair that holds one, or a scaling that overflows) are no
  value: `decode` raises `NotFinite`, and a read plan's `split` reports the signal as value None
  with a status saying so, as the OPC UA adapter does; a JSON trace has no place for them.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from gateway.config.plc import ModbusSignal, ModbusTable
from gateway.events import SignalValue

Order = Literal["big", "little"]
Raw = list[int] | list[bool]

BIT_TABLES: Final = frozenset({"coil", "discrete_input"})
MAX_REGISTERS_PER_READ: Final = 125
MAX_BITS_PER_READ: Final = 2000
ADDRESS_SPACE: Final = 65536
GOOD: Final = "good"

# type -> (struct code, registers)
_NUMBERS: Final[dict[str, tuple[str, int]]] = {
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "int64": ("q", 4),
    "uint64": ("Q", 4),
    "float32": ("f", 2),
    "float64": ("d", 4),
}
_INT_RANGE: Final[dict[str, tuple[int, int]]] = {
    "int8": (-(2**7), 2**7 - 1),
    "uint8": (0, 2**8 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


class CodecError(ValueError):
    """A value that cannot be written as the signal's type: out of range, wrong type, too long,
    not Latin-1. The message says which."""


class NotFinite(ValueError):
    """Registers that decode to NaN or an infinity (or a scaled value that overflows)."""


def is_bits(table: ModbusTable) -> bool:
    return table in BIT_TABLES


def _scaled(sig: ModbusSignal) -> bool:
    return sig.scale != 1.0 or sig.offset != 0.0


def _shortest_f32(x: float) -> float:
    """The shortest decimal that is the same float32 as `x`."""
    if not math.isfinite(x):
        return x
    packed = struct.pack(">f", x)
    for digits in range(6, 10):
        y = float(f"{x:.{digits}g}")
        if struct.pack(">f", y) == packed:
            return y
    return x


@dataclass(frozen=True, slots=True)
class Codec:
    """A device's conventions; converts one signal's registers (or bits) to its value and back."""

    byte_order: Order = "big"
    word_order: Order = "big"

    # --- sizes ---------------------------------------------------------------------------------

    def size(self, sig: ModbusSignal) -> int:
        """Registers (bits, in a coil or discrete input table) the signal spans."""
        n = sig.array_length or 1
        if is_bits(sig.table):
            return n
        if sig.type == "bool":
            return (sig.bit + n + 15) // 16 if sig.bit is not None else n
        if sig.type == "string":
            assert sig.length is not None  # the config model requires it
            return sig.length * n
        return _NUMBERS.get(sig.type, ("", 1))[1] * n

    # --- decoding ------------------------------------------------------------------------------

    def decode(self, sig: ModbusSignal, raw: Sequence[int] | Sequence[bool]) -> Any:
        """The engineering value of `sig` from exactly `size(sig)` registers or bits. Raises
        NotFinite for NaN or an infinity (in any element of an array)."""
        if len(raw) != self.size(sig):
            raise ValueError(f"{len(raw)} words for a signal of {self.size(sig)}")
        n = sig.array_length
        if is_bits(sig.table):
            values: list[Any] = [bool(b) for b in raw]
        elif sig.type == "bool":
            values = self._decode_bools(sig, raw)
        elif sig.type == "string":
            assert sig.length is not None
            width = sig.length
            values = [self._decode_string(raw[i * width : (i + 1) * width]) for i in range(n or 1)]
        else:
            width = _NUMBERS.get(sig.type, ("", 1))[1]
            values = [
                self._decode_number(sig, raw[i * width : (i + 1) * width]) for i in range(n or 1)
            ]
        return tuple(values) if n is not None else values[0]

    def _word(self, register: int) -> int:
        return register if self.byte_order == "big" else ((register & 0xFF) << 8) | (register >> 8)

    def _decode_bools(self, sig: ModbusSignal, raw: Sequence[int | bool]) -> list[Any]:
        n = sig.array_length or 1
        if sig.bit is None:
            return [int(r) != 0 for r in raw]
        words = [self._word(int(r)) for r in raw]
        return [bool(words[(sig.bit + i) // 16] >> ((sig.bit + i) % 16) & 1) for i in range(n)]

    def _decode_string(self, raw: Sequence[int | bool]) -> str:
        data = b"".join(int(r).to_bytes(2, self.byte_order) for r in raw)
        return data.split(b"\0", 1)[0].decode("latin-1").rstrip(" ")

    def _bytes(self, raw: Sequence[int | bool]) -> bytes:
        regs = list(raw) if self.word_order == "big" else list(reversed(raw))
        return b"".join(int(r).to_bytes(2, self.byte_order) for r in regs)

    def _decode_number(self, sig: ModbusSignal, raw: Sequence[int | bool]) -> int | float:
        value: int | float
        if sig.type in ("int8", "uint8"):
            low = self._word(int(raw[0])) & 0xFF
            value = low - 256 if sig.type == "int8" and low >= 128 else low
        else:
            code, _ = _NUMBERS[sig.type]
            value = struct.unpack(f">{code}", self._bytes(raw))[0]
            if sig.type == "float32":
                value = _shortest_f32(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise NotFinite(f"non-finite value {value}")
        if not _scaled(sig):
            return value
        eng = value * sig.scale + sig.offset
        if not math.isfinite(eng):
            raise NotFinite(f"non-finite value {eng} (raw {value} x {sig.scale} + {sig.offset})")
        return float(f"{eng:.12g}")

    # --- encoding ------------------------------------------------------------------------------

    def encode(self, sig: ModbusSignal, value: Any) -> Raw:
        """The registers (or bits) that hold `value`; not for a bool in a register's bit (see
        `encode_bits`, which needs the register's current value). Raises CodecError."""
        if sig.type == "bool" and sig.bit is not None and not is_bits(sig.table):
            raise ValueError("a bit in a register is written with encode_bits")
        elements = self._elements(sig, value)
        if is_bits(sig.table):
            return [self._bool(sig, v) for v in elements]
        out: list[int] = []
        for v in elements:
            if sig.type == "bool":
                out.append(int(self._bool(sig, v)))
            elif sig.type == "string":
                out.extend(self._encode_string(sig, v))
            else:
                out.extend(self._encode_number(sig, v))
        return out

    def encode_bits(self, sig: ModbusSignal, value: Any, current: Sequence[int]) -> list[int]:
        """The registers holding bool `sig` (`bit` n of a register) set to `value`, other bits
        kept as in `current` (read-modify-write)."""
        if sig.bit is None or is_bits(sig.table) or sig.type != "bool":
            raise ValueError("encode_bits is for a bool in a register's bit")
        if len(current) != self.size(sig):
            raise ValueError(f"{len(current)} registers for a signal of {self.size(sig)}")
        words = [self._word(r) for r in current]
        for i, v in enumerate(self._elements(sig, value)):
            word, bit = divmod(sig.bit + i, 16)
            if self._bool(sig, v):
                words[word] |= 1 << bit
            else:
                words[word] &= ~(1 << bit) & 0xFFFF
        return [self._word(w) for w in words]  # byte swapping is its own inverse

    def _elements(self, sig: ModbusSignal, value: Any) -> list[Any]:
        if sig.array_length is None:
            return [value]
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            raise CodecError(f"expected a sequence of {sig.array_length} {sig.type} values")
        elements = list(value)
        if len(elements) != sig.array_length:
            raise CodecError(f"expected {sig.array_length} {sig.type} values, got {len(elements)}")
        return elements

    @staticmethod
    def _bool(sig: ModbusSignal, v: Any) -> bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        raise CodecError(f"expected a bool, got {v!r}")

    def _encode_string(self, sig: ModbusSignal, v: Any) -> list[int]:
        assert sig.length is not None
        if not isinstance(v, str):
            raise CodecError(f"expected a string, got {v!r}")
        try:
            data = v.encode("latin-1")
        except UnicodeEncodeError as exc:
            raise CodecError(f"{v!r} is not Latin-1: {exc.reason} at {exc.start}") from None
        room = 2 * sig.length
        if len(data) > room:
            raise CodecError(
                f"{len(data)} characters do not fit in {room} ({sig.length} registers)"
            )
        data = data.ljust(room, b"\0")
        return [int.from_bytes(data[i : i + 2], self.byte_order) for i in range(0, room, 2)]

    def _encode_number(self, sig: ModbusSignal, v: Any) -> list[int]:
        if not isinstance(v, int | float):
            raise CodecError(f"expected a number, got {v!r}")
        raw: int | float = v
        if _scaled(sig):
            try:  # an int beyond a float's range cannot be scaled
                raw = (v - sig.offset) / sig.scale
            except OverflowError:
                raise CodecError(f"{v!r} is out of range for {sig.type}") from None
        # NaN and infinities are refused for every type: they would not read back as a value
        # (see NotFinite). An int is left as it is: math.isfinite would convert it to float
        # first, which overflows beyond 1.8e308.
        if isinstance(raw, float) and not math.isfinite(raw):
            article = "an" if sig.type.startswith("int") else "a"
            raise CodecError(f"{v!r} is not a number {article} {sig.type} can hold")
        if sig.type in _INT_RANGE:
            whole = round(raw)
            low, high = _INT_RANGE[sig.type]
            if not low <= whole <= high:
                shown = "" if not _scaled(sig) else f" (raw {whole})"
                raise CodecError(f"{v!r}{shown} is out of range for {sig.type} [{low}, {high}]")
            raw = whole
        if sig.type in ("int8", "uint8"):
            return [self._word(int(raw) & 0xFFFF)]
        code, width = _NUMBERS[sig.type]
        try:
            data = struct.pack(f">{code}", raw)
        except (OverflowError, struct.error):
            raise CodecError(f"{v!r} is out of range for {sig.type}") from None
        regs = [int.from_bytes(data[i : i + 2], self.byte_order) for i in range(0, 2 * width, 2)]
        return regs if self.word_order == "big" else regs[::-1]


# --- read planning -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Read:
    """One read request: `count` registers (or bits) of `table` from `address`, on `unit_id`."""

    unit_id: int
    table: ModbusTable
    address: int
    count: int


@dataclass(frozen=True, slots=True)
class _Piece:
    read: int  # index into ReadPlan.reads
    start: int  # offset of the piece in that read's data
    count: int


_TABLE_ORDER: Final = {"coil": 0, "discrete_input": 1, "holding_register": 2, "input_register": 3}


@dataclass(frozen=True)
class ReadPlan:
    """The reads that fetch a set of signals, and how to cut their responses back into values.

    `reads` go out in order; `split` takes one result per read (the registers or bits, or a
    failure status such as "timeout") and returns one SignalValue per signal, in the order the
    signals were planned. A signal whose reads failed carries the first failure's status; one
    whose registers hold NaN or an infinity has value None and a status saying so."""

    names: tuple[str, ...]
    reads: tuple[Read, ...]
    pieces: Mapping[str, tuple[_Piece, ...]]
    signals: Mapping[str, ModbusSignal]
    codec: Codec

    def signals_of(self, read: int) -> tuple[str, ...]:
        """The signals that read `read` (by index) serves, in plan order."""
        return tuple(n for n in self.names if any(p.read == read for p in self.pieces[n]))

    def split(self, results: Sequence[Raw | str]) -> tuple[SignalValue, ...]:
        if len(results) != len(self.reads):
            raise ValueError(f"{len(results)} results for {len(self.reads)} reads")
        out: list[SignalValue] = []
        for name in self.names:
            raw: list[Any] = []
            status = GOOD
            for piece in self.pieces[name]:
                result = results[piece.read]
                if isinstance(result, str):
                    status = result
                    break
                raw.extend(result[piece.start : piece.start + piece.count])
            if status != GOOD:
                out.append(SignalValue(name, None, status))
                continue
            try:
                out.append(SignalValue(name, self.codec.decode(self.signals[name], raw)))
            except NotFinite as exc:
                out.append(SignalValue(name, None, str(exc)))
        return tuple(out)


def _end(read: Read) -> int:
    return read.address + read.count


def plan_reads(
    signals: Mapping[str, ModbusSignal],
    names: Iterable[str],
    codec: Codec,
    *,
    max_registers: int = MAX_REGISTERS_PER_READ,
    max_gap: int = 8,
    alone: Collection[str] = (),
) -> ReadPlan:
    """Plan the reads of `names` (signals of `signals`): per unit and table, spans closer than
    `max_gap` registers are read in one request of at most `max_registers` registers; for
    coils and discrete inputs both count 16 bits a register (so at most 2000 bits). A signal
    longer than a request is read in several. Signals in `alone` get requests of their own (a
    merged read that a device refuses is split so). Raises ValueError for a signal that ends
    beyond the address space."""
    order: dict[str, None] = dict.fromkeys(names)
    spans: dict[tuple[int, ModbusTable], list[tuple[int, int, str]]] = {}
    for name in order:
        sig = signals[name]
        end = sig.address + codec.size(sig)
        if end > ADDRESS_SPACE:
            raise ValueError(
                f"signal {name!r} ends at {sig.table} {end - 1}, beyond the last address "
                f"{ADDRESS_SPACE - 1}"
            )
        spans.setdefault((sig.unit_id, sig.table), []).append((sig.address, end, name))

    reads: list[Read] = []
    assigned: dict[str, list[int]] = {}
    for unit, table in sorted(spans, key=lambda k: (k[0], _TABLE_ORDER[k[1]])):
        bits = table in BIT_TABLES
        limit = min(MAX_BITS_PER_READ, max_registers * 16) if bits else max_registers
        gap = max_gap * 16 if bits else max_gap
        shared: list[int] = []  # reads of this unit and table other signals may join
        for start, end, name in sorted(spans[unit, table]):
            mine = assigned.setdefault(name, [])
            if name not in alone and shared:
                inside = next(
                    (i for i in shared if reads[i].address <= start and end <= _end(reads[i])),
                    None,
                )
                if inside is not None:
                    mine.append(inside)
                    continue
                current = shared[-1]  # starts at or before `start` unless a split signal's tail
                cur = reads[current]
                cur_end = _end(cur)
                if (
                    cur.address <= start
                    and start - cur_end <= gap
                    and max(cur_end, end) - cur.address <= limit
                ):
                    reads[current] = Read(unit, table, cur.address, max(cur_end, end) - cur.address)
                    mine.append(current)
                    continue
            for chunk in range(start, end, limit):
                mine.append(len(reads))
                if name not in alone:
                    shared.append(len(reads))
                reads.append(Read(unit, table, chunk, min(limit, end - chunk)))

    pieces: dict[str, tuple[_Piece, ...]] = {}
    for name in order:
        sig = signals[name]
        pos, end = sig.address, sig.address + codec.size(sig)
        cut: list[_Piece] = []
        for index in assigned[name]:
            read = reads[index]
            if read.address <= pos < read.address + read.count:
                n = min(end, read.address + read.count) - pos
                cut.append(_Piece(index, pos - read.address, n))
                pos += n
        assert pos == end, f"plan does not cover {name}"
        pieces[name] = tuple(cut)
    return ReadPlan(tuple(order), tuple(reads), pieces, signals, codec)
