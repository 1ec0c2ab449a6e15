"""What the reader simulator's tests share: a bare LLRP client over TCP that speaks the
specification's bytes (no client library in between), and request builders."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from sllurp.llrp import LLRPMessage
from sllurp.llrp_errors import LLRPError
from sllurp.llrp_proto import LLRPROSpec

from simulators import llrp_codec as codec
from simulators.llrp import READER_MODELS
from simulators.llrp_codec import Msg, P

REPO = Path(__file__).resolve().parent.parent
# Any TagReportContentSelector: each field on or off.
CONTENT_SELECTORS = st.builds(
    codec.ContentSelector, **{f.name: st.booleans() for f in fields(codec.ContentSelector)}
)
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


def rospec_states(frame: Frame) -> dict[int, int]:
    """ROSpecID -> CurrentState of a GET_ROSPECS_RESPONSE (sllurp cannot decode it)."""
    states = {}
    for param in codec.split_params(frame.body, None):
        if param.type == P.RO_SPEC:
            spec_id, _priority, state = struct.unpack_from("!IBB", param.body)
            states[spec_id] = state
    return states
