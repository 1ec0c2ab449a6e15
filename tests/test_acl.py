"""The shipped Mosquitto ACL (docs/examples/mosquitto-acl.conf) on a real Mosquitto: a gateway
delivers and answers commands under it; a gateway cannot write outside its own topics nor read
another line's commands; a consumer reads everything and sends commands but cannot write
events. Refusals are proven with MQTT 5 reason codes, and under MQTT 3.1.1 (where the broker
drops silently) by a later marker arriving without them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from simulators.broker import Mosquitto
from simulators.codes import CodeGenerator
from simulators.scanner import TcpScannerSim
from tests.helpers import ROOT, cam_line, running_gateway, wait_for, wait_for_sync

EXAMPLES = ROOT / "docs" / "examples"
# The names the example ACL is written for.
SITE, LINE, GW, OTHER_GW = "plant-1", "line-4", "gw-line4", "gw-line5"
EVENTS = f"tracegate/{SITE}/{LINE}"
OTHER_EVENTS = f"tracegate/{SITE}/line-5"
GW_TOPICS = f"tracegate/{SITE}/gateway/{GW}"
OTHER_GW_TOPICS = f"tracegate/{SITE}/gateway/{OTHER_GW}"
PASSWORDS = {GW: "pw-gw4", OTHER_GW: "pw-gw5", "mes": "pw-mes", "historian": "pw-hist"}
NOT_AUTHORIZED = 0x87


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """Mosquitto with the security lines of the example snippet, the example ACL file as it is
    shipped, and a password file for its users."""
    passwd = tmp_path / "passwd"
    for i, (user, password) in enumerate(PASSWORDS.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run(
            ["mosquitto_passwd", *create, "-b", str(passwd), user, password],
            check=True,
            capture_output=True,
        )
    passwd.chmod(0o644)  # mosquitto runs as the current user here (see simulators/broker.py)
    paths = {"password_file": passwd, "acl_file": EXAMPLES / "mosquitto-acl.conf"}
    lines = []
    for line in (EXAMPLES / "mosquitto-gateway.conf").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key in ("allow_anonymous", "password_file", "acl_file"):
            lines.append(f"{key} {paths.get(key, value)}")
    assert len(lines) == 3, "the snippet sets allow_anonymous, password_file and acl_file"
    broker = Mosquitto(extra_config="\n".join(lines) + "\n")
    broker.start()
    yield broker
    broker.close()


class Peer:
    """A paho client logged in as `user`: what it receives, and the broker's answer to each of
    its publishes (PUBACK reason code) and subscriptions (SUBACK reason codes)."""

    def __init__(
        self, broker: Mosquitto, user: str, protocol: MQTTProtocolVersion = paho.MQTTv5
    ) -> None:
        self.user = user
        self.messages: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self._lock = threading.Lock()
        self._connack: list[ReasonCode] = []
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{user}-{uuid.uuid4().hex[:6]}",
            protocol=protocol,
        )
        self.client.username_pw_set(user, PASSWORDS[user])
        self.client.on_connect = lambda c, u, f, rc, p: self._connack.append(rc)
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        wait_for_sync(lambda: self._connack, 5, f"CONNACK for {user}")
        assert not self._connack[0].is_failure, self._connack[0]

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any
    ) -> None:
        with self._lock:
            self.pubacks[mid] = rc

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, rcs: list[ReasonCode], props: Any
    ) -> None:
        with self._lock:
            self.subacks[mid] = rcs

    def publish(self, topic: str, payload: bytes = b"x") -> int:
        """Publish (QoS 1) and return the PUBACK's reason code (0 under 3.1.1, always)."""
        mid = self.client.publish(topic, payload, qos=1).mid
        rc = wait_for_sync(lambda: self.pubacks.get(mid), 5, f"PUBACK of {topic}")
        return int(rc.value)

    def subscribe(self, topic: str) -> int:
        """Subscribe (QoS 1) and return the SUBACK's reason code; once it is here the
        subscription is in place."""
        _, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        [rc] = wait_for_sync(lambda: self.subacks.get(mid), 5, f"SUBACK of {topic}")
        return int(rc.value)

    def received(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p in self.messages if t == topic]

    def topics(self) -> set[str]:
        with self._lock:
            return {t for t, _ in self.messages}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


