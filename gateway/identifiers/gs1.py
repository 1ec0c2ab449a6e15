"""GS1 data in a scan: element strings (raw with GS separators, or HRI with parentheses), GS1
Digital Link URIs and bare GTINs (EAN/UPC, ITF-14), parsed with biip into one checked form.

Owns every check biip leaves to its caller (check digits, dates, character set, repeated AIs)
and the canonical key format `(01)<GTIN-14>(21)<serial>` / `(00)<SSCC-18>`, which RFID EPC
decoding shares through `gs1_key_sgtin` and `gs1_key_sscc`.

Invariant of a `Gs1Code`: every value is ASCII and matches its AI's format, every GTIN, SSCC and
GLN has a correct check digit, every date is a calendar date, and each AI appears once. A GTIN
(AI 01) is always 14 digits, whatever the carrier.

Two-digit years are read as 20YY. GS1 (General Specifications 7.12) resolves them in a window
around the current year; that needs a clock, which this package must not read, and 20YY gives
the same answer for every date up to 50 years ahead.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, urlsplit

from biip import ParseConfig, ParseError
from biip.gs1_application_identifiers import GS1ApplicationIdentifier
from biip.gs1_digital_link_uris import GS1DigitalLinkURI
from biip.gs1_element_strings import GS1ElementString

from .reasons import IdentifierRejected, excerpt

GS: Final = "\x1d"  # how scanners transmit FNC1

# biip quirk: with date verification on, any bad date is a ParseError indistinguishable from a
# format error, it reads the wall clock for the century, and it wrongly rejects AI 7007 ranges
# (YYMMDDYYMMDD, the second date parsed as a time). We verify dates ourselves (check_dates).
_LENIENT: Final = ParseConfig(gs1_element_strings_verify_date=False)

# AI -> whether day 00 ("last day of the month") is allowed. The date is the first 6 digits;
# AI 7007 may hold a second one. Times that follow a date are not checked.
_DATE_AIS: Final = {
    **dict.fromkeys(("11", "12", "13", "15", "16", "17"), True),
    **dict.fromkeys(("4324", "4325", "4326", "7003", "7006", "7007", "7011", "8008"), False),
}

# Attributes recorded in `Identity.attrs`: AI -> name; dates become ISO dates.
_ATTRS: Final = {"01": "gtin", "21": "serial", "10": "lot", "00": "sscc"}
_DATE_ATTRS: Final = {"17": "expiry", "11": "production_date", "15": "best_before"}

# GS1 AI encodable character set 82, the alphabet of serials (AI 21) and lots (AI 10).
_SERIAL: Final = re.compile(r'[!"%-?A-Z_a-z]{1,20}')
_HRI_AI: Final = re.compile(r"\(([0-9]{2,4})\)")
_BIIP_PATTERN: Final = re.compile(r" pattern '\^.*\$'")


@dataclass(frozen=True, slots=True)
class Gs1Code:
    """Checked GS1 data: AI -> value in order of appearance, and how it was carried
    (`element_string`, `digital_link` or `linear_gtin`)."""

    elements: Mapping[str, str]
    carrier: str


def parse_element_string(data: str) -> Gs1Code:
    """A GS1 element string as a scanner sends it: AIs and values, variable-length fields ended
    by GS. Leading, trailing and repeated GS are tolerated (some scanners send FNC1 as GS)."""
    fast = fast_elements(data)
    if fast is not None:
        return Gs1Code(fast, "element_string")
    return parse_element_string_full(data)


def parse_element_string_full(data: str) -> Gs1Code:
    """parse_element_string without the fast path: every AI, every check, precise errors."""
    _check_charset(data)
    rest = data.lstrip(GS)
    found: list[GS1ElementString] = []
    while rest:
        element = _extract(rest, found[-1] if found else None)
        found.append(element)
        rest = rest[len(element) :].lstrip(GS)
    return Gs1Code(_checked(found, "invalid_gs1"), "element_string")


# The AIs of nearly every serialization code, for the fast path: AI -> (numeric, min, max).
_FAST_AIS: Final = {
    "00": (True, 18, 18),
    "01": (True, 14, 14),
    "02": (True, 14, 14),
    "10": (False, 1, 20),
    "11": (True, 6, 6),
    "12": (True, 6, 6),
    "13": (True, 6, 6),
    "15": (True, 6, 6),
    "16": (True, 6, 6),
    "17": (True, 6, 6),
    "21": (False, 1, 20),
}


def fast_elements(data: str) -> dict[str, str] | None:
    """The checked elements of a *valid* element string made only of the common AIs above,
    in a fraction of biip's time (a line scans hundreds of codes a second); None for anything
    else, which then takes the full path and gets its precise error. Property-tested to agree
    with the full path (tests/test_identifiers_props.py)."""
    rest = data.lstrip(GS)
    elements: dict[str, str] = {}
    while rest:
        ai = rest[:2]
        spec = _FAST_AIS.get(ai)
        if spec is None or ai in elements:
            return None
        numeric, low, high = spec
        if numeric:
            value = rest[2 : 2 + high]
            if len(value) != high or not (value.isascii() and value.isdigit()):
                return None
        else:
            end = rest.find(GS, 2)
            value = rest[2:end] if end >= 0 else rest[2:]
            if not low <= len(value) <= high or not _SERIAL.fullmatch(value):
                return None
        elements[ai] = value
        rest = rest[2 + len(value) :].lstrip(GS)
    for ai in ("00", "01", "02"):
        digits = elements.get(ai)
        if digits is not None and int(digits[-1]) != check_digit(digits[:-1]):
            return None
    for ai, value in elements.items():
        if ai in _DATE_AIS and yymmdd(value, _DATE_AIS[ai]) is None:
            return None
    return elements if elements else None


def parse_hri(text: str) -> Gs1Code:
    """The human-readable form, `(01)09506000134352(21)ABC`, as typed by hand; spaces ignored.

    Our own splitter rather than biip's `parse_hri`, which silently drops an AI with an empty
    value and any stray text between fields. A value containing `(NN)` cannot be told from the
    next AI in this form; that ambiguity is GS1's, and the scanned form has no such problem.
    """
    hri = text.replace(" ", "")
    _check_charset(hri, allow_gs=False)
    marks = list(_HRI_AI.finditer(hri))
    if not marks or marks[0].start() != 0:
        raise IdentifierRejected("invalid_gs1", f"{excerpt(text)} does not start with an (AI)")
    found: list[GS1ElementString] = []
    for mark, end in zip(marks, [m.start() for m in marks[1:]] + [len(hri)], strict=True):
        ai, value = mark.group(1), hri[mark.end() : end]
        if _known_ai(ai) is None:
            raise IdentifierRejected("invalid_gs1", f"({ai}) is not a GS1 application identifier")
        element = _extract(ai + value, None)
        if len(element) != len(ai) + len(value):
            raise IdentifierRejected(
                "invalid_gs1",
                f"({ai}) value {excerpt(value)} is longer than its format {element.ai.format}",
            )
        found.append(element)
    return Gs1Code(_checked(found, "invalid_gs1"), "element_string")


def parse_digital_link(uri: str) -> Gs1Code:
    """A GS1 Digital Link URI on any domain and path prefix: key and qualifiers in the path,
    other AIs in the query (`?17=251231&10=LOT`); non-AI query parameters are ignored."""
    for i, char in enumerate(uri):
        if not "!" <= char <= "~":
            raise IdentifierRejected(
                "invalid_digital_link",
                f"character {char!r} at position {i} of {excerpt(uri)} is not allowed in a URI",
            )
    try:
        query = urlsplit(uri).query
    except ValueError as exc:  # e.g. "http://[x": an unclosed IPv6 host
        raise _invalid_link(uri, exc) from None
    # Dates first: biip's own format check would report month 13 as a malformed value.
    for key, values in parse_qs(query).items():
        check_dates(key, values[-1])  # biip also keeps the last of repeated parameters
    try:
        link = GS1DigitalLinkURI.parse(uri, config=_LENIENT)
    except (ParseError, ValueError) as exc:
        raise _invalid_link(uri, exc) from None
    return Gs1Code(_checked(link.element_strings, "invalid_digital_link"), "digital_link")


def parse_bare_gtin(data: str, lengths: tuple[int, ...]) -> Gs1Code:
    """The content of an EAN/UPC or ITF-14 symbol: a GTIN and nothing else."""
    if not (data.isascii() and data.isdigit() and len(data) in lengths):
        expected = " or ".join(str(n) for n in lengths)
        raise IdentifierRejected(
            "invalid_gs1", f"{excerpt(data)} is not a GTIN of {expected} digits"
        )
    gtin = data.zfill(14)
    _check_digit("GTIN", gtin)
    return Gs1Code({"01": gtin}, "linear_gtin")


def is_hri(text: str) -> bool:
    """Whether `text` starts like the human-readable form: a known AI in parentheses."""
    mark = _HRI_AI.match(text)
    return mark is not None and _known_ai(mark.group(1)) is not None


def check_dates(ai: str, value: str) -> None:
    """Reject a date AI whose YYMMDD part(s) is not a calendar date. Values that are not six
    ASCII digits are left to the format check."""
    day00 = _DATE_AIS.get(ai)
    if day00 is None:
        return
    dates = [value[:6], value[6:12]] if ai == "7007" else [value[:6]]
    for date in dates:
        if len(date) == 6 and date.isascii() and date.isdigit() and yymmdd(date, day00) is None:
            raise IdentifierRejected(
                "invalid_date", f"({ai}) date {date!r} is not a calendar date (YYMMDD)"
            )


@functools.lru_cache(maxsize=4096)  # a line sees few distinct dates; this is per scan
def yymmdd(date: str, day00: bool = True) -> dt.date | None:
    """A GS1 YYMMDD date (20YY; day 00 is the last day of the month when allowed), or None."""
    year, month, day = 2000 + int(date[:2]), int(date[2:4]), int(date[4:6])
    if not 1 <= month <= 12:
        return None
    if day == 0 and day00:
        day = calendar.monthrange(year, month)[1]
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


# --- identity -------------------------------------------------------------------------------


def scheme_of(elements: Mapping[str, str]) -> str | None:
    """The identity scheme of checked GS1 data; None when it has neither a GTIN nor an SSCC."""
    if "00" in elements:
        return "sscc"
    if "01" not in elements:
        return None
    if "21" in elements:
        return "sgtin"
    return "lgtin" if "10" in elements else "gtin"


def key_of(scheme: str, elements: Mapping[str, str]) -> str:
    """The canonical key of checked GS1 data of `scheme` (as returned by scheme_of). The data
    is checked already: the same forms as gs1_key_sgtin / gs1_key_sscc, without their checks."""
    match scheme:
        case "sscc":
            return f"(00){elements['00']}"
        case "sgtin":
            return f"(01){elements['01']}(21){elements['21']}"
        case "lgtin":
            return f"(01){elements['01']}(10){elements['10']}"
        case _:
            return f"(01){elements['01']}"


def attributes(elements: Mapping[str, str]) -> dict[str, str]:
    """What `Identity.attrs` records of checked GS1 data."""
    attrs = {name: elements[ai] for ai, name in _ATTRS.items() if ai in elements}
    for ai, name in _DATE_ATTRS.items():
        if ai in elements and (date := yymmdd(elements[ai])) is not None:
            attrs[name] = _iso(date)
    return attrs


@functools.lru_cache(maxsize=4096)
def _iso(date: dt.date) -> str:
    return date.isoformat()


def hri(elements: Mapping[str, str]) -> str:
    """Checked GS1 data in human-readable form, quoted and cut for a message."""
    return excerpt("".join(f"({ai}){value}" for ai, value in elements.items()))


def gs1_key_sgtin(gtin14: str, serial: str) -> str:
    """The canonical key of a serialized trade item, `(01)<GTIN-14>(21)<serial>`. Raises
    IdentifierRejected for a wrong GTIN or a serial outside GS1 character set 82 (1-20)."""
    _check_gtin14(gtin14)
    if not _SERIAL.fullmatch(serial):
        raise IdentifierRejected(
            "invalid_gs1", f"serial {excerpt(serial)} is not 1-20 characters of GS1 set 82"
        )
    return f"(01){gtin14}(21){serial}"


def gs1_key_sscc(sscc18: str) -> str:
    """The canonical key of a logistic unit, `(00)<SSCC-18>`. Raises IdentifierRejected for a
    value that is not 18 digits with a correct check digit."""
    if not (len(sscc18) == 18 and sscc18.isascii() and sscc18.isdigit()):
        raise IdentifierRejected("invalid_gs1", f"SSCC {excerpt(sscc18)} is not 18 digits")
    _check_digit("SSCC", sscc18)
    return f"(00){sscc18}"


# --- checks ---------------------------------------------------------------------------------


def _check_gtin14(gtin14: str) -> None:
    if not (len(gtin14) == 14 and gtin14.isascii() and gtin14.isdigit()):
        raise IdentifierRejected("invalid_gs1", f"GTIN {excerpt(gtin14)} is not 14 digits")
    _check_digit("GTIN", gtin14)


def check_digit(payload: str) -> int:
    """The GS1 mod-10 check digit of ASCII digits (weights 3, 1, 3 ... from the right). Sums
    byte values and removes the '0' offsets: several times faster than biip's, per scan."""
    odd, even = payload[-1::-2], payload[-2::-2]
    total = 3 * (sum(odd.encode()) - 48 * len(odd)) + sum(even.encode()) - 48 * len(even)
    return -total % 10


