"""EPC binary decoding against the GS1 EPC Tag Data Standard (TDS) and an independent encoder.

Worked examples: TDS Appendix E (SGTIN-96 `3074257BF7194E4000001A85`, SGTIN-198) and the
examples of the TDS 2.x coding tables (filter 3, company prefix 0614141), as the GS1 Tag Data
Translation test vectors give them: the standard writes a 195-bit SGLN as 49 hex digits. More
vectors cover the partitions those leave out. `simulators.epc` is the oracle of the round trips:
it shares no code with the decoder.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.identifiers import (
    SCHEMES,
    IdentifierRejected,
    decode_epc,
    epc_identity,
    parse_code,
)
from gateway.identifiers.epc import EPC_ERRORS
from simulators import epc as enc
from simulators.codes import gs1_check_digit

ALL = frozenset(SCHEMES)
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CSET82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
ESCAPED = {'"': "%22", "%": "%25", "&": "%26", "/": "%2F", "<": "%3C", ">": "%3E", "?": "%3F"}
KNOWN_HEADERS = {0x30, 0x31, 0x32, 0x33, 0x34, 0x36, 0x37, 0x38, 0x39}


def esc(text: str) -> str:
    """TDS Table A-1: the characters of set 82 a pure identity URI writes as %-escapes."""
    return "".join(ESCAPED.get(c, c) for c in text)


# fmt: off
# hex (as the standard writes it), pure identity URI, canonical key, attributes (a subset)
STANDARD = {
    "sgtin_96": (
        "3074257BF7194E4000001A85", "urn:epc:id:sgtin:0614141.812345.6789",
        "(01)80614141123458(21)6789",
        {"gtin": "80614141123458", "serial": "6789", "filter": "3", "epc_scheme": "sgtin-96"}),
    "sgtin_198": (
        "3674257BF6B7A659B2C2BF1000000000000000000000000000",
        "urn:epc:id:sgtin:0614141.712345.32a%2Fb", "(01)70614141123451(21)32a/b",
        {"gtin": "70614141123451", "serial": "32a/b", "epc_scheme": "sgtin-198"}),
    "sscc_96": (
        "3174257BF4499602D2000000", "urn:epc:id:sscc:0614141.1234567890",
        "(00)106141412345678908", {"sscc": "106141412345678908", "epc_scheme": "sscc-96"}),
    "sgln_96": (
        "3274257BF46072000000162E", "urn:epc:id:sgln:0614141.12345.5678",
        "(414)0614141123452(254)5678", {"gln": "0614141123452", "extension": "5678"}),
    "sgln_195": (
        "3974257BF46072CD9615F8800000000000000000000000000",
        "urn:epc:id:sgln:0614141.12345.32a%2Fb", "(414)0614141123452(254)32a/b",
        {"gln": "0614141123452", "extension": "32a/b", "epc_scheme": "sgln-195"}),
    "grai_96": (
        "3374257BF40C0E400000162E", "urn:epc:id:grai:0614141.12345.5678",
        "(8003)006141411234525678", {"grai": "006141411234525678", "serial": "5678"}),
    "grai_170": (
        "3774257BF40C0E59B2C2BF100000000000000000000", "urn:epc:id:grai:0614141.12345.32a%2Fb",
        "(8003)0061414112345232a/b", {"serial": "32a/b", "epc_scheme": "grai-170"}),
    "giai_96": (
        "3474257BF40000000000162E", "urn:epc:id:giai:0614141.5678", "(8004)06141415678",
        {"giai": "06141415678", "company_prefix": "0614141"}),
    "giai_202": (
        "3874257BF59B2C2BF1000000000000000000000000000000000",
        "urn:epc:id:giai:0614141.32a%2Fb", "(8004)061414132a/b",
        {"giai": "061414132a/b", "epc_scheme": "giai-202"}),
    # Other partitions, filters and edge values: nedap/retail-epcpy vectors, then one of ours.
    "sscc_96_prefix_6": (
        "31583BF982DFDC1C35000000", "urn:epc:id:sscc:061414.12345678901",
        "(00)106141423456789018", {"filter": "2", "company_prefix": "061414"}),
    "sscc_96_prefix_12": (
        "31003932449F003039000000", "urn:epc:id:sscc:061414123456.12345",
        "(00)106141412345623458", {"filter": "0"}),
    "sgln_96_prefix_12_largest_extension": (
        "320039318D8401FFFFFFFFFF", "urn:epc:id:sgln:061411123456..2199023255551",
        "(414)0614111234560(254)2199023255551", {"gln": "0614111234560"}),
    "sgtin_198_escapes": (
        "362579D5D4ADB6172574B98B34C0000000000000000000000000",
        "urn:epc:id:sgtin:50712192365.88..%25:.13%26", "(01)85071219236581(21).%:.13&",
        {"serial": ".%:.13&", "filter": "1"}),
    "sgtin_96_serial_zero": (
        "30C579D5D4ADB60000000000", "urn:epc:id:sgtin:50712192365.88.0",
        "(01)85071219236581(21)0", {"filter": "6", "serial": "0"}),
    "sgln_96_without_extension": (
        "3274257BF460720000000000", "urn:epc:id:sgln:0614141.12345.0", "(414)0614141123452",
        {"gln": "0614141123452"}),
}
# fmt: on


@pytest.mark.parametrize("name", STANDARD)
def test_standard_examples(name: str) -> None:
    hex_, uri, key, attrs = STANDARD[name]
    for form in (hex_, hex_.lower()):
        decoded = decode_epc(form)
        assert (decoded.uri, decoded.key) == (uri, key)
        assert decoded.scheme == uri.split(":")[3]
        assert attrs.items() <= decoded.attrs.items()
        assert "epc_error" not in decoded.attrs


def test_the_gtin_of_the_standard_example_is_checked_independently() -> None:
    # Indicator 8, company prefix 0614141, item reference 12345, then the GS1 check digit.
    assert gs1_check_digit("8061414112345") == "8"
    assert decode_epc(bytes.fromhex("3074257BF7194E4000001A85")).attrs["gtin"] == "80614141123458"


def test_the_encoder_reproduces_the_standard_examples() -> None:
    """The oracle is right where the standard says what is right (padded to 16-bit words)."""
    cases = {
        "sgtin_96": enc.encode_sgtin96("80614141123458", 6789, 7, 3),
        "sgtin_198": enc.encode_sgtin198("70614141123451", "32a/b", 7, 3),
        "sscc_96": enc.encode_sscc96("106141412345678908", 7, 3),
        "sgln_96": enc.encode_sgln96("0614141123452", 5678, 7, 3),
        "sgln_195": enc.encode_sgln195("0614141123452", "32a/b", 7, 3),
        "grai_96": enc.encode_grai96("00614141123452", 5678, 7, 3),
        "grai_170": enc.encode_grai170("00614141123452", "32a/b", 7, 3),
        "giai_96": enc.encode_giai96("06141415678", 7, 3),
        "giai_202": enc.encode_giai202("061414132a/b", 7, 3),
    }
    for name, encoded in cases.items():
        standard = STANDARD[name][0].lower()
        assert len(encoded) % 4 == 0
        assert encoded.startswith(standard) and not encoded[len(standard) :].strip("0"), name


def test_an_rfid_tag_and_a_datamatrix_of_one_unit_share_their_key() -> None:
    scan = parse_code("]d2018061414112345821" + "6789", source="cam", schemes=ALL)
    tag = epc_identity("3074257bf7194e4000001a85", source="portal", schemes=ALL)
    assert tag.value == scan.value == "(01)80614141123458(21)6789"
    assert (tag.scheme, tag.raw, tag.source) == ("sgtin", "3074257bf7194e4000001a85", "portal")
    assert tag.attrs["carrier"] == "rfid"
    assert tag.attrs["epc_uri"] == "urn:epc:id:sgtin:0614141.812345.6789"
    pallet = parse_code("]C1" + "00106141412345678908", source="cam", schemes=ALL)
    assert epc_identity("3174257bf4499602d2000000", source="p", schemes=ALL).value == pallet.value


# --- round trips through the independent encoder ---------------------------------------------

PREFIX_LENGTHS = range(6, 13)
PREFIX_BITS = {12: 40, 11: 37, 10: 34, 9: 30, 8: 27, 7: 24, 6: 20}


def digits(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789", min_size=n, max_size=n)


def texts(most: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=CSET82, min_size=1, max_size=most)


Expected = tuple[str, str, str, dict[str, str]]  # hex, uri, key, attrs


@st.composite
def encoded(draw: st.DrawFn, name: str, cp: int) -> Expected:
    """An EPC of binary scheme `name` with a company prefix of `cp` digits, and what it holds."""
    prefix, flt = draw(digits(cp)), draw(st.integers(0, 7))
    common = {"company_prefix": prefix, "filter": str(flt), "epc_scheme": name}
    if name in ("sgtin-96", "sgtin-198"):
        ref = draw(digits(13 - cp))
        gtin = ref[0] + prefix + ref[1:]
        gtin += gs1_check_digit(gtin)
        if name == "sgtin-96":
            number = draw(st.integers(0, 2**38 - 1))
            serial, hex_ = str(number), enc.encode_sgtin96(gtin, number, cp, flt)
        else:
            serial = draw(texts(20))
            hex_ = enc.encode_sgtin198(gtin, serial, cp, flt)
        uri = f"urn:epc:id:sgtin:{prefix}.{ref}.{esc(serial)}"
        return hex_, uri, f"(01){gtin}(21){serial}", {**common, "gtin": gtin, "serial": serial}
    if name == "sscc-96":
        ref = draw(digits(17 - cp))
        sscc = ref[0] + prefix + ref[1:]
        sscc += gs1_check_digit(sscc)
        hex_ = enc.encode_sscc96(sscc, cp, flt)
        return hex_, f"urn:epc:id:sscc:{prefix}.{ref}", f"(00){sscc}", {**common, "sscc": sscc}
    if name in ("sgln-96", "sgln-195"):
        ref = draw(digits(12 - cp))
        gln = prefix + ref + gs1_check_digit(prefix + ref)
        if name == "sgln-96":
            ext = str(draw(st.integers(0, 2**41 - 1) | st.just(0)))
            hex_ = enc.encode_sgln96(gln, ext, cp, flt)
        else:
            ext = draw(texts(20) | st.just("0"))
            hex_ = enc.encode_sgln195(gln, ext, cp, flt)
        key, attrs = f"(414){gln}", {**common, "gln": gln}
        if ext != "0":  # TDS: extension 0 is the GLN without extension
            key, attrs = f"{key}(254){ext}", {**attrs, "extension": ext}
        return hex_, f"urn:epc:id:sgln:{prefix}.{ref}.{esc(ext)}", key, attrs
    if name in ("grai-96", "grai-170"):
        ref = draw(digits(12 - cp))
        grai14 = "0" + prefix + ref + gs1_check_digit(prefix + ref)
        if name == "grai-96":
            number = draw(st.integers(0, 2**38 - 1))
            serial, hex_ = str(number), enc.encode_grai96(grai14, number, cp, flt)
        else:
            serial = draw(texts(16))
            hex_ = enc.encode_grai170(grai14, serial, cp, flt)
        uri = f"urn:epc:id:grai:{prefix}.{ref}.{esc(serial)}"
        grai = grai14 + serial
        return hex_, uri, f"(8003){grai}", {**common, "grai": grai, "serial": serial}
    if name == "giai-96":
        asset = str(draw(st.integers(0, 2 ** (82 - PREFIX_BITS[cp]) - 1)))
    else:
        asset = draw(texts(30 - cp))
    giai = prefix + asset
    hex_ = (enc.encode_giai96 if name == "giai-96" else enc.encode_giai202)(giai, cp, flt)
    return hex_, f"urn:epc:id:giai:{prefix}.{esc(asset)}", f"(8004){giai}", {**common, "giai": giai}


BINARY_SCHEMES = [
    "sgtin-96", "sgtin-198", "sscc-96", "sgln-96", "sgln-195", "grai-96", "grai-170", "giai-96",
    "giai-202",
]  # fmt: skip


@pytest.mark.parametrize("cp", PREFIX_LENGTHS)
@pytest.mark.parametrize("name", BINARY_SCHEMES)
def test_round_trip_every_scheme_and_partition(name: str, cp: int) -> None:
    @FAST
    @given(encoded(name, cp))
    def check(case: Expected) -> None:
        hex_, uri, key, attrs = case
        decoded = decode_epc(hex_)
        assert (decoded.scheme, decoded.uri, decoded.key) == (uri.split(":")[3], uri, key)
        assert decoded.attrs == attrs
        assert decode_epc(bytes.fromhex(hex_)) == decoded

    check()


@FAST
@given(st.integers(6, 12).flatmap(lambda cp: encoded("sgtin-96", cp)))
def test_sgtin96_and_datamatrix_keys_agree(case: Expected) -> None:
    hex_, _, _, attrs = case
    scan = parse_code(f"]d201{attrs['gtin']}21{attrs['serial']}", source="c", schemes=ALL)
    assert epc_identity(hex_, source="r", schemes=ALL).value == scan.value


@FAST
@given(st.integers(6, 12).flatmap(lambda cp: encoded("sgtin-198", cp)))
def test_sgtin198_and_datamatrix_keys_agree(case: Expected) -> None:
    hex_, _, _, attrs = case
    scan = parse_code(f"]d201{attrs['gtin']}21{attrs['serial']}", source="c", schemes=ALL)
    assert epc_identity(hex_, source="r", schemes=ALL).value == scan.value


def test_series_are_valid_distinct_tags_of_one_gtin() -> None:
    for seed in (None, 7):
        series = enc.sgtin96_series("80614141123458", 7, 1000, 50, seed=seed)
        decoded = [decode_epc(tag) for tag in series]
        assert {d.attrs["gtin"] for d in decoded} == {"80614141123458"}
        assert len({d.key for d in decoded}) == 50
    assert enc.sgtin96_series("80614141123458", 7, 0, 5, seed=3) == enc.sgtin96_series(
        "80614141123458", 7, 0, 5, seed=3
    )
    first = decode_epc(enc.sgtin96_series("80614141123458", 7, 1000, 1)[0])
    assert first.attrs["serial"] == "1000"


@pytest.mark.parametrize(
    "call",
    [
        lambda: enc.encode_sgtin96("80614141123459", 1, 7),  # check digit
        lambda: enc.encode_sgtin96("80614141123458", "007", 7),  # leading zeros
        lambda: enc.encode_sgtin96("80614141123458", 2**38, 7),  # too large
        lambda: enc.encode_sgtin96("80614141123458", 1, 5),  # company prefix length
        lambda: enc.encode_sgtin198("80614141123458", "a b", 7),  # space is not in set 82
        lambda: enc.encode_sgtin198("80614141123458", "A" * 21, 7),
        lambda: enc.encode_sscc96("106141412345678908", 7, 8),  # filter
        lambda: enc.encode_grai96("10614141123452", 1, 7),  # a GRAI starts with 0
        lambda: enc.encode_giai202("0614141" + "A" * 24, 7),  # more than 30 characters
    ],
)
def test_the_encoder_refuses_what_tds_cannot_encode(call: Callable[[], str]) -> None:
    with pytest.raises(ValueError):
        call()


# --- what is not a valid GS1 EPC is kept raw -------------------------------------------------


def pack(*fields: tuple[int, int]) -> str:
    """Hex of bit fields (value, width), zero-padded to whole bytes: invalid tags by hand."""
    value, bits = 0, 0
    for field, width in fields:
        value, bits = value << width | field, bits + width
    pad = -bits % 8
    return f"{value << pad:0{(bits + pad) // 4}X}"


def sgtin198(serial_bits: int) -> str:
    return pack((0x36, 8), (3, 3), (5, 3), (614141, 24), (812345, 20), (serial_bits, 140))


def chars(text: str, bits: int) -> int:
    value = 0
    for c in text:
        value = value << 7 | ord(c)
    return value << (bits - 7 * len(text))


# fmt: off
INVALID = {
    "partition_7": ("307C257BF7194E4000001A85", "bad_partition", "sgtin-96"),
    "company_prefix_of_13_digits": (
        pack((0x30, 8), (1, 3), (0, 3), (10**12, 40), (1, 4), (1, 38)), "company_prefix_overflow",
        "sgtin-96"),
    "item_reference_of_2_digits_in_partition_0": (
        pack((0x30, 8), (1, 3), (0, 3), (614141, 40), (10, 4), (1, 38)), "reference_overflow",
        "sgtin-96"),
    "sgln_location_reference_in_partition_0": (
        pack((0x32, 8), (0, 3), (0, 3), (614141, 40), (1, 1), (0, 41)), "reference_overflow",
        "sgln-96"),
    "sscc_reserved_bits": ("3174257BF4499602D2000001", "reserved_bits", "sscc-96"),
    "serial_character_outside_set_82": (sgtin198(chars("a#b", 140)), "bad_string", "sgtin-198"),
    "serial_control_character": (sgtin198(chars("a\x01", 140)), "bad_string", "sgtin-198"),
    "serial_data_after_its_end": (
        sgtin198(chars("ab", 140) | 0x41), "bad_string", "sgtin-198"),
    "empty_serial": (sgtin198(0), "bad_string", "sgtin-198"),
    "giai_202_too_many_characters": (
        pack((0x38, 8), (0, 3), (0, 3), (614141, 40), (chars("A" * 19, 148), 148)),
        "bad_string", "giai-202"),
    "giai_202_spare_bit_set": (
        pack((0x38, 8), (0, 3), (0, 3), (614141, 40), (chars("A", 148) | 1, 148)),
        "bad_string", "giai-202"),
    "too_short_for_its_header": ("3074257BF7194E40", "too_short", "sgtin-96"),
    "too_short_for_a_header": ("3", "too_short", None),
    "empty": ("", "too_short", None),
    "unknown_header": ("E2801160600002000000000A", "unknown_header", None),
    "unprogrammed": ("000000000000000000000000", "unsupported_scheme", "unprogrammed"),
    "gid_96": ("350007AB70425D4000000586", "unsupported_scheme", "gid-96"),
}
# fmt: on


@pytest.mark.parametrize("name", INVALID)
def test_invalid_encodings_are_kept_raw(name: str) -> None:
    hex_, error, scheme_name = INVALID[name]
    decoded = decode_epc(hex_)
    raw = f"urn:epc:raw:{4 * len(hex_)}.x{hex_.upper()}"
    assert (decoded.scheme, decoded.uri, decoded.key) == ("epc", raw, raw)
    assert decoded.attrs["epc_error"] == error, decoded.attrs["epc_detail"]
    assert decoded.attrs.get("epc_scheme") == scheme_name
    identity = epc_identity(hex_, source="r", schemes=frozenset({"epc"}))
    assert (identity.scheme, identity.value, identity.raw) == ("epc", raw, hex_)
    assert identity.attrs["carrier"] == "rfid"


def test_bits_after_the_scheme_length_are_ignored() -> None:
    """TDS 14.4 decodes the scheme's own bits; the rest of the EPC bank does not matter."""
    base = decode_epc("3074257BF7194E4000001A85")
    assert decode_epc("3074257BF7194E4000001A85" + "0000") == base
    assert decode_epc("3074257BF7194E4000001A85" + "DEADBEEF") == base


