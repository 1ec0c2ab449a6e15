"""asyncio, where Python 3.11 needs a hand.

`TaskGroup`: Python 3.11's `asyncio.TaskGroup` cancels its parent task when a child fails, so
that the body stops, and takes that cancellation back (`uncancel`) only if it had asked for it
before `__aexit__` began. When the body has already ended (a body that only starts tasks, then
waits in `__aexit__`) and a child fails then, the request is never taken back: the parent task
leaves the group with `cancelling() == 1`, as if someone had cancelled it. A supervisor that
checks `cancelling()` (gateway.devices.base.reraise_swallowed_cancel) then stops for good: an
OPC UA device was never reconnected after its server restarted. Python 3.12 fixed it
(gh-102780: the request is taken back at the end of `__aexit__`); this does the same on 3.11,
and only for the group's own request (a real cancellation arriving meanwhile is a separate
count and stays).
"""

from __future__ import annotations

import asyncio
import sys
from types import TracebackType

_FIXED = sys.version_info >= (3, 12)


class TaskGroup(asyncio.TaskGroup):
    async def __aexit__(
        self,
        et: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Private attributes of asyncio.TaskGroup (3.11): whether the group cancelled its parent.
        asked_before = self._parent_cancel_requested  # type: ignore[attr-defined]
        try:
            await super().__aexit__(et, exc, tb)
        finally:
            if not _FIXED and self._parent_cancel_requested and not asked_before:  # type: ignore[attr-defined]
                self._parent_task.uncancel()  # type: ignore[attr-defined]
