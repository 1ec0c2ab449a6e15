"""The bounded hand-over from devices to the binder, and the binder's loop.

Devices must never block on the gateway (a scanner or a reader keeps sending whatever we do), so
`ObservationQueue.put` never waits: when the queue is full the observation is counted, per device,
and the count comes out of the queue as a `Loss` observation (a `gap` event) once there is room.
Nothing is dropped silently. The binder loop takes observations in batches, binds them and hands
the events to the journal, waiting only when the journal applies back-pressure.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gateway.binding import Binder
from gateway.events import Loss, Observation, TraceEvent
from gateway.journal import Journal
from gateway.log import get_logger

log = get_logger(__name__)


@dataclass(slots=True)
class _Dropped:
    count: int
    first_time: float
    last_time: float


class ObservationQueue:
    def __init__(self, maxsize: int, clock: Callable[[], float] = time.time) -> None:
        self.maxsize = maxsize
        self._q: deque[Observation] = deque()
        self._dropped: dict[str, _Dropped] = {}
        self._ready = asyncio.Event()
        self._clock = clock
        self.total_dropped = 0

    def __len__(self) -> int:
        """Observations waiting, plus one per device with uncounted losses."""
        return len(self._q) + len(self._dropped)

    def put(self, obs: Observation) -> None:
        if len(self._q) < self.maxsize:
            self._q.append(obs)
        else:
            t = obs.time
            d = self._dropped.get(obs.device)
            if d is None:
                self._dropped[obs.device] = _Dropped(1, t, t)
                log.warning(
                    "observation_dropped",
                    device=obs.device,
                    reason="queue_full",
                    queue_size=self.maxsize,
                )
            else:
                d.count += 1
                d.last_time = t
            self.total_dropped += 1
        self._ready.set()

    async def get_batch(self, limit: int) -> list[Observation]:
        """Wait for observations; return up to `limit` of them, oldest first, followed by the
        losses counted so far once there is room again."""
        while not self._q and not self._dropped:
            self._ready.clear()
            await self._ready.wait()
        batch = [self._q.popleft() for _ in range(min(limit, len(self._q)))]
        if self._dropped and len(self._q) < self.maxsize:
            now = self._clock()
            for device, d in self._dropped.items():
                batch.append(Loss(device, now, d.count, d.first_time, d.last_time, "queue_full"))
            self._dropped.clear()
        return batch


class BinderLoop:
    """Moves observations through the binder into the journal. `binder` may be swapped on
    reload (it is pure; in-flight observations finish with the old one)."""

    def __init__(
        self, queue: ObservationQueue, binder: Binder, journal: Journal, batch: int = 1024
    ) -> None:
        self.queue = queue
        self.binder = binder
        self.journal = journal
        self.batch = batch
        self.events_by_type: dict[str, int] = {}
        self.last_progress = time.monotonic()

    async def run(self) -> None:
        while True:
            observations = await self.queue.get_batch(self.batch)
            await self._bind(observations)

    async def _bind(self, observations: list[Observation]) -> None:
        events: list[TraceEvent] = []
        process = self.binder.process
        for obs in observations:
            events.extend(process(obs))
        counts = self.events_by_type
        for ev in events:
            counts[ev.type] = counts.get(ev.type, 0) + 1
        await self.journal.append(events)
        self.last_progress = time.monotonic()

    async def drain(self) -> None:
        """Bind what is queued now (shutdown), without waiting for more."""
        while len(self.queue):
            await self._bind(await self.queue.get_batch(self.batch))
