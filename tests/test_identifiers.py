"""Table tests of identifier parsing: real-world codes in, canonical identities or reasons out.

Test data are the GS1 General Specifications examples (GTIN 09506000134352, SSCC
106141411234567897, GLN 0614141000012, GTIN-12 614141123452) and the classic EAN-13
5901234123457. GS is the FNC1 separator as scanners send it.
"""

from __future__ import annotations

import pickle
import re

import pytest

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
GS1_ONLY = frozenset({"sgtin", "sscc", "lgtin", "gtin"})
SGTIN = "(01)09506000134352(21)ABC123"
SSCC = "(00)106141411234567897"
SERIAL = re.compile(r"SN-\d{6}")

G = "09506000134352"  # GS1 General Specifications example GTIN
ES, DL, LG = "element_string", "digital_link", "linear_gtin"
DM = "gs1_datamatrix"


def unit(serial: str = "ABC123", **attrs: str) -> dict[str, str]:
    """Attributes of the example GTIN with a serial, plus `attrs`."""
    return {"gtin": G, "serial": serial, **attrs}


Accepted = tuple[str, frozenset[str], re.Pattern[str] | None, str, str, dict[str, str]]
Rejected = tuple[str, frozenset[str], re.Pattern[str] | None, str, str]

# Tables are laid out by hand, one case a row or two.
# fmt: off
# text, schemes, plain_pattern, scheme, key, attrs (exactly)
ACCEPTED: dict[str, Accepted] = {
    "gs1_datamatrix_full": (
        f"]d2010950600013435217251231{GS}10LOT1{GS}21ABC123", ALL, None, "sgtin", SGTIN,
        unit(lot="LOT1", expiry="2025-12-31", symbology=DM, carrier=ES)),
    "leading_fnc1_after_aim": (
        f"]d2{GS}010950600013435221ABC123", ALL, None, "sgtin", SGTIN,
        unit(symbology=DM, carrier=ES)),
    "leading_fnc1_no_aim_trailing_gs": (
        f"{GS}010950600013435221ABC123{GS}", frozenset({"sgtin"}), None, "sgtin", SGTIN,
        unit(carrier=ES)),
    "gs1_qr_serial_first": (
        f"]Q321ABC123{GS}0109506000134352", ALL, None, "sgtin", SGTIN,
        unit(symbology="gs1_qr", carrier=ES)),
    "gs1_128_sscc": (
        "]C100106141411234567897", ALL, None, "sscc", SSCC,
        {"sscc": "106141411234567897", "symbology": "gs1_128", "carrier": ES}),
    "gs1_databar_gtin_expiry_day_00": (
        "]e0010950600013435217240200", ALL, None, "gtin", f"(01){G}",
        {"gtin": G, "expiry": "2024-02-29", "symbology": "gs1_databar", "carrier": ES}),
    "gs1_dotcode_lgtin": (
        "]J1010950600013435210LOT1", ALL, None, "lgtin", f"(01){G}(10)LOT1",
        {"gtin": G, "lot": "LOT1", "symbology": "gs1_dotcode", "carrier": ES}),
    "production_and_best_before": (
        f"]d20109506000134352112501151526063021X{GS}", ALL, None, "sgtin", f"(01){G}(21)X",
        unit("X", production_date="2025-01-15", best_before="2026-06-30", symbology=DM,
             carrier=ES)),
    "date_range_7007": (  # biip's own date check rejects this valid range
        f"]d2010950600013435221X{GS}7007250101251231", ALL, None, "sgtin", f"(01){G}(21)X",
        unit("X", symbology=DM, carrier=ES)),
    "gtin12_in_ai01": (
        "0100614141123452", GS1_ONLY, None, "gtin", "(01)00614141123452",
        {"gtin": "00614141123452", "carrier": ES}),
    "hri_typed": (
        "(01)09506000134352(21)ABC123", frozenset({"sgtin"}), None, "sgtin", SGTIN,
        unit(carrier=ES)),
    "hri_with_spaces_and_plain_accepted": (
        "(01) 09506000134352 (21) ABC123", ALL, None, "sgtin", SGTIN, unit(carrier=ES)),
    "hri_lgtin": (
        "(01)09506000134352(10)LOT1(17)260228", ALL, None, "lgtin", f"(01){G}(10)LOT1",
        {"gtin": G, "lot": "LOT1", "expiry": "2026-02-28", "carrier": ES}),
    "hri_sscc": (
        "(00)106141411234567897", ALL, None, "sscc", SSCC,
        {"sscc": "106141411234567897", "carrier": ES}),
    "digital_link_gs1_query": (
        "https://id.gs1.org/01/09506000134352/21/ABC123?17=251231&10=LOT", ALL, None, "sgtin",
        SGTIN, unit(lot="LOT", expiry="2025-12-31", carrier=DL)),
    "digital_link_custom_domain_gtin13": (
        "https://brand.example.com/products/01/9506000134352/21/ABC123?linkType=all", ALL, None,
        "sgtin", SGTIN, unit(carrier=DL)),
    "digital_link_in_qr_upper_scheme": (
        "]Q1HTTPS://id.gs1.org/01/09506000134352/21/ABC123", ALL, None, "sgtin", SGTIN,
        unit(symbology="qr", carrier=DL)),
    "digital_link_in_datamatrix_lot_in_path": (
        "]d1https://id.gs1.org/01/09506000134352/10/LOT1", ALL, None, "lgtin", f"(01){G}(10)LOT1",
        {"gtin": G, "lot": "LOT1", "symbology": "datamatrix", "carrier": DL}),
    "digital_link_sscc_http": (
        "http://id.gs1.org/00/106141411234567897", ALL, None, "sscc", SSCC,
        {"sscc": "106141411234567897", "carrier": DL}),
    "digital_link_percent_encoded_serial": (
        "https://id.gs1.org/01/09506000134352/21/A%2FB%25", ALL, None, "sgtin",
        f"(01){G}(21)A/B%", unit("A/B%", carrier=DL)),
    "ean13": (
        "]E05901234123457", ALL, None, "gtin", "(01)05901234123457",
        {"gtin": "05901234123457", "symbology": "ean_upc", "carrier": LG}),
    "upc_a_twelve_digits": (
        "]E0614141123452", ALL, None, "gtin", "(01)00614141123452",
        {"gtin": "00614141123452", "symbology": "ean_upc", "carrier": LG}),
    "ean8": (
        "]E495012346", ALL, None, "gtin", "(01)00000095012346",
        {"gtin": "00000095012346", "symbology": "ean8", "carrier": LG}),
    "itf14": (
        "]I109506000134352", ALL, None, "gtin", f"(01){G}",
        {"gtin": G, "symbology": "itf14", "carrier": LG}),
    "itf_not_a_gtin_is_plain": (
        "]I1123456", ALL, None, "plain", "123456", {"symbology": "itf14", "carrier": "plain"}),
    "plain_in_datamatrix_with_pattern": (
        "]d1SN-000123", ALL, SERIAL, "plain", "SN-000123",
        {"symbology": "datamatrix", "carrier": "plain"}),
    "element_string_in_plain_datamatrix": (  # ]d1: no FNC1, so not GS1 whatever it looks like
        "]d1010950600013435221ABC", ALL, None, "plain", "010950600013435221ABC",
        {"symbology": "datamatrix", "carrier": "plain"}),
    "plain_code128_no_pattern": (
        "]C0ABC-123", ALL, None, "plain", "ABC-123", {"symbology": "code128", "carrier": "plain"}),
    "plain_no_aim_with_pattern": (
        "SN-000123", frozenset({"plain"}), SERIAL, "plain", "SN-000123", {"carrier": "plain"}),
    "plain_no_aim_no_pattern": (
        "Motor 4711/B", ALL, None, "plain", "Motor 4711/B", {"carrier": "plain"}),
    "plain_no_pattern_gs1_without_key": (  # "10ABC" parses as a lot, but keys nothing
        "10ABC", ALL, None, "plain", "10ABC", {"carrier": "plain"}),
    "pattern_checked_before_gs1": (
        "0109506000134352", ALL, re.compile(r"\d{16}"), "plain", "0109506000134352",
        {"carrier": "plain"}),
    "company_uri_matching_pattern": (
        "https://acme.example/u/123", ALL, re.compile(r"https://acme\.example/u/\d+"), "plain",
        "https://acme.example/u/123", {"carrier": "plain"}),
}

