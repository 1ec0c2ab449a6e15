"""RFID: tag reports ingested per second per reader (LLRP decoding and pass building), and pass
latency (last read -> pass committed, the quiet time subtracted).

Ingest: the reader simulator runs in a child process and floods tag reports over TCP (2,000
tags on two antennas, reports of `REPORT_EVERY` tags, as a reader configured for throughput
sends them). The gateway side is the real adapter (`LlrpDevice`: framing, the tag report
decoder, keepalives) handing every read to the real binder (`Binder.process`: the portal's pass
building), in this process; CPU seconds are this process's. Two runs: a sustained flood at
`SUSTAINED` reports/s (must be taken whole: none dropped), and one offered faster than the
gateway can read, whose measured rate is the gateway's capacity (TCP back-pressure holds the
simulator back; the simulator's own rate alone is the ceiling of the run).

Latency: a real `Gateway` (journal with fsync, broker) reads a simulated reader in this process
while tags pass one by one; each pass event's `recorded` time minus the time the simulator sent
the tag's last read, minus the portal's quiet time.

    python -m bench.llrp --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import yaml

from bench.common import percentile
from gateway.binding.engine import Binder
from gateway.config import load_line
from gateway.config.models import LineConfig
from gateway.config.rfid import LlrpConfig
from gateway.devices.base import DevicePlan
from gateway.devices.llrp import LlrpDevice
from gateway.events import Observation, TagRead

SUSTAINED = 20_000  # reports/s: twice the target, more than ten real readers at their peak
REPORT_EVERY = 100
TAGS = 2_000
QUIET_MS = 300


# --- the reader, in its own process -----------------------------------------------------------


def _reader_process(conn: Connection, rates: list[float], seconds: float) -> None:
    asyncio.run(_flood(conn, rates, seconds))


async def _flood(conn: Connection, rates: list[float], seconds: float) -> None:
    from simulators.epc import sgtin96_series
    from simulators.llrp import LlrpReaderSim

    epcs = sgtin96_series("04012345123456", 7, 1, TAGS, seed=3)
    async with LlrpReaderSim("impinj-r700", seed=1) as sim:
        conn.send(sim.port)
        for rate in rates:
            await asyncio.to_thread(conn.recv)  # go
            await sim.wait_inventorying(timeout=30)
            t0 = time.perf_counter()
            sent = await sim.flood(rate, seconds, epcs=epcs, antennas=(1, 2))
            conn.send((sent, time.perf_counter() - t0))
        await asyncio.to_thread(conn.recv)  # bye


# --- the gateway side -------------------------------------------------------------------------


def _line(port: int, journal: Path, broker: tuple[str, int] | None = None) -> dict[str, Any]:
    return {
        "gateway": {"id": "gw-bench", "site": "bench", "line": "line-1", "log_level": "warning"},
        "mqtt": {"host": broker[0], "port": broker[1]} if broker else {},
        "journal": {"path": str(journal)},
        "devices": [
            {
                "id": "portal-reader",
                "profile": "readers/impinj-r700",
                "host": "127.0.0.1",
                "port": port,
                "report_every_n_tags": REPORT_EVERY,
            }
        ],
        "stations": [
            {
                "id": "dock-1",
                "portal": {
                    "device": "portal-reader",
                    "antennas": [1, 2],
                    "quiet_time_ms": QUIET_MS,
                },
            }
        ],
    }


def _config(doc: dict[str, Any], workdir: Path) -> LineConfig:
    return load_line(_write(doc, workdir)).config


class _Binding:
    """A DeviceContext handing every read to the binder, as the gateway's queue would."""

    def __init__(self, binder: Binder) -> None:
        self.binder = binder
        self.reads = 0
        self.passes = 0
        self.up = asyncio.Event()

    @property
    def device_id(self) -> str:
        return "portal-reader"

    def emit(self, observation: Observation) -> None:
        if type(observation) is TagRead:
            self.reads += 1
        self.passes += len(self.binder.process(observation).events)

    def connected(self, detail: str) -> None:
        self.up.set()


