"""Configuration of RFID readers (LLRP) and of portals: how raw tag reads become tag passes.

A reader (`kind: llrp`) is configured from its profile (antenna count, power range, RF modes)
and the line file (which antennas, how much power, which Gen2 session, when to inventory). A
station's `portal` turns the reader's reads into one observation per tag pass: where, when,
which way, and the tag's identity.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from gateway.config.base import DeviceBase, Model, TagScheme


class ReportContent(Model):
    antenna: bool = Field(True, description="Report the antenna that read the tag.")
    peak_rssi: bool = Field(True, description="Report the peak RSSI of the read (dBm).")
    first_seen: bool = Field(
        True, description="Report when the tag was first seen (reader clock, microseconds)."
    )
    last_seen: bool = Field(True, description="Report when the tag was last seen.")
    seen_count: bool = Field(
        True, description="Report how often the tag was seen in the report period."
    )


class GpiTrigger(Model):
    port: int = Field(ge=1, le=32, description="Reader GPI port (a light barrier, a switch).")
    active: bool = Field(True, description="Level of the port that opens the read window.")


class LlrpConfig(DeviceBase):
    kind: Literal["llrp"] = Field(
        description="An RFID reader speaking LLRP 1.1 (Impinj, Zebra "
        "...): continuous or triggered inventory, tag reports, GPI "
        "events, GPO writes."
    )
    host: str = Field(min_length=1, description="Reader host name or address.")
    # What the model has (from its profile): declared first, the fields below are checked
    # against them.
    max_antennas: int = Field(
        4, ge=1, le=64, description="Antenna ports the reader model has (from its profile)."
    )
    min_tx_power_dbm: float = Field(
        10.0, ge=0, le=36, description="Lowest power the model supports (from its profile)."
    )
    max_tx_power_dbm: float = Field(
        31.5, ge=0, le=36, description="Highest power the model supports (from its profile)."
    )
    gpo_ports: int = Field(
        4, ge=0, le=32, description="Output ports the reader model has (from its profile)."
    )
    port: int = Field(
        5084, ge=1, le=65535, description="LLRP port (5084; 5085 for TLS, not supported)."
    )
    antennas: list[int] = Field(
        [1],
        min_length=1,
        description="Antenna ports to inventory with (1-based), in portal order for direction.",
    )
    tx_power_dbm: float | None = Field(
        None,
        ge=0,
        le=36,
        description="Transmit power in dBm; "
        "the reader's nearest table entry at or below it is used. "
        "Empty: the reader's maximum.",
    )
    session: Literal[0, 1, 2, 3] = Field(
        1,
        description="Gen2 session: 0 re-reads tags "
        "constantly (small counts); 1 (portals, the usual) or 2/3 "
        "keep a read tag quiet for a while (large populations).",
    )
    tag_population: int = Field(
        32,
        ge=1,
        le=10_000,
        description="Expected tags in the field at once (sizes the anti-collision Q).",
    )
    mode_index: int = Field(
        0,
        ge=0,
        le=10_000,
        description="RF mode from the reader's mode table (reader specific; see the profile).",
    )
    report_every_n_tags: int = Field(
        1,
        ge=1,
        le=10_000,
        description="The reader sends a report after this many tags (1: each read at once).",
    )
    report: ReportContent = Field(
        default_factory=ReportContent, description="What each tag report carries."
    )
    inventory: Literal["continuous", "gpi", "commanded"] = Field(
        "continuous",
        description="`continuous`: always reading; `gpi`: a read window while a "
        "reader input is active (`gpi_trigger`); `commanded`: read windows opened and closed by "
        "a station's `read_window` (a PLC signal).",
    )
    gpi_trigger: GpiTrigger | None = Field(
        None, description="The reader input that opens the read window (inventory `gpi`)."
    )
    keepalive_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="Keepalive period the reader is "
        "asked for; no message from it for three periods ends the "
        "connection (sllurp itself never notices).",
    )
    connect_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Time allowed to connect and configure the reader."
    )

    @field_validator("antennas")
    @classmethod
    def _antennas(cls, antennas: list[int], info: ValidationInfo) -> list[int]:
        ports = info.data.get("max_antennas")
        bad = [a for a in antennas if a < 1 or (ports is not None and a > ports)]
        if bad:
            raise ValueError(f"antennas {bad} do not exist: the reader has 1 to {ports}")
        if len(set(antennas)) != len(antennas):
            raise ValueError("antennas are listed once each")
        return antennas

    @field_validator("tx_power_dbm")
    @classmethod
    def _power(cls, dbm: float | None, info: ValidationInfo) -> float | None:
        low, high = info.data.get("min_tx_power_dbm"), info.data.get("max_tx_power_dbm")
        if dbm is not None and low is not None and high is not None and not low <= dbm <= high:
            raise ValueError(f"{dbm:g} dBm is outside the reader's range {low:g} to {high:g} dBm")
        return dbm

    @model_validator(mode="after")
    def _consistent(self) -> LlrpConfig:
        if (self.inventory == "gpi") != (self.gpi_trigger is not None):
            raise ValueError("inventory gpi and gpi_trigger go together")
        return self


class PortalConfig(Model):
    device: str = Field(description="The LLRP reader of this portal.")
    antennas: list[int] | None = Field(
        None,
        min_length=1,
        description="The antennas that make "
        "this portal, in order from outside to inside (direction). "
        "Default: the reader's antennas.",
    )
    quiet_time_ms: int = Field(
        1500,
        ge=10,
        le=600_000,
        description="A pass ends when the tag has not been read for this long.",
    )
    min_reads: int = Field(
        2,
        ge=1,
        le=10_000,
        description="Passes with fewer reads are dropped "
        "as strays (a tag glimpsed from a neighbouring portal).",
    )
    min_rssi_dbm: float | None = Field(
        None, ge=-120, le=0, description="Reads weaker than this are ignored."
    )
    epc_prefixes: list[str] = Field(
        [], description="Only tags whose EPC (hex) starts with one of these; empty: all."
    )
    schemes: list[TagScheme] = Field(
        [],
        description="Only tags of these identity schemes (`sgtin` for units, `sscc` for "
        "pallets, `grai` for returnable totes, `epc` for non-GS1 tags ...); empty: all. Passes "
        "of other tags are ignored and counted.",
    )
    direction: Literal["antenna_order", "none"] = Field(
        "antenna_order",
        description="`antenna_order`: the first antenna of `antennas` read "
        "before the last means `in`, the reverse `out`; `none`: no direction.",
    )
    max_pass_s: float = Field(
        300.0,
        gt=0,
        le=86_400,
        description="A pass that lasts longer (a "
        "tag parked in the field) is closed and reported, and a new one "
        "begins.",
    )

    @model_validator(mode="after")
    def _prefixes(self) -> PortalConfig:
        for p in self.epc_prefixes:
            try:
                int(p, 16)
            except ValueError:
                raise ValueError(f"EPC prefix {p!r} is not hexadecimal") from None
        return self


RFID_KINDS = frozenset({"llrp"})
