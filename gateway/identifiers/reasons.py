"""Why a scan is not an identity: the rejection error and its machine-readable reasons.

Every rejection carries one of REASONS (what a dashboard counts, what the `rejected` event's
`reason` holds) and a sentence for people that quotes the offending part of the code.

- `empty`: nothing but whitespace, GS separators or an AIM prefix was received.
- `bad_check_digit`: a GTIN (AI 01, 02, 03, EAN/UPC, ITF-14), SSCC (AI 00) or GLN (AI 41x)
  has a wrong check digit. Usually a misprint or a typo, never a different unit.
- `invalid_gs1`: the scanner said GS1 (AIM `]d2`, `]C1`, `]Q3`, `]e0`, `]J1`; or EAN/UPC for a
  bare GTIN) but the data is not a valid element string: unknown AI, wrong length, a character
  outside the AI's character set, a variable-length field without its GS separator, the same AI
  twice with different values.
- `invalid_digital_link`: an `http(s)://` URI that is not a valid GS1 Digital Link (no primary
  key in the path, odd path segments, bad values, characters not allowed in a URI).
- `invalid_date`: a date field (AI 11 to 17, 7003, 7006, 7007, 7011, 4324 to 4326, 8008) is not a
  calendar date (month 13, 30 February). Day 00 is allowed only where GS1 allows it (AI 11-17).
- `missing_serial`: a GTIN without serial (AI 21) at a station that accepts serialized units
  (`sgtin`) but not that code's own scheme (`gtin` or `lgtin`). Typically a printer that lost
  its serial field; kept apart from `scheme_not_accepted` so it can be counted.
- `scheme_not_accepted`: a valid code whose scheme the station does not accept, including GS1
  codes keyed on something other than a GTIN or SSCC (a GLN, a GRAI, ...) and non-GS1 codes
  announced by their AIM prefix when `plain` is not accepted.
- `pattern_mismatch`: the station accepts `plain` and the code is not GS1, but it does not match
  `plain_pattern` in full. Without a configured pattern the implicit pattern is "printable text
  without leading or trailing whitespace", so this then means control characters or padding.
- `unrecognized`: no AIM prefix, not a URI, not GS1, and `plain` is not accepted; or the text is
  longer than MAX_CODE_CHARS.
"""

from __future__ import annotations

from typing import Final

REASONS: Final = (
    "empty",
    "bad_check_digit",
    "invalid_gs1",
    "invalid_digital_link",
    "invalid_date",
    "missing_serial",
    "scheme_not_accepted",
    "pattern_mismatch",
    "unrecognized",
)

# Identity schemes (gateway.config.base's CodeScheme and TagScheme literals mirror them).
SCHEMES: Final = ("sgtin", "sscc", "lgtin", "gtin", "plain", "sgln", "grai", "giai", "epc")


class IdentifierRejected(ValueError):
    """A scan that is not an acceptable identity. `reason` is one of REASONS; `message` says
    what was wrong for people, quoting the offending part."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:  # a programming error in this package, not bad input
            raise AssertionError(f"unknown rejection reason {reason!r}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[type[IdentifierRejected], tuple[str, str]]:
        # ValueError pickles its args (the joined text); keep the two fields apart instead.
        return (type(self), (self.reason, self.message))


def excerpt(text: str, limit: int = 60) -> str:
    """`text` quoted for a message, cut to `limit` characters: codes can be kilobytes of junk."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text)} characters)"
