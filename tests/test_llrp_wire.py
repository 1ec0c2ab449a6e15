"""The adapter's own LLRP codec (gateway.devices.llrp_wire) and reader setup (llrp_setup),
judged by two independent implementations: sllurp's decoder and encoder, and the simulator's
codec written from the specification (simulators.llrp_codec)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sllurp.llrp import LLRPMessage, LLRPReaderConfig

from gateway.config.rfid import LlrpConfig
from gateway.devices import llrp_wire as wire
from gateway.devices.base import DeviceMisconfigured
from gateway.devices.llrp_setup import (
    power_choice,
    reader_facts,
    rospec_changes,
    sllurp_config,
    sllurp_settings,
)
from simulators import llrp_codec as codec
from tests.helpers_llrp import CONTENT_SELECTORS

EPC96 = "3074257bf7194e4000001a85"
EPC128 = "3074257bf7194e4000001a85aabbccdd"


def _report(reads: list[codec.TagRead], sel: codec.ContentSelector | None = None) -> bytes:
    body = codec.ro_access_report(reads, sel or codec.ContentSelector())
    return codec.message(codec.Msg.RO_ACCESS_REPORT, 9, body)


def _read(epc: str = EPC96, antenna: int = 1, rssi: int = -55, count: int = 3) -> codec.TagRead:
    return codec.TagRead(epc, antenna, rssi, 1_700_000_000_000_000, 1_700_000_000_250_000, count, 1)


epcs = st.sampled_from([EPC96, EPC128, "e2801160600002054d2b1a9c", "ab" * 31])
tag_reads = st.builds(
    codec.TagRead,
    epc=epcs,
    antenna=st.integers(1, 64),
    rssi=st.integers(-128, 0),
    first_us=st.integers(0, 2**63 - 1),
    last_us=st.integers(0, 2**63 - 1),
    count=st.integers(0, 0xFFFF),
    rospec_id=st.integers(0, 2**32 - 1),
)
selectors = CONTENT_SELECTORS


@settings(max_examples=300, deadline=None)
@given(st.lists(tag_reads, max_size=20), selectors)
def test_tag_reports_decode_as_sllurp_decodes_them(
    reads: list[codec.TagRead], sel: codec.ContentSelector
) -> None:
    frame = _report(reads, sel)
    ours, skipped = wire.tag_reads(frame, "portal-1", 5.0)
    theirs = LLRPMessage(msgbytes=frame).msgdict["RO_ACCESS_REPORT"].get("TagReportData", [])
    assert skipped == 0
    assert len(ours) == len(theirs) == len(reads)
    for mine, ref in zip(ours, theirs, strict=True):
        assert mine.device == "portal-1" and mine.time == 5.0
        assert mine.epc == ref["EPC"].decode()
        assert mine.antenna == ref.get("AntennaID")
        assert mine.rssi == (float(ref["PeakRSSI"]) if "PeakRSSI" in ref else None)
        assert mine.seen_count == ref.get("TagSeenCount", 1)
        first = ref.get("FirstSeenTimestampUTC")
        last = ref.get("LastSeenTimestampUTC")
        assert mine.first_seen == (first / 1e6 if first is not None else None)
        assert mine.last_seen == (last / 1e6 if last is not None else None)


@settings(max_examples=200, deadline=None)
@given(st.lists(tag_reads, min_size=1, max_size=10), st.data())
def test_the_splitter_cuts_any_chunking_into_the_same_messages(
    reads: list[codec.TagRead], data: st.DataObject
) -> None:
    stream = b"".join(
        [
            codec.message(codec.Msg.KEEPALIVE, 1),
            _report(reads),
            codec.message(codec.Msg.KEEPALIVE, 2),
        ]
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    splitter = wire.Splitter()
    frames: list[wire.Frame] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        frames += splitter.feed(stream[a:b])
    assert [(t, v, i) for t, v, i, _ in frames] == [
        (wire.KEEPALIVE, 1, 1),
        (wire.RO_ACCESS_REPORT, 1, 9),
        (wire.KEEPALIVE, 1, 2),
    ]
    assert b"".join(f[3] for f in frames) == stream
    assert splitter.buffered == 0


def _broken(data: bytes, max_bytes: int = wire.MAX_MESSAGE_BYTES) -> str:
    splitter = wire.Splitter(max_bytes=max_bytes)
    assert splitter.feed(data) == []
    assert splitter.error is not None
    assert splitter.feed(codec.message(codec.Msg.KEEPALIVE, 1)) == []  # broken for good
    return str(splitter.error)


def test_a_corrupt_length_stops_the_splitter() -> None:
    assert "message length 3" in _broken(struct.pack("!HII", (1 << 10) | 61, 3, 1))
    assert "message length 4096" in _broken(struct.pack("!HII", (1 << 10) | 61, 4096, 1), 1024)
    # A length that fits but a header no reader sends: not a message boundary. (Waiting for the
    # 16 MiB this header claims would swallow every keepalive after it.)
    assert "version 0, type 0" in _broken(b"\x00\x00\x00\xff\xff\xff" + b"\xff" * 30)
    assert "version 1, type 20" in _broken(struct.pack("!HII", (1 << 10) | 20, 10, 1))


def test_the_messages_before_garbage_are_kept() -> None:
    """A reader's last answer and garbage in one read: the answer counts (it may be the one
    that completes the configuration)."""
    splitter = wire.Splitter()
    answer = codec.message(codec.Msg.ENABLE_ROSPEC_RESPONSE, 7, codec.llrp_status())
    frames = splitter.feed(answer + bytes(range(256)))
    assert [(t, i) for t, _, i, _ in frames] == [(codec.Msg.ENABLE_ROSPEC_RESPONSE, 7)]
    assert splitter.error is not None


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_in_a_report_is_a_report_error_never_a_crash(body: bytes) -> None:
    frame = codec.message(codec.Msg.RO_ACCESS_REPORT, 1, body)
    try:
        reads, _ = wire.tag_reads(frame, "r", 0.0)
    except wire.ReportError:
        return
    for r in reads:
        assert isinstance(r.epc, str)


def test_a_tag_report_without_an_epc_is_counted_not_invented() -> None:
    no_epc = codec.tlv(codec.P.TAG_REPORT_DATA, codec.tv(codec.TV_ANTENNA_ID, b"\x00\x01"))
    frame = codec.message(
        codec.Msg.RO_ACCESS_REPORT,
        1,
        no_epc + codec.ro_access_report([_read()], codec.ContentSelector()),
    )
    reads, skipped = wire.tag_reads(frame, "r", 0.0)
    assert skipped == 1 and [r.epc for r in reads] == [EPC96]


def test_messages_the_adapter_sends_parse_in_the_specification_codec() -> None:
    assert wire.keepalive_ack(77) == codec.message(codec.Msg.KEEPALIVE_ACK, 77)
    for mtype in (wire.START_ROSPEC, wire.STOP_ROSPEC, wire.DELETE_ROSPEC):
        frame = wire.rospec_command(mtype, 5, 1)
        header = codec.parse_header(frame)
        assert (header.type, header.id) == (mtype, 5)
        assert codec.parse_spec_id(frame[10:]) == 1
    assert codec.parse_spec_id(wire.delete_all_accessspecs(6)[10:]) == 0
    request = codec.parse_get_reader_config(wire.get_reader_config_all(8)[10:])
    assert (request.antenna, request.requested, request.gpi_port, request.gpo_port) == (0, 0, 0, 0)
    update = codec.parse_set_reader_config(wire.set_gpo(9, 3, True)[10:])
    assert update.gpo_writes == {3: True} and not update.reset


def test_messages_the_adapter_sends_equal_sllurps_encoding() -> None:
    """Where sllurp can encode the same message, the bytes are the same."""
    for name, mtype in (("START_ROSPEC", wire.START_ROSPEC), ("STOP_ROSPEC", wire.STOP_ROSPEC)):
        theirs = LLRPMessage(msgdict={name: {"Ver": 1, "Type": mtype, "ID": 4, "ROSpecID": 1}})
        assert wire.rospec_command(mtype, 4, 1) == theirs.msgbytes
    theirs = LLRPMessage(msgdict={"KEEPALIVE_ACK": {"Ver": 1, "Type": 72, "ID": 3}})
    assert wire.keepalive_ack(3) == theirs.msgbytes


# --- reader setup -----------------------------------------------------------------------------

R700 = codec.ReaderModel(
    name="test",
    manufacturer=25882,
    model_number=2001052,
    firmware="8.2.0",
    power_table_cdbm=[1000 + 25 * i for i in range(93)],  # 10.00 .. 33.00 dBm
    modes=[
        codec.RfMode(1002, 1, 320_000, 1500, 6250, 25_000),
        codec.RfMode(0, 0, 640_000, 1500, 6250, 6250),
    ],
    num_gpi=2,
    num_gpo=3,
)


def _caps(model: codec.ReaderModel = R700, antennas: int = 4) -> dict[str, object]:
    body = codec.llrp_status() + codec.capabilities(model, antennas, 0)
    frame = codec.message(codec.Msg.GET_READER_CAPABILITIES_RESPONSE, 1, body)
    caps: dict[str, object] = LLRPMessage(msgbytes=frame).msgdict[
        "GET_READER_CAPABILITIES_RESPONSE"
    ]
    return caps


def _cfg(**kw: object) -> LlrpConfig:
    base: dict[str, object] = {"id": "portal-1", "kind": "llrp", "host": "127.0.0.1"}
    return LlrpConfig.model_validate(base | kw)


def test_power_is_the_highest_table_entry_at_or_below_the_wanted_dbm() -> None:
    table = [(i + 1, 1000 + 25 * i) for i in range(93)]
    assert power_choice(table, None) == (93, 3300, False)
    assert power_choice(table, 33.0) == (93, 3300, False)  # sllurp would give the one below
    assert power_choice(table, 30.1) == (81, 3000, False)
    assert power_choice(table, 5.0) == (1, 1000, True)


def test_reader_facts_come_from_the_capabilities_as_sllurp_decodes_them() -> None:
    facts = reader_facts(_cfg(tx_power_dbm=30.0, mode_index=1002), _caps())
    assert (facts.vendor, facts.model, facts.firmware) == ("Impinj", 2001052, "8.2.0")
    assert (facts.max_antennas, facts.gpis, facts.gpos) == (4, 2, 3)
    assert (facts.power_index, facts.power_dbm, facts.power_note) == (81, 30.0, None)
    assert facts.mode_ids == (0, 1002)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"mode_index": 5}, r"has no RF mode 5; its modes: 0, 1002"),
        ({"antennas": [1, 5], "max_antennas": 8}, r"antennas \[5\] do not exist: the reader has 4"),
        (
            {"inventory": "gpi", "gpi_trigger": {"port": 3}},
            "gpi_trigger port 3 does not exist: the reader has 2 GPI ports",
        ),
    ],
)
def test_what_the_reader_cannot_do_is_misconfigured_with_what_it_can(
    kw: dict[str, object], message: str
) -> None:
    with pytest.raises(DeviceMisconfigured, match=message):
        reader_facts(_cfg(**kw), _caps())


def test_a_reader_without_power_or_mode_tables_is_named_not_a_keyerror() -> None:
    caps = _caps()
    band = caps["RegulatoryCapabilities"]["UHFBandCapabilities"]  # type: ignore[index]
    del band["UHFC1G2RFModeTable"]
    with pytest.raises(DeviceMisconfigured, match="reports no RF mode table"):
        reader_facts(_cfg(), caps)


def test_every_sllurp_setting_is_one_sllurp_knows() -> None:
    """LLRPReaderConfig ignores unknown keys without a word: a renamed option would be lost."""
    known = set(vars(LLRPReaderConfig()))
    assert set(sllurp_settings(_cfg())) <= known
    cfg = sllurp_config(_cfg(antennas=[1, 2], session=2, keepalive_s=2.0))
    assert (cfg.antennas, cfg.session, cfg.keepalive_interval) == ([1, 2], 2, 2000)
    assert cfg.reconnect is False


def test_the_rospec_waits_for_a_start_unless_inventory_is_continuous() -> None:
    def rospec() -> dict[str, dict[str, object]]:
        return {
            "ROBoundarySpec": {"ROSpecStartTrigger": {"ROSpecStartTriggerType": "Immediate"}},
            "ROReportSpec": {"ROReportTrigger": "Upon_N_Tags_Or_End_Of_ROSpec", "N": 0},
        }

    continuous, commanded = rospec(), rospec()
    rospec_changes(continuous, _cfg(report_every_n_tags=5))
    rospec_changes(commanded, _cfg(inventory="commanded"))
    assert continuous["ROBoundarySpec"]["ROSpecStartTrigger"] == {
        "ROSpecStartTriggerType": "Immediate"
    }
    assert commanded["ROBoundarySpec"]["ROSpecStartTrigger"] == {"ROSpecStartTriggerType": "Null"}
    assert continuous["ROReportSpec"] == {"ROReportTrigger": "Upon_N_Tags_Or_End_Of_AISpec", "N": 5}
