"""AIM symbology identifiers (ISO/IEC 15424): the `]` + code character + modifier that a scanner
may put in front of the data it decoded.

Owns the table of code characters, the choice of which prefixes announce a GS1 element string
(FNC1 in first position: `]d2`, `]C1`, `]Q3`, `]e0`, `]J1`) and which announce a bare GTIN
(EAN/UPC, ITF-14), and the split of a scan into prefix and data. Everything else is non-GS1 data:
a GS1 Digital Link URI or a plain serial.

Only these three-character identifiers are recognised. A text that starts with `]` but not with
a known code character and an ASCII letter or digit is treated as having no prefix (a plain
serial may start with `]`). `]Y` (system expansion, variable length) is not supported.
biip has its own table (`biip.symbology`), but it lacks DotCode (`]J`), so we keep ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# ISO/IEC 15424 code characters, named as they appear in `Identity.attrs["symbology"]`.
_SYMBOLOGIES: Final = {
    "A": "code39",
    "B": "telepen",
    "C": "code128",
    "D": "code_one",
    "E": "ean_upc",
    "F": "codabar",
    "G": "code93",
    "H": "code11",
    "I": "itf",
    "J": "dotcode",
    "K": "code16k",
    "L": "pdf417",
    "M": "msi",
    "N": "anker",
    "O": "codablock",
    "P": "plessey",
    "Q": "qr",
    "R": "straight_2of5",
    "S": "straight_2of5",
    "T": "code49",
    "U": "maxicode",
    "X": "other",
    "Z": "non_barcode",
    "c": "channel_code",
    "d": "datamatrix",
    "e": "gs1_databar",
    "h": "han_xin",
    "o": "ocr",
    "p": "posicode",
    "s": "supercode",
    "z": "aztec",
}

# Symbology + modifier that mean "FNC1 in first position": the data is a GS1 element string.
_GS1_ELEMENT_STRING: Final = {
    "d2": "gs1_datamatrix",
    "C1": "gs1_128",
    "Q3": "gs1_qr",
    "e0": "gs1_databar",
    "J1": "gs1_dotcode",
}

# Linear symbols whose whole content is a GTIN: lengths allowed, and whether the content must be a
# GTIN (EAN/UPC carries nothing else) or only is one when it has that length (ITF also carries
# other numbers). ]E0 transmits UPC-A and UPC-E as 13 digits; some scanners drop the leading 0 of
# UPC-A, hence 12. ]E3 (with add-on) is not decoded as a GTIN.
_BARE_GTIN: Final = {
    "E0": ("ean_upc", (12, 13), True),
    "E4": ("ean8", (8,), True),
    "I1": ("itf14", (14,), False),
}


@dataclass(frozen=True, slots=True)
class Symbology:
    """What an AIM prefix says about the data that follows it."""

    prefix: str
    """The identifier as received, e.g. `]d2`."""
    name: str
    """Name recorded in `attrs["symbology"]`, e.g. `gs1_datamatrix`, `qr`."""
    gs1: bool = False
    """The data is a GS1 element string (and must parse as one)."""
    gtin_lengths: tuple[int, ...] = ()
    """The data is a bare GTIN when it has one of these lengths (EAN/UPC, ITF-14)."""
    gtin_only: bool = False
    """The data must be a bare GTIN: anything else is invalid GS1."""


def split_aim(text: str) -> tuple[Symbology | None, str]:
    """Split a scan into its AIM symbology identifier (None when it has none) and the data."""
    if len(text) < 3 or text[0] != "]":
        return None, text
    letter, modifier = text[1], text[2]
    name = _SYMBOLOGIES.get(letter)
    if name is None or not (modifier.isascii() and modifier.isalnum()):
        return None, text
    prefix, data, key = text[:3], text[3:], letter + modifier
    if key in _GS1_ELEMENT_STRING:
        return Symbology(prefix, _GS1_ELEMENT_STRING[key], gs1=True), data
    if key in _BARE_GTIN:
        bare_name, lengths, only = _BARE_GTIN[key]
        return Symbology(prefix, bare_name, gtin_lengths=lengths, gtin_only=only), data
    return Symbology(prefix, name), data
