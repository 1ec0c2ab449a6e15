"""The gateway's durable path, in process: observation -> binder -> journal commit (fsync) ->
forwarder publish -> PUBACK -> delete. The same composition `tracegate run` uses (app.Gateway),
with the scanner replaced by observations put on its queue, so the figure is the gateway's, not
a scanner's (real scanners read a few codes a second)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from bench.common import describe, sample_codes
from gateway.app import Gateway
from gateway.config import load_line
from gateway.events import Scan


def bench_line(workdir: Path, host: str, port: int, **mqtt: Any) -> Path:
    doc = {
        "gateway": {"id": "gw-bench", "site": "bench", "line": "line-1", "log_level": "warning"},
        "mqtt": {"host": host, "port": port, **mqtt},
        "journal": {"path": str(workdir / "journal.db")},
        "supervision": {"queue_size": 1_000_000},
        "devices": [
            {"id": "cam-1", "kind": "tcp_scanner", "host": "127.0.0.1", "port": 9, "enabled": False}
        ],
        "stations": [{"id": "st10", "identity": {"sources": ["cam-1"]}}],
    }
    path = workdir / "line.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


class Acks:
    """Records when each seq was PUBACKed (wraps the journal's ack)."""

    def __init__(self, gw: Gateway) -> None:
        assert gw.journal is not None
        self.journal = gw.journal
        self.at: dict[int, float] = {}
        inner = gw.journal.ack

        def ack(rows: Iterable[tuple[int, int]]) -> None:
            now = time.perf_counter()
            rows = list(rows)
            for seq, _ in rows:
                self.at.setdefault(seq, now)
            inner(rows)

        gw.journal.ack = ack  # type: ignore[method-assign]


async def _started(path: Path) -> tuple[Gateway, asyncio.Task[None]]:
    gw = Gateway(load_line(path))
    task = asyncio.create_task(gw.run())
    while gw.ready_after_s is None or gw.forwarder is None or not gw.forwarder.stats.connected:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return gw, task


async def _stop(gw: Gateway, task: asyncio.Task[None]) -> None:
    gw.request_stop()
    await task


async def throughput(host: str, port: int, n: int) -> dict[str, float]:
    """Events per second through the whole durable path, until the last row is deleted."""
    codes = sample_codes(min(n, 50_000))
    with tempfile.TemporaryDirectory() as tmp:
        gw, task = await _started(bench_line(Path(tmp), host, port))
        assert gw.binder_loop is not None and gw.journal is not None
        queue, journal = gw.binder_loop.queue, gw.journal
        first_seq = journal.committed_seq + 1
        t0 = time.perf_counter()
        sent = 0
        while sent < n:
            if len(queue) < 20_000:
                now = time.time()
                for i in range(sent, min(n, sent + 2000)):
                    queue.put(Scan("cam-1", now, codes[i % len(codes)]))
                sent = min(n, sent + 2000)
            await asyncio.sleep(0)
        last = first_seq + n - 1
        while journal.committed_seq < last or journal.stats().rows > 0:
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - t0
        stats = gw.forwarder.stats if gw.forwarder else None
        await _stop(gw, task)
    return {
        "events_per_s": n / elapsed,
        "seconds": elapsed,
        "commits": float(journal.stats().commits),
        "published": float(stats.published if stats else 0),
    }


async def latency(host: str, port: int, rate: float, seconds: float) -> dict[str, Any]:
    """Observation -> PUBACK latency at a steady rate."""
    n = int(rate * seconds)
    codes = sample_codes(n)
    with tempfile.TemporaryDirectory() as tmp:
        gw, task = await _started(bench_line(Path(tmp), host, port))
        assert gw.binder_loop is not None and gw.journal is not None
        acks = Acks(gw)
        queue = gw.binder_loop.queue
        first_seq = gw.journal.committed_seq + 1
        put_at: list[float] = []
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(n):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            put_at.append(time.perf_counter())
            queue.put(Scan("cam-1", time.time(), codes[i]))
        while len(acks.at) < n:
            await asyncio.sleep(0.01)
        await _stop(gw, task)
    lat_ms = [(acks.at[first_seq + i] - put_at[i]) * 1000 for i in range(n)]
    return describe(lat_ms)
