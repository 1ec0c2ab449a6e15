"""The LLRP reader simulator's ROSpecs and tag reports, seen by a bare client: which antennas
report, start and stop triggers (periodic, N tags, GPI), transmit power, batches by N and the
flush of a trickle, bursts and floods, reports held for the client, the reader's clock."""

from __future__ import annotations

import asyncio
import struct

import pytest
from sllurp.llrp import LLRPMessage

from simulators import llrp_codec as codec
from simulators.llrp import LlrpReaderSim, TagPass
from simulators.llrp_codec import Msg, P
from tests.helpers_llrp import (
    EPC96,
    EPC96_B,
    EPC128,
    Client,
    event_of,
    get_config,
    inventory,
    is_connection_event,
    rospec,
    status_of,
)


async def test_reports_only_on_the_aispecs_antennas_with_rospec_events() -> None:
    async with LlrpReaderSim(seed=5) as sim, Client(sim.port) as c:
        await inventory(c, antennas=(1,), events=("ROSpecEvent",))
        start = await c.wait(
            lambda f: "ROSpecEvent" in (f.msg or {}).get("ReaderEventNotificationData", {})
        )
        assert event_of(start)["ROSpecEvent"]["EventType"] == "Start_of_ROSpec"
        (truth,) = await sim.run_passes([TagPass(EPC96, "in", (1, 2), duration_s=0.3)], 0.0)
        await c.wait(lambda f: len(c.tag_reports()) == truth.reads_delivered)
        assert set(truth.reads_sent) == {1}
        assert truth.not_delivered > 0  # antenna 2 is not in the AISpec
        assert {t["AntennaID"] for t in c.tag_reports()} == {1}
        assert status_of(await c.request("STOP_ROSPEC", ROSpecID=1)) == 0
        end = await c.wait(
            lambda f: (
                "ROSpecEvent" in (f.msg or {}).get("ReaderEventNotificationData", {})
                and event_of(f)["ROSpecEvent"]["EventType"] == "End_of_ROSpec"
            )
        )
        assert end.id != start.id
        after = await sim.stray(EPC96_B)
        assert after.not_delivered == 1 and after.reads_delivered == 0  # no active ROSpec


def _rospec_events(c: Client) -> list[str]:
    return [
        event_of(f)["ROSpecEvent"]["EventType"]
        for f in c.frames
        if f.type == Msg.READER_EVENT_NOTIFICATION and "ROSpecEvent" in event_of(f)
    ]


async def test_a_periodic_rospec_with_a_duration_runs_again_and_again() -> None:
    async with LlrpReaderSim(seed=26) as sim, Client(sim.port) as c:
        await inventory(c, start="Null", events=("ROSpecEvent",))
        spec = rospec(2)
        spec["ROBoundarySpec"] = {
            "ROSpecStartTrigger": {
                "ROSpecStartTriggerType": "Periodic",
                "PeriodicTriggerValue": {"Offset": 0, "Period": 60},
            },
            "ROSpecStopTrigger": {"ROSpecStopTriggerType": "Duration", "DurationTriggerValue": 20},
        }
        assert status_of(await c.request("ADD_ROSPEC", ROSpecID=2, ROSpec=spec)) == 0
        assert status_of(await c.request("ENABLE_ROSPEC", ROSpecID=2)) == 0
        await c.wait(lambda f: _rospec_events(c).count("End_of_ROSpec") >= 3)
        events = _rospec_events(c)
        assert events[:6] == ["Start_of_ROSpec", "End_of_ROSpec"] * 3
        assert status_of(await c.request("DISABLE_ROSPEC", ROSpecID=2)) == 0
        assert not sim.inventorying


async def test_an_aispec_that_stops_after_n_tags_ends_its_rospec() -> None:
    """As the specification has it (and not as sllurp expects): the ROSpec is done once its
    only AISpec is, and an Immediate start trigger does not start it again."""
    async with LlrpReaderSim(seed=27) as sim, Client(sim.port) as c:
        await c.wait(is_connection_event("Success"))
        spec = rospec(n=0)
        spec["AISpec"][0]["AISpecStopTrigger"] = {
            "AISpecStopTriggerType": "Tag observation",
            "DurationTriggerValue": 0,
            "TagObservationTrigger": {
                "TriggerType": "UponNTags",
                "NumberOfTags": 2,
                "NumberOfAttempts": 0,
                "T": 0,
                "Timeout": 0,
            },
        }
        assert status_of(await c.request("ADD_ROSPEC", ROSpecID=1, ROSpec=spec)) == 0
        assert status_of(await c.request("ENABLE_ROSPEC", ROSpecID=1)) == 0
        first, second = await sim.stray(EPC96, reads=2), await sim.stray(EPC96_B)
        await c.wait(lambda f: len(c.tag_reports()) == 3)  # sent at the end of the AISpec
        assert not sim.inventorying
        assert (first.reads_delivered, second.reads_delivered) == (2, 1)
        assert (await sim.stray(EPC128)).not_delivered == 1