PeerFactory = Callable[..., "Peer"]


@pytest.fixture
def peers(acl_broker: Mosquitto) -> Iterator[PeerFactory]:
    """Makes Peers on the ACL broker; closes them all at the end."""
    made: list[Peer] = []

    def peer(user: str, protocol: MQTTProtocolVersion = paho.MQTTv5) -> Peer:
        made.append(Peer(acl_broker, user, protocol))
        return made[-1]

    yield peer
    for p in made:
        p.close()


def _marker(gw: Peer, mes: Peer) -> None:
    """A publish the gateway may make, seen by `mes`: whatever the gateway published before it
    would have arrived first (one connection, one order)."""
    topic = f"{EVENTS}/st10/marker-{uuid.uuid4().hex[:6]}"
    assert gw.publish(topic) == 0
    wait_for_sync(lambda: mes.received(topic), 5, "the marker")


# --- (a) a real gateway under the ACL ---------------------------------------------------------


async def test_a_gateway_delivers_events_and_answers_a_command_under_the_example_acl(
    tmp_path: Path, acl_broker: Mosquitto, peers: PeerFactory
) -> None:
    mes = peers("mes")
    assert mes.subscribe("tracegate/#") == 1  # granted QoS 1
    (tmp_path / "pw").write_text(PASSWORDS[GW] + "\n")
    gen = CodeGenerator(seed=61)
    async with TcpScannerSim(terminator="crlf") as cam:
        path = cam_line(
            tmp_path,
            acl_broker,
            cam.port,
            gateway_id=GW,
            site=SITE,
            line=LINE,
            mqtt={"username": GW, "password_file": "pw"},
        )
        async with running_gateway(path) as gw:
            assert gw.journal is not None and gw.forwarder is not None
            journal, fwd = gw.journal, gw.forwarder
            await asyncio.wait_for(cam.wait_client(), 5)
            await cam.send(gen.gs1_datamatrix())
            await wait_for(lambda: mes.received(f"{EVENTS}/st10/identified"), 10, "the event")
            await wait_for(lambda: mes.received(f"{GW_TOPICS}/status/devices/cam-1"), 10)
            assert mes.received(f"{GW_TOPICS}/status")[-1] == b"online"
            doc = {"correlation_id": "acl-1", "work_order": "WO-ACL"}
            cmd = f"{GW_TOPICS}/cmd/work-order"
            assert mes.publish(cmd, json.dumps(doc).encode()) == 0
            await wait_for(lambda: mes.received(f"{cmd}/reply"), 10, "the reply")
            await wait_for(lambda: journal.stats().rows == 0, 10, "everything delivered")
            assert fwd.stats.refused == 0
        await wait_for(lambda: mes.received(f"{GW_TOPICS}/status")[-1] == b"offline", 5)
    [reply] = mes.received(f"{cmd}/reply")
    assert json.loads(reply)["ok"] is True and json.loads(reply)["correlation_id"] == "acl-1"


# --- (b) a gateway writes only its own topics -------------------------------------------------

FORBIDDEN_FOR_GW = [
    f"{OTHER_EVENTS}/st10/identified",  # another line's events
    f"{OTHER_GW_TOPICS}/status",  # another gateway's status
    f"{OTHER_GW_TOPICS}/status/devices/cam-1",
    f"{OTHER_GW_TOPICS}/cmd/work-order/reply",  # another gateway's replies
    f"{GW_TOPICS}/cmd/work-order",  # a command, even to itself
    f"{GW_TOPICS}/elsewhere",  # under its id, but no topic the ACL names
]
OUTSIDE = ["plant/other-system", f"tracegate/{SITE}", "tracegate/plant-2/line-4/st10/identified"]