# text, schemes, plain_pattern, reason, message (a substring of it)
REJECTED: dict[str, Rejected] = {
    "empty": ("", ALL, None, "empty", "no data in ''"),
    "empty_aim_only": ("]d2", ALL, None, "empty", "no data after the AIM prefix ']d2'"),
    "empty_lone_fnc1": (GS, ALL, None, "empty", "no data"),
    "empty_blank": ("  ", ALL, None, "empty", "no data"),
    "bad_gtin_datamatrix": (
        "]d2010950600013435321ABC", ALL, None, "bad_check_digit",
        "GTIN check digit of '09506000134353' is 3, expected 2"),
    "bad_gtin_no_aim_plain_accepted": (
        "0109506000134353", ALL, None, "bad_check_digit",
        "GTIN check digit of '09506000134353' is 3, expected 2"),
    "bad_gtin_hri": (
        "(01)09506000134353(21)ABC", ALL, None, "bad_check_digit",
        "GTIN check digit of '09506000134353' is 3, expected 2"),
    "bad_gtin_digital_link": (
        "https://id.gs1.org/01/09506000134353/21/ABC", ALL, None, "bad_check_digit",
        "GTIN check digit of '09506000134353' is 3, expected 2"),
    "bad_sscc": (
        "]C100106141411234567890", ALL, None, "bad_check_digit",
        "SSCC check digit of '106141411234567890' is 0, expected 7"),
    "bad_gln": (
        "]d2" "0109506000134352" "4140614141000013" "21ABC", ALL, None, "bad_check_digit",
        "GLN check digit of '0614141000013' is 3, expected 2"),
    "bad_content_gtin": (
        "]C1" "00106141411234567897" "0209506000134353" "375", ALL, None, "bad_check_digit",
        "GTIN check digit of '09506000134353' is 3, expected 2"),
    "bad_ean13": (
        "]E05901234123458", ALL, None, "bad_check_digit",
        "GTIN check digit of '05901234123458' is 8, expected 7"),
    "gs1_aim_not_gs1": (
        "]d2ABC123", ALL, None, "invalid_gs1", "no GS1 application identifier at 'ABC123'"),
    "gs1_aim_digital_link": (
        "]Q3https://id.gs1.org/01/09506000134352", ALL, None, "invalid_gs1",
        "no GS1 application identifier at 'https://id.gs1.org/01/09506000134352'"),
    "short_gtin": (
        "]d2010950600013435", ALL, None, "invalid_gs1",
        "(01) value '0950600013435' does not have the format N2+N14 (GTIN)"),
    "missing_separator": (
        "]d2010950600013435210LOT123456789012321ABCDEF", ALL, None, "invalid_gs1",
        "no GS1 application identifier at 'CDEF' (GS missing after the variable-length (10), "
        "or its value too long?)"),
    "serial_too_long": (
        "]d2010950600013435221" + "A" * 21, ALL, None, "invalid_gs1",
        "no GS1 application identifier at 'A' (GS missing"),
    "bad_character": (
        "]d2010950600013435221AB C", ALL, None, "invalid_gs1",
        "character ' ' at position 20 of '010950600013435221AB C' is not allowed"),
    "repeated_ai": (
        f"]d2010950600013435221X{GS}10A{GS}10B", ALL, None, "invalid_gs1",
        "(10) appears twice, as 'A' and 'B'"),
    "hri_empty_value": (
        "(01)09506000134352(21)", ALL, None, "invalid_gs1",
        "(21) value '' does not have the format N2+X..20 (SERIAL)"),
    "hri_unknown_ai": (
        "(01)09506000134352(23)X", ALL, None, "invalid_gs1",
        "(23) is not a GS1 application identifier"),
    "ean13_not_digits": (
        "]E0ABC", ALL, None, "invalid_gs1", "'ABC' is not a GTIN of 12 or 13 digits"),
    "unicode_digits": (  # Arabic-Indic digits: biip's \d patterns would take them
        "]d201\u0660\u0669\u0665\u0660\u0666\u0660\u0660\u0660\u0661\u0663\u0664\u0663\u0665"
        "\u0662", ALL, None, "invalid_gs1", "character '\u0660' at position 2"),
    "link_without_key": (
        "https://id.gs1.org/products/shoe", ALL, None, "invalid_digital_link",
        "'https://id.gs1.org/products/shoe' is not a GS1 Digital Link: Expected a primary "
        "identifier in the path"),
    "link_odd_segments": (
        "https://id.gs1.org/01/09506000134352/21", ALL, None, "invalid_digital_link",
        "Expected even number of path segments, got '/01/09506000134352/21'"),
    "link_bad_gtin_format": (
        "https://id.gs1.org/01/0950600013435X", ALL, None, "invalid_digital_link",
        "Failed to match '010950600013435X' with GS1 AI (01)."),
    "link_repeated_ai": (
        "https://id.gs1.org/01/09506000134352/21/X?21=Y", ALL, None, "invalid_digital_link",
        "(21) appears twice, as 'X' and 'Y'"),
    "link_bad_host": (
        "http://[id.gs1.org/01/09506000134352", ALL, None, "invalid_digital_link",
        "Invalid IPv6 URL"),
    "link_space": (
        "https://id.gs1.org/01/09506000134352/21/A B", ALL, None, "invalid_digital_link",
        "character ' ' at position 41"),
    "link_non_ascii_value": (
        "https://id.gs1.org/01/09506000134352/21/%D9%A0", ALL, None, "invalid_digital_link",
        "Failed to match '21\u0660' with GS1 AI (21)"),
    "link_unicode_digit_gtin": (  # percent-decoded Arabic-Indic digits, valid check digit
        "https://id.gs1.org/01/%D9%A0%D9%A9%D9%A5%D9%A0%D9%A6%D9%A0%D9%A0%D9%A0%D9%A1%D9%A3"
        "%D9%A4%D9%A3%D9%A5%D9%A2", ALL, None, "invalid_digital_link",
        "(01) value '\u0660\u0669\u0665"),
    "not_a_link_in_qr": (
        "]Q1https://example.com/menu", ALL, None, "invalid_digital_link",
        "'https://example.com/menu' is not a GS1 Digital Link"),
    "date_month_13": (
        "]d20109506000134352172513011", ALL, None, "invalid_date",
        "(17) date '251301' is not a calendar date (YYMMDD)"),
    "date_30_february": (
        f"]d2010950600013435217250230{GS}21X", ALL, None, "invalid_date",
        "(17) date '250230' is not a calendar date (YYMMDD)"),
    "date_in_link_query": (
        "https://id.gs1.org/01/09506000134352/21/X?17=250230", ALL, None, "invalid_date",
        "(17) date '250230' is not a calendar date (YYMMDD)"),
    "date_hri_production": (
        "(01)09506000134352(11)250132(21)X", ALL, None, "invalid_date",
        "(11) date '250132' is not a calendar date (YYMMDD)"),
    "date_7003_no_day_00": (
        f"]d2010950600013435221X{GS}70032501001200", ALL, None, "invalid_date",
        "(7003) date '250100' is not a calendar date (YYMMDD)"),
    "date_range_second_date": (
        f"]d2010950600013435221X{GS}7007250101251232", ALL, None, "invalid_date",
        "(7007) date '251232' is not a calendar date (YYMMDD)"),
    "gtin_at_serialized_station": (
        "]d20109506000134352", frozenset({"sgtin", "sscc"}), None, "missing_serial",
        "'(01)09506000134352' has no serial (21); this station accepts sgtin, sscc"),
    "lgtin_at_serialized_station": (
        "]d2010950600013435210LOT1", frozenset({"sgtin"}), None, "missing_serial",
        "'(01)09506000134352(10)LOT1' has no serial (21)"),
    "sscc_at_unit_station": (
        "]C100106141411234567897", frozenset({"sgtin"}), None, "scheme_not_accepted",
        "'(00)106141411234567897' is a code of scheme 'sscc'; this station accepts sgtin"),
    "sgtin_at_pallet_station": (
        "https://id.gs1.org/01/09506000134352/21/ABC123", frozenset({"sscc"}), None,
        "scheme_not_accepted", "is a code of scheme 'sgtin'; this station accepts sscc"),
    "ean13_at_pallet_station": (
        "]E05901234123457", frozenset({"sscc"}), None, "scheme_not_accepted",
        "'(01)05901234123457' is a code of scheme 'gtin'"),
    "gln_link": (
        "https://id.gs1.org/414/0614141000012", ALL, None, "scheme_not_accepted",
        "'(414)0614141000012' has no GTIN (01) or SSCC (00) to identify a unit by"),
    "gs1_without_key": (
        "]d210LOT1", ALL, None, "scheme_not_accepted", "'(10)LOT1' has no GTIN (01) or SSCC"),
    "plain_not_accepted": (
        "]d1SN-000123", GS1_ONLY, None, "scheme_not_accepted",
        "'SN-000123' is a non-GS1 code (datamatrix); this station accepts sgtin, sscc, lgtin, "
        "gtin"),
    "pattern_mismatch_aim": (
        "]d1XYZ", ALL, SERIAL, "pattern_mismatch",
        "'XYZ' does not match the plain pattern 'SN-\\\\d{6}'"),
    "pattern_mismatch_no_aim": (
        "XYZ", ALL, SERIAL, "pattern_mismatch",
        "'XYZ' does not match the plain pattern 'SN-\\\\d{6}'; not GS1 either: no GS1 "
        "application identifier at 'XYZ'"),
    "pattern_mismatch_gs1_without_key": (
        "10ABC", ALL, SERIAL, "pattern_mismatch", "not GS1 either: '(10)ABC' has no GTIN"),
    "no_pattern_control_character": (
        "]d1AB\x07C", ALL, None, "pattern_mismatch",
        "'AB\\x07C' has the non-printable character '\\x07' at position 2"),
    "no_pattern_padding": (
        " ABC", ALL, None, "pattern_mismatch", "' ABC' has leading or trailing whitespace"),
    "unrecognized": (
        "XYZ", GS1_ONLY, None, "unrecognized",
        "'XYZ' is not a GS1 code (no GS1 application identifier at 'XYZ'), and this station "
        "accepts sgtin, sscc, lgtin, gtin"),
    "unrecognized_partial_gs1": (
        "0123", GS1_ONLY, None, "unrecognized", "(01) value '23' does not have the format"),
    "unrecognized_too_long": (
        "A" * 10_000, ALL, None, "unrecognized", "(10000 characters) is longer than 8192"),
}
# fmt: on


