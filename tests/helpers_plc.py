"""Shared helpers of the PLC adapter tests: a context that collects `Signals` and waits for
changes, plans, and Modbus configs over the simulator's profiles. Tests wait on conditions,
never on sleeps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gateway.config.plc import ModbusConfig
from gateway.devices.base import DevicePlan
from gateway.events import Signals, SignalValue
from simulators.plc_modbus import load_layout
from tests.helpers_scanner import WAIT_S, CollectingContext


class PlcContext(CollectingContext):
    """A `DeviceContext` keeping what a PLC adapter emits."""

    def __init__(self, device_id: str = "plc-1") -> None:
        super().__init__(device_id)
        self._taken: set[int] = set()

    @property
    def signals(self) -> list[Signals]:
        return [o for o in self.observations if isinstance(o, Signals)]

    @property
    def initial(self) -> list[Signals]:
        return [s for s in self.signals if s.initial]

    def changes(self, name: str) -> list[Signals]:
        """The change reports of `name` (it comes first, its snapshot after)."""
        return [s for s in self.signals if not s.initial and s.values[0].name == name]

    async def wait_initial(self, times: int = 1) -> Signals:
        await self.wait_until(lambda: len(self.initial) >= times)
        return self.initial[times - 1]

    async def wait_change(
        self, name: str, test: Callable[[SignalValue], bool] = lambda v: True
    ) -> Signals:
        """The first change report of `name` (not seen by an earlier call) whose value passes."""
        seen = self._taken

        def found() -> Signals | None:
            for s in self.changes(name):
                if id(s) not in seen and test(s.values[0]):
                    return s
            return None

        await self.wait_until(lambda: found() is not None)
        hit = found()
        assert hit is not None
        seen.add(id(hit))
        return hit


async def eventually(predicate: Callable[[], bool], interval_s: float = 0.01) -> None:
    """Return once `predicate()` holds, for conditions nothing signals (counters); fail after
    WAIT_S."""
    async with asyncio.timeout(WAIT_S):
        while not predicate():
            await asyncio.sleep(interval_s)


def value_is(expected: Any) -> Callable[[SignalValue], bool]:
    return lambda v: v.good and v.value == expected


def status_is(expected: str) -> Callable[[SignalValue], bool]:
    return lambda v: v.status == expected


def plan(watch: Iterable[str], snapshot: Mapping[str, Iterable[str]] | None = None) -> DevicePlan:
    return DevicePlan(frozenset(watch), {k: tuple(v) for k, v in (snapshot or {}).items()})


def modbus_config(port: int, signals: Mapping[str, Any], **fields: Any) -> ModbusConfig:
    return ModbusConfig.model_validate(
        {
            "id": "plc-1",
            "kind": "modbus",
            "host": "127.0.0.1",
            "port": port,
            "timeout_s": 0.3,
            "poll_groups": {"default": {"period_ms": 20}},
            "signals": signals,
            **fields,
        }
    )


def profile_config(profile: str, **fields: Any) -> ModbusConfig:
    """A profile's settings as a line would use them, with `fields` (host, port ...) added."""
    doc = load_layout(profile).model_dump(exclude_unset=True)
    return ModbusConfig.model_validate({**doc, "id": "plc-1", "host": "127.0.0.1", **fields})


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start
