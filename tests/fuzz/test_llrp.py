"""Fuzzing the LLRP adapter's input: the stream splitter, the tag report decoder, and a session's
dispatch of whatever a reader (or something pretending to be one) sends.

The session is driven without a socket: a recorded configuration conversation with the reader
simulator brings it to any stage (up to an enabled ROSpec), then fuzzed messages follow. Its
transport is a sink that keeps what the session sends.
"""

from __future__ import annotations

import asyncio
import functools
import re
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config.rfid import LlrpConfig
from gateway.devices import llrp_wire as wire
from gateway.devices.base import DeviceMisconfigured, DeviceUnavailable
from gateway.devices.llrp_session import FIRST_OWN_ID, LlrpStats, Session
from gateway.events import Gpi, Observation, TagRead
from simulators import llrp_codec as codec
from simulators.llrp import LlrpReaderSim
from tests.fuzz.harness import Known, RecordingLog, chunked, fuzz, mutated, one_input
from tests.helpers_llrp import CONTENT_SELECTORS

# --- messages a reader sends, valid and not -----------------------------------------------------

FROM_READER = sorted(wire.FROM_READER)
RESPONSES = [t for t in FROM_READER if t not in (61, 62, 63, 100, 1023)]
READER_EXCEPTION_EVENT = 252

message_ids = st.one_of(
    st.integers(1, 24),  # sllurp's requests count up from 1
    st.integers(FIRST_OWN_ID, FIRST_OWN_ID + 3),  # the session's own
    st.integers(0, 2**32 - 1),
)
statuses = st.builds(
    codec.llrp_status,
    st.sampled_from([int(s) for s in codec.Status]) | st.integers(0, 0xFFFF),
    st.text(max_size=24),
)
events = st.one_of(
    st.builds(codec.connection_attempt_event, st.integers(0, 5)),
    st.just(codec.connection_close_event()),
    st.builds(codec.gpi_event, st.integers(0, 5), st.booleans()),
    st.builds(codec.rospec_event, st.integers(0, 3), st.integers(0, 3)),
    st.builds(
        lambda text: codec.tlv(READER_EXCEPTION_EVENT, codec.utf8v(text)), st.text(max_size=20)
    ),
    st.builds(codec.tlv, st.integers(247, 257), st.binary(max_size=12)),
)
reader_events = st.builds(
    lambda t, evs: codec.reader_event(t, *evs),
    st.integers(0, 2**64 - 1),
    st.lists(events, min_size=1, max_size=3),
)
epcs = st.sampled_from(
    ["3074257bf7194e4000001a85", "3074257bf7194e4000001a85aabbccdd", "e28011606000", "ab" * 31]
) | st.binary(min_size=1, max_size=32).map(bytes.hex)
reads = st.builds(
    codec.TagRead,
    epc=epcs,
    antenna=st.integers(0, 0xFFFF),
    rssi=st.integers(-128, 127),
    first_us=st.integers(0, 2**64 - 1),
    last_us=st.integers(0, 2**64 - 1),
    count=st.integers(0, 0xFFFF),
    rospec_id=st.integers(0, 2**32 - 1),
)
selectors = CONTENT_SELECTORS
reports = st.builds(codec.ro_access_report, st.lists(reads, max_size=6), selectors)
gpi_states = st.builds(
    lambda port, state: codec.tlv(225, struct.pack("!HBB", port, 0x80, state)),
    st.integers(0, 4),
    st.integers(0, 2),
)
tv_soup = st.lists(
    st.builds(codec.tv, st.integers(0, 127), st.binary(max_size=12)),
    max_size=6,
).map(b"".join)
tlv_soup = st.lists(
    st.builds(codec.tlv, st.integers(0, 1023), st.binary(max_size=16)), max_size=4
).map(b"".join)
bodies = st.one_of(
    statuses,
    st.builds(lambda s, g: s + b"".join(g), statuses, st.lists(gpi_states, max_size=3)),
    reader_events,
    reports,
    st.builds(lambda t: codec.tlv(wire.TAG_REPORT_DATA, t), tv_soup),
    tlv_soup,
    st.binary(max_size=40),
)


