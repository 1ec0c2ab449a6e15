"""What the fuzz targets share: the example budget, the hang guard, the figures of a run, the
findings already reported, and mutation strategies.

- Budget: `TRACEGATE_FUZZ_EXAMPLES` examples per target when set (the campaign), else a small
  default scaled by the target's weight, derandomized so that `make test` is deterministic.
  `TRACEGATE_FUZZ_SEED` (the campaign sets a random one per target) turns derandomization off.
- Hang guard: every input runs under a wall-clock limit (SIGALRM, so it interrupts Python code
  that never returns, which hypothesis' `deadline` cannot), besides hypothesis' deadline.
- Figures: `one_input` counts inputs, outcomes (`ok:...`, `rejected:...`, `known:...`) and the
  slowest input per target; `TRACEGATE_FUZZ_STATS` names the JSON file they are written to at
  the end of the session (tests/fuzz/conftest.py), for `python -m bench.fuzz`.
- Findings: a bug the fuzzers found is reproduced by a strict-xfail `test_bug_*` and listed as a
  `Known` beside it; an input that hits it counts as `known:<name>` instead of failing the
  target, so the target keeps guarding everything else. When the bug is fixed its reproduction
  XPASSes (strict: a failure), and the reproduction and its `Known` go together.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import hypothesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

EXAMPLES_ENV = "TRACEGATE_FUZZ_EXAMPLES"
SEED_ENV = "TRACEGATE_FUZZ_SEED"
STATS_ENV = "TRACEGATE_FUZZ_STATS"
# Examples per target in `make test` (times the target's weight): the whole of tests/fuzz then
# runs in well under a minute.
DEFAULT_EXAMPLES = 150

F = TypeVar("F", bound=Callable[..., Any])


def examples(weight: float = 1.0) -> int:
    env = os.environ.get(EXAMPLES_ENV)
    return int(env) if env else max(10, round(DEFAULT_EXAMPLES * weight))


def fuzz(*, weight: float = 1.0, deadline_ms: int = 2000) -> Callable[[F], F]:
    """Settings of a fuzz target: its budget, a per-input deadline, and the seed policy."""
    seed = os.environ.get(SEED_ENV)
    chosen = settings(
        max_examples=examples(weight),
        deadline=timedelta(milliseconds=deadline_ms),
        derandomize=seed is None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )

    def decorate(test: F) -> F:
        out = chosen(test)
        if seed is not None:
            out = hypothesis.seed(int(seed))(out)
        return out

    return decorate


# --- hang guard --------------------------------------------------------------------------------


class Hang(BaseException):
    """An input ran past its wall-clock limit. A BaseException, so that no `except Exception`
    of the code under test can swallow it."""


_ARMED = [False]  # whether the alarm, when it rings, is for a block of ours
_IN_GC = [False]  # a garbage collection is running, with its callbacks


def _raise_hang(signum: int, frame: Any) -> None:
    # Not inside a collection: an exception raised in a gc callback (hypothesis has one) is
    # only reported as unraisable, and the alarm rings again soon anyway.
    if _ARMED[0] and not _IN_GC[0]:
        raise Hang("wall-clock limit reached")


def _gc_started(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _IN_GC[0] = True


def _gc_stopped(phase: str, info: dict[str, int]) -> None:
    if phase == "stop":
        _IN_GC[0] = False


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the block after `seconds` with Hang, and again every half second after that: a
    Hang raised where Python only reports an exception (a finaliser) is lost, and the next one
    is not; none is raised while a garbage collection runs its callbacks. Keeps an outer timer
    (pytest-timeout uses SIGALRM too): it is put back with what remains of it."""
    gc.callbacks.insert(0, _gc_started)  # the first at a start, the last at a stop
    gc.callbacks.append(_gc_stopped)
    old_handler = signal.signal(signal.SIGALRM, _raise_hang)
    _ARMED[0] = True
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds, 0.5)
    start = time.monotonic()
    try:
        yield
    finally:
        while True:  # a Hang ringing in here must not leave the alarm armed
            try:
                _ARMED[0] = False
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, old_handler)
                for callback in (_gc_started, _gc_stopped):
                    while callback in gc.callbacks:
                        gc.callbacks.remove(callback)
                if old_delay:
                    left = max(old_delay - (time.monotonic() - start), 0.001)
                    signal.setitimer(signal.ITIMER_REAL, left, old_interval)
                break
            except Hang:
                continue


# --- findings and figures ----------------------------------------------------------------------


@dataclass(frozen=True)
class Known:
    """A reported bug: `matches` recognises what an input that hits it raises."""

    name: str
    repro: str  # the strict-xfail test that reproduces it
    matches: Callable[[BaseException], bool]


