"""gateway.systemd against real AF_UNIX datagram sockets: a path in a temp dir and an abstract name.

Every test asserts the exact bytes systemd would receive.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from structlog.testing import capture_logs

from gateway.systemd import STATUS_MAX_CHARS, Notifier


@dataclass
class Listener:
    """The service manager's end: a bound datagram socket and its `$NOTIFY_SOCKET` spelling."""

    sock: socket.socket
    notify_socket: str

    def recv(self) -> bytes:
        self.sock.settimeout(2.0)
        return self.sock.recv(65536)

    def pending(self) -> list[bytes]:
        """Every datagram already queued, without waiting."""
        self.sock.setblocking(False)
        out: list[bytes] = []
        try:
            while True:
                out.append(self.sock.recv(65536))
        except BlockingIOError:
            return out


@pytest.fixture
def path_listener() -> Iterator[Listener]:
    # Not tmp_path: sockaddr_un paths are limited to 107 bytes and pytest's can be longer.
    with tempfile.TemporaryDirectory(prefix="tg-sd-") as tmp:
        path = os.path.join(tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        try:
            yield Listener(sock, path)
        finally:
            sock.close()


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    name = f"tracegate-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    try:
        yield Listener(sock, "@" + name)
    finally:
        sock.close()


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest) -> Listener:
    fixture = "path_listener" if request.param == "path" else "abstract_listener"
    result: Listener = request.getfixturevalue(fixture)
    return result


@pytest.fixture
def notifier(listener: Listener) -> Iterator[Notifier]:
    n = Notifier.from_environment({"NOTIFY_SOCKET": listener.notify_socket})
    try:
        yield n
    finally:
        n.close()


# --- the messages ------------------------------------------------------------------------------


def test_ready_without_status(listener: Listener, notifier: Notifier) -> None:
    assert notifier.enabled
    notifier.ready()
    assert listener.recv() == b"READY=1"


def test_ready_with_status(listener: Listener, notifier: Notifier) -> None:
    notifier.ready("4 devices, broker connected")
    assert listener.recv() == b"READY=1\nSTATUS=4 devices, broker connected"


def test_status_watchdog_stopping(listener: Listener, notifier: Notifier) -> None:
    notifier.status("Zählt: 12 Einheiten")
    notifier.watchdog()
    notifier.stopping()
    notifier.stopping("committing in-flight events")
    assert listener.recv() == "STATUS=Zählt: 12 Einheiten".encode()
    assert listener.recv() == b"WATCHDOG=1"
    assert listener.recv() == b"STOPPING=1"
    assert listener.recv() == b"STOPPING=1\nSTATUS=committing in-flight events"


def test_reloading_carries_the_monotonic_clock(listener: Listener, notifier: Notifier) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = listener.recv().split(b"\n")
    assert first == b"RELOADING=1"
    key, _, value = second.partition(b"=")
    assert key == b"MONOTONIC_USEC"
    assert value.isdigit()
    assert before <= int(value) <= after


def test_status_is_one_line(listener: Listener, notifier: Notifier) -> None:
    notifier.status("line one\nline two\r\n\tindented\x00nul  and   spaces ")
    assert listener.recv() == b"STATUS=line one line two indented nul and spaces"


def test_status_is_truncated_with_an_ellipsis(listener: Listener, notifier: Notifier) -> None:
    notifier.status("x" * 1000)
    text = listener.recv().decode()
    assert text == "STATUS=" + "x" * (STATUS_MAX_CHARS - 1) + "\N{HORIZONTAL ELLIPSIS}"
    notifier.status("y" * STATUS_MAX_CHARS)
    assert listener.recv().decode() == "STATUS=" + "y" * STATUS_MAX_CHARS


def test_empty_status_clears_and_blank_status_is_left_out(
    listener: Listener, notifier: Notifier
) -> None:
    notifier.status("")
    notifier.ready(" \n ")
    assert listener.recv() == b"STATUS="
    assert listener.recv() == b"READY=1"


def test_undecodable_status_is_replaced_not_dropped(listener: Listener, notifier: Notifier) -> None:
    # A lone surrogate (e.g. from os.fsdecode of a bad byte) cannot be encoded as UTF-8.
    notifier.status("port /dev/ttyUSB\udcff gone")
    assert listener.recv() == b"STATUS=port /dev/ttyUSB? gone"


def test_same_bytes_as_systemd_notify(abstract_listener: Listener) -> None:
    """Cross-check against libsystemd's own client, including the `@` abstract convention."""
    tool = shutil.which("systemd-notify")
    if tool is None:
        pytest.skip("systemd-notify is not installed (Debian package systemd)")
    env = {**os.environ, "NOTIFY_SOCKET": abstract_listener.notify_socket}
    # --no-block: no BARRIER=1 round trip, which needs a real service manager to answer.
    subprocess.run([tool, "--no-block", "--ready", "--status=running"], env=env, check=True)
    theirs = abstract_listener.recv()
    n = Notifier.from_environment(env)
    n.ready("running")
    n.close()
    assert abstract_listener.recv() == theirs


