"""An ROSpec that a client added to the simulated LLRP reader, and what it does: its state
(Disabled, Inactive, Active), its start triggers (immediate, periodic, GPI) and stop triggers
(duration, GPI with timeout, N tags observed), and the batch of tag reads it reports as its
ROReportSpec (or the reader's) asks.

Invariant: a run ends in `deactivate`, which ends its stop timer and sends what the batch
holds; `remove` also ends the flush timer and the periodic task, and counts the reads still
in the batch as not delivered. Messages leave through the `Outlet` of the reader's server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from simulators import llrp_codec as codec
from simulators.llrp_codec import AntennaConfig, ContentSelector, ReportSpec, RoSpec, TagRead
from simulators.llrp_config import EVENT_ROSPEC, ReaderConfig
from simulators.llrp_scenario import PassTruth

DISABLED, INACTIVE, ACTIVE = 0, 1, 2  # ROSpec states

Reads = list[tuple[TagRead, PassTruth]]  # tag reads, each with the truth of its tag


@dataclass(frozen=True, slots=True)
class Outlet:
    """What the reader's state needs from the server that carries its messages. `event` and
    `report` return at once: the message is written, held for the client, or (its reads)
    counted as not delivered."""

    event: Callable[[bytes], None]  # a READER_EVENT_NOTIFICATION of this parameter
    report: Callable[[ContentSelector, Reads], None]  # RO_ACCESS_REPORTs of these reads
    changed: Callable[[], None]  # wakes whoever waits for a change of state
    spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]  # ended on stop
    drain: Callable[[], Awaitable[None]]  # until the client's connection takes more
    restart_keepalives: Callable[[], None]  # after the KeepaliveSpec changed


class Host(Protocol):
    """What an ROSpec needs from the reader that holds it."""

    config: ReaderConfig
    flush_after_s: float | None  # a batch of N > 1 also goes out this long after its first read
    outlet: Outlet


@dataclass
class AddedRoSpec:
    """An added ROSpec and what it is doing."""

    spec: RoSpec
    host: Host
    state: int = DISABLED
    pending: Reads = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # EPCs of this run (tag observation trigger)
    flush_timer: asyncio.TimerHandle | None = None
    stop_timer: asyncio.TimerHandle | None = None
    periodic: asyncio.Task[None] | None = None

    @property
    def id(self) -> int:
        return self.spec.id

    @property
    def antennas(self) -> list[int]:
        return self.spec.aispecs[0].antennas

    @property
    def report(self) -> ReportSpec:
        return self.spec.report or self.host.config.report

    def covers(self, antenna: int) -> bool:
        return self.antennas == [0] or antenna in self.antennas

    def antenna_config(self, antenna: int) -> AntennaConfig | None:
        for conf in self.spec.aispecs[0].antenna_configs:
            if conf.antenna in (0, antenna):
                return conf
        return None

    # --- state machine --------------------------------------------------------------------------

    def enable(self) -> None:
        self.state = INACTIVE
        start = self.spec.start
        if start.kind == 1:
            self.activate()
        elif start.kind == 2:
            self.periodic = self.host.outlet.spawn(self._periodic(start.offset_ms, start.period_ms))

    async def _periodic(self, offset_ms: int, period_ms: int) -> None:
        await asyncio.sleep(offset_ms / 1000)
        while True:
            if self.state == INACTIVE:
                self.activate()
                await self.host.outlet.drain()
            if period_ms == 0:
                return
            await asyncio.sleep(period_ms / 1000)

    def activate(self) -> None:
        self.state = ACTIVE
        self.seen = set()
        if self.host.config.events[EVENT_ROSPEC]:
            self.host.outlet.event(codec.rospec_event(0, self.id))
        limits = [
            t.duration_ms
            for t in (self.spec.stop, self.spec.aispecs[0].stop)
            if t.kind == 1 and t.duration_ms
        ]
        limits += [
            t.gpi.timeout_ms
            for t in (self.spec.stop, self.spec.aispecs[0].stop)
            if t.kind == 2 and t.gpi is not None and t.gpi.timeout_ms
        ]
        if limits:
            loop = asyncio.get_running_loop()
            self.stop_timer = loop.call_later(min(limits) / 1000, self._timed_out)
        self.host.outlet.changed()

    def _timed_out(self) -> None:
        self.stop_timer = None
        if self.state == ACTIVE:
            self.deactivate()

    def deactivate(self, state: int = INACTIVE) -> None:
        """End a run (the end of the AISpec and of the ROSpec: reports go out) and go to
        `state`; to Disabled also from Inactive."""
        was_active = self.state == ACTIVE
        if self.stop_timer is not None:
            self.stop_timer.cancel()
            self.stop_timer = None
        if was_active and self.report.trigger != 0:
            self.flush()
        self.state = state
        if state == DISABLED and self.periodic is not None:
            self.periodic.cancel()
            self.periodic = None
        if was_active and self.host.config.events[EVENT_ROSPEC]:
            self.host.outlet.event(codec.rospec_event(1, self.id))
        self.host.outlet.changed()

    def on_gpi(self, port: int, state: bool) -> None:
        """A GPI port of the reader went to `state`: GPI start and stop triggers fire."""
        start, stop = self.spec.start, self.spec.stop
        ai_stop = self.spec.aispecs[0].stop
        if self.state == INACTIVE and start.kind == 3 and _fires(start.gpi, port, state):
            self.activate()
        elif self.state == ACTIVE and any(
            t.kind == 2 and _fires(t.gpi, port, state) for t in (stop, ai_stop)
        ):
            self.deactivate()

    def remove(self) -> None:
        """Disabled for good, before the ROSpec is deleted."""
        self.deactivate(DISABLED)
        self.stop_timers()
        for _, truth in self.pending:  # held for a GET_REPORT that will not come now
            truth.not_delivered += 1
        self.pending = []

    def stop_timers(self) -> None:
        for handle in (self.flush_timer, self.stop_timer):
            if handle is not None:
                handle.cancel()
        self.flush_timer = self.stop_timer = None
        if self.periodic is not None:
            self.periodic.cancel()
            self.periodic = None

    # --- reports --------------------------------------------------------------------------------

    def take(self, read: TagRead, truth: PassTruth) -> None:
        """A read this ROSpec reports: into the batch, which goes out when the ROReportTrigger
        says; the run ends if its AISpec stops after N tags and this is the Nth."""
        self.pending.append((read, truth))
        self.seen.add(read.epc)
        report = self.report
        if report.trigger in (1, 2) and report.n and len(self.pending) >= report.n:
            self.flush()
        elif self.flush_timer is None:
            delay = _flush_delay(report, self.host.flush_after_s)
            if delay is not None:
                self.flush_timer = asyncio.get_running_loop().call_later(delay, self.flush)
        observe = self.spec.aispecs[0].stop
        if observe.kind == 3 and observe.n_tags and len(self.seen) >= observe.n_tags:
            self.deactivate()

    def flush(self) -> None:
        """Send the batch (at its flush time, at the end of the run, on GET_REPORT)."""
        if self.flush_timer is not None:
            self.flush_timer.cancel()
            self.flush_timer = None
        batch, self.pending = self.pending, []
        if batch:
            self.host.outlet.report(self.report.content, batch)
        self.host.outlet.changed()


def _fires(trigger: codec.GpiTrigger | None, port: int, state: bool) -> bool:
    return trigger is not None and trigger.port == port and trigger.event == state


def _flush_delay(report: ReportSpec, flush_after_s: float | None) -> float | None:
    """When a batch that has just begun must go out, by the ROReportTrigger (None: only at the
    end of the ROSpec, or on GET_REPORT)."""
    if report.trigger in (3, 4):
        return float(report.n)
    if report.trigger in (5, 6):
        return report.n / 1000
    if report.trigger in (1, 2) and report.n > 1:
        return flush_after_s
    return None
