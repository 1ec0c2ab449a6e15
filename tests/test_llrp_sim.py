"""The LLRP reader simulator, judged from the outside over real TCP: sllurp as an independent
client (its threaded socket client, and its encoder and decoder under a bare asyncio client),
Wireshark's LLRP dissector as a second parser, and the ground truth the simulator keeps."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sllurp.llrp import LLRPMessage, LLRPReaderClient, LLRPReaderConfig, LLRPReaderState
from sllurp.llrp_errors import LLRPError
from sllurp.llrp_proto import LLRPROSpec

from simulators import llrp_codec as codec
from simulators.llrp import READER_MODELS, LlrpReaderSim, TagPass
from simulators.llrp_codec import Msg, P
from simulators.llrp_scenario import PortalScenario, items_of, plan

REPO = Path(__file__).resolve().parent.parent
EPC96 = "3074257bf7194e4000001a85"  # urn:epc:id:sgtin:0614141.812345.6789
EPC96_B = "3074257bf7194e4000001a86"
EPC128 = "3074257bf7194e4000001a85aabbccdd"  # not 96 bits: sent as EPCData
ALL_FIELDS = {
    "EnableROSpecID": True,
    "EnableAntennaID": True,
    "EnablePeakRSSI": True,
    "EnableFirstSeenTimestamp": True,
    "EnableLastSeenTimestamp": True,
    "EnableTagSeenCount": True,
}
# What sllurp's decoders raise on bytes they cannot read, besides their own LLRPError.
SLLURP_DECODE_ERRORS = (LLRPError, struct.error, KeyError, IndexError, ValueError, TypeError)
RESPONSE_TYPES = {
    11, 12, 13, 4, 30, 31, 32, 33, 34, 35, 36, 50, 51, 52, 53, 54, 56, 57, 100,
}  # fmt: skip


# --- a bare client -------------------------------------------------------------------------------


@dataclass
class Frame:
    type: int
    id: int
    version: int
    raw: bytes
    msg: dict[str, Any] | None  # sllurp's decoding, None where sllurp has no decoder for it

    @property
    def name(self) -> str:
        return codec.msg_name(self.type)

    @property
    def body(self) -> bytes:
        return self.raw[codec.HEADER_LEN :]


def status_of(frame: Frame) -> int:
    """The StatusCode of the frame's top-level LLRPStatus, read by hand (not by the codec)."""
    body = frame.body
    pos = 2 if frame.type == Msg.GET_SUPPORTED_VERSION_RESPONSE else 0
    while pos + 4 <= len(body):
        ptype, length = struct.unpack_from("!HH", body, pos)
        if ptype & 0x3FF == P.LLRP_STATUS:
            return int(struct.unpack_from("!H", body, pos + 4)[0])
        pos += length
    raise AssertionError(f"no LLRPStatus in {frame.name}")


def event_of(frame: Frame) -> dict[str, Any]:
    assert frame.msg is not None, frame
    data: dict[str, Any] = frame.msg["ReaderEventNotificationData"]
    return data


def is_connection_event(status: str) -> Callable[[Frame], bool]:
    def check(f: Frame) -> bool:
        return (
            f.type == Msg.READER_EVENT_NOTIFICATION
            and event_of(f).get("ConnectionAttemptEvent", {}).get("Status") == status
        )

    return check


class Client:
    """A bare LLRP client on asyncio streams. Requests are encoded by sllurp (or given as
    bytes, for what sllurp cannot encode); every frame received is kept raw, and decoded by
    sllurp where sllurp knows the message."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.frames: list[Frame] = []
        self.closed = False
        self.reset = False
        self._next_id = 1000
        self._arrived = asyncio.Event()

    async def __aenter__(self) -> Client:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
        await self._task

    async def _read(self) -> None:
        try:
            while True:
                head = await self.reader.readexactly(codec.HEADER_LEN)
                header = codec.parse_header(head)
                body = await self.reader.readexactly(max(0, header.length - codec.HEADER_LEN))
                raw = head + body
                try:
                    msg = LLRPMessage(msgbytes=raw).msgdict
                    decoded = next(iter(msg.values()))
                except SLLURP_DECODE_ERRORS:
                    decoded = None
                self.frames.append(Frame(header.type, header.id, header.version, raw, decoded))
                self._notify()
        except asyncio.IncompleteReadError:
            pass
        except ConnectionResetError:
            self.reset = True
        finally:
            self.closed = True
            self._notify()

    def _notify(self) -> None:
        self._arrived.set()
        self._arrived = asyncio.Event()

    def take_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def send(self, name: str, **fields: Any) -> int:
        msg_id = fields.pop("ID", None) or self.take_id()
        self.writer.write(LLRPMessage(msgdict={name: {"ID": msg_id, **fields}}).msgbytes)
        return msg_id

    def send_body(self, mtype: int, body: bytes = b"", version: int = 1) -> int:
        msg_id = self.take_id()
        self.writer.write(codec.message(mtype, msg_id, body, version))
        return msg_id

    async def wait(self, cond: Callable[[Frame], bool], timeout: float = 3.0) -> Frame:
        async with asyncio.timeout(timeout):
            while True:
                for frame in self.frames:
                    if cond(frame):
                        return frame
                if self.closed:
                    raise AssertionError(f"connection closed; got {[f.name for f in self.frames]}")
                await self._arrived.wait()

    async def reply(self, msg_id: int, timeout: float = 3.0) -> Frame:
        return await self.wait(lambda f: f.id == msg_id and f.type in RESPONSE_TYPES, timeout)

    async def request(self, name: str, **fields: Any) -> Frame:
        return await self.reply(self.send(name, **fields))

    async def request_body(self, mtype: int, body: bytes = b"", version: int = 1) -> Frame:
        return await self.reply(self.send_body(mtype, body, version))

    async def wait_closed(self, timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            while not self.closed:
                await self._arrived.wait()

    def tag_reports(self) -> list[dict[str, Any]]:
        return [
            tag
            for f in self.frames
            if f.type == Msg.RO_ACCESS_REPORT and f.msg is not None
            for tag in f.msg.get("TagReportData", [])
        ]


def get_config(antenna: int = 0, requested: int = 0, gpi: int = 0, gpo: int = 0) -> bytes:
    """A GET_READER_CONFIG body. By hand: sllurp packs RequestedData before AntennaID (the
    specification and Wireshark have AntennaID first), which only works for 0 and 0."""
    return struct.pack("!HBHH", antenna, requested, gpi, gpo)


def rospec(
    rospec_id: int = 1,
    *,
    antennas: tuple[int, ...] = (1, 2),
    n: int = 1,
    start: str = "Immediate",
    selector: dict[str, bool] | None = None,
    model: str = "impinj-r700",
) -> dict[str, Any]:
    top = len(READER_MODELS[model].power_table_cdbm)  # full power (index 0 is no power)
    spec = LLRPROSpec(
        None,
        rospec_id,
        antennas=list(antennas),
        tx_power=top,
        tag_content_selector=selector or ALL_FIELDS,
    )
    spec["ROReportSpec"]["N"] = n
    spec["ROBoundarySpec"]["ROSpecStartTrigger"]["ROSpecStartTriggerType"] = start
    return dict(spec)


async def inventory(
    client: Client,
    *,
    antennas: tuple[int, ...] = (1, 2),
    n: int = 1,
    start: str = "Immediate",
    events: tuple[str, ...] = (),
    keepalive_ms: int = 0,
    model: str = "impinj-r700",
) -> None:
    """The usual connect sequence: events, keepalive, one ROSpec, enabled."""
    await client.wait(is_connection_event("Success"))
    config: dict[str, Any] = {
        "ResetToFactoryDefaults": False,
        "ReaderEventNotificationSpec": {
            "EventNotificationState": {e: e in events for e in ("GPIEvent", "ROSpecEvent")}
        },
    }
    if keepalive_ms:
        config["KeepaliveSpec"] = {"KeepaliveTriggerType": 1, "TimeInterval": keepalive_ms}
    assert status_of(await client.request("SET_READER_CONFIG", **config)) == 0
    spec = rospec(antennas=antennas, n=n, start=start, model=model)
    assert status_of(await client.request("ADD_ROSPEC", ROSpecID=1, ROSpec=spec)) == 0
    assert status_of(await client.request("ENABLE_ROSPEC", ROSpecID=1)) == 0


# --- sllurp's own client -------------------------------------------------------------------------


class SllurpReader:
    """sllurp's threaded LLRPReaderClient; tag reports collected from its thread."""

    def __init__(self, port: int, **settings: Any) -> None:
        self.tags: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        base = {
            "antennas": [1, 2],
            "tx_power": 0,
            "session": 1,
            "tag_population": 16,
            "keepalive_interval": 100,
            "tag_content_selector": ALL_FIELDS,
            "reset_on_connect": True,
        }
        self.client = LLRPReaderClient("127.0.0.1", port, LLRPReaderConfig(base | settings))
        self.client.add_tag_report_callback(self._on_tags)
        # sllurp leaves the ROReportSpec at N = 0 (only at the end of the AISpec, which never
        # comes); a report per tag, as the gateway's adapter asks, before its ADD_ROSPEC.
        self.client.add_state_callback(LLRPReaderState.STATE_SENT_SET_CONFIG, self._report_each)

    def _report_each(self, reader: LLRPReaderClient, state: int) -> None:
        reader.llrp.getROSpec()["ROReportSpec"]["N"] = 1

    def _on_tags(self, reader: LLRPReaderClient, tags: list[dict[str, Any]]) -> None:
        with self.lock:
            self.tags.extend(tags)

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.tags)

    async def disconnect(self) -> None:
        self.client.disconnect()
        async with asyncio.timeout(5):
            while self.client.is_alive():  # its thread ends after DELETE_ROSPEC's response
                await asyncio.sleep(0.02)


