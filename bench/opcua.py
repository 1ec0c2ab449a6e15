"""OPC UA ingestion: value changes per second through `OpcuaDevice` from one simulated PLC.

The PLC (the OPC UA simulator, an asyncua server) runs in a child process and changes N UInt32
variables as fast as it can, round after round; its own change rate is the ceiling of the run
(asyncua's server, in Python, is the slow side). The gateway side watches all N (no snapshot:
each change is one `Signals`) and counts what its device context receives. CPU seconds per
1,000 changes are this process's (`time.process_time()`): the adapter and asyncua's client.

    python -m bench.opcua --seconds 5 --variables 10
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from gateway.config.plc import OpcuaConfig, OpcuaSignal
from gateway.devices.base import DevicePlan
from gateway.devices.opcua import OpcuaDevice
from gateway.events import Observation, Signals
from simulators.plc_opcua import OpcuaPlcSim

VARIABLES = 10


def _signals(n: int) -> dict[str, OpcuaSignal]:
    return {
        f"v{i}": OpcuaSignal(
            node=f"ns=2;s=Flood.v{i}", type="uint32", sampling_ms=0, queue_size=10_000
        )
        for i in range(n)
    }


# --- the PLC, in its own process --------------------------------------------------------------


def _plc_process(conn: Connection, n: int, seconds: float) -> None:
    asyncio.run(_flood(conn, n, seconds))


async def _flood(conn: Connection, n: int, seconds: float) -> None:
    async with OpcuaPlcSim(signals=_signals(n), security=False) as sim:
        conn.send(sim.endpoint)
        await asyncio.to_thread(conn.recv)  # go
        names = list(sim.signals)
        rounds, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            rounds += 1
            for name in names:
                sim.memory.write(name, rounds)
            await sim.flush()  # and lets the server answer its clients
        conn.send((rounds * n, time.perf_counter() - start))
        await asyncio.to_thread(conn.recv)  # bye


# --- the gateway side -------------------------------------------------------------------------


class _Counter:
    """A DeviceContext that counts the changes it is handed."""

    def __init__(self) -> None:
        self.changes = 0
        self.connected_event = asyncio.Event()

    @property
    def device_id(self) -> str:
        return "bench-plc"

    def emit(self, observation: Observation) -> None:
        if isinstance(observation, Signals) and not observation.initial:
            self.changes += len(observation.values)

    def connected(self, detail: str) -> None:
        self.connected_event.set()


async def opcua_changes(seconds: float, variables: int = VARIABLES) -> dict[str, Any]:
    """Changes/s ingested through OpcuaDevice, the server's own change rate (the ceiling), CPU
    seconds per 1,000 changes (this process), and changes lost (should be 0)."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_plc_process, args=(child, variables, seconds), daemon=True)
    proc.start()
    try:
        endpoint = await asyncio.to_thread(parent.recv)
        config = OpcuaConfig(
            id="bench-plc",
            kind="opcua",
            endpoint=endpoint,
            publishing_interval_ms=50,
            signals=_signals(variables),
        )
        plan = DevicePlan(watch=frozenset(config.signals))
        counter = _Counter()
        with tempfile.TemporaryDirectory() as state:
            device = OpcuaDevice(config, plan, Path(state))
            task = asyncio.create_task(device.run(counter))
            try:
                await asyncio.wait_for(counter.connected_event.wait(), 30)
                await asyncio.sleep(0.5)  # the subscription is created after the initial read
                cpu0, t0 = time.process_time(), time.perf_counter()
                parent.send("go")
                produced, server_s = await asyncio.to_thread(parent.recv)
                # The last publish follows the last change by up to one publishing interval.
                deadline = time.perf_counter() + 2.0
                while counter.changes < produced and time.perf_counter() < deadline:
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.01)
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        parent.send("bye")
    finally:
        await asyncio.to_thread(proc.join, 10)
        if proc.is_alive():
            proc.kill()
    received = counter.changes
    return {
        "variables": variables,
        "server_changes_per_s": produced / server_s,
        "ingested_changes_per_s": received / wall,
        "changes": received,
        "lost": produced - received,
        "cpu_s_per_1000_changes": 1000 * cpu / received if received else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.opcua")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--variables", type=int, default=VARIABLES)
    args = parser.parse_args(argv)
    result = asyncio.run(opcua_changes(args.seconds, args.variables))
    for key, value in result.items():
        print(f"{key}: {value:,.3f}" if isinstance(value, float) else f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
