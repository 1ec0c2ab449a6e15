"""Fuzzing identity parsing: scan texts (GS1 element strings, HRI, Digital Link URIs, bare GTINs,
plain codes, each valid or with a mutation, behind any AIM prefix) and RFID EPCs (valid
encodings of every scheme with flipped bits, any hex, any bytes, any text).

Structured inputs are built valid first and then mutated once or twice, so that most of them
get past the first checks and reach the deep ones (check digits, dates, repeated AIs, the
Digital Link path grammar, partition tables).
"""

from __future__ import annotations

import re
from urllib.parse import quote

from biip.gs1_application_identifiers import _GS1_APPLICATION_IDENTIFIERS as BIIP_AIS
from hypothesis import given, reject
from hypothesis import strategies as st

from gateway.events import Identity
from gateway.identifiers import (
    REASONS,
    SCHEMES,
    IdentifierRejected,
    decode_epc,
    epc_identity,
    parse_code,
)
from gateway.identifiers.epc import EPC_ERRORS
from simulators import epc as enc
from simulators.codes import gs1_check_digit
from tests.fuzz.harness import fuzz, mutated_text, one_input

GS = "\x1d"
ALL = frozenset(SCHEMES)
CSET82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
SERIAL = f"[{re.escape(CSET82)}]{{1,20}}"
# What a mutation may put into a code: the characters its grammar cares about, some it must
# refuse (whitespace, controls, a non-ASCII digit, Latin-1 letters).
EDITS = "0123456789AZaz" + GS + "()/?&=%#.:;- \t\x00\x04\x1e]éß٣\x85"