def _check_digit(kind: str, digits: str) -> None:
    """`digits` are ASCII digits; reject them when the last one is not the GS1 check digit."""
    expected = check_digit(digits[:-1])
    if int(digits[-1]) != expected:
        raise IdentifierRejected(
            "bad_check_digit",
            f"{kind} check digit of {digits!r} is {digits[-1]}, expected {expected}",
        )


def _check_charset(data: str, *, allow_gs: bool = True) -> None:
    # Element strings are printable ASCII (CSET 82 is a subset) plus GS. Checking up front also
    # guards against a biip quirk: its AI patterns use `\d`, which matches any Unicode digit,
    # so '01' followed by Arabic-Indic digits would parse as a GTIN.
    for i, char in enumerate(data):
        if not ("!" <= char <= "~" or (allow_gs and char == GS)):
            raise IdentifierRejected(
                "invalid_gs1",
                f"character {char!r} at position {i} of {excerpt(data)} is not allowed in GS1 "
                "element strings",
            )


def _invalid_link(uri: str, exc: Exception) -> IdentifierRejected:
    detail = _BIIP_PATTERN.sub("", str(exc))  # biip quotes whole regular expressions
    return IdentifierRejected(
        "invalid_digital_link", f"{excerpt(uri)} is not a GS1 Digital Link: {detail}"
    )


