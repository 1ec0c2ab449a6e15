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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from gateway.events import Observation


class DeviceUnavailable(Exception):
    """The peer is gone or misbehaving; the supervisor retries with backoff."""


class DeviceMisconfigured(Exception):
    """Retrying cannot help until the configuration changes."""


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


DeviceFactory = Callable[..., Device]
