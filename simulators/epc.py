"""EPC binary encoding for the reader simulator and the tests: GS1 keys in, the hex of a tag's
EPC bank out, as a reader reports it (lowercase, padded with zero bits to whole 16-bit words).

Written from the GS1 EPC Tag Data Standard (TDS 14.3 encoding methods, 14.5 coding tables and
partition tables, Appendix A character set), independently of `gateway.identifiers.epc`: it is
the oracle the decoder's tests compare against, so it shares no code or table with it. The
partition tables take a different form here: every GS1 scheme gives the company prefix the same
bits per digit count, and the field after it the rest of a fixed total.

Every encoder raises ValueError for what TDS cannot encode: a wrong check digit, a company
prefix length outside 6-12, a serial too large for its field, a numeric serial with leading
zeros (SGTIN-96, SGLN-96, GRAI-96, GIAI-96), a character outside GS1 set 82.
"""

from __future__ import annotations

import random
from typing import Final

from .codes import gs1_check_digit

# Company prefix digits -> its bits; the partition value is 12 - digits (TDS 14.5.x tables).
_PREFIX_BITS: Final = {12: 40, 11: 37, 10: 34, 9: 30, 8: 27, 7: 24, 6: 20}
# Bits of company prefix + the reference after it, per scheme, whatever the partition.
_SPLIT_BITS: Final = {"sgtin": 44, "sscc": 58, "sgln": 41, "grai": 44, "giai96": 82, "giai202": 188}
_HEADERS: Final = {
    "sgtin-96": 0x30, "sscc-96": 0x31, "sgln-96": 0x32, "grai-96": 0x33, "giai-96": 0x34,
    "sgtin-198": 0x36, "grai-170": 0x37, "giai-202": 0x38, "sgln-195": 0x39,
}  # fmt: skip
_CSET82: Final = frozenset(
    "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
)


def encode_sgtin96(
    gtin14: str, serial: str | int, company_prefix_digits: int, filter: int = 1
) -> str:
    """SGTIN-96 of a GTIN-14 and a numeric serial below 2^38 without leading zeros."""
    prefix, ref = _split_key(gtin14, company_prefix_digits, indicator=True)
    return _encode(
        "sgtin-96", filter, prefix, _ref("sgtin", prefix, ref), (_integer(serial, 38), 38)
    )


def encode_sgtin198(gtin14: str, serial: str, company_prefix_digits: int, filter: int = 1) -> str:
    """SGTIN-198 of a GTIN-14 and a serial of 1-20 characters of GS1 set 82."""
    prefix, ref = _split_key(gtin14, company_prefix_digits, indicator=True)
    return _encode(
        "sgtin-198", filter, prefix, _ref("sgtin", prefix, ref), (_string(serial, 140), 140)
    )


def encode_sscc96(sscc18: str, company_prefix_digits: int, filter: int = 0) -> str:
    """SSCC-96 of an SSCC-18 (extension digit first); 24 unallocated zero bits at the end."""
    prefix, ref = _split_key(sscc18, company_prefix_digits, indicator=True, length=18)
    return _encode("sscc-96", filter, prefix, _ref("sscc", prefix, ref), (0, 24))


def encode_sgln96(
    gln13: str, extension: str | int, company_prefix_digits: int, filter: int = 0
) -> str:
    """SGLN-96 of a GLN-13 and a numeric extension below 2^41 ("0": no extension)."""
    prefix, ref = _split_key(gln13, company_prefix_digits, indicator=False, length=13)
    return _encode(
        "sgln-96", filter, prefix, _ref("sgln", prefix, ref), (_integer(extension, 41), 41)
    )


def encode_sgln195(gln13: str, extension: str, company_prefix_digits: int, filter: int = 0) -> str:
    """SGLN-195 of a GLN-13 and an extension of 1-20 characters of GS1 set 82."""
    prefix, ref = _split_key(gln13, company_prefix_digits, indicator=False, length=13)
    return _encode(
        "sgln-195", filter, prefix, _ref("sgln", prefix, ref), (_string(extension, 140), 140)
    )


def encode_grai96(
    grai14: str, serial: str | int, company_prefix_digits: int, filter: int = 0
) -> str:
    """GRAI-96 of the 14-digit GRAI (a 0, company prefix, asset type, check digit) and a
    numeric serial below 2^38 without leading zeros."""
    prefix, ref = _split_grai(grai14, company_prefix_digits)
    return _encode("grai-96", filter, prefix, _ref("grai", prefix, ref), (_integer(serial, 38), 38))


def encode_grai170(grai14: str, serial: str, company_prefix_digits: int, filter: int = 0) -> str:
    """GRAI-170 of the 14-digit GRAI and a serial of 1-16 characters of GS1 set 82."""
    prefix, ref = _split_grai(grai14, company_prefix_digits)
    return _encode(
        "grai-170", filter, prefix, _ref("grai", prefix, ref), (_string(serial, 112), 112)
    )


def encode_giai96(giai: str, company_prefix_digits: int, filter: int = 0) -> str:
    """GIAI-96 of an AI (8004) value: the company prefix, then an asset reference of digits
    without leading zeros that fits the bits its partition leaves."""
    prefix, asset = _split_giai(giai, company_prefix_digits)
    bits = _SPLIT_BITS["giai96"] - _PREFIX_BITS[company_prefix_digits]
    return _encode("giai-96", filter, prefix, (_integer(asset, bits), bits))