@pytest.mark.parametrize("protocol", [paho.MQTTv5, paho.MQTTv311], ids=["mqtt5", "mqtt311"])
def test_a_gateway_cannot_publish_outside_its_own_topics(
    peers: PeerFactory, protocol: MQTTProtocolVersion
) -> None:
    observer = peers("historian")
    assert observer.subscribe("#") == 1  # carries what the historian may read: tracegate/#
    gw = peers(GW, protocol)
    expected = NOT_AUTHORIZED if protocol == paho.MQTTv5 else 0  # 3.1.1: acked and dropped
    for topic in FORBIDDEN_FOR_GW + OUTSIDE:
        assert gw.publish(topic) == expected, topic
    _marker(gw, observer)
    assert not observer.topics() & set(FORBIDDEN_FOR_GW)


# --- (c) a gateway reads only its own commands ------------------------------------------------


@pytest.mark.parametrize("protocol", [paho.MQTTv5, paho.MQTTv311], ids=["mqtt5", "mqtt311"])
def test_a_gateway_cannot_read_another_lines_commands(
    peers: PeerFactory, protocol: MQTTProtocolVersion
) -> None:
    gw = peers(GW, protocol)
    theirs, mine = f"{OTHER_GW_TOPICS}/cmd/+", f"{GW_TOPICS}/cmd/+"
    # Mosquitto 2.0 grants a subscription (SUBACK 0x01) and applies the ACL to each message
    # (a refusal at SUBACK time, 0x80 / 0x87, would do as well): what matters is delivery.
    assert gw.subscribe(theirs) in (1, 0x80, NOT_AUTHORIZED)
    assert gw.subscribe("tracegate/#") in (1, 0x80, NOT_AUTHORIZED)
    assert gw.subscribe(mine) == 1
    mes, other = peers("mes"), peers(OTHER_GW)
    assert other.publish(f"{OTHER_EVENTS}/st10/identified") == 0
    assert mes.publish(f"{OTHER_GW_TOPICS}/cmd/work-order", b"{}") == 0
    assert mes.publish(f"{GW_TOPICS}/cmd/serial-pool", b"{}") == 0
    wait_for_sync(lambda: gw.received(f"{GW_TOPICS}/cmd/serial-pool"), 5, "its own command")
    assert gw.topics() == {f"{GW_TOPICS}/cmd/serial-pool"}


# --- (d) consumers ----------------------------------------------------------------------------


def test_consumers_read_every_line_and_the_mes_commands_but_writes_no_events(
    peers: PeerFactory,
) -> None:
    mes, historian = peers("mes"), peers("historian")
    assert mes.subscribe("tracegate/#") == 1 and historian.subscribe("tracegate/#") == 1
    gw4, gw5 = peers(GW), peers(OTHER_GW)
    published = [
        (gw4, f"{EVENTS}/st10/identified"),
        (gw4, f"{GW_TOPICS}/status"),
        (gw5, f"{OTHER_EVENTS}/st30/step.completed"),
        (gw5, f"{OTHER_GW_TOPICS}/status/devices/plc"),
        (gw5, f"{OTHER_GW_TOPICS}/cmd/work-order/reply"),
    ]
    for who, topic in published:
        assert who.publish(topic) == 0, topic
    every = {t for _, t in published}
    wait_for_sync(lambda: mes.topics() >= every and historian.topics() >= every, 5, "all lines")
    # The MES sends commands to any gateway; the historian sends none.
    assert mes.publish(f"{GW_TOPICS}/cmd/work-order", b"{}") == 0
    assert mes.publish(f"{OTHER_GW_TOPICS}/cmd/serial-pool", b"{}") == 0
    assert historian.publish(f"{GW_TOPICS}/cmd/work-order", b"{}") == NOT_AUTHORIZED
    # Neither can pose as a gateway: events, states, replies are the gateways' own.
    for topic in [
        f"{EVENTS}/st10/identified",
        f"{EVENTS}/_gateway/work_order.changed",
        f"{GW_TOPICS}/status",
        f"{GW_TOPICS}/status/devices/cam-1",
        f"{GW_TOPICS}/cmd/work-order/reply",
    ]:
        assert mes.publish(topic) == NOT_AUTHORIZED, topic
        assert historian.publish(topic) == NOT_AUTHORIZED, topic
