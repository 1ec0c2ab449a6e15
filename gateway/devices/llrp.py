"""RFID readers speaking LLRP (Impinj R700 and Speedway, Zebra FX9600 ...): tag reports as
`TagRead` observations, GPI changes as `Gpi`, read windows and GPO writes.

One `run` is one session (`llrp_session`): TCP connect, the reader's connection event, the
configuration sequence (sllurp's state machine, driven on the loop), then reports until the
session ends. Everything that ends it is `DeviceUnavailable`, and the supervisor starts a new
run after its backoff (sllurp's own reconnect is never used: it retries once at once, then
waits a hard-coded 60 s):

- the reader closes or resets the connection, or sends what cannot be framed;
- the reader is silent for three keepalive periods (sllurp never notices missing keepalives:
  a reader that lost power behind a switch keeps the TCP connection "up" for hours);
- the reader refuses the connection because a client-initiated connection already exists. That
  is a stale session, usually this gateway's own from before a network or power cut: the reader
  drops it once its keepalives to the dead peer fail, and the next attempt succeeds. The error
  says so, so the log tells a technician what is going on instead of only "refused".

Settings no retry can fix (an antenna or RF mode the reader does not have) are
`DeviceMisconfigured`, checked against the reader's capabilities (`llrp_setup`).

Writes (`write`): `inventory` (bool) opens or closes the read window of a reader configured
with `inventory: commanded`; `gpoN` (bool) sets output port N. The wanted read window is kept
across sessions: a window opened by the PLC while the reader was away opens on reconnect.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, Final

from gateway.config.rfid import LlrpConfig
from gateway.devices import llrp_wire as wire
from gateway.devices.base import (
    DeviceContext,
    DevicePlan,
    DeviceUnavailable,
    WriteFailed,
)
from gateway.devices.llrp_session import LlrpStats, Refused, Session, check
from gateway.log import Throttle, get_logger

SILENT_PERIODS: Final = 3  # keepalive periods without a message before the session is dropped
CLOSE_TIMEOUT_S: Final = 1.0
GPO_SIGNAL: Final = re.compile(r"gpo(\d+)")


class LlrpDevice:
    """One LLRP reader. The supervisor calls `run` again after each failure; `write` works
    while a run is connected (and `inventory` is remembered when it is not)."""

    def __init__(self, config: LlrpConfig, plan: DevicePlan, state_dir: Path) -> None:
        """`plan` and `state_dir` are in every adapter's signature; a reader needs neither."""
        self.config = config
        self.stats = LlrpStats()
        self._log = get_logger(__name__, device=config.id)
        self._throttles: dict[str, Throttle] = {}
        self._session: Session | None = None
        self._want_open = config.inventory == "continuous"

    async def run(self, ctx: DeviceContext) -> None:
        cfg = self.config
        where = f"reader {cfg.host}:{cfg.port}"
        loop = asyncio.get_running_loop()
        session = Session(cfg, ctx, self._log, self._throttles, self.stats)
        try:
            async with asyncio.timeout(cfg.connect_timeout_s):
                await loop.create_connection(lambda: session, cfg.host, cfg.port)
        except TimeoutError:
            raise DeviceUnavailable(
                f"{where} did not accept the connection within {cfg.connect_timeout_s} s"
            ) from None
        except OSError as exc:  # refused, unreachable, name not resolved
            raise DeviceUnavailable(f"cannot connect to {where}: {exc}") from exc
        try:
            try:
                async with asyncio.timeout(cfg.connect_timeout_s):
                    await session.ready
            except TimeoutError:
                raise DeviceUnavailable(
                    f"{where} was not configured within {cfg.connect_timeout_s} s: no answer "
                    f"to {session.stage}"
                ) from None
            self._session = session
            self._open_window(session)
            await self._watch(session, loop)
        finally:
            self._session = None
            await session.close(CLOSE_TIMEOUT_S)

    def _open_window(self, session: Session) -> None:
        """The read window the reader starts with: a GPI-triggered reader asks for the state of
        its input; a commanded one opens if the PLC wants it open."""
        if self.config.inventory == "gpi":
            session.query_gpi()
        elif self.config.inventory == "commanded" and self._want_open:
            session.set_window(True, "reconnect")

    async def _watch(self, session: Session, loop: asyncio.AbstractEventLoop) -> None:
        """Until the session fails (raised from `ended`) or the reader falls silent."""
        limit = SILENT_PERIODS * self.config.keepalive_s
        while True:
            silent = loop.time() - session.last_heard
            if silent >= limit:
                raise DeviceUnavailable(
                    f"reader {session.where} sent nothing for {silent:.1f} s (keepalive every "
                    f"{self.config.keepalive_s:g} s): the connection is dead"
                )
            try:
                async with asyncio.timeout(limit - silent):
                    await asyncio.shield(session.ended)
            except TimeoutError:
                continue

    async def write(self, signal: str, value: Any) -> None:
        cfg = self.config
        if signal == "inventory":
            if cfg.inventory != "commanded":
                raise WriteFailed(
                    f"{cfg.id}: inventory is {cfg.inventory!r}; read windows need `commanded`"
                )
            self._want_open = bool(value)
            session = self._session
            if session is None or not session.usable:
                return  # opened (or left closed) when the next session starts
            done = session.set_window(bool(value), "command")
            if done is not None:
                await self._answer(done, f"{'START' if value else 'STOP'}_ROSPEC")
            return
        m = GPO_SIGNAL.fullmatch(signal)
        if m is None or not 1 <= int(m[1]) <= cfg.gpo_ports:
            raise WriteFailed(f"{cfg.id} has no output {signal!r} (gpo1 .. gpo{cfg.gpo_ports})")
        session = self._session
        if session is None or not session.usable:
            raise WriteFailed(f"{cfg.id} is not connected: {signal} not written")
        port, state = int(m[1]), bool(value)
        await self._answer(
            session.request(lambda mid: wire.set_gpo(mid, port, state)), f"{signal} := {state}"
        )

    async def _answer(self, done: asyncio.Future[bytes], what: str) -> None:
        try:
            check(await done, what)
        except (Refused, DeviceUnavailable) as exc:
            raise WriteFailed(f"{self.config.id}: {exc}") from None
