"""What an `LlrpConfig` asks of a reader, in sllurp's terms, checked against what the reader
says it can do (its GET_READER_CAPABILITIES_RESPONSE, as sllurp decodes it).

Pure: a config and a capabilities dict in, sllurp's `LLRPReaderConfig`, the ROSpec changes and
a `ReaderFacts` out. Settings that no retry can fix (an antenna or RF mode the reader does not
have) are `DeviceMisconfigured`, with what the reader does have.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sllurp.llrp import LLRPReaderConfig

from gateway.config.rfid import LlrpConfig
from gateway.devices.base import DeviceMisconfigured

# IANA private enterprise numbers, as GeneralDeviceCapabilities reports the manufacturer.
VENDORS: Final = {25882: "Impinj", 161: "Zebra", 24831: "Sirit"}


@dataclass(frozen=True)
class ReaderFacts:
    """What the reader reported, and the settings chosen from its tables."""

    vendor: str
    model: int
    firmware: str
    max_antennas: int
    gpis: int
    gpos: int
    power_index: int
    power_dbm: float
    power_note: str | None  # why the power differs from the configured one, if it does
    mode_ids: tuple[int, ...]

    def detail(self, config: LlrpConfig) -> str:
        """The `connected` detail: what this connection reads with."""
        ants = ",".join(map(str, config.antennas))
        return (
            f"{config.host}:{config.port}: {self.vendor} model {self.model}, firmware "
            f"{self.firmware or '?'}; antennas {ants} at {self.power_dbm:g} dBm (index "
            f"{self.power_index}), session {config.session}, mode {config.mode_index}, "
            f"inventory {config.inventory}"
        )


def power_choice(table: list[tuple[int, int]], wanted_dbm: float | None) -> tuple[int, int, bool]:
    """The entry of the reader's power table (index, centi-dBm) to use: the highest at or below
    `wanted_dbm`, the reader's maximum when None. Third: True when every entry is above the
    wanted power (the lowest is used then).

    Computed here rather than by sllurp (`tx_power_dbm`): sllurp's `find_closest` bisects a
    table it pads with a dummy 0 dBm at index 0, so a request for exactly the top entry gets the
    one below it, and a request below the lowest entry gets index 0, which is no entry."""
    if wanted_dbm is None:
        index, centi = max(table, key=lambda e: (e[1], -e[0]))
        return index, centi, False
    wanted = round(wanted_dbm * 100)
    below = [e for e in table if e[1] <= wanted]
    if not below:
        index, centi = min(table, key=lambda e: (e[1], e[0]))
        return index, centi, True
    index, centi = max(below, key=lambda e: (e[1], -e[0]))
    return index, centi, False


def reader_facts(config: LlrpConfig, caps: Mapping[str, Any]) -> ReaderFacts:
    """Check the configuration against the reader's capabilities. sllurp needs a transmit power
    table and a UHF C1G2 RF mode table (it fails with a KeyError without them): their absence
    is reported here, by name."""
    general = caps.get("GeneralDeviceCapabilities") or {}
    vendor_id = general.get("DeviceManufacturerName", 0)
    vendor = VENDORS.get(vendor_id, f"vendor {vendor_id}")
    model = general.get("ModelName", 0)
    firmware = general.get("ReaderFirmwareVersion", b"")
    if isinstance(firmware, bytes):
        firmware = firmware.decode("latin-1").strip("\x00 ")
    where = f"{config.id} ({vendor} model {model})"
    max_antennas = int(general.get("MaxNumberOfAntennaSupported", 0))
    bad = [a for a in config.antennas if a > max_antennas]
    if bad:
        raise DeviceMisconfigured(
            f"{where}: antennas {bad} do not exist: the reader has {max_antennas}"
        )
    gpio = general.get("GPIOCapabilities") or {}
    gpis, gpos = int(gpio.get("NumGPIs", 0)), int(gpio.get("NumGPOs", 0))
    if config.gpi_trigger is not None and config.gpi_trigger.port > gpis:
        raise DeviceMisconfigured(
            f"{where}: gpi_trigger port {config.gpi_trigger.port} does not exist: the reader "
            f"has {gpis} GPI ports"
        )
    band = (caps.get("RegulatoryCapabilities") or {}).get("UHFBandCapabilities") or {}
    table = [
        (int(e["Index"]), int(e["TransmitPowerValue"]))
        for e in band.get("TransmitPowerLevelTableEntry", [])
    ]
    modes = (band.get("UHFC1G2RFModeTable") or {}).get("UHFC1G2RFModeTableEntry", [])
    if not table or not modes:
        missing = " and ".join(
            name
            for name, rows in (("transmit power table", table), ("RF mode table", modes))
            if not rows
        )
        raise DeviceMisconfigured(f"{where} reports no {missing}: it cannot be configured")
    # sllurp keeps the table as a list indexed by the entries' Index (1..n), so it fails on a
    # table with gaps; every reader we know numbers its entries 1..n.
    if sorted(i for i, _ in table) != list(range(1, len(table) + 1)):
        raise DeviceMisconfigured(f"{where}: its power table is not numbered 1..{len(table)}")
    mode_ids = tuple(sorted(int(m["ModeIdentifier"]) for m in modes))
    if config.mode_index not in mode_ids:
        raise DeviceMisconfigured(
            f"{where} has no RF mode {config.mode_index}; its modes: "
            f"{', '.join(map(str, mode_ids))}"
        )
    index, centi, below_table = power_choice(table, config.tx_power_dbm)
    note = None
    if below_table:
        note = f"{config.tx_power_dbm} dBm is below the reader's lowest power"
    elif config.tx_power_dbm is not None and centi != round(config.tx_power_dbm * 100):
        note = f"{config.tx_power_dbm} dBm is not in the reader's table"
    return ReaderFacts(
        vendor, model, firmware, max_antennas, gpis, gpos, index, centi / 100, note, mode_ids
    )


def tag_content(config: LlrpConfig) -> dict[str, bool]:
    """The TagReportContentSelector: what each tag report carries, and nothing else (every
    field costs bytes on the wire and time in the decoder)."""
    r = config.report
    return {
        "EnableROSpecID": False,
        "EnableSpecIndex": False,
        "EnableInventoryParameterSpecID": False,
        "EnableAntennaID": r.antenna,
        "EnableChannelIndex": False,
        "EnablePeakRSSI": r.peak_rssi,
        "EnableFirstSeenTimestamp": r.first_seen,
        "EnableLastSeenTimestamp": r.last_seen,
        "EnableTagSeenCount": r.seen_count,
        "EnableAccessSpecID": False,
    }


def sllurp_settings(config: LlrpConfig) -> dict[str, Any]:
    """The settings of sllurp's LLRPReaderConfig. Its constructor ignores keys it does not know
    without a word, so a test checks that each of these is one of its attributes."""
    antennas = list(config.antennas)
    events = dict.fromkeys(LLRPReaderConfig().event_selector, False)
    events["GPIEvent"] = True  # light barriers: Gpi observations, and the read window
    events["ReaderExceptionEvent"] = True  # logged
    return {
        "antennas": antennas,
        # Replaced by the index chosen from the reader's power table (see power_choice) once
        # the capabilities are known, before sllurp reads it.
        "tx_power": dict.fromkeys(antennas, 0),
        "tx_power_dbm": None,
        "session": config.session,
        "tag_population": config.tag_population,
        "mode_identifier": config.mode_index,
        # Reports every N tags are set in the ROSpec's ROReportSpec (see rospec_changes), not
        # through sllurp's option, which ends the AISpec after N tags instead.
        "report_every_n_tags": None,
        "report_timeout_ms": 0,
        "tag_content_selector": tag_content(config),
        "keepalive_interval": round(config.keepalive_s * 1000),
        "event_selector": events,
        "gpi_ports_config": (
            {config.gpi_trigger.port: True} if config.gpi_trigger is not None else {}
        ),
        "start_inventory": True,
        "reset_on_connect": True,  # DELETE_ACCESSSPEC / DELETE_ROSPEC of all before ADD_ROSPEC
        "reconnect": False,  # the supervisor reconnects (sllurp's socket client only)
        # No impinj_* option: each makes sllurp send an Impinj CUSTOM_MESSAGE first.
    }


def sllurp_config(config: LlrpConfig) -> LLRPReaderConfig:
    return LLRPReaderConfig(sllurp_settings(config))


def rospec_changes(rospec: dict[str, Any], config: LlrpConfig) -> None:
    """Change sllurp's ROSpec in place, where its options cannot say what we need.

    - sllurp always makes the start trigger Immediate (the ROSpec runs as soon as it is
      enabled). For `gpi` and `commanded` inventory it is Null: the ROSpec is enabled and
      waits for START_ROSPEC. sllurp cannot express a GPI trigger at all (and its
      GPITriggerValue encoder carries the parameter type of PeriodicTriggerValue, 180 instead
      of 181), so the adapter starts and stops the ROSpec on the reader's GPI events.
    - sllurp puts `report_every_n_tags` into an AISpec stop trigger (the AISpec ends after N
      tags, the report goes out at its end, the reader starts it again) and leaves the
      ROReportSpec at N = 0, which means "only at the end of the AISpec". We keep the AISpec
      running and ask the reader for a report every N tags (ROReportSpec N)."""
    if config.inventory != "continuous":
        rospec["ROBoundarySpec"]["ROSpecStartTrigger"] = {"ROSpecStartTriggerType": "Null"}
    rospec["ROReportSpec"]["ROReportTrigger"] = "Upon_N_Tags_Or_End_Of_AISpec"
    rospec["ROReportSpec"]["N"] = config.report_every_n_tags