@st.composite
def reader_messages(draw: st.DrawFn) -> bytes:
    """A message as a reader would frame it: a type a reader sends (usually with a body that
    suits it), an ID, and a body that is valid, mutated, or noise."""
    kind = draw(st.sampled_from(("report", "event", "response", "keepalive", "any")))
    if kind == "report":
        mtype, body = wire.RO_ACCESS_REPORT, draw(reports)
    elif kind == "event":
        mtype, body = wire.READER_EVENT_NOTIFICATION, draw(reader_events)
    elif kind == "response":
        mtype, body = draw(st.sampled_from(RESPONSES)), draw(statuses)
    elif kind == "keepalive":
        mtype, body = wire.KEEPALIVE, b""
    else:
        mtype, body = draw(st.sampled_from(FROM_READER)), draw(bodies)
    if draw(st.integers(0, 3)) == 0:
        body = draw(mutated(body))
    version = draw(st.sampled_from((1, 1, 1, 2)))
    return codec.message(mtype, draw(message_ids), body, version)


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """Whole messages, sometimes with the stream itself mutated (a corrupt length, noise)."""
    data = b"".join(draw(st.lists(reader_messages(), max_size=6)))
    if draw(st.integers(0, 3)) == 0:
        data = draw(mutated(data))
    return data


# --- the splitter ------------------------------------------------------------------------------


def reference_split(data: bytes, max_bytes: int) -> tuple[list[wire.Frame], str | None]:
    """The specification of Splitter.feed for one whole stream, written plainly."""
    frames: list[wire.Frame] = []
    pos = 0
    while len(data) - pos >= wire.HEADER_LEN:
        word, length, mid = struct.unpack_from("!HII", data, pos)
        mtype, version = word & 0x3FF, (word >> 10) & 7
        if length < wire.HEADER_LEN or length > max_bytes:
            return frames, f"message length {length}"
        if word >> 13 or version not in (1, 2) or mtype not in wire.FROM_READER:
            return frames, f"no LLRP message from a reader: version {version}, type {mtype}"
        if pos + length > len(data):
            break
        frames.append((mtype, version, mid, data[pos : pos + length]))
        pos += length
    return frames, None


def _reason(message: str) -> str:
    return re.sub(r"\d+", "#", message.split(" (header", maxsplit=1)[0].split(":", maxsplit=1)[0])


@fuzz(weight=2)
@given(
    data=streams() | st.binary(max_size=300),
    max_bytes=st.sampled_from((wire.HEADER_LEN, 24, 256, wire.MAX_MESSAGE_BYTES)),
    st_data=st.data(),
)
def test_fuzz_llrp_splitter(data: bytes, max_bytes: int, st_data: st.DataObject) -> None:
    """Any bytes in any chunking: whole messages, cut exactly as the specification says, or
    `error` set with the reason; never an exception, never more buffered than one message."""
    chunks = st_data.draw(chunked(data))
    with one_input("llrp.splitter") as outcome:
        splitter = wire.Splitter(max_bytes=max_bytes)
        frames: list[wire.Frame] = []
        for chunk in chunks:
            frames += splitter.feed(chunk)
            assert splitter.buffered < max(max_bytes, wire.HEADER_LEN)
        expected, error = reference_split(data, max_bytes)
        assert frames == expected
        if error is None:
            assert splitter.error is None
            outcome.reason = "ok:frames"
        else:
            assert splitter.error is not None and str(splitter.error).startswith(error)
            assert splitter.feed(codec.message(wire.KEEPALIVE, 1)) == []  # broken for good
            assert splitter.buffered == 0
            outcome.reason = f"rejected:{_reason(error)}"


# --- tag reports -------------------------------------------------------------------------------


