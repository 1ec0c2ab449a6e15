"""Modbus polling: polls per second of one connection through `ModbusDevice` (one poll group of
the ten signals of the generic profile, period 0: as fast as the line allows), against the raw
`AsyncModbusTcpClient` sending the same requests back to back in the same run (the ceiling),
and the CPU the adapter spends per 1,000 signal values.

`modbus_polls(host, port, seconds)` needs a Modbus server with the generic profile's map, e.g.
`python -m simulators.plc_modbus --profile plcs/generic-modbus-tcp --port 5020 --static`;
`python -m bench.modbus` starts one in its own process (so that the CPU figures are the
gateway's alone) and prints the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pymodbus.client import AsyncModbusTcpClient

from gateway.config.plc import ModbusConfig, PollGroup
from gateway.devices.base import DevicePlan
from gateway.devices.modbus import ModbusDevice
from gateway.devices.modbus_codec import Codec, plan_reads
from gateway.events import Observation
from simulators.plc_modbus import load_layout

PROFILE = "plcs/generic-modbus-tcp"


class _Counting:
    """A DeviceContext that only counts."""

    device_id = "bench-plc"

    def __init__(self) -> None:
        self.emitted = 0
        self.connected_event = asyncio.Event()

    def emit(self, observation: Observation) -> None:
        self.emitted += 1

    def connected(self, detail: str) -> None:
        self.connected_event.set()


def bench_config(host: str, port: int) -> ModbusConfig:
    """The generic profile, every signal in one poll group of period 0. The config model asks
    for at least 10 ms (sensible on a line); the benchmark wants the line's own limit."""
    layout = load_layout(PROFILE)
    signals = {n: s.model_copy(update={"poll": "bench"}) for n, s in layout.signals.items()}
    return layout.model_copy(
        update={
            "id": "bench-plc",
            "host": host,
            "port": port,
            "poll_groups": {"bench": PollGroup.model_construct(period_ms=0)},
            "signals": signals,
        }
    )


async def _raw(config: ModbusConfig, seconds: float) -> tuple[int, float]:
    """Polls done by the raw client in `seconds`, and the CPU seconds spent."""
    codec = Codec(config.byte_order, config.word_order)
    reads = plan_reads(config.signals, config.signals, codec).reads
    client = AsyncModbusTcpClient(config.host or "", port=config.port, retries=0, reconnect_delay=0)
    if not await client.connect():
        raise RuntimeError(f"no Modbus server at {config.host}:{config.port}")
    methods = {
        "coil": client.read_coils,
        "discrete_input": client.read_discrete_inputs,
        "holding_register": client.read_holding_registers,
        "input_register": client.read_input_registers,
    }
    polls = 0
    try:
        cpu0, end = time.process_time(), time.perf_counter() + seconds
        while time.perf_counter() < end:
            for read in reads:
                response = await methods[read.table](
                    read.address, count=read.count, device_id=read.unit_id
                )
                if response.isError():
                    raise RuntimeError(f"the server refused {read}: {response}")
            polls += 1
        return polls, time.process_time() - cpu0
    finally:
        client.close()


async def _device(config: ModbusConfig, seconds: float) -> tuple[int, int, float]:
    """Polls and signal values of ModbusDevice in `seconds`, and the CPU seconds spent."""
    device = ModbusDevice(config, DevicePlan(watch=frozenset(config.signals)), Path("."))
    ctx = _Counting()
    task = asyncio.create_task(device.run(ctx))
    try:
        async with asyncio.timeout(10):
            await ctx.connected_event.wait()
        polls0, values0 = device.stats.polls, device.stats.values
        cpu0 = time.process_time()
        await asyncio.sleep(seconds)
        cpu = time.process_time() - cpu0
        return device.stats.polls - polls0, device.stats.values - values0, cpu
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def modbus_polls(host: str, port: int, seconds: float) -> dict[str, Any]:
    """Figures of one run (see the module docstring); the raw ceiling is measured first."""
    config = bench_config(host, port)
    raw_polls, raw_cpu = await _raw(config, seconds)
    polls, values, cpu = await _device(config, seconds)
    n = len(config.signals)
    requests = len(plan_reads(config.signals, config.signals, Codec()).reads)
    raw_rate, rate = raw_polls / seconds, polls / seconds
    return {
        "signals_per_poll": n,
        "requests_per_poll": requests,
        "raw_polls_per_s": round(raw_rate, 1),
        "device_polls_per_s": round(rate, 1),
        "device_share_of_raw_percent": round(100 * rate / raw_rate, 1) if raw_rate else 0.0,
        "device_values_per_s": round(values / seconds, 1),
        "cpu_s_per_1000_values": round(1000 * cpu / values, 4) if values else float("nan"),
        "raw_cpu_s_per_1000_values": round(1000 * raw_cpu / (raw_polls * n), 4)
        if raw_polls
        else float("nan"),
    }


def main(seconds: float = 5.0) -> int:
    """Start the simulator in its own process and print the figures."""
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators.plc_modbus",
            "--profile",
            PROFILE,
            "--port",
            "0",
            "--static",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sim.stdout is not None
        line = sim.stdout.readline()
        found = re.search(r"listening on ([^:]+):(\d+)", line)
        if found is None:
            raise RuntimeError(f"the simulator did not start: {line!r}")
        figures = asyncio.run(modbus_polls(found[1], int(found[2]), seconds))
    finally:
        sim.terminate()
        sim.wait(10)
    for name, value in figures.items():
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
