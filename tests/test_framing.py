"""The scanner framer (pure) and the frame handler that turns frames into observations."""

from __future__ import annotations

import itertools
import re

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.models import ScannerFraming
from gateway.devices.framing import (
    CodeFrame,
    Frame,
    FrameHandler,
    Framer,
    GarbageFrame,
    NoReadFrame,
    OverlongFrame,
    hex_excerpt,
)
from gateway.events import NoRead, Scan
from tests.helpers_scanner import CollectingContext

TERMINATORS = ("cr", "lf", "crlf", "any")
TERM_BYTES = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n", "any": b"\r\n"}


def framer(
    terminator: str = "any", max_code_bytes: int = 64, noread: tuple[str, ...] = ("NOREAD",)
) -> Framer:
    return Framer(
        ScannerFraming(
            terminator=terminator,
            max_code_bytes=max_code_bytes,
            noread=list(noread),
        )
    )


def feed_all(f: Framer, chunks: list[bytes]) -> list[Frame]:
    out: list[Frame] = []
    for chunk in chunks:
        out.extend(f.feed(chunk))
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# --- terminators -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("terminator", "stream", "expected"),
    [
        ("cr", b"A1\rB2\r", [b"A1", b"B2"]),
        ("lf", b"A1\nB2\n", [b"A1", b"B2"]),
        ("crlf", b"A1\r\nB2\r\n", [b"A1", b"B2"]),
        ("any", b"A1\rB2\nC3\r\nD4\n\r", [b"A1", b"B2", b"C3", b"D4"]),
        ("any", b"\r\n\r\n\n\rA1\r\n", [b"A1"]),  # empty frames are ignored
        ("cr", b"\r\rA1\r", [b"A1"]),
        ("cr", b"A1", []),  # no terminator yet: nothing
    ],
)
def test_terminators_split_frames(terminator: str, stream: bytes, expected: list[bytes]) -> None:
    frames = framer(terminator).feed(stream)
    assert frames == [CodeFrame(e) for e in expected]


def test_strict_terminator_keeps_the_other_line_end_as_data() -> None:
    # A scanner sending CRLF to a gateway configured for `cr`: loud (garbage), not silent.
    frames = framer("cr").feed(b"A1\r\nB2\r\n")
    assert frames == [CodeFrame(b"A1"), GarbageFrame(b"\nB2")]


def test_crlf_split_across_chunks_and_lone_cr_is_data() -> None:
    f = framer("crlf")
    assert f.feed(b"A1\r") == []
    assert f.feed(b"\nB\r2\r") == [CodeFrame(b"A1")]
    assert f.feed(b"\n") == [GarbageFrame(b"B\r2")]


# --- classification --------------------------------------------------------------------------


def test_gs_rs_eot_and_latin1_pass_through_untouched() -> None:
    code = b"]d201095060001343521AB\x1d10L1\x1e\x04" + "Müller é".encode("latin-1")
    assert framer().feed(code + b"\r") == [CodeFrame(code)]


@pytest.mark.parametrize("noise", [b"\x00\x01", b"AB\x07C", b"\x7f", b"A\x85B", b"\tTAB"])
def test_control_bytes_make_garbage(noise: bytes) -> None:
    assert framer().feed(noise + b"\n") == [GarbageFrame(noise)]


def test_noread_is_an_exact_match() -> None:
    f = framer(noread=("NOREAD", "ERROR"))
    frames = f.feed(b"NOREAD\rERROR\rNOREAD2\r NOREAD\r")
    assert frames == [
        NoReadFrame(b"NOREAD"),
        NoReadFrame(b"ERROR"),
        CodeFrame(b"NOREAD2"),
        CodeFrame(b" NOREAD"),
    ]