@fuzz(weight=2)
@given(
    body=reports.flatmap(lambda r: st.just(r) | mutated(r))
    | st.builds(lambda t: codec.tlv(wire.TAG_REPORT_DATA, t), tv_soup)
    | tlv_soup
    | st.binary(max_size=200),
    mid=message_ids,
)
def test_fuzz_llrp_tag_reports(body: bytes, mid: int) -> None:
    """Any RO_ACCESS_REPORT body: TagReads with sane fields, or ReportError with a message."""
    frame = codec.message(wire.RO_ACCESS_REPORT, mid, body)
    with one_input("llrp.tag_reports") as outcome:
        try:
            got, skipped = wire.tag_reads(frame, "portal-1", 5.0)
        except wire.ReportError as exc:
            assert str(exc)
            outcome.reason = f"rejected:{_reason(str(exc))}"
            return
        assert skipped >= 0
        for read in got:
            assert isinstance(read, TagRead)
            assert (read.device, read.time) == ("portal-1", 5.0)
            assert re.fullmatch(r"(?:[0-9a-f]{2})*", read.epc)
            assert read.antenna is None or 0 <= read.antenna <= 0xFFFF
            assert read.rssi is None or -128 <= read.rssi <= 127
            assert 0 <= read.seen_count <= 0xFFFF
            for t in (read.first_seen, read.last_seen):
                assert t is None or 0 <= t <= 2**64 / 1e6
        outcome.reason = f"ok:{min(len(got), 3)} reads, {min(skipped, 1)} skipped"


# --- a session ---------------------------------------------------------------------------------

READER: dict[str, Any] = {
    "id": "dock-reader",
    "kind": "llrp",
    "host": "127.0.0.1",
    "max_antennas": 4,
    "min_tx_power_dbm": 10.0,
    "max_tx_power_dbm": 33.0,
    "gpo_ports": 3,
    "antennas": [1, 2],
    "tx_power_dbm": 30.0,
    "mode_index": 1002,
}
CONFIGS: dict[str, dict[str, Any]] = {
    "gpi": {"inventory": "gpi", "gpi_trigger": {"port": 1}},
    "commanded": {"inventory": "commanded"},
}


class _Sink(asyncio.Transport):
    """The session's transport: keeps what it writes."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


class _Context:
    """The DeviceContext: keeps observations, and whether one came after the session failed."""

    device_id = "dock-reader"

    def __init__(self) -> None:
        self.session: Session | None = None
        self.observations: list[Observation] = []
        self.after_failure: list[Observation] = []
        self.connections: list[str] = []

    def emit(self, observation: Observation) -> None:
        self.observations.append(observation)
        if self.session is not None and self.session.failure is not None:
            self.after_failure.append(observation)

    def connected(self, detail: str) -> None:
        self.connections.append(detail)


class _Recording(Session):
    """A session that keeps what the reader sent until the ROSpec was enabled."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.heard: list[bytes] = []
        self.until_ready: list[bytes] | None = None

    def data_received(self, data: bytes) -> None:
        self.heard.append(bytes(data))
        super().data_received(data)
        if self.until_ready is None and self.ready.done():
            self.until_ready = list(self.heard)


@functools.cache
def conversation(mode: str) -> tuple[LlrpConfig, tuple[bytes, ...]]:
    """What the reader simulator sends a session of this configuration until it is enabled."""

    async def record() -> tuple[LlrpConfig, tuple[bytes, ...]]:
        async with LlrpReaderSim("impinj-r700") as sim:
            cfg = LlrpConfig.model_validate({**READER, **CONFIGS[mode], "port": sim.port})
            session = _Recording(cfg, _Context(), RecordingLog(), {}, LlrpStats())
            loop = asyncio.get_running_loop()
            await loop.create_connection(lambda: session, cfg.host, cfg.port)
            async with asyncio.timeout(10):
                await session.ready
            await session.close(1.0)
            assert session.until_ready is not None
            return cfg, tuple(session.until_ready)

    return asyncio.run(record())


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


# Findings fixed so far: llrp-gpi-answer-not-a-list (docs/fuzzing.md). A new one goes here with
# its reproduction.
KNOWN_SESSION: list[Known] = []


