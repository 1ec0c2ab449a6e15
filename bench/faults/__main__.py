"""The fault campaign: the virtual line of the oracle test (simulators/scenarios/line-assembly.yaml)
played against `tracegate run` under every fault of docs/reliability.md, and what reached the
broker compared with the ground truth each time.

    python -m bench.faults                  every part (about 25 minutes on 2 cores)
    python -m bench.faults --only power     one part (kills, power, broker, devices, disk, clock)
    --scale 0.1                             a tenth of each part's faults and units (smoke run)
    --jobs N                                parts run at once (each in its own process)
    --update-docs                           write the figures into docs/reliability.md

Parts:
    kills    100 SIGKILLs of the gateway at random moments under load (every other one aimed
             between a handshake's commit and its acknowledgement)
    power    100 power cuts: the gateway killed right after one of its next journal writes (in
             the middle of a commit), then every write it had not synced undone by the fault
             layer under its journal (bench/faults/shim.c), then the restart
    broker   20 broker restarts, then a 10-minute broker outage with the line running, then the
             replay
    devices  each kind of device restarted, made silent and sent garbage, repeatedly
    disk     the journal's disk full (ENOSPC), write errors and fsync errors (EIO), repeatedly
    clock    the gateway's wall clock set 1 hour ahead and 1 hour back, repeatedly

For each part: events lost (target 0), duplicated under another event id (target 0), re-sent with
the same event id (allowed: delivery is at least once), reordered within a station (target 0),
events without a cause, the oracle's verdict, and the recovery time of each fault. Exit status 1
when a part missed a target. Raw figures: bench/results/faults-PART.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.common import RESULTS, percentile
from bench.faults.layer import FaultLayer

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "simulators" / "scenarios" / "line-assembly.yaml"
DOC = ROOT / "docs" / "reliability.md"
START, END = "<!-- fault-figures:start -->", "<!-- fault-figures:end -->"
TARGETS = ("lost", "duplicated", "reordered", "unexplained", "resent_changed")

Disturb = Callable[[Any, FaultLayer | None, float], Coroutine[Any, Any, None]]


@dataclass
class Part:
    name: str
    what: str
    units: int
    faults: Callable[[float], dict[str, Any]]  # scale -> the scenario's fault overrides
    takt_s: float | None = None
    layer: bool = False  # the gateway runs under the fault layer
    power: bool = False  # its kills are power cuts
    disturb: Disturb | None = None  # a fault schedule of its own, beside the scenario's
    extra: dict[str, Any] = field(default_factory=dict)


def _n(count: int, scale: float) -> int:
    return max(1, round(count * scale))


def _kills(scale: float) -> dict[str, Any]:
    return {"gateway_kills": {"count": _n(100, scale), "from_unit": 15}}


def _broker(scale: float) -> dict[str, Any]:
    restarts = [{"at_unit": 20 + 12 * i, "duration_s": 1.0} for i in range(_n(20, scale))]
    last = restarts[-1]["at_unit"] + 30
    return {"broker_outages": [*restarts, {"at_unit": last, "duration_s": 600.0 * scale}]}


# Each kind of device, each way it fails: (device, kind, duration_s).
DEVICE_FAULTS = (
    ("cam-10", "restart", 0.0),  # a TCP scanner
    ("cam-10", "silence", 3.0),
    ("cam-10", "garbage", 1.5),
    ("hand-40", "restart", 0.0),  # a serial scanner (a pty)
    ("hand-40", "garbage", 1.5),
    ("press-plc", "restart", 0.0),  # an OPC UA PLC, handshake station
    ("press-plc", "silence", 2.0),
    ("laser-plc", "restart", 0.0),  # a Modbus PLC asking for serials
    ("laser-plc", "silence", 2.0),
    ("laser-plc", "garbage", 1.5),
    ("leak-plc", "silence", 2.0),  # a Modbus PLC, trigger station
    ("leak-plc", "garbage", 1.5),
    ("dock-reader", "restart", 0.0),  # an LLRP reader
    ("dock-reader", "silence", 6.0),
    ("dock-reader", "garbage", 0.0),
)


def _devices(scale: float) -> dict[str, Any]:
    faults = [
        {"device": dev, "kind": kind, "at_unit": 20 + 6 * (r * len(DEVICE_FAULTS) + k)}
        | ({"duration_s": d} if d else {})
        for r in range(_n(5, scale))
        for k, (dev, kind, d) in enumerate(DEVICE_FAULTS)
    ]
    return {"device_faults": faults}


async def _disk(line: Any, layer: FaultLayer | None, scale: float) -> None:
    """Full disk, write errors, fsync errors: each for 2 s, then 6 s of health, in turn."""
    assert layer is not None
    await line.running.wait()
    stations = tuple(s.id for s in line.sc.stations)
    kinds = [("disk_full", {"write": "enospc"}), ("write_eio", {"write": "eio"})]
    kinds.append(("fsync_eio", {"fsync": "eio"}))
    k = 0
    while not line.fed_all:
        kind, setting = kinds[k % len(kinds)]
        k += 1
        rec = line.truth.fault(kind, "journal", stations=stations)
        layer.set(**setting)
        await asyncio.sleep(2.0)  # how long the disk stays broken (a schedule, not a wait)
        layer.clear()
        rec.end = time.time()
        try:
            await line.mes.wait(lambda: not line.owing(None), 60, "the journal's backlog")
            rec.recovered = time.time()
        except TimeoutError:
            pass
        await asyncio.sleep(6.0)


async def _clock(line: Any, layer: FaultLayer | None, scale: float) -> None:
    """The gateway's wall clock 1 hour ahead for 5 s, back to true, 1 hour behind, back."""
    assert layer is not None
    await line.running.wait()
    k = 0
    while not line.fed_all:
        offset = 3600.0 if k % 2 == 0 else -3600.0
        k += 1
        for value, kind in ((offset, f"clock_{'+' if offset > 0 else '-'}1h"), (0.0, None)):
            rec = line.truth.fault(kind or "clock_back", "gateway clock")
            layer.set(clock=value)
            try:  # the line's events keep flowing with the clock moved
                before = line.mes.events
                await line.mes.wait(lambda b=before: line.mes.events > b + 20, 30, "events")
                rec.recovered = time.time()
            except TimeoutError:
                pass
            rec.end = time.time()
            await asyncio.sleep(5.0)


