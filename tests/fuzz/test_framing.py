"""Fuzzing scanner framing: any bytes, in any chunks, with any framing configuration, through the
frame handler both scanner adapters share, and each code on into the identifier parser as the
binder would take it."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from gateway.config.models import ScannerFraming
from gateway.devices.framing import (
    CodeFrame,
    FrameHandler,
    Framer,
    GarbageFrame,
    NoReadFrame,
    OverlongFrame,
)
from gateway.events import NoRead, Observation, Scan
from gateway.identifiers import REASONS, SCHEMES, IdentifierRejected, parse_code
from tests.fuzz.harness import RecordingLog, chunked, fuzz, mutated, one_input

TERMINATORS = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n", "any": b"\r\n"}

line_ends = st.sampled_from([b"\r", b"\n", b"\r\n", b"\n\r", b"\r\r\n"])
pieces = st.sampled_from(
    [
        b"\x1d",
        b"\x1e\x04",
        b"\x00",
        b"\x7f",
        b"\x85",
        b"]d2",
        b"]C1",
        b"]Q1",
        b"0109506000134352",
        b"21ABC123",
        b"10LOT\x1d17251231",
        b"https://id.gs1.org/01/09506000134352/21/X1",
        b"NOREAD",
        b"ERROR",
        "Müller €".encode(),
        "Müller".encode("latin-1"),
        b"\xe2\x82",  # a cut UTF-8 character
        b"x" * 40,
    ]
)
frames = st.builds(lambda body, end: b"".join(body) + end, st.lists(pieces, max_size=5), line_ends)
streams = st.one_of(
    st.lists(frames, max_size=12).map(b"".join),
    st.lists(frames, max_size=8).map(b"".join).flatmap(mutated),
    st.lists(pieces | line_ends, max_size=40).map(b"".join),
    st.binary(max_size=400),
)
framings = st.builds(
    ScannerFraming,
    terminator=st.sampled_from(sorted(TERMINATORS)),
    max_code_bytes=st.sampled_from([16, 17, 40, 1024]),
    noread=st.lists(st.sampled_from(["NOREAD", "ERROR", "?", "Müller"]), min_size=1, max_size=3),
)


class _Context:
    device_id = "cam-1"

    def __init__(self) -> None:
        self.observations: list[Observation] = []

    def emit(self, observation: Observation) -> None:
        self.observations.append(observation)

    def connected(self, detail: str) -> None:
        raise AssertionError("framing never connects")


@fuzz(weight=3)
@given(data=streams, framing=framings, st_data=st.data())
def test_fuzz_scanner_framing(data: bytes, framing: ScannerFraming, st_data: st.DataObject) -> None:
    """Every frame is a Scan or a NoRead of the device, or a rate-limited warning that says
    what was dropped; never an exception; chunking changes nothing; every code is an identity
    or a rejection with a reason."""
    chunks = st_data.draw(chunked(data, max_cuts=20))
    with one_input("scanner.framing") as outcome:
        log, ctx = RecordingLog(), _Context()
        handler = FrameHandler(framing, "cam-1", log)
        for i, chunk in enumerate(chunks):
            handler.feed(ctx, chunk, now=float(i))
        frames = Framer(framing).feed(data)  # the same bytes in one piece: the same frames
        kept = [f for f in frames if isinstance(f, CodeFrame | NoReadFrame)]
        assert len(ctx.observations) == len(kept)
        for obs, frame in zip(ctx.observations, kept, strict=True):
            assert isinstance(obs, Scan if isinstance(frame, CodeFrame) else NoRead)
            assert obs.device == "cam-1" and obs.text == frame.data.decode("latin-1")
            assert 0 < len(obs.text) <= framing.max_code_bytes
            assert not re.search(_terminator(framing.terminator), obs.text)
            if isinstance(obs, NoRead):
                assert obs.text in framing.noread
        dropped = {
            "scanner_garbage_received": sum(isinstance(f, GarbageFrame) for f in frames),
            "scanner_frame_too_long": sum(isinstance(f, OverlongFrame) for f in frames),
        }
        for event, count in dropped.items():
            records = [(level, fields) for level, e, fields in log.records if e == event]
            assert len(records) == count, (event, records, frames)
            if records:
                assert records[0][0] == "warning"  # the first at WARNING, repeats at DEBUG
                assert all(f["device"] == "cam-1" and f["excerpt"] for _, f in records)
        assert len(log.records) == sum(dropped.values())
        outcome.reason = "ok:no frame"
        for each in frames:
            outcome.also(_FRAME_OUTCOMES[type(each)])
        for obs in ctx.observations:
            if isinstance(obs, Scan):
                outcome.also(_identify(obs.text))
        if len(outcome.reasons) > 1:
            outcome.reasons.pop(0)


_FRAME_OUTCOMES = {
    CodeFrame: "ok:code",
    NoReadFrame: "ok:noread",
    GarbageFrame: "rejected:garbage (warning)",
    OverlongFrame: "rejected:over-long frame (warning)",
}


def _terminator(terminator: str) -> str:
    return {"cr": "\r", "lf": "\n", "crlf": "\r\n", "any": "[\r\n]"}[terminator]


def _identify(text: str) -> str:
    try:
        identity = parse_code(text, source="cam-1", schemes=frozenset(SCHEMES))
    except IdentifierRejected as exc:
        assert exc.reason in REASONS and exc.message
        return f"rejected:code {exc.reason}"
    assert identity.scheme in SCHEMES and identity.value and identity.raw == text
    return f"ok:code {identity.scheme}"