def digits(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789", min_size=n, max_size=n)


def checked(n: int) -> st.SearchStrategy[str]:
    """`n` digits, the last a correct GS1 check digit."""
    return digits(n - 1).map(lambda p: p + gs1_check_digit(p))


gtins = checked(14)
ssccs = checked(18)
glns = checked(13)
serials = st.text(alphabet=CSET82, min_size=1, max_size=20)
dates = st.builds(
    lambda y, m, d: f"{y:02d}{m:02d}{d:02d}",
    st.integers(0, 99),
    st.integers(0, 14),  # 0, 13 and 14 are no months
    st.integers(0, 32),
)
variable_ais = [ai for ai, spec in BIIP_AIS.items() if ".." in spec.format]


valid_dates = st.builds(
    lambda y, m, d: f"{y:02d}{m:02d}{d:02d}",
    st.integers(0, 99),
    st.integers(1, 12),
    st.integers(1, 28),
)


@st.composite
def elements(draw: st.DrawFn) -> list[tuple[str, str]]:
    """(AI, value) pairs: a key (SGTIN, LGTIN, GTIN, SSCC, GLN, GRAI) and a few more: dates,
    measures, any AI biip knows; in any order."""
    keys = {
        "sgtin": [("01", draw(gtins)), ("21", draw(serials))],
        "lgtin": [("01", draw(gtins)), ("10", draw(serials))],
        "gtin": [("01", draw(gtins))],
        "sscc": [("00", draw(ssccs))],
        "gln": [("414", draw(glns)), ("254", draw(serials))],
        "grai": [("8003", "0" + draw(glns) + draw(st.text(alphabet=CSET82, max_size=16)))],
    }
    chosen = list(keys[draw(st.sampled_from(sorted(keys)))])
    extras = [
        ("17", draw(valid_dates | dates)),
        ("11", draw(valid_dates)),
        ("15", draw(dates)),
        ("10", draw(serials)),
        ("7007", draw(valid_dates) + draw(st.sampled_from(["", "251231", "251340"]))),
        ("3103", draw(digits(6))),
        ("02", draw(gtins)),
        ("37", draw(digits(3))),
        ("21", draw(serials)),
    ]
    chosen += draw(st.lists(st.sampled_from(extras), max_size=2, unique=True))
    if draw(st.integers(0, 5)) == 0:
        ai = draw(st.sampled_from(sorted(BIIP_AIS)))
        chosen.append((ai, draw(st.text(alphabet=CSET82 + "0123456789" * 4, max_size=30))))
    return draw(st.permutations(chosen)) if draw(st.booleans()) else chosen


@st.composite
def element_string(draw: st.DrawFn) -> str:
    """Raw form: GS after variable-length fields (sometimes missing, sometimes doubled)."""
    out = draw(st.sampled_from(["", GS]))
    for ai, value in draw(elements()):
        out += ai + value
        if ai in variable_ais or draw(st.integers(0, 5)) == 0:
            out += draw(st.sampled_from([GS, GS, GS, "", GS + GS]))
    return out


@st.composite
def hri(draw: st.DrawFn) -> str:
    sep = draw(st.sampled_from(["", "", " "]))
    return sep.join(f"({ai}){value}" for ai, value in draw(elements()))


@st.composite
def digital_link(draw: st.DrawFn) -> str:
    host = draw(st.sampled_from(["id.gs1.org", "example.com/dl", "brand.example:8443/a/b", "x"]))
    scheme = draw(st.sampled_from(["https", "http", "HTTPS", "ftp"]))
    key = draw(
        st.sampled_from(
            [
                f"01/{draw(gtins)}",
                f"01/{draw(gtins)[1:]}",  # GTIN-13 in the path
                f"00/{draw(ssccs)}",
                f"414/{draw(glns)}/254/{quote(draw(serials), safe='')}",
                f"8003/0{draw(glns)}",
                "01",
                "",
            ]
        )
    )
    path = key
    if key.startswith("01/"):
        for ai in draw(st.lists(st.sampled_from(["22", "10", "21"]), max_size=3, unique=True)):
            path += f"/{ai}/{quote(draw(serials), safe=draw(st.sampled_from(['', '/'])))}"
    query = "&".join(
        f"{ai}={quote(v, safe='')}"
        for ai, v in draw(
            st.lists(
                st.tuples(st.sampled_from(["17", "10", "15", "linkType", "3103", "99"]), serials)
                | st.tuples(st.just("17"), dates),
                max_size=3,
            )
        )
    )
    return f"{scheme}://{host}/{path}" + (f"?{query}" if query else "")


prefixes = st.sampled_from(
    ["", "", "]d2", "]C1", "]Q3", "]e0", "]J1", "]E0", "]E4", "]I1", "]Q1", "]d1", "]C0", "]", "]d"]
)
bodies = st.one_of(
    element_string(),
    hri(),
    digital_link(),
    checked(13),
    checked(8),
    checked(14),
    digits(12),
    st.sampled_from(["SN-123456", "RW12345678", "ABC 123", " lead", "trail ", "x" * 9000]),
    st.text(alphabet=CSET82, max_size=30),
)


@st.composite
def scans(draw: st.DrawFn) -> str:
    text: str = draw(prefixes) + draw(bodies)
    if draw(st.booleans()):
        text = draw(mutated_text(text, EDITS))
    return text


schemes = st.frozensets(st.sampled_from(SCHEMES)) | st.just(ALL)
patterns = st.sampled_from(
    [None, re.compile(r"SN-\d{6}"), re.compile(r"RW[0-9]{8}"), re.compile(r".*"), re.compile("")]
)


def _check_identity(identity: Identity, text: str, accepted: frozenset[str]) -> None:
    assert isinstance(identity, Identity)
    assert identity.scheme in accepted and identity.raw == text and identity.source == "cam-1"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in identity.attrs.items())
    key = identity.value
    forms = {
        "sgtin": rf"\(01\)(\d{{14}})\(21\){SERIAL}",
        "lgtin": rf"\(01\)(\d{{14}})\(10\){SERIAL}",
        "gtin": r"\(01\)(\d{14})",
        "sscc": r"\(00\)(\d{18})",
    }
    if identity.scheme in forms:
        match = re.fullmatch(forms[identity.scheme], key)
        assert match, key
        number = match[1]
        assert number[-1] == gs1_check_digit(number[:-1]), key
    else:
        assert identity.scheme == "plain" and key


@fuzz(weight=4)
@given(
    text=st.one_of(scans(), scans(), scans(), st.text(max_size=200)),
    accepted=schemes,
    pattern=patterns,
)
def test_fuzz_parse_code(
    text: str, accepted: frozenset[str], pattern: re.Pattern[str] | None
) -> None:
    """Any scan text: an Identity of an accepted scheme with a canonical, check-digit-correct
    key, or IdentifierRejected with one of REASONS and a message. A GS1 identity is the same
    whatever other GS1 schemes the station accepts (`plain` with a matching pattern comes first
    by design)."""
    with one_input("identifiers.parse_code") as outcome:
        try:
            identity = parse_code(text, source="cam-1", schemes=accepted, plain_pattern=pattern)
        except IdentifierRejected as exc:
            assert exc.reason in REASONS and exc.message.strip(), exc
            outcome.reason = f"rejected:{exc.reason}"
            return
        _check_identity(identity, text, accepted)
        if identity.scheme != "plain":
            again = parse_code(text, source="cam-1", schemes=ALL - {"plain"}, plain_pattern=pattern)
            assert (again.scheme, again.value) == (identity.scheme, identity.value)
        outcome.reason = f"ok:{identity.scheme}"


# --- EPCs --------------------------------------------------------------------------------------

prefix_digits = st.integers(6, 12)
EPC_SCHEMES = ["sgtin96", "sgtin198", "sscc96", "sgln96", "sgln195", "grai96", "grai170"]
EPC_SCHEMES += ["giai96", "giai202"]
numeric = st.integers(1, 2**38 - 1).map(str)


