"""Binding: observations per second through the engine alone, and identity -> verdict written at
the PLC on a running line, with the journal's commit in the path.

Throughput (in this process, no I/O but the trace index in memory): scans through a plain
station, a station with route rules (each scan looks the unit up in the index), a packing
station (10 units and a case), and PLC cycles bound by window.

Verdict latency: a real `tracegate run` process, two TCP scanner simulators and a Modbus PLC
simulator in this process. Each unit is scanned at st10 (labelling), then at st30 (final
check: `rules.requires: [labelling]`, `verdict` to the PLC, a diverter); one unit in ten skips
st10 and must get the `missing_step` code. A third scanner reads 50 codes a second at another
station meanwhile. The figure: from the st30 scan sent to the PLC receiving the verdict write.

    python -m bench.binding --broker HOST:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import percentile
from gateway.binding import Binder
from gateway.config.models import LineConfig
from gateway.events import Observation, Scan, Signals, SignalValue
from simulators.codes import gs1_check_digit

GTIN = "0950600013435" + gs1_check_digit("0950600013435")
MISSING_STEP_CODE = 12


def code(serial: int) -> str:
    return f"]d201{GTIN}21{serial}"


def sscc(n: int) -> str:
    body = f"0{4012345}{n:09d}"
    return f"]C100{body}{gs1_check_digit(body)}"


# --- throughput of the engine ----------------------------------------------------------------


def _engine_line() -> LineConfig:
    plc = {
        "id": "press",
        "kind": "modbus",
        "host": "127.0.0.1",
        "signals": {
            "trigger": {"table": "coil", "address": 0, "type": "bool"},
            "result": {"table": "holding_register", "address": 0, "type": "int16"},
        },
    }
    cams = [{"id": f"cam-{n}", "kind": "tcp_scanner", "host": "h", "port": n} for n in range(1, 5)]
    return LineConfig.model_validate(
        {
            "gateway": {"id": "g", "site": "s", "line": "l"},
            "devices": [plc, *cams],
            "stations": [
                {"id": "st10", "step": "labelling", "identity": {"sources": ["cam-1"]}},
                {
                    "id": "st20",
                    "identity": {"sources": ["cam-2"]},
                    "rules": {"requires": ["labelling"]},
                },
                {
                    "id": "st30",
                    "identity": {"sources": ["cam-3"], "schemes": ["sgtin", "sscc"]},
                    "aggregation": {
                        "kind": "packing",
                        "parent": {"schemes": ["sscc"]},
                        "children": {"schemes": ["sgtin"]},
                        "count": 10,
                    },
                },
                {
                    "id": "st40",
                    "identity": {"sources": ["cam-4"]},
                    "trigger": {"device": "press", "signal": "trigger"},
                    "result": {"device": "press", "signal": "result"},
                },
            ],
        }
    )


def _rate(binder: Binder, observations: list[Observation]) -> float:
    view = binder.env.view
    t0 = time.perf_counter()
    for obs in observations:
        view.apply(binder.process(obs).changes)
    return len(observations) / (time.perf_counter() - t0)


def engine_throughput(n: int = 50_000) -> dict[str, float]:
    """Observations per second through the binder, per kind of station."""
    binder = Binder(_engine_line())
    out: dict[str, float] = {}
    out["plain_station"] = _rate(binder, [Scan("cam-1", i, code(i)) for i in range(n)])
    out["route_rules"] = _rate(binder, [Scan("cam-2", n + i, code(i)) for i in range(n)])
    packing: list[Observation] = []
    for case in range(n // 11):
        packing += [Scan("cam-3", 2 * n, code(case * 10 + k)) for k in range(10)]
        packing.append(Scan("cam-3", 2 * n, sscc(case)))
    out["packing"] = _rate(binder, packing)
    cycles: list[Observation] = []
    for i in range(n // 4):
        t = 3 * n + i
        cycles.append(Signals("press", t, (SignalValue("trigger", False),)))
        cycles.append(Scan("cam-4", t + 0.1, code(i)))
        cycles.append(
            Signals("press", t + 0.2, (SignalValue("trigger", True), SignalValue("result", 1)))
        )
    out["window_cycles"] = _rate(binder, cycles)
    return out


# --- identity -> verdict at the PLC ------------------------------------------------------------


def _verdict_line(workdir: Path, broker: tuple[str, int], ports: dict[str, int]) -> Path:
    cam = {"profile": "scanners/cognex-dataman-370", "host": "127.0.0.1"}
    doc: dict[str, Any] = {
        "gateway": {"id": "gw-bench", "site": "bench", "line": "line-1", "log_level": "warning"},
        "mqtt": {"host": broker[0], "port": broker[1]},
        "journal": {"path": str(workdir / "journal.db")},
        "devices": [
            {"id": "cam-10", **cam, "port": ports["cam-10"]},
            {"id": "cam-30", **cam, "port": ports["cam-30"]},
            {"id": "cam-bg", **cam, "port": ports["cam-bg"]},
            {
                "id": "diverter",
                "profile": "plcs/generic-modbus-tcp",
                "host": "127.0.0.1",
                "port": ports["plc"],
            },
        ],
        "stations": [
            {"id": "st10", "step": "labelling", "identity": {"sources": ["cam-10"]}},
            {
                "id": "st30",
                "step": "final-check",
                "identity": {"sources": ["cam-30"]},
                "rules": {
                    "requires": ["labelling"],
                    "verdict_codes": {"missing_step": MISSING_STEP_CODE},
                },
                "verdict": {"device": "diverter", "signal": "verdict"},
            },
            {"id": "st50", "identity": {"sources": ["cam-bg"]}},
        ],
    }
    path = workdir / "line.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


async def verdict_latency(host: str, port: int, units: int = 200) -> dict[str, Any]:
    from simulators.broker import free_port
    from simulators.codes import CodeGenerator
    from simulators.plc_modbus import ModbusPlcSim
    from simulators.scanner import TcpScannerSim

    ports = {k: free_port() for k in ("cam-10", "cam-30", "cam-bg", "plc")}
    writes: asyncio.Queue[tuple[float, int]] = asyncio.Queue()
    async with (
        TcpScannerSim("127.0.0.1", ports["cam-10"], terminator="crlf") as cam10,
        TcpScannerSim("127.0.0.1", ports["cam-30"], terminator="crlf") as cam30,
        TcpScannerSim("127.0.0.1", ports["cam-bg"], terminator="crlf") as cambg,
        ModbusPlcSim("plcs/generic-modbus-tcp", port=ports["plc"]) as plc,
    ):
        verdict_address = plc.layout.signals["verdict"].address
        respond = plc.respond

        async def watched(pdu: Any) -> Any:
            if pdu.function_code in (6, 16) and getattr(pdu, "address", -1) == verdict_address:
                value = pdu.registers[0] if hasattr(pdu, "registers") else pdu.value
                writes.put_nowait((time.perf_counter(), int(value)))
            return await respond(pdu)

        plc.respond = watched  # type: ignore[method-assign]
        with tempfile.TemporaryDirectory() as tmp:
            path = _verdict_line(Path(tmp), (host, port), ports)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway",
                "run",
                "-c",
                str(path),
                stdout=asyncio.subprocess.DEVNULL,
            )
            background = None
            try:
                for sim in (cam10, cam30, cambg):
                    await asyncio.wait_for(sim.wait_client(), 30)
                gen = CodeGenerator(3)

                async def noise() -> None:
                    while True:
                        await cambg.send(gen.gs1_datamatrix())
                        await asyncio.sleep(0.02)

                background = asyncio.create_task(noise())
                ok_ms: list[float] = []
                rejected_ms: list[float] = []
                wrong = 0
                for i in range(units):
                    skip = i % 10 == 9
                    if not skip:
                        await cam10.send(code(100_000 + i))
                        await asyncio.sleep(0.03)  # the unit travels to st30
                    t0 = time.perf_counter()
                    await cam30.send(code(100_000 + i))
                    at, value = await asyncio.wait_for(writes.get(), 10)
                    expected = MISSING_STEP_CODE if skip else 1
                    wrong += value != expected
                    (rejected_ms if skip else ok_ms).append(1000 * (at - t0))
            finally:
                if background is not None:
                    background.cancel()
                proc.terminate()
                await proc.wait()
    all_ms = ok_ms + rejected_ms
    return {
        "units": units,
        "wrong_verdicts": wrong,
        "p50": percentile(all_ms, 50),
        "p99": percentile(all_ms, 99),
        "max": max(all_ms),
        "rejected_p99": percentile(rejected_ms, 99),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.binding")
    parser.add_argument("--broker", help="HOST:PORT, for the verdict latency")
    args = parser.parse_args(argv)
    for name, rate in engine_throughput().items():
        print(f"{name}: {rate:,.0f} observations/s")
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        print("verdict latency (ms):", asyncio.run(verdict_latency(host, int(port))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
