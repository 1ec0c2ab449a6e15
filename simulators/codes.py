"""Realistic codes for the scanner simulators, with the ground truth of what each one holds.

Owns its own GS1 arithmetic (check digits, element strings, Digital Link URIs), written
independently of `gateway.identifiers`, so that tests comparing the gateway's parse with a
`GeneratedCode`'s `fields` compare two implementations, not one with itself.

Everything is deterministic for a given seed. Serial numbers are unique within a generator.
Faulty variants (`faulty=...`) carry `valid=False` and name their fault, each one that any
correct parser must reject: `check_digit` (GTIN or SSCC check digit off by one), `malformed_ai`
(a letter in the numeric GTIN or SSCC field), `bad_date` (expiry month 13).
"""

from __future__ import annotations

import random
import string
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

GS: Final = "\x1d"

# AIM symbology identifiers a scanner prefixes when configured to (ISO/IEC 15424).
AIM_GS1_DATAMATRIX: Final = "]d2"
AIM_GS1_128: Final = "]C1"
AIM_CODE128: Final = "]C0"
AIM_QR: Final = "]Q1"

KINDS: Final = ("gs1_datamatrix", "gs1_128", "digital_link", "sscc", "plain")
FAULTS: Final = ("check_digit", "malformed_ai", "bad_date")

# A subset of GS1 AI encodable character set 82 that needs no escaping in a URI path; the
# serials still exercise the letters, digits and punctuation real lines use.
_SERIAL_CHARS: Final = string.ascii_uppercase + string.digits + "-._"
_LOT_CHARS: Final = string.ascii_uppercase + string.digits


def gs1_check_digit(digits: str) -> str:
    """The GS1 mod-10 check digit of `digits` (a GTIN, SSCC, GLN ... without its check digit).

    Weights 3 and 1 alternate from the rightmost digit, which has weight 3.
    """
    if not digits.isdigit():
        raise ValueError(f"not all digits: {digits!r}")
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return str((10 - total % 10) % 10)


def has_valid_check_digit(number: str) -> bool:
    return len(number) > 1 and number.isdigit() and gs1_check_digit(number[:-1]) == number[-1]


@dataclass(frozen=True, slots=True)
class GeneratedCode:
    """One code as a symbol holds it, and what it means.

    `data` is what the scanner sends without AIM prefix (GS as the FNC1 separator); `fields` is
    the oracle: gtin, serial, lot, expiry, sscc, url as applicable.
    """

    kind: str
    aim: str
    data: str
    fields: dict[str, str] = field(default_factory=dict)
    valid: bool = True
    fault: str | None = None

    def text(self, aim_prefix: bool = True) -> str:
        """What a scanner sends, before the terminator."""
        return self.aim + self.data if aim_prefix else self.data


