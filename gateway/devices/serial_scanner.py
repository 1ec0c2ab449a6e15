"""Barcode scanners on a serial port: RS-232, USB-CDC (ttyACM), or a serial server URL.

Owns opening the port (pyserial-asyncio-fast), reading it, and translating what pyserial and the
OS say into the gateway's two errors: `DeviceUnavailable` (unplugged, not there yet, busy: the
supervisor retries) and `DeviceMisconfigured` (not a serial port, settings the port rejects).
Framing and classification are `gateway.devices.framing`'s.

A USB scanner that is unplugged and plugged back usually returns under another ttyACM name; the
`/dev/serial/by-id/...` link follows it. So the configured path is resolved at every open, never
once at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import termios
from pathlib import Path
from typing import Final

import serial
import serial_asyncio_fast

from gateway import clock
from gateway.config.models import SerialScannerConfig
from gateway.devices.base import DeviceContext, DeviceMisconfigured, DevicePlan, DeviceUnavailable
from gateway.devices.framing import FrameHandler
from gateway.log import get_logger

READ_BYTES: Final = 4096
CLOSE_TIMEOUT_S: Final = 2.0

_PARITY: Final = {
    "none": serial.PARITY_NONE,
    "even": serial.PARITY_EVEN,
    "odd": serial.PARITY_ODD,
    "mark": serial.PARITY_MARK,
    "space": serial.PARITY_SPACE,
}
_STOPBITS: Final = {
    1: serial.STOPBITS_ONE,
    1.5: serial.STOPBITS_ONE_POINT_FIVE,
    2: serial.STOPBITS_TWO,
}
_BYTESIZE: Final = {7: serial.SEVENBITS, 8: serial.EIGHTBITS}


class SerialScanner:
    """Reads framed codes from one serial port. One instance per configured device; the
    supervisor calls `run` again after each failure."""

    def __init__(
        self,
        config: SerialScannerConfig,
        plan: DevicePlan | None = None,
        state_dir: Path | None = None,
    ) -> None:
        """`plan` and `state_dir` are in every adapter's signature; scanners need neither."""
        self.config = config
        self._log = get_logger(__name__, device=config.id)
        self._frames = FrameHandler(config.framing, config.id, self._log)

    async def run(self, ctx: DeviceContext) -> None:
        port = self.config.port
        target = resolve_port(port)
        reader, writer = await self._open(target)
        try:
            detail = port if target == port else f"{port} -> {target}"
            self._frames.restart()
            ctx.connected(f"{detail} at {self.config.baudrate} baud")
            while True:
                try:
                    data = await reader.read(READ_BYTES)
                except (serial.SerialException, OSError) as exc:
                    raise DeviceUnavailable(
                        f"serial port {detail} failed (unplugged?): {exc}"
                    ) from exc
                if not data:
                    # Only URL ports (socket://) reach EOF; a tty reports an error instead.
                    raise DeviceUnavailable(f"serial port {detail} closed by the peer")
                self._frames.feed(ctx, data, clock.now())
        finally:
            await _close(writer)

    async def _open(self, target: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        cfg = self.config
        try:
            reader, writer = await serial_asyncio_fast.open_serial_connection(
                url=target,
                baudrate=cfg.baudrate,
                bytesize=_BYTESIZE[cfg.bytesize],
                parity=_PARITY[cfg.parity],
                stopbits=_STOPBITS[cfg.stopbits],
                rtscts=cfg.rtscts,
                xonxoff=cfg.xonxoff,
            )
        except ValueError as exc:
            raise DeviceMisconfigured(
                f"serial port {cfg.port} rejects the settings: {exc}"
            ) from exc
        except (serial.SerialException, OSError) as exc:
            raise _open_error(cfg.port, target, exc) from exc
        return reader, writer


def resolve_port(port: str) -> str:
    """The device path to open now: symlinks (by-id, by-path, udev aliases) resolved.

    Raises `DeviceUnavailable` when nothing is there (unplugged, or a by-id link whose device is
    gone) and `DeviceMisconfigured` when the path exists but is no character device.
    URLs (`socket://host:port`, `rfc2217://...`) are returned unchanged.
    """
    if "://" in port:
        return port
    # Synchronous on purpose: /dev lives in memory (devtmpfs, udev links), so these calls
    # return at once; a thread hop would cost more than it saves.
    target = os.path.realpath(port)
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        raise DeviceUnavailable(f"serial port {port} is not present (unplugged?)") from None
    except OSError as exc:
        raise DeviceUnavailable(f"serial port {port} cannot be examined: {exc}") from exc
    if not stat.S_ISCHR(mode):
        raise DeviceMisconfigured(f"{port} is not a serial port (not a character device)")
    return target


def _open_error(port: str, target: str, exc: OSError) -> DeviceUnavailable | DeviceMisconfigured:
    # pyserial wraps the cause in SerialException: open() errors keep the errno, but a
    # character device that is no tty (e.g. /dev/null) only shows as "Could not configure port"
    # with the termios.error as the implicit context. That context is how we tell it apart.
    cause = exc.__context__
    if isinstance(cause, termios.error) and cause.args and cause.args[0] == errno.ENOTTY:
        return DeviceMisconfigured(f"{port} is not a serial port (not a tty)")
    where = port if target == port else f"{port} -> {target}"
    if exc.errno == errno.EACCES:
        return DeviceUnavailable(
            f"serial port {where}: permission denied (is the gateway user "
            f"in the group owning the device, e.g. dialout?)"
        )
    return DeviceUnavailable(f"serial port {where} cannot be opened: {exc}")


async def _close(writer: asyncio.StreamWriter) -> None:
    # The transport closes the port in a background task (flush and close run in the loop's
    # default executor); waiting for it means no task or fd outlives `run`. After an unplug the
    # wait re-raises the read error, already reported.
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT_S)
