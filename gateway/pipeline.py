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
from functools import partial
from typing import Any

from gateway import clock
from gateway.aio import TaskGroup
from gateway.binding import Binder, BindResult, WriteRequest
from gateway.binding.commands import Reply
from gateway.devices.base import WriteFailed
from gateway.events import (
    Command,
    DeviceState,
    Loss,
    Observation,
    Tick,
    TraceEvent,
    WriteDone,
)
from gateway.journal import Journal
from gateway.log import get_logger

log = get_logger(__name__)

WRITE_TIMEOUT_S = 10.0  # a write still unanswered after this counts as failed
TICK_S = 1.0  # how often the binder hears the time (handshake timeouts)
RECENT_REJECTS = 50  # the latest rejects kept for the status page


@dataclass(slots=True)
class _Dropped:
    count: int
    first_time: float
    last_time: float


# What the gateway tells itself (a device's state, a write's result, a command, a loss already
# counted) is few, bounded by its sources, and not to be lost: only what devices read is dropped
# and counted when the queue is full. (Ticks counted as losses made `gap` events of device "".)
_NEVER_DROPPED = (DeviceState, WriteDone, Command, Loss)


class ObservationQueue:
    def __init__(self, maxsize: int, now: Callable[[], float] = clock.now) -> None:
        self.maxsize = maxsize
        self._q: deque[Observation] = deque()
        self._dropped: dict[str, _Dropped] = {}
        self._ready = asyncio.Event()
        self._clock = now  # stamps the losses it hands on (gateway.clock, as observations)
        self.total_dropped = 0
        self.dropped_by_device: dict[str, int] = {}  # since start (metrics)

    def __len__(self) -> int:
        """Observations waiting, plus one per device with uncounted losses."""
        return len(self._q) + len(self._dropped)

    def put(self, obs: Observation) -> None:
        if len(self._q) < self.maxsize or isinstance(obs, _NEVER_DROPPED):
            self._q.append(obs)
        elif isinstance(obs, Tick):
            pass  # the binder hears the time at the next tick; a tick is no data lost
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
            self.dropped_by_device[obs.device] = self.dropped_by_device.get(obs.device, 0) + 1
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
        self._pulses: dict[tuple[str, str], int] = {}  # (device, signal) -> latest pulse number
        # Writes that failed, by (event, what): a write `if_written` one of them is not done.
        self._failed: deque[tuple[str, str]] = deque(maxlen=1024)
        self.failed_by_device: dict[str, int] = {}  # since start (metrics)

    async def run(self) -> None:
        async with TaskGroup() as tg:
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
                if req.if_written is not None and (req.after, req.if_written) in self._failed:
                    raise WriteFailed(f"not written: {req.if_written} of this record failed")
                device = self._lookup(req.device)
                if device is None:
                    raise WriteFailed(f"device {req.device!r} is not running")
                async with asyncio.timeout(WRITE_TIMEOUT_S):
                    await device.write(req.signal, req.value)
            except (WriteFailed, TimeoutError) as exc:
                error = str(exc) or f"no answer within {WRITE_TIMEOUT_S} s"
                log.warning("write_failed", device=req.device, signal=req.signal, error=error)
                self.failed_by_device[req.device] = self.failed_by_device.get(req.device, 0) + 1
                if req.after is not None:
                    self._failed.append((req.after, req.tag.rpartition("/")[2]))
            if error is None and req.after is not None:
                # Written now (a PLC that raised its request again gets the record's writes
                # again): a failure of an earlier attempt no longer holds back the ack.
                done = (req.after, req.tag.rpartition("/")[2])
                while done in self._failed:
                    self._failed.remove(done)
            if error is None and req.pulse_s is not None:
                self._pulse_end(req)
            self._report(WriteDone(req.device, clock.now(), req.signal, req.value, error, req.tag))

    def _pulse_end(self, req: WriteRequest) -> None:
        """Write the opposite value `pulse_s` after a pulse began, unless a newer pulse of the
        same output began meanwhile (it restarts the time)."""
        key = (req.device, req.signal)
        n = self._pulses[key] = self._pulses.get(key, 0) + 1
        off = (not req.value) if isinstance(req.value, bool) else 0

        async def end() -> None:
            await asyncio.sleep(req.pulse_s or 0)
            if self._pulses.get(key) == n:
                del self._pulses[key]
                self.submit(WriteRequest(req.device, req.signal, off, None, req.tag), None)

        assert self._tg is not None
        self._tg.create_task(end(), name=f"pulse:{req.device}:{req.signal}")


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
        reply: Callable[[Reply], None] | None = None,
        *,
        batch: int = 1024,
    ) -> None:
        self.queue = queue
        self.binder = binder
        self.journal = journal
        self.writer = writer
        self.reply: Callable[[Reply], None] = reply or _no_reply
        self.batch = batch
        self.events_by_type: dict[str, int] = {}
        # Rejects by (station, reason), and the latest ones: for the status page and metrics.
        self.rejects: dict[tuple[str, str], int] = {}
        self.recent_rejects: deque[TraceEvent] = deque(maxlen=RECENT_REJECTS)
        self.last_progress = time.monotonic()

    async def run(self) -> None:
        while True:
            observations = await self.queue.get_batch(self.batch)
            await self._bind(observations)

    async def _bind(self, observations: list[Observation]) -> None:
        out = BindResult()
        binder = self.binder
        process, view = binder.process, binder.env.view
        for obs in observations:
            r = process(obs)
            if r.changes and binder.reads_index:
                # Each decision sees the ones before it in the batch (a batch is large when the
                # journal could not commit for a while: a label read twice there must not
                # pass twice, nor a unit labelled in it be refused at the next step).
                view.apply(r.changes)
            out.extend(r)
        await self._commit(out, applied=True)

    async def _commit(self, out: BindResult, *, applied: bool = False) -> None:
        counts = self.events_by_type
        for ev in out.events:
            t = ev.type
            counts[t] = counts.get(t, 0) + 1
            if t == "rejected":
                self._rejected(ev)
        for event, fields in out.notes:
            log.info(event, **fields)
        view = self.binder.env.view
        overlay = bool(out.changes) and self.binder.reads_index
        if overlay and not applied:
            # The binder's own decisions are visible to it before they are on disk; dropped
            # from the overlay once committed (gateway.trace_index, invariant 2).
            view.apply(out.changes)
        committed = await self.journal.append(out.events, marks=out.marks, changes=out.changes)
        if overlay:
            ids = {c.event_id for c in out.changes}
            committed.add_done_callback(lambda _: view.committed(ids))
        for r in out.replies:
            if r.after is None:
                self.reply(r)
            else:
                committed.add_done_callback(partial(self._replied, r))
        if out.writes:
            if self.writer is None:
                raise RuntimeError("the binder asked for writes, but no writer is running")
            for w in out.writes:
                self.writer.submit(w, committed if w.after is not None else None)
        self.last_progress = time.monotonic()

    def _rejected(self, ev: TraceEvent) -> None:
        key = (ev.station or "", ev.reason or "")
        self.rejects[key] = self.rejects.get(key, 0) + 1
        self.recent_rejects.append(ev)

    def _replied(self, reply: Reply, committed: asyncio.Future[Any]) -> None:
        if not committed.cancelled() and committed.exception() is None:
            self.reply(reply)

    async def drain(self) -> None:
        """Bind what is queued now (shutdown), without waiting for more; then close the open
        tag passes, so that a clean stop loses none."""
        while len(self.queue):
            await self._bind(await self.queue.get_batch(self.batch))
        await self._commit(self.binder.flush(clock.now()))


def _no_reply(reply: Reply) -> None:
    """Replies go nowhere (a BinderLoop without a forwarder: tests, tools)."""


def tick_period(quiet_times_ms: list[int]) -> float:
    """How often the binder must hear the time: each second (handshake timeouts), or often
    enough that a tag pass closes within 5 % of its quiet time after it (75 ms for a dock
    door's 1.5 s, 15 ms for a conveyor's 300 ms; a tick costs a few microseconds)."""
    if not quiet_times_ms:
        return TICK_S
    return max(0.005, min(0.1, min(quiet_times_ms) / 20_000))


async def tick(queue: ObservationQueue, period_s: Callable[[], float] = lambda: TICK_S) -> None:
    """Let the binder hear the time (its timeouts), forever; `period_s` is asked each time (a
    reload may add a portal)."""
    while True:
        await asyncio.sleep(period_s())
        now = clock.now()
        # Let the protocols read what reached their sockets before `now` (one pass of the loop
        # polls the selector, a second runs what that scheduled): a tick queued straight away
        # could overtake reads that arrived while the loop was busy, and close a tag pass that
        # is still being read (seen as a dock pass split in two under CPU load).
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        queue.put(Tick(now))
