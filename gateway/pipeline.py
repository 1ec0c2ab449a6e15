"""The bounded hand-over from devices to the binder, the binder's loop, and write-back.

Devices must never block on the gateway (a scanner or a reader keeps sending whatever we do), so
`ObservationQueue.put` never waits: when the queue is full the observation is counted, per device,
and the count comes out of the queue as a `Loss` observation (a `gap` event) once there is room.
Nothing is dropped silently. The binder loop takes observations in batches, binds them and hands
the events to the journal, waiting only when the journal applies back-pressure.

Write-back (`Writer`): a write the binder asks for "after" an event (a handshake's verdict and
acknowledgement) is performed only once the journal has committed that event; never before. Each
device has its own write queue and worker, so a PLC that does not answer delays only its own
writes. Every outcome goes back to the binder as a `WriteDone` observation.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.binding import Binder, BindResult, WriteRequest
from gateway.devices.base import WriteFailed
from gateway.events import Loss, Observation, Tick, WriteDone
from gateway.journal import Journal
from gateway.log import get_logger

log = get_logger(__name__)

WRITE_TIMEOUT_S = 10.0  # a write still unanswered after this counts as failed
TICK_S = 1.0  # how often the binder hears the time (handshake timeouts)


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


class Writer:
    """Performs the binder's writes, per device, each after the commit it waits for."""

    def __init__(self, lookup: Callable[[str], Any], report: Callable[[Observation], None]) -> None:
        self._lookup = lookup  # device id -> the running adapter (a PlcDevice) or None
        self._report = report
        self._queues: dict[str, asyncio.Queue[tuple[WriteRequest, asyncio.Future[Any] | None]]] = {}
        self._tg: asyncio.TaskGroup | None = None

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            await asyncio.Event().wait()  # the workers run until cancelled

    def submit(self, req: WriteRequest, committed: asyncio.Future[Any] | None) -> None:
        q = self._queues.get(req.device)
        if q is None:
            assert self._tg is not None, "Writer.run() is not running"
            q = self._queues[req.device] = asyncio.Queue()
            self._tg.create_task(self._worker(q), name=f"writer:{req.device}")
        q.put_nowait((req, committed))

    async def _worker(
        self, q: asyncio.Queue[tuple[WriteRequest, asyncio.Future[Any] | None]]
    ) -> None:
        while True:
            req, committed = await q.get()
            error: str | None = None
            try:
                if committed is not None:
                    await asyncio.shield(committed)  # never write before the record exists
                device = self._lookup(req.device)
                if device is None:
                    raise WriteFailed(f"device {req.device!r} is not running")
                async with asyncio.timeout(WRITE_TIMEOUT_S):
                    await device.write(req.signal, req.value)
            except (WriteFailed, TimeoutError) as exc:
                error = str(exc) or f"no answer within {WRITE_TIMEOUT_S} s"
                log.warning("write_failed", device=req.device, signal=req.signal, error=error)
            self._report(WriteDone(req.device, time.time(), req.signal, req.value, error, req.tag))


class BinderLoop:
    """Moves observations through the binder into the journal, and hands the binder's writes to
    the writer. `binder` may be swapped on reload (it is pure; in-flight observations finish
    with the old one)."""

    def __init__(
        self,
        queue: ObservationQueue,
        binder: Binder,
        journal: Journal,
        writer: Writer | None = None,
        batch: int = 1024,
    ) -> None:
        self.queue = queue
        self.binder = binder
        self.journal = journal
        self.writer = writer
        self.batch = batch
        self.events_by_type: dict[str, int] = {}
        self.last_progress = time.monotonic()

    async def run(self) -> None:
        while True:
            observations = await self.queue.get_batch(self.batch)
            await self._bind(observations)

    async def _bind(self, observations: list[Observation]) -> None:
        out = BindResult()
        process = self.binder.process
        for obs in observations:
            out.extend(process(obs))
        counts = self.events_by_type
        for ev in out.events:
            counts[ev.type] = counts.get(ev.type, 0) + 1
        for event, fields in out.notes:
            log.info(event, **fields)
        committed = await self.journal.append(out.events, marks=out.marks)
        if out.writes:
            if self.writer is None:
                raise RuntimeError("the binder asked for writes, but no writer is running")
            for w in out.writes:
                self.writer.submit(w, committed if w.after is not None else None)
        self.last_progress = time.monotonic()

    async def drain(self) -> None:
        """Bind what is queued now (shutdown), without waiting for more."""
        while len(self.queue):
            await self._bind(await self.queue.get_batch(self.batch))


async def tick(queue: ObservationQueue, period_s: float = TICK_S) -> None:
    """Let the binder hear the time (its timeouts), forever."""
    while True:
        await asyncio.sleep(period_s)
        queue.put(Tick(time.time()))
