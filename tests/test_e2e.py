"""End to end over real connections: scanner simulators -> gateway -> Mosquitto -> subscriber."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from simulators.broker import Mosquitto
from simulators.codes import CodeGenerator
from simulators.scanner import SerialScannerSim, TcpScannerSim
from tests.helpers import line_file, running_gateway, subscriber, wait_for

UUID_LEN = 36


def scanner_line(
    tmp_path: Path,
    broker: Mosquitto,
    cam_port: int,
    serial_path: str | None = None,
    **kw: Any,
) -> Path:
    devices: list[dict[str, Any]] = [
        {
            "id": "cam-1",
            "profile": "scanners/cognex-dataman-370",
            "host": "127.0.0.1",
            "port": cam_port,
        },
    ]
    stations: list[dict[str, Any]] = [
        {
            "id": "st10",
            "step": "assembly",
            "work_order": "WO-1",
            "identity": {"sources": ["cam-1"], "schemes": ["sgtin", "sscc"]},
        },
    ]
    if serial_path is not None:
        devices.append(
            {"id": "hand-1", "profile": "scanners/honeywell-granit-1981i", "port": serial_path}
        )
        stations.append(
            {
                "id": "st20",
                "identity": {
                    "sources": ["hand-1"],
                    "schemes": ["sgtin", "plain"],
                    "plain_pattern": "^SN[0-9]{10}$",
                },
            }
        )
    return line_file(tmp_path, broker, devices=devices, stations=stations, **kw)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_scans_arrive_as_identified_events_with_parsed_identity(
    tmp_path: Path, broker: Mosquitto, protocol: str
) -> None:
    gen = CodeGenerator(seed=11)
    codes = [gen.gs1_datamatrix() for _ in range(5)]
    handheld = [gen.plain(), gen.digital_link()]
    async with (
        TcpScannerSim(terminator="crlf", noread_text="NoRead") as cam,
        SerialScannerSim(link=tmp_path / "ttyACM0", terminator="cr") as hand,
    ):
        path = scanner_line(
            tmp_path, broker, cam.port, str(tmp_path / "ttyACM0"), mqtt={"protocol": protocol}
        )
        with subscriber(broker, "tracegate/#") as sub:
            async with running_gateway(path):
                await asyncio.wait_for(cam.wait_client(), 5)
                await asyncio.wait_for(hand.wait_client(), 5)
                for c in codes:
                    await cam.send(c)
                await cam.send_noread()
                for c in handheld:
                    await hand.send(c)
                await wait_for(lambda: len(sub.events("identified")) == 7, 10, "7 identified")
                await wait_for(lambda: sub.events("noread"), 5, "noread")
            status = sub.last_retained("tracegate/test-site/gateway/gw-test/status")

    by_value = {e["ids"][0]["value"]: e for e in sub.events("identified")}
    for c in codes:
        key = f"(01){c.fields['gtin']}(21){c.fields['serial']}"
        ev = by_value[key]
        ident = ev["ids"][0]
        assert ident["gtin"] == c.fields["gtin"] and ident["serial"] == c.fields["serial"]
        assert ident["lot"] == c.fields["lot"]
        yy, mm, dd = c.fields["expiry"][:2], c.fields["expiry"][2:4], c.fields["expiry"][4:]
        assert ident["expiry"] == f"20{yy}-{mm}-{dd}"
        assert ident["raw"] == c.text(True) and ident["source"] == "cam-1"
        assert ident["scheme"] == "sgtin" and ident["symbology"] == "gs1_datamatrix"
        assert ev["station"] == "st10" and ev["step"] == "assembly"
        assert ev["work_order"] == "WO-1" and ev["gateway"] == "gw-test"
        assert ev["line"] == "line-1" and ev["schema"] == "tracegate.event/1"
        assert len(ev["event_id"]) == UUID_LEN and len(ev["config"]) == 12
        assert ev["time"].endswith("Z") and ev["recorded"] >= ev["time"]
    plain = by_value[handheld[0].data]
    assert plain["station"] == "st20" and plain["ids"][0]["scheme"] == "plain"
    seqs = [e["seq"] for e in sub.events()]
    assert sorted(seqs) == list(range(1, len(seqs) + 1))  # device states included, no gap
    topics = {t for t, _, _ in sub.snapshot()}
    assert "tracegate/test-site/line-1/st10/identified" in topics
    assert "tracegate/test-site/line-1/st10/noread" in topics
    assert "tracegate/test-site/line-1/_gateway/device.state" in topics
    assert status == b"offline"  # the clean stop says so


async def test_bad_input_is_rejected_or_warned_and_the_daemon_keeps_running(
    tmp_path: Path, broker: Mosquitto
) -> None:
    gen = CodeGenerator(seed=5)
    async with (
        TcpScannerSim(terminator="crlf") as cam,
        SerialScannerSim(link=tmp_path / "ttyS9", terminator="cr") as hand,
    ):
        path = scanner_line(tmp_path, broker, cam.port, str(tmp_path / "ttyS9"))
        with subscriber(broker, "tracegate/#") as sub, capture_logs() as logs:
            async with running_gateway(path):
                await asyncio.wait_for(cam.wait_client(), 5)
                await asyncio.wait_for(hand.wait_client(), 5)
                await cam.send(gen.gs1_datamatrix(faulty="check_digit"))
                await cam.send(gen.gs1_datamatrix(faulty="malformed_ai"))
                await cam.send(gen.gs1_datamatrix(faulty="bad_date"))
                await cam.send("]d2" + "garbage that is printable")
                for _ in range(20):
                    await cam.send_garbage()
                await cam.send_too_long(8000)
                await cam.send_raw(bytes(range(256)) * 4 + b"\r\n", "garbage")
                for _ in range(5):
                    await hand.send_garbage()
                await hand.send_raw(b"\x00\xff\xfe" * 500 + b"\r", "garbage")
                good = gen.gs1_datamatrix()
                await cam.send(good)
                await hand.send(gen.plain())
                await wait_for(lambda: len(sub.events("identified")) == 2, 10, "2 good scans")
                await wait_for(lambda: len(sub.events("rejected")) == 4, 10, "4 rejected")

    reasons = sorted(e["reason"] for e in sub.events("rejected"))
    assert reasons == ["bad_check_digit", "invalid_date", "invalid_gs1", "invalid_gs1"]
    for e in sub.events("rejected"):
        assert e["detail"]["message"] and e["detail"]["source"] == "cam-1"
        assert e["station"] == "st10" and e["ids"] == []
    noise = [log for log in logs if log["event"].startswith("scanner_garbage_received")]
    warnings = [log for log in noise if log["log_level"] == "warning"]
    assert {log["device"] for log in warnings} == {"cam-1", "hand-1"}
    assert len(warnings) == 2  # rate-limited: one warning per device, repeats at debug
    assert any(log["event"] == "scanner_frame_too_long" for log in logs)


async def test_dead_scanner_never_stops_the_other(tmp_path: Path, broker: Mosquitto) -> None:
    gen = CodeGenerator(seed=9)
    async with (
        TcpScannerSim(terminator="crlf") as cam,
        SerialScannerSim(link=tmp_path / "ttyACM1", terminator="cr") as hand,
    ):
        path = scanner_line(tmp_path, broker, cam.port, str(tmp_path / "ttyACM1"))
        with subscriber(broker, "tracegate/#") as sub:
            async with running_gateway(path):
                await asyncio.wait_for(cam.wait_client(), 5)
                await asyncio.wait_for(hand.wait_client(), 5)
                await cam.unplug()  # the fixed scanner reboots ...

                def states() -> list[tuple[str, str]]:
                    return [
                        (e["detail"]["device"], e["detail"]["state"])
                        for e in sub.events("device.state")
                    ]

                await wait_for(lambda: ("cam-1", "disconnected") in states(), 10, "cam down")
                for _ in range(5):  # ... while the handheld keeps working
                    await hand.send(gen.plain())
                await wait_for(lambda: len(sub.events("identified")) == 5, 10, "handheld scans")
                await cam.replug()
                await asyncio.wait_for(cam.wait_client(), 10)
                await cam.send(gen.gs1_datamatrix())
                await wait_for(lambda: len(sub.events("identified")) == 6, 10, "cam back")
            dev_status = sub.last_retained(
                "tracegate/test-site/gateway/gw-test/status/devices/cam-1"
            )
    assert states().count(("cam-1", "connected")) == 2
    assert dev_status is not None and json.loads(dev_status)["state"] == "connected"