@pytest.fixture
def sllurp_readers() -> Iterator[list[SllurpReader]]:
    readers: list[SllurpReader] = []
    yield readers
    for r in readers:  # a failed test still ends sllurp's threads
        r.client.hard_disconnect()
        r.client.join(5)


async def test_sllurp_reads_portal_passes_as_they_happened(
    sllurp_readers: list[SllurpReader],
) -> None:
    async with LlrpReaderSim(model="impinj-r700", seed=1) as sim:
        reader = SllurpReader(sim.port)
        sllurp_readers.append(reader)
        reader.client.connect()
        await sim.wait_inventorying(timeout=5)
        passes = [
            TagPass(EPC96, "in", (1, 2), start_s=0.0, duration_s=0.6),
            TagPass(EPC96_B, "out", (1, 2), start_s=0.1, duration_s=0.6),
        ]
        truths = await sim.run_passes(passes, miss_share=0.2)
        expected = sum(t.reads_delivered for t in truths)
        await sim.wait_for(lambda: len(reader.snapshot()) >= expected, timeout=3)
        await sim.wait_for(lambda: sim.keepalive_acks >= 1, timeout=3)
        await reader.disconnect()
        await sim.wait_disconnected(timeout=3)
    tags = reader.snapshot()
    assert len(tags) == expected
    for truth, p in zip(truths, passes, strict=True):
        mine = [t for t in tags if t["EPC"].decode() == truth.epc]
        assert truth.missed > 0 and truth.not_delivered == 0
        assert truth.reads_delivered + truth.missed == truth.planned
        assert truth.antennas == ((1, 2) if p.direction == "in" else (2, 1))
        for antenna in (1, 2):
            on = [t for t in mine if t["AntennaID"] == antenna]
            assert len(on) == truth.reads_sent[antenna]
            assert max(t["PeakRSSI"] for t in on) == truth.peak_rssi_sent[antenna]
            assert all(t["TagSeenCount"] == 1 and t["ROSpecID"] == 1 for t in on)
            stamps = [t["FirstSeenTimestampUTC"] / 1e6 for t in on]
            assert truth.start_s - 0.01 <= min(stamps) and max(stamps) <= truth.end_s + 0.01
        # The antenna passed first is the one whose reads peak first.
        first, second = truth.antennas
        assert _peak_time(mine, first) < _peak_time(mine, second)


def _peak_time(tags: list[dict[str, Any]], antenna: int) -> float:
    on = [t for t in tags if t["AntennaID"] == antenna]
    best = max(t["PeakRSSI"] for t in on)
    strong = [t["FirstSeenTimestampUTC"] for t in on if t["PeakRSSI"] >= best - 3]
    return float(sum(strong) / len(strong))


@pytest.mark.parametrize("model", sorted(READER_MODELS))
async def test_sllurp_configures_every_model(
    model: str, sllurp_readers: list[SllurpReader]
) -> None:
    spec = READER_MODELS[model]
    mode = spec.modes[-1].id
    async with LlrpReaderSim(model=model, seed=2) as sim:
        reader = SllurpReader(sim.port, antennas=[spec.antennas], mode_identifier=mode)
        sllurp_readers.append(reader)
        reader.client.connect()
        await sim.wait_inventorying(timeout=5)
        truth = await sim.stray(EPC128, antenna=spec.antennas, reads=2)
        await sim.wait_for(lambda: len(reader.snapshot()) == 2, timeout=3)
        llrp = reader.client.llrp
        assert llrp.max_ant == spec.antennas
        assert llrp.tx_power_table[1:] == [c / 100 for c in spec.power_table_cdbm]
        assert llrp.reader_mode["ModeIdentifier"] == mode
        await reader.disconnect()
    assert [t["EPC"].decode() for t in reader.snapshot()] == [EPC128, EPC128]
    assert truth.reads_sent == {spec.antennas: 2}


