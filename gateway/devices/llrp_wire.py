"""LLRP on the wire, where sllurp is too slow or incomplete: cutting the TCP stream into
messages, decoding tag reports into `TagRead`s, and encoding the few messages the adapter sends
itself once the reader is configured (gateway.devices.llrp drives sllurp for the rest).

Every LLRP message starts with a 10-byte header `!HII`: 3 reserved bits, a 3-bit version and a
10-bit type; the length of the whole message, header included; a message ID, echoed by the
reader in its response. Parameters are TLV (`!HH` type and length, length including those 4
bytes) or, for the small fixed-size ones of a tag report, TV (one byte: top bit set, 7-bit type,
then a value whose size the type fixes).

Pure: bytes in, values out. sllurp is the test oracle of both directions (tests/test_llrp.py).
"""

from __future__ import annotations

import struct
from typing import Final

from gateway.events import TagRead

HEADER: Final = struct.Struct("!HII")
HEADER_LEN: Final = HEADER.size
VERSION: Final = 1  # LLRP 1.0.1, what sllurp speaks; readers answer in the client's version
# A bound on one message, so a corrupt length cannot make the buffer grow without limit. The
# largest real messages are tag reports of a reader that buffered while the link was down:
# about 40 bytes a tag, so this is some 400,000 tags.
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024

# Message types (LLRP 1.0.1 section 16.1).
GET_READER_CONFIG: Final = 2
SET_READER_CONFIG: Final = 3
DELETE_ROSPEC: Final = 21
START_ROSPEC: Final = 22
STOP_ROSPEC: Final = 23
DELETE_ACCESSSPEC: Final = 41
RO_ACCESS_REPORT: Final = 61
KEEPALIVE: Final = 62
READER_EVENT_NOTIFICATION: Final = 63
KEEPALIVE_ACK: Final = 72
ERROR_MESSAGE: Final = 100
CUSTOM_MESSAGE: Final = 1023

# What a reader sends (LLRP 1.1 section 17.1.1): responses, reports, events, errors. A header
# naming anything else is not a message boundary (garbage, or a stream out of step).
FROM_READER: Final = frozenset(
    {4, 11, 12, 13, 30, 31, 32, 33, 34, 35, 36, 45, 50, 51, 52, 53, 54, 56, 57, 61, 62, 63, 100,
     1023}
)  # fmt: skip

# Parameter types used below.
TAG_REPORT_DATA: Final = 240
EPC_DATA: Final = 241
GPO_WRITE_DATA: Final = 219
# TV parameters: type -> size of the value (LLRP 1.0.1 section 16.2.7.3 and 16.3.1.5).
TV_ANTENNA_ID: Final = 1
TV_FIRST_SEEN_UTC: Final = 2
TV_LAST_SEEN_UTC: Final = 4
TV_PEAK_RSSI: Final = 6
TV_TAG_SEEN_COUNT: Final = 8
TV_EPC_96: Final = 13
TV_SIZES: Final = {
    1: 2,  # AntennaID
    2: 8,  # FirstSeenTimestampUTC (microseconds since the epoch)
    3: 8,  # FirstSeenTimestampUptime (microseconds since the reader booted)
    4: 8,  # LastSeenTimestampUTC
    5: 8,  # LastSeenTimestampUptime
    6: 1,  # PeakRSSI (signed, dBm)
    7: 2,  # ChannelIndex
    8: 2,  # TagSeenCount
    9: 4,  # ROSpecID
    10: 2,  # InventoryParameterSpecID
    11: 2,  # C1G2CRC
    12: 2,  # C1G2PC
    13: 12,  # EPC-96
    14: 2,  # SpecIndex
    15: 2,  # ClientRequestOpSpecResult
    16: 4,  # AccessSpecID
    17: 2,  # OpSpecID
    18: 4,  # C1G2SingulationDetails
    19: 2,  # C1G2XPCW1
    20: 2,  # C1G2XPCW2
}