class CodeGenerator:
    """Deterministic source of codes for one (simulated) product family.

    `company_prefix` is a GS1 company prefix (7 to 10 digits); GTINs and SSCCs are built on it.
    """

    def __init__(self, seed: int = 0, company_prefix: str = "4012345") -> None:
        if not (company_prefix.isdigit() and 7 <= len(company_prefix) <= 10):
            raise ValueError("company_prefix must be 7 to 10 digits")
        self._rng = random.Random(seed)
        self._prefix = company_prefix
        self._serials: set[str] = set()
        self._sscc_refs: set[str] = set()

    # --- building blocks ------------------------------------------------------------------

    def gtin(self) -> str:
        """A GTIN-14 (indicator digit, company prefix, item reference, check digit)."""
        item_digits = 12 - len(self._prefix)
        body = (
            str(self._rng.choice((0, 0, 1)))
            + self._prefix
            + "".join(self._rng.choices(string.digits, k=item_digits))
        )
        return body + gs1_check_digit(body)

    def serial(self) -> str:
        while True:
            size = self._rng.randint(6, 20)
            value = "".join(self._rng.choices(_SERIAL_CHARS, k=size))
            if value not in self._serials:
                self._serials.add(value)
                return value

    def lot(self) -> str:
        return "".join(self._rng.choices(_LOT_CHARS, k=self._rng.randint(3, 10)))

    def expiry(self) -> str:
        """YYMMDD, a real date (day 01 to 28 keeps every month valid)."""
        rng = self._rng
        return f"{rng.randint(25, 35):02d}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"

    # --- symbols --------------------------------------------------------------------------

    def gs1_datamatrix(self, faulty: str | None = None) -> GeneratedCode:
        """GTIN + serial + lot + expiry as a GS1 DataMatrix element string (`]d2`)."""
        f = {
            "gtin": self.gtin(),
            "serial": self.serial(),
            "lot": self.lot(),
            "expiry": self.expiry(),
        }
        return self._element_string("gs1_datamatrix", AIM_GS1_DATAMATRIX, f, faulty)

    def gs1_128(self, faulty: str | None = None) -> GeneratedCode:
        """GTIN + lot + expiry + serial as a GS1-128 element string (`]C1`)."""
        f = {
            "gtin": self.gtin(),
            "serial": self.serial(),
            "lot": self.lot(),
            "expiry": self.expiry(),
        }
        return self._element_string("gs1_128", AIM_GS1_128, f, faulty)

    def sscc(self, faulty: str | None = None) -> GeneratedCode:
        """An SSCC (AI 00) in GS1-128 (`]C1`): extension digit, company prefix, serial
        reference, check digit."""
        while True:
            ref = "".join(self._rng.choices(string.digits, k=16 - len(self._prefix)))
            if ref not in self._sscc_refs:
                self._sscc_refs.add(ref)
                break
        body = str(self._rng.randint(0, 9)) + self._prefix + ref
        sscc = body + gs1_check_digit(body)
        fields = {"sscc": sscc}
        if faulty is None:
            return GeneratedCode("sscc", AIM_GS1_128, "00" + sscc, fields)
        if faulty == "bad_date":
            raise ValueError("an SSCC carries no date")
        data = "00" + _break(sscc, faulty)
        return GeneratedCode("sscc", AIM_GS1_128, data, fields, valid=faulty is None, fault=faulty)

    def digital_link(self, faulty: str | None = None) -> GeneratedCode:
        """A GS1 Digital Link URI (QR, `]Q1`): /01/{gtin}/10/{lot}/21/{serial}?17={expiry}."""
        f = {
            "gtin": self.gtin(),
            "serial": self.serial(),
            "lot": self.lot(),
            "expiry": self.expiry(),
        }
        gtin, expiry = _break(f["gtin"], faulty), _break_date(f["expiry"], faulty)
        quote = urllib.parse.quote
        url = (
            f"https://id.gs1.org/01/{gtin}/10/{quote(f['lot'], safe='')}"
            f"/21/{quote(f['serial'], safe='')}?17={expiry}"
        )
        f["url"] = url
        return GeneratedCode("digital_link", AIM_QR, url, f, valid=faulty is None, fault=faulty)

    def plain(self) -> GeneratedCode:
        """A non-GS1 serial in Code 128 (`]C0`), such as a line's own unit numbers."""
        value = "SN" + "".join(self._rng.choices(string.digits, k=10))
        return GeneratedCode("plain", AIM_CODE128, value, {"serial": value})

    def make(self, kind: str, faulty: str | None = None) -> GeneratedCode:
        """A code of `kind` (one of KINDS), optionally with a fault (one of FAULTS)."""
        if kind == "gs1_datamatrix":
            return self.gs1_datamatrix(faulty)
        if kind == "gs1_128":
            return self.gs1_128(faulty)
        if kind == "digital_link":
            return self.digital_link(faulty)
        if kind == "sscc":
            return self.sscc(faulty)
        if kind == "plain":
            if faulty is not None:
                raise ValueError("a plain serial has no check digit or structure to break")
            return self.plain()
        raise ValueError(f"unknown code kind {kind!r}; known: {', '.join(KINDS)}")

    def stream(
        self, kind: str = "gs1_datamatrix", count: int | None = None, faulty_share: float = 0.0
    ) -> Iterator[GeneratedCode]:
        """`count` codes of `kind` (`mixed`: all kinds in turn), endless when `count` is None;
        `faulty_share` of them carry a fault that applies to their kind."""
        n = 0
        while count is None or n < count:
            k = KINDS[n % len(KINDS)] if kind == "mixed" else kind
            fault = None
            if k != "plain" and self._rng.random() < faulty_share:
                fault = self._rng.choice(FAULTS[:2] if k == "sscc" else FAULTS)
            yield self.make(k, fault)
            n += 1

    # --- internals ------------------------------------------------------------------------

    def _element_string(
        self, kind: str, aim: str, f: dict[str, str], faulty: str | None
    ) -> GeneratedCode:
        gtin, expiry = _break(f["gtin"], faulty), _break_date(f["expiry"], faulty)
        if kind == "gs1_datamatrix":
            # Fixed-length AIs need no separator; serial and lot (variable) do, unless last.
            data = f"01{gtin}21{f['serial']}{GS}10{f['lot']}{GS}17{expiry}"
        else:
            # The order GS1-128 labels favour: fixed-length first, one variable field last.
            data = f"01{gtin}17{expiry}10{f['lot']}{GS}21{f['serial']}"
        return GeneratedCode(kind, aim, data, f, valid=faulty is None, fault=faulty)


def _break(number: str, faulty: str | None) -> str:
    """`number` (GTIN, SSCC) as the fault `faulty` spoils it; unchanged by other faults."""
    if faulty == "check_digit":
        return number[:-1] + str((int(number[-1]) + 1) % 10)
    if faulty == "malformed_ai":
        return number[:5] + "O" + number[6:]  # the letter O where a digit belongs
    if faulty not in (None, "bad_date"):
        raise ValueError(f"unknown fault {faulty!r}; known: {', '.join(FAULTS)}")
    return number


def _break_date(yymmdd: str, faulty: str | None) -> str:
    return yymmdd[:2] + "13" + yymmdd[4:] if faulty == "bad_date" else yymmdd
