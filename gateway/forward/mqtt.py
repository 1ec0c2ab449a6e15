"""The forwarder: drains the journal to the plant's MQTT broker, QoS 1, oldest first.

paho-mqtt runs on the asyncio loop through `gateway.forward.paho_bridge` (no paho thread).
paho's own reconnect is not used; each connection
attempt gets a fresh paho client, so no message paho kept in RAM from an earlier connection is
ever re-sent behind our back: what is unacknowledged is re-read from the journal instead.

Delivery: a row is acknowledged to the journal (and so deleted) only on a successful PUBACK. At
most `window` messages are in flight (<= the broker's Receive Maximum). At connect, a backlog
larger than `replay_threshold_events` is split into two lanes: live events (committed after the
connect) go first, the backlog fills the rest of the window; each lane keeps seq order (see
docs/architecture.md, "Replay without starving live events").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway import clock
from gateway.binding.commands import Reply
from gateway.config.models import MqttConfig
from gateway.events import Command
from gateway.forward.epcis import EpcisOptions, encode_epcis, render_epcis
from gateway.forward.paho_bridge import BrokerUnavailable, BufferedClient, Session
from gateway.journal import Journal, Row
from gateway.log import Throttle, get_logger
from gateway.metrics import LATENCY_BUCKETS_S, Histogram
from gateway.supervise import Backoff

log = get_logger(__name__)

READ_BATCH = 512
REPLIES_KEPT = 1000  # replies waiting for a connection; older ones are dropped (the MES asks again)


@dataclass
class Lane:
    """A seq range drained in order: (cursor, until]; `until` None means open-ended (live).
    Rows are read ahead in batches into `ahead` (one journal read per READ_BATCH rows, not per
    free window slot) and published from there, oldest first."""

    name: str
    cursor: int
    until: int | None
    ahead: deque[Row] = field(default_factory=deque)


@dataclass
class ForwarderStats:
    connected: bool = False
    published: int = 0
    acked: int = 0
    refused: int = 0
    connects: int = 0  # connections made (the first, then each reconnect)
    connect_failures: int = 0  # attempts that failed (refused, unreachable, timed out)
    inflight: int = 0
    window: int = 0
    lanes: list[str] = field(default_factory=list)
    last_error: str | None = None


class Forwarder:
    """Owns the broker connection. `run()` until cancelled; cancelling it says goodbye cleanly."""

    def __init__(
        self,
        config: MqttConfig,
        journal: Journal,
        *,
        gateway_id: str,
        topic_prefix: str,
        line: str,
        commands: Callable[[Command], None] | None = None,
        epcis: EpcisOptions | None = None,
    ) -> None:
        self.config = config
        # mqtt.payload epcis: each row rendered as an EPCIS document when published (the
        # journal keeps tracegate.event/1, the one format everything else reads).
        self._epcis = epcis
        # Commands from the MES are handed to `commands` (the binder's queue); None: not taken.
        self._commands = commands
        self.cmd_topic = f"{topic_prefix}/gateway/{gateway_id}/cmd/"
        self._replies: deque[Reply] = deque(maxlen=REPLIES_KEPT)
        self.journal = journal
        self.gateway_id = gateway_id
        self.client_id = config.client_id or gateway_id
        self.prefix = topic_prefix
        self.event_base = f"{topic_prefix}/{line}/"
        self.status_topic = f"{topic_prefix}/gateway/{gateway_id}/status"
        self.stats = ForwarderStats()
        self._kick = asyncio.Event()
        self._topics: dict[tuple[str, str], str] = {}
        self._session: Session | None = None
        self._device_status: dict[str, bytes] = {}
        self._status_dirty: set[str] = set()
        self._refused = Throttle(log, "publish_refused")
        self._down = Throttle(log, "broker_unavailable")
        self.busy_since: float | None = None
        # PUBLISH -> PUBACK time, sampled: one message in flight at a time is timed (the first
        # of a publish batch when none is), so the hot path pays a comparison per ack.
        self.publish_seconds = Histogram(LATENCY_BUCKETS_S)
        self._probe_seq = 0
        self._probe_at = 0.0
        journal.add_listener(self._kick.set)

    def _acked(self, entry: tuple[int, int]) -> None:
        self.stats.acked += 1
        if entry[0] == self._probe_seq:
            self.publish_seconds.observe(time.monotonic() - self._probe_at)
            self._probe_seq = 0
        self.journal.ack((entry,))

    def _refused_by_broker(self, entry: tuple[int, int], rc: ReasonCode) -> None:
        self.stats.refused += 1
        if entry[0] == self._probe_seq:
            self._probe_seq = 0
        self._refused.hit(seq=entry[0], reason=str(rc))

    # --- commands and their replies ----------------------------------------------------------

    def reply(self, reply: Reply) -> None:
        """Publish a command's reply (QoS 1) as soon as connected."""
        self._replies.append(reply)
        self._kick.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        """A command (paho calls this on the loop thread, from the socket's read)."""
        if self._commands is None or not msg.topic.startswith(self.cmd_topic):
            return
        name = msg.topic[len(self.cmd_topic) :]
        props = getattr(msg, "properties", None)
        reply_to = getattr(props, "ResponseTopic", None) or f"{msg.topic}/reply"
        correlation = getattr(props, "CorrelationData", None)
        self._commands(Command("", clock.now(), name, bytes(msg.payload), reply_to, correlation))

    def _flush_replies(self, s: Session) -> None:
        while self._replies:
            r = self._replies.popleft()
            props = None
            if r.correlation is not None and self.config.protocol == "5":
                props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                props.CorrelationData = r.correlation
            info = s.client.publish(r.topic, r.payload, qos=1, properties=props)
            s.status_mids.add(info.mid)

    # --- status (retained, latest value only) ------------------------------------------------

    def set_device_status(self, device_id: str, state: str, detail: str) -> None:
        doc = {
            "device": device_id,
            "state": state,
            "detail": detail,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self._device_status[device_id] = json.dumps(doc).encode()
        self._status_dirty.add(device_id)
        self._kick.set()

    def _flush_status(self, s: Session) -> None:
        for dev in sorted(self._status_dirty):
            info = s.client.publish(
                f"{self.status_topic}/devices/{dev}", self._device_status[dev], qos=1, retain=True
            )
            s.status_mids.add(info.mid)
        self._status_dirty.clear()

    # --- the connection loop ---------------------------------------------------------------

    async def run(self) -> None:
        backoff = Backoff(self.config.backoff_initial_s, self.config.backoff_max_s)
        while True:
            try:
                await self._connected_session(backoff)
            except BrokerUnavailable as exc:
                self.stats.last_error = str(exc)
                delay = backoff.next()
                self._down.hit(
                    error=str(exc),
                    host=self.config.host,
                    port=self.config.port,
                    retry_in_s=round(delay, 2),
                )
                await asyncio.sleep(delay)

    async def _connected_session(self, backoff: Backoff) -> None:
        try:
            s = await self._connect()
        except BrokerUnavailable:
            self.stats.connect_failures += 1
            raise
        self._session = s
        self.stats.connected = True
        self.stats.connects += 1
        self._down.clear()
        log.info(
            "broker_connected",
            host=self.config.host,
            port=self.config.port,
            window=self.stats.window,
        )
        self._status_dirty.update(self._device_status)
        if self._commands is not None:
            s.client.on_message = self._on_message
            s.client.subscribe(self.cmd_topic + "+", qos=1)
        started = time.monotonic()
        try:
            await self._pump(s)
        except asyncio.CancelledError:
            self._goodbye(s)
            raise
        finally:
            self.stats.connected = False
            self.stats.inflight = 0
            self._session = None
            self._probe_seq = 0  # its PUBACK will not come on this connection
            why = s.closed.result() if s.closed.done() else "stopped"
            self._teardown(s)
            if time.monotonic() - started > 10:
                backoff.reset()
        log.warning("broker_disconnected", reason=why, host=self.config.host)
        raise BrokerUnavailable(why)

    def _new_client(self) -> BufferedClient:
        cfg = self.config
        v5 = cfg.protocol == "5"
        client = BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else True,
            reconnect_on_failure=False,
        )
        client.connect_timeout = cfg.connect_timeout_s
        client.will_set(self.status_topic, b"offline", qos=1, retain=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, self._password())
        if cfg.tls is not None:
            ctx = ssl.create_default_context(
                cafile=str(cfg.tls.ca_file) if cfg.tls.ca_file else None
            )
            if cfg.tls.cert_file is not None and cfg.tls.key_file is not None:
                ctx.load_cert_chain(str(cfg.tls.cert_file), str(cfg.tls.key_file))
            ctx.check_hostname = cfg.tls.verify_hostname
            client.tls_set_context(ctx)
        # paho's own in-flight limit; our window (see _pump) never exceeds it.
        client.max_inflight_messages_set(cfg.inflight_max)
        client.max_queued_messages_set(0)
        return client

    def _password(self) -> str | None:
        cfg = self.config
        if cfg.password_file is not None:
            try:
                lines = cfg.password_file.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise BrokerUnavailable(
                    f"cannot read mqtt.password_file {cfg.password_file}: {exc.strerror}"
                ) from None
            if not lines or not lines[0]:
                # Also what systemd's SetCredential= fallback gives when the credential file
                # is missing: refuse rather than try an empty password.
                raise BrokerUnavailable(f"mqtt.password_file {cfg.password_file} is empty")
            return lines[0]
        if cfg.password_env is not None:
            value = os.environ.get(cfg.password_env)
            if value is None:
                raise BrokerUnavailable(
                    f"environment variable {cfg.password_env} (mqtt.password_env) is not set"
                )
            return value
        return None

    async def _connect(self) -> Session:
        cfg = self.config
        loop = asyncio.get_running_loop()
        try:
            client = self._new_client()
        except (ssl.SSLError, OSError) as exc:
            raise BrokerUnavailable(f"TLS setup failed: {exc}") from None
        s = Session(
            client,
            loop,
            on_ack=self._acked,
            on_refused=self._refused_by_broker,
            wake=self._kick.set,
        )
        self.busy_since = time.monotonic()
        try:
            connect = self._connect_in_thread(client)
            async with asyncio.timeout(cfg.connect_timeout_s + 1):
                await connect
                rc, props = await s.connack
        except (OSError, ssl.SSLError, TimeoutError, paho.WebsocketConnectionError) as exc:
            self._teardown(s)
            raise BrokerUnavailable(
                f"cannot connect to {cfg.host}:{cfg.port}: {exc or type(exc).__name__}"
            ) from None
        except BaseException:
            self._teardown(s)
            raise
        finally:
            self.busy_since = None
        if rc.is_failure:
            self._teardown(s)
            raise BrokerUnavailable(f"broker refused the connection: {rc}")
        receive_max = getattr(props, "ReceiveMaximum", None) if props is not None else None
        # paho ignores Receive Maximum and refuses to change its own limit once connected
        # (RuntimeError): it stays at inflight_max, and our window, never above it, is the bound.
        self.stats.window = min(cfg.inflight_max, receive_max or cfg.inflight_max)
        info = client.publish(self.status_topic, b"online", qos=1, retain=True)
        s.status_mids.add(info.mid)
        return s

    def _connect_in_thread(self, client: paho.Client) -> asyncio.Future[None]:
        """paho's connect() blocks (DNS, TCP, TLS): run it in a daemon thread of its own, not an
        executor. An executor's threads are joined at exit, so a connect hanging on a dropped
        SYN would hold a SIGTERM for up to connect_timeout_s; a daemon thread is abandoned."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle(exc: BaseException | None) -> None:
            if done.done():
                return
            if exc is None:
                done.set_result(None)
            else:
                done.set_exception(exc)

        def work() -> None:
            error: BaseException | None = None
            try:
                self._blocking_connect(client)
            except BaseException as exc:  # noqa: BLE001 - handed to the loop, which decides
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(settle, error)

        threading.Thread(target=work, name="mqtt-connect", daemon=True).start()
        return done

    def _blocking_connect(self, client: paho.Client) -> None:
        cfg = self.config
        client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        # TCP keepalive as a second line of defence under the MQTT keepalive.
        sock = client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def _teardown(self, s: Session) -> None:
        if s.sock is not None:
            s.remove(s.sock)
        s.client.on_socket_close = None
        s.client.on_disconnect = None
        with contextlib.suppress(Exception):  # paho may raise anything on a dead socket
            s.client._sock_close()

    # --- publishing ----------------------------------------------------------------------------

    async def _plan_lanes(self) -> list[Lane]:
        first = await self.journal.first_undelivered()
        top = self.journal.committed_seq
        backlog = top - first + 1
        if backlog > self.config.replay_threshold_events:
            log.info("replay_started", backlog=backlog, first_seq=first, last_seq=top)
            return [Lane("live", top, None), Lane("backlog", first - 1, top)]
        return [Lane("live", first - 1, None)]

    async def _pump(self, s: Session) -> None:
        lanes = await self._plan_lanes()
        misc = time.monotonic()
        while not s.closed.done():
            self._kick.clear()
            if self._status_dirty:
                self._flush_status(s)
            if self._replies:
                self._flush_replies(s)
            # Status messages count too: the broker's Receive Maximum covers every QoS 1 publish.
            free = self.stats.window - len(s.inflight) - len(s.status_mids)
            while free > 0:
                rows = await self._take(lanes, free)
                if not rows or s.closed.done():
                    break
                self._publish(s, rows)
                free -= len(rows)
            self.stats.inflight = len(s.inflight)
            self.stats.lanes = [lane.name for lane in lanes]
            now = time.monotonic()
            if now - misc >= 1.0:  # keepalive pings and their timeout (we own paho's loop)
                misc = now
                if s.client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    s.lost("keepalive timeout")
                    break
            if self._kick.is_set():
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._kick.wait()

    async def _take(self, lanes: list[Lane], limit: int) -> list[Row]:
        """Up to `limit` rows, from the first lane (live first) that has any."""
        for lane in list(lanes):
            if not lane.ahead:
                rows, scanned = await self.journal.read(lane.cursor, READ_BATCH, lane.until)
                lane.cursor = max(lane.cursor, scanned)
                lane.ahead.extend(rows)
            if lane.ahead:
                n = min(limit, len(lane.ahead))
                return [lane.ahead.popleft() for _ in range(n)]
            if lane.until is not None and lane.cursor >= lane.until:
                lanes.remove(lane)
                log.info("replay_finished", last_seq=lane.until)
        return []

    def _publish(self, s: Session, rows: list[Row]) -> None:
        topics = self._topics
        publish = s.client.publish
        inflight = s.inflight
        base = self.event_base
        epcis = self._epcis
        for r in rows:
            key = (r.station, r.type)
            topic = topics.get(key)
            if topic is None:
                topic = topics[key] = f"{base}{r.station}/{r.type}"
            payload = r.payload if epcis is None else _as_epcis(r.payload, epcis)
            info = publish(topic, payload, qos=1)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                s.lost(f"publish failed: {paho.error_string(info.rc)}")
                return
            inflight[info.mid] = (r.seq, len(r.payload))
        self.stats.published += len(rows)
        if not self._probe_seq:
            self._probe_seq = rows[0].seq
            self._probe_at = time.monotonic()

    # --- stopping ------------------------------------------------------------------------------

    def _goodbye(self, s: Session) -> None:
        """On shutdown: `offline` (retained) and DISCONNECT, written right away on the
        non-blocking socket (a few bytes). Should they not make it, the broker publishes the
        Last Will, which says the same."""
        if s.closed.done():
            return
        with contextlib.suppress(Exception):  # best effort on a socket that may be dead
            s.client.publish(self.status_topic, b"offline", qos=1, retain=True)
            s.client.disconnect()
            s.client.loop_write()
        log.info("broker_disconnected", reason="gateway stopping", host=self.config.host)


def _as_epcis(payload: bytes, opts: EpcisOptions) -> bytes:
    """The EPCIS document of a row; the row itself for events EPCIS has no place for."""
    doc = render_epcis(json.loads(payload), opts)
    return payload if doc is None else encode_epcis(doc)