async def llrp_ingest(
    seconds: float, rates: tuple[float, ...] = (SUSTAINED, 1e6)
) -> dict[str, Any]:
    """Per offered rate: reports sent, ingested, dropped, the ingest rate, and CPU seconds per
    1,000 reports."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_reader_process, args=(child, list(rates), seconds), daemon=True)
    proc.start()
    runs: list[dict[str, Any]] = []
    try:
        port = await asyncio.to_thread(parent.recv)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = _config(_line(port, Path(tmp) / "j.db"), Path(tmp))
            reader = cfg.devices[0]
            assert isinstance(reader, LlrpConfig)
            binding = _Binding(Binder(cfg))
            device = LlrpDevice(reader, DevicePlan(), Path(tmp))
            task = asyncio.create_task(device.run(binding))
            try:
                await asyncio.wait_for(binding.up.wait(), 30)
                for rate in rates:
                    before = binding.reads
                    cpu0, t0 = time.process_time(), time.perf_counter()
                    parent.send("go")
                    sent, sim_s = await asyncio.to_thread(parent.recv)
                    deadline = time.perf_counter() + 10
                    while binding.reads - before < sent and time.perf_counter() < deadline:
                        if task.done():
                            task.result()
                        await asyncio.sleep(0.005)
                    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
                    got = binding.reads - before
                    runs.append(
                        {
                            "offered_per_s": rate,
                            "sent": sent,
                            "ingested": got,
                            "dropped": sent - got,
                            "simulator_per_s": sent / sim_s,
                            "ingested_per_s": got / wall,
                            "cpu_s_per_1000_reports": 1000 * cpu / got if got else float("nan"),
                        }
                    )
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        parent.send("bye")
    finally:
        await asyncio.to_thread(proc.join, 10)
        if proc.is_alive():
            proc.kill()
    return {"sustained": runs[0], "max": runs[-1]}


async def pass_latency(host: str, port: int, passes: int = 60) -> dict[str, float]:
    """Last read -> pass committed, minus the quiet time, through a real Gateway: each pass
    event's `recorded` time against the reader's timestamp of the tag's last read
    (`detail.pass.last_seen`; the simulator's clock is this machine's)."""
    import json

    from gateway.app import Gateway
    from simulators.epc import sgtin96_series
    from simulators.llrp import LlrpReaderSim, TagPass

    epcs = sgtin96_series("04012345123456", 7, 1, passes, seed=9)
    async with LlrpReaderSim("impinj-r700", seed=2) as sim:
        with tempfile.TemporaryDirectory() as tmp:
            doc = _line(sim.port, Path(tmp) / "journal.db", (host, port))
            doc["devices"][0]["report_every_n_tags"] = 1  # what a portal sends: each read
            gw = Gateway(load_line(_write(doc, Path(tmp))))
            task = asyncio.create_task(gw.run())
            try:
                await sim.wait_inventorying(timeout=30)
                for epc in epcs:
                    await sim.run_passes([TagPass(epc, "in", (1, 2), 0.0, 0.3)], 0.0)
                assert gw.journal is not None
                journal = gw.journal
                deadline = time.monotonic() + 5
                while _passes(journal) < passes and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                docs = [json.loads(r.payload) for r in journal.recent]
            finally:
                gw.request_stop()
                await asyncio.wait_for(task, 10)
    lat = [
        1000 * (_epoch(d["recorded"]) - d["detail"]["pass"]["last_seen"]) - QUIET_MS
        for d in docs
        if d["type"] == "identified"
    ]
    return {
        "passes": len(lat),
        "missing": passes - len(lat),
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "max": max(lat) if lat else float("nan"),
    }


def _passes(journal: Any) -> int:
    return sum(1 for r in journal.recent if r.type == "identified")


def _write(doc: dict[str, Any], workdir: Path) -> Path:
    path = workdir / "line.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.llrp")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--broker", help="HOST:PORT of a broker, for the latency figure")
    args = parser.parse_args(argv)
    result = asyncio.run(llrp_ingest(args.seconds))
    for name, run in result.items():
        print(name, {k: round(v, 3) if isinstance(v, float) else v for k, v in run.items()})
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        print("pass latency (ms)", asyncio.run(pass_latency(host, int(port))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