# --- protocol behaviour --------------------------------------------------------------------------


async def test_one_controlling_client_the_second_is_refused_and_the_first_told() -> None:
    async with LlrpReaderSim(seed=3) as sim, Client(sim.port) as first:
        await first.wait(is_connection_event("Success"))
        async with Client(sim.port) as second:
            await second.wait(
                is_connection_event("Failed (a Client initiated connection already exists)")
            )
            await second.wait_closed()
        await first.wait(is_connection_event("Another connection attempted"))
        assert status_of(await first.request("GET_READER_CAPABILITIES", RequestedData=0)) == 0
        assert (sim.connection_attempts, sim.sessions, sim.refused) == (2, 1, 1)


def _rospec_states(frame: Frame) -> dict[int, int]:
    """ROSpecID -> CurrentState of a GET_ROSPECS_RESPONSE (sllurp cannot decode it)."""
    states = {}
    for param in codec.split_params(frame.body, None):
        if param.type == P.RO_SPEC:
            spec_id, _priority, state = struct.unpack_from("!IBB", param.body)
            states[spec_id] = state
    return states


async def test_rospec_state_machine_and_its_errors() -> None:
    disabled, inactive, active = 0, 1, 2
    async with LlrpReaderSim(seed=4) as sim, Client(sim.port) as c:
        await c.wait(is_connection_event("Success"))
        spec = rospec(1, start="Null")

        async def status(name: str, **fields: Any) -> int:
            return status_of(await c.request(name, **fields))

        async def states() -> dict[int, int]:
            return _rospec_states(await c.request_body(Msg.GET_ROSPECS))

        assert await status("ADD_ROSPEC", ROSpecID=1, ROSpec=spec) == 0
        assert await status("ADD_ROSPEC", ROSpecID=1, ROSpec=spec) == 100  # exists
        assert await states() == {1: disabled}
        assert await status("START_ROSPEC", ROSpecID=1) == 101  # not enabled yet
        assert await status("ENABLE_ROSPEC", ROSpecID=1) == 0
        assert await states() == {1: inactive}  # Null start trigger: waits for START
        assert not sim.inventorying
        assert await status("START_ROSPEC", ROSpecID=1) == 0
        assert await states() == {1: active} and sim.inventorying
        assert await status("START_ROSPEC", ROSpecID=1) == 101  # already active
        assert await status("STOP_ROSPEC", ROSpecID=1) == 0
        assert await status("STOP_ROSPEC", ROSpecID=1) == 101  # not active
        assert await status("START_ROSPEC", ROSpecID=0) == 101  # 0 is not an ROSpec
        assert await status("DISABLE_ROSPEC", ROSpecID=1) == 0
        assert await states() == {1: disabled}
        for name in ("ENABLE_ROSPEC", "DISABLE_ROSPEC", "START_ROSPEC", "DELETE_ROSPEC"):
            assert await status(name, ROSpecID=99) == 101  # no such ROSpec
        assert await status("ADD_ROSPEC", ROSpecID=2, ROSpec=rospec(2)) == 0
        assert await status("ENABLE_ROSPEC", ROSpecID=2) == 0  # Immediate: active at once
        assert await states() == {1: disabled, 2: active}
        assert await status("DELETE_ROSPEC", ROSpecID=0) == 0  # all of them
        assert await states() == {}
        assert await status("DELETE_ACCESSSPEC", AccessSpecID=0) == 0
        assert await status("DELETE_ACCESSSPEC", AccessSpecID=7) == 101
        bad = rospec(3, antennas=(9,))  # the reader has 4
        assert await status("ADD_ROSPEC", ROSpecID=3, ROSpec=bad) == 100
        bad = rospec(4) | {"CurrentState": "Active"}  # must be added Disabled
        assert await status("ADD_ROSPEC", ROSpecID=4, ROSpec=bad) == 100


async def test_reports_only_on_the_aispecs_antennas_with_rospec_events() -> None:
    async with LlrpReaderSim(seed=5) as sim, Client(sim.port) as c:
        await inventory(c, antennas=(1,), events=("ROSpecEvent",))
        start = await c.wait(
            lambda f: "ROSpecEvent" in (f.msg or {}).get("ReaderEventNotificationData", {})
        )
        assert event_of(start)["ROSpecEvent"]["EventType"] == "Start_of_ROSpec"
        (truth,) = await sim.run_passes([TagPass(EPC96, "in", (1, 2), duration_s=0.3)], 0.0)
        await c.wait(lambda f: len(c.tag_reports()) == truth.reads_delivered)
        assert set(truth.reads_sent) == {1}
        assert truth.not_delivered > 0  # antenna 2 is not in the AISpec
        assert {t["AntennaID"] for t in c.tag_reports()} == {1}
        assert status_of(await c.request("STOP_ROSPEC", ROSpecID=1)) == 0
        end = await c.wait(
            lambda f: (
                "ROSpecEvent" in (f.msg or {}).get("ReaderEventNotificationData", {})
                and event_of(f)["ROSpecEvent"]["EventType"] == "End_of_ROSpec"
            )
        )
        assert end.id != start.id
        after = await sim.stray(EPC96_B)
        assert after.not_delivered == 1 and after.reads_delivered == 0  # no active ROSpec


def _rospec_events(c: Client) -> list[str]:
    return [
        event_of(f)["ROSpecEvent"]["EventType"]
        for f in c.frames
        if f.type == Msg.READER_EVENT_NOTIFICATION and "ROSpecEvent" in event_of(f)
    ]


async def test_a_periodic_rospec_with_a_duration_runs_again_and_again() -> None:
    async with LlrpReaderSim(seed=26) as sim, Client(sim.port) as c:
        await inventory(c, start="Null", events=("ROSpecEvent",))
        spec = rospec(2)
        spec["ROBoundarySpec"] = {
            "ROSpecStartTrigger": {
                "ROSpecStartTriggerType": "Periodic",
                "PeriodicTriggerValue": {"Offset": 0, "Period": 60},
            },
            "ROSpecStopTrigger": {"ROSpecStopTriggerType": "Duration", "DurationTriggerValue": 20},
        }
        assert status_of(await c.request("ADD_ROSPEC", ROSpecID=2, ROSpec=spec)) == 0
        assert status_of(await c.request("ENABLE_ROSPEC", ROSpecID=2)) == 0
        await c.wait(lambda f: _rospec_events(c).count("End_of_ROSpec") >= 3)
        events = _rospec_events(c)
        assert events[:6] == ["Start_of_ROSpec", "End_of_ROSpec"] * 3
        assert status_of(await c.request("DISABLE_ROSPEC", ROSpecID=2)) == 0
        assert not sim.inventorying


