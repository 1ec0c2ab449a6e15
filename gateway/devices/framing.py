"""Scanner framing: from a byte stream, in whatever chunks it arrives, to classified frames.

Owns the rules shared by the serial and TCP scanner adapters:
- `Framer` (pure: bytes in, frames out, no clock, no I/O) splits the stream at the configured
  terminator and classifies each frame as a code, a NOREAD, or garbage; a frame longer than
  `max_code_bytes` is reported once and discarded up to the next terminator.
- `FrameHandler` is the thin bridge both adapters share: it turns frames into `Scan` / `NoRead`
  observations and garbage or over-long frames into rate-limited warnings.

Rules, and why:
- `cr`, `lf`, `crlf` are strict: with `cr`, an LF is an ordinary byte of the next frame (and, being
  a control byte, makes it garbage), so a scanner configured differently from the gateway is loud,
  not silently half-working. `any` (the default) ends a frame at CR, LF or CRLF.
- Empty frames are ignored in every mode: an empty code carries nothing, and `any` produces one
  between the CR and LF of a CRLF.
- A code is printable ASCII or Latin-1 (0x20-0x7E, 0xA0-0xFF) plus GS, RS and EOT, which GS1 and
  ISO/IEC 15434 codes carry as separators and must reach the identifier parser untouched. Any
  other control byte (NUL, DEL, C1 controls ...) is what a wrong baud rate or noise produces.
  One exception: a frame that is valid UTF-8 of printable characters is a code too (a scanner set
  to UTF-8 output sends bytes 0x80-0x9F inside characters such as the euro sign). Its text stays
  the Latin-1 decoding of its bytes, as for every code, which loses nothing: whoever wants UTF-8
  re-decodes it.
- An over-long frame is reported when it crosses the limit (a stream with no terminator at all is
  reported too, and memory stays bounded), then everything up to the next terminator is dropped;
  the frame after that terminator is a normal frame. The result does not depend on chunking.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Final

from gateway.config.models import ScannerFraming
from gateway.devices.base import DeviceContext
from gateway.events import NoRead, Scan
from gateway.log import Throttle

GS: Final = 0x1D
RS: Final = 0x1E
EOT: Final = 0x04

# Bytes a code may consist of; everything else makes a frame garbage.
CODE_BYTES: Final = bytes([GS, RS, EOT, *range(0x20, 0x7F), *range(0xA0, 0x100)])

EXCERPT_BYTES: Final = 16

_SEPARATORS: Final = {
    "cr": re.compile(rb"\r"),
    "lf": re.compile(rb"\n"),
    "crlf": re.compile(rb"\r\n"),
    "any": re.compile(rb"[\r\n]"),
}


@dataclass(frozen=True, slots=True)
class CodeFrame:
    """A decoded code, terminator stripped."""

    data: bytes


@dataclass(frozen=True, slots=True)
class NoReadFrame:
    """One of the configured NOREAD texts, exactly."""

    data: bytes


@dataclass(frozen=True, slots=True)
class GarbageFrame:
    """A terminated frame holding bytes no code contains (noise, wrong line settings)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class OverlongFrame:
    """A frame that grew past `limit` bytes; `head` is its first bytes, the rest is dropped."""

    head: bytes
    limit: int


Frame = CodeFrame | NoReadFrame | GarbageFrame | OverlongFrame


def hex_excerpt(data: bytes, limit: int = EXCERPT_BYTES) -> str:
    """A short hex rendering for logs: `41 1d 42 ...` (the ellipsis when cut)."""
    text = data[:limit].hex(" ")
    return text + " ..." if len(data) > limit else text


