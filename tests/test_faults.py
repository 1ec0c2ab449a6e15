"""Failure is part of the feature: broker outages, SIGKILL of the gateway, a full outbox.

Every test reconstructs what the broker delivered and compares it with what was sent or
committed: nothing committed is lost, duplicates only ever carry the same event_id, and the order
of each station is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from simulators.broker import Mosquitto
from simulators.codes import CodeGenerator
from simulators.scanner import SerialScannerSim, TcpScannerSim
from tests.helpers import (
    GatewayProcess,
    cam_line,
    line_file,
    running_gateway,
    subscriber,
    wait_for,
)
from tests.test_e2e import scanner_line

STATUS = "tracegate/test-site/gateway/gw-test/status"


def dedupe(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """First arrival of each event_id; asserts that every duplicate is byte-identical."""
    first: dict[str, dict[str, Any]] = {}
    for e in events:
        seen = first.setdefault(e["event_id"], e)
        assert seen == e, f"event {e['event_id']} re-sent with different content"
    return first


def assert_station_order(events: list[dict[str, Any]]) -> None:
    """Per station, first arrivals come in seq order (and seq never repeats)."""
    seen: set[str] = set()
    last: dict[str | None, int] = defaultdict(int)
    for e in events:
        if e["event_id"] in seen:
            continue
        seen.add(e["event_id"])
        assert e["seq"] > last[e["station"]], f"station {e['station']} out of order at {e}"
        last[e["station"]] = e["seq"]


def committed_seq(journal: Path) -> int:
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as c:
        return int(c.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0]) - 1


@pytest.mark.slow
async def test_broker_outage_of_10_s_in_the_middle_of_2000_scans(
    tmp_path: Path, broker: Mosquitto
) -> None:
    gen = CodeGenerator(seed=2000)
    cam_codes = [gen.gs1_datamatrix() for _ in range(1200)]
    hand_codes = [gen.plain() for _ in range(800)]
    async with (
        TcpScannerSim(terminator="crlf") as cam,
        SerialScannerSim(link=tmp_path / "ttyACM0", terminator="cr") as hand,
    ):
        path = scanner_line(tmp_path, broker, cam.port, str(tmp_path / "ttyACM0"))
        with subscriber(broker, "tracegate/#") as sub:
            async with running_gateway(path) as gw:
                await asyncio.wait_for(cam.wait_client(), 5)
                await asyncio.wait_for(hand.wait_client(), 5)

                async def play(sim: Any, codes: list[Any], rate: float) -> None:
                    for i, c in enumerate(codes):
                        await sim.send(c)
                        if i % 10 == 9:
                            await asyncio.sleep(10 / rate)

                async def outage() -> None:
                    await wait_for(lambda: len(sub.events("identified")) >= 500, 20, "500 in")
                    broker.stop()
                    await asyncio.sleep(10)  # the outage itself is the scenario, not a sync
                    assert not gw.forwarder or not gw.forwarder.stats.connected
                    broker.start()

                async with asyncio.TaskGroup() as tg:
                    tg.create_task(play(cam, cam_codes, 100))
                    tg.create_task(play(hand, hand_codes, 66))
                    tg.create_task(outage())
                await wait_for(lambda: len(dedupe(sub.events("identified"))) == 2000, 60, "all")
                journal = gw.journal
                assert journal is not None
                await wait_for(lambda: journal.stats().rows == 0, 5, "outbox emptied")

    events = sub.events()
    unique = dedupe(events)
    keys = {e["ids"][0]["value"] for e in unique.values() if e["type"] == "identified"}
    expected = {f"(01){c.fields['gtin']}(21){c.fields['serial']}" for c in cam_codes}
    expected |= {c.data for c in hand_codes}
    assert keys == expected
    assert_station_order(events)
    seqs = sorted(e["seq"] for e in unique.values())
    assert seqs == list(range(1, len(seqs) + 1))


@pytest.mark.slow
async def test_sigkill_20_times_loses_no_committed_event_and_never_reuses_seq(
    tmp_path: Path, broker: Mosquitto
) -> None:
    rng = random.Random(20)
    gen = CodeGenerator(seed=77)
    journal = tmp_path / "journal.db"
    async with TcpScannerSim(terminator="crlf") as cam:
        path = scanner_line(tmp_path, broker, cam.port)
        stop_feed = asyncio.Event()

        async def feed() -> None:
            while not stop_feed.is_set():
                if cam.client_connected:
                    await cam.send(gen.gs1_datamatrix())
                await asyncio.sleep(0.004)  # a steady 250 scans/s, the scenario's pace

        gw = GatewayProcess(path, tmp_path / "gateway.log")
        high_water: list[int] = []
        with subscriber(broker, "tracegate/#") as sub:
            async with asyncio.TaskGroup() as tg:
                feeder = tg.create_task(feed())
                try:
                    for _ in range(20):
                        gw.start()
                        await wait_for(lambda: cam.client_connected, 20, "gateway connected")
                        await asyncio.sleep(rng.uniform(0.05, 0.8))  # a random moment
                        gw.kill()
                        high_water.append(committed_seq(journal))
                        # The scanner must see the killed gateway's connection go, or the next
                        # `client_connected` is still the dead one's and the next kill strikes
                        # before the new gateway has connected.
                        await asyncio.wait_for(cam.wait_no_client(), 10)
                        if len(high_water) == 1:  # the broker says it for a killed gateway
                            await wait_for(lambda: sub.last_retained(STATUS) == b"offline", 10)
                    gw.start()
                    await wait_for(lambda: cam.client_connected, 20, "gateway connected")
                    await asyncio.sleep(0.3)
                    stop_feed.set()
                    await feeder
                    final = await wait_for(
                        lambda: _delivered_all(sub, journal), 30, "everything delivered"
                    )
                    assert gw.terminate() == 0
                finally:
                    stop_feed.set()
                    gw.cleanup()

    events = sub.events()
    unique = dedupe(events)
    by_seq: dict[int, str] = {}
    for e in unique.values():
        assert by_seq.setdefault(e["seq"], e["event_id"]) == e["event_id"], "seq reused"
    assert sorted(by_seq) == list(range(1, final + 1)), "a committed event is missing"
    assert all(h <= final for h in high_water) and high_water == sorted(high_water)
    assert len([h for h in high_water if h > 0]) >= 15  # kills really hit a working gateway
    assert_station_order(events)


def _delivered_all(sub: Any, journal: Path) -> int | None:
    top = committed_seq(journal)
    got = {e["seq"] for e in sub.events()}
    return top if top > 0 and got >= set(range(1, top + 1)) else None


async def test_full_outbox_holds_new_events_records_the_gap_and_recovers(
    tmp_path: Path, broker: Mosquitto
) -> None:
    gen = CodeGenerator(seed=3)
    codes = [gen.gs1_datamatrix() for _ in range(150)]
    async with TcpScannerSim(terminator="crlf") as cam:
        path = scanner_line(
            tmp_path, broker, cam.port, journal={"max_rows": 100}, supervision={"queue_size": 10}
        )
        with subscriber(broker, "tracegate/#") as sub, capture_logs() as logs:
            async with running_gateway(path) as gw:
                await asyncio.wait_for(cam.wait_client(), 5)
                await wait_for(lambda: sub.events("device.state"), 5, "gateway online")
                broker.stop()
                for c in codes:
                    await cam.send(c)
                    await asyncio.sleep(0.002)  # a fast line, not a burst the queue must absorb
                assert gw.journal is not None
                await wait_for(lambda: gw.journal and gw.journal.full, 10, "outbox full")
                await wait_for(
                    lambda: any(lg["event"] == "observation_dropped" for lg in logs),
                    10,
                    "drops counted",
                )
                line = gw.status_line()
                broker.start()
                await wait_for(lambda: sub.events("gap"), 20, "gap event")
                await wait_for(
                    lambda: len(sub.events("identified")) + _lost(sub) >= 150, 20, "accounted"
                )
                await wait_for(
                    lambda: any(lg["event"] == "outbox_recovered" for lg in logs), 10, "recovered"
                )

    assert "FULL" in line
    identified = len(dedupe(sub.events("identified")))
    assert identified + _lost(sub) == 150  # every scan is either delivered or counted lost
    assert _lost(sub) > 0
    gap = sub.events("gap")[0]
    assert gap["reason"] == "queue_full" and gap["detail"]["device"] == "cam-1"
    states = [e["detail"]["state"] for e in sub.events("outbox.state")]
    assert states == ["full", "ok"]
    assert any(lg["event"] == "outbox_full" and lg["log_level"] == "warning" for lg in logs)


def _lost(sub: Any) -> int:
    return sum(e["detail"]["lost"] for e in dedupe(sub.events("gap")).values())


async def test_sigterm_stops_cleanly_and_fast_and_loses_nothing(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Events committed but not yet delivered at SIGTERM (the broker is down) go out after the
    restart; the stop itself is clean (exit 0) and takes less than the 2 s systemd allows."""
    gen = CodeGenerator(seed=15)
    journal = tmp_path / "journal.db"
    async with TcpScannerSim(terminator="crlf") as cam:
        path = scanner_line(tmp_path, broker, cam.port)
        gw = GatewayProcess(path, tmp_path / "gateway.log")
        with subscriber(broker, "tracegate/#") as sub:
            try:
                gw.start()
                await wait_for(lambda: cam.client_connected, 20, "gateway connected")
                broker.stop()
                for _ in range(300):
                    await cam.send(gen.gs1_datamatrix())
                await wait_for(lambda: committed_seq(journal) >= 301, 10, "300 scans committed")
                loop = asyncio.get_running_loop()
                t0 = loop.time()
                code = await asyncio.to_thread(gw.terminate)
                stop_s = loop.time() - t0
                assert code == 0
                assert stop_s < 2.0, f"stopping took {stop_s:.2f} s"
                broker.start()
                gw.start()
                await wait_for(lambda: _delivered_all(sub, journal), 20, "all delivered")
                assert gw.terminate() == 0
            finally:
                gw.cleanup()
    logs = [lg["event"] for lg in gw.logs()]
    assert "gateway_stopped" in logs and "gateway_stopping" in logs
    assert len(dedupe(sub.events("identified"))) == 300


