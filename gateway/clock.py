"""The gateway's clock: wall-clock time that does not jump.

Observations are stamped with `now()`: the wall clock as it was when the gateway started,
carried on by the monotonic clock. Everything the binder measures is a difference of two such
stamps (binding windows, tag pass quiet times, handshake timeouts), so a step of the wall clock
(an NTP correction after a boot with a wrong clock, a technician setting the time, a virtual
machine resumed) neither stretches nor shrinks them: a scan and its cycle one second apart stay
one second apart when the clock is set an hour ahead between them.

Events are recorded in the wall clock's current terms: `to_wall(t)` adds the steps the wall
clock took since the start (`offset()`), at the moment the event is rendered. An event about
an observation made before a step, rendered after it, carries the corrected time. Slewing (NTP's
gradual corrections) moves both clocks alike and leaves `offset()` near 0.

Times inside an event's `detail` (a tag pass's `first_seen`, say) are `now()` stamps;
`offset()` is what they differ from the wall clock by (0 until the clock is stepped).
"""

from __future__ import annotations

import time

_BASE = time.time() - time.monotonic()


def now() -> float:
    """Seconds since the epoch, continuous (see the module docstring)."""
    return time.monotonic() + _BASE


def offset() -> float:
    """How far the wall clock has been stepped since the gateway started, in whole
    milliseconds (the two clocks are read a microsecond apart: that is no step)."""
    return round(time.time() - (time.monotonic() + _BASE), 3)


def to_wall(t: float) -> float:
    """A `now()` stamp in the wall clock's current terms."""
    return t + offset()