async def test_an_aispec_that_stops_after_n_tags_ends_its_rospec() -> None:
    """As the specification has it (and not as sllurp expects): the ROSpec is done once its
    only AISpec is, and an Immediate start trigger does not start it again."""
    async with LlrpReaderSim(seed=27) as sim, Client(sim.port) as c:
        await c.wait(is_connection_event("Success"))
        spec = rospec(n=0)
        spec["AISpec"][0]["AISpecStopTrigger"] = {
            "AISpecStopTriggerType": "Tag observation",
            "DurationTriggerValue": 0,
            "TagObservationTrigger": {
                "TriggerType": "UponNTags",
                "NumberOfTags": 2,
                "NumberOfAttempts": 0,
                "T": 0,
                "Timeout": 0,
            },
        }
        assert status_of(await c.request("ADD_ROSPEC", ROSpecID=1, ROSpec=spec)) == 0
        assert status_of(await c.request("ENABLE_ROSPEC", ROSpecID=1)) == 0
        first, second = await sim.stray(EPC96, reads=2), await sim.stray(EPC96_B)
        await c.wait(lambda f: len(c.tag_reports()) == 3)  # sent at the end of the AISpec
        assert not sim.inventorying
        assert (first.reads_delivered, second.reads_delivered) == (2, 1)
        assert (await sim.stray(EPC128)).not_delivered == 1


async def test_transmit_power_weakens_what_the_reader_hears_db_for_db() -> None:
    peaks = []
    for power_drop in (0, 20):  # 20 steps of 0.25 dB: 5 dB less
        async with LlrpReaderSim(seed=28) as sim, Client(sim.port) as c:
            await c.wait(is_connection_event("Success"))
            spec = rospec()
            top = len(sim.model.power_table_cdbm)
            for conf in spec["AISpec"][0]["InventoryParameterSpec"][0]["AntennaConfiguration"]:
                conf["RFTransmitter"]["TransmitPower"] = top - power_drop
            assert status_of(await c.request("ADD_ROSPEC", ROSpecID=1, ROSpec=spec)) == 0
            assert status_of(await c.request("ENABLE_ROSPEC", ROSpecID=1)) == 0
            (truth,) = await sim.run_passes([TagPass(EPC96, duration_s=0.2)], miss_share=0.0)
            peaks.append(truth.peak_rssi_sent)
    full, weaker = peaks
    assert weaker == {a: rssi - 5 for a, rssi in full.items()}


async def test_reports_are_batched_by_n_and_a_trickle_is_flushed() -> None:
    async with LlrpReaderSim(seed=6, flush_after_s=0.05) as sim, Client(sim.port) as c:
        await inventory(c, n=5)
        truths = await sim.burst([f"{EPC96[:-2]}{i:02x}" for i in range(12)], (1,), 0.2)
        sent = sum(t.reads_delivered for t in truths)
        await c.wait(lambda f: len(c.tag_reports()) == sent)
        sizes = [
            len((f.msg or {})["TagReportData"]) for f in c.frames if f.type == Msg.RO_ACCESS_REPORT
        ]
        assert sent == sum(sizes) and max(sizes) == 5
        stray = await sim.stray(EPC96)  # one tag, never five: sent after flush_after_s
        assert stray.reads_delivered == 1


async def test_n_zero_holds_reports_until_the_end_of_the_rospec() -> None:
    async with LlrpReaderSim(seed=7) as sim, Client(sim.port) as c:
        await inventory(c, n=0)
        truth = await sim.stray(EPC96, reads=3)
        assert truth.reads_delivered == 0 and not c.tag_reports()
        assert status_of(await c.request("STOP_ROSPEC", ROSpecID=1)) == 0
        await c.wait(lambda f: len(c.tag_reports()) == 3)
        assert truth.reads_delivered == 3


async def test_unsupported_and_malformed_requests_are_answered() -> None:
    async with LlrpReaderSim(seed=8) as sim, Client(sim.port) as c:
        await c.wait(is_connection_event("Success"))
        custom = struct.pack("!IB", 25882, 21) + bytes(4)  # IMPINJ_ENABLE_EXTENSIONS
        error = await c.request_body(Msg.CUSTOM_MESSAGE, custom)
        assert error.type == Msg.ERROR_MESSAGE and status_of(error) == 109
        error = await c.request_body(900)
        assert error.type == Msg.ERROR_MESSAGE and status_of(error) == 109
        error = await c.request_body(Msg.GET_READER_CAPABILITIES, b"\x00", version=3)
        assert error.type == Msg.ERROR_MESSAGE and status_of(error) == 110
        truncated = b"\x00" + struct.pack("!HH", P.KEEPALIVE_SPEC, 9) + b"\x01"
        reply = await c.request_body(Msg.SET_READER_CONFIG, truncated)
        assert reply.type == Msg.SET_READER_CONFIG_RESPONSE and status_of(reply) == 100
        assert reply.msg is not None
        assert reply.msg["LLRPStatus"]["ParameterError"]["ParameterType"] == "KeepaliveSpec"
        reply = await c.request_body(Msg.GET_READER_CONFIG, get_config(antenna=9))
        assert status_of(reply) == 101  # antenna 9
        reply = await c.request_body(Msg.GET_ACCESSSPECS)
        assert reply.type == Msg.GET_ACCESSSPECS_RESPONSE and status_of(reply) == 0
        assert status_of(await c.request("GET_READER_CAPABILITIES", RequestedData=0)) == 0
        # A frame that cannot be framed: the reader says so and hangs up.
        c.writer.write(codec.HEADER.pack((1 << 10) | Msg.GET_READER_CONFIG, 3, 77))
        error = await c.reply(77)
        assert error.type == Msg.ERROR_MESSAGE
        await c.wait_closed()
        await sim.wait_disconnected()


_CLIENT_TYPES = [
    Msg.GET_READER_CAPABILITIES, Msg.GET_READER_CONFIG, Msg.SET_READER_CONFIG,
    Msg.CLOSE_CONNECTION, Msg.ADD_ROSPEC, Msg.DELETE_ROSPEC, Msg.START_ROSPEC,
    Msg.STOP_ROSPEC, Msg.ENABLE_ROSPEC, Msg.DISABLE_ROSPEC, Msg.GET_ROSPECS,
    Msg.ADD_ACCESSSPEC, Msg.DELETE_ACCESSSPEC, Msg.ENABLE_ACCESSSPEC, Msg.DISABLE_ACCESSSPEC,
    Msg.GET_ACCESSSPECS, Msg.GET_SUPPORTED_VERSION, Msg.SET_PROTOCOL_VERSION, Msg.GET_REPORT,
    Msg.ENABLE_EVENTS_AND_REPORTS, Msg.KEEPALIVE_ACK, Msg.CUSTOM_MESSAGE, Msg.KEEPALIVE,
]  # fmt: skip


