"""The serial and TCP scanner adapters against their simulators: real ptys, real TCP on
127.0.0.1. (A baud rate mismatch, 9600 vs 115200, cannot be shown on a pty: not tested.)"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
import structlog

from gateway.devices import factory
from gateway.devices.base import DeviceMisconfigured, DevicePlan, DeviceUnavailable
from gateway.devices.serial_scanner import SerialScanner
from gateway.devices.tcp_scanner import TcpScanner, enable_keepalive
from gateway.events import NoRead, Scan
from simulators.codes import CodeGenerator
from simulators.scanner import SerialScannerSim, TcpScannerSim
from tests.helpers_scanner import CollectingContext, failure, running, serial_config, tcp_config

GS1_TEXT = "]d2010401234500001621SN-0001\x1d10LOT7\x1d17281231"


def test_registry_maps_scanner_kinds() -> None:
    plan, state = DevicePlan(), Path("/nonexistent")
    assert isinstance(
        factory("serial_scanner")(serial_config("/dev/null"), plan, state), SerialScanner
    )
    assert isinstance(factory("tcp_scanner")(tcp_config(9), plan, state), TcpScanner)


# --- serial ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sim_term", "cfg_term"), [("cr", "cr"), ("crlf", "crlf"), ("lf", "any"), ("crlf", "any")]
)
async def test_serial_codes_arrive_with_exact_text(
    tmp_path: Path, sim_term: str, cfg_term: str
) -> None:
    code = CodeGenerator(seed=3).gs1_datamatrix()
    async with SerialScannerSim(tmp_path / "by-id-scanner", terminator=sim_term) as sim:
        ctx = CollectingContext()
        device = SerialScanner(serial_config(sim.path, framing={"terminator": cfg_term}))
        async with running(device, ctx):
            await ctx.wait_connected()
            await sim.send(GS1_TEXT)
            await sim.send(code)
            await sim.send_noread()
            await sim.send("Müller\x1e\x04")
            await ctx.wait_observations(4)
        assert ctx.scans == [GS1_TEXT, code.text(), "Müller\x1e\x04"]
        assert ctx.noreads == ["NOREAD"]
        assert all(o.device == "scanner-1" for o in ctx.observations)
        assert sim.slave_path is not None
        assert ctx.connections == [f"{sim.path} -> {sim.slave_path} at 9600 baud"]


async def test_serial_noise_is_logged_rate_limited_and_codes_still_arrive(tmp_path: Path) -> None:
    async with SerialScannerSim() as sim:
        ctx = CollectingContext()
        with structlog.testing.capture_logs() as logs:
            device = SerialScanner(serial_config(sim.path, framing={"max_code_bytes": 64}))
            async with running(device, ctx):
                await ctx.wait_connected()
                for _ in range(3):
                    await sim.send_garbage()
                    await sim.send_too_long(200)
                await sim.send("AFTER-NOISE")
                await ctx.wait_observations(1)
        assert ctx.scans == ["AFTER-NOISE"]
    garbage = [e for e in logs if e["event"] == "scanner_garbage_received"]
    too_long = [e for e in logs if e["event"] == "scanner_frame_too_long"]
    assert [e["log_level"] for e in garbage] == ["warning", "debug", "debug"]
    assert [e["log_level"] for e in too_long] == ["warning", "debug", "debug"]
    assert garbage[0]["device"] == "scanner-1"
    noise = sim.truth[0].payload[:-1]  # 24 bytes: shown cut to 16
    assert garbage[0]["excerpt"] == noise[:16].hex(" ") + " ..."


async def test_serial_unplug_raises_unavailable_and_a_new_run_reads_after_replug(
    tmp_path: Path,
) -> None:
    link = tmp_path / "usb-Scanner_1234-if00"
    async with SerialScannerSim(link) as sim:
        device = SerialScanner(serial_config(str(link)))
        ctx = CollectingContext()
        first_pty = sim.slave_path
        async with running(device, ctx) as task:
            await ctx.wait_connected()
            await sim.send("BEFORE")
            await ctx.wait_observations(1)
            await sim.unplug()
            exc = await failure(task)
        assert isinstance(exc, DeviceUnavailable)
        assert str(link) in str(exc) and "unplugged" in str(exc)

        # Unplugged: the by-id link is gone, a new run fails as "not present".
        async with running(device, ctx) as task:
            exc = await failure(task)
        assert isinstance(exc, DeviceUnavailable)
        assert "not present" in str(exc)

        await sim.replug()
        assert sim.slave_path != first_pty
        async with running(device, ctx):
            await ctx.wait_connected(2)
            await sim.send("AFTER")
            await ctx.wait_observations(2)
        assert ctx.scans == ["BEFORE", "AFTER"]
        assert ctx.connections[1].startswith(f"{link} -> {sim.slave_path}")


async def test_serial_run_cancelled_closes_the_port() -> None:
    async with SerialScannerSim() as sim:
        ctx = CollectingContext()
        async with running(SerialScanner(serial_config(sim.path)), ctx):
            await ctx.wait_connected()
            assert sim.client_connected
        assert not sim.client_connected
        assert not (await sim.send("NOBODY")).delivered


async def test_serial_missing_port_is_unavailable(tmp_path: Path) -> None:
    ctx = CollectingContext()
    async with running(SerialScanner(serial_config(str(tmp_path / "ttyACM9"))), ctx) as task:
        exc = await failure(task)
    assert isinstance(exc, DeviceUnavailable)
    assert ctx.connections == []


@pytest.mark.parametrize("kind", ["regular_file", "directory", "char_device_not_tty"])
async def test_serial_path_that_is_no_serial_port_is_misconfigured(
    tmp_path: Path, kind: str
) -> None:
    if kind == "regular_file":
        port = tmp_path / "scanner.txt"
        port.write_text("not a port")
    elif kind == "directory":
        port = tmp_path
    else:
        port = Path("/dev/null")
    ctx = CollectingContext()
    async with running(SerialScanner(serial_config(str(port))), ctx) as task:
        exc = await failure(task)
    assert isinstance(exc, DeviceMisconfigured)
    assert "not a serial port" in str(exc)


async def test_serial_setting_rejected_by_pyserial_is_misconfigured() -> None:
    async with SerialScannerSim() as sim:
        # model_copy skips validation: a value only pyserial gets to reject.
        config = serial_config(sim.path).model_copy(update={"baudrate": -9600})
        ctx = CollectingContext()
        async with running(SerialScanner(config), ctx) as task:
            exc = await failure(task)
    assert isinstance(exc, DeviceMisconfigured)
    assert "rejects the settings" in str(exc)


# --- TCP -------------------------------------------------------------------------------------


async def test_tcp_codes_arrive_with_exact_text() -> None:
    codes = list(CodeGenerator(seed=5).stream("mixed", 5))
    async with TcpScannerSim(terminator="crlf") as sim:
        ctx = CollectingContext()
        async with running(TcpScanner(tcp_config(sim.port)), ctx):
            await ctx.wait_connected()
            await sim.wait_client()
            for code in codes:
                await sim.send(code)
            await sim.send_noread()
            await sim.send(GS1_TEXT, aim_prefix=False)
            await ctx.wait_observations(7)
    assert ctx.scans == [c.text() for c in codes] + [GS1_TEXT]
    assert [type(o) for o in ctx.observations].count(NoRead) == 1
    assert ctx.connections[0].startswith(f"127.0.0.1:{sim.port} (from 127.0.0.1:")


async def test_tcp_noise_is_logged_rate_limited_and_codes_still_arrive() -> None:
    async with TcpScannerSim() as sim:
        ctx = CollectingContext()
        with structlog.testing.capture_logs() as logs:
            device = TcpScanner(tcp_config(sim.port, framing={"noread": ["NR", "ERROR"]}))
            async with running(device, ctx):
                await ctx.wait_connected()
                await sim.wait_client()
                await sim.send_garbage(b"\x00\xff\x13")
                await sim.send_too_long(5000)
                await sim.send_garbage()
                await sim.send("ERROR")
                await sim.send("OK-1")
                await ctx.wait_observations(2)
    assert ctx.observations[0] == NoRead("scanner-1", ctx.observations[0].time, "ERROR")
    assert isinstance(ctx.observations[1], Scan) and ctx.observations[1].text == "OK-1"
    garbage = [e for e in logs if e["event"] == "scanner_garbage_received"]
    assert (garbage[0]["log_level"], garbage[0]["excerpt"]) == ("warning", "00 ff 13")
    assert [e["log_level"] for e in garbage] == ["warning", "debug"]
    assert [e["log_level"] for e in logs if e["event"] == "scanner_frame_too_long"] == ["warning"]


async def test_tcp_peer_close_is_unavailable_and_reconnect_reads_again() -> None:
    async with TcpScannerSim() as sim:
        device = TcpScanner(tcp_config(sim.port))
        ctx = CollectingContext()
        async with running(device, ctx) as task:
            await ctx.wait_connected()
            await sim.wait_client()
            await sim.drop_client()
            exc = await failure(task)
        assert isinstance(exc, DeviceUnavailable)
        assert "closed the connection" in str(exc)
        async with running(device, ctx):
            await ctx.wait_connected(2)
            await sim.wait_client()
            await sim.send("AGAIN")
            await ctx.wait_observations(1)
        assert ctx.scans == ["AGAIN"]


async def test_tcp_scanner_gone_then_refused_then_back() -> None:
    async with TcpScannerSim() as sim:
        device = TcpScanner(tcp_config(sim.port))
        ctx = CollectingContext()
        async with running(device, ctx) as task:
            await ctx.wait_connected()
            await sim.wait_client()
            await sim.unplug()
            assert isinstance(await failure(task), DeviceUnavailable)
        async with running(device, ctx) as task:
            exc = await failure(task)
        assert isinstance(exc, DeviceUnavailable)
        assert "cannot connect" in str(exc)
        await sim.replug()
        async with running(device, ctx):
            await ctx.wait_connected(2)
            await sim.wait_client()
            await sim.send("BACK")
            await ctx.wait_observations(1)


async def test_tcp_connection_refused_is_unavailable() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ctx = CollectingContext()
    async with running(TcpScanner(tcp_config(port)), ctx) as task:
        exc = await failure(task)
    assert isinstance(exc, DeviceUnavailable)
    assert ctx.connections == []


async def test_tcp_connect_timeout_is_unavailable() -> None:
    # A listener whose accept queue is full drops new SYNs: the connect hangs, as with a
    # scanner that is powered but wedged.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = [socket.socket() for _ in range(4)]
        try:
            for s in fillers:
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
            ctx = CollectingContext()
            config = tcp_config(port, connect_timeout_s=0.3)
            async with running(TcpScanner(config), ctx) as task:
                exc = await failure(task)
        finally:
            for s in fillers:
                s.close()
    assert isinstance(exc, DeviceUnavailable)
    assert "within 0.3 s" in str(exc)


async def test_tcp_run_cancelled_closes_the_connection() -> None:
    async with TcpScannerSim() as sim:
        ctx = CollectingContext()
        async with running(TcpScanner(tcp_config(sim.port)), ctx):
            await ctx.wait_connected()
            await sim.wait_client()
        async with asyncio.timeout(5):
            await sim.wait_no_client()
        assert not sim.client_connected


def test_keepalive_options_are_set() -> None:
    with socket.socket() as sock:
        enable_keepalive(sock, 17)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 17
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 2
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3


async def test_serial_over_a_device_server_url_reads_and_notices_eof() -> None:
    # An Ethernet serial device server is a `socket://host:port` URL; the TCP simulator plays it.
    async with TcpScannerSim() as sim:
        ctx = CollectingContext()
        device = SerialScanner(serial_config(f"socket://127.0.0.1:{sim.port}"))
        async with running(device, ctx) as task:
            await ctx.wait_connected()
            await sim.wait_client()
            await sim.send(GS1_TEXT)
            await ctx.wait_observations(1)
            await sim.drop_client()
            exc = await failure(task)
    assert ctx.scans == [GS1_TEXT]
    assert isinstance(exc, DeviceUnavailable)
    assert "closed by the peer" in str(exc)
