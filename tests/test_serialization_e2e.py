"""Serialization over real connections: commands from the MES through Mosquitto (answered after
the commit, refused when malformed), work orders that survive restarts, serial commissioning on
a real Modbus PLC through repeated SIGKILLs, EPCIS output, and `tracegate trace` with the broker
down."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.config import load_line
from gateway.config.plc import ModbusConfig
from simulators.broker import Mosquitto
from simulators.codes import gs1_check_digit
from simulators.plc_modbus import ModbusPlcSim
from simulators.scanner import TcpScannerSim
from tests.helpers import (
    ROOT,
    GatewayProcess,
    Subscriber,
    line_file,
    running_gateway,
    subscriber,
    wait_for,
)

GTIN_A = "0950600013435" + gs1_check_digit("0950600013435")
GTIN_B = "0401234500002" + gs1_check_digit("0401234500002")
PREFIX = "tracegate/test-site/gateway/gw-test/cmd"
STATUS = "tracegate/test-site/gateway/gw-test/status"


def code(serial: int | str, gtin: str = GTIN_A) -> str:
    return f"]d201{gtin}21{serial}"


class Mes:
    """The MES side: publishes commands (MQTT 5, so that response topics can be tested too)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"mes-{uuid.uuid4().hex[:6]}",
            protocol=paho.MQTTv5,
        )
        self.heard: list[tuple[str, bytes, bytes | None]] = []  # topic, payload, correlation
        self.client.on_message = lambda c, u, msg: self.heard.append(
            (msg.topic, bytes(msg.payload), getattr(msg.properties, "CorrelationData", None))
        )
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def listen(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)

    def send(self, name: str, doc: Any, props: Properties | None = None) -> None:
        payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.client.publish(f"{PREFIX}/{name}", payload, qos=1, properties=props).wait_for_publish(
            5
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mes(broker: Mosquitto) -> Iterator[Mes]:
    m = Mes(broker)
    yield m
    m.close()


def replies(sub: Subscriber, name: str) -> list[dict[str, Any]]:
    return [json.loads(p) for t, p, _ in sub.snapshot() if t == f"{PREFIX}/{name}/reply"]


def scanner_line(tmp_path: Path, broker: Mosquitto, port: int, **kw: Any) -> Path:
    return line_file(
        tmp_path,
        broker,
        devices=[
            {
                "id": "cam-1",
                "profile": "scanners/cognex-dataman-370",
                "host": "127.0.0.1",
                "port": port,
            },
        ],
        stations=[
            {
                "id": "st10",
                "step": "labelling",
                "identity": {"sources": ["cam-1"]},
                "rules": {"commission": True, "gtins": "work_order"},
            }
        ],
        **kw,
    )


async def test_work_orders_by_command_are_answered_after_commit_and_survive_a_restart(
    tmp_path: Path, broker: Mosquitto, mes: Mes
) -> None:
    async with TcpScannerSim(terminator="crlf") as cam:
        path = scanner_line(tmp_path, broker, cam.port)
        with subscriber(broker, "tracegate/#") as sub:
            async with running_gateway(path) as gw:
                await wait_for(lambda: gw.forwarder and gw.forwarder.stats.connected, 10)
                await cam.wait_client()
                await cam.send(code(1))
                await wait_for(lambda: sub.events("rejected"), 10, "no work order yet")
                mes.send("work-order", {"correlation_id": "c1", "work_order": "WO-1",
                                        "gtins": [GTIN_A]})  # fmt: skip
                await wait_for(lambda: replies(sub, "work-order"), 10, "reply")
                [changed] = sub.events("work_order.changed")
                [reply] = replies(sub, "work-order")
                assert reply == {
                    "correlation_id": "c1",
                    "ok": True,
                    "command": "work-order",
                    "changed": True,
                    "event_id": changed["event_id"],
                }
                # Answered after the commit: the event was in the journal before the reply.
                assert gw.journal is not None and gw.journal.committed_seq >= changed["seq"]
                await cam.send(code(1))
                await wait_for(lambda: sub.events("identified"), 10, "identified")
                # Refused: nothing changes, the reply says why.
                mes.send("work-order", {"correlation_id": "c2", "work_order": "WO-2",
                                        "gtins": ["4711"]})  # fmt: skip
                mes.send("work-order", b"\xff\xfe not json")
                mes.send("rename-line", {"correlation_id": "c3"})
                await wait_for(lambda: len(replies(sub, "work-order")) >= 3, 10, "refusals")
                await wait_for(lambda: replies(sub, "rename-line"), 10, "unknown command")
        refusals = replies(sub, "work-order")[1:]
        assert [r["ok"] for r in refusals] == [False, False]
        assert "GTIN-14" in refusals[0]["error"] and "not JSON" in refusals[1]["error"]
        assert "unknown command 'rename-line'" in replies(sub, "rename-line")[0]["error"]
        assert len(sub.events("work_order.changed")) == 1
        [ident] = sub.events("identified")
        assert ident["work_order"] == "WO-1"
        # A restart: the work order is still in force, from the journal.
        await asyncio.wait_for(cam.wait_no_client(), 10)
        with subscriber(broker, "tracegate/+/+/st10/#") as sub2:
            async with running_gateway(path):
                await asyncio.wait_for(cam.wait_client(), 10)
                await cam.send(code(2))
                await wait_for(lambda: sub2.events("identified"), 10, "after restart")
    assert sub2.events("identified")[0]["work_order"] == "WO-1"


async def test_mqtt5_response_topic_and_correlation_data_are_honoured(
    tmp_path: Path, broker: Mosquitto, mes: Mes
) -> None:
    async with TcpScannerSim(terminator="crlf") as cam:
        path = scanner_line(tmp_path, broker, cam.port)
        mes.listen("mes/answers/#")
        async with running_gateway(path) as gw:
            await wait_for(lambda: gw.forwarder and gw.forwarder.stats.connected, 10)
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = "mes/answers/42"
            props.CorrelationData = b"\x00\x2a"
            mes.send("work-order", {"work_order": "WO-9"}, props)
            await wait_for(lambda: mes.heard, 10, "answer on the response topic")
    [(topic, payload, correlation)] = mes.heard
    assert topic == "mes/answers/42" and correlation == b"\x00\x2a"
    assert json.loads(payload)["ok"] is True


# --- commissioning on a real Modbus PLC ---------------------------------------------------------

SERIAL_SIGNAL = {
    "table": "holding_register", "address": 100, "type": "string", "length": 24, "writable": True,
}  # fmt: skip


def marking_line(tmp_path: Path, broker: Mosquitto, port: int) -> Path:
    return line_file(
        tmp_path,
        broker,
        devices=[
            {
                "id": "laser",
                "profile": "plcs/generic-modbus-tcp",
                "host": "127.0.0.1",
                "port": port,
                "signals": {"serial": SERIAL_SIGNAL},
                "poll_groups": {"default": {"period_ms": 20}, "handshake": {"period_ms": 10}},
            }
        ],
        stations=[
            {
                "id": "st15",
                "step": "marking",
                "handshake": {
                    "device": "laser",
                    "request": "request",
                    "ack": "ack",
                    "verdict": "verdict",
                },
                "commission": {
                    "pool": "pcb",
                    "write": "serial",
                    "counter": "cycle_counter",
                    "gtin": GTIN_B,
                    "write_format": "serial",
                },
            }
        ],
        pools=[{"id": "pcb", "template": "PCB{seq:06}", "low_water": 5}],
    )


def n_recorded(sub: Subscriber) -> int:
    return len({e["event_id"] for e in sub.events("commissioned")})


async def mark_one(plc: ModbusPlcSim, n: int, timeout: float = 30) -> str:
    """The laser asks for a serial (request number n), reads it once acked, drops its request."""
    mem = plc.memory(1)
    mem.write("cycle_counter", n)
    mem.write("request", True)
    await wait_for(lambda: mem.read("ack") is True, timeout, f"ack of request {n}")
    serial = str(mem.read("serial")).rstrip("\x00 ")
    mem.write("request", False)
    await wait_for(lambda: mem.read("ack") is False, timeout, f"ack dropped for {n}")
    return serial


KILLS, MARKS = 10, 30


@pytest.mark.slow
async def test_commissioned_serials_are_unique_through_sigkills_and_the_plc_gets_its_own(
    tmp_path: Path, broker: Mosquitto, mes: Mes
) -> None:
    """The marker gets, for each request, exactly the serial recorded for it, and no serial is
    ever given twice, while the gateway is killed at random moments, many times."""
    rng = random.Random(15)
    port = Mosquitto().port  # a free port number for the PLC
    path = marking_line(tmp_path, broker, port)
    laser = load_line(path).config.devices[0]
    assert isinstance(laser, ModbusConfig)
    async with ModbusPlcSim(laser, port=port) as plc:
        gw = GatewayProcess(path, tmp_path / "gateway.log")
        marked: list[str] = []
        with subscriber(broker, "tracegate/#") as sub:
            try:
                gw.start()
                # Commands reach a gateway that is online (it does not keep a broker session).
                await wait_for(lambda: sub.last_retained(STATUS) == b"online", 20, "online")
                mes.send("serial-pool", {"correlation_id": "p1", "pool": "pcb",
                                         "ranges": [[1, 1000]]})  # fmt: skip
                await wait_for(lambda: replies(sub, "serial-pool"), 20, "pool loaded")
                # A PLC answering in 40 ms widens the window between a record's commit and its
                # serial, verdict and ack being written: where kills must land.
                plc.faults.delay_s = 0.04
                kills = 0
                for n in range(1, MARKS + 1):
                    seen = n_recorded(sub)
                    marking = asyncio.create_task(mark_one(plc, n))
                    if kills < KILLS and n % 3 == 0:
                        if kills % 2 == 0:  # right after the commit: the dangerous place
                            await wait_for(partial(lambda k: n_recorded(sub) > k, seen), 20, "rec")
                        await asyncio.sleep(rng.uniform(0.0, 0.03))
                        gw.kill()
                        kills += 1
                        gw.start()
                    marked.append(await marking)
                # The last restarted gateway is up (SIGTERM before its handlers are in place
                # would kill it the default way).
                await wait_for(lambda: gw.readies() == kills + 1, 20, "the last restart ready")
                await wait_for(
                    lambda: len({e["event_id"] for e in sub.events("commissioned")}) >= MARKS,
                    20,
                    "every commissioning delivered",
                )
                assert gw.terminate() == 0
            finally:
                gw.cleanup()
    events = {e["event_id"]: e for e in sub.events("commissioned")}.values()
    recorded = [e["ids"][0]["serial"] for e in events]
    assert len(recorded) == len(set(recorded))  # never given twice
    assert len(set(marked)) == MARKS  # every unit got its own serial
    assert set(marked) <= set(recorded)  # and each one was recorded before it was marked
    for e in events:
        assert e["ids"][0]["gtin"] == GTIN_B and e["station"] == "st15"
    reacked = sum(1 for lg in gw.logs() if lg.get("event") == "handshake_reacknowledged")
    assert kills == KILLS and reacked >= 1


# --- EPCIS output, and the trace of a unit -----------------------------------------------------


async def test_epcis_payload_and_the_trace_of_a_unit_with_the_broker_down(
    tmp_path: Path, broker: Mosquitto, mes: Mes
) -> None:
    from tests.test_epcis import validator

    async with TcpScannerSim(terminator="crlf") as cam:
        path = scanner_line(tmp_path, broker, cam.port, mqtt={"payload": "epcis"})
        with subscriber(broker, "tracegate/#") as sub:
            async with running_gateway(path) as gw:
                await wait_for(lambda: gw.forwarder and gw.forwarder.stats.connected, 10)
                mes.send("work-order", {"work_order": "WO-5", "gtins": [GTIN_A]})
                await wait_for(lambda: replies(sub, "work-order"), 10, "work order")
                await cam.wait_client()
                await cam.send(code("SN7"))
                await wait_for(
                    lambda: any(t.endswith("/st10/identified") for t, _, _ in sub.snapshot()),
                    10,
                    "an EPCIS event",
                )
                broker.stop()  # the trace is local: it works with the plant network down
                proc = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-m", "gateway", "trace", "-c", str(path), code("SN7")],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                    timeout=60,
                )
                as_json = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-m", "gateway", "trace", "-c", str(path),
                     f"(01){GTIN_A}(21)SN7", "--json"],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                    timeout=60,
                )  # fmt: skip
    [(_, payload, _)] = [m for m in sub.snapshot() if m[0].endswith("/st10/identified")]
    doc = json.loads(payload)
    validator().validate(doc)
    [event] = doc["epcisBody"]["eventList"]
    assert event["type"] == "ObjectEvent" and event["epcList"] == [
        f"https://id.gs1.org/01/{GTIN_A}/21/SN7"
    ]
    assert proc.returncode == 0, proc.stderr
    assert f"Unit (01){GTIN_A}(21)SN7" in proc.stdout and "labelling" in proc.stdout
    assert "WO WO-5" in proc.stdout
    trace = json.loads(as_json.stdout)
    assert trace["unit"]["commissioned_seq"] is not None
    assert [e["type"] for e in trace["events"]] == ["identified"]