@st.composite
def grai14(draw: st.DrawFn) -> str:
    return "0" + draw(checked(13))


@st.composite
def encodings(draw: st.DrawFn) -> tuple[str, str]:
    """(scheme, hex): a valid EPC of a decoded scheme, from the simulator's own encoder."""
    cp = draw(prefix_digits)
    name = draw(st.sampled_from(EPC_SCHEMES))
    try:
        match name:
            case "sgtin96":
                value = enc.encode_sgtin96(draw(gtins), draw(numeric), cp, draw(st.integers(0, 7)))
            case "sgtin198":
                value = enc.encode_sgtin198(draw(gtins), draw(serials), cp)
            case "sscc96":
                value = enc.encode_sscc96(draw(ssccs), cp)
            case "sgln96":
                value = enc.encode_sgln96(draw(glns), draw(numeric | st.just("0")), cp)
            case "sgln195":
                value = enc.encode_sgln195(draw(glns), draw(serials), cp)
            case "grai96":
                value = enc.encode_grai96(draw(grai14()), draw(numeric), cp)
            case "grai170":
                value = enc.encode_grai170(draw(grai14()), draw(serials.map(lambda s: s[:16])), cp)
            case "giai96":
                value = enc.encode_giai96(draw(digits(cp)) + draw(numeric), cp)
            case _:
                value = enc.encode_giai202(draw(digits(cp)) + draw(serials), cp)
    except ValueError:  # what TDS cannot encode (a reference too long for its partition ...)
        reject()
    return name.rstrip("0123456789"), value


@st.composite
def flipped(draw: st.DrawFn) -> str:
    """A valid EPC with a few bits flipped, digits cut off or added, or its case changed."""
    _, value = draw(encodings())
    bits = 4 * len(value)
    number = int(value, 16)
    for _ in range(draw(st.integers(1, 3))):
        number ^= 1 << draw(st.integers(0, bits - 1))
    out = f"{number:0{len(value)}x}"
    cut = draw(st.integers(-4, 4))
    out = out[:cut] if cut < 0 else out + "0" * cut
    return out.upper() if draw(st.booleans()) else out


epc_inputs = st.one_of(
    encodings().map(lambda e: e[1]),
    flipped(),
    st.text(alphabet="0123456789abcdefABCDEF", max_size=64),
    st.binary(max_size=40),
    st.text(max_size=40),
)
RAW_URI = re.compile(r"urn:epc:raw:\d+\.x[0-9A-F]*")


@fuzz(weight=4)
@given(epc=epc_inputs, accepted=schemes)
def test_fuzz_decode_epc(epc: str | bytes, accepted: frozenset[str]) -> None:
    """Any EPC: decode_epc never raises; a raw EPC says why (one of EPC_ERRORS); a GS1 one has
    its pure identity URI and a canonical key. epc_identity raises only IdentifierRejected."""
    with one_input("identifiers.decode_epc") as outcome:
        decoded = decode_epc(epc)
        assert decoded.scheme in ("sgtin", "sscc", "sgln", "grai", "giai", "epc")
        if decoded.scheme == "epc":
            error = decoded.attrs["epc_error"]
            assert error in EPC_ERRORS and decoded.attrs["epc_detail"]
            if error == "not_hex":
                assert decoded.key == decoded.uri == ""
            else:
                assert decoded.key == decoded.uri and RAW_URI.fullmatch(decoded.uri)
            outcome.reason = f"rejected:{error}"
        else:
            assert decoded.uri.startswith(f"urn:epc:id:{decoded.scheme}:")
            if decoded.scheme in ("sgtin", "sscc"):
                number = decoded.attrs["gtin" if decoded.scheme == "sgtin" else "sscc"]
                assert number[-1] == gs1_check_digit(number[:-1])
            outcome.reason = f"ok:{decoded.scheme}"
        if isinstance(epc, str):
            try:
                identity = epc_identity(epc, source="dock-reader", schemes=accepted)
            except IdentifierRejected as exc:
                assert exc.reason in REASONS and exc.message
                outcome.also(f"rejected:epc_identity {exc.reason}")
            else:
                assert identity.scheme in accepted and identity.value == decoded.key
                assert identity.attrs["carrier"] == "rfid"


@fuzz(weight=1)
@given(epc=encodings())
def test_fuzz_epc_round_trip(epc: tuple[str, str]) -> None:
    """Every valid encoding (by the simulator's independent encoder) decodes to its scheme."""
    scheme, value = epc
    with one_input("identifiers.epc_round_trip") as outcome:
        decoded = decode_epc(value)
        assert decoded.scheme == scheme, decoded
        assert decoded.key == epc_identity(value, source="r", schemes=ALL).value
        outcome.reason = f"ok:{scheme}"
