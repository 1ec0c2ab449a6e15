"""The tables of the GS1 EPC Tag Data Standard (TDS) that EPC binary decoding is driven by.

Owns the header values (TDS 14.2), the coding table of each decoded binary scheme
(TDS 14.5: field order and widths), their partition tables (TDS 14.5.1 SGTIN, 14.5.2 SSCC,
14.5.3 SGLN, 14.5.4 GRAI, 14.5.5 GIAI) and the 7-bit character set of alphanumeric fields
(TDS Appendix A, Table A-1: GS1 AI encodable character set 82, with its URI escapes).

Every GS1 scheme here is laid out as: header (8 bits), filter (3), partition (3), company prefix
and a reference field whose widths the partition value selects, then a tail. The company prefix
columns are the same in every partition table: 12 digits in 40 bits down to 6 digits in 20.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, NamedTuple


class Partition(NamedTuple):
    """One row of a partition table: the company prefix and the field after it, in bits and
    decimal digits. For a string field (GIAI-202) `ref_digits` is its maximum of characters."""

    cp_bits: int
    cp_digits: int
    ref_bits: int
    ref_digits: int


# Partition value P (the row index) -> company prefix bits and digits.
_CP: Final = ((40, 12), (37, 11), (34, 10), (30, 9), (27, 8), (24, 7), (20, 6))


def _table(*refs: tuple[int, int]) -> tuple[Partition, ...]:
    return tuple(Partition(cp[0], cp[1], ref[0], ref[1]) for cp, ref in zip(_CP, refs, strict=True))


# Indicator digit and item reference, together (TDS 14.5.1).
SGTIN_PARTITIONS: Final = _table((4, 1), (7, 2), (10, 3), (14, 4), (17, 5), (20, 6), (24, 7))
# Extension digit and serial reference, together (TDS 14.5.2).
SSCC_PARTITIONS: Final = _table((18, 5), (21, 6), (24, 7), (28, 8), (31, 9), (34, 10), (38, 11))
# Location reference (TDS 14.5.3); 0 digits in partition 0: the field must then be 0.
SGLN_PARTITIONS: Final = _table((1, 0), (4, 1), (7, 2), (11, 3), (14, 4), (17, 5), (21, 6))
# Asset type (TDS 14.5.4); 0 digits in partition 0, as for SGLN.
GRAI_PARTITIONS: Final = _table((4, 0), (7, 1), (10, 2), (14, 3), (17, 4), (20, 5), (24, 6))
# Individual asset reference, an integer without leading zeros (TDS 14.5.5, GIAI-96).
GIAI96_PARTITIONS: Final = _table(
    (42, 13), (45, 14), (48, 15), (52, 16), (55, 17), (58, 18), (62, 19)
)
# Individual asset reference, 7-bit characters, at most `ref_digits` of them (TDS 14.5.5, GIAI-202).
GIAI202_PARTITIONS: Final = _table(
    (148, 18), (151, 19), (154, 20), (158, 21), (161, 22), (164, 23), (168, 24)
)

# How a field is decoded (TDS 14.4): "digits" zero-padded to the partition's digit count
# (Partition Table method), "integer" as a decimal without leading zeros (Integer method,
# Unpadded Partition Table method), "string" from 7-bit characters (String method), "reserved"
# bits that must be zero.
FieldKind = Literal["digits", "integer", "string", "reserved"]


@dataclass(frozen=True, slots=True)
class Layout:
    """The coding table of one binary scheme: `name` as in the EPC tag URI (`sgtin-96`),
    `scheme` as in the pure identity URI (`sgtin`), the total length in bits, the partition
    table, how the reference field is decoded, and the tail after it (`tail_bits` 0: none)."""

    name: str
    scheme: str
    bits: int
    partitions: tuple[Partition, ...]
    ref_kind: FieldKind
    tail_kind: FieldKind
    tail_bits: int


# Header -> coding table (TDS 14.5.1 to 14.5.5).
LAYOUTS: Final = {
    0x30: Layout("sgtin-96", "sgtin", 96, SGTIN_PARTITIONS, "digits", "integer", 38),
    0x36: Layout("sgtin-198", "sgtin", 198, SGTIN_PARTITIONS, "digits", "string", 140),
    0x31: Layout("sscc-96", "sscc", 96, SSCC_PARTITIONS, "digits", "reserved", 24),
    0x32: Layout("sgln-96", "sgln", 96, SGLN_PARTITIONS, "digits", "integer", 41),
    0x39: Layout("sgln-195", "sgln", 195, SGLN_PARTITIONS, "digits", "string", 140),
    0x33: Layout("grai-96", "grai", 96, GRAI_PARTITIONS, "digits", "integer", 38),
    0x37: Layout("grai-170", "grai", 170, GRAI_PARTITIONS, "digits", "string", 112),
    0x34: Layout("giai-96", "giai", 96, GIAI96_PARTITIONS, "integer", "reserved", 0),
    0x38: Layout("giai-202", "giai", 202, GIAI202_PARTITIONS, "string", "reserved", 0),
}

# Other assigned headers (TDS 14.2): named in `epc_scheme`, kept as raw EPCs.
OTHER_HEADERS: Final = {
    0x00: "unprogrammed",
    0x2C: "gdti-96",
    0x2D: "gsrn-96",
    0x2E: "gsrnp-96",
    0x2F: "usdod-96",
    0x35: "gid-96",
    0x3A: "gdti-113",
    0x3B: "adi-var",
    0x3C: "cpi-96",
    0x3D: "cpi-var",
    0x3E: "gdti-174",
    0x3F: "sgcn-96",
    0x40: "itip-110",
    0x41: "itip-212",
}

# GS1 AI encodable character set 82 (TDS Table A-1); a 7-bit field holds their ASCII codes.
CSET82: Final = frozenset(
    "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
)
# The characters of set 82 that the pure identity URI writes as %-escapes (TDS Table A-1).
URI_ESCAPES: Final = {c: f"%{ord(c):02X}" for c in '"%&/<>?'}


def uri_escape(text: str) -> str:
    """A set-82 value as it appears in an EPC URI (TDS 5, the GS3A3 grammar)."""
    return "".join(URI_ESCAPES.get(c, c) for c in text)