def test_printable_utf8_is_a_code_and_control_characters_in_utf8_are_not() -> None:
    euro = "Preis 5€ 没有".encode()  # € is E2 82 AC: a C1 byte inside a character
    assert framer().feed(euro + b"\r") == [CodeFrame(euro)]
    c1_control = "A\u0085B".encode()  # NEL, a control character, even in UTF-8
    assert framer().feed(c1_control + b"\r") == [GarbageFrame(c1_control)]


@pytest.mark.parametrize("text", ["没有读取", "", "NO\rREAD"])
def test_config_refuses_noread_texts_no_frame_can_equal(text: str) -> None:
    with pytest.raises(ValueError, match="NOREAD text"):
        ScannerFraming(noread=["NOREAD", text])


def test_framer_skips_impossible_noread_texts_defensively() -> None:
    # Config refuses them; a framing built without validation must still not misbehave.
    f = Framer(
        ScannerFraming.model_construct(
            terminator="any", max_code_bytes=64, noread=["NOREAD", "没有读取", ""]
        )
    )
    frames = f.feed(b"NOREAD\r" + "没有读取".encode() + b"\r")
    assert frames == [NoReadFrame(b"NOREAD"), CodeFrame("没有读取".encode())]


# --- over-long frames ------------------------------------------------------------------------


def test_frame_of_exactly_max_bytes_is_a_code() -> None:
    assert framer(max_code_bytes=16).feed(b"x" * 16 + b"\r") == [CodeFrame(b"x" * 16)]


def test_overlong_frame_is_reported_once_and_the_next_frame_survives() -> None:
    f = framer(max_code_bytes=16)
    frames = f.feed(b"0123456789abcdefXYZ" * 3 + b"\rNEXT\r")
    assert frames == [OverlongFrame(b"0123456789abcdef", 16), CodeFrame(b"NEXT")]


def test_stream_without_terminator_is_reported_and_memory_stays_bounded() -> None:
    f = framer(max_code_bytes=16)
    frames = feed_all(f, [b"A" * 65536] * 64)  # 4 MiB without a terminator
    assert frames == [OverlongFrame(b"A" * 16, 16)]
    assert f.feed(b"tail\rok\r") == [CodeFrame(b"ok")]


def test_overlong_then_crlf_in_any_mode_gives_no_empty_frame() -> None:
    frames = framer("any", max_code_bytes=16).feed(b"z" * 40 + b"\r\nOK\r\n")
    assert frames == [OverlongFrame(b"z" * 16, 16), CodeFrame(b"OK")]


# --- properties ------------------------------------------------------------------------------

# Streams rich in what matters: terminators, separators, printable bytes, some noise.
stream_bytes = st.lists(
    st.sampled_from(
        [
            b"\r",
            b"\n",
            b"\r\n",
            b"\x1d",
            b"\x00",
            b"A",
            b"7",
            b"]d2",
            b"NOREAD",
            b"\xe9",
            b"0123456789" * 3,
        ]
    ),
    max_size=60,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(
    stream=stream_bytes,
    cuts=st.lists(st.integers(min_value=0), max_size=12),
    terminator=st.sampled_from(TERMINATORS),
    limit=st.integers(min_value=16, max_value=40),
)
def test_chunking_never_changes_the_frames(
    stream: bytes, cuts: list[int], terminator: str, limit: int
) -> None:
    whole = framer(terminator, limit).feed(stream)
    assert feed_all(framer(terminator, limit), split(stream, cuts)) == whole
    bytewise = [stream[i : i + 1] for i in range(len(stream))]
    assert feed_all(framer(terminator, limit), bytewise) == whole


@settings(max_examples=200, deadline=None)
@given(stream=stream_bytes, limit=st.integers(min_value=16, max_value=40))
def test_any_mode_matches_a_reference_split(stream: bytes, limit: int) -> None:
    # Reference: split at every CR or LF, drop empties and the unterminated tail.
    pieces = re.split(rb"[\r\n]", stream)
    terminated, tail = pieces[:-1], pieces[-1]
    expected: list[type] = []
    for piece in terminated:
        if len(piece) > limit:
            expected.append(OverlongFrame)
        elif piece:
            expected.append(type(framer().feed(piece + b"\r")[0]))
    if len(tail) > limit:
        expected.append(OverlongFrame)
    got = framer("any", limit).feed(stream)
    assert [type(fr) for fr in got] == expected
    codes = [fr.data for fr in got if isinstance(fr, CodeFrame | GarbageFrame | NoReadFrame)]
    assert codes == [p for p in terminated if p and len(p) <= limit]


def printable(max_size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=1, max_size=max_size).map(
        lambda b: bytes(0x20 + (x % 0x5F) for x in b)
    )


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(printable(30), min_size=1, max_size=5), terminator=st.sampled_from(TERMINATORS)
)
def test_gs_separated_codes_pass_through(parts: list[bytes], terminator: str) -> None:
    code = b"\x1d".join(parts)
    frames = framer(terminator, 1024).feed(code + TERM_BYTES[terminator])
    assert frames == [CodeFrame(code)]