PARTS = {
    p.name: p
    for p in (
        Part("kills", "100 SIGKILLs under load", 900, _kills),
        Part("power", "100 power cuts (unsynced writes lost)", 900, _kills, layer=True, power=True),
        Part("broker", "20 broker restarts, a 10-minute outage", 1800, _broker, takt_s=0.4),
        Part("devices", "every device restarted, silent, sending garbage", 500, _devices),
        Part("disk", "ENOSPC, write EIO, fsync EIO", 500, lambda s: {}, layer=True, disturb=_disk),
        Part("clock", "wall clock +-1 h", 500, lambda s: {}, layer=True, disturb=_clock),
    )
}


class Gateway:
    """`tracegate run` as a child process, under the fault layer when there is one; `kill` is a
    SIGKILL, followed by a power cut when `power`."""

    def __init__(self, line_file: Path, log: Path, layer: FaultLayer | None, power: bool) -> None:
        self.line_file, self.log, self.layer, self.power = line_file, log, layer, power
        self.proc: asyncio.subprocess.Process | None = None
        self.cuts: list[dict[str, int]] = []
        self.rng = random.Random(11)
        self.line: Any = None  # the VirtualLine (whether a kill is aimed)
        self.starts = 0

    async def start(self) -> None:
        env = {**os.environ, **(self.layer.env() if self.layer else {})}
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "run", "-c", str(self.line_file),
                stdout=out, stderr=asyncio.subprocess.STDOUT, env=env, cwd=ROOT,
            )  # fmt: skip
        self.starts += 1

    async def kill(self) -> None:
        mid_write = False
        aimed = self.line is not None and self.line.kill_aimed
        if self.power and self.layer is not None and self.proc is not None and not aimed:
            # The cut strikes right after one of the journal's next few writes (between a write
            # and its sync: in the middle of a commit), or, when the journal writes nothing for
            # 1.5 s, wherever the gateway is. An aimed kill (the PLC's acks held after a commit)
            # strikes at once: waiting would outlast the PLC's handshake.
            self.layer.set(die_after_writes=self.rng.randint(1, 6))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.5):
                    await self.proc.wait()
                    mid_write = True
            self.layer.set(die_after_writes=0)
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self.layer is not None:
            if self.power:
                cut = self.layer.power_cut()
                self.cuts.append({"writes": cut.writes, "bytes": cut.bytes, "mid": mid_write})
            else:
                self.layer.forget()

    async def terminate(self) -> int | None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            return await self.proc.wait()
        return None