_TLV: Final = struct.Struct("!HH")
_U16: Final = struct.Struct("!H").unpack_from
_U64: Final = struct.Struct("!Q").unpack_from
_I8: Final = struct.Struct("!b").unpack_from
_U32_PACK: Final = struct.Struct("!I").pack


class FrameError(ValueError):
    """The stream cannot be cut into messages any more (a corrupt length)."""


class ReportError(ValueError):
    """A tag report that cannot be decoded; the message boundary is intact."""


Frame = tuple[int, int, int, bytes]  # type, version, message ID, the whole message


class Splitter:
    """Cuts a byte stream into whole LLRP messages."""

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._max = max_bytes
        self._pending = bytearray()
        self._need = 0  # bytes the pending message needs in all; 0 while its header is short
        # Set at the first header that cannot be right: nothing after it can be trusted, but
        # the whole messages before it are (a reader's last answer, then garbage, in one read).
        self.error: FrameError | None = None

    @property
    def buffered(self) -> int:
        return len(self._pending)

    def feed(self, data: bytes) -> list[Frame]:
        """The messages completed by `data`, in order, up to a header that cannot be right
        (then `error` is set, and nothing more is ever returned)."""
        if self.error is not None:
            return []
        if self._pending:
            self._pending += data
            if self._need and len(self._pending) < self._need:
                return []  # a long message arriving in pieces: no copy until it is whole
            data = bytes(self._pending)
            self._pending.clear()
        frames: list[Frame] = []
        unpack, max_bytes = HEADER.unpack_from, self._max
        pos, end = 0, len(data)
        while end - pos >= HEADER_LEN:
            type_version, length, message_id = unpack(data, pos)
            mtype, version = type_version & 0x3FF, (type_version >> 10) & 7
            bad = None
            if length < HEADER_LEN or length > max_bytes:
                bad = f"message length {length}"
            elif type_version >> 13 or version not in (1, 2) or mtype not in FROM_READER:
                bad = f"no LLRP message from a reader: version {version}, type {mtype}"
            if bad is not None:
                self.error = FrameError(f"{bad} (header {data[pos : pos + 10].hex()})")
                self._pending.clear()
                return frames
            if pos + length > end:
                self._need = length
                break
            frames.append((mtype, version, message_id, data[pos : pos + length]))
            pos += length
        else:
            self._need = 0
        if pos < end:
            self._pending += memoryview(data)[pos:]
        return frames


def tag_reads(frame: bytes, device: str, now: float) -> tuple[list[TagRead], int]:
    """The tag reports of an RO_ACCESS_REPORT message, and how many TagReportData carried no
    EPC (skipped). Timestamps by the reader's UTC clock (the uptime variants are ignored: no
    epoch to put them on). Raises ReportError on a malformed report.

    This is the hot path of the adapter: sllurp's generic decoder builds a dict per parameter
    and copies the rest of the message at each of them (quadratic in the report size), about
    ten times slower than this loop."""
    reads: list[TagRead] = []
    skipped = 0
    end = len(frame)
    pos = HEADER_LEN
    tlv = _TLV.unpack_from
    try:
        while pos < end:
            if frame[pos] & 0x80:
                raise ReportError(f"TV parameter {frame[pos] & 0x7F} outside a tag report")
            ptype, plen = tlv(frame, pos)
            pend = pos + plen
            if plen < 4 or pend > end:
                raise ReportError(f"parameter {ptype & 0x3FF} of length {plen} at {pos}")
            if ptype & 0x3FF == TAG_REPORT_DATA:
                read = _tag_report_data(frame, pos + 4, pend, device, now)
                if read is None:
                    skipped += 1
                else:
                    reads.append(read)
            pos = pend  # anything else (RFSurveyReportData, custom parameters) is skipped
    except struct.error as exc:
        raise ReportError(f"truncated parameter at {pos}: {exc}") from None
    return reads, skipped


