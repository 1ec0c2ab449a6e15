"""EPC binary decoding: the EPC bank of a UHF RFID tag, as a reader reports it, into an identity.

Pure: no I/O, no clock. Owns the decoding of the GS1 binary schemes SGTIN-96, SGTIN-198, SSCC-96,
SGLN-96, SGLN-195, GRAI-96, GRAI-170, GIAI-96 and GIAI-202 (GS1 EPC Tag Data Standard, "TDS",
1.x and 2.x: 14.4 decoding procedure and methods, 14.5 coding tables, tables in `epc_tables`),
their pure identity URIs (TDS 6.3) and their GS1 keys (TDS 7), and the EPC raw URI of anything
else (TDS 15.2.1).

Invariants:
- `decode_epc` never raises. What is not a valid GS1 encoding (unknown header, too few bits,
  partition 7, a company prefix or reference with more digits than its partition allows,
  non-zero reserved bits, a 7-bit field that is not set-82 text) is kept as scheme `epc`, keyed
  by its raw URI `urn:epc:raw:<bits>.x<HEX>`, with `epc_error` saying why.
- The key of a GS1 scheme is the canonical key of `gs1`: an SGTIN-96 tag and the DataMatrix
  `(01)<GTIN>(21)<serial>` of the same unit share it. Check digits are computed, as TDS 7 does.
- Bits after the scheme's own length are ignored, as TDS 14.4 does: memory is read in 16-bit
  words, so a 198-bit SGTIN arrives as 208 bits.

An SGLN extension of 0 means "no extension" (TDS 6.3.3, 7.3): its key is `(414)<GLN>` alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.events import Identity

from .epc_tables import CSET82, LAYOUTS, OTHER_HEADERS, uri_escape
from .gs1 import check_digit, gs1_key_sgtin, gs1_key_sscc
from .reasons import SCHEMES, IdentifierRejected, excerpt

# Why a tag's EPC is kept raw (`epc_error`); `epc_detail` says it for people.
EPC_ERRORS: Final = (
    "not_hex",  # the input is not hexadecimal digits (no raw URI can hold it)
    "too_short",  # fewer bits than a header, or than the scheme the header names
    "unknown_header",  # a header TDS does not assign (or an ISO/proprietary EPC)
    "unsupported_scheme",  # a TDS scheme this gateway does not decode (GID, GDTI, CPI ...)
    "bad_partition",  # partition value 7: no row of the partition table
    "company_prefix_overflow",  # more digits than the partition row allows
    "reference_overflow",  # item, serial, location or asset reference: likewise
    "reserved_bits",  # SSCC-96's 24 unallocated bits are not all zero
    "bad_string",  # a 7-bit field: a character outside set 82, data after the end, empty
)


@dataclass(frozen=True, slots=True)
class EpcDecoded:
    """A decoded EPC. `scheme`: sgtin, sscc, sgln, grai, giai, or epc for a raw one; `uri`: the
    pure identity URI (`urn:epc:id:...`) or the raw URI; `key`: the canonical key (the raw URI
    for epc, empty when the input is not hex); `attrs`: decoded fields (gtin, serial, sscc,
    gln, extension, grai, giai, company_prefix, filter, epc_scheme) or epc_error, epc_detail."""

    scheme: str
    uri: str
    key: str
    attrs: dict[str, str]


class _Invalid(Exception):
    """Internal: the bits are no valid encoding of their scheme."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def decode_epc(epc: str | bytes) -> EpcDecoded:
    """The identity in the EPC bank of a tag: bytes, or hex digits (either case) without the PC
    word. Never raises; see the module's invariants."""
    if isinstance(epc, bytes | bytearray | memoryview):
        digits = bytes(epc).hex()
    elif isinstance(epc, str) and epc.isascii() and all(c in _HEX for c in epc):
        digits = epc
    else:
        detail = f"{excerpt(str(epc))} is not hexadecimal"
        return EpcDecoded("epc", "", "", {"epc_error": "not_hex", "epc_detail": detail})
    # Any number of hex digits: readers send whole bytes, but TDS writes a 195-bit SGLN as 49.
    bits = 4 * len(digits)
    value = int(digits, 16) if digits else 0
    try:
        return _decode(value, bits)
    except _Invalid as exc:
        return _raw(digits, exc, _header_name(value, bits))


