"""What the gateway tells about itself: the status document (the page, `/status.json`,
`tracegate status`) and the Prometheus metric families, read from the running parts.

Only reads. Every figure comes from plain fields the parts keep anyway (device counters, the
binder loop's counts, journal and forwarder stats) or from a read-only query on the journal's
reader thread; nothing here can change what the gateway records or sends. The one task it runs
samples the event loop's lag and the devices' read rates.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

from gateway import __version__, clock
from gateway.binding.context import LINE, WorkOrder
from gateway.events import TraceEvent, rfc3339
from gateway.journal import Backlog, Stats
from gateway.metrics import Family, LoopLag, render, rss_bytes
from gateway.supervise import DeviceCounters

if TYPE_CHECKING:
    from gateway.app import Gateway

SCHEMA = "tracegate.status/1"
RATE_WINDOW_S = 10.0  # reads/s is the average over about this long
BACKLOG_CACHE_S = 0.5  # the journal is asked at most this often, however many clients poll


@dataclass(slots=True)
class _Rate:
    samples: deque[tuple[float, int]]

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


class GatewayStatus:
    """Reads a running `Gateway`. `run()` (a task of the gateway) samples lag and rates."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.lag = LoopLag()
        self.requests: dict[int, int] = {}  # HTTP status code -> responses (the server counts)
        self._rates: dict[str, _Rate] = {}
        self._backlog: tuple[float, Backlog] | None = None
        self._backlog_lock = asyncio.Lock()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.lag.run(), name="loop-lag")
            while True:
                self._sample_rates()
                await asyncio.sleep(1.0)

    def _sample_rates(self) -> None:
        now = time.monotonic()
        for dev, c in self.gw.device_counters.items():
            r = self._rates.get(dev)
            if r is None:
                r = self._rates[dev] = _Rate(deque(maxlen=int(RATE_WINDOW_S) + 1))
            r.samples.append((now, c.reads))

    def reads_per_s(self, device: str) -> float:
        r = self._rates.get(device)
        return r.rate() if r is not None else 0.0

    async def backlog(self) -> Backlog | None:
        journal = self.gw.journal
        if journal is None:
            return None
        async with self._backlog_lock:  # many clients at once: one query
            now = time.monotonic()
            if self._backlog is None or now - self._backlog[0] > BACKLOG_CACHE_S:
                self._backlog = (now, await journal.backlog())
            return self._backlog[1]

    # --- the status document ------------------------------------------------------------------

    async def document(self) -> dict[str, Any]:
        gw = self.gw
        cfg = gw.config
        now = time.time()
        backlog = await self.backlog()
        return {
            "schema": SCHEMA,
            "time": rfc3339(now),
            "gateway": {
                "id": cfg.gateway.id,
                "site": cfg.gateway.site,
                "line": cfg.gateway.line,
                "version": __version__,
                "config": gw.loaded.config_hash,
                "uptime_s": round(time.monotonic() - gw.started, 1),
                "healthy": gw.healthy(),
            },
            "broker": self._broker(),
            "devices": self._devices(clock.now()),  # reads are stamped by gateway.clock
            "work_orders": self._work_orders(),
            "journal": self._journal(now, backlog),
            "events": {
                "by_type": dict(sorted(self._events_by_type().items())),
                "recent": self._recent_events(),
            },
            "rejects": {
                "by_reason": [
                    {"station": st, "reason": reason, "count": n}
                    for (st, reason), n in sorted(self._rejects().items())
                ],
                "recent": self._recent_rejects(),
            },
            "process": {
                "rss_bytes": rss_bytes(),
                "loop_lag_ms": round(self.lag.last_s * 1000, 2),
                "loop_lag_max_ms": round(self.lag.max_s * 1000, 2),
            },
        }

    def _broker(self) -> dict[str, Any]:
        cfg = self.gw.config.mqtt
        fwd = self.gw.forwarder
        doc: dict[str, Any] = {"host": cfg.host, "port": cfg.port, "connected": False}
        if fwd is not None:
            s = fwd.stats
            p50 = fwd.publish_seconds.quantile(0.5)
            doc.update(
                connected=s.connected,
                inflight=s.inflight,
                window=s.window,
                published=s.published,
                acked=s.acked,
                refused=s.refused,
                reconnects=max(0, s.connects - 1),
                replaying="backlog" in s.lanes,
                last_error=s.last_error,
                publish_p50_ms=None if p50 is None or math.isinf(p50) else p50 * 1000,
            )
        return doc

    def _counters(self, device: str) -> DeviceCounters:
        return self.gw.device_counters.get(device) or DeviceCounters()

    def _devices(self, now: float) -> list[dict[str, Any]]:
        out = []
        for d in self.gw.config.devices:
            c = self._counters(d.id)
            out.append(
                {
                    "id": d.id,
                    "kind": d.kind,
                    "state": c.state if d.enabled else "disabled",
                    "detail": c.detail,
                    "since": rfc3339(c.since),
                    "reads": c.reads,
                    "reads_per_s": round(self.reads_per_s(d.id), 2),
                    "last_read": (
                        rfc3339(clock.to_wall(c.last_read)) if c.last_read is not None else None
                    ),
                    "last_read_age_s": (
                        round(max(0.0, now - c.last_read), 1) if c.last_read is not None else None
                    ),
                    "errors": dict(sorted(self._errors(d.id).items())),
                }
            )
        return out

    def _errors(self, device: str) -> dict[str, int]:
        errors = dict(self._counters(device).errors)
        loop = self.gw.binder_loop
        if loop is not None and loop.queue.dropped_by_device.get(device):
            errors["dropped"] = loop.queue.dropped_by_device[device]
        writer = loop.writer if loop is not None else None
        if writer is not None and writer.failed_by_device.get(device):
            errors["write_failed"] = writer.failed_by_device[device]
        return errors

    def _work_orders(self) -> dict[str, Any]:
        loop = self.gw.binder_loop
        orders = loop.binder.env.orders if loop is not None else None
        line = orders.active.get(LINE) if orders is not None else None
        stations = []
        for st in self.gw.config.stations:
            name: str | None = st.work_order
            source: str | None = "line file" if name is not None else None
            current: WorkOrder | None = None
            if orders is not None:
                name = orders.name(st.id)
                current = orders.current(st.id)
                source = (
                    "station"
                    if st.id in orders.active
                    else "line"
                    if line is not None
                    else "line file"
                    if name is not None
                    else None
                )
            stations.append(
                {
                    "station": st.id,
                    "work_order": name,
                    "source": source,
                    "product": current.product if current else None,
                    "lot": current.lot if current else None,
                    "gtins": list(current.gtins) if current else [],
                }
            )
        return {"line": line.to_json() if line else None, "stations": stations}

    def _journal(self, now: float, backlog: Backlog | None) -> dict[str, Any]:
        j = self.gw.journal
        if j is None:
            return {}
        st = j.stats()
        jc = self.gw.config.journal
        oldest = _oldest(st, backlog)
        return {
            "path": str(j.path),
            "waiting": st.rows - st.acked,
            "pending": st.pending,
            "payload_bytes": st.bytes,
            "max_rows": st.max_rows,
            "max_bytes": st.max_bytes,
            "quota_used_percent": round(
                100 * max(st.rows / max(st.max_rows, 1), st.bytes / max(st.max_bytes, 1)), 2
            ),
            "full": st.full,
            "write_error": st.write_error,
            "oldest_unsent": rfc3339(oldest) if oldest is not None else None,
            "oldest_unsent_age_s": round(max(0.0, now - oldest), 1) if oldest else None,
            "committed_seq": st.next_seq - 1,
            "commits": st.commits,
            "last_commit_ms": round(st.last_commit_ms, 2),
            "file_bytes": backlog.file_bytes if backlog else None,
            "max_file_bytes": jc.max_file_mib * 1024 * 1024 if jc.max_file_mib else None,
            "disk_free_bytes": backlog.disk_free_bytes if backlog else None,
        }

    def _events_by_type(self) -> dict[str, int]:
        loop = self.gw.binder_loop
        counts = dict(loop.events_by_type) if loop is not None else {}
        return counts

    def _rejects(self) -> dict[tuple[str, str], int]:
        loop = self.gw.binder_loop
        return dict(loop.rejects) if loop is not None else {}

    def _recent_events(self) -> list[dict[str, Any]]:
        j = self.gw.journal
        n = self.gw.config.status.recent_events
        if j is None:
            return []
        out = []
        for row in islice(reversed(j.recent), n):  # newest first
            doc = json.loads(row.payload)
            detail = doc.get("detail") or {}
            out.append(
                {
                    "seq": doc.get("seq"),
                    "type": doc.get("type"),
                    "time": doc.get("time"),
                    "station": doc.get("station"),
                    "work_order": doc.get("work_order"),
                    "ids": [i.get("value") for i in doc.get("ids") or ()]
                    or (
                        [str(detail["raw"])] if isinstance(detail, dict) and "raw" in detail else []
                    ),
                    "result": doc.get("result"),
                    "reason": doc.get("reason"),
                    "device": detail.get("device") if isinstance(detail, dict) else None,
                    "state": detail.get("state") if isinstance(detail, dict) else None,
                }
            )
        return out

    def _recent_rejects(self) -> list[dict[str, Any]]:
        loop = self.gw.binder_loop
        if loop is None:
            return []
        n = self.gw.config.status.recent_events
        return [_reject(ev) for ev in islice(reversed(loop.recent_rejects), n)]

    # --- metrics ------------------------------------------------------------------------------

    async def metrics(self) -> str:
        return render(await self.families())

    async def families(self) -> list[Family]:
        backlog = await self.backlog()
        now = time.time()
        out = self._gateway_families()
        out += self._device_families(clock.now())
        out += self._binder_families()
        out += self._journal_families(now, backlog)
        out += self._forwarder_families()
        out += self._process_families()
        return out

    def _gateway_families(self) -> list[Family]:
        gw = self.gw
        return [
            Family("tracegate_info", "gauge", "The gateway: version, id, line, config hash.").add(
                1,
                version=__version__,
                gateway=gw.config.gateway.id,
                line=gw.config.gateway.line,
                config=gw.loaded.config_hash,
            ),
            Family(
                "tracegate_healthy",
                "gauge",
                "1 while the pipelines make progress (no commit or connect stuck).",
            ).add(1 if gw.healthy() else 0),
            Family("tracegate_uptime_seconds", "gauge", "Time since the gateway started.").add(
                round(time.monotonic() - gw.started, 3)
            ),
        ]

    def _device_families(self, now: float) -> list[Family]:
        up = Family("tracegate_device_up", "gauge", "1 while the device is connected.")
        state = Family(
            "tracegate_device_state",
            "gauge",
            "1 for the device's current state (connecting, connected, disconnected, failed, "
            "disabled).",
        )
        reads = Family(
            "tracegate_device_reads_total",
            "counter",
            "Observations the device handed to the binder (codes, tag reads, PLC changes).",
        )
        rate = Family(
            "tracegate_device_reads_per_second",
            "gauge",
            f"Reads per second, averaged over the last {RATE_WINDOW_S:.0f} s.",
        )
        age = Family(
            "tracegate_device_last_read_age_seconds",
            "gauge",
            "Time since the device's newest read (absent before its first).",
        )
        errors = Family(
            "tracegate_device_errors_total",
            "counter",
            "Device failures by kind: unavailable, misconfigured, crashed, write_failed, "
            "dropped (observations the full queue could not take).",
        )
        for d in self.gw.config.devices:
            c = self._counters(d.id)
            current = c.state if d.enabled else "disabled"
            up.add(1 if current == "connected" else 0, device=d.id)
            for s in ("connecting", "connected", "disconnected", "failed", "disabled"):
                state.add(1 if s == current else 0, device=d.id, state=s)
            reads.add(c.reads, device=d.id)
            rate.add(round(self.reads_per_s(d.id), 3), device=d.id)
            if c.last_read is not None:
                age.add(round(max(0.0, now - c.last_read), 3), device=d.id)
            for kind, n in sorted(self._errors(d.id).items()):
                errors.add(n, device=d.id, kind=kind)
        return [up, state, reads, rate, age, errors]

    def _binder_families(self) -> list[Family]:
        events = Family("tracegate_events_total", "counter", "Trace events recorded, by type.")
        for t, n in sorted(self._events_by_type().items()):
            events.add(n, type=t)
        rejects = Family(
            "tracegate_rejects_total", "counter", "Rejected identities, by station and reason."
        )
        for (st, reason), n in sorted(self._rejects().items()):
            rejects.add(n, station=st, reason=reason)
        loop = self.gw.binder_loop
        queue = loop.queue if loop is not None else None
        return [
            events,
            rejects,
            Family(
                "tracegate_queue_observations",
                "gauge",
                "Observations waiting between devices and the binder.",
            ).add(len(queue) if queue is not None else 0),
            Family(
                "tracegate_queue_capacity_observations",
                "gauge",
                "Size of that queue (supervision.queue_size).",
            ).add(self.gw.config.supervision.queue_size),
            Family(
                "tracegate_observations_dropped_total",
                "counter",
                "Observations the full queue could not take (each reported by a gap event).",
            ).add(queue.total_dropped if queue is not None else 0),
        ]

    def _journal_families(self, now: float, backlog: Backlog | None) -> list[Family]:
        j = self.gw.journal
        if j is None:
            return []
        st = j.stats()
        jc = self.gw.config.journal
        out = [
            Family(
                "tracegate_journal_events",
                "gauge",
                "Events in the outbox, waiting for the broker's PUBACK (the journal depth).",
            ).add(st.rows - st.acked),
            Family(
                "tracegate_journal_pending_events",
                "gauge",
                "Events handed to the journal, not yet committed.",
            ).add(st.pending),
            Family("tracegate_journal_payload_bytes", "gauge", "Payload bytes in the outbox.").add(
                st.bytes
            ),
            Family(
                "tracegate_journal_quota_events", "gauge", "Quota in events (journal.max_rows)."
            ).add(st.max_rows),
            Family(
                "tracegate_journal_quota_bytes", "gauge", "Payload quota (journal.max_mib)."
            ).add(st.max_bytes),
            Family(
                "tracegate_journal_quota_used_ratio",
                "gauge",
                "The larger of events/quota and bytes/quota (1 is full).",
            ).add(round(max(st.rows / max(st.max_rows, 1), st.bytes / max(st.max_bytes, 1)), 6)),
            Family(
                "tracegate_journal_full",
                "gauge",
                "1 while the outbox takes no new events (quota or a write error).",
            ).add(1 if st.full else 0),
            Family(
                "tracegate_journal_write_error",
                "gauge",
                "1 while commits fail (disk full, I/O error, journal.max_file_mib).",
            ).add(0 if st.write_error is None else 1),
            Family("tracegate_journal_committed_seq", "gauge", "Highest seq committed so far.").add(
                st.next_seq - 1
            ),
            Family(
                "tracegate_journal_commit_seconds",
                "histogram",
                "Time of one journal transaction, fsync included (group commit).",
            ).add_histogram(j.commit_seconds),
        ]
        oldest = Family(
            "tracegate_journal_oldest_unsent_age_seconds",
            "gauge",
            "Age of the oldest event still waiting for its PUBACK (0 when none waits).",
        )
        if backlog is not None:
            recorded = _oldest(st, backlog)
            oldest.add(round(max(0.0, now - recorded), 3) if recorded is not None else 0)
            out.append(oldest)
            out.append(
                Family(
                    "tracegate_journal_file_bytes", "gauge", "Size of the database and its WAL."
                ).add(backlog.file_bytes)
            )
            if backlog.disk_free_bytes is not None:
                out.append(
                    Family(
                        "tracegate_journal_disk_free_bytes",
                        "gauge",
                        "Free space on the journal's file system (for unprivileged users).",
                    ).add(backlog.disk_free_bytes)
                )
        if jc.max_file_mib is not None:
            out.append(
                Family(
                    "tracegate_journal_file_quota_bytes",
                    "gauge",
                    "Hard cap on the database file (journal.max_file_mib).",
                ).add(jc.max_file_mib * 1024 * 1024)
            )
        return out

    def _forwarder_families(self) -> list[Family]:
        fwd = self.gw.forwarder
        if fwd is None:
            return []
        s = fwd.stats
        return [
            Family("tracegate_broker_connected", "gauge", "1 while connected to the broker.").add(
                1 if s.connected else 0
            ),
            Family(
                "tracegate_forwarder_inflight_messages",
                "gauge",
                "Events published and not yet PUBACKed.",
            ).add(s.inflight),
            Family(
                "tracegate_forwarder_window_messages",
                "gauge",
                "In-flight limit of this connection (mqtt.inflight_max or Receive Maximum).",
            ).add(s.window),
            Family(
                "tracegate_forwarder_published_total", "counter", "Events published (QoS 1)."
            ).add(s.published),
            Family(
                "tracegate_forwarder_acked_total",
                "counter",
                "Events PUBACKed by the broker (they leave the journal).",
            ).add(s.acked),
            Family(
                "tracegate_forwarder_refused_total",
                "counter",
                "Events the broker refused (MQTT 5 PUBACK with an error); kept and re-sent.",
            ).add(s.refused),
            Family(
                "tracegate_forwarder_reconnects_total",
                "counter",
                "Connections to the broker after the first one.",
            ).add(max(0, s.connects - 1)),
            Family(
                "tracegate_forwarder_connect_failures_total",
                "counter",
                "Connection attempts that failed (unreachable, refused, timed out).",
            ).add(s.connect_failures),
            Family(
                "tracegate_forwarder_replaying",
                "gauge",
                "1 while a large backlog is replayed beside live events (two lanes).",
            ).add(1 if "backlog" in s.lanes else 0),
            Family(
                "tracegate_forwarder_publish_seconds",
                "histogram",
                "PUBLISH to PUBACK time, sampled (one message in flight at a time is timed).",
            ).add_histogram(fwd.publish_seconds),
        ]

    def _process_families(self) -> list[Family]:
        out = []
        rss = rss_bytes()
        if rss is not None:
            out.append(
                Family(
                    "tracegate_process_resident_memory_bytes", "gauge", "Resident memory (RSS)."
                ).add(rss)
            )
        out.append(
            Family(
                "tracegate_event_loop_lag_seconds",
                "histogram",
                "How late the event loop ran a timer (sleep overshoot, sampled every "
                f"{self.lag.interval_s} s).",
            ).add_histogram(self.lag.histogram)
        )
        out.append(
            Family(
                "tracegate_event_loop_lag_max_seconds",
                "gauge",
                f"The worst event loop lag of the last {self.lag.window_s:.0f} to "
                f"{2 * self.lag.window_s:.0f} s.",
            ).add(round(self.lag.max_s, 6))
        )
        requests = Family(
            "tracegate_status_requests_total",
            "counter",
            "HTTP responses of the status server, by status code.",
        )
        for code, n in sorted(self.requests.items()):
            requests.add(n, code=str(code))
        out.append(requests)
        return out


def _oldest(st: Stats, backlog: Backlog | None) -> float | None:
    """The oldest unsent row's commit time; None when nothing waits (now: the backlog read
    may be up to BACKLOG_CACHE_S old, the journal's counts are not)."""
    if backlog is None or st.rows - st.acked <= 0:
        return None
    return backlog.oldest_recorded


def _reject(ev: TraceEvent) -> dict[str, Any]:
    detail = ev.detail or {}
    ids = [i.value for i in ev.ids] or ([str(detail["raw"])] if "raw" in detail else [])
    return {
        "type": ev.type,
        "time": rfc3339(clock.to_wall(ev.time)),
        "station": ev.station,
        "work_order": ev.work_order,
        "reason": ev.reason,
        "ids": ids,
        "message": detail.get("message"),
    }
