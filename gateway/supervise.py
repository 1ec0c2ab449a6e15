"""Supervision: the one owner of retries, for every device and for the broker connection.

A device adapter's `run` raises when its peer is gone; `supervise_device` logs it (the first
failure of each kind at WARNING, its repeats at DEBUG: a dead PLC does not flood the log, but a
reader that stops resetting the connection and starts refusing it is news), reports the state
change as an observation, waits a capped,
jittered backoff and runs it again. A device that stayed connected for a while starts again from
the initial delay. This is also the one place where an unexpected exception from an adapter is
caught (and logged with its traceback): one broken adapter must never stop the others.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway import clock
from gateway.devices.base import (
    Device,
    DeviceMisconfigured,
    DeviceUnavailable,
    reraise_swallowed_cancel,
)
from gateway.events import DeviceState, Observation
from gateway.log import Throttle, get_logger

log = get_logger(__name__)

STABLE_AFTER_S = 10.0  # connected this long: the next failure starts from the initial delay


@dataclass(slots=True)
class DeviceCounters:
    """What one device did, for the status page and the metrics (gateway.status): plain fields,
    updated inline (an observation costs two stores), read at scrape time."""

    state: str = "connecting"  # connecting, connected, disconnected, failed
    detail: str = ""
    since: float = field(default_factory=time.time)  # wall clock of the last state change
    reads: int = 0  # observations handed to the binder (codes, tag reads, PLC value changes)
    last_read: float | None = None  # wall clock of the newest one
    # Failures by kind: unavailable (the peer is gone), misconfigured, crashed (an adapter
    # bug); the pipeline adds write_failed and dropped (observation queue full).
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Backoff:
    """Capped exponential backoff with +-25 % jitter (so that gateways restarted together do not
    reconnect in lock step)."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._next = initial_s
        self._rng = rng or random.Random()

    def next(self) -> float:
        delay = self._next * self._rng.uniform(0.75, 1.25)
        self._next = min(self._next * 2, self.max_s)
        return min(delay, self.max_s)

    def reset(self) -> None:
        self._next = self.initial_s


class _Context:
    """The DeviceContext handed to an adapter's run()."""

    def __init__(
        self,
        device_id: str,
        emit: Callable[[Observation], None],
        on_state: Callable[[str, str, str], None],
        counters: DeviceCounters,
    ) -> None:
        self._id = device_id
        self._emit = emit
        self._on_state = on_state
        self._counters = counters
        self.connected_at: float | None = None

    @property
    def device_id(self) -> str:
        return self._id

    def emit(self, observation: Observation) -> None:
        c = self._counters
        c.reads += 1
        c.last_read = observation.time
        self._emit(observation)

    def connected(self, detail: str) -> None:
        self.connected_at = time.monotonic()
        self._on_state(self._id, "connected", detail)


async def supervise_device(
    device_id: str,
    device: Device,
    *,
    emit: Callable[[Observation], None],
    backoff: Backoff,
    on_state: Callable[[str, str, str], None] | None = None,
    counters: DeviceCounters | None = None,
) -> None:
    """Run `device` forever, reconnecting with backoff. Returns only by cancellation, or when the
    device is misconfigured (it then stays `failed` until the configuration is reloaded).
    `counters` receives its reads, state and failures (gateway.status shows them)."""
    c = counters if counters is not None else DeviceCounters()
    dlog = log.bind(device=device_id)
    failures = _Failures(dlog)
    last_state: list[tuple[str, str]] = [("", "")]

    def state(dev: str, new: str, detail: str) -> None:
        # A state is news when it changes, or when the device fails in a new way (a reset
        # connection, then "a client-initiated connection already exists": the second is
        # what the technician must read).
        shape = (new, failure_shape(detail) if new != "connected" else "")
        if shape == last_state[0]:
            return
        last_state[0] = shape
        if new == "connected":
            dlog.info("device_connected", detail=detail)
            failures.clear()
        c.state, c.detail, c.since = new, detail, time.time()
        emit(DeviceState(dev, clock.now(), new, detail))
        if on_state is not None:
            on_state(dev, new, detail)

    while True:
        reraise_swallowed_cancel()
        ctx = _Context(device_id, emit, state, c)
        try:
            await device.run(ctx)
            detail = "adapter returned"  # run() should only end by raising; treat as a drop
            c.error("unavailable")
        except DeviceUnavailable as exc:
            detail = str(exc) or type(exc).__name__
            c.error("unavailable")
        except DeviceMisconfigured as exc:
            dlog.error("device_misconfigured", error=str(exc))
            c.error("misconfigured")
            state(device_id, "failed", str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - an adapter bug: log it, keep the others running
            detail = f"{type(exc).__name__}: {exc}"
            dlog.exception("device_crashed", error=detail)
            c.error("crashed")
        if ctx.connected_at is not None:
            dlog.info("device_disconnected", detail=detail)
            if time.monotonic() - ctx.connected_at >= STABLE_AFTER_S:
                backoff.reset()
        delay = backoff.next()
        failures.hit(detail, retry_in_s=round(delay, 2))
        state(device_id, "disconnected", detail)
        await asyncio.sleep(delay)


def failure_shape(detail: str) -> str:
    """What a failure says without its numbers (ports, durations, counts): two failures of the
    same shape are repeats, a new shape is news."""
    return _NUMBER.sub("#", detail)


_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SHAPES_KEPT = 16


class _Failures:
    """The throttles of one device's failures, one per failure shape: the first of each shape at
    WARNING, its repeats at DEBUG with a summary now and then (gateway.log.Throttle)."""

    def __init__(self, dlog: Any) -> None:
        self._log = dlog
        self._by_shape: dict[str, Throttle] = {}

    def hit(self, detail: str, **fields: Any) -> None:
        shape = failure_shape(detail)
        throttle = self._by_shape.pop(shape, None)
        if throttle is None:
            throttle = Throttle(self._log, "device_unavailable")
            if len(self._by_shape) >= _SHAPES_KEPT:  # a device failing in ever new ways
                self._by_shape.pop(next(iter(self._by_shape)))
        self._by_shape[shape] = throttle  # most recent last
        throttle.hit(detail=detail, **fields)

    def clear(self) -> None:
        """The device connected: each shape's episode ends (and says how many there were)."""
        for throttle in self._by_shape.values():
            throttle.clear()
        self._by_shape.clear()
