"""RFID portals end to end over real TCP: the LLRP reader simulator -> the LLRP adapter ->
portal pass building -> journal -> Mosquitto -> a test subscriber, compared with the reader's
own ground truth. And the reader's failures: killed, restarted, silent, sending garbage,
holding a stale session, misconfigured; bursts and floods."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from gateway.identifiers import decode_epc
from simulators.broker import Mosquitto
from simulators.codes import CodeGenerator, gs1_check_digit
from simulators.epc import encode_sgtin96, encode_sscc96, sgtin96_series
from simulators.llrp import LlrpReaderSim, TagPass
from simulators.plc_modbus import ModbusPlcSim
from simulators.scanner import TcpScannerSim
from tests.helpers import Subscriber, line_file, running_gateway, subscriber, wait_for

QUIET_MS = 300


GTIN = "0401234512345" + gs1_check_digit("0401234512345")  # company prefix 4012345


def sgtins(n: int, seed: int = 0) -> list[str]:
    """`n` SGTIN-96 EPCs of units of GTIN, distinct random serials per seed."""
    return sgtin96_series(GTIN, 7, 1, n, seed=seed)


def ssccs(n: int) -> list[str]:
    """`n` SSCC-96 EPCs of pallets of company prefix 4012345."""
    bodies = [f"0{4012345}{k:09d}" for k in range(n)]
    return [encode_sscc96(b + gs1_check_digit(b), 7) for b in bodies]


def reader_line(
    tmp_path: Path,
    broker: Mosquitto,
    port: int,
    *,
    reader: dict[str, Any] | None = None,
    portal: dict[str, Any] | None = None,
    station: dict[str, Any] | None = None,
    devices: tuple[dict[str, Any], ...] = (),
    stations: tuple[dict[str, Any], ...] = (),
    **kw: Any,
) -> Path:
    return line_file(
        tmp_path,
        broker,
        devices=[
            {
                "id": "dock-reader",
                "profile": "readers/impinj-r700",
                "host": "127.0.0.1",
                "port": port,
                "keepalive_s": 0.5,
                "connect_timeout_s": 3,
                **(reader or {}),
            },
            *devices,
        ],
        stations=[
            {
                "id": "dock-1",
                "step": "receiving",
                "work_order": "WO-7",
                "portal": {
                    "device": "dock-reader",
                    "antennas": [1, 2],
                    "quiet_time_ms": QUIET_MS,
                    **(portal or {}),
                },
                **(station or {}),
            },
            *stations,
        ],
        **kw,
    )


def passes_of(sub: Subscriber) -> dict[str, list[dict[str, Any]]]:
    """Identified events of the portal, de-duplicated by event_id, by EPC."""
    out: dict[str, list[dict[str, Any]]] = {}
    for e in {e["event_id"]: e for e in sub.events("identified")}.values():
        if e["station"] == "dock-1":
            out.setdefault(e["ids"][0]["raw"], []).append(e)
    return out


def states(sub: Subscriber, device: str = "dock-reader") -> list[dict[str, Any]]:
    return [e["detail"] for e in sub.events("device.state") if e["detail"]["device"] == device]


def connects(sub: Subscriber) -> int:
    return sum(1 for s in states(sub) if s["state"] == "connected")


def drops(sub: Subscriber) -> int:
    return sum(1 for s in states(sub) if s["state"] == "disconnected")


async def test_every_tag_pass_arrives_once_with_direction_antennas_and_identity(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Twenty tags through a two-antenna dock door, in and out, with a fifth of the reads
    missed: twenty passes, each with the tag's decoded identity, its direction and antennas."""
    epcs = sgtins(20, seed=1)
    rng = random.Random(2)
    plan = [
        TagPass(
            epc=epc,
            direction="in" if i % 2 == 0 else "out",
            antennas=(1, 2),
            start_s=0.15 * i,
            duration_s=rng.uniform(0.6, 1.2),
        )
        for i, epc in enumerate(epcs)
    ]
    async with LlrpReaderSim(model="impinj-r700", seed=3) as sim:
        path = reader_line(tmp_path, broker, sim.port)
        with subscriber(broker, "tracegate/#") as sub:
            async with running_gateway(path):
                await sim.wait_inventorying(timeout=10)
                truth = await sim.run_passes(plan, miss_share=0.2)
                await wait_for(lambda: len(passes_of(sub)) >= 20, 10, "20 passes")
    got = passes_of(sub)
    assert sorted(got) == sorted(epcs)
    by_epc = {t.epc: t for t in truth}
    for epc, [ev] in got.items():  # exactly one pass per tag
        tp, [ident] = ev["detail"]["pass"], ev["ids"]
        decoded = decode_epc(epc)
        assert ident["scheme"] == "sgtin" and ident["value"] == decoded.key
        assert ident["gtin"] == decoded.attrs["gtin"] and ident["carrier"] == "rfid"
        assert ident["epc_uri"].startswith("urn:epc:id:sgtin:4012345.")
        assert ev["step"] == "receiving" and ev["work_order"] == "WO-7"
        real = by_epc[epc]
        assert tp["direction"] == real.direction and tp["confidence"] >= 0.5
        assert tp["antennas"] == ([1, 2] if real.direction == "in" else [2, 1])
        assert tp["reads"] == real.reads_delivered
        assert tp["closed_by"] == "quiet"


