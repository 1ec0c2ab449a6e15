"""The daemon as systemd and an operator see it: notifications, watchdog, the outbox commands
while it runs, the demo and the simulate commands."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.app import STUCK_AFTER_S, Gateway
from gateway.config import load_line
from gateway.systemd import Notifier
from simulators.broker import Mosquitto
from simulators.codes import CodeGenerator
from simulators.scanner import TcpScannerSim
from tests.helpers import ROOT, GatewayProcess, cam_line, line_file, subscriber, wait_for


class NotifyListener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def close(self) -> None:
        self.sock.close()


async def test_systemd_sees_ready_watchdog_status_and_stopping(
    tmp_path: Path, broker: Mosquitto
) -> None:
    listener = NotifyListener(tmp_path / "notify.sock")
    async with TcpScannerSim(terminator="crlf") as cam:
        path = cam_line(tmp_path, broker, cam.port)
        env = {"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "400000"}
        gw = GatewayProcess(path, tmp_path / "gw.log", env=env)
        gw.start()
        try:
            await wait_for(lambda: any(m.startswith("READY=1") for m in listener.drain()), 20)
            await wait_for(
                lambda: sum(m == "WATCHDOG=1" for m in listener.drain()) >= 3, 10, "watchdog pings"
            )
            await wait_for(
                lambda: any("broker connected" in m for m in listener.drain()), 10, "status"
            )
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGHUP)  # systemctl reload
            await wait_for(
                lambda: any(m.startswith("RELOADING=1") for m in listener.drain()), 10, "reloading"
            )
            await wait_for(
                lambda: sum(m.startswith("READY=1") for m in listener.drain()) >= 2,
                10,
                "ready again after the reload",
            )
            assert await asyncio.to_thread(gw.terminate) == 0
        finally:
            gw.cleanup()
    msgs = listener.drain()
    listener.close()
    ready = next(m for m in msgs if m.startswith("READY=1"))
    assert "STATUS=" in ready
    assert any(m.startswith("STOPPING=1") for m in msgs)
    assert msgs.index(ready) < next(i for i, m in enumerate(msgs) if m.startswith("STOPPING=1"))


async def test_watchdog_pings_stop_while_a_commit_is_stuck(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """WATCHDOG=1 only while the pipelines make progress: a commit stuck in flight (a hung
    disk) withholds the pings, so systemd restarts the gateway."""
    listener = NotifyListener(tmp_path / "notify.sock")
    path = line_file(tmp_path, broker, devices=[], stations=[])
    notifier = Notifier(str(listener.path), watchdog_interval_s=0.05)
    gw = Gateway(load_line(path), notifier=notifier)
    task = asyncio.create_task(gw.run())
    try:
        await wait_for(lambda: sum(m == "WATCHDOG=1" for m in listener.drain()) >= 2, 5)
        assert gw.journal is not None
        gw.journal.busy_since = time.monotonic() - STUCK_AFTER_S - 1  # as a hung fsync looks
        assert not gw.healthy()
        await asyncio.sleep(0.1)  # let a ping that was already on its way arrive
        before = sum(m == "WATCHDOG=1" for m in listener.drain())
        await asyncio.sleep(0.5)  # ten watchdog intervals: the absence of pings is the outcome
        assert sum(m == "WATCHDOG=1" for m in listener.drain()) == before
        gw.journal.busy_since = None
        await wait_for(lambda: sum(m == "WATCHDOG=1" for m in listener.drain()) > before, 5)
    finally:
        gw.request_stop()
        await task
        listener.close()


async def test_outbox_commands_read_the_journal_while_the_daemon_runs(
    tmp_path: Path, broker: Mosquitto
) -> None:
    gen = CodeGenerator(seed=40)
    async with TcpScannerSim(terminator="crlf") as cam:
        path = cam_line(tmp_path, broker, cam.port)
        gw = GatewayProcess(path, tmp_path / "gw.log")
        try:
            gw.start()
            await wait_for(lambda: cam.client_connected, 20)
            broker.stop()
            for _ in range(25):
                await cam.send(gen.gs1_datamatrix())

            async def waiting() -> int:
                out = await cli("outbox", "stats", "-c", str(path), "--json")
                return int(json.loads(out)["waiting"])

            async with asyncio.timeout(10):
                while await waiting() < 25:
                    await asyncio.sleep(0.05)
            human = await cli("outbox", "stats", "-c", str(path))
            tail = await cli("outbox", "tail", "-c", str(path), "-n", "3")
            broker.start()
            async with asyncio.timeout(20):
                while await waiting() > 0:  # drained once the broker is back
                    await asyncio.sleep(0.05)
            assert await asyncio.to_thread(gw.terminate) == 0
        finally:
            gw.cleanup()
    assert "waiting" in human and "st10" in human
    lines = tail.strip().splitlines()
    assert len(lines) == 3
    assert all(json.loads(line)["type"] == "identified" for line in lines)


async def cli(*args: str) -> str:
    """`python -m gateway ARGS` in a thread (the event loop keeps serving the simulators)."""
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return proc.stdout


def test_outbox_stats_without_a_journal_says_so(tmp_path: Path, broker: Mosquitto) -> None:
    path = line_file(tmp_path, broker, devices=[], stations=[])
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "outbox", "stats", "-c", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 74
    assert "no journal" in proc.stderr


def test_demo_runs_a_line_end_to_end() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--duration", "4", "--rate", "5"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Events as the broker delivers them" in out
    assert out.count(" identified ") >= 5
    assert "st10" in out and "st20" in out
    assert "Demo stopped:" in out


def test_simulate_starts_simulators_for_a_line(tmp_path: Path) -> None:
    port, llrp_port = Mosquitto().port, Mosquitto().port  # free port numbers; no broker
    path = tmp_path / "line.yaml"
    path.write_text(
        "gateway: {id: g, site: s, line: l}\n"
        "devices:\n"
        f"  - {{id: cam-1, profile: scanners/keyence-sr-1000, host: 127.0.0.1, port: {port}}}\n"
        f"  - {{id: hand-1, profile: scanners/generic-rs232, port: {tmp_path / 'ttyS7'}}}\n"
        f"  - {{id: dock, profile: readers/zebra-fx9600, host: 127.0.0.1, port: {llrp_port}}}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "simulate", "-c", str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.settimeout(10)
            assert conn.recv(64)  # the simulated Keyence sends codes
        with socket.create_connection(("127.0.0.1", llrp_port), timeout=5) as conn:
            conn.settimeout(10)
            greeting = conn.recv(10)  # an LLRP reader greets with READER_EVENT_NOTIFICATION
            assert greeting[:2] == bytes([0x04, 63])
        assert (tmp_path / "ttyS7").is_symlink()  # the simulated RS-232 scanner's port
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    assert any("cam-1: simulated on 127.0.0.1" in line for line in lines)
    assert any(f"dock: simulated zebra-fx9600 reader on 127.0.0.1:{llrp_port}" in x for x in lines)
    assert proc.returncode == 0


@pytest.mark.parametrize("cmd", [["check"], ["run"]])
def test_commands_need_a_config(cmd: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", *cmd], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 2 and "--config" in proc.stderr


def test_a_corrupt_journal_is_refused_with_exit_74_and_kept(
    tmp_path: Path, broker: Mosquitto
) -> None:
    path = line_file(tmp_path, broker, devices=[], stations=[])
    journal = tmp_path / "journal.db"
    journal.write_bytes(b"SQLite format 3\x00" + b"\xde\xad\xbe\xef" * 2000)
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 74
    logs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    unusable = [lg for lg in logs if lg["event"] == "journal_unusable"]
    assert unusable and str(journal) in unusable[0]["error"]
    assert journal.read_bytes().startswith(b"SQLite format 3")  # never wiped or recreated


async def test_simulate_serves_a_line_of_plcs_that_the_gateway_then_records(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """The user's path: `tracegate simulate` for a line with an OPC UA press (handshake) and a
    Modbus nutrunner (counter trigger), then `tracegate run` on the same line file."""
    from simulators.broker import free_port

    opc_port, mb_port = free_port(), free_port()
    path = line_file(
        tmp_path,
        broker,
        devices=[
            {
                "id": "press",
                "profile": "plcs/siemens-s7-1500",
                "endpoint": f"opc.tcp://127.0.0.1:{opc_port}",
            },
            {
                "id": "nut",
                "profile": "plcs/generic-modbus-tcp",
                "host": "127.0.0.1",
                "port": mb_port,
            },
        ],
        stations=[
            {
                "id": "st30",
                "identity": {"signal": {"device": "press", "signal": "part_id"}},
                "handshake": {
                    "device": "press",
                    "request": "request",
                    "ack": "ack",
                    "verdict": "verdict",
                },
                "parameters": [{"device": "press", "signal": "torque"}],
            },
            {
                "id": "st40",
                "trigger": {"device": "nut", "signal": "cycle_counter", "edge": "change"},
                "parameters": [{"device": "nut", "signal": "torque"}],
            },
        ],
    )
    sim = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "simulate",
        "-c",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    gw = GatewayProcess(path, tmp_path / "gw.log")
    try:
        assert sim.stdout is not None
        announced = [(await sim.stdout.readline()).decode() for _ in range(2)]
        with subscriber(broker, "tracegate/#") as sub:
            gw.start()
            await wait_for(
                lambda: {e["station"] for e in sub.events("step.completed")} >= {"st30", "st40"},
                30,
                "cycles of both PLCs",
            )
            assert await asyncio.to_thread(gw.terminate) == 0
    finally:
        gw.cleanup()
        if sim.returncode is None:
            sim.send_signal(signal.SIGINT)
            await asyncio.wait_for(sim.wait(), 10)
    assert any("press: simulated PLC (handshake" in line for line in announced)
    assert any("nut: simulated PLC (trigger" in line for line in announced)
