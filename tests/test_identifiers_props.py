"""Property tests of identifier parsing: keys round-trip through every carrier, a single wrong
GTIN digit is always caught, and no input makes the parser raise anything but
IdentifierRejected."""

from __future__ import annotations

import re
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.identifiers import (
    REASONS,
    SCHEMES,
    IdentifierRejected,
    gs1_key_sgtin,
    gs1_key_sscc,
    parse_code,
)

GS = "\x1d"
ALL = frozenset(SCHEMES)
# GS1 AI encodable character set 82: the alphabet of serials and lots.
CSET82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_digit(payload: str) -> str:
    """GS1 mod-10 check digit, written independently of biip (General Specifications 7.9.1)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(payload)))
    return str(-total % 10)


gtins = st.sampled_from([7, 11, 12, 13]).flatmap(  # GTIN-8, -12, -13, -14 payloads
    lambda n: st.text(alphabet="0123456789", min_size=n, max_size=n).map(
        lambda p: (p + check_digit(p)).zfill(14)
    )
)
ssccs = st.text(alphabet="0123456789", min_size=17, max_size=17).map(lambda p: p + check_digit(p))
serials = st.text(alphabet=CSET82, min_size=1, max_size=20)
dates = st.builds(
    lambda y, m, d: f"{y:02d}{m:02d}{d:02d}",
    st.integers(0, 99),
    st.integers(1, 12),
    st.integers(0, 28),
)


@st.composite
def sgtin_scans(draw: st.DrawFn) -> tuple[str, str, str]:
    """(scan text, gtin14, serial): one unit in one of the carriers scanners deliver."""
    carrier = draw(st.sampled_from(["element_string", "hri", "digital_link"]))
    gtin, expiry = draw(gtins), draw(st.none() | dates)
    if carrier == "hri":
        # A value holding "(NN)" cannot be told from the next AI in the human-readable form.
        serial = draw(serials.filter(lambda s: not re.search(r"\([0-9]{2,4}\)", s)))
    else:
        serial = draw(serials)
    if carrier == "element_string":
        fields = [f"01{gtin}", f"21{serial}{GS}"]
        if expiry is not None:
            fields.append(f"17{expiry}")
        body = "".join(draw(st.permutations(fields)))
        prefix = draw(st.sampled_from(["", "]d2", "]C1", "]Q3", "]e0", "]J1"]))
        fnc1 = draw(st.sampled_from(["", GS]))
        return prefix + fnc1 + body, gtin, serial
    if carrier == "hri":
        text = f"(01){gtin}(21){serial}" + (f"(17){expiry}" if expiry else "")
        return text, gtin, serial
    domain = draw(st.sampled_from(["id.gs1.org", "example.com/dl", "brand.example:8443/a/b"]))
    path_gtin = draw(st.sampled_from([gtin, gtin.lstrip("0").zfill(13)]))
    uri = f"https://{domain}/01/{path_gtin}/21/{quote(serial, safe='')}"
    if expiry is not None:
        uri += f"?17={expiry}&linkType=all"
    return draw(st.sampled_from(["", "]Q1", "]d1"])) + uri, gtin, serial


@FAST
@given(sgtin_scans())
def test_sgtin_key_round_trips_through_every_carrier(scan: tuple[str, str, str]) -> None:
    text, gtin, serial = scan
    identity = parse_code(text, source="s", schemes=frozenset({"sgtin"}))
    assert identity.scheme == "sgtin"
    assert identity.value == gs1_key_sgtin(gtin, serial) == f"(01){gtin}(21){serial}"
    assert (identity.attrs["gtin"], identity.attrs["serial"]) == (gtin, serial)
    assert identity.raw == text


@FAST
@given(ssccs, st.sampled_from(["]C1", "]d2", ""]), st.booleans())
def test_sscc_key_round_trips(sscc: str, prefix: str, link: bool) -> None:
    text = f"https://id.gs1.org/00/{sscc}" if link else f"{prefix}00{sscc}"
    identity = parse_code(text, source="s", schemes=ALL)
    assert identity.value == gs1_key_sscc(sscc) == f"(00){sscc}"


@FAST
@given(gtins, serials, st.integers(0, 13), st.integers(1, 9), st.booleans())
def test_any_single_gtin_digit_change_is_a_bad_check_digit(
    gtin: str, serial: str, position: int, delta: int, link: bool
) -> None:
    wrong = gtin[:position] + str((int(gtin[position]) + delta) % 10) + gtin[position + 1 :]
    if link:
        text = f"https://id.gs1.org/01/{wrong}/21/{quote(serial, safe='')}"
    else:
        text = f"]d201{wrong}21{serial}"
    try:
        parse_code(text, source="s", schemes=ALL)
    except IdentifierRejected as exc:
        assert exc.reason == "bad_check_digit", exc.message
        assert repr(wrong) in exc.message
    else:
        raise AssertionError(f"{text!r} was accepted")


schemes_subsets = st.frozensets(st.sampled_from(SCHEMES))
patterns = st.sampled_from([None, re.compile(r"SN-\d{6}"), re.compile(r".*"), re.compile("")])


def assert_parses_or_rejects(
    text: str, schemes: frozenset[str], pattern: re.Pattern[str] | None
) -> None:
    try:
        identity = parse_code(text, source="s", schemes=schemes, plain_pattern=pattern)
    except IdentifierRejected as exc:
        assert exc.reason in REASONS
        assert exc.message
    else:
        assert identity.scheme in schemes
        assert identity.raw == text
        assert all(isinstance(v, str) for v in identity.attrs.values())


@FAST
@given(st.text(max_size=300), schemes_subsets, patterns)
def test_arbitrary_text_is_parsed_or_rejected(
    text: str, schemes: frozenset[str], pattern: re.Pattern[str] | None
) -> None:
    assert_parses_or_rejects(text, schemes, pattern)


FRAGMENTS = [
    "]d2", "]Q1", "]C1", "]E0", "]I1", "]", GS, "\x00", "\r", " ", "01", "00", "21", "10", "17",
    "7007", "414", "09506000134352", "106141411234567897", "(", ")", "(01)", "(21)", "251231",
    "991300", "https://", "HTTP://", "id.gs1.org/", "/01/", "/21/", "?", "=", "&", "%", "%2F",
    "%D9%A0", "[", "\u0660", "\xe9", "A", "é", "0", "9",
]  # fmt: skip


@FAST
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=20).map("".join), schemes_subsets, patterns)
def test_code_like_text_is_parsed_or_rejected(
    text: str, schemes: frozenset[str], pattern: re.Pattern[str] | None
) -> None:
    assert_parses_or_rejects(text, schemes, pattern)


def test_very_long_text_is_rejected_quickly() -> None:
    for text in ("]d2" + "10A" + GS) * 2000, "0" * 100_000, "https://x/" + "01/" * 3000:
        assert_parses_or_rejects(text, ALL, None)


# --- the fast path agrees with the full path -------------------------------------------------

FAST_AIS = ["00", "01", "02", "10", "11", "12", "13", "15", "16", "17", "21", "240", "91"]


@st.composite
def element_strings(draw: st.DrawFn) -> str:
    """Element strings of common AIs, mostly valid, sometimes subtly not: wrong check digits,
    impossible dates, over-long or empty fields, missing or doubled GS, unknown AIs, repeats."""
    parts: list[str] = []
    for _ in range(draw(st.integers(1, 5))):
        ai = draw(st.sampled_from(FAST_AIS))
        if ai in ("01", "02"):
            value = draw(gtins | st.text(alphabet="0123456789", min_size=13, max_size=15))
        elif ai == "00":
            value = draw(ssccs | st.text(alphabet="0123456789", min_size=17, max_size=19))
        elif ai in ("11", "12", "13", "15", "16", "17"):
            value = draw(dates | st.text(alphabet="0123456789", min_size=5, max_size=7))
        else:
            value = draw(serials | st.text(alphabet=CSET82 + "é ", min_size=0, max_size=22))
        sep = draw(st.sampled_from([GS, GS, "", GS + GS]))
        parts.append(ai + value + sep)
    return draw(st.sampled_from(["", GS])) + "".join(parts)


@given(element_strings())
@settings(max_examples=600, deadline=None)
def test_fast_path_agrees_with_the_full_path(data: str) -> None:
    from gateway.identifiers.gs1 import fast_elements, parse_element_string_full

    fast = fast_elements(data)
    try:
        full = dict(parse_element_string_full(data).elements)
    except IdentifierRejected:
        full = None
    if fast is not None:  # the fast path only ever answers for valid codes, and answers alike
        assert full is not None, f"fast path accepted {data!r}, the full path rejects it"
        assert list(fast.items()) == list(full.items())