# --- environment -------------------------------------------------------------------------------


def test_unset_notify_socket_is_a_silent_no_op() -> None:
    with capture_logs() as logs:
        for environ in ({}, {"NOTIFY_SOCKET": ""}, {"WATCHDOG_USEC": "30000000"}):
            n = Notifier.from_environment(environ)
            assert not n.enabled
            assert n.watchdog_interval_s is None
            n.ready("x")
            n.status("x")
            n.watchdog()
            n.reloading()
            n.stopping("x")
            n.close()
    assert logs == []


def test_reads_os_environ_by_default(
    path_listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", path_listener.notify_socket)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = Notifier.from_environment()
    n.watchdog()
    n.close()
    assert n.watchdog_interval_s == 15.0
    assert path_listener.recv() == b"WATCHDOG=1"


@pytest.mark.parametrize(
    ("watchdog_usec", "watchdog_pid", "interval_s"),
    [
        (None, None, None),
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("1000000", "self", 0.5),
        ("30000000", "other", None),  # meant for the process that started us
    ],
)
def test_watchdog_interval(
    listener: Listener,
    watchdog_usec: str | None,
    watchdog_pid: str | None,
    interval_s: float | None,
) -> None:
    environ = {"NOTIFY_SOCKET": listener.notify_socket}
    if watchdog_usec is not None:
        environ["WATCHDOG_USEC"] = watchdog_usec
    if watchdog_pid is not None:
        environ["WATCHDOG_PID"] = str(os.getpid() + (0 if watchdog_pid == "self" else 1))
    with capture_logs() as logs:
        n = Notifier.from_environment(environ)
    n.close()
    assert n.watchdog_interval_s == interval_s
    assert logs == []


@pytest.mark.parametrize(
    ("watchdog_usec", "watchdog_pid"),
    [("0", None), ("-5", None), ("30s", None), (" 30", None), ("30000000", "abc")],
)
def test_malformed_watchdog_variables_disable_the_watchdog_with_a_warning(
    path_listener: Listener, watchdog_usec: str, watchdog_pid: str | None
) -> None:
    environ = {"NOTIFY_SOCKET": path_listener.notify_socket, "WATCHDOG_USEC": watchdog_usec}
    if watchdog_pid is not None:
        environ["WATCHDOG_PID"] = watchdog_pid
    with capture_logs() as logs:
        n = Notifier.from_environment(environ)
    n.close()
    assert n.watchdog_interval_s is None
    assert [(e["event"], e["log_level"]) for e in logs] == [("systemd_watchdog_ignored", "warning")]


def test_unsupported_address_disables_with_a_warning() -> None:
    with capture_logs() as logs:
        n = Notifier.from_environment({"NOTIFY_SOCKET": "vsock:2:1234"})
        n.ready()
    assert not n.enabled
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("systemd_notify_unavailable", "warning")
    ]


# --- failures ----------------------------------------------------------------------------------


def test_send_failure_warns_once_then_stays_quiet() -> None:
    with tempfile.TemporaryDirectory(prefix="tg-sd-") as tmp, capture_logs() as logs:
        n = Notifier.from_environment({"NOTIFY_SOCKET": os.path.join(tmp, "nobody-listens")})
        assert n.enabled
        n.ready()
        n.watchdog()
        n.watchdog()
        n.stopping()
        n.close()
    levels = [(e["event"], e["log_level"]) for e in logs]
    assert (
        levels == [("systemd_notify_failed", "warning")] + [("systemd_notify_failed", "debug")] * 3
    )
    assert logs[0]["message"] == "READY=1"


def test_listener_gone_midway_is_not_fatal(path_listener: Listener) -> None:
    n = Notifier.from_environment({"NOTIFY_SOCKET": path_listener.notify_socket})
    n.ready()
    assert path_listener.recv() == b"READY=1"
    path_listener.sock.close()
    os.unlink(path_listener.notify_socket)
    with capture_logs() as logs:
        n.watchdog()
        n.watchdog()
    n.close()
    assert [e["log_level"] for e in logs] == ["warning", "debug"]


def test_close_is_idempotent_and_later_calls_send_nothing(
    listener: Listener, notifier: Notifier
) -> None:
    notifier.close()
    notifier.close()
    assert not notifier.enabled
    with capture_logs() as logs:
        notifier.ready()
        notifier.watchdog()
    assert listener.pending() == []
    assert logs == []
