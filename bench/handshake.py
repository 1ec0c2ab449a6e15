"""PLC request -> acknowledgement latency, with the journal's durable commit in the path.

A simulated PLC (OPC UA or Modbus, in this process) runs the station program in handshake mode:
it publishes a cycle's data, raises its request, and watches for the gateway's ack. A real
`tracegate run` process reads the request and the cycle's data, commits the record (fsync),
writes verdict and ack. The figure is the PLC's own: from raising the request to seeing the ack
(its memory is scanned every 2 ms, as a PLC scans cyclically), for every cycle.

OPC UA: a 10 ms publishing interval, sampling as fast as the server can. Modbus: the handshake
poll group at 10 ms. Both are settings a line would choose for a handshake.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import describe
from simulators.plc_modbus import ModbusPlcSim
from simulators.plc_model import CycleSpec
from simulators.plc_opcua import OpcuaPlcSim


def _line(workdir: Path, host: str, port: int, device: dict[str, Any]) -> Path:
    doc = {
        "gateway": {"id": "gw-bench", "site": "bench", "line": "line-1", "log_level": "warning"},
        "mqtt": {"host": host, "port": port},
        "journal": {"path": str(workdir / "journal.db")},
        "devices": [device],
        "stations": [
            {
                "id": "st30",
                "identity": {"signal": {"device": "press", "signal": "part_id"}},
                "handshake": {
                    "device": "press",
                    "request": "request",
                    "ack": "ack",
                    "verdict": "verdict",
                },
                "parameters": [
                    {"device": "press", "signal": s, "min": 0, "max": 1000}
                    for s in ("torque", "angle", "temperature")
                ],
                "result": {"device": "press", "signal": "result"},
            }
        ],
    }
    path = workdir / "line.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


async def _run(
    sim: Any, device: dict[str, Any], host: str, port: int, cycles: int, program: Any
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tracegate-bench-") as tmp:
        line = _line(Path(tmp), host, port, device)
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(line)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            t0 = time.perf_counter()
            await asyncio.wait_for(program(cycles), 300)
            wall = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(10)
    truth = sim.truth if hasattr(sim, "truth") else sim.program.truth
    acked = [c for c in truth if c.outcome == "acked"][5:]  # past start-up and connection
    latencies = [(c.acked - c.data_ready) * 1000 for c in acked]
    return {
        "cycles": len(acked),
        "cycles_per_s": len(truth) / wall,
        **{f"latency_ms_{k}": v for k, v in describe(latencies).items() if k != "n"},
    }


async def opcua(host: str, port: int, cycles: int = 300) -> dict[str, Any]:
    spec = CycleSpec(mode="handshake", cycle_time_s=0.02, ack_timeout_s=30, seed=1)
    async with OpcuaPlcSim("plcs/siemens-s7-1500", security=False) as sim:
        device = {
            "id": "press",
            "profile": "plcs/siemens-s7-1500",
            "endpoint": sim.endpoint,
            "security_mode": "None",
            "publishing_interval_ms": 10,
        }
        program = sim.load_program(spec)
        return await _run(sim, device, host, port, cycles, program.run)


async def modbus(host: str, port: int, cycles: int = 300) -> dict[str, Any]:
    spec = CycleSpec(mode="handshake", cycle_time_s=0.02, ack_timeout_s=30, seed=2)
    sim = ModbusPlcSim("plcs/generic-modbus-tcp", units={1: spec}, cycles=None)
    sim.specs = {1: None}  # the program is driven below, for a known number of cycles
    async with sim:
        device = {
            "id": "press",
            "profile": "plcs/generic-modbus-tcp",
            "host": "127.0.0.1",
            "port": sim.port,
            "poll_groups": {"default": {"period_ms": 100}, "handshake": {"period_ms": 10}},
        }
        from simulators.plc_model import StationProgram

        program = StationProgram(spec, sim.memory(1))
        result = await _run(program, device, host, port, cycles, program.run)
        return result
