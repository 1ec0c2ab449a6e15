"""The status page, /status.json, /healthz and `tracegate status`, against a real gateway with a
TCP scanner simulator and a real Mosquitto; the page itself in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.publish as mqtt_publish
import pytest
from structlog.testing import capture_logs

from gateway.app import Gateway
from gateway.config.models import GatewayConfig, LineConfig
from gateway.status_http import MAX_CLIENTS, MAX_HEAD_BYTES
from simulators.broker import Mosquitto, free_port
from simulators.codes import CodeGenerator
from simulators.scanner import TcpScannerSim
from tests.helpers import ROOT, running_gateway, wait_for
from tests.helpers_status import get, request, scrape, status_line, status_port

CMD = "tracegate/test-site/gateway/gw-test/cmd"


def test_the_status_server_is_on_and_bound_to_loopback_by_default() -> None:
    cfg = LineConfig(gateway=GatewayConfig(id="g", site="s", line="l"))
    assert cfg.status.enabled and cfg.status.listen_host == "127.0.0.1" and cfg.status.port == 9780
    assert cfg.status.loopback


async def test_routes_answer_and_everything_else_is_refused_without_harm(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with (
        TcpScannerSim(terminator="crlf") as cam,
        running_gateway(status_line(tmp_path, broker, cam.port)) as gw,
    ):
        port = await status_port(gw)
        assert gw.status_server is not None and gw.status_server.address == ("127.0.0.1", port)
        await asyncio.wait_for(cam.wait_client(), 5)
        await cam.send(CodeGenerator(seed=3).gs1_datamatrix())
        await wait_for(lambda: gw.journal and gw.journal.committed_seq >= 2, 5, "2 events")

        page = await get(port, "/")
        assert page.code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
        assert b"status.json" in page.body and b"<script>" in page.body
        assert "script-src 'unsafe-inline'" in page.headers["content-security-policy"]
        head = await get(port, "/", "HEAD")
        assert head.code == 200 and head.body == b""
        assert int(head.headers["content-length"]) == len(page.body)
        assert (await get(port, "/healthz")).body == b"ok\n"
        doc = json.loads((await get(port, "/status.json?x=1")).body)
        assert doc["schema"] == "tracegate.status/1"

        for path in ("/nope", "/metrics/", "/status.json/..", "/index.html"):
            assert (await get(port, path)).code == 404, path
        # Read-only: no method but GET and HEAD does anything, and nothing changed.
        before = (gw.journal.committed_seq if gw.journal else 0, doc["work_orders"])
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            for path in ("/", "/status.json", "/metrics", "/healthz"):
                r = await get(port, path, method)
                assert r.code == 405 and r.headers["allow"] == "GET, HEAD", (method, path)
        posted = await request(
            port,
            b"POST /status.json HTTP/1.1\r\nHost: localhost\r\nContent-Length: 40\r\n\r\n"
            b'{"work_order": "WO-EVIL", "station": 1}',
        )
        assert posted is not None and posted.code == 405
        doc = json.loads((await get(port, "/status.json")).body)
        assert (gw.journal.committed_seq if gw.journal else 0, doc["work_orders"]) == before

        # Bad requests get a 4xx or nothing, and the server carries on.
        assert (await _raw(port, b"\x00\xff\xfe garbage\r\n\r\n")) == 400
        assert (await _raw(port, b"GET / HTTP/2.0\r\nHost: localhost\r\n\r\n")) == 505
        assert (await _raw(port, b"GET /\r\n\r\n")) == 400
        big = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-A: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n"
        assert (await _raw(port, big)) == 431
        many = b"GET / HTTP/1.1\r\nHost: localhost\r\n" + b"X-A: 1\r\n" * 100 + b"\r\n"
        assert (await _raw(port, many)) == 431
        assert (await _raw(port, b"GET / HTTP/1.1\r\nBad header\r\n\r\n")) == 400
        # Bound to loopback, it answers only for loopback names (DNS rebinding).
        assert (await get(port, "/status.json", host="evil.example")).code == 421
        assert (await _raw(port, b"GET /metrics HTTP/1.0\r\n\r\n")) == 421
        assert (await get(port, "/healthz", host="127.0.0.1")).code == 200
        assert (await get(port, "/healthz", host="[::1]")).code == 200
        rng = random.Random(7)
        for _ in range(30):
            blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
            code = await _raw(port, blob + b"\r\n\r\n")
            assert code is None or 400 <= code < 500 or code == 505, blob
        assert (await _raw(port, b"GET / HTT")) is None  # half a request, then closed

        # A client that sends nothing holds nobody up; too many at once are turned away.
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(MAX_CLIENTS)]
        try:
            await wait_for(
                lambda: len(gw.status_server._clients) >= MAX_CLIENTS if gw.status_server else 0,
                5,
                "idle clients accepted",
            )
            assert (await _raw(port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")) is None
        finally:
            for _, w in idle:
                w.close()
        await wait_for(
            lambda: gw.status_server is not None and not gw.status_server._clients, 5, "closed"
        )
        started = time.monotonic()
        _slow_r, slow_w = await asyncio.open_connection("127.0.0.1", port)
        slow_w.write(b"GET /status.json HTTP/1.1\r\n")  # and never the rest
        try:
            assert (await get(port, "/healthz")).code == 200
            assert time.monotonic() - started < 2
        finally:
            slow_w.close()
        m = await scrape(port)  # and it still counts what it answered
        assert (m.value("tracegate_status_requests_total", code="405") or 0) >= 21
        assert (m.value("tracegate_status_requests_total", code="421") or 0) >= 2


async def _raw(port: int, data: bytes) -> int | None:
    r = await request(port, data)
    return None if r is None else r.code


async def test_status_json_shows_devices_work_orders_events_and_rejects(
    tmp_path: Path, broker: Mosquitto
) -> None:
    gen = CodeGenerator(seed=4)
    async with (
        TcpScannerSim(terminator="crlf") as cam,
        running_gateway(status_line(tmp_path, broker, cam.port)) as gw,
    ):
        port = await status_port(gw)
        await asyncio.wait_for(cam.wait_client(), 5)
        first = gen.gs1_datamatrix()
        await cam.send(first)
        await cam.send("<script>alert(1)</script>")
        await _command(
            gw, broker, "work-order", {"work_order": "WO-9", "product": "P-1", "lot": "L7"}
        )
        doc = await _status_until(
            port, lambda d: d["journal"]["committed_seq"] == 4, "4 events committed"
        )
        [dev] = doc["devices"]
        assert dev["id"] == "cam-1" and dev["kind"] == "tcp_scanner"
        assert dev["state"] == "connected" and dev["reads"] == 2
        assert dev["last_read_age_s"] is not None and dev["errors"] == {}
        assert doc["work_orders"]["line"]["work_order"] == "WO-9"
        [st] = doc["work_orders"]["stations"]
        assert st == {
            "station": "st10",
            "work_order": "WO-9",
            "source": "line",
            "product": "P-1",
            "lot": "L7",
            "gtins": [],
        }
        [reject] = doc["rejects"]["recent"]
        assert reject["station"] == "st10" and reject["reason"] == "unrecognized"
        assert reject["ids"] == ["<script>alert(1)</script>"]
        assert doc["rejects"]["by_reason"] == [
            {"station": "st10", "reason": "unrecognized", "count": 1}
        ]
        recent = doc["events"]["recent"]
        assert [e["seq"] for e in recent] == [4, 3, 2, 1]  # newest first, committed ones
        types = {e["type"] for e in recent}
        assert types == {"device.state", "identified", "rejected", "work_order.changed"}
        key = f"(01){first.fields['gtin']}(21){first.fields['serial']}"
        assert any(e["ids"] == [key] for e in doc["events"]["recent"])
        assert doc["journal"]["committed_seq"] == 4 and doc["journal"]["full"] is False
        assert doc["broker"]["connected"] is True and doc["gateway"]["healthy"] is True
        assert doc["process"]["rss_bytes"] > 0


async def _command(gw: Gateway, broker: Mosquitto, name: str, doc: dict[str, Any]) -> None:
    """Send a command as the MES would, until the gateway has taken it: one sent before the
    gateway's subscription is in place is not delivered (QoS 1, not retained), and the test
    cannot see the SUBACK. Commands are idempotent, so a repeat changes nothing."""
    assert gw.binder_loop is not None
    before = gw.binder_loop.events_by_type.get("work_order.changed", 0)
    for _ in range(20):
        await asyncio.to_thread(
            mqtt_publish.single,
            f"{CMD}/{name}",
            json.dumps(doc),
            qos=1,
            hostname=broker.host,
            port=broker.port,
        )
        try:
            await wait_for(
                lambda: (
                    gw.binder_loop.events_by_type.get("work_order.changed", 0) > before
                    if gw.binder_loop
                    else False
                ),
                0.5,
            )
            return
        except AssertionError:
            continue
    raise AssertionError(f"the gateway never took the {name} command")


async def _status_until(port: int, pred: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        doc: dict[str, Any] = json.loads((await get(port, "/status.json")).body)
        if pred(doc):
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {doc}")
        await asyncio.sleep(0.05)


async def test_tracegate_status_prints_it_and_says_when_the_gateway_is_not_running(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with TcpScannerSim(terminator="crlf") as cam:
        path = status_line(tmp_path, broker, cam.port, port=free_port())
        async with running_gateway(path) as gw:
            await status_port(gw)
            await asyncio.wait_for(cam.wait_client(), 5)
            await cam.send("NOT-A-CODE")
            await wait_for(lambda: gw.binder_loop and gw.binder_loop.rejects, 5, "reject")
            code, out = await _cli("status", "-c", str(path))
            assert code == 0, out
            for text in ("Tracegate line-1", "cam-1", "connected", "WO-7", "NOT-A-CODE"):
                assert text in out, (text, out)
            assert "unrecognized" in out and "LAST EVENTS" in out
            code, out = await _cli("status", "-c", str(path), "--json")
            assert code == 0 and json.loads(out)["devices"][0]["id"] == "cam-1"
        broker.stop()  # what is recorded now stays in the journal
        async with running_gateway(path) as gw:
            await asyncio.wait_for(cam.wait_client(), 5)
            await cam.send("STILL-NOT-A-CODE")
            await wait_for(lambda: gw.binder_loop and gw.binder_loop.rejects, 5, "reject")
        code, out = await _cli("status", "-c", str(path))
        assert code == 3, out
        assert "gw-test (line line-1) is not running: nothing listens on 127.0.0.1:" in out
        assert "(status.listen_host, status.port)" in out and "events waiting" in out
        code, out = await _cli("status", "-c", str(path), "--json")
        doc = json.loads(out)
        assert code == 3 and doc["running"] is False and doc["journal"]["waiting"] >= 2


async def _cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode()


async def test_a_port_in_use_is_logged_naming_the_field_and_retried(
    tmp_path: Path, broker: Mosquitto
) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    async with TcpScannerSim(terminator="crlf") as cam:
        with capture_logs() as logs:
            path = status_line(tmp_path, broker, cam.port, port=taken)
            async with running_gateway(path) as gw:
                await wait_for(
                    lambda: any(e["event"] == "status_server_failed" for e in logs), 5, "failed"
                )
                [failed] = [e for e in logs if e["event"] == "status_server_failed"]
                assert failed["log_level"] == "error" and failed["field"] == "status.port"
                assert failed["port"] == taken and "in use" in failed["error"]
                await asyncio.wait_for(cam.wait_client(), 5)  # the gateway records on
                await cam.send("X")
                await wait_for(lambda: gw.binder_loop and gw.binder_loop.rejects, 5, "recorded")
                holder.close()
                assert await status_port(gw) == taken  # retried, and now it listens
                assert (await get(taken, "/healthz")).code == 200


async def test_a_non_loopback_address_is_a_logged_choice(tmp_path: Path, broker: Mosquitto) -> None:
    async with TcpScannerSim(terminator="crlf") as cam:
        with capture_logs() as logs:
            path = status_line(tmp_path, broker, cam.port, listen_host="0.0.0.0")
            async with running_gateway(path) as gw:
                port = await status_port(gw)
                assert (await get(port, "/healthz", host="line-pc-7.plant")).code == 200
        [exposed] = [e for e in logs if e["event"] == "status_page_exposed"]
        assert exposed["log_level"] == "warning" and exposed["host"] == "0.0.0.0"


async def test_a_reload_moves_or_stops_the_server(tmp_path: Path, broker: Mosquitto) -> None:
    async with TcpScannerSim(terminator="crlf") as cam:
        path = status_line(tmp_path, broker, cam.port)
        async with running_gateway(path) as gw:
            old = await status_port(gw)
            new = free_port()
            status_line(tmp_path, broker, cam.port, port=new)  # the same file, rewritten
            gw.request_reload()
            assert await wait_for(lambda: gw.status_server and gw.status_server.port == new, 10)
            assert (await get(new, "/healthz")).code == 200
            with pytest.raises(ConnectionRefusedError):
                await get(old, "/healthz")
            status_line(tmp_path, broker, cam.port, enabled=False)
            gw.request_reload()
            await wait_for(lambda: gw.status_server is None, 10, "server stopped")
            with pytest.raises(ConnectionRefusedError):
                await get(new, "/healthz")


# --- the page in a real browser ------------------------------------------------------------------


def chromium() -> str | None:
    for name in (os.environ.get("TRACEGATE_CHROMIUM"), "chromium", "chromium-browser"):
        if name and (found := shutil.which(name)):
            return found
    return None


async def test_the_page_in_chromium_shows_devices_and_work_order_and_updates_live(
    tmp_path: Path, broker: Mosquitto
) -> None:
    browser_path = chromium()
    if browser_path is None:
        pytest.skip("no chromium found (Debian package chromium; `make test-tools` installs it)")
    playwright = pytest.importorskip("playwright.async_api", reason="pip install playwright")
    gen = CodeGenerator(seed=8)
    async with (
        TcpScannerSim(terminator="crlf") as cam,
        running_gateway(status_line(tmp_path, broker, cam.port)) as gw,
    ):
        port = await status_port(gw)
        await asyncio.wait_for(cam.wait_client(), 5)
        for _ in range(3):
            await cam.send(gen.gs1_datamatrix())
        await cam.send(gen.gs1_datamatrix(faulty="check_digit"))
        async with playwright.async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=browser_path, args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(f"http://127.0.0.1:{port}/")
                devices = page.locator("#devices tbody")
                await devices.get_by_text("cam-1").wait_for(timeout=5000)
                await devices.get_by_text("connected").wait_for(timeout=5000)
                await page.locator("#orders tbody").get_by_text("WO-7").wait_for(timeout=5000)
                await page.locator("#rejects").get_by_text("bad_check_digit").wait_for(timeout=5000)
                # Live: a new read and a new work order appear without a reload.
                new = gen.gs1_datamatrix()
                await cam.send(new)
                await _command(gw, broker, "work-order", {"work_order": "WO-LIVE-2"})
                key = f"(01){new.fields['gtin']}(21){new.fields['serial']}"
                await page.locator("#events tbody").get_by_text(key).wait_for(timeout=5000)
                await page.locator("#orders tbody").get_by_text("WO-LIVE-2").wait_for(timeout=5000)
                assert await page.evaluate("performance.getEntriesByType('navigation').length") == 1
                assert not await page.locator("#banner").is_visible()
                shot = tmp_path / "status-page.png"
                await page.screenshot(path=str(shot), full_page=True)
                assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
                if os.environ.get("TRACEGATE_SCREENSHOT"):  # docs/img/status-page.png
                    shutil.copy(shot, os.environ["TRACEGATE_SCREENSHOT"])
                assert not errors, errors
            finally:
                await browser.close()
