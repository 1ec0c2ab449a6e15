"""What an LLRP reader sends, encoded for the reader simulator: the bodies of responses and
notifications (reader events, tag reports, capabilities) and the reader configuration
parameters of GET_READER_CONFIG_RESPONSE. Every function returns bytes ready to go into a
message; the framing and the LLRPStatus parameter are in `simulators.llrp_wire`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from simulators.llrp_models import ReaderModel, RfMode
from simulators.llrp_parse import CONTENT_FLAGS, ContentSelector, ReportSpec
from simulators.llrp_wire import (
    TV_ACCESS_SPEC_ID,
    TV_ANTENNA_ID,
    TV_C1G2_CRC,
    TV_C1G2_PC,
    TV_CHANNEL_INDEX,
    TV_EPC_96,
    TV_FIRST_SEEN_UTC,
    TV_INVENTORY_PARAMETER_SPEC_ID,
    TV_LAST_SEEN_UTC,
    TV_PEAK_RSSI,
    TV_ROSPEC_ID,
    TV_SPEC_INDEX,
    TV_TAG_SEEN_COUNT,
    P,
    tlv,
    tv,
    utf8v,
)

__all__ = [
    "TagRead", "access_report_spec", "antenna_configuration", "antenna_properties", "capabilities",
    "configuration_state", "connection_attempt_event", "connection_close_event", "crc16",
    "epc_bits", "epc_bytes", "event_notification_spec", "events_and_reports", "gpi_event",
    "gpi_port_state", "gpo_write_data", "identification", "keepalive_spec", "pc_word",
    "reader_event", "ro_access_report", "ro_report_spec", "rospec_event", "rospec_with_state",
    "supported_version", "tag_report_data",
]  # fmt: skip


def supported_version(current: int, supported: int) -> bytes:
    """The fields of GET_SUPPORTED_VERSION_RESPONSE, before its LLRPStatus."""
    return struct.pack("!BB", current, supported)


def reader_event(time_us: int, *events: bytes) -> bytes:
    """The ReaderEventNotificationData parameter (a READER_EVENT_NOTIFICATION's body)."""
    stamp = tlv(P.UTC_TIMESTAMP, struct.pack("!Q", time_us))
    return tlv(P.READER_EVENT_NOTIFICATION_DATA, stamp, *events)


def connection_attempt_event(status: int) -> bytes:
    return tlv(P.CONNECTION_ATTEMPT_EVENT, struct.pack("!H", status))


def connection_close_event() -> bytes:
    return tlv(P.CONNECTION_CLOSE_EVENT)


def gpi_event(port: int, state: bool) -> bytes:
    return tlv(P.GPI_EVENT, struct.pack("!HB", port, 0x80 if state else 0))


def rospec_event(kind: int, rospec_id: int, preempting: int = 0) -> bytes:
    """kind: 0 start, 1 end, 2 preemption."""
    return tlv(P.RO_SPEC_EVENT, struct.pack("!BII", kind, rospec_id, preempting))


@dataclass(frozen=True, slots=True)
class TagRead:
    """One TagReportData: a tag seen `count` times on one antenna between the timestamps."""

    epc: str  # hex
    antenna: int
    rssi: int  # dBm
    first_us: int
    last_us: int
    count: int
    rospec_id: int
    spec_index: int = 1
    inventory_spec_id: int = 1
    channel: int = 1


def epc_bits(epc: str) -> int:
    return 4 * len(epc)


def pc_word(epc: str) -> int:
    """The Gen2 Protocol Control word: EPC length in 16-bit words, no user memory, no XPC."""
    return ((epc_bits(epc) + 15) // 16) << 11


def crc16(data: bytes) -> int:
    """The Gen2 CRC-16 (ISO/IEC 13239: polynomial 0x1021, preset 0xFFFF, complemented)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc ^ 0xFFFF


def epc_bytes(epc: str) -> bytes:
    return bytes.fromhex(epc + "0" * (len(epc) % 2))


def tag_report_data(read: TagRead, sel: ContentSelector) -> bytes:
    """TagReportData with the fields `sel` enables, in the specification's order."""
    raw = epc_bytes(read.epc)
    if epc_bits(read.epc) == 96:
        parts = [tv(TV_EPC_96, raw)]  # the compact form, required for 96-bit EPCs
    else:
        parts = [tlv(P.EPC_DATA, struct.pack("!H", epc_bits(read.epc)), raw)]
    optional = (
        (sel.rospec_id, TV_ROSPEC_ID, "I", read.rospec_id),
        (sel.spec_index, TV_SPEC_INDEX, "H", read.spec_index),
        (sel.inventory_spec_id, TV_INVENTORY_PARAMETER_SPEC_ID, "H", read.inventory_spec_id),
        (sel.antenna_id, TV_ANTENNA_ID, "H", read.antenna),
        (sel.peak_rssi, TV_PEAK_RSSI, "b", read.rssi),
        (sel.channel_index, TV_CHANNEL_INDEX, "H", read.channel),
        (sel.first_seen, TV_FIRST_SEEN_UTC, "Q", read.first_us),
        (sel.last_seen, TV_LAST_SEEN_UTC, "Q", read.last_us),
        (sel.seen_count, TV_TAG_SEEN_COUNT, "H", read.count),
    )
    parts += [tv(t, struct.pack("!" + fmt, v)) for on, t, fmt, v in optional if on]
    pc = pc_word(read.epc)
    if sel.pc_bits:
        parts.append(tv(TV_C1G2_PC, struct.pack("!H", pc)))
    if sel.crc:
        parts.append(tv(TV_C1G2_CRC, struct.pack("!H", crc16(struct.pack("!H", pc) + raw))))
    if sel.access_spec_id:
        parts.append(tv(TV_ACCESS_SPEC_ID, struct.pack("!I", 0)))  # no AccessSpec ran
    return tlv(P.TAG_REPORT_DATA, *parts)


def ro_access_report(reads: Iterable[TagRead], sel: ContentSelector) -> bytes:
    return b"".join(tag_report_data(r, sel) for r in reads)


def capabilities(model: ReaderModel, antennas: int, requested: int) -> bytes:
    """The parameters of GET_READER_CAPABILITIES_RESPONSE after its LLRPStatus."""
    general = tlv(
        P.GENERAL_DEVICE_CAPABILITIES,
        struct.pack("!HHII", antennas, 0x4000, model.manufacturer, model.model_number),
        utf8v(model.firmware),  # flags: no antenna properties to set, a UTC clock
        tlv(P.RECEIVE_SENSITIVITY_ENTRY, struct.pack("!Hh", 1, 0)),
        tlv(P.GPIO_CAPABILITIES, struct.pack("!HH", model.num_gpi, model.num_gpo)),
        *(
            tlv(P.PER_ANTENNA_AIR_PROTOCOL, struct.pack("!HHB", a, 1, 1))
            for a in range(1, antennas + 1)
        ),
    )
    # Flags: only SupportsEventAndReportHolding. One AISpec per ROSpec, one
    # InventoryParameterSpec per AISpec. The limits cannot say "no AccessSpecs" (0 means "no
    # limit", as Wireshark shows it): one AccessSpec of one OpSpec, which the simulator refuses.
    llrp = tlv(
        P.LLRP_CAPABILITIES,
        struct.pack("!BBHIIIII", 0x08, 7, 0, model.max_rospecs, 1, 1, 1, 1),
    )
    freqs = b"".join(struct.pack("!I", f) for f in model.frequencies_khz)
    n = len(model.frequencies_khz)
    table = (
        tlv(P.FREQUENCY_HOP_TABLE, struct.pack("!BBH", 1, 0, n), freqs)
        if model.hopping
        else tlv(P.FIXED_FREQUENCY_TABLE, struct.pack("!H", n), freqs)
    )
    band = tlv(
        P.UHF_BAND_CAPABILITIES,
        *(
            tlv(P.TRANSMIT_POWER_ENTRY, struct.pack("!Hh", i, cdbm))
            for i, cdbm in enumerate(model.power_table_cdbm, start=1)
        ),
        tlv(P.FREQUENCY_INFORMATION, bytes([0x80 if model.hopping else 0]), table),
        tlv(P.UHF_C1G2_RF_MODE_TABLE, *(_rf_mode(m) for m in model.modes)),
    )
    regulatory = tlv(
        P.REGULATORY_CAPABILITIES, struct.pack("!HH", model.country, model.comm_standard), band
    )
    air = tlv(P.C1G2_LLRP_CAPABILITIES, struct.pack("!BH", 0, 2))
    chosen = {1: [general], 2: [llrp], 3: [regulatory], 4: [air]}
    return b"".join(chosen.get(requested, [general, llrp, regulatory, air]))


def _rf_mode(m: RfMode) -> bytes:
    flags = (0x80 if m.dr_64_3 else 0) | (0x40 if m.conformant else 0)
    return tlv(
        P.UHF_C1G2_RF_MODE_TABLE_ENTRY,
        struct.pack("!IBBBB", m.id, flags, m.m, m.flm, m.mask),
        struct.pack("!IIIII", m.bdr, m.pie, m.min_tari, m.max_tari, m.step_tari),
    )


# Reader configuration parameters (GET_READER_CONFIG_RESPONSE)


def identification(mac: bytes) -> bytes:
    return tlv(P.IDENTIFICATION, struct.pack("!BH", 0, len(mac)), mac)  # 0: MAC (EUI-64)


def antenna_properties(antenna: int, connected: bool = True, gain_cdbi: int = 0) -> bytes:
    flags = 0x80 if connected else 0
    return tlv(P.ANTENNA_PROPERTIES, struct.pack("!BHh", flags, antenna, gain_cdbi))


def antenna_configuration(
    antenna: int,
    *,
    sensitivity: int,
    channel: int,
    power_index: int,
    mode_index: int,
    tari: int,
    session: int,
    population: int,
    transit_ms: int,
) -> bytes:
    inventory = tlv(
        P.C1G2_INVENTORY_COMMAND,
        b"\x00",
        tlv(P.C1G2_RF_CONTROL, struct.pack("!HH", mode_index, tari)),
        tlv(P.C1G2_SINGULATION_CONTROL, struct.pack("!BHI", session << 6, population, transit_ms)),
    )
    return tlv(
        P.ANTENNA_CONFIGURATION,
        struct.pack("!H", antenna),
        tlv(P.RF_RECEIVER, struct.pack("!H", sensitivity)),
        tlv(P.RF_TRANSMITTER, struct.pack("!HHH", 1, channel, power_index)),
        inventory,
    )


def event_notification_spec(states: Mapping[int, bool]) -> bytes:
    return tlv(
        P.READER_EVENT_NOTIFICATION_SPEC,
        *(
            tlv(P.EVENT_NOTIFICATION_STATE, struct.pack("!HB", ev, 0x80 if on else 0))
            for ev, on in sorted(states.items())
        ),
    )


def ro_report_spec(spec: ReportSpec) -> bytes:
    flags = sum(0x8000 >> i for i, name in enumerate(CONTENT_FLAGS) if getattr(spec.content, name))
    memory = (0x80 if spec.content.crc else 0) | (0x40 if spec.content.pc_bits else 0)
    selector = tlv(
        P.TAG_REPORT_CONTENT_SELECTOR,
        struct.pack("!H", flags),
        tlv(P.C1G2_EPC_MEMORY_SELECTOR, bytes([memory])),
    )
    return tlv(P.RO_REPORT_SPEC, struct.pack("!BH", spec.trigger, spec.n), selector)


def access_report_spec(trigger: int) -> bytes:
    return tlv(P.ACCESS_REPORT_SPEC, bytes([trigger]))


def configuration_state(value: int) -> bytes:
    return tlv(P.LLRP_CONFIGURATION_STATE_VALUE, struct.pack("!I", value))


def keepalive_spec(kind: int, interval_ms: int) -> bytes:
    return tlv(P.KEEPALIVE_SPEC, struct.pack("!BI", kind, interval_ms))


def gpi_port_state(port: int, enabled: bool, state: int) -> bytes:
    """state: 0 low, 1 high, 2 unknown."""
    return tlv(P.GPI_PORT_CURRENT_STATE, struct.pack("!HBB", port, 0x80 if enabled else 0, state))


def gpo_write_data(port: int, data: bool) -> bytes:
    return tlv(P.GPO_WRITE_DATA, struct.pack("!HB", port, 0x80 if data else 0))


def events_and_reports(hold: bool) -> bytes:
    return tlv(P.EVENTS_AND_REPORTS, bytes([0x80 if hold else 0]))


def rospec_with_state(raw: bytes, state: int) -> bytes:
    """An added ROSpec parameter with its CurrentState field (after type, length, ID, priority)
    set to `state` (0 disabled, 1 inactive, 2 active)."""
    return raw[:9] + bytes([state]) + raw[10:]