async def test_transmit_power_weakens_what_the_reader_hears_db_for_db() -> None:
    peaks = []
    for power_drop in (0, 20):  # 20 steps of 0.25 dB: 5 dB less
        async with LlrpReaderSim(seed=28) as sim, Client(sim.port) as c:
            await c.wait(is_connection_event("Success"))
            spec = rospec()
            top = len(sim.model.power_table_cdbm)
            for conf in spec["AISpec"][0]["InventoryParameterSpec"][0]["AntennaConfiguration"]:
                conf["RFTransmitter"]["TransmitPower"] = top - power_drop
            assert status_of(await c.request("ADD_ROSPEC", ROSpecID=1, ROSpec=spec)) == 0
            assert status_of(await c.request("ENABLE_ROSPEC", ROSpecID=1)) == 0
            (truth,) = await sim.run_passes([TagPass(EPC96, duration_s=0.2)], miss_share=0.0)
            peaks.append(truth.peak_rssi_sent)
    full, weaker = peaks
    assert weaker == {a: rssi - 5 for a, rssi in full.items()}


async def test_reports_are_batched_by_n_and_a_trickle_is_flushed() -> None:
    async with LlrpReaderSim(seed=6, flush_after_s=0.05) as sim, Client(sim.port) as c:
        await inventory(c, n=5)
        truths = await sim.burst([f"{EPC96[:-2]}{i:02x}" for i in range(12)], (1,), 0.2)
        sent = sum(t.reads_delivered for t in truths)
        await c.wait(lambda f: len(c.tag_reports()) == sent)
        sizes = [
            len((f.msg or {})["TagReportData"]) for f in c.frames if f.type == Msg.RO_ACCESS_REPORT
        ]
        assert sent == sum(sizes) and max(sizes) == 5
        stray = await sim.stray(EPC96)  # one tag, never five: sent after flush_after_s
        assert stray.reads_delivered == 1


async def test_n_zero_holds_reports_until_the_end_of_the_rospec() -> None:
    async with LlrpReaderSim(seed=7) as sim, Client(sim.port) as c:
        await inventory(c, n=0)
        truth = await sim.stray(EPC96, reads=3)
        assert truth.reads_delivered == 0 and not c.tag_reports()
        assert status_of(await c.request("STOP_ROSPEC", ROSpecID=1)) == 0
        await c.wait(lambda f: len(c.tag_reports()) == 3)
        assert truth.reads_delivered == 3


async def test_a_burst_of_500_tags_is_fully_reported() -> None:
    epcs = [f"3074257bf7194e40000{i:05x}" for i in range(500)]
    async with LlrpReaderSim(seed=19) as sim, Client(sim.port) as c:
        await inventory(c, n=100)
        truths = await sim.burst(epcs, antennas=(1, 2), duration_s=0.5)
        sent = sum(t.reads_delivered for t in truths)
        await c.wait(lambda f: len(c.tag_reports()) == sent, timeout=5)
    seen = {(t["EPC"].decode(), t["AntennaID"]) for t in c.tag_reports()}
    assert seen == {(e, a) for e in epcs for a in (1, 2)}
    assert all(t.not_delivered == 0 and t.missed == 0 for t in truths)


def _count_tag_reports(frame: bytes) -> int:
    count, pos = 0, codec.HEADER_LEN
    while pos < len(frame):
        ptype, length = struct.unpack_from("!HH", frame, pos)
        count += ptype == P.TAG_REPORT_DATA
        pos += length
    return count


async def test_a_flood_sends_every_read_it_was_asked_for() -> None:
    async with LlrpReaderSim(seed=20) as sim:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        received = 0

        async def count() -> None:
            nonlocal received
            while True:
                head = await reader.readexactly(10)
                frame = head + await reader.readexactly(codec.parse_header(head).length - 10)
                if codec.parse_header(head).type == Msg.RO_ACCESS_REPORT:
                    received += _count_tag_reports(frame)

        counter = asyncio.create_task(count())
        try:
            await sim.wait_connected()
            body = LLRPMessage(
                msgdict={"ADD_ROSPEC": {"ID": 1, "ROSpecID": 1, "ROSpec": rospec(n=500)}}
            ).msgbytes
            writer.write(body + codec.message(Msg.ENABLE_ROSPEC, 2, struct.pack("!I", 1)))
            await sim.wait_inventorying()
            sent = await sim.flood(reads_per_s=20_000, duration_s=0.25)
            await sim.wait_for(lambda: received == sent, timeout=5)
        finally:
            counter.cancel()
            writer.close()
            await writer.wait_closed()
    assert sent >= 5_000 and sim.reports_sent >= 5_000


