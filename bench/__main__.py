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
    print()
    print(report.table())
    print(f"\nraw figures: {report.save('latest')}")
    return 0 if all(f.ok is not False for f in report.figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