# One branch per TV type, in the order readers send them: faster than a dispatch table here.
def _tag_report_data(  # noqa: PLR0912
    frame: bytes, pos: int, end: int, device: str, now: float
) -> TagRead | None:
    epc: str | None = None
    antenna: int | None = None
    rssi: float | None = None
    count = 1
    first: float | None = None
    last: float | None = None
    while pos < end:
        head = frame[pos]
        if head & 0x80:
            ptype = head & 0x7F
            if ptype == TV_EPC_96:
                epc = frame[pos + 1 : pos + 13].hex()
                pos += 13
            elif ptype == TV_ANTENNA_ID:
                antenna = _U16(frame, pos + 1)[0]
                pos += 3
            elif ptype == TV_PEAK_RSSI:
                rssi = float(_I8(frame, pos + 1)[0])
                pos += 2
            elif ptype == TV_LAST_SEEN_UTC:
                last = _U64(frame, pos + 1)[0] / 1e6
                pos += 9
            elif ptype == TV_FIRST_SEEN_UTC:
                first = _U64(frame, pos + 1)[0] / 1e6
                pos += 9
            elif ptype == TV_TAG_SEEN_COUNT:
                count = _U16(frame, pos + 1)[0]
                pos += 3
            else:
                size = TV_SIZES.get(ptype)
                if size is None:
                    raise ReportError(f"unknown TV parameter {ptype} in a tag report")
                pos += 1 + size
        else:
            ptype, plen = _TLV.unpack_from(frame, pos)
            if plen < 4 or pos + plen > end:
                raise ReportError(f"parameter {ptype & 0x3FF} of length {plen} in a tag report")
            if ptype & 0x3FF == EPC_DATA:
                bits = _U16(frame, pos + 4)[0]
                size = (bits + 7) // 8
                if 6 + size > plen:
                    raise ReportError(f"EPCData of {bits} bits in {plen - 6} bytes")
                epc = frame[pos + 6 : pos + 6 + size].hex()
            pos += plen  # OpSpec results, vendor parameters: not ours
    if pos != end:
        raise ReportError("a TV parameter runs past the end of its tag report")
    if epc is None:
        return None
    return TagRead(device, now, epc, antenna, rssi, count, first, last)


# --- messages the adapter sends itself ---------------------------------------------------------


def message(msg_type: int, message_id: int, body: bytes = b"") -> bytes:
    return HEADER.pack((VERSION << 10) | msg_type, HEADER_LEN + len(body), message_id) + body


def keepalive_ack(message_id: int) -> bytes:
    """The answer to a KEEPALIVE, with the KEEPALIVE's own message ID (sllurp answers with a
    new ID of its own; a reader that checks its keepalives are answered, such as an Impinj
    with LinkMonitorMode on, matches them by ID)."""
    return message(KEEPALIVE_ACK, message_id)


def rospec_command(msg_type: int, message_id: int, rospec_id: int) -> bytes:
    """START_ROSPEC, STOP_ROSPEC or DELETE_ROSPEC (0 deletes all)."""
    return message(msg_type, message_id, _U32_PACK(rospec_id))


def delete_all_accessspecs(message_id: int) -> bytes:
    return message(DELETE_ACCESSSPEC, message_id, _U32_PACK(0))


def get_reader_config_all(message_id: int) -> bytes:
    """GET_READER_CONFIG of everything, all antennas and ports. The body is AntennaID (16
    bits), RequestedData (8), GPIPortNum (16), GPOPortNum (16) in that order (LLRP 1.0.1
    section 16.1.3); sllurp packs RequestedData first, which only works because it sends
    zeros."""
    return message(GET_READER_CONFIG, message_id, bytes(7))


def set_gpo(message_id: int, port: int, state: bool) -> bytes:
    """SET_READER_CONFIG with one GPOWriteData. sllurp has no encoder for GPOWriteData: its
    encoder skips the parameter with a log line and sends a SET_READER_CONFIG that changes
    nothing, which the reader acknowledges as a success."""
    gpo = _TLV.pack(GPO_WRITE_DATA, 7) + struct.pack("!HB", port, 0x80 if state else 0)
    return message(SET_READER_CONFIG, message_id, b"\x00" + gpo)