def _known_ai(code: str) -> GS1ApplicationIdentifier | None:
    try:
        ai = GS1ApplicationIdentifier.extract(code)
    except ParseError:
        return None
    return ai if ai.ai == code else None


def _extract(rest: str, previous: GS1ElementString | None) -> GS1ElementString:
    """The first element string of `rest`, which is not empty and does not start with GS."""
    hint = ""
    if previous is not None and ".." in previous.ai.format:
        hint = f" (GS missing after the variable-length {previous.ai}, or its value too long?)"
    try:
        ai = GS1ApplicationIdentifier.extract(rest)
    except ParseError:
        raise IdentifierRejected(
            "invalid_gs1", f"no GS1 application identifier at {excerpt(rest)}{hint}"
        ) from None
    field = rest[len(ai) :].split(GS, 1)[0]
    check_dates(ai.ai, field)  # before biip, whose format check would call month 13 malformed
    try:
        # biip quirk: extract() cuts the value at the first GS, then matches the AI pattern as a
        # prefix: a too-long variable field leaves its tail as the start of the next element.
        return GS1ElementString.extract(rest, config=_LENIENT)
    except ParseError:
        raise IdentifierRejected(
            "invalid_gs1",
            f"{ai} value {excerpt(field)} does not have the format {ai.format} "
            f"({ai.data_title}){hint}",
        ) from None


