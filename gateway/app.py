"""The composition root: builds every part from the configuration and runs them under one
TaskGroup. Only this module knows every part.

Start: open the journal (integrity check), start binder, forwarder and devices, then READY=1.
Stop (SIGTERM/SIGINT): STOPPING=1; devices stop first, what they delivered is bound and
committed, then the forwarder says goodbye and the journal closes; within
`supervision.stop_timeout_s`. Reload (SIGHUP): the new file is validated first; a bad one is
refused and logged, the old configuration keeps running. Otherwise only devices whose
configuration changed are restarted; the journal is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.binding import Binder, plans
from gateway.binding.commands import Reply
from gateway.config import ConfigError, LoadedConfig, load_line
from gateway.config.base import DeviceBase
from gateway.config.models import LineConfig
from gateway.devices import factory
from gateway.devices.base import DevicePlan
from gateway.events import EventContext
from gateway.forward.epcis import EpcisOptions, StationEpcis
from gateway.forward.mqtt import Forwarder
from gateway.journal import Journal
from gateway.log import get_logger
from gateway.pipeline import BinderLoop, ObservationQueue, Writer, tick, tick_period
from gateway.status import GatewayStatus
from gateway.status_http import StatusServer
from gateway.supervise import Backoff, DeviceCounters, supervise_device
from gateway.systemd import Notifier

log = get_logger(__name__)

STUCK_AFTER_S = 20.0  # a commit or connect in flight longer than this stops the watchdog
PRUNE_EVERY_S = 3600.0


def epcis_options(cfg: LineConfig) -> EpcisOptions:
    """The EPCIS rendering the line file asks for (validated when it was loaded)."""
    e = cfg.epcis
    return EpcisOptions(
        site=cfg.gateway.site,
        read_point_template=e.read_point_template,
        biz_location=e.biz_location,
        stations={st.id: StationEpcis(**st.epcis.model_dump()) for st in cfg.stations},
        serial_uri_template=e.serial_uri_template,
        work_order_template=e.work_order_template,
    )


def event_context(loaded: LoadedConfig) -> EventContext:
    g = loaded.config.gateway
    return EventContext(gateway=g.id, line=g.line, config_hash=loaded.config_hash)


class Gateway:
    def __init__(
        self,
        loaded: LoadedConfig,
        notifier: Notifier | None = None,
        loader: Callable[[Path], LoadedConfig] = load_line,
    ) -> None:
        self.loaded = loaded
        self.notifier = notifier or Notifier.from_environment()
        self._loader = loader
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._device_tasks: dict[str, asyncio.Task[None]] = {}
        self._adapters: dict[str, Any] = {}  # running adapters, for write-back
        self._device_states: dict[str, str] = {}
        self.device_counters: dict[str, DeviceCounters] = {}  # read by the status page
        self.journal: Journal | None = None
        self.forwarder: Forwarder | None = None
        self.binder_loop: BinderLoop | None = None
        self.status = GatewayStatus(self)
        self.status_server: StatusServer | None = None
        self._status_task: asyncio.Task[None] | None = None
        self.started = time.monotonic()
        self.ready_after_s: float | None = None

    @property
    def config(self) -> LineConfig:
        return self.loaded.config

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    # --- run ---------------------------------------------------------------------------------

    async def run(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        for sig, handler in (
            (signal.SIGTERM, self.request_stop),
            (signal.SIGINT, self.request_stop),
            (signal.SIGHUP, self.request_reload),
        ):
            loop.add_signal_handler(sig, handler)
        log.info(
            "gateway_starting",
            gateway=cfg.gateway.id,
            line=cfg.gateway.line,
            config=self.loaded.config_hash,
            source=str(self.loaded.source),
        )
        jc = cfg.journal
        try:
            journal = self.journal = await Journal.open(
                jc.path,
                event_context(self.loaded),
                max_rows=jc.max_rows,
                max_bytes=jc.max_mib * 1024 * 1024,
                warn_at_percent=jc.warn_at_percent,
                commit_max_events=jc.commit_max_events,
                max_file_pages=None if jc.max_file_mib is None else jc.max_file_mib * 256,
            )
            try:
                await self._run_with(journal)
            finally:
                await journal.close()
            log.info("gateway_stopped")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            self.notifier.close()

    def _reply(self, reply: Reply) -> None:
        """A command's answer, once what it changed is committed: the forwarder publishes it
        (dropped if the broker is gone meanwhile: the MES asks again, and gets `changed:
        false`)."""
        if self.forwarder is not None:
            self.forwarder.reply(reply)

    async def _prune_trace(self, journal: Journal) -> None:
        """Units not seen for trace.retention_days leave the trace index, hourly."""
        while True:
            before = time.time() - self.config.trace.retention_days * 86_400
            await journal.prune_trace(before)
            await asyncio.sleep(PRUNE_EVERY_S)

    def _tick_period(self) -> float:
        return tick_period([st.portal.quiet_time_ms for st in self.config.stations if st.portal])

    async def _run_with(self, journal: Journal) -> None:
        cfg = self.config
        queue = ObservationQueue(cfg.supervision.queue_size)
        writer = Writer(self._adapters.get, queue.put)
        binder = Binder(
            cfg,
            marks=journal.handshake_marks,
            state=journal.state,
            pool_blocks=journal.pool_blocks,
            view=journal.trace_view(),
        )
        self.binder_loop = BinderLoop(queue, binder, journal, writer, self._reply)
        self._plans = plans(cfg)
        async with asyncio.TaskGroup() as tg:
            core = [
                tg.create_task(journal.run(), name="journal"),
                tg.create_task(self.binder_loop.run(), name="binder"),
                tg.create_task(writer.run(), name="writer"),
                tg.create_task(tick(queue, self._tick_period), name="tick"),
                tg.create_task(self._prune_trace(journal), name="trace-prune"),
            ]
            self._start_forwarder(tg)
            self._start_status(tg)
            for dev in cfg.devices:
                self._start_device(tg, dev)
            watchdog = tg.create_task(self._watchdog(), name="watchdog")
            reloader = tg.create_task(self._reloads(tg), name="reload")
            self.ready_after_s = time.monotonic() - self.started
            self.notifier.ready(self.status_line())
            log.info(
                "gateway_ready",
                devices=len(cfg.devices),
                stations=len(cfg.stations),
                ready_after_s=round(self.ready_after_s, 3),
            )
            await self._stop.wait()
            self.notifier.stopping("stopping: committing what is in flight")
            log.info("gateway_stopping")
            reloader.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(cfg.supervision.stop_timeout_s):
                    await self._stop_devices(list(self._device_tasks))
                    await self.binder_loop.drain()
            if len(queue):  # only when the outbox was full at the stop: say what is lost
                log.warning(
                    "observations_not_recorded",
                    count=len(queue),
                    reason="outbox full at stop; stop_timeout_s reached",
                )
            for t in (*core, watchdog, self._fwd_task, self._status_task):
                if t is not None:
                    t.cancel()

    def _start_status(self, tg: asyncio.TaskGroup) -> None:
        """The status page and metrics (read-only; gateway.status_http), when enabled."""
        self.status_server = None
        self._status_task = None
        if not self.config.status.enabled:
            return
        self.status_server = StatusServer(self.config.status, self.status)
        status = self.status
        server = self.status_server

        async def serve() -> None:
            async with asyncio.TaskGroup() as inner:
                inner.create_task(status.run(), name="status-sampler")
                inner.create_task(server.run(), name="status-server")

        self._status_task = tg.create_task(serve(), name="status")

    def _start_forwarder(self, tg: asyncio.TaskGroup) -> None:
        cfg = self.config
        assert self.journal is not None
        queue = self.binder_loop.queue if self.binder_loop is not None else None
        self.forwarder = Forwarder(
            cfg.mqtt,
            self.journal,
            gateway_id=cfg.gateway.id,
            topic_prefix=cfg.topic_prefix(),
            line=cfg.gateway.line,
            commands=queue.put if queue is not None and cfg.commands.enabled else None,
            epcis=epcis_options(cfg) if cfg.mqtt.payload == "epcis" else None,
        )
        for dev, state in self._device_states.items():
            self.forwarder.set_device_status(dev, state, "")
        self._fwd_task = tg.create_task(self.forwarder.run(), name="forwarder")

    def _start_device(self, tg: asyncio.TaskGroup, dev: DeviceBase) -> None:
        if not dev.enabled:
            log.info("device_disabled", device=dev.id)
            return
        assert self.binder_loop is not None and self.journal is not None
        sup = self.config.supervision
        plan = self._plans.get(dev.id, DevicePlan())
        adapter = factory(dev.kind)(dev, plan, self.journal.path.parent)  # type: ignore[attr-defined]
        self._adapters[dev.id] = adapter
        counters = self.device_counters.setdefault(dev.id, DeviceCounters())
        counters.state, counters.detail = "connecting", ""
        self._device_tasks[dev.id] = tg.create_task(
            supervise_device(
                dev.id,
                adapter,
                emit=self.binder_loop.queue.put,
                backoff=Backoff(sup.backoff_initial_s, sup.backoff_max_s),
                on_state=self._on_device_state,
                counters=counters,
            ),
            name=f"device:{dev.id}",
        )

    def _on_device_state(self, device: str, state: str, detail: str) -> None:
        self._device_states[device] = state
        if self.forwarder is not None:
            self.forwarder.set_device_status(device, state, detail)

    async def _stop_devices(self, ids: list[str]) -> None:
        pending = {self._device_tasks.pop(i) for i in ids if i in self._device_tasks}
        while pending:
            for t in pending:  # again each round: a library may swallow a cancellation
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.2)
        for i in ids:
            self._device_states.pop(i, None)
            self._adapters.pop(i, None)

    # --- reload ------------------------------------------------------------------------------

    async def _reloads(self, tg: asyncio.TaskGroup) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            self.notifier.reloading()
            await self._apply_reload(tg)
            self.notifier.ready(self.status_line())

    async def _apply_reload(self, tg: asyncio.TaskGroup) -> None:
        try:
            new = self._loader(self.loaded.source)
        except ConfigError as exc:
            log.error(
                "config_reload_refused",
                source=str(self.loaded.source),
                problems=[str(p) for p in exc.problems],
                keeping=self.loaded.config_hash,
            )
            return
        old = self.config
        if new.config_hash == self.loaded.config_hash:
            log.info("config_reload_unchanged", config=new.config_hash)
            return
        cfg = new.config
        if cfg.gateway != old.gateway or cfg.journal != old.journal:
            log.warning(
                "config_reload_partial",
                config=new.config_hash,
                note="gateway and journal settings apply at the next restart",
            )
            cfg = cfg.model_copy(update={"gateway": old.gateway, "journal": old.journal})
            new = LoadedConfig(cfg, new.source, new.config_hash, new.profiles)
        old_devices = {d.id: d for d in old.devices}
        new_devices = {d.id: d for d in cfg.devices}
        new_plans = plans(cfg)
        changed = [
            i
            for i, d in old_devices.items()
            if new_devices.get(i) != d or new_plans.get(i) != self._plans.get(i)
        ]
        await self._stop_devices(changed)
        self.loaded = new
        assert self.journal is not None and self.binder_loop is not None
        self.journal.ctx = event_context(new)
        old_binder = self.binder_loop.binder
        binder = Binder(cfg, marks=old_binder.marks(), view=old_binder.env.view)
        binder.adopt(old_binder)
        self.binder_loop.binder = binder
        self._plans = new_plans
        if cfg.mqtt != old.mqtt and self.forwarder is not None:
            self._fwd_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fwd_task
            self._start_forwarder(tg)
        if cfg.status != old.status:
            if self._status_task is not None:
                self._status_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._status_task
            self._start_status(tg)
        for gone in set(self.device_counters) - set(new_devices):
            del self.device_counters[gone]
        started = [i for i, d in new_devices.items() if old_devices.get(i) != d or i in changed]
        for i in started:
            self._start_device(tg, new_devices[i])
        log.info(
            "config_reloaded",
            config=new.config_hash,
            restarted=sorted(set(changed) & set(started)),
            stopped=sorted(set(changed) - set(started)),
            started=sorted(set(started) - set(changed)),
            mqtt_restarted=cfg.mqtt != old.mqtt,
            status_restarted=cfg.status != old.status,
        )

    # --- watchdog and status -----------------------------------------------------------------

    def healthy(self) -> bool:
        """The pipelines make progress: no commit and no broker connect stuck in flight. A
        broker that is down is not a fault here (the journal holds everything meanwhile)."""
        now = time.monotonic()
        for part in (self.journal, self.forwarder):
            busy = getattr(part, "busy_since", None)
            if busy is not None and now - busy > STUCK_AFTER_S:
                return False
        return True

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval_s or 5.0
        stuck_logged = False
        while True:
            await asyncio.sleep(min(interval, 5.0))
            if self.healthy():
                self.notifier.watchdog()
                stuck_logged = False
            elif not stuck_logged:
                log.error("pipeline_stuck", note="watchdog pings withheld; systemd will restart")
                stuck_logged = True
            self.notifier.status(self.status_line())

    def status_line(self) -> str:
        parts = []
        fwd = self.forwarder
        parts.append("broker connected" if fwd and fwd.stats.connected else "broker DOWN")
        if self.journal is not None:
            st = self.journal.stats()
            pct = max(st.rows * 100 // max(st.max_rows, 1), st.bytes * 100 // max(st.max_bytes, 1))
            parts.append(f"outbox {st.rows} ({pct}%{' FULL' if st.full else ''})")
            parts.append(f"seq {st.next_seq - 1}")
        up = sum(1 for s in self._device_states.values() if s == "connected")
        parts.append(f"devices {up}/{len(self._device_tasks)} up")
        return ", ".join(parts)
