"""Carrying out the MES's commands (validated by gateway.binding.commands): work orders and
serial pools. Pure: each command becomes the event that records it, the durable state that
commits with it, and a reply sent once that event is committed. A command that changes nothing
(a work order already active, a pool delivery already taken) is answered at once, `changed`
false, with no event.
"""

from __future__ import annotations

from collections.abc import Collection

from gateway.binding import commands
from gateway.binding.commission import PoolError
from gateway.binding.context import WorkOrder
from gateway.binding.env import Env
from gateway.binding.result import BindResult
from gateway.events import Command


class CommandHandler:
    def __init__(self, env: Env, stations: Collection[str], max_bytes: int) -> None:
        self.env = env
        self.stations = stations
        self.max_bytes = max_bytes

    def handle(self, obs: Command) -> BindResult:
        try:
            cmd = commands.parse(obs, self.max_bytes)
        except commands.Invalid as exc:
            return self._refused(obs, exc.correlation_id, exc.problems)
        if isinstance(cmd, commands.WorkOrderCommand):
            return self._work_order(obs, cmd)
        assert isinstance(cmd, commands.SerialPoolCommand)
        return self._serial_pool(obs, cmd)

    def _refused(self, obs: Command, correlation: str | None, problems: list[str]) -> BindResult:
        return BindResult(
            replies=[commands.reply(obs, correlation, ok=False, error="; ".join(problems))],
            notes=[("command_refused", {"command": obs.name, "problems": problems})],
        )

    def _work_order(self, obs: Command, cmd: commands.WorkOrderCommand) -> BindResult:
        if cmd.station is not None and cmd.station not in self.stations:
            return self._refused(
                obs, cmd.correlation_id, [f"station: no station {cmd.station!r} on this line"]
            )
        order = None
        if cmd.work_order is not None:
            order = WorkOrder(cmd.work_order, cmd.product, tuple(cmd.gtins), cmd.lot, cmd.expiry)
        elif cmd.gtins or cmd.product or cmd.lot or cmd.expiry:
            return self._refused(
                obs, cmd.correlation_id, ["work_order: null clears it; give nothing else"]
            )
        change = self.env.orders.set(
            cmd.station, order, time=obs.time, source="command", correlation_id=cmd.correlation_id
        )
        if change is None:
            return BindResult(
                replies=[commands.reply(obs, cmd.correlation_id, ok=True, changed=False)]
            )
        ev = change.event
        return BindResult(
            events=[ev],
            changes=[change.state],
            replies=[
                commands.reply(
                    obs,
                    cmd.correlation_id,
                    ok=True,
                    after=ev.event_id,
                    changed=True,
                    event_id=ev.event_id,
                )
            ],
        )

    def _serial_pool(self, obs: Command, cmd: commands.SerialPoolCommand) -> BindResult:
        try:
            loaded = self.env.pools.load(
                cmd.pool,
                cmd.ranges,
                cmd.serials,
                correlation_id=cmd.correlation_id,
                time=obs.time,
            )
        except PoolError as exc:
            return self._refused(obs, cmd.correlation_id, [str(exc)])
        remaining = self.env.pools.remaining(cmd.pool)
        if loaded is None:
            reply = commands.reply(
                obs, cmd.correlation_id, ok=True, changed=False, remaining=remaining
            )
            return BindResult(replies=[reply])
        ev, changes = loaded
        reply = commands.reply(
            obs,
            cmd.correlation_id,
            ok=True,
            after=ev.event_id,
            changed=True,
            event_id=ev.event_id,
            remaining=remaining,
        )
        return BindResult(events=[ev], changes=changes, replies=[reply])