def _checked(found: Iterable[GS1ElementString], invalid: str) -> dict[str, str]:
    """AI -> value of parsed element strings, after the checks biip leaves to us."""
    elements: dict[str, str] = {}
    for element in found:
        ai, value = element.ai.ai, element.value
        if not value.isascii():  # Digital Link values are percent-decoded: see _check_charset
            raise IdentifierRejected(invalid, f"({ai}) value {excerpt(value)} is not ASCII")
        _check_keys(element, invalid)
        check_dates(ai, value)
        if elements.get(ai, value) != value:
            raise IdentifierRejected(
                invalid, f"({ai}) appears twice, as {excerpt(elements[ai])} and {excerpt(value)}"
            )
        elements[ai] = value
    return elements


def _check_keys(element: GS1ElementString, invalid: str) -> None:
    # biip quirk: a bad GTIN, SSCC or GLN does not raise; the element gets gtin=None and a
    # gtin_error message (likewise sscc_error, gln_error). Check every one of them.
    for kind, error, length in (
        ("GTIN", element.gtin_error, 14),
        ("SSCC", element.sscc_error, 18),
        ("GLN", element.gln_error, 13),
    ):
        if error is None:
            continue
        if len(element.value) == length and element.value.isdigit():
            _check_digit(kind, element.value)
        raise IdentifierRejected(invalid, f"{element.ai} {kind} {excerpt(element.value)}: {error}")
