"""Serial pools and commissioning: serials delivered by the MES, handed out once each.

Pure. A pool is a list of blocks (a range of numbers rendered by the pool's template, or a list of
serials), delivered by the `serial-pool` command and committed as `PoolBlock`s with a
`pool.loaded` event; its cursor (block, offset, how many issued) is durable state `pool:<id>`,
moved in the transaction of the `commissioned` event that takes a serial (invariant: a serial
committed as taken is never given again, whatever happens after).
"""

from __future__ import annotations

import json
import re
import time as time_
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.config.serialization import PoolConfig
from gateway.events import TraceEvent
from gateway.trace_index import Change, PoolBlock, StateSet

GS1_SERIAL = re.compile(r"^[!\"%&'()*+,\-./0-9:;<=>?A-Z_a-z]{1,20}$")  # AI 21, GS1 set 82
MAX_LOADS_REMEMBERED = 64  # correlation ids of loads kept, so that a re-sent load is no double


class PoolError(ValueError):
    """A delivery that cannot be taken; the message says why (sent back in the reply)."""


@dataclass
class Pool:
    cfg: PoolConfig
    blocks: list[PoolBlock] = field(default_factory=list)
    block: int = 0  # the block the next serial comes from
    offset: int = 0  # its position in that block
    issued: int = 0
    low_reported: bool = False
    loads: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        left = sum(b.size for b in self.blocks[self.block :])
        return left - self.offset if self.block < len(self.blocks) else 0

    def state(self, event_id: str) -> StateSet:
        doc = {
            "block": self.block,
            "offset": self.offset,
            "issued": self.issued,
            "low_reported": self.low_reported,
            "loads": self.loads[-MAX_LOADS_REMEMBERED:],
        }
        return StateSet(event_id, f"pool:{self.cfg.id}", json.dumps(doc))


@dataclass(frozen=True, slots=True)
class Taken:
    serial: str
    changes: list[Change]
    low: TraceEvent | None  # a `pool.low` to record with it


class Pools:
    def __init__(
        self,
        configs: Sequence[PoolConfig],
        state: Mapping[str, str],
        blocks: Iterable[PoolBlock],
        site: str,
        line: str,
    ) -> None:
        self.site, self.line = site, line
        self.pools = {c.id: Pool(c) for c in configs}
        for b in blocks:
            if b.pool in self.pools:
                self.pools[b.pool].blocks.append(b)
        for pid, pool in self.pools.items():
            raw = state.get(f"pool:{pid}")
            if raw is not None:
                doc = json.loads(raw)
                pool.block, pool.offset = doc["block"], doc["offset"]
                pool.issued, pool.low_reported = doc["issued"], doc["low_reported"]
                pool.loads = list(doc.get("loads", []))

    def load(
        self,
        pool_id: str,
        ranges: Sequence[tuple[int, int]],
        serials: Sequence[str],
        *,
        correlation_id: str | None,
        time: float,
    ) -> tuple[TraceEvent, list[Change]] | None:
        """Append blocks to a pool: the `pool.loaded` event and its changes, or None when this
        delivery (same correlation id) was taken before. Raises PoolError."""
        pool = self.pools.get(pool_id)
        if pool is None:
            raise PoolError(f"no pool {pool_id!r} (pools: {', '.join(self.pools) or 'none'})")
        if correlation_id is not None and correlation_id in pool.loads:
            return None
        event = TraceEvent("pool.loaded", time)
        new = self._ranges(pool, ranges, event.event_id, time)
        new += self._listed(pool, serials, event.event_id, len(pool.blocks) + len(new))
        if not new:
            raise PoolError("nothing to load: give `ranges` or `serials`")
        pool.blocks.extend(new)
        pool.low_reported = pool.remaining < pool.cfg.low_water and pool.low_reported
        if correlation_id is not None:
            pool.loads.append(correlation_id)
        added = sum(b.size for b in new)
        event = TraceEvent(
            "pool.loaded",
            time,
            detail={"pool": pool_id, "added": added, "remaining": pool.remaining},
            event_id=event.event_id,
        )
        return event, [*new, pool.state(event.event_id)]

    def _ranges(
        self, pool: Pool, ranges: Sequence[tuple[int, int]], event_id: str, time: float
    ) -> list[PoolBlock]:
        new: list[PoolBlock] = []
        for first, last in ranges:
            if first < 0 or last < first:
                raise PoolError(f"range [{first}, {last}] is empty or negative")
            for b in pool.blocks + new:
                if b.first is None or b.last is None:
                    continue
                if first <= b.last and b.first <= last:
                    raise PoolError(
                        f"range [{first}, {last}] overlaps [{b.first}, {b.last}] delivered "
                        "before: its serials would be given twice"
                    )
            for probe in (first, last):
                self._check(pool, self.render(pool, probe, "", time))
            new.append(PoolBlock(event_id, pool.cfg.id, len(pool.blocks) + len(new), first, last))
        return new

    def _listed(
        self, pool: Pool, serials: Sequence[str], event_id: str, block: int
    ) -> list[PoolBlock]:
        if not serials:
            return []
        if len(set(serials)) != len(serials):
            raise PoolError("the list repeats a serial")
        known = {s for b in pool.blocks if b.serials for s in b.serials}
        again = known.intersection(serials)
        if again:
            raise PoolError(f"serials delivered before: {', '.join(sorted(again)[:5])}")
        for s in serials:
            self._check(pool, s)
        return [PoolBlock(event_id, pool.cfg.id, block, serials=tuple(serials))]

    def take(self, pool_id: str, event_id: str, station: str, time: float) -> Taken | None:
        """The next serial of the pool, for the `commissioned` event `event_id`; None when the
        pool is empty."""
        pool = self.pools[pool_id]
        while pool.block < len(pool.blocks) and pool.offset >= pool.blocks[pool.block].size:
            pool.block, pool.offset = pool.block + 1, 0
        if pool.block >= len(pool.blocks):
            return None
        b = pool.blocks[pool.block]
        if b.serials is not None:
            serial = b.serials[pool.offset]
        else:
            assert b.first is not None
            serial = self.render(pool, b.first + pool.offset, station, time)
        pool.offset += 1
        pool.issued += 1
        low = None
        if pool.remaining < pool.cfg.low_water and not pool.low_reported:
            pool.low_reported = True
            low = TraceEvent(
                "pool.low",
                time,
                detail={
                    "pool": pool_id,
                    "remaining": pool.remaining,
                    "low_water": pool.cfg.low_water,
                },
            )
        changes: list[Change] = [pool.state(event_id)]
        return Taken(serial, changes, low)

    def render(self, pool: Pool, seq: int, station: str, time: float) -> str:
        year = time_.gmtime(time).tm_year
        values: dict[str, Any] = {
            "seq": seq,
            "yy": f"{year % 100:02d}",
            "yyyy": str(year),
            "plant": self.site,
            "line": self.line,
            "station": station,
        }
        return pool.cfg.template.format(**values)

    def _check(self, pool: Pool, serial: str) -> None:
        if pool.cfg.gs1 and not GS1_SERIAL.match(serial):
            raise PoolError(
                f"{serial!r} is not a GS1 serial (1 to 20 characters of GS1 set 82) for pool "
                f"{pool.cfg.id!r}"
            )

    def remaining(self, pool_id: str) -> int:
        return self.pools[pool_id].remaining