def test_text_that_is_not_hex_has_no_raw_uri() -> None:
    for text in ("zz", "30 74", "0x3074", "\u0663\u0660", "3074257BF7194E4000001A8G"):
        decoded = decode_epc(text)
        assert (decoded.scheme, decoded.key, decoded.attrs["epc_error"]) == ("epc", "", "not_hex")
        with pytest.raises(IdentifierRejected) as caught:
            epc_identity(text, source="r", schemes=ALL)
        assert caught.value.reason == "unrecognized"


def test_a_scheme_the_station_does_not_accept_is_rejected() -> None:
    with pytest.raises(IdentifierRejected) as caught:
        epc_identity("3174257bf4499602d2000000", source="r", schemes=frozenset({"sgtin"}))
    assert caught.value.reason == "scheme_not_accepted"
    assert "urn:epc:id:sscc:0614141.1234567890" in caught.value.message
    assert "accepts sgtin" in caught.value.message
    with pytest.raises(IdentifierRejected) as caught:
        epc_identity("e2801160600002000000000a", source="r", schemes=frozenset({"sgtin"}))
    assert caught.value.reason == "scheme_not_accepted"
    assert "unknown_header" not in caught.value.message  # the detail, for people
    assert "0xE2 is not a GS1 EPC header" in caught.value.message