def encode_giai202(giai: str, company_prefix_digits: int, filter: int = 0) -> str:
    """GIAI-202 of an AI (8004) value of at most 30 characters of GS1 set 82."""
    prefix, asset = _split_giai(giai, company_prefix_digits)
    if len(giai) > 30:
        raise ValueError(f"GIAI {giai!r} is longer than 30 characters")
    bits = _SPLIT_BITS["giai202"] - _PREFIX_BITS[company_prefix_digits]
    return _encode("giai-202", filter, prefix, (_string(asset, bits), bits))


def sgtin96_series(
    gtin14: str,
    cp_digits: int,
    start: int,
    count: int,
    *,
    filter: int = 1,
    seed: int | None = None,
) -> list[str]:
    """`count` SGTIN-96 EPCs of units of one GTIN. Serials run from `start` upwards; with a
    `seed` they are instead `count` distinct random serials from `start` to 2^38 - 1, the same
    ones for the same seed."""
    if seed is None:
        serials = list(range(start, start + count))
    else:
        serials = random.Random(seed).sample(range(start, 2**38), count)
    return [encode_sgtin96(gtin14, s, cp_digits, filter) for s in serials]


# --- the parts --------------------------------------------------------------------------------


def _encode(name: str, filter: int, prefix: str, *fields: tuple[int, int]) -> str:
    """Header, filter, partition, company prefix, then `fields` (value, bits) in order."""
    if not 0 <= filter <= 7:
        raise ValueError(f"filter {filter} is not 0-7")
    head = [(_HEADERS[name], 8), (filter, 3), (12 - len(prefix), 3)]
    value, bits = 0, 0
    for field, width in [*head, (int(prefix), _PREFIX_BITS[len(prefix)]), *fields]:
        value, bits = (value << width) | field, bits + width
    pad = -bits % 16  # the EPC bank holds whole words; TDS 15.1.1 pads with zero bits
    return f"{value << pad:0{(bits + pad) // 4}x}"


def _ref(split: str, prefix: str, ref: str) -> tuple[int, int]:
    """The reference after the company prefix (digits, maybe none) and its bits."""
    return (int(ref) if ref else 0), _SPLIT_BITS[split] - _PREFIX_BITS[len(prefix)]


def _split_key(
    key: str, prefix_digits: int, *, indicator: bool, length: int = 14
) -> tuple[str, str]:
    """(company prefix, reference) of a GTIN-14, SSCC-18 or GLN-13 with a checked check
    digit; the indicator or extension digit moves to the front of the reference."""
    _check_key(key, length)
    _check_prefix_digits(prefix_digits)
    if indicator:
        return key[1 : 1 + prefix_digits], key[0] + key[1 + prefix_digits : -1]
    return key[:prefix_digits], key[prefix_digits:-1]


def _split_grai(grai14: str, prefix_digits: int) -> tuple[str, str]:
    if not grai14.startswith("0"):
        raise ValueError(f"GRAI {grai14!r} does not start with 0")
    _check_key(grai14, 14)
    _check_prefix_digits(prefix_digits)
    return grai14[1 : 1 + prefix_digits], grai14[1 + prefix_digits : -1]


def _split_giai(giai: str, prefix_digits: int) -> tuple[str, str]:
    _check_prefix_digits(prefix_digits)
    prefix = giai[:prefix_digits]
    if not (len(prefix) == prefix_digits and prefix.isascii() and prefix.isdigit()):
        raise ValueError(f"GIAI {giai!r} does not start with {prefix_digits} digits")
    return prefix, giai[prefix_digits:]


def _check_key(key: str, length: int) -> None:
    if not (len(key) == length and key.isascii() and key.isdigit()):
        raise ValueError(f"{key!r} is not {length} digits")
    if gs1_check_digit(key[:-1]) != key[-1]:
        raise ValueError(f"{key!r} has a wrong check digit")


def _check_prefix_digits(digits: int) -> None:
    if digits not in _PREFIX_BITS:
        raise ValueError(f"a company prefix of {digits} digits cannot be encoded (6-12)")


def _integer(number: str | int, bits: int) -> int:
    """A numeric field (TDS 14.3.1): decimal digits without leading zeros, below 2^bits."""
    text = str(number)
    if not (text.isascii() and text.isdigit()) or (len(text) > 1 and text[0] == "0"):
        raise ValueError(f"{number!r} is not a number without leading zeros")
    if int(text) >= 1 << bits:
        raise ValueError(f"{number!r} does not fit {bits} bits")
    return int(text)


def _string(text: str, bits: int) -> int:
    """A 7-bit string field (TDS 14.3.2): ASCII codes, then zero bits to fill `bits`."""
    if not text or len(text) > bits // 7 or any(c not in _CSET82 for c in text):
        raise ValueError(f"{text!r} is not 1-{bits // 7} characters of GS1 set 82")
    value = 0
    for char in text:
        value = value << 7 | ord(char)
    return value << (bits - 7 * len(text))