@pytest.mark.parametrize("case", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted(case: Accepted) -> None:
    text, schemes, pattern, scheme, key, attrs = case
    identity = parse_code(text, source="scanner-1", schemes=schemes, plain_pattern=pattern)
    assert (identity.scheme, identity.value) == (scheme, key)
    assert dict(identity.attrs) == attrs
    assert identity.raw == text
    assert identity.source == "scanner-1"


@pytest.mark.parametrize("case", REJECTED.values(), ids=REJECTED.keys())
def test_rejected(case: Rejected) -> None:
    text, schemes, pattern, reason, message = case
    with pytest.raises(IdentifierRejected) as caught:
        parse_code(text, source="scanner-1", schemes=schemes, plain_pattern=pattern)
    assert caught.value.reason == reason
    assert message in caught.value.message


def test_every_reason_is_tested() -> None:
    assert {case[3] for case in REJECTED.values()} == set(REASONS)


@pytest.mark.parametrize(
    "text",
    [
        f"]d2010950600013435221ABC123{GS}17251231",
        f"]d2{GS}21ABC123{GS}0109506000134352",
        "]C1010950600013435221ABC123",
        "(01)09506000134352(21)ABC123",
        "https://id.gs1.org/01/09506000134352/21/ABC123",
        "https://id.gs1.org/01/9506000134352/21/ABC123?17=251231",
        "]Q1https://qr.example.com/p/01/09506000134352/21/ABC123?10=LOT",
        "]d1https://id.gs1.org/01/09506000134352/10/LOT/21/ABC123",
    ],
)
def test_one_unit_one_key_whatever_the_carrier(text: str) -> None:
    identity = parse_code(text, source="s", schemes=ALL)
    assert identity.value == SGTIN == gs1_key_sgtin("09506000134352", "ABC123")
    assert identity.attrs["gtin"] == "09506000134352"


def test_keys() -> None:
    assert gs1_key_sgtin("09506000134352", "ABC123") == SGTIN
    assert gs1_key_sgtin("00614141123452", "6789") == "(01)00614141123452(21)6789"
    assert gs1_key_sscc("106141411234567897") == SSCC


@pytest.mark.parametrize(
    ("gtin", "serial", "reason"),
    [
        ("09506000134353", "1", "bad_check_digit"),
        ("9506000134352", "1", "invalid_gs1"),
        ("0950600013435\u0662", "1", "invalid_gs1"),
        ("09506000134352", "", "invalid_gs1"),
        ("09506000134352", "A" * 21, "invalid_gs1"),
        ("09506000134352", "A B", "invalid_gs1"),
        ("09506000134352", "A#", "invalid_gs1"),
    ],
)
def test_sgtin_key_checks_its_parts(gtin: str, serial: str, reason: str) -> None:
    with pytest.raises(IdentifierRejected) as caught:
        gs1_key_sgtin(gtin, serial)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("sscc", "reason"),
    [("106141411234567890", "bad_check_digit"), ("10614141123456789", "invalid_gs1")],
)
def test_sscc_key_checks_its_value(sscc: str, reason: str) -> None:
    with pytest.raises(IdentifierRejected) as caught:
        gs1_key_sscc(sscc)
    assert caught.value.reason == reason


def test_rejection_is_a_value_error_that_survives_pickling() -> None:
    with pytest.raises(ValueError, match="bad_check_digit: GTIN check digit") as caught:
        parse_code("0109506000134353", source="s", schemes=ALL)
    assert isinstance(caught.value, IdentifierRejected)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (copy.reason, copy.message) == (caught.value.reason, caught.value.message)


def test_identity_renders_into_an_event() -> None:
    identity = parse_code(
        "https://id.gs1.org/01/09506000134352/21/ABC123?17=251231", source="qr-1", schemes=ALL
    )
    assert identity.to_json() == {
        "scheme": "sgtin",
        "value": SGTIN,
        "raw": "https://id.gs1.org/01/09506000134352/21/ABC123?17=251231",
        "source": "qr-1",
        "gtin": "09506000134352",
        "serial": "ABC123",
        "expiry": "2025-12-31",
        "carrier": "digital_link",
    }
