"""A private Mosquitto broker on a free loopback port, for the demo and the tests.

It runs as its own process so that a test can kill it, restart it on the same port, or stop it
for a while (broker outages). It never touches a broker already running on the machine.
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

INSTALL_HINT = (
    "Mosquitto is not installed. On Debian/Ubuntu: sudo apt-get install mosquitto "
    "(the broker binary is /usr/sbin/mosquitto)."
)


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """`start()`, `stop()`, `kill()`, `pause()`/`resume()` (SIGSTOP: a broker that hangs)."""

    def __init__(
        self,
        port: int | None = None,
        *,
        extra_config: str = "",
        workdir: Path | None = None,
        persistence: bool = False,
    ) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise FileNotFoundError(INSTALL_HINT)
        self.binary = binary
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._tmp = (
            None
            if workdir is not None
            else tempfile.TemporaryDirectory(prefix="tracegate-mosquitto-")
        )
        self.workdir = workdir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.extra_config = extra_config
        self.persistence = persistence
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "mosquitto.log"

    def _write_config(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            # Started as root, mosquitto drops to user `mosquitto`, which cannot write the log
            # and persistence files in our private directory: keep the current user.
            f"user {getpass.getuser()}\n"
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            + (
                f"persistence true\npersistence_location {self.workdir}/\n"
                if self.persistence
                else "persistence false\n"
            )
            + f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\n"
            "max_queued_messages 1000000\n"
            f"{self.extra_config}\n"
        )
        return conf

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        conf = self._write_config()
        deadline = time.monotonic() + timeout_s
        while True:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if self._wait_listening(deadline):
                return
            # Port still held (TIME_WAIT of a killed broker, rare): try again until the deadline.
            self._reap()
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"mosquitto did not start on port {self.port}; see {self.log_path}"
                )

    def _wait_listening(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.2),
            ):
                return True
            time.sleep(0.02)  # polling a port: there is no event to wait on
        return False

    def stop(self) -> None:
        """SIGTERM and wait: a clean broker stop."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
        self._reap()

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without closing anything cleanly."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self._reap()

    def pause(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def _reap(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def close(self) -> None:
        self.kill()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
