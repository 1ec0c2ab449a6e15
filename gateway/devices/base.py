"""The contract between a device adapter and the rest of the gateway.

An adapter owns one protocol and nothing else. Its `run` connects, reads, and turns what it
reads into observations through `DeviceContext.emit`, until the peer is gone. It never retries
by itself: the supervisor (gateway.supervise) owns reconnection with capped, jittered backoff, so
there is exactly one owner of retries per device.

Errors are typed by what the supervisor should do:
- `DeviceUnavailable`: the peer is gone, slow or refusing; retry later with backoff.
- `DeviceMisconfigured`: retrying cannot help (e.g. the configured port is not a serial device);
  the device is marked failed until the configuration is reloaded.
Anything else escaping `run` is a bug in the adapter: the supervisor logs it with its traceback
and retries with backoff, so one broken adapter never stops the others.

PLC adapters (OPC UA, Modbus) also read and write named signals. What to read is given by a
`DevicePlan`, derived from the stations that use the device: the signals to *watch* (every
change reported: triggers, handshake requests, acknowledgements) and, per watched signal, the
*snapshot* to read together with it in one request when it changes (the parameters, result and
identity of a cycle, consistent with each other). After each (re)connect an adapter reports the
current value of every watched signal once (`Signals.initial`), so that a level (a handshake
request still raised) is seen again after any interruption. `write` puts a value into a signal,
in the signal's own data type, on the current connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.events import Observation


class DeviceUnavailable(Exception):
    """The peer is gone or misbehaving; the supervisor retries with backoff."""


class DeviceMisconfigured(Exception):
    """Retrying cannot help until the configuration changes."""


class WriteFailed(Exception):
    """A write was not done: not connected, refused by the PLC (read-only node, exception
    response, type mismatch) or timed out. The message says which, naming device and signal."""


class DeviceContext(Protocol):
    """What an adapter may do with the gateway while it runs."""

    @property
    def device_id(self) -> str: ...

    def emit(self, observation: Observation) -> None:
        """Hand an observation to the binder. Never blocks: the queue behind it is bounded and
        counts what it cannot keep (reported as a `gap` event)."""

    def connected(self, detail: str) -> None:
        """Call once the peer is really usable (port open, TCP connected, session up)."""


class Device(Protocol):
    """A running device adapter. `run` returns only by raising (or by cancellation)."""

    async def run(self, ctx: DeviceContext) -> None: ...


@dataclass(frozen=True)
class DevicePlan:
    """What the stations need of a PLC: signals to watch, and what to read with each change."""

    watch: frozenset[str] = frozenset()
    snapshot: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def snapshot_of(self, signal: str) -> tuple[str, ...]:
        return self.snapshot.get(signal, ())


class PlcDevice(Device, Protocol):
    """A device with named signals (see the module docstring for the obligations)."""

    async def write(self, signal: str, value: Any) -> None:
        """Write `value` (engineering units; scaling is undone) to `signal`. Raises
        WriteFailed; never retries by itself."""
        ...


DeviceFactory = Callable[..., Device]


def reraise_swallowed_cancel() -> None:
    """Raise CancelledError if this task was cancelled and a library swallowed it.

    Python 3.11's `asyncio.wait_for` loses a cancellation that arrives just as the awaited
    future completes (fixed in 3.12); pymodbus and asyncua await every response with it. A
    device polling thousands of times a second then sometimes ignores its cancel and runs on,
    holding up a stop or a reload. Every adapter loop calls this once per iteration."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
