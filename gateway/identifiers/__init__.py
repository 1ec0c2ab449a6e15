"""Identifier parsing: the text of a scan in, a canonical `Identity` out, or IdentifierRejected.

Pure: no I/O, no clock. `aim` reads the symbology prefix, `gs1` parses and checks GS1 data,
`reasons` lists why a scan can be rejected. This module decides what the scan is, by what the
scan itself says about its data:

1. AIM prefix of a GS1 symbology (`]d2`, `]C1`, `]Q3`, `]e0`, `]J1`): a GS1 element string, or
   `invalid_gs1`. EAN/UPC (`]E0`, `]E4`) and ITF-14 (`]I1` with 14 digits): a bare GTIN.
2. `http://` or `https://`: a GS1 Digital Link on any domain. If it is not one, it is a plain
   code when `plain` is accepted and the URI matches `plain_pattern`, else `invalid_digital_link`.
3. Any other AIM prefix (`]d1`, `]Q1`, `]C0`, ...): non-GS1 data, so a plain code (or
   `scheme_not_accepted` where `plain` is not accepted), even if it looks like an element string.
4. No prefix: a plain code if `plain` is accepted and the text matches `plain_pattern`; else a GS1
   element string (raw with GS separators, or HRI with parentheses); else a plain code if `plain`
   is accepted (`pattern_mismatch` if it does not qualify); else `unrecognized`. Text that parses
   as GS1 but has a bad check digit or date is rejected as such, never taken as plain; so is text
   in HRI form (`(01)...`) that does not parse (`invalid_gs1`).

Without a `plain_pattern`, any printable text without surrounding whitespace that is not a GS1
code keyed on a GTIN or SSCC is plain, and GS1 is tried first. A numeric serial that looks like
`01` + 14 digits is then a GTIN (or a `bad_check_digit`): configure a pattern where that can be.

Canonical keys (`Identity.value`) are GS1 human-readable text with the GTIN as 14 digits, so the
DataMatrix, the Digital Link QR code and the RFID tag of one unit share a key: sgtin
`(01)09506000134352(21)ABC123`, sscc `(00)106141411234567897`, lgtin `(01)09506000134352(10)LOT1`,
gtin `(01)09506000134352`, plain: the data after the AIM prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from gateway.events import Identity

from . import gs1
from .aim import Symbology, split_aim
from .epc import EpcDecoded, decode_epc, epc_identity
from .gs1 import gs1_key_sgtin, gs1_key_sscc
from .reasons import REASONS, SCHEMES, IdentifierRejected, excerpt

__all__ = [
    "MAX_CODE_CHARS",
    "REASONS",
    "SCHEMES",
    "EpcDecoded",
    "IdentifierRejected",
    "decode_epc",
    "epc_identity",
    "gs1_key_sgtin",
    "gs1_key_sscc",
    "parse_code",
]

# Longer than any 2D symbol holds (QR: 7089 digits, 4296 alphanumerics, 2953 bytes): a longer
# text is a framing fault, and is not worth parsing.
MAX_CODE_CHARS: Final = 8192


def parse_code(
    text: str,
    *,
    source: str,
    schemes: frozenset[str],
    plain_pattern: re.Pattern[str] | None = None,
) -> Identity:
    """The identity in a scan's text (Latin-1, terminator stripped, AIM prefix kept), as read by
    device `source` at a station accepting `schemes` (see SCHEMES). `plain_pattern` must match a
    whole non-GS1 code for it to be `plain`. Raises IdentifierRejected, and nothing else."""
    if len(text) > MAX_CODE_CHARS:
        raise IdentifierRejected(
            "unrecognized", f"{excerpt(text)} is longer than {MAX_CODE_CHARS} characters"
        )
    symbology, data = split_aim(text)
    if not data.strip():  # Python counts GS (0x1D) as whitespace: a lone FNC1 is empty too
        after = f" after the AIM prefix {symbology.prefix!r}" if symbology else ""
        raise IdentifierRejected("empty", f"no data{after} in {excerpt(text)}")
    scan = _Scan(text, source, schemes, plain_pattern, symbology)
    if symbology is not None and symbology.gs1:
        return scan.gs1(gs1.parse_element_string(data))
    if symbology is not None and symbology.gtin_lengths:
        is_gtin = data.isascii() and data.isdigit() and len(data) in symbology.gtin_lengths
        if symbology.gtin_only or is_gtin:
            return scan.gs1(gs1.parse_bare_gtin(data, symbology.gtin_lengths))
    if data[:8].lower().startswith(("http://", "https://")):
        return scan.digital_link(data)
    if symbology is not None:
        return scan.non_gs1(data)
    return scan.unprefixed(data)


@dataclass(frozen=True, slots=True)
class _Scan:
    """One scan being parsed, with what the station accepts."""

    raw: str
    source: str
    schemes: frozenset[str]
    pattern: re.Pattern[str] | None
    symbology: Symbology | None

    def digital_link(self, uri: str) -> Identity:
        try:
            code = gs1.parse_digital_link(uri)
        except IdentifierRejected as exc:
            # A company URI that is no Digital Link may still be the plain code the station wants.
            if exc.reason == "invalid_digital_link" and self.takes_plain(uri):
                return self.plain(uri)
            raise
        return self.gs1(code)

    def non_gs1(self, data: str) -> Identity:
        """Data the AIM prefix says is not GS1: plain, if the station takes it."""
        if "plain" not in self.schemes:
            name = self.symbology.name if self.symbology else "no symbology"
            raise IdentifierRejected(
                "scheme_not_accepted",
                f"{excerpt(data)} is a non-GS1 code ({name}); this station accepts "
                f"{self.accepted()}",
            )
        problem = self.plain_problem(data)
        if problem is not None:
            raise IdentifierRejected("pattern_mismatch", problem)
        return self.plain(data)

    def unprefixed(self, data: str) -> Identity:
        """Data without AIM prefix: a plain code, a GS1 element string, or nothing we know."""
        if self.takes_plain(data):
            return self.plain(data)
        hri = gs1.is_hri(data)
        try:
            code = gs1.parse_hri(data) if hri else gs1.parse_element_string(data)
        except IdentifierRejected as exc:
            if exc.reason != "invalid_gs1" or hri:
                raise  # GS1 by its form, with a wrong check digit, date or field
            why = exc.message
        else:
            if gs1.scheme_of(code.elements) is not None or "plain" not in self.schemes:
                return self.gs1(code)
            why = f"{gs1.hri(code.elements)} has no GTIN (01) or SSCC (00)"
        if "plain" not in self.schemes:
            raise IdentifierRejected(
                "unrecognized",
                f"{excerpt(data)} is not a GS1 code ({why}), and this station accepts "
                f"{self.accepted()}",
            )
        problem = self.plain_problem(data)
        if problem is not None:
            raise IdentifierRejected("pattern_mismatch", f"{problem}; not GS1 either: {why}")
        return self.plain(data)

    def gs1(self, code: gs1.Gs1Code) -> Identity:
        """The identity of checked GS1 data, if its scheme is accepted here."""
        scheme = gs1.scheme_of(code.elements)
        if scheme is None:
            raise IdentifierRejected(
                "scheme_not_accepted",
                f"{gs1.hri(code.elements)} has no GTIN (01) or SSCC (00) to identify a unit by",
            )
        if scheme not in self.schemes:
            if scheme in ("gtin", "lgtin") and "sgtin" in self.schemes:
                raise IdentifierRejected(
                    "missing_serial",
                    f"{gs1.hri(code.elements)} has no serial (21); this station accepts "
                    f"{self.accepted()}",
                )
            raise IdentifierRejected(
                "scheme_not_accepted",
                f"{gs1.hri(code.elements)} is a code of scheme {scheme!r}; this station accepts "
                f"{self.accepted()}",
            )
        attrs = self.attrs(code.carrier) | gs1.attributes(code.elements)
        return Identity(scheme, gs1.key_of(scheme, code.elements), self.raw, self.source, attrs)

    def plain(self, data: str) -> Identity:
        return Identity("plain", data, self.raw, self.source, self.attrs("plain"))

    def takes_plain(self, data: str) -> bool:
        """The station takes plain codes, has a pattern, and `data` matches it."""
        return (
            "plain" in self.schemes
            and self.pattern is not None
            and self.pattern.fullmatch(data) is not None
        )

    def plain_problem(self, data: str) -> str | None:
        """Why `data` is not a plain code here, or None if it is one."""
        if self.pattern is not None:
            if self.pattern.fullmatch(data) is None:
                return f"{excerpt(data)} does not match the plain pattern {self.pattern.pattern!r}"
            return None
        for i, char in enumerate(data):
            if not char.isprintable():
                return f"{excerpt(data)} has the non-printable character {char!r} at position {i}"
        if data != data.strip():
            return f"{excerpt(data)} has leading or trailing whitespace"
        return None

    def attrs(self, carrier: str) -> dict[str, str]:
        attrs = {"carrier": carrier}
        if self.symbology is not None:
            attrs["symbology"] = self.symbology.name
        return attrs

    def accepted(self) -> str:
        return ", ".join(s for s in SCHEMES if s in self.schemes) or "no scheme"