def epc_identity(epc: str, *, source: str, schemes: frozenset[str]) -> Identity:
    """The identity of a tag's EPC (hex, as read by device `source`) at a station accepting
    `schemes` (see SCHEMES; `epc` accepts raw EPCs). Raises IdentifierRejected:
    `scheme_not_accepted` for a scheme the station does not take, `unrecognized` for text that
    is not hexadecimal."""
    decoded = decode_epc(epc)
    if not decoded.key:
        raise IdentifierRejected("unrecognized", f"EPC {decoded.attrs['epc_detail']}")
    if decoded.scheme not in schemes:
        why = f" ({decoded.attrs['epc_detail']})" if decoded.scheme == "epc" else ""
        accepted = ", ".join(s for s in SCHEMES if s in schemes) or "no scheme"
        raise IdentifierRejected(
            "scheme_not_accepted",
            f"EPC {excerpt(epc)} is {decoded.uri}{why}, of scheme {decoded.scheme!r}; this "
            f"station accepts {accepted}",
        )
    attrs = {"carrier": "rfid"} | decoded.attrs
    if decoded.scheme != "epc":
        attrs["epc_uri"] = decoded.uri
    return Identity(decoded.scheme, decoded.key, epc, source, attrs)


_HEX: Final = frozenset("0123456789abcdefABCDEF")


def _raw(digits: str, why: _Invalid, scheme_name: str | None) -> EpcDecoded:
    uri = f"urn:epc:raw:{4 * len(digits)}.x{digits.upper()}"  # TDS 15.2.1, no control fields
    attrs = {"epc_error": why.code, "epc_detail": why.detail}
    if scheme_name is not None:
        attrs["epc_scheme"] = scheme_name
    return EpcDecoded("epc", uri, uri, attrs)


def _header_name(value: int, bits: int) -> str | None:
    if bits < 8:
        return None
    header = value >> (bits - 8)
    layout = LAYOUTS.get(header)
    return layout.name if layout is not None else OTHER_HEADERS.get(header)


class _Bits:
    """Reads fields from the most significant bit of a `size`-bit integer."""

    def __init__(self, value: int, size: int) -> None:
        self.value, self.left = value, size

    def take(self, n: int) -> int:
        self.left -= n
        return (self.value >> self.left) & ((1 << n) - 1)


def _decode(value: int, bits: int) -> EpcDecoded:
    """TDS 14.4: header, then the coding table the header selects."""
    if bits < 8:
        raise _Invalid("too_short", f"{bits} bits hold no EPC header")
    header = value >> (bits - 8)
    layout = LAYOUTS.get(header)
    if layout is None:
        if header in OTHER_HEADERS:
            name = OTHER_HEADERS[header]
            raise _Invalid("unsupported_scheme", f"header 0x{header:02X} ({name}) is not decoded")
        raise _Invalid("unknown_header", f"header 0x{header:02X} is not a GS1 EPC header")
    if bits < layout.bits:
        raise _Invalid("too_short", f"{layout.name} needs {layout.bits} bits, got {bits}")
    reader = _Bits(value >> (bits - layout.bits), layout.bits)
    reader.take(8)
    filter_value, partition = reader.take(3), reader.take(3)
    if partition >= len(layout.partitions):
        raise _Invalid("bad_partition", f"{layout.name} partition value {partition} is not 0-6")
    row = layout.partitions[partition]
    prefix = _digits(reader.take(row.cp_bits), row.cp_digits, "company prefix")
    ref = _field(layout.ref_kind, reader.take(row.ref_bits), row.ref_bits, row.ref_digits)
    tail = _field(layout.tail_kind, reader.take(layout.tail_bits), layout.tail_bits, 20)
    attrs = {"epc_scheme": layout.name, "filter": str(filter_value), "company_prefix": prefix}
    try:
        return _BUILDERS[layout.scheme](prefix, ref, tail, attrs)
    except IdentifierRejected as exc:  # not expected: every field was checked above
        raise _Invalid("bad_string", exc.message) from None


