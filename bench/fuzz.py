"""The fuzzing campaign: every fuzz target of tests/fuzz/ (the `test_fuzz_*` tests) with at
least 100,000 inputs each, random seeds, and the figures per target (docs/fuzzing.md).

    python -m bench.fuzz                 the campaign: 100,000 inputs a target, random seeds
    --examples N                         inputs a target (hypothesis examples)
    --jobs N                             targets run at once (default: the CPU count)
    --only TEXT                          only targets whose test name contains TEXT
    --seed N                             seed of the first target (the next get N+1 ...)
    --update-docs                        write the figures into docs/fuzzing.md's table

Each target runs in its own pytest process with TRACEGATE_FUZZ_EXAMPLES, TRACEGATE_FUZZ_SEED and
TRACEGATE_FUZZ_STATS set (tests/fuzz/harness.py), so a crash in one stops only that one: it is
reported with hypothesis' minimal failing input, and the exit status is 1. The raw figures go to
bench/results/fuzz.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import RESULTS

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "fuzzing.md"
START, END = "<!-- fuzz-figures:start -->", "<!-- fuzz-figures:end -->"
CAMPAIGN_EXAMPLES = 100_000
PYTEST = (sys.executable, "-m", "pytest", "-p", "no:cacheprovider")


@dataclass
class Run:
    node: str
    seed: int
    seconds: float = 0.0
    passed: bool = False
    output: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def test(self) -> str:
        return self.node.rpartition("::")[2]


def collect(only: str | None) -> list[str]:
    """The node ids of the fuzz targets."""
    proc = subprocess.run(
        [*PYTEST, "--collect-only", "-q", "tests/fuzz", "-k", "test_fuzz_"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    nodes = [line for line in proc.stdout.splitlines() if "::test_fuzz_" in line]
    return [n for n in nodes if only is None or only in n]


def run_target(run: Run, examples: int, stats_dir: Path) -> Run:
    stats = stats_dir / f"{run.test}.json"
    env = {
        **os.environ,
        "TRACEGATE_FUZZ_EXAMPLES": str(examples),
        "TRACEGATE_FUZZ_SEED": str(run.seed),
        "TRACEGATE_FUZZ_STATS": str(stats),
    }
    started = time.monotonic()
    proc = subprocess.run(
        [*PYTEST, run.node, "-q", "-p", "no:logging", "-o", "timeout=0", "--no-header", "-rN"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    run.seconds = time.monotonic() - started
    run.passed = proc.returncode == 0
    run.output = proc.stdout + proc.stderr
    if stats.exists():
        run.stats = json.loads(stats.read_text())
    return run


def figures(run: Run) -> list[dict[str, Any]]:
    """One row per target the run counted (a test counts one target)."""
    rows = []
    for target, s in sorted(run.stats.items()):
        outcomes: dict[str, int] = s["outcomes"]
        rows.append(
            {
                "target": target,
                "test": run.test,
                "seed": run.seed,
                "inputs": s["inputs"],
                "seconds": run.seconds,
                "max_ms": 1000 * s["max_s"],
                "outcomes": len([o for o in outcomes if o.startswith("ok")]),
                "rejections": len([o for o in outcomes if o.startswith("rejected")]),
                "known": s["known"],
                "crashes": 0 if run.passed else 1,
                "crashing_inputs": sum(n for o, n in outcomes.items() if o.startswith("crash")),
            }
        )
    if not rows:  # nothing counted: the test did not even start
        rows.append(
            {"target": run.test, "test": run.test, "seed": run.seed, "inputs": 0}
            | {"seconds": run.seconds, "max_ms": 0.0, "outcomes": 0, "rejections": 0}
            | {"known": {}, "crashes": 0 if run.passed else 1, "crashing_inputs": 0}
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| target | inputs | seed | time | max per input | rejection reasons seen "
        "| known findings hit | crashes |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        known = ", ".join(f"{name} ({n:,})" for name, n in sorted(r["known"].items())) or "none"
        out.append(
            f"| {r['target']} | {r['inputs']:,} | {r['seed']} | {r['seconds']:,.0f} s "
            f"| {r['max_ms']:,.1f} ms | {r['rejections']} | {known} | {r['crashes']} |"
        )
    return "\n".join(out)


def update_docs(text: str) -> None:
    doc = DOC.read_text()
    if START not in doc or END not in doc:
        raise SystemExit(f"{DOC} has no {START} ... {END} block")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def failure_excerpt(output: str) -> str:
    """Hypothesis' report of the minimal failing input, and the exception."""
    lines = output.splitlines()
    keep = [
        i
        for i, line in enumerate(lines)
        if re.match(r"^E\s", line) or "Falsifying example" in line or "Failing test case" in line
    ]
    return "\n".join(lines[keep[0] : keep[-1] + 1]) if keep else "\n".join(lines[-40:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz")
    parser.add_argument("--examples", type=int, default=CAMPAIGN_EXAMPLES)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args(argv)
    nodes = collect(args.only)
    if not nodes:
        print("no fuzz target matches", file=sys.stderr)
        return 2
    first = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    runs = [Run(node, first + i) for i, node in enumerate(nodes)]
    print(
        f"Tracegate fuzzing campaign, {time.strftime('%Y-%m-%d %H:%M')}, Python "
        f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs: "
        f"{len(runs)} targets, {args.examples:,} inputs each, {args.jobs} at a time",
        flush=True,
    )
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="tracegate-fuzz-") as tmp,
        ThreadPoolExecutor(args.jobs) as pool,
    ):
        futures = [pool.submit(run_target, run, args.examples, Path(tmp)) for run in runs]
        for future in futures:
            run = future.result()
            verdict = "ok" if run.passed else "CRASH"
            print(f"  {run.test} (seed {run.seed}): {verdict}, {run.seconds:,.0f} s", flush=True)
    total = time.monotonic() - started
    rows = [row for run in runs for row in figures(run)]
    rendered = table(rows)
    crashes = sum(r["crashes"] for r in rows)
    summary = (
        f"Campaign of {time.strftime('%Y-%m-%d')} (`python -m bench.fuzz`), Python "
        f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{args.jobs} targets at a time: {sum(r['inputs'] for r in rows):,} inputs in "
        f"{total / 60:,.1f} min, {crashes} crash{'es' if crashes != 1 else ''}."
    )
    print(f"\n{summary}\n\n{rendered}")
    for run in runs:
        if not run.passed:
            print(f"\n--- {run.node} (seed {run.seed}) failed:\n{failure_excerpt(run.output)}")
    RESULTS.mkdir(exist_ok=True)
    raw = RESULTS / "fuzz.json"
    raw.write_text(json.dumps({"summary": summary, "targets": rows}, indent=1))
    print(f"\nraw figures: {raw}")
    if args.update_docs:
        update_docs(f"{summary}\n\n{rendered}")
        print(f"figures written to {DOC}")
    return 0 if crashes == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