def raised(kind: type[BaseException], text: str = "") -> Callable[[BaseException], bool]:
    return lambda exc: isinstance(exc, kind) and text in str(exc)


@dataclass
class TargetStats:
    inputs: int = 0
    max_s: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    known: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "max_s": self.max_s,
            "outcomes": dict(self.outcomes),
            "known": dict(self.known),
        }


STATS: dict[str, TargetStats] = {}


class Outcome:
    """What one input came to: the target sets `reason` (`ok:...` or `rejected:...`), and adds
    more with `also` where one input has several parts (frames of a stream, problems of a
    file)."""

    def __init__(self) -> None:
        self.reasons = ["ok"]  # until the target says more

    @property
    def reason(self) -> str:
        return self.reasons[0]

    @reason.setter
    def reason(self, value: str) -> None:
        self.reasons = [value]

    def also(self, value: str) -> None:
        if value not in self.reasons:
            self.reasons.append(value)


@contextmanager
def one_input(target: str, known: Sequence[Known] = (), limit_s: float = 10.0) -> Iterator[Outcome]:
    """Run one input of `target` under the hang guard, and count it. An exception that a known
    finding matches is counted, not raised; any other propagates (hypothesis reports it)."""
    stats = STATS.setdefault(target, TargetStats())
    outcome = Outcome()
    start = time.perf_counter()
    try:
        with time_limit(limit_s):
            yield outcome
    except BaseException as exc:
        finding = next((k for k in known if k.matches(exc)), None)
        if finding is None:
            outcome.reason = f"crash:{type(exc).__name__}"
            raise
        stats.known[finding.name] += 1
        outcome.reason = f"known:{finding.name}"
    finally:
        stats.inputs += 1
        stats.max_s = max(stats.max_s, time.perf_counter() - start)
        stats.outcomes.update(outcome.reasons)


def write_stats(path: Path) -> None:
    doc = {name: s.to_json() for name, s in STATS.items()}
    path.write_text(json.dumps(doc, indent=1, sort_keys=True))


# --- a logger that keeps what it is told --------------------------------------------------------


class RecordingLog:
    """Stands in for a structlog logger: keeps `(level, event, fields)`."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def _keep(self, level: str) -> Callable[..., None]:
        def log(event: str, **fields: Any) -> None:
            self.records.append((level, event, fields))

        return log

    def __getattr__(self, level: str) -> Callable[..., None]:
        if level in ("debug", "info", "warning", "error", "exception", "critical"):
            return self._keep(level)
        raise AttributeError(level)

    def bind(self, **_: Any) -> RecordingLog:
        return self

    def events(self) -> list[str]:
        return [event for _, event, _ in self.records]


# --- mutation strategies -----------------------------------------------------------------------

INTERESTING_BYTES = (b"\x00", b"\xff", b"\x7f", b"\x80", b"\r", b"\n", b"\x1d", b"\x1e", b"\x04")


@st.composite
def mutated(draw: st.DrawFn, base: bytes, max_ops: int = 4) -> bytes:
    """`base` with a few mutations: bit flips, byte sets, inserts, deletes, duplicated ranges,
    truncation. Keeps most of the structure, so parsers get past their first checks."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(("flip", "set", "insert", "delete", "dup", "truncate")))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            i = min(pos, len(data) - 1)
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == "insert":
            extra = draw(st.sampled_from(INTERESTING_BYTES) | st.binary(min_size=1, max_size=8))
            data[pos:pos] = extra
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "dup":
            n = draw(st.integers(1, 16))
            data[pos:pos] = data[pos : pos + n]
        else:
            del data[pos:]
    return bytes(data)


@st.composite
def mutated_text(draw: st.DrawFn, base: str, alphabet: str, max_ops: int = 3) -> str:
    """`base` with a few character edits from `alphabet` (replace, insert, delete, swap case,
    truncate): near-valid text, for parsers with many checks in a row."""
    chars = list(base)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(("replace", "insert", "delete", "case", "truncate")))
        pos = draw(st.integers(0, len(chars)))
        if op == "replace" and chars:
            chars[min(pos, len(chars) - 1)] = draw(st.sampled_from(alphabet))
        elif op == "insert":
            chars.insert(pos, draw(st.sampled_from(alphabet)))
        elif op == "delete" and chars:
            del chars[min(pos, len(chars) - 1)]
        elif op == "case" and chars:
            i = min(pos, len(chars) - 1)
            chars[i] = chars[i].swapcase()
        else:
            del chars[pos:]
    return "".join(chars)


@st.composite
def chunked(draw: st.DrawFn, data: bytes, max_cuts: int = 12) -> list[bytes]:
    """`data` cut into chunks at random points, as TCP or a serial port may deliver it."""
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=max_cuts))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a] or [data]
