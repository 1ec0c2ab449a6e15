"""The ceiling: raw paho-mqtt QoS 1 publishing to the same broker, nothing else in the path.

paho in its own network thread (loop_start), in-flight window as the gateway's, payloads of the
size of a real event; the clock stops when the last PUBACK is in.
"""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

# paho's message ids are 16 bits and it queues without bound: more than 65535 messages waiting
# for PUBACK reuse ids and lose acks. Keep at most this many queued (the window is smaller).
QUEUED_MAX = 1000


def raw_paho_qos1(
    host: str, port: int, n: int, payload_size: int, window: int = 20, topic: str = "bench/ceiling"
) -> float:
    """Messages per second, all acknowledged."""
    done = threading.Event()
    room = threading.Semaphore(QUEUED_MAX)
    acked = 0

    def on_publish(
        client: paho.Client, userdata: object, mid: int, rc: object, props: object
    ) -> None:
        nonlocal acked
        acked += 1
        room.release()
        if acked == n:
            done.set()

    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-ceiling", protocol=paho.MQTTv5
    )
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect(host, port)
    client.loop_start()
    payload = b"x" * payload_size
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            room.acquire()
            client.publish(topic, payload, qos=1)
        if not done.wait(300):
            raise RuntimeError(f"only {acked} of {n} PUBACKs")
        return n / (time.perf_counter() - t0)
    finally:
        client.disconnect()
        client.loop_stop()
