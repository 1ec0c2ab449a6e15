"""The supervisor (pure unit tests with scripted adapters: the real ones are tested against
real peers elsewhere) and the logging policy."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random

import pytest
import structlog
from structlog.testing import capture_logs

from gateway.devices.base import DeviceContext, DeviceMisconfigured, DeviceUnavailable
from gateway.events import DeviceState, Observation
from gateway.log import Throttle, configure
from gateway.supervise import Backoff, supervise_device


def test_backoff_doubles_to_its_cap_with_jitter_and_resets() -> None:
    b = Backoff(0.5, 8.0, random.Random(1))
    delays = [b.next() for _ in range(8)]
    for i, d in enumerate(delays[:4]):
        nominal = 0.5 * 2**i
        assert 0.75 * nominal <= d <= 1.25 * nominal
    assert all(d <= 8.0 for d in delays) and delays[-1] >= 6.0
    b.reset()
    assert b.next() <= 0.625


class Scripted:
    """An adapter whose run() follows a script: 'down', 'bug', 'misconfigured', or 'up'
    (connect, then wait to be cancelled)."""

    def __init__(self, *script: str) -> None:
        self.script = list(script)
        self.runs = 0
        self.up = asyncio.Event()

    async def run(self, ctx: DeviceContext) -> None:
        self.runs += 1
        step = self.script.pop(0)
        if step == "down":
            raise DeviceUnavailable("peer refused")
        if step == "silent":
            raise DeviceUnavailable(f"peer sent nothing for {1.5 + self.runs / 10:.1f} s")
        if step == "bug":
            raise ZeroDivisionError("adapter bug")
        if step == "misconfigured":
            raise DeviceMisconfigured("not a tty")
        ctx.connected("ok")
        self.up.set()
        await asyncio.Event().wait()


async def test_retries_with_backoff_survives_a_buggy_adapter_and_reports_states() -> None:
    dev = Scripted("down", "down", "bug", "down", "up")
    seen: list[Observation] = []
    with capture_logs() as logs:
        task = asyncio.create_task(
            supervise_device("cam-1", dev, emit=seen.append, backoff=Backoff(0.01, 0.02))
        )
        await asyncio.wait_for(dev.up.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert dev.runs == 5
    states = [(o.state, o.detail) for o in seen if isinstance(o, DeviceState)]
    assert states == [  # a repeat is not re-reported; a failure of another kind is news
        ("disconnected", "peer refused"),
        ("disconnected", "ZeroDivisionError: adapter bug"),
        ("disconnected", "peer refused"),
        ("connected", "ok"),
    ]
    events = [(lg["event"], lg["log_level"]) for lg in logs]
    assert ("device_crashed", "error") in events  # a bug is logged with its traceback
    # The first failure of each kind is a warning, its repeats are not.
    assert events.count(("device_unavailable", "warning")) == 2
    assert events.count(("device_unavailable", "debug")) == 2
    assert ("device_connected", "info") in events


async def test_failures_that_differ_only_in_numbers_are_repeats() -> None:
    dev = Scripted("silent", "silent", "silent", "up")
    seen: list[Observation] = []
    with capture_logs() as logs:
        task = asyncio.create_task(
            supervise_device("rfid-1", dev, emit=seen.append, backoff=Backoff(0.01, 0.02))
        )
        await asyncio.wait_for(dev.up.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    states = [(o.state, o.detail) for o in seen if isinstance(o, DeviceState)]
    assert states == [("disconnected", "peer sent nothing for 1.6 s"), ("connected", "ok")]
    warnings = [lg for lg in logs if lg["log_level"] == "warning"]
    assert [w["event"] for w in warnings] == ["device_unavailable"]


async def test_a_misconfigured_device_is_failed_and_not_retried() -> None:
    dev = Scripted("misconfigured", "up")
    seen: list[Observation] = []
    await asyncio.wait_for(
        supervise_device("scan-1", dev, emit=seen.append, backoff=Backoff(0.01, 0.02)), 5
    )
    assert dev.runs == 1
    assert [o.state for o in seen if isinstance(o, DeviceState)] == ["failed"]


def test_throttle_warns_once_then_summarises() -> None:
    clock = [0.0]
    with capture_logs() as logs:
        t = Throttle(structlog.get_logger(), "thing_failed", summary_s=60, clock=lambda: clock[0])
        for _ in range(5):
            t.hit(device="d")
        clock[0] = 61.0
        t.hit(device="d")
        t.clear(device="d")
    levels = [(lg["event"], lg["log_level"]) for lg in logs]
    assert levels[0] == ("thing_failed", "warning")
    assert levels[1:5] == [("thing_failed", "debug")] * 4
    assert levels[5] == ("thing_failed_repeated", "warning") and logs[5]["count"] == 5
    assert levels[6] == ("thing_failed_cleared", "info") and logs[6]["total"] == 6


def test_json_logs_carry_library_warnings_in_the_same_stream() -> None:
    out = io.StringIO()
    try:
        configure("info", "json", stream=out)
        structlog.get_logger().info("device_connected", device="cam-1")
        logging.getLogger("paho").info("chatty library detail")  # below WARNING: dropped
        logging.getLogger("asyncua").warning("library trouble")
    finally:
        configure("warning", "console")
        structlog.reset_defaults()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [ln["event"] for ln in lines] == ["device_connected", "library trouble"]
    assert lines[0]["device"] == "cam-1" and lines[0]["level"] == "info"
    assert lines[1]["logger"] == "asyncua" and lines[1]["level"] == "warning"
    assert all(ln["timestamp"].endswith("Z") for ln in lines)


class FailsAfterItsBody:
    """An adapter whose run() starts its tasks in a TaskGroup and lets one fail once the body is
    over (as the OPC UA adapter's session does when its server goes away)."""

    def __init__(self, group: type[asyncio.TaskGroup]) -> None:
        self.group = group
        self.runs = 0
        self.third = asyncio.Event()

    async def run(self, ctx: DeviceContext) -> None:
        self.runs += 1
        if self.runs == 3:
            self.third.set()
            await asyncio.Event().wait()

        async def lost() -> None:
            await asyncio.sleep(0.01)
            raise DeviceUnavailable("server went away")

        try:
            async with self.group() as tg:
                tg.create_task(lost())
        except* DeviceUnavailable as group:
            raise group.exceptions[0] from None


async def test_a_device_whose_task_group_failed_after_its_body_is_retried() -> None:
    """Python 3.11's TaskGroup leaves its parent marked cancelled in this case (fixed in 3.12);
    the supervisor then took the retry for a cancellation and stopped for good."""
    from gateway.aio import TaskGroup

    dev = FailsAfterItsBody(TaskGroup)
    task = asyncio.create_task(
        supervise_device("press", dev, emit=lambda o: None, backoff=Backoff(0.01, 0.02))
    )
    await asyncio.wait_for(dev.third.wait(), 5)
    assert not task.done() and dev.runs == 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