async def test_reload_restarts_only_changed_devices_and_refuses_a_bad_file(
    tmp_path: Path, broker: Mosquitto
) -> None:
    gen = CodeGenerator(seed=21)
    async with (
        TcpScannerSim(terminator="crlf") as cam1,
        TcpScannerSim(terminator="crlf") as cam2,
        TcpScannerSim(terminator="crlf") as cam2_new,
    ):

        def write(cam2_port: int) -> Path:
            return cam_line(tmp_path, broker, cam1.port, cam2_port)

        path = write(cam2.port)
        with subscriber(broker, "tracegate/#") as sub, capture_logs() as logs:
            async with running_gateway(path) as gw:
                await asyncio.wait_for(cam1.wait_client(), 5)
                await asyncio.wait_for(cam2.wait_client(), 5)
                old_hash = gw.loaded.config_hash

                path.write_text(path.read_text().replace("line: line-1", "line: [broken"))
                gw.request_reload()
                await wait_for(
                    lambda: any(lg["event"] == "config_reload_refused" for lg in logs), 5, "refused"
                )
                await cam1.send(gen.gs1_datamatrix())
                await wait_for(lambda: len(sub.events("identified")) == 1, 5, "still running")

                write(cam2_new.port)
                gw.request_reload()
                await asyncio.wait_for(cam2_new.wait_client(), 5)
                await wait_for(
                    lambda: any(lg["event"] == "config_reloaded" for lg in logs), 5, "reloaded"
                )
                await cam1.send(gen.gs1_datamatrix())
                await cam2_new.send(gen.gs1_datamatrix())
                await wait_for(lambda: len(sub.events("identified")) == 3, 5, "after reload")
                assert gw.loaded.config_hash != old_hash

    reloaded = next(lg for lg in logs if lg["event"] == "config_reloaded")
    assert reloaded["restarted"] == ["cam-2"]
    assert reloaded["started"] == [] and reloaded["stopped"] == []
    refused = next(lg for lg in logs if lg["event"] == "config_reload_refused")
    assert any("invalid YAML" in p for p in refused["problems"])
    connects = [lg for lg in logs if lg["event"] == "device_connected"]
    assert [lg["device"] for lg in connects].count("cam-1") == 1  # never restarted
    configs = {e["config"] for e in sub.events("identified")}
    assert len(configs) == 2  # events carry the hash of the configuration they were made under
    assert json.loads(json.dumps(reloaded))  # the log event is plain JSON


