"""The plant's MES, as far as a virtual line needs one: it sends the gateway commands (work
orders, serial pools) and waits for their replies, and it watches the events the broker
delivers, so that the line can wait until what the gateway owes has arrived (before a fault
that would lose what is still in flight, or a work order changeover).

paho runs its network thread; every message is counted under a lock and wakes the asyncio side
with `call_soon_threadsafe`. The session is persistent (clean_session off), so a broker restart
loses nothing addressed to it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

TallyKey = tuple[str | None, str, str | None]  # station, type, the unit's key


class CommandFailed(RuntimeError):
    pass


class Mes:
    def __init__(self, host: str, port: int, prefix: str, gateway_id: str) -> None:
        self.host, self.port = host, port
        self.prefix = prefix
        self.cmd = f"{prefix}/gateway/{gateway_id}/cmd"
        self.status_topic = f"{prefix}/gateway/{gateway_id}/status"
        self.tally: Counter[TallyKey] = Counter()
        self.by_station: Counter[str | None] = Counter()
        self.replies: dict[str, dict[str, Any]] = {}
        self.onlines = 0  # `online` status messages seen (one per gateway connect)
        self.events = 0
        # Every event message as delivered, re-sent ones included (the oracle's input).
        self.received: list[dict[str, Any]] = []
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._change = asyncio.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"line-mes-{uuid.uuid4().hex[:8]}",
            clean_session=False,
        )
        self.connected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)

    # --- paho's thread ---------------------------------------------------------------------------

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe([(f"{self.prefix}/#", 1)])
        self.connected.set()
        self._wake_soon()

    def _on_disconnect(self, client: paho.Client, *_: Any) -> None:
        self.connected.clear()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        topic = msg.topic
        with self._lock:
            if topic == self.status_topic:
                self.onlines += msg.payload == b"online"
            elif topic.startswith(self.cmd) and topic.endswith("/reply"):
                doc = json.loads(msg.payload)
                if isinstance(doc, dict) and isinstance(doc.get("correlation_id"), str):
                    self.replies[doc["correlation_id"]] = doc
            elif "/gateway/" not in topic and not msg.retain:
                doc = json.loads(msg.payload)
                self.received.append(doc)
                if doc.get("event_id") not in self._seen:
                    self._seen.add(doc["event_id"])
                    ids = doc.get("ids") or []
                    key = ids[0].get("value") if ids else None
                    self.tally[(doc.get("station"), doc.get("type"), key)] += 1
                    self.by_station[doc.get("station")] += 1
                    self.events += 1
        self._wake_soon()

    def _wake_soon(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake)

    # --- the loop's side -------------------------------------------------------------------------

    def _wake(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.client.connect_async(self.host, self.port, keepalive=5)
        self.client.loop_start()
        await self.wait(self.connected.is_set, 15, "the MES connected to the broker")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    async def wait(self, cond: Callable[[], Any], within_s: float, what: str) -> None:
        """Until `cond()` is true, checked at each message; TimeoutError naming `what`."""
        try:
            async with asyncio.timeout(within_s):
                while not cond():
                    await self._change.wait()
        except TimeoutError:
            raise TimeoutError(f"timed out after {within_s} s waiting for {what}") from None

    def station_count(self, station: str | None) -> int:
        with self._lock:
            return self.by_station[station]

    def count(self, key: TallyKey) -> int:
        with self._lock:
            return self.tally[key]

    async def command(self, name: str, doc: dict[str, Any], within_s: float = 60.0) -> Any:
        """Send a command until its reply comes (a gateway that is down or restarting misses
        it: the same correlation id makes a repeat harmless); the reply, or CommandFailed."""
        cid = f"line-{uuid.uuid4().hex[:12]}"
        payload = json.dumps({"correlation_id": cid, **doc}).encode()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while cid not in self.replies:
            if loop.time() > deadline:
                raise CommandFailed(f"no reply to cmd/{name} within {within_s} s")
            self.client.publish(f"{self.cmd}/{name}", payload, qos=1)
            # Repeat after a while (not a synchronisation: the reply ends the wait at once).
            try:
                await self.wait(lambda: cid in self.replies, 2.0, f"reply to cmd/{name}")
            except TimeoutError:
                continue
        reply = self.replies[cid]
        if not reply.get("ok"):
            raise CommandFailed(f"cmd/{name} refused: {reply.get('error')}")
        return reply
