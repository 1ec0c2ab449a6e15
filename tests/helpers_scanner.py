"""Shared helpers of the scanner tests: a collecting `DeviceContext`, running an adapter in a
task, and config builders. Tests wait on conditions (events), never on sleeps."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from gateway.config.models import SerialScannerConfig, TcpScannerConfig
from gateway.devices.base import Device
from gateway.events import NoRead, Observation, Scan

WAIT_S = 5.0


class CollectingContext:
    """A `DeviceContext` that keeps what the adapter emits and wakes waiters on every change."""

    def __init__(self, device_id: str = "scanner-1") -> None:
        self._device_id = device_id
        self.observations: list[Observation] = []
        self.connections: list[str] = []
        self._changed = asyncio.Event()

    @property
    def device_id(self) -> str:
        return self._device_id

    def emit(self, observation: Observation) -> None:
        self.observations.append(observation)
        self._changed.set()

    def connected(self, detail: str) -> None:
        self.connections.append(detail)
        self._changed.set()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds; fail after WAIT_S."""
        async with asyncio.timeout(WAIT_S):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def wait_connected(self, times: int = 1) -> None:
        await self.wait_until(lambda: len(self.connections) >= times)

    async def wait_observations(self, count: int) -> None:
        await self.wait_until(lambda: len(self.observations) >= count)

    @property
    def scans(self) -> list[str]:
        return [o.text for o in self.observations if isinstance(o, Scan)]

    @property
    def noreads(self) -> list[str]:
        return [o.text for o in self.observations if isinstance(o, NoRead)]


@contextlib.asynccontextmanager
async def running(device: Device, ctx: CollectingContext) -> AsyncIterator[asyncio.Task[None]]:
    """Run `device` in a task for the block; cancel it (and wait for its cleanup) after."""
    task = asyncio.create_task(device.run(ctx))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def failure(task: asyncio.Task[None]) -> BaseException:
    """Wait (up to WAIT_S) for `task` to end and return the exception it ended with."""
    async with asyncio.timeout(WAIT_S):
        await asyncio.wait([task])
    exc = task.exception()
    assert exc is not None, "the adapter returned without raising"
    return exc


def serial_config(port: str, **kwargs: Any) -> SerialScannerConfig:
    framing = kwargs.pop("framing", {})
    return SerialScannerConfig.model_validate(
        {"id": "scanner-1", "kind": "serial_scanner", "port": port, "framing": framing, **kwargs}
    )


def tcp_config(port: int, **kwargs: Any) -> TcpScannerConfig:
    framing = kwargs.pop("framing", {})
    return TcpScannerConfig.model_validate(
        {
            "id": "scanner-1",
            "kind": "tcp_scanner",
            "host": "127.0.0.1",
            "port": port,
            "framing": framing,
            **kwargs,
        }
    )