async def _drive(
    mode: str, stage: int, action: str, chunks: list[bytes]
) -> tuple[Session, _Context, _Sink, RecordingLog, list[dict[str, Any]], bool]:
    cfg, heard = conversation(mode)
    loop = asyncio.get_running_loop()
    callback_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: callback_errors.append(context))
    log, ctx, sink = RecordingLog(), _Context(), _Sink()
    session = Session(cfg, ctx, log, {}, LlrpStats())
    ctx.session = session
    session.connection_made(sink)
    for chunk in heard[:stage]:
        session.data_received(chunk)
    enabled = session.usable
    assert enabled == (stage == len(heard)), (stage, len(heard), session.failure)
    if enabled and action == "query_gpi" and cfg.gpi_trigger is not None:
        session.query_gpi()
    elif enabled and action == "open_window":
        session.set_window(True, "fuzz")
    sent_before = len(sink.sent)
    failed_at: int | None = None
    for chunk in chunks:
        session.data_received(chunk)
        await asyncio.sleep(0)  # done-callbacks of answered requests
        if session.failure is not None and failed_at is None:
            failed_at = len(sink.sent)
    if failed_at is not None:
        assert len(sink.sent) == failed_at, "sent after the session failed"
    assert len(sink.sent) >= sent_before
    session.fail(DeviceUnavailable("end of the input"))
    await asyncio.sleep(0)
    for fut in (session.ready, session.ended):
        if fut.done() and not fut.cancelled():
            fut.exception()
    return session, ctx, sink, log, callback_errors, enabled


session_messages = st.one_of(
    st.lists(reader_messages(), max_size=6).map(b"".join), st.binary(max_size=200), streams()
)


@fuzz(weight=2)
@given(
    mode=st.sampled_from(sorted(CONFIGS)),
    stage=st.integers(0, 40),
    action=st.sampled_from(("none", "query_gpi", "open_window")),
    chunks=session_messages.flatmap(chunked),
)
def test_fuzz_llrp_session(
    loop: asyncio.AbstractEventLoop, mode: str, stage: int, action: str, chunks: list[bytes]
) -> None:
    """A session at any stage of its configuration (or enabled, with a request of its own in
    flight) fed any messages: it never raises (nor does a callback); it ends with a
    DeviceUnavailable or DeviceMisconfigured that says why, or goes on; it emits tag reads and
    GPI events of its own device only while enabled and never after failing; what it sends is
    LLRP."""
    _, heard = conversation(mode)
    stage = min(stage, len(heard))
    with one_input("llrp.session", KNOWN_SESSION) as outcome:
        session, ctx, sink, log, errors, enabled = loop.run_until_complete(
            _drive(mode, stage, action, chunks)
        )
        assert errors == [], errors
        assert ctx.after_failure == []
        assert len(ctx.connections) == 1 if enabled else len(ctx.connections) <= 1
        for obs in ctx.observations:
            assert isinstance(obs, TagRead | Gpi) and obs.device == "dock-reader"
        if not ctx.connections:
            assert not any(isinstance(o, TagRead) for o in ctx.observations)
        for data in sink.sent:
            word, length, _ = struct.unpack_from("!HII", data)
            assert length == len(data) and (word >> 10) & 7 == wire.VERSION
        failure = session.failure
        assert isinstance(failure, DeviceUnavailable | DeviceMisconfigured) and str(failure)
        what = str(failure)
        warnings = sorted({event for level, event, _ in log.records if level == "warning"})
        if what == "end of the input":
            outcome.reason = "ok:" + ",".join(warnings or ["quiet"])
        else:
            outcome.reason = "rejected:" + _failure_reason(what.replace(session.where, ""))


def _failure_reason(text: str) -> str:
    """`sent a malformed message`, `configuring failed: KeyError` ...: what a failure says,
    without the values."""
    head = re.sub(r"\s+", " ", text.split(":", maxsplit=1)[0]).strip()
    error = re.search(r"\b(\w+(?:Error|Exception))\(", text)
    return head + (f": {error[1]}" if error else "")


# --- what the fuzzers found --------------------------------------------------------------------


def test_bug_an_answer_to_the_gpi_query_with_one_port_state_is_no_callback_error(
    loop: asyncio.AbstractEventLoop,
) -> None:
    _, heard = conversation("gpi")
    gpi_port = codec.tlv(225, struct.pack("!HBB", 1, 0x80, 1))
    answer = codec.message(
        codec.Msg.CLOSE_CONNECTION_RESPONSE, FIRST_OWN_ID, codec.llrp_status() + gpi_port
    )
    session, _, _, _, errors, enabled = loop.run_until_complete(
        _drive("gpi", len(heard), "query_gpi", [answer])
    )
    assert enabled
    assert errors == []
    assert session.config.gpi_trigger is not None and session.config.gpi_trigger.port == 1
    assert session.window_open  # port 1 is active: the read window opened