@settings(max_examples=200, deadline=None)
@given(
    junk=st.binary(min_size=17, max_size=200),
    code=printable(16),
    terminator=st.sampled_from(TERMINATORS),
    cuts=st.lists(st.integers(0), max_size=6),
)
def test_overlong_frame_never_swallows_the_next_code(
    junk: bytes, code: bytes, terminator: str, cuts: list[int]
) -> None:
    junk = junk.replace(b"\r", b"x").replace(b"\n", b"x")
    term = TERM_BYTES[terminator]
    stream = junk + term + code + term
    frames = feed_all(framer(terminator, 16), split(stream, cuts))
    assert frames == [OverlongFrame(junk[:16], 16), CodeFrame(code)]


# --- frame handler -----------------------------------------------------------------------------


def test_handler_emits_scans_and_noreads_and_throttles_noise() -> None:
    ctx = CollectingContext("scan-7")
    with structlog.testing.capture_logs() as logs:
        handler = FrameHandler(
            ScannerFraming(max_code_bytes=16), "scan-7", structlog.get_logger("test")
        )
        handler.feed(ctx, b"]C1\x1dA\xe9\rNOREAD\r\x00\x01\x02\r\x03\r", now=100.0)
        handler.feed(ctx, b"x" * 40 + b"\r" + b"y" * 40 + b"\rOK\r", now=101.0)
    assert ctx.observations == [
        Scan("scan-7", 100.0, "]C1\x1dAé"),
        NoRead("scan-7", 100.0, "NOREAD"),
        Scan("scan-7", 101.0, "OK"),
    ]
    garbage = [e for e in logs if e["event"] == "scanner_garbage_received"]
    assert [e["log_level"] for e in garbage] == ["warning", "debug"]
    assert garbage[0]["device"] == "scan-7"
    assert garbage[0]["excerpt"] == "00 01 02"
    too_long = [e for e in logs if e["event"] == "scanner_frame_too_long"]
    assert [e["log_level"] for e in too_long] == ["warning", "debug"]
    assert too_long[0]["excerpt"].startswith("78 78 78")
    assert too_long[0]["limit"] == 16


def test_handler_restart_drops_a_partial_frame() -> None:
    ctx = CollectingContext()
    handler = FrameHandler(ScannerFraming(), "scanner-1", structlog.get_logger("test"))
    handler.feed(ctx, b"half-a-co", now=1.0)
    handler.restart()
    handler.feed(ctx, b"FULL\r", now=2.0)
    assert ctx.scans == ["FULL"]


def test_hex_excerpt_is_short() -> None:
    assert hex_excerpt(b"\x00\x1d") == "00 1d"
    assert hex_excerpt(bytes(40)).endswith(" ...")
    assert len(hex_excerpt(bytes(40))) == 16 * 3 - 1 + 4