def _digits(value: int, digits: int, what: str) -> str:
    """TDS 14.4.3 (Partition Table method): a field of exactly `digits` digits, zero-padded."""
    if value >= 10**digits:
        code = "company_prefix_overflow" if what == "company prefix" else "reference_overflow"
        raise _Invalid(code, f"{what} {value} has more than {digits} digits")
    return str(value).zfill(digits) if digits else ""


def _field(kind: str, value: int, bits: int, limit: int) -> str:
    """A field after the company prefix; `limit`: its digits, or its most characters."""
    match kind:
        case "digits":
            return _digits(value, limit, "reference")
        case "integer":  # TDS 14.4.1 / 14.4.4: decimal without leading zeros
            return str(value)
        case "string":
            return _string(value, bits, min(limit, bits // 7))
        case _:  # reserved
            if value:
                raise _Invalid("reserved_bits", f"{bits} reserved bits are 0x{value:X}, not 0")
            return ""


def _string(value: int, bits: int, max_chars: int) -> str:
    """TDS 14.4.2 (String method): 7-bit set-82 characters, then all zero bits."""
    chars: list[str] = []
    left = bits
    while left >= 7:
        left -= 7
        code = (value >> left) & 0x7F
        if code == 0:
            break
        char = chr(code)
        if char not in CSET82:
            raise _Invalid("bad_string", f"character {char!r} is not in GS1 set 82")
        chars.append(char)
    if value & ((1 << left) - 1):
        raise _Invalid("bad_string", f"non-zero bits after the text {''.join(chars)!r}")
    if not chars:
        raise _Invalid("bad_string", "empty text")
    if len(chars) > max_chars:
        raise _Invalid("bad_string", f"{len(chars)} characters, at most {max_chars} allowed")
    return "".join(chars)


def _with_check(payload: str) -> str:
    return payload + str(check_digit(payload))


def _sgtin(prefix: str, ref: str, serial: str, attrs: dict[str, str]) -> EpcDecoded:
    gtin = _with_check(ref[:1] + prefix + ref[1:])
    attrs |= {"gtin": gtin, "serial": serial}
    uri = f"urn:epc:id:sgtin:{prefix}.{ref}.{uri_escape(serial)}"
    return EpcDecoded("sgtin", uri, gs1_key_sgtin(gtin, serial), attrs)


def _sscc(prefix: str, ref: str, _tail: str, attrs: dict[str, str]) -> EpcDecoded:
    sscc = _with_check(ref[:1] + prefix + ref[1:])
    attrs["sscc"] = sscc
    return EpcDecoded("sscc", f"urn:epc:id:sscc:{prefix}.{ref}", gs1_key_sscc(sscc), attrs)


def _sgln(prefix: str, ref: str, extension: str, attrs: dict[str, str]) -> EpcDecoded:
    gln = _with_check(prefix + ref)
    attrs["gln"] = gln
    key = f"(414){gln}"
    if extension != "0":
        attrs["extension"] = extension
        key += f"(254){extension}"
    return EpcDecoded("sgln", f"urn:epc:id:sgln:{prefix}.{ref}.{uri_escape(extension)}", key, attrs)


def _grai(prefix: str, ref: str, serial: str, attrs: dict[str, str]) -> EpcDecoded:
    grai = _with_check("0" + prefix + ref) + serial
    attrs |= {"grai": grai, "serial": serial}
    uri = f"urn:epc:id:grai:{prefix}.{ref}.{uri_escape(serial)}"
    return EpcDecoded("grai", uri, f"(8003){grai}", attrs)


def _giai(prefix: str, ref: str, _tail: str, attrs: dict[str, str]) -> EpcDecoded:
    giai = prefix + ref
    attrs["giai"] = giai
    return EpcDecoded("giai", f"urn:epc:id:giai:{prefix}.{uri_escape(ref)}", f"(8004){giai}", attrs)


_BUILDERS: Final = {"sgtin": _sgtin, "sscc": _sscc, "sgln": _sgln, "grai": _grai, "giai": _giai}
