"""Fixed-mount barcode scanners that serve their results over TCP (Cognex DataMan, Keyence SR,
Datalogic Matrix ...): the scanner listens, the gateway connects and reads framed codes.

Owns the connection: connect with a timeout, TCP keepalive (a scanner may rightly be silent for
hours, so silence proves nothing; keepalive probes are what notice one that vanished without
closing), reading, and closing. Every way the peer can fail (refused, timeout, reset, EOF,
keepalive expiry) is `DeviceUnavailable`; the supervisor reconnects. Framing and classification
are `gateway.devices.framing`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from asyncio.trsock import TransportSocket
from pathlib import Path
from typing import Final

from gateway import clock
from gateway.config.models import TcpScannerConfig
from gateway.devices.base import DeviceContext, DevicePlan, DeviceUnavailable
from gateway.devices.framing import FrameHandler
from gateway.log import get_logger

READ_BYTES: Final = 4096
CLOSE_TIMEOUT_S: Final = 2.0
KEEPALIVE_INTERVAL_S: Final = 2
KEEPALIVE_PROBES: Final = 3


class TcpScanner:
    """Reads framed codes from one scanner's TCP result channel. One instance per configured
    device; the supervisor calls `run` again after each failure."""

    def __init__(
        self,
        config: TcpScannerConfig,
        plan: DevicePlan | None = None,
        state_dir: Path | None = None,
    ) -> None:
        """`plan` and `state_dir` are in every adapter's signature; scanners need neither."""
        self.config = config
        self._log = get_logger(__name__, device=config.id)
        self._frames = FrameHandler(config.framing, config.id, self._log)

    async def run(self, ctx: DeviceContext) -> None:
        cfg = self.config
        peer = f"{cfg.host}:{cfg.port}"
        try:
            async with asyncio.timeout(cfg.connect_timeout_s):
                reader, writer = await asyncio.open_connection(cfg.host, cfg.port)
        except TimeoutError:
            raise DeviceUnavailable(
                f"scanner {peer} did not accept the connection within {cfg.connect_timeout_s} s"
            ) from None
        except OSError as exc:  # refused, unreachable, name not resolved (gaierror)
            raise DeviceUnavailable(f"cannot connect to scanner {peer}: {exc}") from exc
        try:
            sock = writer.get_extra_info("socket")
            enable_keepalive(sock, cfg.keepalive_s)
            local = writer.get_extra_info("sockname")
            self._frames.restart()
            ctx.connected(f"{peer} (from {local[0]}:{local[1]})")
            while True:
                try:
                    data = await reader.read(READ_BYTES)
                except OSError as exc:  # reset, keepalive expiry (ETIMEDOUT), unreachable
                    raise DeviceUnavailable(f"connection to scanner {peer} lost: {exc!r}") from exc
                if not data:
                    raise DeviceUnavailable(f"scanner {peer} closed the connection")
                self._frames.feed(ctx, data, clock.now())
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT_S)


def enable_keepalive(sock: socket.socket | TransportSocket, idle_s: int) -> None:
    """Probe an idle connection after `idle_s`, then every 2 s; 3 unanswered probes reset it.

    A dead peer is thus noticed about `idle_s + 6` s after the last traffic (Linux options).
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
