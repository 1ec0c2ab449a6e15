"""paho-mqtt under asyncio: one connection's client and its bridge to the event loop.

paho is driven by the loop (no paho thread): its socket is registered with `add_reader` /
`add_writer` and `loop_read` / `loop_write` are called from the loop, so every paho callback runs
on the loop thread (the one exception, the blocking connect, hops over). This module owns that
bridge and the paho quirks it works around; the forwarding policy (what to publish, windows,
lanes, reconnects) is `gateway.forward.mqtt`'s. paho is imported here and there only.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

# Shared, read-only: the reason codes a PUBACK may carry, and the empty properties.
_PUBACK_CODES: dict[int, ReasonCode] = {
    code: ReasonCode(PacketTypes.PUBACK, identifier=code)
    for code in (0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)
}
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]


class BrokerUnavailable(Exception):
    """Connecting failed or the connection was lost; retry with backoff."""


def decode_puback(packet: bytes | bytearray) -> tuple[int, ReasonCode] | None:
    """(mid, reason code) of the body of a usual PUBACK: 2 bytes (MQTT 3.1.1, or MQTT 5
    success), 3 (MQTT 5 reason code), or 4 (reason code, empty properties); None for anything
    else, which paho then decodes itself."""
    n = len(packet)
    if n < 2 or n > 4 or (n == 4 and packet[3] != 0):
        return None
    rc = _PUBACK_CODES.get(packet[2] if n > 2 else 0)
    if rc is None:
        return None
    return (packet[0] << 8) | packet[1], rc


class BufferedClient(paho.Client):
    """paho with two per-message costs removed, by overriding two private methods (stable
    through paho-mqtt 2.1 and 2.2, the versions pinned; tests/test_forwarder.py checks both):

    - paho reads each packet with three recv() calls (1 byte, the length, the rest): every
      PUBACK costs three system calls. `_sock_recv` reads whatever the socket holds, up to
      64 KiB, and serves paho's small reads from that. `_Session._readable` re-runs
      `loop_read` while buffered bytes remain, since the socket will not signal them again.
    - paho decodes each PUBACK into a new ReasonCode (which copies a 60-entry table, twice
      for MQTT 5) and a new Properties: a third of the CPU of forwarding. `_handle_pubackcomp`
      decodes the usual PUBACKs (no properties) itself, with shared reason code objects, and
      leaves anything else to paho.
    """

    _rbuf: bytes = b""
    _rpos: int = 0

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        decoded = decode_puback(self._in_packet["packet"]) if cmd == "PUBACK" else None
        if decoded is None:
            return super()._handle_pubackcomp(cmd)
        mid, rc = decoded
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, rc, _NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(65536)
            if not data:
                return data
            self._rbuf, self._rpos = data, 0
        start = self._rpos
        self._rpos = min(start + bufsize, len(self._rbuf))
        return self._rbuf[start : self._rpos]

    @property
    def buffered(self) -> bool:
        return self._rpos < len(self._rbuf)


class Session:
    """One paho client on one connection, bridged to the loop."""

    def __init__(
        self,
        client: BufferedClient,
        loop: asyncio.AbstractEventLoop,
        *,
        on_ack: Callable[[tuple[int, int]], None],
        on_refused: Callable[[tuple[int, int], ReasonCode], None],
        wake: Callable[[], None],
    ) -> None:
        self._on_ack = on_ack
        self._on_refused = on_refused
        self._wake = wake
        self.client = client
        self.loop = loop
        self.connack: asyncio.Future[tuple[ReasonCode, Properties | None]] = loop.create_future()
        self.closed: asyncio.Future[str] = loop.create_future()
        self.inflight: dict[int, tuple[int, int]] = {}  # mid -> (seq, payload size)
        self.status_mids: set[int] = set()
        self.sock: Any = None
        self.writing = False
        self._loop_thread = threading.get_ident()
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    # Socket callbacks come from the loop thread, except during the blocking connect(), which
    # runs in an executor thread (on_socket_open, and register_write for CONNECT): those hop.
    def _threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._threadsafe(self._add_reader, sock)

    def _add_reader(self, sock: Any) -> None:
        self.sock = sock
        self.loop.add_reader(sock, self._readable)
        if self.client.want_write():
            self._add_writer(sock)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._threadsafe(self.remove, sock)

    def remove(self, sock: Any) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(sock)
            self.loop.remove_writer(sock)

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._threadsafe(self._add_writer, sock)

    def _add_writer(self, sock: Any) -> None:
        if self.writing or self.sock is None:  # not yet open: _add_reader will do it
            return
        with contextlib.suppress(ValueError, OSError):
            self.loop.add_writer(sock, self._writable)
            self.writing = True

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if not self.writing:
            return
        self.writing = False
        with contextlib.suppress(ValueError, OSError, RuntimeError):
            self.loop.remove_writer(sock)

    def _readable(self) -> None:
        rc = self.client.loop_read()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.lost(f"read failed: {paho.error_string(rc)}")
        elif self.client.buffered:
            self.loop.call_soon(self._readable)

    def _writable(self) -> None:
        rc = self.client.loop_write()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.lost(f"write failed: {paho.error_string(rc)}")

    def lost(self, why: str) -> None:
        """The connection is over (read/write error, DISCONNECT, keepalive timeout)."""
        if not self.closed.done():
            self.closed.set_result(why)
        self._wake()

    # MQTT callbacks (loop thread).
    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        rc: ReasonCode,
        props: Properties | None,
    ) -> None:
        if not self.connack.done():
            self.connack.set_result((rc, props))

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        rc: ReasonCode,
        props: Properties | None,
    ) -> None:
        self.lost(f"disconnected: {rc}")
        if not self.connack.done():
            self.connack.set_exception(BrokerUnavailable(f"connection closed before CONNACK: {rc}"))

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, rc: ReasonCode, props: Properties | None
    ) -> None:
        if mid in self.status_mids:
            self.status_mids.discard(mid)
            self._wake()  # a window slot is free again
            return
        entry = self.inflight.pop(mid, None)
        if entry is None:
            return
        if rc.is_failure:
            # MQTT 5 PUBACK with an error (not authorized, quota ...): the broker did not take
            # it. The row is kept; it is sent again on the next connection.
            self._on_refused(entry, rc)
        else:
            self._on_ack(entry)
        self._wake()