async def test_a_scan_and_a_tag_of_the_same_unit_share_the_key(
    tmp_path: Path, broker: Mosquitto
) -> None:
    gtin = GTIN
    epc = encode_sgtin96(gtin, 6789, 7)
    async with (
        LlrpReaderSim(model="impinj-r700", seed=4) as sim,
        TcpScannerSim(terminator="crlf") as cam,
    ):
        path = reader_line(
            tmp_path,
            broker,
            sim.port,
            devices=(
                {
                    "id": "cam-1",
                    "profile": "scanners/cognex-dataman-370",
                    "host": "127.0.0.1",
                    "port": cam.port,
                },
            ),
            stations=({"id": "st10", "identity": {"sources": ["cam-1"]}},),
        )
        with subscriber(broker, "tracegate/#") as sub:
            async with running_gateway(path):
                await sim.wait_inventorying(timeout=10)
                await cam.wait_client()
                await cam.send(f"]d201{gtin}216789")
                await sim.run_passes([TagPass(epc, "in", (1, 2), 0.0, 0.5)], miss_share=0.0)
                await wait_for(lambda: len(sub.events("identified")) >= 2, 10, "both")
    keys = {e["station"]: e["ids"][0]["value"] for e in sub.events("identified")}
    assert keys["st10"] == keys["dock-1"] == f"(01){gtin}(21)6789"


async def test_reader_killed_restarted_silent_or_garbling_recovers_and_the_scanner_goes_on(
    tmp_path: Path, broker: Mosquitto
) -> None:
    gen = CodeGenerator(seed=5)
    async with (
        LlrpReaderSim(model="impinj-speedway-r420", seed=6) as sim,
        TcpScannerSim(terminator="crlf") as cam,
    ):
        path = reader_line(
            tmp_path,
            broker,
            sim.port,
            reader={"profile": "readers/impinj-speedway-r420"},
            devices=(
                {
                    "id": "cam-1",
                    "profile": "scanners/cognex-dataman-370",
                    "host": "127.0.0.1",
                    "port": cam.port,
                },
            ),
            stations=({"id": "st10", "identity": {"sources": ["cam-1"]}},),
        )
        epcs = iter(sgtins(12, seed=7))
        scans = 0

        async def pass_and_scan() -> None:
            nonlocal scans
            await sim.wait_inventorying(timeout=15)
            await sim.run_passes([TagPass(next(epcs), "in", (1, 2), 0.0, 0.4)], miss_share=0.2)
            await cam.send(gen.gs1_datamatrix())
            scans += 1

        faults: list[tuple[str, Callable[[], object]]] = [
            ("killed", sim.drop_connection),
            ("restarted", sim.restart),
            ("silent", lambda: setattr(sim, "silent", True)),
            ("garbage", sim.send_malformed),
        ]
        with subscriber(broker, "tracegate/#") as sub:
            async with running_gateway(path):
                await cam.wait_client()
                await pass_and_scan()
                for n, (name, fault) in enumerate(faults, start=1):
                    result = fault()
                    if asyncio.iscoroutine(result):
                        await result
                    # While the reader is away, the scanner's codes keep being recorded.
                    await cam.send(gen.gs1_datamatrix())
                    scans += 1
                    await wait_for(partial(lambda k: drops(sub) >= k, n), 15, f"{name} noticed")
                    sim.silent = False
                    await wait_for(partial(lambda k: connects(sub) > k, n), 15, f"back: {name}")
                    await pass_and_scan()
                await wait_for(lambda: len(passes_of(sub)) >= 5, 10, "every pass")
                await wait_for(
                    lambda: (
                        len([e for e in sub.events("identified") if e["station"] == "st10"])
                        >= scans
                    ),
                    10,
                    "every scan",
                )
        details = [s["detail"] for s in states(sub) if s["state"] == "disconnected"]
    assert len(passes_of(sub)) == 5 and all(len(v) == 1 for v in passes_of(sub).values())
    assert any("sent nothing for" in d for d in details), details  # the keepalive watchdog
    assert any("malformed" in d for d in details), details
    # One owner of reconnection: no storm of attempts while the reader was away.
    assert sim.connection_attempts <= connects(sub) + 8


