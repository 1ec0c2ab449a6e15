"""The state of the simulated LLRP reader that outlives connections, and the requests that read
or change it: capabilities, the reader configuration (GET/SET_READER_CONFIG), the ROSpecs
(added, enabled, started, stopped, deleted, listed, their reports fetched), AccessSpecs (none:
ADD_ACCESSSPEC is refused) and the GPIO ports; and where a tag read goes.

It knows no connection. A request is handled with a `Reply` to answer it with, and whatever
the reader sends on its own goes through the `Outlet` of the server. State changes happen
synchronously in the request handler, before the next request is read, so a client sees them
in order; timers only decide when. A request is checked whole before any of it is applied.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

from simulators import llrp_codec as codec
from simulators.llrp_codec import Header, LlrpError, Msg, P, Status, TagRead
from simulators.llrp_config import (
    EVENT_GPI,
    ReaderConfig,
    check_antenna_config,
    check_update,
)
from simulators.llrp_models import ReaderModel
from simulators.llrp_rospec import ACTIVE, DISABLED, INACTIVE, AddedRoSpec, Outlet
from simulators.llrp_scenario import PassTruth


class GpoWrite(NamedTuple):
    """A GPO write a client made: `for at, port, state in sim.gpo_history`."""

    time: float  # UTC seconds
    port: int
    state: bool


class Reply(Protocol):
    """Answers the request: its response message, LLRPStatus success, then `params`."""

    def __call__(self, *params: bytes) -> None: ...


Request = Callable[[Header, bytes, Reply], None]


class ReaderState:
    """One reader's state from power-on (or a restart) on. `mac`: its EUI-64, for the
    Identification parameter. `requests`: a handler for each message type it answers."""

    def __init__(
        self, model: ReaderModel, mac: bytes, outlet: Outlet, flush_after_s: float | None
    ) -> None:
        self.model, self.mac, self.outlet = model, mac, outlet
        self.flush_after_s = flush_after_s
        self.config = ReaderConfig.defaults(model)
        self.rospecs: dict[int, AddedRoSpec] = {}
        self.gpi_state: dict[int, bool] = dict.fromkeys(range(1, model.num_gpi + 1), False)
        self.gpo_state: dict[int, bool] = dict.fromkeys(range(1, model.num_gpo + 1), False)
        self.gpo_history: list[GpoWrite] = []
        self.config_state = 1  # LLRPConfigurationStateValue: changes with the configuration
        self.requests: dict[int, Request] = {
            Msg.GET_READER_CAPABILITIES: self._get_capabilities,
            Msg.GET_READER_CONFIG: self._get_config,
            Msg.SET_READER_CONFIG: self._set_config,
            Msg.ADD_ROSPEC: self._add_rospec,
            Msg.DELETE_ROSPEC: self._rospec_command,
            Msg.START_ROSPEC: self._rospec_command,
            Msg.STOP_ROSPEC: self._rospec_command,
            Msg.ENABLE_ROSPEC: self._rospec_command,
            Msg.DISABLE_ROSPEC: self._rospec_command,
            Msg.GET_ROSPECS: self._get_rospecs,
            Msg.ADD_ACCESSSPEC: self._add_accessspec,
            Msg.DELETE_ACCESSSPEC: self._accessspec_command,
            Msg.ENABLE_ACCESSSPEC: self._accessspec_command,
            Msg.DISABLE_ACCESSSPEC: self._accessspec_command,
            Msg.GET_ACCESSSPECS: self._get_accessspecs,
            Msg.GET_REPORT: self._get_report,
        }

    def active(self) -> list[AddedRoSpec]:
        return [rs for rs in self.rospecs.values() if rs.state == ACTIVE]

    def stop_timers(self) -> None:
        for rs in self.rospecs.values():
            rs.stop_timers()

    # --- tags and GPIO --------------------------------------------------------------------------

    def tag(
        self, epc: str, antenna: int, rssi: int, t_us: int, truth: PassTruth, *, floor: float
    ) -> None:
        """One read (`rssi` at full power): into the report batch of the ROSpec that takes it,
        missed if the antenna's transmit power makes it weaker than `floor`, or not delivered."""
        rs = self._taker(antenna)
        if rs is None:
            truth.not_delivered += 1
            return
        conf = rs.antenna_config(antenna)
        power = (conf.power_index if conf else None) or self.config.antennas[antenna].power_index
        table = self.model.power_table_cdbm
        # The tag's reply weakens dB for dB with the transmit power.
        rssi += round((table[power - 1] - max(table)) / 100)
        if rssi < floor:
            truth.missed += 1
            return
        channel = (conf.channel if conf else None) or self.config.antennas[antenna].channel
        ips = rs.spec.aispecs[0].inventory_specs[0]
        rs.take(TagRead(epc, antenna, rssi, t_us, t_us, 1, rs.id, 1, ips, channel), truth)

    def _taker(self, antenna: int) -> AddedRoSpec | None:
        """The ROSpec that reports a read on `antenna`: the highest-priority active one."""
        active = [rs for rs in self.active() if rs.covers(antenna)]
        return min(active, key=lambda rs: (rs.spec.priority, rs.id), default=None)

    async def set_gpi(self, port: int, state: bool) -> None:
        """The level of a GPI port (a light barrier): a GPIEvent if the level changed, GPI
        events are enabled and the port is; GPI start and stop triggers fire."""
        if port not in self.gpi_state:
            raise ValueError(f"GPI port {port} does not exist (1..{self.model.num_gpi})")
        if self.gpi_state[port] == state:
            return
        self.gpi_state[port] = state
        if not self.config.gpi_enabled.get(port, False):
            return
        if self.config.events[EVENT_GPI]:
            self.outlet.event(codec.gpi_event(port, state))
        for rs in list(self.rospecs.values()):
            rs.on_gpi(port, state)
        await self.outlet.drain()

    # --- capabilities and configuration ---------------------------------------------------------

    def _get_capabilities(self, header: Header, body: bytes, reply: Reply) -> None:
        requested = codec.parse_get_capabilities(body)
        reply(codec.capabilities(self.model, self.model.antennas, requested))

    def _get_config(self, header: Header, body: bytes, reply: Reply) -> None:
        req = codec.parse_get_reader_config(body)
        cfg, model = self.config, self.model
        limits = (
            ("AntennaID", 0, req.antenna, model.antennas),
            ("GPIPortNum", 2, req.gpi_port, model.num_gpi),
            ("GPOPortNum", 3, req.gpo_port, model.num_gpo),
        )
        for name, num, value, top in limits:
            if value > top:
                text = f"{name} {value} does not exist (1..{top}, or 0 for all)"
                raise codec.out_of_range(None, num, text)

        ants = [req.antenna] if req.antenna else sorted(cfg.antennas)
        gpis = [req.gpi_port] if req.gpi_port else sorted(self.gpi_state)
        gpos = [req.gpo_port] if req.gpo_port else sorted(self.gpo_state)
        # RequestedData number -> its parameters, in the order of the response.
        sections: list[tuple[int, Callable[[], list[bytes]]]] = [
            (1, lambda: [codec.identification(self.mac)]),
            (2, lambda: [codec.antenna_properties(a) for a in ants]),
            (3, lambda: [cfg.antennas[a].parameter(a) for a in ants]),
            (5, lambda: [codec.event_notification_spec(cfg.events)]),
            (4, lambda: [codec.ro_report_spec(cfg.report)]),
            (6, lambda: [codec.access_report_spec(cfg.access_report_trigger)]),
            (7, lambda: [codec.configuration_state(self.config_state)]),
            (8, lambda: [codec.keepalive_spec(*cfg.keepalive)]),
            (9, lambda: [self._gpi_port_state(p) for p in gpis]),
            (10, lambda: [codec.gpo_write_data(p, self.gpo_state[p]) for p in gpos]),
            (11, lambda: [codec.events_and_reports(cfg.hold)]),
        ]
        reply(*[p for n, make in sections if req.requested in (0, n) for p in make()])

    def _gpi_port_state(self, port: int) -> bytes:
        enabled = self.config.gpi_enabled.get(port, False)
        return codec.gpi_port_state(port, enabled, int(self.gpi_state[port]) if enabled else 2)

    def _set_config(self, header: Header, body: bytes, reply: Reply) -> None:
        update = codec.parse_set_reader_config(body)
        check_update(self.model, update)
        if update.reset:
            for rs in list(self.rospecs.values()):
                self._remove(rs)
            self.config = ReaderConfig.defaults(self.model)
        self.config.apply(update)
        now = time.time()
        for port, state in update.gpo_writes.items():
            self.gpo_state[port] = state
            self.gpo_history.append(GpoWrite(now, port, state))
        self.config_state += 1
        reply()
        if update.keepalive is not None or update.reset:
            self.config.keepalive = update.keepalive or (0, 0)
            self.outlet.restart_keepalives()
        self.outlet.changed()

    # --- ROSpecs and AccessSpecs ----------------------------------------------------------------

    def _add_rospec(self, header: Header, body: bytes, reply: Reply) -> None:
        spec = codec.parse_add_rospec(body)
        if spec.id in self.rospecs:
            raise codec.fault("field", P.RO_SPEC, f"ROSpec {spec.id} exists", field_num=0)
        if len(self.rospecs) >= self.model.max_rospecs:
            raise LlrpError(
                Status.M_PARAMETER_ERROR,
                f"this reader holds at most {self.model.max_rospecs} ROSpecs",
                param=P.RO_SPEC,
                param_code=Status.P_OVERFLOW_PARAMETER,
            )
        (ai, *more) = spec.aispecs
        if more or len(ai.inventory_specs) > 1:
            raise LlrpError(
                Status.M_PARAMETER_ERROR,
                "one AISpec per ROSpec, one InventoryParameterSpec per AISpec",
                param=P.AI_SPEC if more else P.INVENTORY_PARAMETER_SPEC,
                param_code=Status.P_OVERFLOW_PARAMETER,
            )
        top = self.model.antennas
        bad = [a for a in ai.antennas if a > top or (a == 0 and len(ai.antennas) > 1)]
        if bad:
            raise codec.out_of_range(P.AI_SPEC, 0, f"antennas {bad} do not exist")
        for conf in ai.antenna_configs:
            check_antenna_config(self.model, conf)
        for trigger in (spec.start.gpi, spec.stop.gpi, ai.stop.gpi):
            if trigger is not None and not 1 <= trigger.port <= self.model.num_gpi:
                raise codec.out_of_range(
                    P.GPI_TRIGGER_VALUE, 0, f"GPI port {trigger.port} does not exist"
                )
        self.rospecs[spec.id] = AddedRoSpec(spec, self)
        self.config_state += 1
        reply()
        self.outlet.changed()

    def _rospec_command(self, header: Header, body: bytes, reply: Reply) -> None:
        mtype = Msg(header.type)
        targets = self._rospec_targets(mtype, codec.parse_spec_id(body))
        reply()
        for rs in targets:
            if mtype == Msg.DELETE_ROSPEC:
                self._remove(rs)
            elif mtype == Msg.ENABLE_ROSPEC and rs.state == DISABLED:
                rs.enable()
            elif mtype == Msg.DISABLE_ROSPEC and rs.state != DISABLED:
                rs.deactivate(DISABLED)
            elif mtype == Msg.START_ROSPEC:
                rs.activate()
            elif mtype == Msg.STOP_ROSPEC:
                rs.deactivate()
        self.outlet.changed()

    def _rospec_targets(self, mtype: Msg, spec_id: int) -> list[AddedRoSpec]:
        """The ROSpecs a command is for (ID 0: all, except for START and STOP), checked."""
        if spec_id == 0 and mtype in (Msg.START_ROSPEC, Msg.STOP_ROSPEC):
            raise codec.out_of_range(None, 0, "ROSpecID 0 names no ROSpec to start or stop")
        if spec_id == 0:
            targets = list(self.rospecs.values())
        elif spec_id in self.rospecs:
            targets = [self.rospecs[spec_id]]
        else:
            raise codec.fault("field", None, f"no ROSpec with ID {spec_id}", field_num=0)
        for rs in targets:
            if mtype == Msg.START_ROSPEC and rs.state != INACTIVE:
                raise codec.fault("field", None, f"ROSpec {rs.id} is not inactive", field_num=0)
            if mtype == Msg.STOP_ROSPEC and rs.state != ACTIVE:
                raise codec.fault("field", None, f"ROSpec {rs.id} is not active", field_num=0)
        return targets

    def _remove(self, rs: AddedRoSpec) -> None:
        rs.remove()
        self.rospecs.pop(rs.id, None)
        self.config_state += 1

    def _get_rospecs(self, header: Header, body: bytes, reply: Reply) -> None:
        codec.children(body, None, {})
        reply(*[codec.rospec_with_state(rs.spec.raw, rs.state) for rs in self.rospecs.values()])

    def _get_report(self, header: Header, body: bytes, reply: Reply) -> None:
        codec.children(body, None, {})  # no response: the reports are the answer
        for rs in self.rospecs.values():
            rs.flush()

    def _add_accessspec(self, header: Header, body: bytes, reply: Reply) -> None:
        raise codec.fault("unsupported", None, "AccessSpecs are not simulated (inventory only)")

    def _accessspec_command(self, header: Header, body: bytes, reply: Reply) -> None:
        spec_id = codec.parse_spec_id(body)
        if spec_id != 0:
            raise codec.fault("field", None, f"no AccessSpec with ID {spec_id}", field_num=0)
        reply()

    def _get_accessspecs(self, header: Header, body: bytes, reply: Reply) -> None:
        codec.children(body, None, {})
        reply()
