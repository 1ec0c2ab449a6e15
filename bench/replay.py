"""A million-event backlog after an outage, replayed by a real `tracegate run` process while a
scanner keeps scanning: replay rate, live-event latency during the replay, RSS, start to READY.

The backlog is written into the journal first (as a gateway would have committed it during a
long broker outage); then the gateway starts with the broker up. A subscriber counts the
backlog as it arrives and times each live event from the scanner's send to its delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import describe, rss_mib, sample_codes
from gateway.events import EventContext, TraceEvent
from gateway.identifiers import parse_code
from gateway.journal import Journal
from simulators.scanner import TcpScannerSim

SCHEMES = frozenset({"sgtin", "sscc"})


async def fill_journal(path: Path, n: int) -> float:
    """Commit `n` backlog events (station st-backlog); returns seconds taken."""
    codes = sample_codes(20_000, seed=5)
    ids = [parse_code(c, source="cam-old", schemes=SCHEMES) for c in codes]
    ctx = EventContext("gw-bench", "line-1", "bench0000000")
    journal = await Journal.open(path, ctx, max_rows=10_000_000, max_bytes=8 << 30)
    task = asyncio.create_task(journal.run())
    t0 = time.perf_counter()
    try:
        now = time.time() - 3600
        for start in range(0, n, 4096):
            batch = [
                TraceEvent(
                    "identified",
                    now + i / 1000,
                    "st-backlog",
                    "s",
                    "WO-1",
                    ids=(ids[i % len(ids)],),
                )
                for i in range(start, min(n, start + 4096))
            ]
            await journal.commit(batch)
        return time.perf_counter() - t0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await journal.close()


class LiveWatcher:
    """Times each live event (station st10) from the scanner's send to its delivery. Only the
    live topic: a subscriber flooded with the backlog would time its own queue, not ours."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.live_at: dict[str, float] = {}
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-replay-live")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=0)
        self.host, self.port = host, port

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        with self.lock:
            self.live_at[doc["ids"][0]["value"]] = time.perf_counter()

    def start(self) -> None:
        self.client.connect(self.host, self.port)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def backlog_counter(host: str, port: int, n: int) -> subprocess.Popen[bytes]:
    """mosquitto_sub (C, fast) that exits once it has received the whole backlog."""
    return subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            host,
            "-p",
            str(port),
            "-q",
            "0",
            "-C",
            str(n),
            "-t",
            "tracegate/bench/line-1/st-backlog/#",
        ],
        stdout=subprocess.DEVNULL,
    )


def _line(workdir: Path, host: str, port: int, cam_port: int) -> Path:
    doc = {
        "gateway": {"id": "gw-bench", "site": "bench", "line": "line-1", "log_level": "info"},
        "mqtt": {"host": host, "port": port},
        "journal": {"path": str(workdir / "journal.db"), "max_rows": 10_000_000, "max_mib": 8192},
        "devices": [
            {
                "id": "cam-1",
                "profile": "scanners/cognex-dataman-370",
                "host": "127.0.0.1",
                "port": cam_port,
            }
        ],
        "stations": [{"id": "st10", "identity": {"sources": ["cam-1"]}}],
    }
    path = workdir / "line.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _notify_socket(workdir: Path) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(workdir / "notify.sock")
    sock.bind(path)
    return sock, path


async def replay(host: str, port: int, n: int, live_rate: float = 50.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tracegate-bench-") as tmp:
        workdir = Path(tmp)
        fill_s = await fill_journal(workdir / "journal.db", n)
        journal_mib = (workdir / "journal.db").stat().st_size / 2**20
        watcher = LiveWatcher(host, port, "tracegate/bench/line-1/st10/identified")
        watcher.start()
        counter = backlog_counter(host, port, n)
        notify, notify_path = _notify_socket(workdir)
        notify.setblocking(False)
        async with TcpScannerSim(terminator="crlf") as cam:
            line = _line(workdir, host, port, cam.port)
            env = dict(os.environ, NOTIFY_SOCKET=notify_path)
            loop = asyncio.get_running_loop()
            t_spawn = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "-c", str(line)],
                stdout=(workdir / "gateway.log").open("wb"),
                stderr=subprocess.STDOUT,
                env=env,
            )
            try:
                ready_s = await _wait_ready(notify, t_spawn)
                await asyncio.wait_for(cam.wait_client(), 30)
                sent: dict[str, float] = {}
                rss: list[float] = []
                codes = sample_codes(100_000, seed=99)
                t0 = loop.time()
                i = 0
                while counter.poll() is None and loop.time() - t0 < 600:
                    code = codes[i % len(codes)]
                    i += 1
                    key = parse_code(code, source="x", schemes=SCHEMES).value
                    sent[key] = time.perf_counter()
                    await cam.send(code)
                    if i % int(live_rate / 2) == 0:
                        rss.append(rss_mib(proc.pid))
                    await asyncio.sleep(1 / live_rate)
                done = counter.poll() is not None
                replay_s = time.perf_counter() - t_spawn - ready_s
                await asyncio.sleep(1.0)  # the last live events' deliveries
            finally:
                proc.terminate()
                proc.wait(10)
                loop.remove_reader(notify)
                notify.close()
                watcher.stop()
                if counter.poll() is None:
                    counter.kill()
                counter.wait()
        with watcher.lock:
            lat = [(watcher.live_at[k] - t) * 1000 for k, t in sent.items() if k in watcher.live_at]
        return {
            "backlog": n,
            "fill_s": fill_s,
            "journal_mib": journal_mib,
            "ready_s": ready_s,
            "replay_s": replay_s,
            "replay_per_s": n / replay_s if done else 0.0,
            "delivered": n if done else -1,
            "live_sent": len(sent),
            "live_delivered": len(lat),
            "live_ms": describe(lat),
            "rss_max_mib": max(rss) if rss else float("nan"),
        }


async def _wait_ready(sock: socket.socket, t_spawn: float) -> float:
    """Time to READY=1; the socket is then drained in the background, as systemd would."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def readable() -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                if b"READY=1" in sock.recv(4096) and not ready.done():
                    ready.set_result(time.perf_counter() - t_spawn)

    loop.add_reader(sock, readable)
    return await asyncio.wait_for(ready, 60)
