"""Run every benchmark against one private Mosquitto and print each figure beside its target and
the ceiling measured in the same run: `python -m bench` (or `make bench`).

    --quick        smaller sizes (a minute instead of several), for a smoke run
    --backlog N    size of the replay backlog (default 1,000,000)

The table is printed as Markdown, ready for docs/performance.md; the raw figures are written to
bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from typing import Any

from bench.ceiling import raw_paho_qos1
from bench.common import Figure, Report
from bench.pipeline import latency, throughput
from bench.replay import replay
from gateway import log
from simulators.broker import Mosquitto

PAYLOAD_BYTES = 640  # a typical `identified` event with a GS1 DataMatrix identity


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backlog", type=int, default=None)
    parser.add_argument("--no-plc", action="store_true", help="skip the PLC benchmarks")
    parser.add_argument("--no-rfid", action="store_true", help="skip the RFID benchmarks")
    args = parser.parse_args(argv)
    n = 30_000 if args.quick else 200_000
    backlog = args.backlog or (100_000 if args.quick else 1_000_000)
    log.configure("warning", "json", stream=sys.stderr)
    report = Report()
    print(
        f"Tracegate benchmarks, {time.strftime('%Y-%m-%d %H:%M')}, Python "
        f"{platform.python_version()}, {platform.machine()}",
        flush=True,
    )
    with Mosquitto() as broker:
        host, port = broker.host, broker.port
        print("raw paho QoS 1 (the ceiling) ...", flush=True)
        ceiling = max(raw_paho_qos1(host, port, n, PAYLOAD_BYTES) for _ in range(2))
        report.add(Figure("raw paho QoS 1 publish (ceiling)", ceiling, "msg/s"))

        print("durable path: observation -> commit -> PUBACK -> delete ...", flush=True)
        tp = asyncio.run(throughput(host, port, n))
        rate = tp["events_per_s"]
        report.add(
            Figure(
                "durable path throughput", rate, "events/s", ">= 15,000", ceiling, rate >= 15_000
            )
        )
        share = 100 * rate / ceiling
        report.add(Figure("durable path / raw ceiling", share, "%", ">= 70 %", None, share >= 70))

        print("latency at 1,000 events/s ...", flush=True)
        lat = asyncio.run(latency(host, port, 1000.0, 10.0 if not args.quick else 4.0))
        report.add(
            Figure(
                "latency observation -> PUBACK p50",
                lat["p50"],
                "ms",
                "<= 2 ms",
                None,
                lat["p50"] <= 2,
            )
        )
        report.add(
            Figure(
                "latency observation -> PUBACK p99",
                lat["p99"],
                "ms",
                "<= 10 ms",
                None,
                lat["p99"] <= 10,
            )
        )

        print(
            f"replay of a {backlog:,}-event backlog with live scans (gateway process) ...",
            flush=True,
        )
        rp = asyncio.run(replay(host, port, backlog))
        report.add(
            Figure(
                f"replay of {backlog:,} backlog",
                rp["replay_per_s"],
                "events/s",
                ">= 15,000",
                ceiling,
                rp["replay_per_s"] >= 15_000,
            )
        )
        live = rp["live_ms"]
        report.add(Figure("live scan -> delivered during replay p50", live["p50"], "ms"))
        report.add(
            Figure(
                "live scan -> delivered during replay p99",
                live["p99"],
                "ms",
                "<= 100 ms",
                None,
                live["p99"] <= 100,
            )
        )
        report.add(
            Figure(
                f"RSS with {backlog:,} backlog (max)",
                rp["rss_max_mib"],
                "MiB",
                "<= 80 MiB",
                None,
                rp["rss_max_mib"] <= 80,
            )
        )
        report.add(
            Figure(
                f"start to READY=1 ({backlog:,} backlog)",
                rp["ready_s"] * 1000,
                "ms",
                "<= 2,000 ms",
                None,
                rp["ready_s"] <= 2,
            )
        )
        if not args.no_plc:
            _plc(report, host, port, quick=args.quick)
        if not args.no_rfid:
            _rfid(report, host, port, quick=args.quick)
        _binding(report, host, port, quick=args.quick)
    print()
    print(report.table())
    print(f"\nraw figures: {report.save('latest')}")
    return 0 if all(f.ok is not False for f in report.figures) else 1


def _plc(report: Report, host: str, port: int, *, quick: bool) -> None:
    from bench import handshake
    from bench.modbus import modbus_polls
    from bench.opcua import opcua_changes

    seconds = 2.0 if quick else 5.0
    print("OPC UA value changes ingested (server in its own process) ...", flush=True)
    oc = asyncio.run(opcua_changes(seconds))
    report.add(
        Figure(
            "OPC UA changes ingested",
            oc["ingested_changes_per_s"],
            "changes/s",
            "",
            oc["server_changes_per_s"],
            oc["lost"] == 0,
            note=f"{oc['lost']} lost",
        )
    )
    report.add(
        Figure(
            "OPC UA CPU per 1,000 changes/s", oc["cpu_s_per_1000_changes"] * 1000, "ms of CPU per s"
        )
    )
    print("Modbus polls per connection (vs the raw pymodbus client) ...", flush=True)
    mb = _modbus(modbus_polls, seconds)
    report.add(
        Figure(
            "Modbus polls per connection",
            mb["device_polls_per_s"],
            "polls/s",
            "",
            mb["raw_polls_per_s"],
        )
    )
    report.add(
        Figure(
            "Modbus CPU per 1,000 values/s", mb["cpu_s_per_1000_values"] * 1000, "ms of CPU per s"
        )
    )
    cycles = 100 if quick else 300
    for name, run in (("OPC UA", handshake.opcua), ("Modbus", handshake.modbus)):
        print(f"{name} handshake: request -> ack, commit in the path ...", flush=True)
        hs = asyncio.run(run(host, port, cycles))
        report.add(Figure(f"{name} request -> ack p50", hs["latency_ms_p50"], "ms"))
        report.add(
            Figure(
                f"{name} request -> ack p99",
                hs["latency_ms_p99"],
                "ms",
                "<= 20 ms",
                None,
                hs["latency_ms_p99"] <= 20,
            )
        )


def _rfid(report: Report, host: str, port: int, *, quick: bool) -> None:
    from bench.llrp import SUSTAINED, llrp_ingest, pass_latency

    print("RFID tag reports through LLRP decoding and pass building (reader process) ...")
    ing = asyncio.run(llrp_ingest(2.0 if quick else 5.0))
    run = ing["sustained"]
    report.add(
        Figure(
            f"RFID reports ingested, {SUSTAINED:,}/s offered",
            run["ingested_per_s"],
            "reports/s",
            ">= 10,000, none dropped",
            run["simulator_per_s"],
            run["ingested_per_s"] >= 10_000 and run["dropped"] == 0,
            note=f"{run['dropped']} dropped",
        )
    )
    top = ing["max"]
    report.add(
        Figure(
            "RFID reports ingested, offered as fast as the simulator can",
            top["ingested_per_s"],
            "reports/s",
            "none dropped",
            top["simulator_per_s"],
            top["dropped"] == 0,
            note=f"{top['dropped']} dropped",
        )
    )
    report.add(
        Figure("RFID CPU per 1,000 reports", top["cpu_s_per_1000_reports"] * 1000, "ms of CPU")
    )
    print("RFID pass latency: last read -> pass committed, quiet time subtracted ...")
    lat = asyncio.run(pass_latency(host, port, 30 if quick else 60))
    report.add(Figure("RFID pass latency after the quiet time p50", lat["p50"], "ms"))
    report.add(
        Figure(
            "RFID pass latency after the quiet time p99",
            lat["p99"],
            "ms",
            "",
            None,
            lat["missing"] == 0,
            note=f"{lat['missing']} passes missing",
        )
    )


def _binding(report: Report, host: str, port: int, *, quick: bool) -> None:
    from bench.binding import engine_throughput, verdict_latency

    print("binding: observations through the engine alone ...", flush=True)
    for kind, rate in engine_throughput(20_000 if quick else 50_000).items():
        report.add(Figure(f"binding throughput, {kind.replace('_', ' ')}", rate, "obs/s"))
    print("identity -> verdict written at the PLC (gateway process, rules, commit) ...")
    v = asyncio.run(verdict_latency(host, port, 100 if quick else 300))
    report.add(Figure("identity -> verdict written p50", v["p50"], "ms"))
    report.add(
        Figure(
            "identity -> verdict written p99",
            v["p99"],
            "ms",
            "<= 50 ms",
            None,
            v["p99"] <= 50 and v["wrong_verdicts"] == 0,
            note=f"{v['wrong_verdicts']} wrong verdicts",
        )
    )


def _modbus(modbus_polls: Any, seconds: float) -> dict[str, Any]:
    """The Modbus figures with the simulator in a process of its own (CPU is the gateway's)."""
    import re
    import subprocess

    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators.plc_modbus",
            "--profile",
            "plcs/generic-modbus-tcp",
            "--port",
            "0",
            "--static",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sim.stdout is not None
        found = re.search(r"listening on ([^:]+):(\d+)", sim.stdout.readline())
        if found is None:
            raise RuntimeError("the Modbus simulator did not start")
        return dict(asyncio.run(modbus_polls(found[1], int(found[2]), seconds)))
    finally:
        sim.terminate()
        sim.wait(10)


if __name__ == "__main__":
    raise SystemExit(main())