async def test_client_garbage_never_breaks_the_reader() -> None:
    """Random and mutated bodies of every client message: each gets its response (or none,
    for the messages that have none) and the session goes on."""
    rng = random.Random(9)
    valid = [
        LLRPMessage(msgdict={"ADD_ROSPEC": {"ID": 1, "ROSpecID": 5, "ROSpec": rospec(5)}}),
        LLRPMessage(
            msgdict={
                "SET_READER_CONFIG": {
                    "ID": 1,
                    "KeepaliveSpec": {"KeepaliveTriggerType": 1, "TimeInterval": 5000},
                    "ReaderEventNotificationSpec": {"EventNotificationState": {"GPIEvent": True}},
                }
            }
        ),
    ]
    async with LlrpReaderSim(seed=9) as sim, Client(sim.port) as c:
        await c.wait(is_connection_event("Success"))
        for _ in range(300):
            mtype: int
            if rng.random() < 0.5:
                mtype = rng.choice(_CLIENT_TYPES)
                body = rng.randbytes(rng.randrange(24))
            else:
                base = rng.choice(valid).msgbytes
                mtype = codec.parse_header(base).type
                mutated = bytearray(base[codec.HEADER_LEN :])
                for _ in range(rng.randrange(1, 4)):
                    mutated[rng.randrange(len(mutated))] = rng.randrange(256)
                body = bytes(mutated[: rng.randrange(len(mutated) + 1)])
            if mtype == Msg.CLOSE_CONNECTION and not body:
                continue  # that one would be obeyed
            sent = c.send_body(mtype, body)
            probe = await c.request("GET_READER_CAPABILITIES", RequestedData=1)
            assert status_of(probe) == 0, "the reader stopped answering"
            answers = [f for f in c.frames if f.id == sent and f.type in RESPONSE_TYPES]
            assert len(answers) <= 1
        assert sim.connected and sim.sessions == 1


async def test_close_connection_is_answered_then_announced_then_closed() -> None:
    async with LlrpReaderSim(seed=10) as sim, Client(sim.port) as c:
        await c.wait(is_connection_event("Success"))
        reply = await c.request("CLOSE_CONNECTION")
        assert reply.type == Msg.CLOSE_CONNECTION_RESPONSE and status_of(reply) == 0
        await c.wait_closed()
        close = c.frames[-1]
        assert close.type == Msg.READER_EVENT_NOTIFICATION
        assert "ConnectionCloseEvent" in event_of(close)
        assert not c.reset
        await sim.wait_disconnected()


async def test_protocol_version_is_negotiated() -> None:
    async with LlrpReaderSim(seed=11) as sim, Client(sim.port) as c:
        await c.wait(is_connection_event("Success"))
        reply = await c.request_body(Msg.GET_SUPPORTED_VERSION, version=2)
        assert reply.type == Msg.GET_SUPPORTED_VERSION_RESPONSE and reply.body[:2] == b"\x01\x02"
        reply = await c.request_body(Msg.SET_PROTOCOL_VERSION, b"\x02", version=2)
        assert status_of(reply) == 0
        reply = await c.request_body(Msg.GET_READER_CAPABILITIES, b"\x01", version=2)
        assert reply.version == 2 and status_of(reply) == 0
        error = await c.request_body(Msg.GET_READER_CAPABILITIES, b"\x01", version=1)
        assert error.type == Msg.ERROR_MESSAGE and status_of(error) == 110
        reply = await c.request_body(Msg.SET_PROTOCOL_VERSION, b"\x03", version=2)
        assert status_of(reply) == 110
        assert sim.connected


async def test_keepalives_at_the_interval_until_stopped() -> None:
    async with LlrpReaderSim(seed=12) as sim, Client(sim.port) as c:
        await inventory(c, keepalive_ms=30)
        await c.wait(lambda f: sum(f.type == Msg.KEEPALIVE for f in c.frames) >= 3)
        keepalive = next(f for f in c.frames if f.type == Msg.KEEPALIVE)
        c.send("KEEPALIVE_ACK", ID=keepalive.id)
        await sim.wait_for(lambda: sim.keepalive_acks == 1)
        sim.keepalives_enabled = False
        before = sim.keepalives_sent
        await asyncio.sleep(0.2)  # an observation window: nothing may come in it
        assert sim.keepalives_sent == before
        assert status_of(await c.request("GET_READER_CAPABILITIES", RequestedData=1)) == 0


async def test_a_silent_reader_keeps_tcp_up_and_answers_nothing() -> None:
    async with LlrpReaderSim(seed=13) as sim, Client(sim.port) as c:
        await inventory(c, keepalive_ms=20)
        await c.wait(lambda f: f.type == Msg.KEEPALIVE)
        sim.silent = True
        frames = len(c.frames)
        msg_id = c.send("GET_READER_CAPABILITIES", RequestedData=1)
        with pytest.raises(TimeoutError):
            await c.reply(msg_id, timeout=0.2)  # 10 keepalive intervals
        truth = await sim.stray(EPC96)
        assert truth.not_delivered == 1 and not c.tag_reports()
        assert sim.connected and not c.closed and len(c.frames) == frames  # nothing at all
        sim.silent = False
        assert status_of(await c.request("GET_READER_CAPABILITIES", RequestedData=1)) == 0


async def test_an_abrupt_drop_is_a_reset() -> None:
    async with LlrpReaderSim(seed=14) as sim, Client(sim.port) as c:
        await inventory(c)
        assert sim.drop_connection()
        await c.wait_closed()
        assert c.reset
        await sim.wait_disconnected()
        assert not sim.drop_connection()
        truth = await sim.stray(EPC96)
        assert truth.not_delivered == 1  # nobody connected


async def test_garbage_and_malformed_frames_reach_the_client() -> None:
    async with LlrpReaderSim(seed=15) as sim:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        try:
            await sim.wait_connected()
            head = await reader.readexactly(10)  # the ConnectionAttemptEvent
            await reader.readexactly(codec.parse_header(head).length - 10)
            sent = await sim.send_garbage(b"\xde\xad\xbe\xef")
            assert await reader.readexactly(len(sent)) == b"\xde\xad\xbe\xef"
            frame = await sim.send_malformed("parameter")
            got = await reader.readexactly(len(frame))
            with pytest.raises(codec.LlrpError):
                codec.split_params(got[10:], None)  # the TagReportData overruns the message
            frame = await sim.send_malformed("length")
            assert codec.parse_header(await reader.readexactly(10)).length == 4 == len(frame) - 6
        finally:
            writer.close()
            await writer.wait_closed()


