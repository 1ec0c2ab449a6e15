"""`tracegate demo`: a line you can run without hardware.

The demo starts a private Mosquitto on a free port (or uses `--broker`), a simulated fixed-mount
TCP scanner and a simulated USB handheld on a pty pair, the gateway with the bundled line file
`device_profiles/lines/demo.yaml` pointed at them, and a subscriber that prints every event as
the broker delivers it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
from gateway.config import LoadedConfig
from gateway.config.loader import bundled_profiles_dir, load_or_report
from gateway.config.models import SerialScannerConfig, TcpScannerConfig
from simulators.broker import INSTALL_HINT, Mosquitto, find_mosquitto
from simulators.codes import CodeGenerator
from simulators.scanner import ScannerSim, SerialScannerSim, TcpScannerSim

DEMO_LINE = "lines/demo.yaml"


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
    if ev["ids"]:
        what = ev["ids"][0]["value"]
    elif ev["type"] == "rejected":
        what = f"{ev.get('reason')}: {ev.get('detail', {}).get('message', '')}"
    elif ev["type"] in ("device.state", "gap", "outbox.state", "noread"):
        what = json.dumps(ev.get("detail", {}), ensure_ascii=False)
    return (
        f"{ev['time'][11:23]}  {ev['station'] or '-':<6} {ev['type']:<13} {what}  "
        f"[{ev['work_order'] or '-'}, seq {ev['seq']}]"
    )


async def _feed(sim: ScannerSim, codes: list[Any], rate: float) -> None:
    rng = random.Random(7)
    await sim.wait_client()
    for code in codes:
        if rng.random() < 0.04:
            await sim.send_noread()
        else:
            await sim.send(code)
        await asyncio.sleep(rng.expovariate(rate))


def demo_codes(seed: int) -> tuple[list[Any], list[Any]]:
    gen = CodeGenerator(seed)
    cam = [
        gen.make("gs1_datamatrix", "check_digit" if i % 17 == 16 else None) for i in range(100_000)
    ]
    hand = [gen.make("plain" if i % 3 else "digital_link") for i in range(100_000)]
    return cam, hand


def _demo_config(
    loaded: LoadedConfig, broker: tuple[str, int], cam_port: int, serial_path: str, workdir: Path
) -> LoadedConfig:
    """The demo line pointed at this run's broker, simulators and a scratch journal."""

    def retarget(d: Any) -> Any:
        if isinstance(d, TcpScannerConfig):
            return d.model_copy(update={"port": cam_port})
        if isinstance(d, SerialScannerConfig):
            return d.model_copy(update={"port": serial_path})
        return d

    cfg = loaded.config
    host, port = broker
    cfg = cfg.model_copy(
        update={
            "mqtt": cfg.mqtt.model_copy(update={"host": host, "port": port}),
            "journal": cfg.journal.model_copy(update={"path": workdir / "journal.db"}),
            "devices": [retarget(d) for d in cfg.devices],
        }
    )
    return LoadedConfig(cfg, loaded.source, loaded.config_hash, loaded.profiles)


def demo_main(args: argparse.Namespace) -> int:
    from gateway import log

    line = bundled_profiles_dir() / DEMO_LINE
    loaded = load_or_report(line)
    if loaded is None:
        return EX_CONFIG
    g = loaded.config.gateway
    log.configure(g.log_level, g.log_format, stream=sys.stderr)
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
            asyncio.run(_demo(loaded, (host, port), Path(tmp), args.rate, args.duration))
    except KeyboardInterrupt:
        pass
    finally:
        if broker is not None:
            broker.close()
    return EX_OK


async def _demo(
    loaded: LoadedConfig,
    broker: tuple[str, int],
    workdir: Path,
    rate: float,
    duration: float | None,
) -> None:
    host, port = broker
    from gateway.app import Gateway

    prefix = loaded.config.topic_prefix()
    devices = loaded.config.devices
    cam_cfg = next(d for d in devices if isinstance(d, TcpScannerConfig))
    hand_cfg = next(d for d in devices if isinstance(d, SerialScannerConfig))
    async with (
        TcpScannerSim(terminator="crlf", noread_text=cam_cfg.framing.noread[0]) as cam,
        SerialScannerSim(
            link=workdir / "ttyACM-demo", terminator="cr", noread_text=hand_cfg.framing.noread[0]
        ) as hand,
    ):
        cfg = _demo_config(loaded, broker, cam.port, str(hand.path), workdir)
        print(
            f"Tracegate demo line '{cfg.config.gateway.line}'\n"
            f"  broker      mqtt://{host}:{port}  (subscribe: mosquitto_sub -p {port} "
            f"-t '{prefix}/#' -v)\n"
            f"  cam-st10    simulated Cognex DataMan on 127.0.0.1:{cam.port}\n"
            f"  hand-st20   simulated Honeywell handheld on {hand.path}\n"
            f"  journal     {workdir / 'journal.db'}\n"
            f"Events as the broker delivers them (Ctrl-C stops):",
            flush=True,
        )
        printer = EventPrinter(host, port, f"{prefix}/#")
        printer.start()
        gateway = Gateway(cfg)
        cam_codes, hand_codes = demo_codes(int.from_bytes(os.urandom(2), "big"))
        try:
            async with asyncio.TaskGroup() as tg:
                gw_task = tg.create_task(gateway.run())
                feeders = [
                    tg.create_task(_feed(cam, cam_codes, rate)),
                    tg.create_task(_feed(hand, hand_codes, rate / 2)),
                ]
                if duration is not None:
                    await asyncio.sleep(duration)
                    gateway.request_stop()
                await gw_task
                for f in feeders:
                    f.cancel()
        finally:
            printer.stop()
        print(f"Demo stopped: {printer.count} events delivered.", flush=True)
