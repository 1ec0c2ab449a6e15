"""Test helpers: an MQTT subscriber that records what the broker delivers, line files, a gateway
run in-process or as a real subprocess, and waiting for conditions (never sleeping for them)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from gateway.app import Gateway
from gateway.config import load_line
from simulators.broker import Mosquitto

ROOT = Path(__file__).resolve().parents[1]


async def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll `cond` until it is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or cond}")
        await asyncio.sleep(0.02)


def wait_for_sync(cond: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or cond}")
        time.sleep(0.02)


class Subscriber:
    """Records every message on `topic` with a persistent session (QoS 1, clean_session off),
    so that nothing published while it reconnects after a broker restart is missed (the test
    broker keeps sessions across a clean restart)."""

    def __init__(self, broker: Mosquitto, topic: str = "#") -> None:
        self.broker = broker
        self.topic = topic
        self.messages: list[tuple[str, bytes, bool]] = []  # topic, payload, retained
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{uuid.uuid4().hex[:8]}",
            clean_session=False,
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.reconnect_delay_set(1, 1)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        client.subscribe(self.topic, qos=1)
        self.connected.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def start(self) -> Subscriber:
        self.client.connect(self.broker.host, self.broker.port, keepalive=5)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise AssertionError("test subscriber could not connect")
        # SUBACK comes after CONNACK; a round trip through the broker proves it is in place.
        probe = f"probe/{uuid.uuid4().hex}"
        self.client.subscribe(probe, qos=1)
        self.client.publish(probe, b"x", qos=1)
        wait_for_sync(lambda: any(t == probe for t, _, _ in self.snapshot()), 10, "probe")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return list(self.messages)

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        """Event payloads received (not retained status), in arrival order."""
        out = []
        for topic, payload, retained in self.snapshot():
            if retained or "/gateway/" in topic or topic.startswith("probe/"):
                continue
            doc = json.loads(payload)
            if type_ is None or doc["type"] == type_:
                out.append(doc)
        return out

    def last_retained(self, topic: str) -> bytes | None:
        found = [p for t, p, _ in self.snapshot() if t == topic]
        return found[-1] if found else None

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def line_file(
    tmp_path: Path,
    broker: Mosquitto,
    *,
    devices: list[dict[str, Any]],
    stations: list[dict[str, Any]],
    mqtt: dict[str, Any] | None = None,
    journal: dict[str, Any] | None = None,
    supervision: dict[str, Any] | None = None,
    gateway_id: str = "gw-test",
    site: str = "test-site",
    line: str = "line-1",
    name: str = "line.yaml",
    **top: Any,
) -> Path:
    """A line file in `tmp_path` for `broker`; `top` adds top-level sections (pools ...)."""
    doc = {
        "gateway": {"id": gateway_id, "site": site, "line": line, "log_level": "info"},
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.5,
            "keepalive_s": 5,
            **(mqtt or {}),
        },
        "journal": {"path": "journal.db", **(journal or {})},
        "supervision": {"backoff_initial_s": 0.05, "backoff_max_s": 0.5, **(supervision or {})},
        "devices": devices,
        "stations": stations,
        "status": {"port": 0},  # a free port: never the machine's 9780
        **top,
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def cam_line(tmp_path: Path, broker: Mosquitto, *ports: int, **kw: Any) -> Path:
    """A line of fixed-mount TCP scanners (Cognex profile), one a station: cam-1 at st10 on the
    first port, cam-2 at st20 on the second, ..."""
    n = range(1, len(ports) + 1)
    return line_file(
        tmp_path,
        broker,
        devices=[
            {
                "id": f"cam-{i}",
                "profile": "scanners/cognex-dataman-370",
                "host": "127.0.0.1",
                "port": port,
            }
            for i, port in zip(n, ports, strict=True)
        ],
        stations=[{"id": f"st{10 * i}", "identity": {"sources": [f"cam-{i}"]}} for i in n],
        **kw,
    )


@contextlib.asynccontextmanager
async def running_gateway(path: Path) -> AsyncIterator[Gateway]:
    """The gateway in this process and loop; stopped as SIGTERM would stop it."""
    gw = Gateway(load_line(path))
    task = asyncio.create_task(gw.run(), name="gateway-under-test")
    try:
        await wait_for(lambda: gw.ready_after_s is not None or task.done(), 10, "gateway ready")
        if task.done():
            task.result()
        yield gw
    finally:
        gw.request_stop()
        await asyncio.wait_for(task, 10)


class GatewayProcess:
    """`tracegate run` as a real child process, to kill with SIGKILL."""

    def __init__(self, config: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log_path = log_path
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("NOTIFY_SOCKET", None)  # never the test runner's own, if it has one
        env.update(self.env)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(self.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )

    def readies(self) -> int:
        """How many times a process of this gateway said `gateway_ready` so far."""
        return sum(1 for lg in self.logs() if lg.get("event") == "gateway_ready")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def terminate(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
            self._log.close()


@contextlib.contextmanager
def subscriber(broker: Mosquitto, topic: str = "#") -> Iterator[Subscriber]:
    sub = Subscriber(broker, topic).start()
    try:
        yield sub
    finally:
        sub.stop()