async def test_refused_connections_then_accepted() -> None:
    async with LlrpReaderSim(seed=16) as sim:
        sim.refuse_next(2)
        for _ in range(2):
            async with Client(sim.port) as c:
                await c.wait(
                    is_connection_event("Failed (a Client initiated connection already exists)")
                )
                await c.wait_closed()
        async with Client(sim.port) as c:
            await c.wait(is_connection_event("Success"))
        assert (sim.connection_attempts, sim.refused, sim.sessions) == (3, 2, 1)


async def test_a_stale_session_refuses_reconnects_for_stale_s() -> None:
    async with LlrpReaderSim(seed=17) as sim:
        sim.stale_s = 0.3
        async with Client(sim.port) as c:
            await c.wait(is_connection_event("Success"))
            dropped = asyncio.get_running_loop().time()
            sim.drop_connection()
            await c.wait_closed()
        attempts = 0
        while True:  # a client retrying, 50 ms apart
            attempts += 1
            async with Client(sim.port) as c:
                first = await c.wait(lambda f: f.type == Msg.READER_EVENT_NOTIFICATION)
                if is_connection_event("Success")(first):
                    break
                await c.wait_closed()
            await asyncio.sleep(0.05)
        assert asyncio.get_running_loop().time() - dropped >= 0.3
        assert attempts > 1 and sim.refused == attempts - 1 and sim.sessions == 2


async def test_restart_listens_again_on_the_same_port_with_factory_state() -> None:
    async with LlrpReaderSim(seed=18) as sim:
        port = sim.port
        async with Client(port) as c:
            await inventory(c, keepalive_ms=1000)
            await sim.restart()
            await c.wait_closed()
        assert sim.port == port and not sim.rospecs
        async with Client(port) as c:
            await c.wait(is_connection_event("Success"))
            reply = await c.request_body(Msg.GET_READER_CONFIG, get_config(requested=8))
            assert reply.msg is not None
            assert reply.msg["KeepaliveSpec"]["KeepaliveTriggerType"] == "Null"
            assert _rospec_states(await c.request_body(Msg.GET_ROSPECS)) == {}
        assert sim.sessions == 2


async def test_a_burst_of_500_tags_is_fully_reported() -> None:
    epcs = [f"3074257bf7194e40000{i:05x}" for i in range(500)]
    async with LlrpReaderSim(seed=19) as sim, Client(sim.port) as c:
        await inventory(c, n=100)
        truths = await sim.burst(epcs, antennas=(1, 2), duration_s=0.5)
        sent = sum(t.reads_delivered for t in truths)
        await c.wait(lambda f: len(c.tag_reports()) == sent, timeout=5)
    seen = {(t["EPC"].decode(), t["AntennaID"]) for t in c.tag_reports()}
    assert seen == {(e, a) for e in epcs for a in (1, 2)}
    assert all(t.not_delivered == 0 and t.missed == 0 for t in truths)


def _count_tag_reports(frame: bytes) -> int:
    count, pos = 0, codec.HEADER_LEN
    while pos < len(frame):
        ptype, length = struct.unpack_from("!HH", frame, pos)
        count += ptype == P.TAG_REPORT_DATA
        pos += length
    return count


async def test_a_flood_sends_every_read_it_was_asked_for() -> None:
    async with LlrpReaderSim(seed=20) as sim:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        received = 0

        async def count() -> None:
            nonlocal received
            while True:
                head = await reader.readexactly(10)
                frame = head + await reader.readexactly(codec.parse_header(head).length - 10)
                if codec.parse_header(head).type == Msg.RO_ACCESS_REPORT:
                    received += _count_tag_reports(frame)

        counter = asyncio.create_task(count())
        try:
            await sim.wait_connected()
            body = LLRPMessage(
                msgdict={"ADD_ROSPEC": {"ID": 1, "ROSpecID": 1, "ROSpec": rospec(n=500)}}
            ).msgbytes
            writer.write(body + codec.message(Msg.ENABLE_ROSPEC, 2, struct.pack("!I", 1)))
            await sim.wait_inventorying()
            sent = await sim.flood(reads_per_s=20_000, duration_s=0.25)
            await sim.wait_for(lambda: received == sent, timeout=5)
        finally:
            counter.cancel()
            writer.close()
            await writer.wait_closed()
    assert sent >= 5_000 and sim.reports_sent >= 5_000


# --- GPIO ----------------------------------------------------------------------------------------


def _gpi_trigger_rospec(port: int) -> bytes:
    """An ADD_ROSPEC body sllurp cannot encode: started while GPI `port` is high, stopped when
    it goes low (TLVs by hand, from the specification)."""
    gpi_high = codec.tlv(P.GPI_TRIGGER_VALUE, struct.pack("!HBI", port, 0x80, 0))
    gpi_low = codec.tlv(P.GPI_TRIGGER_VALUE, struct.pack("!HBI", port, 0x00, 0))
    boundary = codec.tlv(
        P.RO_BOUNDARY_SPEC,
        codec.tlv(P.RO_SPEC_START_TRIGGER, b"\x03", gpi_high),
        codec.tlv(P.RO_SPEC_STOP_TRIGGER, struct.pack("!BI", 2, 0), gpi_low),
    )
    aispec = codec.tlv(
        P.AI_SPEC,
        struct.pack("!HH", 1, 1),
        codec.tlv(P.AI_SPEC_STOP_TRIGGER, struct.pack("!BI", 0, 0)),
        codec.tlv(P.INVENTORY_PARAMETER_SPEC, struct.pack("!HB", 1, 1)),
    )
    report = codec.ro_report_spec(codec.ReportSpec(1, 1))
    return codec.tlv(P.RO_SPEC, struct.pack("!IBB", 7, 0, 0), boundary, aispec, report)


