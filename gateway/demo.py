"""`tracegate demo`: a line you can run without hardware.

The demo plays the bundled virtual line `simulators/scenarios/line-demo.yaml` (the reference
line of docs/serialization.md at a human pace, endless): simulated scanners (TCP and a handheld
on a pty), an OPC UA press, Modbus PLCs (a laser marker asking for serials, a leak tester) and
an RFID portal, all driven with the same units, the MES's work orders and serials delivered by
command. It starts a private Mosquitto on a free port (or uses `--broker`), the gateway on the
line file the virtual line writes for its simulators (the same as the bundled
`device_profiles/lines/demo.yaml`, with their real ports), and a subscriber that prints every
event as the broker delivers it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from gateway.cli import EX_CONFIG, EX_OK
from simulators.broker import INSTALL_HINT, Mosquitto, find_mosquitto
from simulators.scanner import ScannerSim

DEMO_SCENARIO = "line-demo.yaml"


class EventPrinter:
    """Prints events as the broker delivers them (paho runs this in its network thread)."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.count = 0
        self.connected = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"tracegate-demo-{uuid.uuid4().hex[:6]}"
        )
        self.topic = topic
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.host, self.port = host, port

    def _on_connect(self, client: paho.Client, *args: Any) -> None:
        client.subscribe(self.topic, qos=1)
        self.connected.set()

    def start(self) -> None:
        self.client.connect(self.host, self.port)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if "/cmd/" in msg.topic:
            if msg.topic.endswith("/reply"):
                print(
                    f"  reply   {msg.topic.split('/cmd/')[-1]}: {msg.payload.decode()}", flush=True
                )
            return
        if msg.retain or "/gateway/" in msg.topic:
            print(
                f"  status  {msg.topic.split('/status')[-1] or '/'}: "
                f"{msg.payload.decode(errors='replace')}",
                flush=True,
            )
            return
        self.count += 1
        print(format_event(json.loads(msg.payload)), flush=True)


def format_event(ev: dict[str, Any]) -> str:
    """One line a technician can read: time, station, type, identity or reason, seq."""
    what = ""
    detail = ev.get("detail") or {}
    if ev["type"] == "aggregated":
        children = ", ".join(c["value"] for c in ev.get("children") or [])
        what = f"{ev['parent']['value']} <- {children}"
    elif ev["ids"]:
        what = ev["ids"][0]["value"]
        if ev["type"] == "rejected":
            what += f"  {ev.get('reason')}"
        elif isinstance(detail.get("pass"), dict):
            what += f"  {detail['pass'].get('direction') or ''}"
    elif ev["type"] == "rejected":
        what = f"{ev.get('reason')}: {detail.get('message', '')}"
    elif ev["type"] == "work_order.changed":
        what = f"{detail.get('previous')} -> {ev['work_order']}"
    elif ev["type"] in ("device.state", "gap", "outbox.state", "noread", "pool.loaded", "pool.low"):
        what = json.dumps(detail, ensure_ascii=False)
    if ev.get("result"):
        what += f"  {ev['result']}"
    return (
        f"{ev['time'][11:23]}  {ev['station'] or '-':<6} {ev['type']:<13} {what}  "
        f"[{ev['work_order'] or '-'}, seq {ev['seq']}]"
    )


async def _feed(sim: ScannerSim, codes: list[Any], rate: float) -> None:
    """Codes at about `rate` a second, a NOREAD now and then (tracegate simulate's scanners)."""
    rng = random.Random(7)
    await sim.wait_client()
    for code in codes:
        if rng.random() < 0.04:
            await sim.send_noread()
        else:
            await sim.send(code)
        await asyncio.sleep(rng.expovariate(rate))


def demo_main(args: argparse.Namespace) -> int:
    from gateway import log
    from simulators.line_scenario import ScenarioError, load_scenario

    path = Path(__file__).resolve().parents[1] / "simulators" / "scenarios" / DEMO_SCENARIO
    try:
        scenario = load_scenario(path, takt_s=2.0 / args.rate if args.rate > 0 else 1.0)
    except ScenarioError as exc:
        print(exc, file=sys.stderr)
        return EX_CONFIG
    log.configure("warning", "console", stream=sys.stderr)
    broker: Mosquitto | None = None
    if args.broker:
        host, _, port_text = args.broker.rpartition(":")
        host, port = host or "127.0.0.1", int(port_text)
    else:
        if find_mosquitto() is None:
            print(INSTALL_HINT, file=sys.stderr)
            return 69  # EX_UNAVAILABLE
        broker = Mosquitto()
        broker.start()
        host, port = broker.host, broker.port
    try:
        with tempfile.TemporaryDirectory(prefix="tracegate-demo-") as tmp:
            asyncio.run(_demo(scenario, (host, port), Path(tmp), args.duration))
    except KeyboardInterrupt:
        pass
    finally:
        if broker is not None:
            broker.close()
    return EX_OK


async def _demo(
    scenario: Any, broker: tuple[str, int], workdir: Path, duration: float | None
) -> None:
    from gateway.app import Gateway
    from gateway.config import load_line
    from simulators.line import VirtualLine

    host, port = broker
    async with VirtualLine(scenario, workdir, broker, log=("warning", "console")) as line:
        loaded = load_line(line.line_file)
        prefix = loaded.config.topic_prefix()
        print(
            f"Tracegate demo line '{loaded.config.gateway.line}' "
            f"(simulators/scenarios/{DEMO_SCENARIO})\n"
            f"  broker      mqtt://{host}:{port}  (subscribe: mosquitto_sub -p {port} "
            f"-t '{prefix}/#' -v)",
            flush=True,
        )
        for st in scenario.stations:
            devices = [d for d in (st.scanner, st.plc, st.reader) if d is not None]
            kinds = ", ".join(f"{d.id} ({d.kind}, {d.profile})" for d in devices)
            print(f"  {st.id:<10}  {st.step:<12} {kinds}", flush=True)
        print(
            f"  line file   {line.line_file}\nEvents as the broker delivers them (Ctrl-C stops):",
            flush=True,
        )
        printer = EventPrinter(host, port, f"{prefix}/#")
        printer.start()
        gateway = Gateway(loaded)
        try:
            async with asyncio.TaskGroup() as tg:
                gw_task = tg.create_task(gateway.run())
                run = tg.create_task(line.run())
                if duration is None:
                    await run
                else:
                    await line.running.wait()
                    await asyncio.sleep(duration)  # the demo's length, as asked
                run.cancel()
                gateway.request_stop()
                await gw_task
        finally:
            printer.stop()
        print(f"Demo stopped: {printer.count} events delivered.", flush=True)