class Framer:
    """Splits a byte stream into classified frames. Feed it bytes as they arrive.

    Invariant: the sequence of frames returned over all `feed` calls depends only on the
    concatenated bytes, never on how they were chunked. Memory is bounded by `max_code_bytes`
    plus one chunk.
    """

    def __init__(self, framing: ScannerFraming) -> None:
        self._separator = _SEPARATORS[framing.terminator]
        self._crlf = framing.terminator == "crlf"
        self._max = framing.max_code_bytes
        self._noread = _noread_bytes(framing.noread)
        self._buf = bytearray()
        # `crlf` only: the input so far ends with a CR that may be the first half of a CRLF.
        self._pending_cr = False
        self._discarding = False
        self._out: list[Frame] = []

    def feed(self, data: bytes) -> list[Frame]:
        """Frames completed by `data`, in stream order."""
        if self._pending_cr:
            # Put the CR back in front, so a CRLF split across chunks is still one terminator.
            data = b"\r" + data
            self._pending_cr = False
        pos = 0
        for match in self._separator.finditer(data):
            self._append(data[pos : match.start()])
            self._end_frame()
            pos = match.end()
        tail = data[pos:]
        if self._crlf and tail.endswith(b"\r"):
            tail = tail[:-1]
            self._pending_cr = True
        self._append(tail)
        out, self._out = self._out, []
        return out

    def _append(self, data: bytes) -> None:
        if self._discarding or not data:
            return
        self._buf += data
        if len(self._buf) > self._max:
            # The head is cut at a fixed length (the buffer holds more than max >= 16 bytes), so
            # the report is the same whatever the chunking.
            self._out.append(OverlongFrame(bytes(self._buf[:EXCERPT_BYTES]), self._max))
            self._buf.clear()
            self._discarding = True

    def _end_frame(self) -> None:
        if self._discarding:
            self._discarding = False
            return
        if not self._buf:
            return
        frame = bytes(self._buf)
        self._buf.clear()
        self._out.append(classify(frame, self._noread))


def _noread_bytes(texts: Iterable[str]) -> frozenset[bytes]:
    # Frames are compared as bytes and become text by Latin-1, so a NOREAD text that Latin-1
    # cannot encode (or that is empty) equals no frame's text: leaving it out keeps exactly the
    # meaning of the configuration, and no config can make the framer raise.
    out = set()
    for text in texts:
        try:
            out.add(text.encode("latin-1"))
        except UnicodeEncodeError:
            continue
    return frozenset(b for b in out if b)


def classify(frame: bytes, noread: Collection[bytes]) -> CodeFrame | NoReadFrame | GarbageFrame:
    """Classify one complete, non-empty frame (terminator already stripped)."""
    if frame in noread:
        return NoReadFrame(frame)
    if frame.translate(None, CODE_BYTES) and not _is_utf8_text(frame):
        return GarbageFrame(frame)
    return CodeFrame(frame)


def _is_utf8_text(frame: bytes) -> bool:
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\x1d\x1e\x04" for ch in text)


class FrameHandler:
    """Turns frames into observations for one device, and noise into throttled warnings.

    Codes and NOREADs are emitted with the time the frame completed; garbage and over-long frames
    are logged (first at WARNING, repeats at DEBUG, a periodic summary) and never emitted. The
    throttles live as long as the handler (one per adapter), so a noisy line keeps being
    rate-limited across reconnects; the framer is renewed per connection by `restart`.
    """

    def __init__(self, framing: ScannerFraming, device_id: str, log: Any) -> None:
        self._framing = framing
        self._framer = Framer(framing)
        self._device = device_id
        self._garbage = Throttle(log, "scanner_garbage_received")
        self._too_long = Throttle(log, "scanner_frame_too_long")

    def restart(self) -> None:
        """Drop any partial frame: bytes of an old connection never join those of a new one."""
        self._framer = Framer(self._framing)

    def feed(self, ctx: DeviceContext, data: bytes, now: float) -> None:
        """Feed bytes read at `now` (wall clock); emit what they complete."""
        for frame in self._framer.feed(data):
            match frame:
                case CodeFrame(data=raw):
                    ctx.emit(Scan(self._device, now, raw.decode("latin-1")))
                case NoReadFrame(data=raw):
                    ctx.emit(NoRead(self._device, now, raw.decode("latin-1")))
                case GarbageFrame(data=raw):
                    self._garbage.hit(
                        device=self._device, length=len(raw), excerpt=hex_excerpt(raw)
                    )
                case OverlongFrame(head=head, limit=limit):
                    self._too_long.hit(
                        device=self._device, limit=limit, excerpt=head.hex(" ") + " ..."
                    )