async def test_gpi_events_gpi_triggers_and_gpo_writes() -> None:
    async with LlrpReaderSim(seed=21) as sim, Client(sim.port) as c:
        await c.wait(is_connection_event("Success"))
        events = {"ReaderEventNotificationSpec": {"EventNotificationState": {"GPIEvent": True}}}
        assert status_of(await c.request("SET_READER_CONFIG", **events)) == 0
        gpo = b"\x00" + codec.gpo_write_data(2, True) + codec.gpo_write_data(3, False)
        assert status_of(await c.request_body(Msg.SET_READER_CONFIG, gpo)) == 0
        assert sim.gpo_state == {1: False, 2: True, 3: False, 4: False}
        assert [(w.port, w.state) for w in sim.gpo_history] == [(2, True), (3, False)]
        bad = b"\x00" + codec.gpo_write_data(9, True)
        assert status_of(await c.request_body(Msg.SET_READER_CONFIG, bad)) == 100
        assert status_of(await c.request_body(Msg.ADD_ROSPEC, _gpi_trigger_rospec(1))) == 0
        assert status_of(await c.request("ENABLE_ROSPEC", ROSpecID=7)) == 0
        assert not sim.inventorying
        await sim.set_gpi(1, True)
        event = await c.wait(
            lambda f: "GPIEvent" in (f.msg or {}).get("ReaderEventNotificationData", {})
        )
        assert event_of(event)["GPIEvent"] == {"GPIPortNumber": 1, "GPIEvent": True}
        assert sim.inventorying
        reply = await c.request_body(Msg.GET_READER_CONFIG, get_config(requested=9, gpi=1))
        assert reply.msg is not None
        assert reply.msg["GPIPortCurrentState"][0]["GPIState"] in ("High", 1)
        await sim.set_gpi(1, False)
        assert not sim.inventorying
        with pytest.raises(ValueError, match="GPI port 5"):
            await sim.set_gpi(5, True)


async def test_held_events_and_reports_wait_for_enable_events_and_reports() -> None:
    async with LlrpReaderSim(seed=22) as sim:
        async with Client(sim.port) as c:
            await inventory(c)
            hold = b"\x00" + codec.events_and_reports(True)
            assert status_of(await c.request_body(Msg.SET_READER_CONFIG, hold)) == 0
        await sim.wait_disconnected()
        truth = await sim.stray(EPC96, reads=2)  # while nobody is connected: held
        async with Client(sim.port) as c:
            await c.wait(is_connection_event("Success"))
            assert status_of(await c.request("GET_READER_CAPABILITIES", RequestedData=1)) == 0
            assert not c.tag_reports()
            c.send_body(Msg.ENABLE_EVENTS_AND_REPORTS)
            await c.wait(lambda f: len(c.tag_reports()) == 2)
        assert truth.reads_delivered == 2 and truth.not_delivered == 0


async def test_timestamps_follow_the_readers_clock() -> None:
    async with LlrpReaderSim(seed=23, clock_offset_s=3600.0) as sim, Client(sim.port) as c:
        await inventory(c)
        truth = await sim.stray(EPC96)
        await c.wait(lambda f: len(c.tag_reports()) == 1)
    (tag,) = c.tag_reports()
    assert abs(tag["FirstSeenTimestampUTC"] / 1e6 - 3600.0 - truth.start_s) < 0.5


# --- scenarios and the command line --------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((REPO / "simulators/scenarios").glob("portal-*.yaml")))
def test_bundled_portal_scenarios_plan(path: Path) -> None:
    scenario = PortalScenario.from_yaml(path)
    planned, floods = items_of(scenario)
    reads, truths = plan(planned, scenario.physics, scenario.seed)
    again, _ = plan(planned, scenario.physics, scenario.seed)
    assert reads == again  # seeded
    assert scenario.items and 0 < scenario.length_s() < 120
    assert all(t.planned > 0 for t in truths)
    assert reads or floods


def test_scenario_errors_say_where() -> None:
    with pytest.raises(ValueError, match=r"items\[0\]: unknown kind 'tunnel'"):
        PortalScenario.from_dict({"items": [{"kind": "tunnel"}]})
    with pytest.raises(ValueError, match="unknown fields: speed"):
        PortalScenario.from_dict({"items": [{"kind": "pass", "epc": EPC96, "speed": 1}]})


async def test_a_scenario_plays_passes_and_floods_together() -> None:
    doc = {
        "seed": 5,
        "physics": {"miss_share": 0.1},
        "items": [
            {"kind": "units", "count": 3, "interval_s": 0.1, "duration_s": 0.3},
            {"kind": "flood", "reads_per_s": 2000, "duration_s": 0.2, "tags": 50},
            {"kind": "stray", "epc": EPC96, "antenna": 3, "at_s": 0.1},
        ],
    }
    async with LlrpReaderSim(seed=24) as sim, Client(sim.port) as c:
        await inventory(c, antennas=(1, 2, 3), n=50)
        truths = await sim.run_scenario(PortalScenario.from_dict(doc))
        assert [t.kind for t in truths] == ["pass", "pass", "pass", "stray"]
        total = sum(t.reads_delivered for t in truths) + 400
        await c.wait(lambda f: len(c.tag_reports()) == total, timeout=5)


class Cli:
    """`python -m simulators.llrp` as a child process, stdout read line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulators.llrp", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )

    def readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


async def test_the_command_line_serves_a_scenario_until_ctrl_c(tmp_path: Path) -> None:
    scenario = tmp_path / "one.yaml"
    scenario.write_text(f"items:\n  - {{kind: stray, epc: {EPC96}, reads: 2}}\n")
    cli = Cli("--model", "zebra-fx9600", "--port", "0", "--scenario", str(scenario))
    try:
        first = await asyncio.to_thread(cli.readline)
        assert first.startswith("llrp reader zebra-fx9600 listening on 127.0.0.1:")
        async with Client(int(first.rsplit(":", 1)[1])) as c:
            await inventory(c, model="zebra-fx9600")
            await c.wait(lambda f: len(c.tag_reports()) == 2)
            assert [await asyncio.to_thread(cli.readline) for _ in range(2)] == [
                "waiting for a client to start inventory\n",
                "scenario played: 1 tags, 2 reads sent, 0 not delivered\n",
            ]
        cli.proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.to_thread(cli.proc.communicate, timeout=10)
        assert cli.proc.returncode == 0 and out.strip().endswith("stopped")
    finally:
        cli.close()


# --- Wireshark's dissector as the second parser --------------------------------------------------

TSHARK = shutil.which("tshark")
# Wireshark 4.0 (Debian 12) counts the Identification parameter 2 bytes short: it skips the
# ReaderID's byte count (an u8v: 16-bit count, then the bytes), which the specification and
# sllurp both read. Only this expert message, on this parameter, is excused.
_IDENTIFICATION_MISCOUNT = re.compile(
    r"Incorrect length of parameter: (\d+) bytes decoded, but (\d+) bytes claimed\."
)
READER_TYPES = {63, 11, 12, 56, 13, 30, 34, 32, 61, 62, 100, 36, 33, 35, 31, 51, 4}
CLIENT_TYPES = {1, 2, 46, 3, 20, 24, 22, 72, 1023, 26, 23, 25, 21, 41, 14}


class Capture:
    """tshark capturing one TCP port on loopback into a file, its packet lines read live so
    that the test knows when the capture runs and when it has seen everything."""

    def __init__(self, port: int, path: Path) -> None:
        self.port, self.path = port, path
        self.lines: list[str] = []
        self._printed = asyncio.Event()

    async def __aenter__(self) -> Capture:
        assert TSHARK is not None
        self.proc = await asyncio.create_subprocess_exec(
            TSHARK, "-i", "lo", "-f", f"tcp port {self.port} or udp port {self.port}",
            "-w", str(self.path), "-P", "-l",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stderr is not None and self.proc.stdout is not None
        self._lines = asyncio.create_task(self._read(self.proc.stdout))
        said = b""
        async with asyncio.timeout(20):
            while b"Capturing on" not in said:
                line = await self.proc.stderr.readline()
                assert line, (
                    f"tshark cannot capture on lo: {said.decode()} (as a user: be in the group "
                    "wireshark, see `dpkg-reconfigure wireshark-common`)"
                )
                said += line
        await self.mark()  # the filter is in place once a marker shows up
        return self

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.lines.append(line.decode())
            self._printed.set()

    async def mark(self) -> None:
        """A UDP datagram to the port, sent until tshark prints it: what went before it is in
        the capture."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=("127.0.0.1", self.port)
        )
        try:
            async with asyncio.timeout(10):
                while True:
                    seen = len(self.lines)
                    transport.sendto(b"tracegate-marker")
                    # Until tshark prints the marker; again after 100 ms (its filter may not
                    # have been in place yet).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.1):
                            while not any(" UDP " in line for line in self.lines[seen:]):
                                self._printed.clear()
                                await self._printed.wait()
                            return
        finally:
            transport.close()

    async def __aexit__(self, *exc: object) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)  # tshark closes the file properly
        await self.proc.wait()
        await self._lines