def scenario_for(part: Part, scale: float) -> Any:
    from simulators.line_scenario import load_scenario

    base = yaml.safe_load(SCENARIO.read_text())
    product = {k: base["faults"][k] for k in ("misreads", "duplicate_labels", "skips", "nok")}
    units = max(150, round(part.units * max(scale, 0.2)))
    # Serials for every board, however long the part runs.
    pools = [p | {"load": {"ranges": [[1, units + 200]]}} for p in base["pools"]]
    overrides: dict[str, Any] = {
        "units": units,
        "faults": product | part.faults(scale),
        "pools": pools,
    }
    if part.takt_s is not None:
        overrides["takt_s"] = part.takt_s
    return load_scenario(SCENARIO, **overrides)


async def run_part(part: Part, scale: float, workdir: Path) -> dict[str, Any]:
    from gateway.config import load_line
    from simulators.broker import Mosquitto
    from simulators.line import VirtualLine
    from simulators.line_oracle import compare

    scenario = scenario_for(part, scale)
    started = time.monotonic()
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    # Persistent, like a plant's broker: the MES's session (and what is queued for it) survives
    # a broker restart. Without it, what the gateway replays before the MES has subscribed
    # again is accepted (PUBACK) and dropped by the broker: lost at the consumer, not by us.
    with Mosquitto(persistence=True) as broker:
        async with VirtualLine(scenario, workdir / "line", broker) as line:
            journal = Path(load_line(line.line_file).config.journal.path).parent
            layer = FaultLayer(journal, workdir / "layer") if part.layer else None
            gw = Gateway(line.line_file, workdir / "logs" / "gateway.log", layer, part.power)
            gw.line = line
            disturb: asyncio.Task[None] | None = None
            try:
                if part.disturb is not None:
                    disturb = asyncio.create_task(part.disturb(line, layer, scale))
                truth = await line.run(gw)
                if disturb is not None:
                    await disturb
                await line.mes.wait(
                    lambda: len({e["event_id"] for e in line.mes.received}) >= line.mes.events,
                    20,
                    "every event",
                )
            finally:
                if disturb is not None and not disturb.done():
                    disturb.cancel()
                if layer is not None:
                    layer.clear()
                code = await gw.terminate()
    report = compare(truth, line.mes.received)
    # What arrived, for looking into a failure (`--keep`).
    (workdir / "received.json").write_text(json.dumps(line.mes.received))
    recovery: dict[str, list[float]] = defaultdict(list)
    struck: dict[str, int] = defaultdict(int)
    for f in truth.faults:
        if f.kind == "changeover":
            continue
        struck[f.kind] += 1
        if f.recovered is not None:
            # From the end of a fault that lasts (an outage, a full disk) to the gateway back
            # at work; from the strike itself when there is no such end (a kill: down, up).
            ended = f.end if f.end is not None and f.end < f.recovered else f.start
            recovery[f.kind].append(f.recovered - ended)
    return {
        "part": part.name,
        "what": part.what,
        "units": len(truth.planner.units),
        "expected": len(truth.expected),
        "delivered": len({e["event_id"] for e in line.mes.received}),
        "received": len(line.mes.received),
        "faults": dict(struck),
        "recovery_s": {
            k: {"p50": percentile(v, 50), "max": max(v), "n": len(v)} for k, v in recovery.items()
        },
        "counts": {k: report.counts.get(k, 0) for k in (*TARGETS, "resent")},
        "ok": report.ok,
        "failures": report.failures[:40],
        "notes": truth.notes[:20],
        "power_cuts": {
            "n": len(gw.cuts),
            "writes_undone": sum(c["writes"] for c in gw.cuts),
            "bytes_restored": sum(c["bytes"] for c in gw.cuts),
            "mid_write": sum(1 for c in gw.cuts if c["mid"]),
        },
        "gateway_starts": gw.starts,
        "exit_code": code,
        "seconds": round(time.monotonic() - started, 1),
    }


# --- the campaign -------------------------------------------------------------------------------


