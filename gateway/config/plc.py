"""Configuration of PLC devices (OPC UA, Modbus) and their named signals.

A profile declares a PLC's signals with their address, type and engineering unit; stations of
the line file then refer to them by name (`device` + `signal`). Values are converted to
engineering units as `value = raw * scale + offset` for numbers; writes undo it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.base import DeviceBase, Model

SignalName = str
ValueType = Literal[
    "bool",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "string",
    "datetime",
]
NUMERIC = frozenset(
    {"int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"}
)


class SignalBase(Model):
    type: ValueType = Field(description="Data type of the value in the PLC.")
    unit: str | None = Field(
        None,
        description="Engineering unit of the scaled value (`Nm`, "
        "`degC`, `bar`); recorded with parameters.",
    )
    scale: float = Field(
        1.0,
        allow_inf_nan=False,
        description="Engineering value = raw value x scale + offset. Not 0: a write divides by it.",
    )
    offset: float = Field(
        0.0, allow_inf_nan=False, description="Engineering value = raw value x scale + offset."
    )
    array_length: int | None = Field(
        None, ge=1, le=4096, description="The signal is an array of this many elements of `type`."
    )
    writable: bool = Field(
        False,
        description="The gateway may write it (handshake "
        "acknowledgements, verdict codes). Writes to others are refused.",
    )
    description: str = Field("", description="Free text for people.")

    @field_validator("scale")
    @classmethod
    def _scale_not_zero(cls, scale: float) -> float:
        # A write turns an engineering value back into the raw one by dividing by the scale.
        if scale == 0:
            raise ValueError("must not be 0 (a write divides by it)")
        return scale

    @model_validator(mode="after")
    def _scaling_only_for_numbers(self) -> SignalBase:
        if (self.scale != 1.0 or self.offset != 0.0) and self.type not in NUMERIC:
            raise ValueError(f"scale and offset apply to numbers, not to {self.type}")
        return self


# --- OPC UA ------------------------------------------------------------------------------------


class OpcuaSignal(SignalBase):
    node: str | None = Field(
        None,
        min_length=1,
        description="NodeId, e.g. "
        '`ns=3;s="DB_Trace"."Torque"` (Siemens) or '
        "`ns=4;s=MAIN.fTorque` (Beckhoff). Give `node` or `path`.",
    )
    path: list[str] | None = Field(
        None,
        min_length=1,
        description="Browse path from the "
        "Objects folder, each element `ns:Name` (e.g. "
        '`["3:DB_Trace", "3:Torque"]`). Resolved again after every '
        "reconnect and whenever the server says BadNodeIdUnknown (a "
        "PLC program download may renumber nodes).",
    )
    sampling_ms: int = Field(
        50,
        ge=0,
        le=60_000,
        description="Sampling interval the server "
        "uses for this signal when it is watched (0: as fast as it can).",
    )
    queue_size: int = Field(
        100,
        ge=1,
        le=10_000,
        description="Changes the server keeps between "
        "two publishes; with the default 1 of OPC UA, a pulse shorter than "
        "the publishing interval can be lost.",
    )

    @model_validator(mode="after")
    def _node_or_path(self) -> OpcuaSignal:
        if (self.node is None) == (self.path is None):
            raise ValueError("give exactly one of `node` (a NodeId) or `path` (a browse path)")
        return self


class OpcuaConfig(DeviceBase):
    kind: Literal["opcua"] = Field(
        description="A PLC (or any server) spoken to over OPC UA: "
        "subscriptions for watched signals, reads, writes."
    )
    endpoint: str = Field(description="Server endpoint URL, `opc.tcp://host:4840`.")
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = Field(
        "None",
        description="Message security. Sign and SignAndEncrypt use "
        "`security_policy` and an application certificate.",
    )
    security_policy: Literal["Basic256Sha256"] = Field(
        "Basic256Sha256", description="Security policy when `security_mode` is not None."
    )
    certificate_file: Path | None = Field(
        None,
        description="Application certificate (PEM or "
        "DER). Empty with security: generated on first run "
        "next to the journal, and kept.",
    )
    private_key_file: Path | None = Field(None, description="Private key of `certificate_file`.")
    server_certificate_file: Path | None = Field(
        None, description="The server's certificate, to trust only it (optional)."
    )
    username: str | None = Field(None, min_length=1, description="User name; empty: anonymous.")
    password_file: Path | None = Field(
        None,
        description="File holding the password (first line); relative: read from "
        "$CREDENTIALS_DIRECTORY under systemd, else next to the line file.",
    )
    password_env: str | None = Field(
        None, min_length=1, description="Environment variable holding the password."
    )
    publishing_interval_ms: int = Field(
        50, ge=10, le=60_000, description="Subscription publishing interval."
    )
    request_timeout_s: float = Field(
        4.0,
        gt=0,
        le=120,
        description="Time allowed for one request (connect, read, write, browse).",
    )
    session_timeout_s: float = Field(
        30.0, ge=1, le=3600, description="OPC UA session timeout the client asks for."
    )
    watchdog_s: float = Field(
        5.0,
        gt=0,
        le=600,
        description="A session that answers no "
        "request (keepalive read of the server state) for this long is "
        "dropped and reconnected.",
    )
    signals: dict[SignalName, OpcuaSignal] = Field({}, description="The PLC's signals by name.")

    @field_validator("endpoint")
    @classmethod
    def _opc_tcp(cls, v: str) -> str:
        if not v.startswith("opc.tcp://") or len(v) <= len("opc.tcp://"):
            raise ValueError("an OPC UA endpoint is opc.tcp://host:port")
        return v

    @model_validator(mode="after")
    def _credentials(self) -> OpcuaConfig:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("give the password either by password_file or by password_env")
        if (self.password_file or self.password_env) and self.username is None:
            raise ValueError("a password needs a username")
        if (self.certificate_file is None) != (self.private_key_file is None):
            raise ValueError("certificate_file and private_key_file go together")
        return self


# --- Modbus ------------------------------------------------------------------------------------

ModbusTable = Literal["coil", "discrete_input", "holding_register", "input_register"]


class ModbusSignal(SignalBase):
    unit_id: int = Field(1, ge=0, le=255, description="Modbus unit (slave) id on the line.")
    table: ModbusTable = Field(
        description="Which Modbus table: coils and discrete inputs hold "
        "bits, holding and input registers 16-bit words."
    )
    address: int = Field(
        ge=0,
        le=65535,
        description="Protocol address, 0-based (register "
        "40001 of the old convention is `holding_register` 0).",
    )
    bit: int | None = Field(
        None,
        ge=0,
        le=15,
        description="For `bool` in a register: the bit number, 0 = least significant.",
    )
    length: int | None = Field(
        None,
        ge=1,
        le=125,
        description="For `string`: its length in registers (two characters each).",
    )
    poll: str = Field("default", description="Poll group (see `poll_groups`).")

    @model_validator(mode="after")
    def _fits_table(self) -> ModbusSignal:
        bits = self.table in ("coil", "discrete_input")
        if bits and self.type != "bool":
            raise ValueError(f"a {self.table} holds a bool, not {self.type}")
        if self.bit is not None and (bits or self.type != "bool"):
            raise ValueError("`bit` selects a bool inside a register")
        if self.type == "string" and self.length is None:
            raise ValueError("a string needs `length` (in registers)")
        if self.type in ("string", "datetime", "int8", "uint8") and bits:
            raise ValueError(f"{self.type} does not fit in a {self.table}")
        if self.type == "datetime":
            raise ValueError("Modbus has no datetime type: read the parts as integers")
        if self.writable and self.table in ("discrete_input", "input_register"):
            raise ValueError(f"{self.table.replace('_', ' ')}s are read-only by the protocol")
        return self


class PollGroup(Model):
    period_ms: int = Field(100, ge=10, le=3_600_000, description="Poll period.")


class ModbusConfig(DeviceBase):
    kind: Literal["modbus"] = Field(
        description="A PLC or controller spoken to over Modbus "
        "(TCP, RTU on a serial line, or RTU through a TCP gateway): "
        "polled in groups, with writes."
    )
    transport: Literal["tcp", "rtu", "rtu_over_tcp"] = Field(
        "tcp",
        description="`tcp`: Modbus "
        "TCP; `rtu`: serial line; "
        "`rtu_over_tcp`: RTU frames through a "
        "serial-to-Ethernet gateway.",
    )
    host: str | None = Field(None, min_length=1, description="Host (tcp, rtu_over_tcp).")
    port: int = Field(502, ge=1, le=65535, description="TCP port (tcp, rtu_over_tcp).")
    serial_port: str | None = Field(
        None, min_length=1, description="Serial device (rtu), e.g. `/dev/serial/by-id/...`."
    )
    baudrate: int = Field(19200, description="Line speed (rtu).")
    parity: Literal["none", "even", "odd"] = Field(
        "even", description="Parity (rtu); Modbus RTU's default is even."
    )
    stopbits: Literal[1, 2] = Field(1, description="Stop bits (rtu).")
    byte_order: Literal["big", "little"] = Field(
        "big", description="Byte order inside a 16-bit register; Modbus is big-endian."
    )
    word_order: Literal["big", "little"] = Field(
        "big",
        description="Order of the registers of "
        "a 32/64-bit value: `big` = most significant "
        "word first; `little` = least first (Schneider "
        "Modicon and many others).",
    )
    timeout_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Time allowed for one response. A "
        "unit that does not answer is reported and skipped; the others on "
        "the line go on.",
    )
    poll_groups: dict[str, PollGroup] = Field(
        {"default": PollGroup()},
        description="Named poll groups and their periods.",
    )
    max_registers_per_read: int = Field(
        125,
        ge=1,
        le=125,
        description="Largest read request (the protocol allows 125 registers / 2000 bits).",
    )
    max_gap_registers: int = Field(
        8,
        ge=0,
        le=124,
        description="Signals closer than this are "
        "read in one request, unused addresses in between included.",
    )
    signals: dict[SignalName, ModbusSignal] = Field({}, description="The device's signals by name.")

    @model_validator(mode="after")
    def _transport(self) -> ModbusConfig:
        if self.transport == "rtu" and self.serial_port is None:
            raise ValueError("transport rtu needs serial_port")
        if self.transport != "rtu" and self.host is None:
            raise ValueError(f"transport {self.transport} needs host")
        for name, sig in self.signals.items():
            if sig.poll not in self.poll_groups:
                raise ValueError(
                    f"signal {name!r} is in poll group {sig.poll!r}, which is not in poll_groups"
                )
        return self


PLC_KINDS = frozenset({"opcua", "modbus"})
