"""The physics of an RFID portal, for the LLRP reader simulator: which tags the antennas see,
when and how strongly, and the ground truth of what the simulator made of each tag.

A `TagPass` is one tag carried through a portal past an ordered row of antennas (`in`: first
antenna first). Each antenna sees it with an RSSI curve in time, a bell in dB peaking when the
tag is nearest that antenna; the peaks are spaced evenly over the pass in the order of travel,
and each antenna's field reaches one spacing either side of its peak. Reads come at a
per-antenna rate, each dropped with probability `miss_share`; reads below the reader's
sensitivity are not reported. A `Burst` is a crowd of static tags (a pallet standing in the
door) sharing the reader's singulation capacity; a `StrayRead` is a tag of a neighbouring
portal glimpsed once or twice; a `Flood` is a sustained read rate for benchmarks.

Planning is pure and seeded: `plan()` turns items into reads in time order, the same for the
same seed; the simulator (simulators.llrp) plays them in real time and fills in `PassTruth`.
A scenario YAML file holds the fields of `PortalScenario`; see simulators/scenarios/portal-*.yaml.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import yaml

from simulators.codes import gs1_check_digit
from simulators.epc import encode_sscc96, sgtin96_series

Direction = Literal["in", "out"]
TruthKind = Literal["pass", "burst", "stray", "flood"]

COMPANY_PREFIX: Final = "0614141"  # the GS1 examples' company prefix, for generated EPCs


@dataclass(frozen=True, slots=True)
class TagPass:
    """One tag through the portal: `duration_s` in the read zone, or `depth_m` at `speed_m_s`."""

    epc: str
    direction: Direction = "in"
    antennas: tuple[int, ...] = (1, 2)
    start_s: float = 0.0
    duration_s: float | None = 1.0
    speed_m_s: float | None = None
    depth_m: float = 2.0  # length of the read zone along the path
    peak_rssi_dbm: float = -48.0

    def seconds(self) -> float:
        if self.speed_m_s is not None:
            return self.depth_m / self.speed_m_s
        if self.duration_s is None:
            raise ValueError(f"pass of {self.epc}: give duration_s or speed_m_s")
        return self.duration_s

    def travel_order(self) -> tuple[int, ...]:
        return self.antennas if self.direction == "in" else tuple(reversed(self.antennas))


@dataclass(frozen=True, slots=True)
class Burst:
    """Tags in the field of all `antennas` at once for `duration_s` (a pallet in the door)."""

    epcs: tuple[str, ...]
    antennas: tuple[int, ...] = (1, 2)
    start_s: float = 0.0
    duration_s: float = 1.0


@dataclass(frozen=True, slots=True)
class StrayRead:
    """A tag of the neighbouring portal, glimpsed `reads` times at the edge of one antenna."""

    epc: str
    antenna: int = 1
    at_s: float = 0.0
    reads: int = 1
    rssi_dbm: float = -74.0


@dataclass(frozen=True, slots=True)
class Flood:
    """`reads_per_s` reads for `duration_s`, cycling over `epcs` (a benchmark load)."""

    reads_per_s: float
    duration_s: float
    epcs: tuple[str, ...]
    start_s: float = 0.0
    antennas: tuple[int, ...] | None = None  # None: the antennas the ROSpec inventories


Item = TagPass | Burst | StrayRead | Flood


@dataclass(frozen=True, slots=True)
class Physics:
    read_rate_per_s: float = 40.0  # reads of one tag by one antenna per second, in the field
    capacity_per_s: float = 1200.0  # singulations per second the reader manages in all
    miss_share: float = 0.0  # share of reads lost in the air (collisions, fading)
    sensitivity_dbm: float = -80.0  # weaker reads are not reported
    falloff_db: float = 30.0  # how far below its peak the RSSI is at the edge of a field
    noise_db: float = 1.5  # standard deviation of the RSSI of a read


@dataclass
class PassTruth:
    """What really happened to one tag, and what the simulator sent of it.

    `planned` reads were in range; `missed` of them were lost in the air or below sensitivity
    (no reader reports those); `not_delivered` were readable but no client or active ROSpec
    took them (or the antenna was not inventoried, or the connection went first); the rest
    were sent, counted per antenna with the peak RSSI sent. Times are true UTC seconds (the
    reader's timestamps carry its clock offset on top)."""

    kind: TruthKind
    epc: str
    direction: Direction | None
    antennas: tuple[int, ...]  # in the order the tag passed them
    start_s: float
    end_s: float
    planned: int = 0
    missed: int = 0
    not_delivered: int = 0
    reads_sent: dict[int, int] = field(default_factory=dict)
    peak_rssi_sent: dict[int, int] = field(default_factory=dict)

    @property
    def reads_delivered(self) -> int:
        """Reads sent, on all antennas."""
        return sum(self.reads_sent.values())

    def record_sent(self, antenna: int, rssi: int) -> None:
        self.reads_sent[antenna] = self.reads_sent.get(antenna, 0) + 1
        best = self.peak_rssi_sent.get(antenna)
        self.peak_rssi_sent[antenna] = rssi if best is None else max(best, rssi)


@dataclass(frozen=True, slots=True)
class PlannedRead:
    t_s: float  # from the start of the run
    truth: int  # index into the run's truths
    epc: str
    antenna: int
    rssi: int  # dBm, at full transmit power


def plan(
    items: Iterable[TagPass | Burst | StrayRead], physics: Physics, seed: int, t0: float = 0.0
) -> tuple[list[PlannedRead], list[PassTruth]]:
    """Reads in time order and one truth per tag (times in truths are `t0` + offsets; the
    simulator passes its start time). Missed reads are counted in the truths, not returned."""
    planner = _Planner(physics, random.Random(seed), t0)
    for item in items:
        if isinstance(item, TagPass):
            planner.tag_pass(item)
        elif isinstance(item, Burst):
            planner.burst(item)
        else:
            planner.stray(item)
    planner.reads.sort(key=lambda r: r.t_s)
    return planner.reads, planner.truths


class _Planner:
    def __init__(self, physics: Physics, rng: random.Random, t0: float) -> None:
        self.physics, self.rng, self.t0 = physics, rng, t0
        self.reads: list[PlannedRead] = []
        self.truths: list[PassTruth] = []

    def tag_pass(self, p: TagPass) -> None:
        duration = p.seconds()
        order = p.travel_order()
        start = self.t0 + p.start_s
        self.truths.append(PassTruth("pass", p.epc, p.direction, order, start, start + duration))
        period = 1.0 / self.physics.read_rate_per_s
        # Each antenna's field reaches one antenna spacing either side of its peak: the tag
        # comes into range of the antennas in the order of travel, and leaves them so.
        reach = duration / len(order)
        for k, antenna in enumerate(order):
            peak_at = duration * (k + 0.5) / len(order)
            peak = p.peak_rssi_dbm + self.rng.uniform(-2.0, 2.0)  # antennas differ a little
            t = max(0.0, peak_at - reach) + self.rng.uniform(0.0, period)
            end = min(duration, peak_at + reach)
            while t < end:
                rssi = peak - self.physics.falloff_db * ((t - peak_at) / reach) ** 2
                self.keep(p.start_s + t, antenna, rssi, lossy=True)
                t += period * self.rng.uniform(0.8, 1.2)

    def burst(self, b: Burst) -> None:
        # The tags share the reader's singulations: each is read less often in a crowd.
        share = self.physics.capacity_per_s / max(1, len(b.epcs) * len(b.antennas))
        period = 1.0 / min(self.physics.read_rate_per_s, share)
        start = self.t0 + b.start_s
        for epc in b.epcs:
            self.truths.append(
                PassTruth("burst", epc, None, b.antennas, start, start + b.duration_s)
            )
            level = self.rng.gauss(-58.0, 5.0)  # where the tag sits on the pallet
            for antenna in b.antennas:
                mean = level + self.rng.gauss(0.0, 3.0)
                # The first read comes within one period (within the burst, if it lasts that
                # long): every tag of a pallet standing in the field is seen.
                t = self.rng.uniform(0.0, min(period, b.duration_s))
                while t < b.duration_s:
                    self.keep(b.start_s + t, antenna, mean, lossy=True)
                    t += period * self.rng.uniform(0.9, 1.1)

    def stray(self, s: StrayRead) -> None:
        at = self.t0 + s.at_s
        self.truths.append(PassTruth("stray", s.epc, None, (s.antenna,), at, at))
        for n in range(s.reads):
            # No miss_share: a stray's glimpses are there by definition.
            self.keep(s.at_s + 0.02 * n, s.antenna, s.rssi_dbm, lossy=False)

    def keep(self, t: float, antenna: int, rssi: float, *, lossy: bool) -> None:
        """Count a read of the latest truth's tag, and plan it unless lost or too weak."""
        truth = self.truths[-1]
        truth.planned += 1
        rssi += self.rng.gauss(0.0, self.physics.noise_db)
        miss = self.physics.miss_share
        if (lossy and miss > 0 and self.rng.random() < miss) or rssi < self.physics.sensitivity_dbm:
            truth.missed += 1
            return
        dbm = max(-128, min(0, round(rssi)))
        self.reads.append(PlannedRead(t, len(self.truths) - 1, truth.epc, antenna, dbm))


# --- scenario files --------------------------------------------------------------------------


@dataclass
class PortalScenario:
    """A scenario file: `items` (each a mapping with `kind`: pass, pallet, units, burst, stray,
    flood), the `physics`, a `seed`, and whether the command line plays it in a loop.

    - pass: one tag (`epc`, `direction`, `antennas`, `start_s`, `duration_s` or `speed_m_s`);
    - pallet: `tags` case tags (SGTIN-96) and a pallet label (SSCC-96) moving through together
      (`direction`, `antennas`, `start_s`, `duration_s`, optional `spread_s` between tags);
    - units: `count` units one after the other on a conveyor (`interval_s`, `duration_s`);
    - burst: `tags` static tags in the field (`antennas`, `start_s`, `duration_s`);
    - stray: `epc`, `antenna`, `at_s`, `reads`;
    - flood: `reads_per_s`, `duration_s`, `tags`, `start_s`.
    Generated EPCs are distinct per item and the same for the same seed.
    """

    items: list[Item]
    physics: Physics = field(default_factory=Physics)
    seed: int = 0
    repeat: bool = False

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> PortalScenario:
        unknown = sorted(set(doc) - {"items", "physics", "seed", "repeat"})
        if unknown:
            raise ValueError(f"unknown scenario fields: {', '.join(unknown)}")
        seed = int(doc.get("seed", 0))
        physics = _build(Physics, doc.get("physics") or {}, "physics")
        items: list[Item] = []
        for n, entry in enumerate(doc.get("items") or []):
            if not isinstance(entry, dict) or "kind" not in entry:
                raise ValueError(f"items[{n}]: a mapping with a kind")
            items += _items(dict(entry), seed * 1000 + n, f"items[{n}]")
        return cls(items, physics, seed, bool(doc.get("repeat", False)))

    @classmethod
    def from_yaml(cls, path: str | Path) -> PortalScenario:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: a scenario is a mapping of fields")
        try:
            return cls.from_dict(doc)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from None

    def length_s(self) -> float:
        """When the last item ends."""
        ends = [0.0]
        for item in self.items:
            if isinstance(item, TagPass):
                ends.append(item.start_s + item.seconds())
            elif isinstance(item, Burst | Flood):
                ends.append(item.start_s + item.duration_s)
            else:
                ends.append(item.at_s)
        return max(ends)


def _build(cls: Any, values: dict[str, Any], where: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown fields: {', '.join(unknown)}")
    for name in ("antennas", "epcs"):
        if name in values:
            values[name] = tuple(values[name])
    return cls(**values)


def _items(entry: dict[str, Any], seed: int, where: str) -> list[Item]:
    kind = entry.pop("kind")
    if kind == "pass":
        return [_build(TagPass, entry, where)]
    if kind == "stray":
        return [_build(StrayRead, entry, where)]
    if kind in ("burst", "flood"):
        epcs = sgtin96s(int(entry.pop("tags", 500)), seed)
        return [_build(Burst if kind == "burst" else Flood, entry | {"epcs": epcs}, where)]
    if kind == "pallet":
        tags = int(entry.pop("tags", 40))
        spread = float(entry.pop("spread_s", 0.15))
        rng = random.Random(seed)
        start = float(entry.pop("start_s", 0.0))
        epcs = (sscc96(seed), *sgtin96s(tags, seed))
        return [
            _build(TagPass, entry | {"epc": epc, "start_s": start + rng.uniform(0, spread)}, where)
            for epc in epcs
        ]
    if kind == "units":
        count = int(entry.pop("count", 10))
        interval = float(entry.pop("interval_s", 1.0))
        start = float(entry.pop("start_s", 0.0))
        return [
            _build(TagPass, entry | {"epc": epc, "start_s": start + n * interval}, where)
            for n, epc in enumerate(sgtin96s(count, seed))
        ]
    raise ValueError(f"{where}: unknown kind {kind!r} (pass, pallet, units, burst, stray, flood)")


def sgtin96s(count: int, seed: int, item_reference: str = "81234") -> tuple[str, ...]:
    """`count` distinct SGTIN-96 EPCs of one product (random serials, fixed by `seed`)."""
    body = "0" + COMPANY_PREFIX + item_reference
    gtin = body + gs1_check_digit(body)
    return tuple(sgtin96_series(gtin, len(COMPANY_PREFIX), 1, count, seed=seed))


def sscc96(seed: int) -> str:
    body = "0" + COMPANY_PREFIX + f"{random.Random(seed).randrange(10**9):09d}"
    return encode_sscc96(body + gs1_check_digit(body), len(COMPANY_PREFIX))


def items_of(scenario: PortalScenario) -> tuple[list[TagPass | Burst | StrayRead], list[Flood]]:
    """The items played from a plan, and the floods (played by rate, not planned read by read)."""
    planned: list[TagPass | Burst | StrayRead] = []
    floods: list[Flood] = []
    for item in scenario.items:
        (floods if isinstance(item, Flood) else planned).append(item)  # type: ignore[arg-type]
    return planned, floods


def check_antennas(items: Sequence[Item], antennas: int) -> None:
    """Refuse items on antennas the reader does not have."""
    for item in items:
        if isinstance(item, StrayRead):
            used: tuple[int, ...] = (item.antenna,)
        else:
            used = item.antennas or ()
        bad = [a for a in used if not 1 <= a <= antennas]
        if bad:
            raise ValueError(f"antennas {bad} do not exist: the reader has {antennas}")
