"""The binding engine: turns what devices saw into what the trace records.

- A code read by one of a station's scanners, or a tag pass at its portal, is an identity
  arriving at the station (gateway.binding.identify): `identified`, `rejected` by the station's
  rules, a part of an aggregation (gateway.binding.genealogy), or a candidate of its next cycle.
- A PLC station's cycle (trigger edge or handshake, gateway.binding.cycles) becomes a
  `step.completed` event with its parameters (with tolerances) and result (gateway.binding.
  record), or `rejected`, `noread`, `ambiguous`; a commissioning station's becomes
  `commissioned` (gateway.binding.commission).
- RFID tag reads become tag passes (gateway.binding.portals); a station's `read_window` opens and
  closes the reader's inventory.
- Commands from the MES (work orders, serial pools) change durable state and are answered after
  the commit (gateway.binding.mes); a station's `work_order_signal` changes its work order.
- Device state changes and losses become `device.state` and `gap` events (no station).
- A station's `outputs` (stack lights, gates) are written after the events that fire them.

Nothing here guesses: every anomaly is an explicit event. `plans()` derives what each PLC must
read from the stations that use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.binding.commission import Pools
from gateway.binding.context import WorkOrder, WorkOrders
from gateway.binding.cycles import CycleStation
from gateway.binding.env import Env
from gateway.binding.genealogy import AggregationStation
from gateway.binding.identify import Stations
from gateway.binding.mes import CommandHandler
from gateway.binding.portals import PortalStation, ReadWindow
from gateway.binding.result import BindResult, WriteRequest
from gateway.config.models import LineConfig, OutputRule
from gateway.config.plc import ModbusConfig, OpcuaConfig
from gateway.config.rfid import LlrpConfig
from gateway.devices.base import DevicePlan
from gateway.events import (
    Command,
    DeviceState,
    Gpi,
    HandshakeMark,
    Loss,
    NoRead,
    Observation,
    Scan,
    Signals,
    TagRead,
    Tick,
    TraceEvent,
    WriteDone,
)
from gateway.trace_index import PoolBlock, TraceView


class Binder:
    """Observations in, `BindResult`s out. Holds plain state only: the handshake and trigger
    state of PLC stations (restored from the journal's marks after a restart), the windows of
    identities waiting for a cycle, open tag passes and aggregations; work orders and serial
    pools (restored from the journal's state) and the trace view are its `env`."""

    def __init__(
        self,
        config: LineConfig,
        marks: Mapping[str, HandshakeMark] | None = None,
        *,
        state: Mapping[str, str] | None = None,
        pool_blocks: Iterable[PoolBlock] = (),
        view: TraceView | None = None,
    ) -> None:
        marks = marks or {}
        state = state or {}
        g = config.gateway
        self.env = Env(
            view if view is not None else TraceView.memory(),
            WorkOrders.of(config, state),
            Pools(config.pools, state, pool_blocks, g.site, g.line),
        )
        units = {
            (d.id, name): sig.unit
            for d in config.devices
            if isinstance(d, OpcuaConfig | ModbusConfig)
            for name, sig in d.signals.items()
        }
        self._cycles: dict[str, list[CycleStation]] = {}  # PLC -> the stations it cycles
        self._by_station: dict[str, CycleStation] = {}
        self._aggregations: dict[str, AggregationStation] = {}
        self._portals: dict[str, list[PortalStation]] = {}  # reader -> its portals
        self._portal_of: dict[str, PortalStation] = {}  # station -> its portal
        self._windows: dict[str, list[ReadWindow]] = {}  # PLC -> read windows it opens
        self._wo_signals: dict[str, list[tuple[str, str]]] = {}  # PLC -> (station, signal)
        self._outputs: dict[str, list[OutputRule]] = {
            st.id: list(st.outputs) for st in config.stations if st.outputs
        }
        for st in config.stations:
            if st.trigger is not None or st.handshake is not None:
                cycle = CycleStation(st, units, self.env, marks.get(st.id))
                self._cycles.setdefault(cycle.device, []).append(cycle)
                self._by_station[st.id] = cycle
            if st.aggregation is not None:
                self._aggregations[st.id] = AggregationStation(st, self.env)
            if st.read_window is not None:
                window = ReadWindow(st)
                self._windows.setdefault(window.plc, []).append(window)
            if st.work_order_signal is not None:
                w = st.work_order_signal
                self._wo_signals.setdefault(w.device, []).append((st.id, w.signal))
        self.stations = Stations(
            list(config.stations), self.env, self._by_station, self._aggregations
        )
        antennas = {d.id: d.antennas for d in config.devices if isinstance(d, LlrpConfig)}
        for st in config.stations:
            if st.portal is not None:
                portal = PortalStation(
                    st, antennas.get(st.portal.device, [1]), self.env, self.stations.identify
                )
                self._portals.setdefault(portal.reader, []).append(portal)
                self._portal_of[st.id] = portal
        # Whether any station asks the trace index: if none does, the binder's own changes need
        # not be seen before their commit (the pipeline skips the overlay).
        self.reads_index = any(
            st.rules.commission or st.rules.requires or st.aggregation is not None
            for st in config.stations
        )
        self._commands = CommandHandler(
            self.env, [st.id for st in config.stations], config.commands.max_bytes
        )

    def adopt(self, old: Binder) -> None:
        """A reload: keep what is not configuration. Work orders and serial pools stay (pools
        the new configuration still has); open tag passes of portals left unchanged stay (a
        reload must not cut a pass in two); the trace view is the same."""
        self.env.view = old.env.view
        self.env.orders.active = dict(old.env.orders.active)
        self.env.orders._refresh()
        for pid, pool in self.env.pools.pools.items():
            before = old.env.pools.pools.get(pid)
            if before is not None:
                cfg = pool.cfg
                self.env.pools.pools[pid] = before
                before.cfg = cfg
        for station, portal in self._portal_of.items():
            prior = old._portal_of.get(station)
            if prior is not None and prior.st.portal == portal.st.portal:
                portal.builder.open = prior.builder.open

    def flush(self, now: float) -> BindResult:
        """The gateway stops: close the open tag passes (`closed_by: stop`)."""
        out = BindResult()
        for portal in self._portal_of.values():
            out.extend(portal.flush(now, "stop"))
        return self._fire_outputs(out)

    def marks(self) -> dict[str, HandshakeMark]:
        """Handshakes in progress, to hand to the binder of a reloaded configuration."""
        return {st: c.mark for st, c in self._by_station.items() if c.mark is not None}

    def process(self, obs: Observation) -> BindResult:
        if type(obs) is TagRead:  # the hot path: most reads close no pass
            out = BindResult()
            for portal in self._portals.get(obs.device, ()):
                if portal.accepts(obs):
                    closed = portal.read(obs)
                    if closed is not None:
                        out.extend(closed)
            return self._fire_outputs(out) if out.events else out
        out = self._process(obs)
        return self._fire_outputs(out) if self._outputs and out.events else out

    def _fire_outputs(self, out: BindResult) -> BindResult:
        """The writes of the stations' `outputs` for these events, after their commit."""
        for ev in out.events:
            rules = self._outputs.get(ev.station or "")
            for rule in rules or ():
                if _fires(rule, ev):
                    out.writes.append(
                        WriteRequest(
                            rule.device,
                            rule.signal,
                            rule.value,
                            ev.event_id,
                            f"{ev.station}/output",
                            rule.pulse_ms / 1000 if rule.pulse_ms else None,
                        )
                    )
        return out

    def _process(self, obs: Observation) -> BindResult:
        match obs:
            case Scan():
                return self.stations.scan(obs)
            case Signals():
                return self._signals(obs)
            case Gpi():
                return BindResult()  # the reader acts on its inputs itself (inventory: gpi)
            case WriteDone():
                station, _, what = obs.tag.partition("/")
                target = self._by_station.get(station)
                if target is None:
                    return BindResult()
                return target.write_done(obs.signal, what, obs.error, obs.time)
            case Tick():
                return self._tick(obs.time)
            case NoRead():
                return self.stations.noread(obs)
            case Command():
                return self._commands.handle(obs)
            case DeviceState():
                return BindResult(
                    events=[
                        TraceEvent(
                            "device.state",
                            obs.time,
                            detail={"device": obs.device, "state": obs.state, "detail": obs.detail},
                        )
                    ]
                )
            case Loss():
                return BindResult(
                    events=[
                        TraceEvent(
                            "gap",
                            obs.time,
                            reason=obs.reason,
                            detail={
                                "device": obs.device,
                                "lost": obs.count,
                                "first_time": obs.first_time,
                                "last_time": obs.last_time,
                            },
                        )
                    ]
                )
        raise TypeError(f"not an observation: {obs!r}")  # pragma: no cover

    def _signals(self, obs: Signals) -> BindResult:
        out = BindResult()
        for station, signal in self._wo_signals.get(obs.device, ()):
            out.extend(self._work_order_signal(station, signal, obs))
        for cycle in self._cycles.get(obs.device, ()):
            out.extend(cycle.signals(obs))
        for window in self._windows.get(obs.device, ()):
            out.extend(window.signals(obs))
        return out

    def _work_order_signal(self, station: str, signal: str, obs: Signals) -> BindResult:
        v = obs.get(signal)
        if v is None or not v.good or not isinstance(v.value, str):
            return BindResult()
        name = v.value.strip("\x00 ")
        current = self.env.orders.active.get(station)
        if (current.work_order if current is not None else "") == name:
            return BindResult()
        order = WorkOrder(name) if name else None
        change = self.env.orders.set(station, order, time=obs.time, source="signal")
        if change is None:
            return BindResult()
        return BindResult(events=[change.event], changes=[change.state])

    def _tick(self, now: float) -> BindResult:
        out = BindResult()
        for cycle in self._by_station.values():
            out.extend(cycle.tick(now))
        for portal in self._portal_of.values():
            out.extend(portal.tick(now))
        for agg in self._aggregations.values():
            out.extend(agg.tick(now))
        return out


def _fires(rule: OutputRule, ev: TraceEvent) -> bool:
    if ev.type not in rule.events:
        return False
    if rule.result is not None and ev.result != rule.result:
        return False
    if rule.direction is not None:
        p = ev.detail.get("pass")
        return isinstance(p, dict) and p.get("direction") == rule.direction
    return True


def plans(config: LineConfig) -> dict[str, DevicePlan]:
    """What each PLC must read for the stations: the signals that end cycles (and work order
    signals) are watched; the cycle's data (identity, parameters, result, the commissioning
    counter, and the handshake's ack) is read with them."""
    watch: dict[str, set[str]] = {}
    snap: dict[str, dict[str, list[str]]] = {}
    for st in config.stations:
        if st.read_window is not None:
            watch.setdefault(st.read_window.device, set()).add(st.read_window.signal)
        if st.work_order_signal is not None:
            w = st.work_order_signal
            watch.setdefault(w.device, set()).add(w.signal)
        if st.trigger is not None:
            device, signal = st.trigger.device, st.trigger.signal
        elif st.handshake is not None:
            device, signal = st.handshake.device, st.handshake.request
        else:
            continue
        watch.setdefault(device, set()).add(signal)
        data = [p.signal for p in st.parameters if p.device == device]
        if st.result is not None and st.result.device == device:
            data.append(st.result.signal)
        if (
            st.identity is not None
            and st.identity.signal is not None
            and st.identity.signal.device == device
        ):
            data.append(st.identity.signal.signal)
        if st.commission is not None:
            data.append(st.commission.counter)
        if st.handshake is not None:
            data.append(st.handshake.ack)
        group = snap.setdefault(device, {}).setdefault(signal, [])
        group += [d for d in data if d not in group and d != signal]
    return {
        device: DevicePlan(frozenset(names), {k: tuple(v) for k, v in snap.get(device, {}).items()})
        for device, names in watch.items()
    }


__all__ = ["BindResult", "Binder", "plans"]