async def test_sigterm_is_prompt_even_while_the_broker_connect_hangs(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """A broker host that drops SYNs (a firewall, a dead host): the TCP connect hangs for its
    whole timeout. SIGTERM must still stop the gateway within the 2 s systemd allows. The hang is
    made for real on loopback: a listener that never accepts, its accept queue filled."""
    import socket

    from simulators.broker import free_port

    port = free_port()
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", port))
    blackhole.listen(0)
    fillers = []
    for _ in range(3):  # the kernel accepts a backlog of about (listen + 1); then SYNs drop
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        fillers.append(s)
    try:
        path = line_file(
            tmp_path,
            broker,
            devices=[],
            stations=[],
            mqtt={"port": port, "connect_timeout_s": 30},  # the blackhole, not the broker
        )
        gw = GatewayProcess(path, tmp_path / "gateway.log")
        try:
            gw.start()
            await wait_for(
                lambda: any(lg.get("event") == "gateway_ready" for lg in gw.logs()), 20, "ready"
            )
            await asyncio.sleep(0.5)  # well inside the hanging connect
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            code = await asyncio.to_thread(gw.terminate)
            assert code == 0
            assert loop.time() - t0 < 2.0
        finally:
            gw.cleanup()
    finally:
        for s in fillers:
            s.close()
        blackhole.close()