async def test_a_stale_session_is_named_and_the_gateway_gets_in_once_it_is_dropped(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with LlrpReaderSim(model="zebra-fx9600", seed=8) as sim:
        path = reader_line(tmp_path, broker, sim.port, reader={"profile": "readers/zebra-fx9600"})
        with subscriber(broker, "tracegate/#") as sub:
            async with running_gateway(path):
                await sim.wait_inventorying(timeout=10)
                sim.stale_s = 1.5  # the reader keeps the dead session this long
                sim.drop_connection()
                await wait_for(lambda: connects(sub) >= 2, 20, "connected again")
                await sim.run_passes([TagPass(sgtins(1)[0], "out", (1, 2), 0.0, 0.4)], 0.0)
                await wait_for(lambda: len(passes_of(sub)) == 1, 10, "a pass")
    refused = [s["detail"] for s in states(sub) if s["state"] == "disconnected"]
    assert any("a client-initiated connection already exists" in d for d in refused), refused


async def test_a_mode_the_reader_lacks_fails_once_with_the_modes_it_has(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with LlrpReaderSim(model="impinj-r700", seed=9) as sim:
        path = reader_line(tmp_path, broker, sim.port, reader={"mode_index": 4242})
        with subscriber(broker, "tracegate/#") as sub:
            async with running_gateway(path):
                await wait_for(
                    lambda: any(s["state"] == "failed" for s in states(sub)), 10, "failed"
                )
                [failed] = [s for s in states(sub) if s["state"] == "failed"]
    assert "has no RF mode 4242; its modes: " in failed["detail"]
    assert sim.connection_attempts == 1  # a configuration error is not retried


async def test_a_burst_of_500_tags_gives_500_passes_and_nothing_is_lost(
    tmp_path: Path, broker: Mosquitto
) -> None:
    pallet = ssccs(500)
    async with LlrpReaderSim(model="zebra-fx9600", seed=10) as sim:
        path = reader_line(
            tmp_path,
            broker,
            sim.port,
            reader={"profile": "readers/zebra-fx9600", "report_every_n_tags": 50},
            # 500 tags share the reader's singulations: each is read only every few hundred
            # ms, so the pass needs a dock door's quiet time, not a conveyor's.
            portal={"schemes": ["sscc"], "direction": "none", "quiet_time_ms": 1500},
        )
        with subscriber(broker, "tracegate/#") as sub:
            async with running_gateway(path) as gw:
                await sim.wait_inventorying(timeout=10)
                truth = await sim.burst(pallet, antennas=(1, 2), duration_s=1.0)
                await wait_for(lambda: len(passes_of(sub)) >= 500, 20, "500 passes")
                assert gw.binder_loop is not None
                assert gw.binder_loop.queue.total_dropped == 0
                adapter: Any = gw._adapters["dock-reader"]
                assert adapter.stats.reads == sim.reports_sent  # no report dropped
    assert min(t.reads_delivered for t in truth) >= 2  # every tag was really there
    got = passes_of(sub)
    assert sorted(got) == sorted(pallet) and all(len(v) == 1 for v in got.values())
    assert {e["ids"][0]["scheme"] for v in got.values() for e in v} == {"sscc"}
    assert not sub.events("gap")


async def test_a_sustained_flood_is_ingested_whole_with_bounded_memory(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """20,000 reports a second for 2 s from 200 tags: every report reaches the pass builder,
    none is dropped, and the open passes never exceed the tags in the field."""
    tags = sgtins(200, seed=11)
    async with LlrpReaderSim(model="impinj-r700", seed=12) as sim:
        path = reader_line(tmp_path, broker, sim.port, reader={"report_every_n_tags": 100})
        async with running_gateway(path) as gw:
            await sim.wait_inventorying(timeout=10)
            adapter: Any = gw._adapters["dock-reader"]
            sent = await sim.flood(reads_per_s=20_000, duration_s=2.0, epcs=tags)
            await wait_for(lambda: adapter.stats.reads >= sent, 20, "all reports read")
            assert gw.binder_loop is not None
            portal = gw.binder_loop.binder._portal_of["dock-1"]
            assert len(portal.builder.open) <= len(tags)
            assert gw.binder_loop.queue.total_dropped == 0
    assert adapter.stats.reads == sent


async def test_outputs_pulse_a_gpo_after_the_pass_is_committed(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with LlrpReaderSim(model="impinj-r700", seed=13) as sim:
        path = reader_line(
            tmp_path,
            broker,
            sim.port,
            station={
                "outputs": [
                    {
                        "events": ["identified"],
                        "direction": "in",
                        "device": "dock-reader",
                        "signal": "gpo2",
                        "pulse_ms": 100,
                    },
                ]
            },
        )
        with subscriber(broker, "tracegate/#") as sub:
            async with running_gateway(path):
                await sim.wait_inventorying(timeout=10)
                epc_in, epc_out = sgtins(2, seed=14)
                await sim.run_passes([TagPass(epc_out, "out", (1, 2), 0.0, 0.5)], 0.0)
                await wait_for(lambda: len(passes_of(sub)) == 1, 10, "out pass")
                await sim.run_passes([TagPass(epc_in, "in", (1, 2), 0.0, 0.5)], 0.0)
                await wait_for(
                    lambda: [s for _, p, s in sim.gpo_history if p == 2] == [True, False],
                    10,
                    "pulse on gpo2",
                )
    assert sim.gpo_state.get(2) is False  # off again; the `out` pass fired nothing


async def test_a_gpi_light_barrier_opens_the_read_window(tmp_path: Path, broker: Mosquitto) -> None:
    async with LlrpReaderSim(model="impinj-r700", seed=15) as sim:
        path = reader_line(
            tmp_path,
            broker,
            sim.port,
            reader={"inventory": "gpi", "gpi_trigger": {"port": 1, "active": True}},
        )
        with subscriber(broker, "tracegate/#") as sub:
            async with running_gateway(path):
                await wait_for(lambda: connects(sub) == 1, 10, "connected")
                early, late = sgtins(2, seed=16)
                await sim.run_passes([TagPass(early, "in", (1, 2), 0.0, 0.4)], 0.0)
                await sim.set_gpi(1, True)  # the barrier: the reader reads from now on
                await sim.wait_inventorying(timeout=10)
                await sim.run_passes([TagPass(late, "in", (1, 2), 0.0, 0.4)], 0.0)
                await sim.set_gpi(1, False)
                await wait_for(lambda: len(passes_of(sub)) == 1, 10, "the window's pass")
    assert list(passes_of(sub)) == [late]  # the tag before the barrier was never reported


async def test_a_plc_signal_opens_the_read_window_and_survives_a_reader_reconnect(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with (
        LlrpReaderSim(model="impinj-r700", seed=17) as sim,
        ModbusPlcSim("plcs/generic-modbus-tcp") as plc,
    ):
        path = reader_line(
            tmp_path,
            broker,
            sim.port,
            reader={"inventory": "commanded"},
            station={"read_window": {"device": "press", "signal": "trigger"}},
            devices=(
                {
                    "id": "press",
                    "profile": "plcs/generic-modbus-tcp",
                    "host": "127.0.0.1",
                    "port": plc.port,
                    "poll_groups": {"handshake": {"period_ms": 20}},
                },
            ),
        )
        with subscriber(broker, "tracegate/#") as sub:
            async with running_gateway(path):
                await wait_for(lambda: connects(sub) == 1, 10, "reader connected")
                plc.memory(1).write("trigger", True)  # part present
                await sim.wait_inventorying(timeout=10)
                sim.drop_connection()  # the reader reboots while the part is there
                await wait_for(lambda: connects(sub) == 2, 15, "reader back")
                await sim.wait_inventorying(timeout=10)  # reopened by itself
                tag = sgtins(1, seed=18)[0]
                await sim.run_passes([TagPass(tag, "in", (1, 2), 0.0, 0.4)], 0.0)
                await wait_for(lambda: len(passes_of(sub)) == 1, 10, "pass")
                plc.memory(1).write("trigger", False)
                await wait_for(lambda: not sim.inventorying, 10, "window closed")


@pytest.mark.parametrize("garbage", [b"\x00" * 3 + b"\xff" * 40, bytes(range(256))])
async def test_garbage_on_the_wire_drops_the_session_never_the_daemon(
    tmp_path: Path, broker: Mosquitto, garbage: bytes
) -> None:
    async with LlrpReaderSim(model="impinj-r700", seed=19) as sim:
        path = reader_line(tmp_path, broker, sim.port)
        with subscriber(broker, "tracegate/#") as sub:
            async with running_gateway(path):
                await sim.wait_inventorying(timeout=10)
                await sim.send_garbage(garbage)
                await wait_for(lambda: connects(sub) >= 2, 15, "reconnected")
                await sim.wait_inventorying(timeout=10)
                await sim.run_passes([TagPass(sgtins(1)[0], "in", (1, 2), 0.0, 0.4)], 0.0)
                await wait_for(lambda: len(passes_of(sub)) == 1, 10, "a pass after garbage")