def test_schemes_list_the_new_ones_after_the_existing() -> None:
    assert SCHEMES == ("sgtin", "sscc", "lgtin", "gtin", "plain", "sgln", "grai", "giai", "epc")


def check_invariants(epc: str | bytes) -> None:
    decoded = decode_epc(epc)
    assert all(isinstance(v, str) for v in decoded.attrs.values())
    if decoded.scheme == "epc":
        assert decoded.attrs["epc_error"] in EPC_ERRORS
        assert decoded.uri == decoded.key
        assert decoded.key.startswith("urn:epc:raw:") or decoded.attrs["epc_error"] == "not_hex"
    else:
        assert decoded.scheme in ("sgtin", "sscc", "sgln", "grai", "giai")
        assert decoded.uri.startswith(f"urn:epc:id:{decoded.scheme}:")
        assert decoded.key.startswith("(")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    check_invariants(data)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60) | st.text(alphabet="0123456789abcdefABCDEF", max_size=64))
def test_arbitrary_text_never_raises(text: str) -> None:
    check_invariants(text)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(KNOWN_HEADERS)), st.binary(min_size=0, max_size=32))
def test_known_headers_with_arbitrary_bits_never_raise(header: int, rest: bytes) -> None:
    check_invariants(bytes([header]) + rest)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 255).filter(lambda h: h not in KNOWN_HEADERS), st.binary(max_size=31))
def test_unknown_headers_are_raw(header: int, rest: bytes) -> None:
    data = bytes([header]) + rest
    decoded = decode_epc(data.hex())
    raw = f"urn:epc:raw:{8 * len(data)}.x{data.hex().upper()}"
    assert (decoded.scheme, decoded.uri, decoded.key) == ("epc", raw, raw)
    assert decoded.attrs["epc_error"] in ("unknown_header", "unsupported_scheme")