# --- GPIO ----------------------------------------------------------------------------------------


def _gpi_trigger_rospec(port: int) -> bytes:
    """An ADD_ROSPEC body sllurp cannot encode: started while GPI `port` is high, stopped when
    it goes low (TLVs by hand, from the specification)."""
    gpi_high = codec.tlv(P.GPI_TRIGGER_VALUE, struct.pack("!HBI", port, 0x80, 0))
    gpi_low = codec.tlv(P.GPI_TRIGGER_VALUE, struct.pack("!HBI", port, 0x00, 0))
    boundary = codec.tlv(
        P.RO_BOUNDARY_SPEC,
        codec.tlv(P.RO_SPEC_START_TRIGGER, b"\x03", gpi_high),
        codec.tlv(P.RO_SPEC_STOP_TRIGGER, struct.pack("!BI", 2, 0), gpi_low),
    )
    aispec = codec.tlv(
        P.AI_SPEC,
        struct.pack("!HH", 1, 1),
        codec.tlv(P.AI_SPEC_STOP_TRIGGER, struct.pack("!BI", 0, 0)),
        codec.tlv(P.INVENTORY_PARAMETER_SPEC, struct.pack("!HB", 1, 1)),
    )
    report = codec.ro_report_spec(codec.ReportSpec(1, 1))
    return codec.tlv(P.RO_SPEC, struct.pack("!IBB", 7, 0, 0), boundary, aispec, report)


async def test_gpi_events_gpi_triggers_and_gpo_writes() -> None:
    async with LlrpReaderSim(seed=21) as sim, Client(sim.port) as c:
        await c.wait(is_connection_event("Success"))
        events = {"ReaderEventNotificationSpec": {"EventNotificationState": {"GPIEvent": True}}}
        assert status_of(await c.request("SET_READER_CONFIG", **events)) == 0
        gpo = b"\x00" + codec.gpo_write_data(2, True) + codec.gpo_write_data(3, False)
        assert status_of(await c.request_body(Msg.SET_READER_CONFIG, gpo)) == 0
        assert sim.gpo_state == {1: False, 2: True, 3: False, 4: False}
        assert [(w.port, w.state) for w in sim.gpo_history] == [(2, True), (3, False)]
        bad = b"\x00" + codec.gpo_write_data(9, True)
        assert status_of(await c.request_body(Msg.SET_READER_CONFIG, bad)) == 100
        assert status_of(await c.request_body(Msg.ADD_ROSPEC, _gpi_trigger_rospec(1))) == 0
        assert status_of(await c.request("ENABLE_ROSPEC", ROSpecID=7)) == 0
        assert not sim.inventorying
        await sim.set_gpi(1, True)
        event = await c.wait(
            lambda f: "GPIEvent" in (f.msg or {}).get("ReaderEventNotificationData", {})
        )
        assert event_of(event)["GPIEvent"] == {"GPIPortNumber": 1, "GPIEvent": True}
        assert sim.inventorying
        reply = await c.request_body(Msg.GET_READER_CONFIG, get_config(requested=9, gpi=1))
        assert reply.msg is not None
        assert reply.msg["GPIPortCurrentState"][0]["GPIState"] in ("High", 1)
        await sim.set_gpi(1, False)
        assert not sim.inventorying
        with pytest.raises(ValueError, match="GPI port 5"):
            await sim.set_gpi(5, True)


async def test_held_events_and_reports_wait_for_enable_events_and_reports() -> None:
    async with LlrpReaderSim(seed=22) as sim:
        async with Client(sim.port) as c:
            await inventory(c)
            hold = b"\x00" + codec.events_and_reports(True)
            assert status_of(await c.request_body(Msg.SET_READER_CONFIG, hold)) == 0
        await sim.wait_disconnected()
        truth = await sim.stray(EPC96, reads=2)  # while nobody is connected: held
        async with Client(sim.port) as c:
            await c.wait(is_connection_event("Success"))
            assert status_of(await c.request("GET_READER_CAPABILITIES", RequestedData=1)) == 0
            assert not c.tag_reports()
            c.send_body(Msg.ENABLE_EVENTS_AND_REPORTS)
            await c.wait(lambda f: len(c.tag_reports()) == 2)
        assert truth.reads_delivered == 2 and truth.not_delivered == 0


async def test_timestamps_follow_the_readers_clock() -> None:
    async with LlrpReaderSim(seed=23, clock_offset_s=3600.0) as sim, Client(sim.port) as c:
        await inventory(c)
        truth = await sim.stray(EPC96)
        await c.wait(lambda f: len(c.tag_reports()) == 1)
    (tag,) = c.tag_reports()
    assert abs(tag["FirstSeenTimestampUTC"] / 1e6 - 3600.0 - truth.start_s) < 0.5
