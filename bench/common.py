"""What the benchmarks share: a private broker, a representative event, percentiles, RSS."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators.codes import CodeGenerator

RESULTS = Path(__file__).parent / "results"


def sample_codes(n: int, seed: int = 1) -> list[str]:
    """Realistic scans: GS1 DataMatrix with AIM prefix, GTIN + serial + lot + expiry."""
    gen = CodeGenerator(seed)
    return [gen.gs1_datamatrix().text(True) for _ in range(n)]


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def rss_mib(pid: int | None = None) -> float:
    """Resident set size from /proc (Linux)."""
    path = f"/proc/{pid or 'self'}/status"
    for line in Path(path).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    target: str = ""
    ceiling: float | None = None
    ok: bool | None = None
    note: str = ""


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def add(self, fig: Figure) -> Figure:
        self.figures.append(fig)
        print(
            f"  {fig.name}: {fig.value:,.2f} {fig.unit}"
            + (f"  (target {fig.target})" if fig.target else "")
            + (f"  [ceiling {fig.ceiling:,.0f}]" if fig.ceiling else "")
            + ("" if fig.ok is None else ("  OK" if fig.ok else "  MISSED")),
            flush=True,
        )
        return fig

    def table(self) -> str:
        rows = ["| figure | measured | target | ceiling (same run) | |", "|---|---|---|---|---|"]
        for f in self.figures:
            ceiling = f"{f.ceiling:,.0f}" if f.ceiling else ""
            verdict = "" if f.ok is None else ("met" if f.ok else "**missed**")
            rows.append(
                f"| {f.name} | {f.value:,.1f} {f.unit} | {f.target} | {ceiling} | {verdict} |"
            )
        return "\n".join(rows)

    def save(self, name: str) -> Path:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{name}.json"
        path.write_text(json.dumps([f.__dict__ for f in self.figures], indent=2))
        return path


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def describe(values: list[float]) -> dict[str, Any]:
    return {
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else float("nan"),
        "n": len(values),
    }
