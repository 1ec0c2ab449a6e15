"""Metrics: the Prometheus text exposition format (0.0.4), histograms, and the process's own
figures (resident memory, event loop lag).

Nothing here sits on the hot path. The parts count what they do in plain ints and floats of
their own (`DeviceCounters`, `BinderLoop.events_by_type`, `ForwarderStats` ...), updated inline
without locks or allocation; at scrape time `gateway.status` reads them into `Family` objects
and `render` writes the text. The one structure the parts update themselves is `Histogram`
(commit and publish latencies, once per commit or per round trip, never per event): an
`observe` is a bisect and two additions.

The format is written by hand rather than with prometheus_client: it is a few lines, and it
keeps the dependency list short (see docs/status.md for every metric).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


class Histogram:
    """Counts of observations per bucket (upper bounds, in seconds), their sum and count."""

    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: Iterable[float]) -> None:
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * (len(self.buckets) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket that holds quantile `q` (None when empty; +Inf when
        it is above every bound): a coarse figure for the status page."""
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for bound, n in zip((*self.buckets, math.inf), self.counts, strict=True):
            seen += n
            if seen >= rank:
                return bound
        return math.inf  # pragma: no cover - seen reaches count


# Latencies of a commit (fsync included) and of a PUBLISH until its PUBACK, in seconds.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LOOP_LAG_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


@dataclass(slots=True)
class Family:
    """One metric: its name, type (`counter`, `gauge`, `histogram`), help text and samples."""

    name: str
    kind: str
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Family:
        self.samples.append((self.name, tuple(labels.items()), value))
        return self

    def add_histogram(self, h: Histogram, **labels: str) -> Family:
        base = tuple(labels.items())
        cumulative = 0
        for bound, n in zip(h.buckets, h.counts, strict=False):
            cumulative += n
            self.samples.append((f"{self.name}_bucket", (*base, ("le", _num(bound))), cumulative))
        self.samples.append((f"{self.name}_bucket", (*base, ("le", "+Inf")), h.count))
        self.samples.append((f"{self.name}_sum", base, h.sum))
        self.samples.append((f"{self.name}_count", base, h.count))
        return self


def render(families: Iterable[Family]) -> str:
    """The text exposition format: HELP and TYPE before each family's samples."""
    out: list[str] = []
    for f in families:
        out.append(f"# HELP {f.name} {_escape_help(f.help)}")
        out.append(f"# TYPE {f.name} {f.kind}")
        for name, labels, value in f.samples:
            if labels:
                inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
                out.append(f"{name}{{{inner}}} {_num(value)}")
            else:
                out.append(f"{name} {_num(value)}")
    return "\n".join(out) + "\n"


def _num(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


# --- the process -------------------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int | None:
    """Resident memory of this process, from /proc/self/statm (None where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


class LoopLag:
    """How late the event loop runs what is due: a task sleeps `interval_s` again and again,
    and the overshoot of each sleep is the lag (a commit callback, a device read, anything
    queued on the loop waits that long). The worst of the last `window_s` is kept too."""

    def __init__(self, interval_s: float = 0.25, window_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        self.histogram = Histogram(LOOP_LAG_BUCKETS_S)
        self.last_s = 0.0
        self.max_s = 0.0  # the worst in the current or the previous window
        self._window_max = 0.0
        self._previous_max = 0.0
        self._window_start = time.monotonic()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval_s)
            self.sample(loop.time() - before - self.interval_s)

    def sample(self, lag_s: float) -> None:
        lag_s = max(0.0, lag_s)
        self.last_s = lag_s
        self.histogram.observe(lag_s)
        now = time.monotonic()
        if now - self._window_start >= self.window_s:
            self._window_start = now
            self._previous_max, self._window_max = self._window_max, 0.0
        self._window_max = max(self._window_max, lag_s)
        self.max_s = max(self._previous_max, self._window_max)
