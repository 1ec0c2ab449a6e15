"""Binding by time window: which identities read at a station (by its scanners or portal) belong
to a cycle that ended at time T: those read within [T - before_ms, T + after_ms].

Pure. An identity read at t can belong to a cycle ending in [t - after, t + before]; once the
clock is past t + before and no cycle waiting for its window could take it, no cycle ever will:
it is handed back as expired (the binder records `step.incomplete`).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from gateway.config.serialization import WindowConfig
from gateway.events import Identity

MAX_HELD = 10_000  # identities held per station: a scanner read in a loop cannot exhaust memory


@dataclass(frozen=True, slots=True)
class Read:
    time: float
    identity: Identity


class Window:
    def __init__(self, cfg: WindowConfig) -> None:
        self.before_s = cfg.before_ms / 1000
        self.after_s = cfg.after_ms / 1000
        self.held: deque[Read] = deque()
        self._oldest = math.inf  # the earliest time held (not the first: clocks are set back)

    def offer(self, t: float, identity: Identity) -> list[Read]:
        """Hold a read for the cycles to come; returns reads pushed out by the bound."""
        self.held.append(Read(t, identity))
        self._oldest = min(self._oldest, t)
        pushed = []
        while len(self.held) > MAX_HELD:
            pushed.append(self.held.popleft())
        if pushed:
            self._recount()
        return pushed

    def take(self, end: float) -> list[Identity]:
        """The distinct identities (by key, first read first) of a cycle that ended at `end`;
        they leave the window."""
        low, high = end - self.before_s, end + self.after_s
        taken: dict[str, Identity] = {}
        kept: deque[Read] = deque()
        for r in self.held:
            if low <= r.time <= high:
                taken.setdefault(r.identity.value, r.identity)
            else:
                kept.append(r)
        if taken:
            self.held = kept
            self._recount()
        return list(taken.values())

    def expired(self, now: float) -> list[Read]:
        """Reads no cycle can take any more (read more than `before` ago). Reads are held in
        the order they came, which is not time order once the clock was set back: the oldest
        time is kept apart so that a tick with nothing due costs one comparison."""
        limit = now - self.before_s
        if self._oldest >= limit:
            return []
        out = [r for r in self.held if r.time < limit]
        self.held = deque(r for r in self.held if r.time >= limit)
        self._recount()
        return out

    def _recount(self) -> None:
        self._oldest = min((r.time for r in self.held), default=math.inf)
