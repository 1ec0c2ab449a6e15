"""The LLRP reader simulator judged by independent implementations of LLRP: sllurp's threaded
client reading portal passes and configuring every reader model, and Wireshark's LLRP
dissector decoding a whole session without an error."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sllurp.llrp import LLRPReaderClient, LLRPReaderConfig, LLRPReaderState

from simulators import llrp_codec as codec
from simulators.llrp import READER_MODELS, LlrpReaderSim, TagPass
from simulators.llrp_codec import Msg, P
from tests.helpers_llrp import (
    ALL_FIELDS,
    EPC96,
    EPC96_B,
    EPC128,
    Client,
    Frame,
    is_connection_event,
    rospec,
    status_of,
)

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