def _child(name: str, scale: float, out: Path, workdir: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.faults", "--part-child", name, "--scale", str(scale),
         "--out", str(out), "--workdir", str(workdir)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0 or not out.exists():
        return {"part": name, "ok": False, "error": (proc.stdout + proc.stderr)[-4000:]}
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def missed(r: dict[str, Any]) -> list[str]:
    if "error" in r:
        return ["the part did not finish"]
    why = [f"{k} {r['counts'][k]}" for k in TARGETS if r["counts"].get(k)]
    return why + ([] if r["ok"] else ["the oracle found differences"])


def _recovery(r: dict[str, Any]) -> str:
    parts = [
        f"{k} {v['p50']:.1f} / {v['max']:.1f} s"
        for k, v in sorted(r.get("recovery_s", {}).items())
        if k not in ("clock_back",)
    ]
    return "; ".join(parts) or "-"


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| part | faults struck | units | events | lost | duplicated | re-sent (same id) "
        "| reordered | without cause | recovery p50 / max | verdict |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|\n"
    )
    rows = []
    for r in results:
        if "error" in r:
            rows.append(f"| {r['part']} | did not finish | | | | | | | | | FAIL |")
            continue
        c = r["counts"]
        faults = ", ".join(f"{v} {k}" for k, v in sorted(r["faults"].items()))
        cuts = r.get("power_cuts", {})
        if cuts.get("n"):
            faults = (
                f"{cuts['n']} power cuts ({cuts.get('mid_write', 0)} in the middle of a commit; "
                f"{cuts['writes_undone']:,} unsynced writes undone)"
            )
        rows.append(
            f"| {r['part']} | {faults} | {r['units']:,} | {r['expected']:,} | {c['lost']} "
            f"| {c['duplicated']} | {c['resent']} | {c['reordered']} | {c['unexplained']} "
            f"| {_recovery(r)} | {'ok' if not missed(r) else 'FAIL: ' + ', '.join(missed(r))} |"
        )
    return head + "\n".join(rows) + "\n"


def update_docs(text: str) -> None:
    doc = DOC.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    DOC.write_text(pattern.sub(lambda _: f"{START}\n{text}{END}", doc))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    p.add_argument("--only", action="append", choices=sorted(PARTS), help="run only this part")
    p.add_argument("--scale", type=float, default=1.0, help="share of each part's faults")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--update-docs", action="store_true")
    p.add_argument("--keep", type=Path, help="keep each part's files (logs, journal) here")
    p.add_argument("--part-child", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.part_child:
        from gateway import log

        log.configure("warning", "json", stream=sys.stderr)
        result = asyncio.run(run_part(PARTS[args.part_child], args.scale, args.workdir))
        args.out.write_text(json.dumps(result, indent=2))
        return 0
    names = args.only or list(PARTS)
    # The longest first, so that two jobs finish together.
    names.sort(key=lambda n: -PARTS[n].units * (PARTS[n].takt_s or 0.14))
    started = time.time()
    print(
        f"Tracegate fault campaign, {time.strftime('%Y-%m-%d %H:%M')}, Python "
        f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, scale "
        f"{args.scale}: {', '.join(names)}",
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        tmp = (
            str(args.keep)
            if args.keep
            else stack.enter_context(tempfile.TemporaryDirectory(prefix="tracegate-faults-"))
        )

        def one(name: str) -> dict[str, Any]:
            t0 = time.monotonic()
            r = _child(name, args.scale, Path(tmp) / f"{name}.json", Path(tmp) / name)
            verdict = "ok" if not missed(r) else "FAIL " + ", ".join(missed(r))
            print(f"  {name}: {verdict} ({time.monotonic() - t0:.0f} s)", flush=True)
            return r

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(one, names))
    results.sort(key=lambda r: list(PARTS).index(r["part"]))
    minutes = (time.time() - started) / 60
    text = (
        f"Campaign of {time.strftime('%Y-%m-%d')} (`python -m bench.faults"
        f"{'' if args.scale == 1 else f' --scale {args.scale}'}`), Python "
        f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{minutes:.0f} min.\n\n" + table(results)
    )
    print("\n" + text)
    for r in results:
        for f in r.get("failures", [])[:10]:
            print(f"  {r['part']}: {f}")
        if "error" in r:
            print(f"  {r['part']}: {r['error']}")
    RESULTS.mkdir(exist_ok=True)
    for r in results:
        (RESULTS / f"faults-{r['part']}.json").write_text(json.dumps(r, indent=2))
    if args.update_docs:
        # Every part's latest figures (a part run alone replaces only its own row).
        latest = [
            json.loads((RESULTS / f"faults-{n}.json").read_text())
            for n in PARTS
            if (RESULTS / f"faults-{n}.json").exists()
        ]
        update_docs(text.split("\n\n", 1)[0] + "\n\n" + table(latest))
    return 1 if any(missed(r) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
