"""sd_notify client: tells systemd that the gateway is ready, alive, reloading or stopping.

This module owns the one datagram socket to `$NOTIFY_SOCKET` and the reading of `WATCHDOG_USEC`
and `WATCHDOG_PID`; nothing else in the gateway talks to the service manager. Deciding *when* to
notify (READY=1 once the pipelines run, WATCHDOG=1 only while they make progress) belongs to the
app, which knows every part.

The protocol (sd_notify(3)) is one datagram of newline-separated `KEY=VALUE` lines to the
AF_UNIX socket named by `$NOTIFY_SOCKET`: a file system path, or an abstract socket when it
starts with `@` (which stands for the leading NUL). It is small enough that depending on
libsystemd or a wrapper package is not worth it.

Notification is advisory. A failed send is logged once at WARNING (repeats at DEBUG) and never
raised: the gateway keeps recording whether or not systemd hears about it. What a lost message
costs is systemd's to report: a lost READY=1 shows as a start timeout, lost WATCHDOG=1 pings as
a watchdog restart.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Mapping

from gateway.log import get_logger

# A STATUS= line is shown by `systemctl status` on one line; longer text is cut with an ellipsis.
STATUS_MAX_CHARS = 200

_DIGITS = re.compile(r"[0-9]+")
# C0 controls and DEL: newlines would split the message into bogus fields, and systemd drops a
# datagram that contains a NUL byte.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class Notifier:
    """Sends sd_notify messages; a no-op when the process was not started by systemd.

    `enabled` is true while there is a socket to send to. `watchdog_interval_s` is how often
    `watchdog()` should be called (half of `WatchdogSec=`), or None when systemd does not watch
    this process.
    """

    enabled: bool
    watchdog_interval_s: float | None

    def __init__(
        self, notify_socket: str | None = None, *, watchdog_interval_s: float | None = None
    ) -> None:
        """`notify_socket` takes the `$NOTIFY_SOCKET` form; None or "" make a no-op notifier."""
        self._notify_socket = notify_socket or ""
        self._address = b""
        self._sock: socket.socket | None = None
        self._failed = False
        self.enabled = False
        self.watchdog_interval_s = None
        if not notify_socket:
            return
        try:
            self._address = _socket_address(notify_socket)
            # Python sockets are close-on-exec already (PEP 446): children do not inherit it.
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        except (ValueError, OSError) as exc:
            get_logger(__name__).warning(
                "systemd_notify_unavailable", notify_socket=notify_socket, error=str(exc)
            )
            return
        # Non-blocking: the caller is the event loop. A service manager that does not read its
        # socket must not stall the gateway; the datagram is dropped instead (and logged).
        self._sock.setblocking(False)
        self.enabled = True
        self.watchdog_interval_s = watchdog_interval_s

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """The notifier systemd asked for through the environment of this process."""
        notify_socket = environ.get("NOTIFY_SOCKET", "")
        if not notify_socket:
            return cls()
        return cls(notify_socket, watchdog_interval_s=_watchdog_interval_s(environ))

    def ready(self, status: str = "") -> None:
        """Start-up (or a reload) is complete."""
        self._send("READY=1", *_status_field(status))

    def status(self, text: str) -> None:
        """Free-form one-line status for `systemctl status`; "" clears it."""
        self._send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> None:
        """Still alive. Call it only while the pipelines make progress, never from a timer alone."""
        self._send("WATCHDOG=1")

    def stopping(self, status: str = "") -> None:
        """Shutdown has begun."""
        self._send("STOPPING=1", *_status_field(status))

    def reloading(self) -> None:
        """A reload has begun; `ready()` ends it.

        MONOTONIC_USEC lets systemd >= 253 match this message to the reload it requested; older
        versions ignore the field.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def close(self) -> None:
        """Release the socket; later calls are no-ops. Idempotent."""
        self.enabled = False
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, *fields: str) -> None:
        if self._sock is None:
            return
        # errors="replace": a lone surrogate in a status text must not cost the whole message.
        payload = "\n".join(fields).encode("utf-8", errors="replace")
        try:
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            # Looked up now rather than bound at construction, so the logging configuration of
            # the moment applies even when the notifier was built before `log.configure()`.
            log = get_logger(__name__)
            emit = log.debug if self._failed else log.warning
            emit(
                "systemd_notify_failed",
                notify_socket=self._notify_socket,
                message=fields[0],
                error=str(exc) or type(exc).__name__,
            )
            self._failed = True


def _socket_address(notify_socket: str) -> bytes:
    """The sockaddr_un path for a `$NOTIFY_SOCKET` value."""
    if notify_socket.startswith("@"):
        return b"\0" + os.fsencode(notify_socket[1:])
    if notify_socket.startswith("/"):
        return os.fsencode(notify_socket)
    # systemd >= 254 may also hand out `vsock:` addresses (to virtual machines); not a line PC.
    raise ValueError("NOTIFY_SOCKET is neither an absolute path nor an @abstract name")


def _watchdog_interval_s(environ: Mapping[str, str]) -> float | None:
    """Half of `WATCHDOG_USEC`, the ping interval sd_watchdog_enabled(3) recommends.

    None when there is no watchdog, or when `WATCHDOG_PID` names another process: the variables
    were then meant for a parent and merely inherited.
    """
    usec_text = environ.get("WATCHDOG_USEC", "")
    if not usec_text:
        return None
    log = get_logger(__name__)
    pid_text = environ.get("WATCHDOG_PID", "")
    if pid_text:
        if not _DIGITS.fullmatch(pid_text):
            log.warning(
                "systemd_watchdog_ignored", reason="WATCHDOG_PID is not a pid", value=pid_text
            )
            return None
        if int(pid_text) != os.getpid():
            return None
    if not _DIGITS.fullmatch(usec_text) or int(usec_text) == 0:
        log.warning(
            "systemd_watchdog_ignored",
            reason="WATCHDOG_USEC is not a positive integer",
            value=usec_text,
        )
        return None
    return int(usec_text) / 2 / 1_000_000


def _status_field(status: str) -> tuple[str, ...]:
    line = _one_line(status)
    return (f"STATUS={line}",) if line else ()


def _one_line(text: str) -> str:
    """`text` on one line with single spaces, at most STATUS_MAX_CHARS characters."""
    flat = " ".join(_CONTROL.sub(" ", text).split())
    if len(flat) <= STATUS_MAX_CHARS:
        return flat
    return flat[: STATUS_MAX_CHARS - 1].rstrip() + "\N{HORIZONTAL ELLIPSIS}"