def _event_params(frame: Frame) -> set[int]:
    """The parameter types inside a READER_EVENT_NOTIFICATION, read by hand."""
    if frame.type != Msg.READER_EVENT_NOTIFICATION:
        return set()
    data = frame.body[4:]  # inside ReaderEventNotificationData
    types, pos = set(), 0
    while pos + 4 <= len(data):
        ptype, length = struct.unpack_from("!HH", data, pos)
        types.add(ptype & 0x3FF)
        pos += max(length, 4)
    return types


def _dissect(path: Path, port: int) -> list[dict[str, list[str]]]:
    assert TSHARK is not None
    fields = ["llrp.type", "_ws.malformed", "_ws.expert.message", "_ws.expert.severity"]
    fields += ["llrp.tlv_type", "llrp.tv_type", "llrp.param.reader_id"]
    out = subprocess.run(
        [TSHARK, "-r", str(path), "-d", f"tcp.port=={port},llrp", "-Y", "llrp", "-T", "fields",
         "-E", "occurrence=a", "-E", "aggregator=|", "-E", "separator=/t",
         *[arg for f in fields for arg in ("-e", f)]],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    rows = []
    for line in out.splitlines():
        values = line.split("\t")
        rows.append({f: (v.split("|") if v else []) for f, v in zip(fields, values, strict=True)})
    return rows


@pytest.mark.skipif(
    TSHARK is None,
    reason="tshark is not installed (Debian package tshark; `make test-tools` installs it)",
)
async def test_wiresharks_dissector_decodes_a_whole_session(tmp_path: Path) -> None:
    pcap = tmp_path / "llrp.pcapng"
    async with LlrpReaderSim(seed=25) as sim, Capture(sim.port, pcap) as capture:
        async with Client(sim.port) as c:
            await c.wait(is_connection_event("Success"))
            for name, fields in (
                ("GET_READER_CAPABILITIES", {"RequestedData": 0}),
                ("GET_READER_CONFIG", {"RequestedData": 0}),
                ("DELETE_ACCESSSPEC", {"AccessSpecID": 0}),
            ):
                assert status_of(await c.request(name, **fields)) == 0
            await c.request_body(Msg.GET_SUPPORTED_VERSION, version=2)
            config = (
                b"\x00"
                + codec.event_notification_spec({1: True, 2: True})
                + codec.keepalive_spec(1, 40)
                + codec.gpo_write_data(1, True)
            )
            assert status_of(await c.request_body(Msg.SET_READER_CONFIG, config)) == 0
            spec = rospec(start="Null", n=2)
            assert status_of(await c.request("ADD_ROSPEC", ROSpecID=1, ROSpec=spec)) == 0
            assert status_of(await c.request("ADD_ROSPEC", ROSpecID=1, ROSpec=spec)) != 0
            assert status_of(await c.request("ENABLE_ROSPEC", ROSpecID=1)) == 0
            assert status_of(await c.request("START_ROSPEC", ROSpecID=9)) != 0
            assert status_of(await c.request("START_ROSPEC", ROSpecID=1)) == 0
            await sim.stray(EPC96)
            await sim.stray(EPC128)
            keepalive = await c.wait(lambda f: f.type == Msg.KEEPALIVE)
            c.send("KEEPALIVE_ACK", ID=keepalive.id)
            await sim.set_gpi(1, True)
            await c.wait(lambda f: P.GPI_EVENT in _event_params(f))
            custom = struct.pack("!IB", 25882, 21) + bytes(4)
            assert (await c.request_body(Msg.CUSTOM_MESSAGE, custom)).type == Msg.ERROR_MESSAGE
            await c.request_body(Msg.GET_ROSPECS)
            for name in ("STOP_ROSPEC", "DISABLE_ROSPEC", "DELETE_ROSPEC"):
                assert status_of(await c.request(name, ROSpecID=1)) == 0
            assert status_of(await c.request("CLOSE_CONNECTION")) == 0
            await c.wait_closed()
        await capture.mark()
    rows = _dissect(pcap, sim.port)
    types = {int(t) for row in rows for t in row["llrp.type"]}
    assert types >= READER_TYPES | CLIENT_TYPES, sorted(READER_TYPES | CLIENT_TYPES - types)
    assert {"13"} <= {t for row in rows for t in row["llrp.tv_type"]}  # EPC-96
    assert {"241", "240"} <= {t for row in rows for t in row["llrp.tlv_type"]}  # EPCData
    problems = []
    for row in rows:
        experts = zip(row["_ws.expert.message"], row["_ws.expert.severity"], strict=True)
        serious = [m for m, severity in experts if int(severity, 0) >= 0x00600000]  # warn, error
        excused = [m for m in serious if _identification_miscount(m, row["llrp.param.reader_id"])]
        assert len(row["_ws.malformed"]) <= len(excused), row
        problems += [m for m in serious if m not in excused]
    assert not problems


def _identification_miscount(message: str, reader_ids: list[str]) -> bool:
    found = _IDENTIFICATION_MISCOUNT.fullmatch(message)
    if found is None or not reader_ids:
        return False
    size = 4 + 1 + 2 + len(reader_ids[0]) // 2  # header, IDType, count, ReaderID bytes
    return (int(found[1]), int(found[2])) == (size - 2, size)
