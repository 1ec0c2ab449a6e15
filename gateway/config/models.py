"""The line file, as pydantic models: the configuration contract of the gateway.

Every field has a description (it feeds docs/configuration.md and the JSON Schema that
`tracegate schema` prints), units are in field names, unknown keys are errors. Device entries are
a union discriminated by `kind`; a device entry is merged over its profile's defaults before it is
validated (gateway.config.loader).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.base import CodeScheme, DeviceBase, Id, Model
from gateway.config.plc import ModbusConfig, OpcuaConfig
from gateway.config.rfid import LlrpConfig, PortalConfig
from gateway.config.serialization import (
    AggregationConfig,
    CommandsConfig,
    CommissionConfig,
    EpcisConfig,
    PoolConfig,
    RulesConfig,
    StationEpcisConfig,
    TraceConfig,
    WindowConfig,
    WorkOrderSignal,
)

# --- gateway -----------------------------------------------------------------------------------


class GatewayConfig(Model):
    id: Id = Field(
        description="Identity of this gateway: MQTT client id, status topic, `gateway` "
        "field of every event. Unique in the plant."
    )
    site: Id = Field(description="Plant or site name; part of the default topic prefix.")
    line: Id = Field(description="Production line this gateway serves; part of every event topic.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest level of log events written to stdout."
    )
    log_format: Literal["json", "console"] = Field(
        "json",
        description="`json`: one JSON object a line (for journald). `console`: coloured "
        "text for a terminal.",
    )


# --- MQTT --------------------------------------------------------------------------------------


class TlsConfig(Model):
    ca_file: Path | None = Field(
        None,
        description="PEM file of the CA(s) that signed the broker's "
        "certificate. Empty: the system trust store.",
    )
    cert_file: Path | None = Field(None, description="PEM client certificate, for mutual TLS.")
    key_file: Path | None = Field(None, description="PEM private key of `cert_file`.")
    verify_hostname: bool = Field(
        True,
        description="Check that the broker's certificate names "
        "`mqtt.host`. Turn off only for test brokers.",
    )

    @model_validator(mode="after")
    def _cert_and_key(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS needs both)")
        return self


class MqttConfig(Model):
    host: str = Field("localhost", min_length=1, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port (8883 is usual for TLS).")
    protocol: Literal["3.1.1", "5"] = Field("5", description="MQTT protocol version.")
    client_id: str | None = Field(
        None, min_length=1, max_length=64, description="MQTT client id. Default: the gateway id."
    )
    topic_prefix: str = Field(
        "tracegate/{site}",
        min_length=1,
        description="Prefix of every topic. `{site}`, `{line}` and `{gateway}` are replaced.",
    )
    payload: Literal["json", "epcis"] = Field(
        "json",
        description="`json`: each event as a tracegate.event/1 document; `epcis`: as an EPCIS "
        "2.0 JSON-LD document (docs/epcis.md), and events EPCIS has no place for (device "
        "states, gaps, no-reads) still as tracegate.event/1.",
    )
    keepalive_s: int = Field(
        30,
        ge=5,
        le=3600,
        description="MQTT keepalive. A dead connection "
        "is noticed within 1.5 times this; nothing is lost meanwhile, since "
        "rows leave the journal only on PUBACK.",
    )
    connect_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Time allowed for TCP, TLS and CONNACK before the attempt counts as failed.",
    )
    inflight_max: int = Field(
        50,
        ge=1,
        le=65535,
        description="Most QoS 1 messages awaiting PUBACK "
        "at once. Lowered to the broker's Receive Maximum (MQTT 5) when that "
        "is smaller.",
    )
    replay_threshold_events: int = Field(
        10_000,
        ge=0,
        description="Backlog size, found at connect, above which live events are "
        "published ahead of the backlog (two lanes, see docs/architecture.md). Below it, events "
        "leave strictly in `seq` order. 0: always two lanes.",
    )
    backoff_initial_s: float = Field(0.5, gt=0, le=60, description="First reconnect delay.")
    backoff_max_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Reconnect delay cap; delays double up to it, with +-25 % jitter.",
    )
    username: str | None = Field(None, min_length=1, description="MQTT user name.")
    password_file: Path | None = Field(
        None,
        description="File holding the MQTT password (first "
        "line). Works with systemd `LoadCredential=`.",
    )
    password_env: str | None = Field(
        None,
        min_length=1,
        description="Name of the environment variable holding the MQTT password.",
    )
    tls: TlsConfig | None = Field(None, description="TLS to the broker. Absent: plain TCP.")

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttConfig:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("give the password either by password_file or by password_env")
        if (self.password_file or self.password_env) and self.username is None:
            raise ValueError("a password needs a username")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be at least backoff_initial_s")
        return self


# --- journal -----------------------------------------------------------------------------------


class JournalConfig(Model):
    path: Path = Field(
        Path("/var/lib/tracegate/journal.db"),
        description="SQLite file of the "
        "durable outbox. A relative path is relative to the line file.",
    )
    max_rows: int = Field(
        5_000_000,
        ge=10,
        description="Quota: most events held (unsent). When "
        "reached, new events wait (back-pressure) and what devices produce "
        "meanwhile is counted and reported by a `gap` event.",
    )
    max_mib: int = Field(2048, ge=1, description="Quota: most MiB of event payload held.")
    warn_at_percent: int = Field(
        80,
        ge=1,
        le=100,
        description="Log `outbox_high` when the outbox passes this share of either quota. "
        "A full outbox takes new events again only once drained below it (hysteresis).",
    )
    max_file_mib: int | None = Field(
        None,
        ge=1,
        description="Hard cap on the database file, "
        "enforced by SQLite. Beyond it writes fail as on a full "
        "disk: events wait, nothing is lost. Empty: no cap (the "
        "quotas above still apply).",
    )
    commit_max_events: int = Field(
        4096,
        ge=1,
        le=100_000,
        description="Most events per "
        "transaction (group commit takes whatever is waiting, up to "
        "this).",
    )


# --- supervision -------------------------------------------------------------------------------


class SupervisionConfig(Model):
    backoff_initial_s: float = Field(
        0.5, gt=0, le=60, description="First delay before a device is reconnected after a failure."
    )
    backoff_max_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Reconnect delay cap for devices; delays double up to it, with +-25 % jitter.",
    )
    queue_size: int = Field(
        10_000,
        ge=10,
        le=1_000_000,
        description="Observations held between "
        "devices and the binder. What does not fit is counted and reported "
        "by a `gap` event, never dropped silently.",
    )
    stop_timeout_s: float = Field(
        1.5,
        gt=0,
        le=60,
        description="On SIGTERM, time allowed to commit what is in flight before exiting.",
    )


# --- status page and metrics ------------------------------------------------------------------


class StatusConfig(Model):
    enabled: bool = Field(
        True,
        description="Serve the status page (`/`), `/status.json`, `/metrics` (Prometheus) and "
        "`/healthz` over HTTP. Read-only: nothing served can change the gateway's state.",
    )
    listen_host: str = Field(
        "127.0.0.1",
        description="Address the HTTP server listens on. The default, loopback, keeps it on "
        "the line PC (reach it from elsewhere with `ssh -L`). Any other address (`0.0.0.0`, "
        "an interface's address) is a deliberate choice that exposes the page and metrics "
        "to that network without authentication; the gateway logs `status_page_exposed`.",
    )
    port: int = Field(
        9780,
        ge=0,
        le=65535,
        description="TCP port of the status page and metrics. 0: a free port chosen at start "
        "(logged in `status_server_started`; `tracegate status` cannot find it then). A port "
        "in use is logged (`status_server_failed`) and retried; the gateway records on.",
    )
    recent_events: int = Field(
        20,
        ge=1,
        le=500,
        description="How many of the latest events and rejects the page and `/status.json` show.",
    )

    @field_validator("listen_host")
    @classmethod
    def _an_address(cls, v: str) -> str:
        if v == "localhost":
            return v
        try:
            ipaddress.ip_address(v)
        except ValueError:
            raise ValueError(
                "an IP address to listen on (127.0.0.1, ::1, 0.0.0.0, an interface's address) "
                "or `localhost`"
            ) from None
        return v

    @property
    def loopback(self) -> bool:
        return self.listen_host == "localhost" or ipaddress.ip_address(self.listen_host).is_loopback


# --- devices -----------------------------------------------------------------------------------


class ScannerFraming(Model):
    terminator: Literal["cr", "lf", "crlf", "any"] = Field(
        "any",
        description="What ends a code: `cr`, `lf`, `crlf`, or `any` of them (empty codes "
        "between CR and LF are ignored).",
    )
    max_code_bytes: int = Field(
        1024,
        ge=16,
        le=65536,
        description="Longer frames are discarded "
        "and reported (rate-limited warning): a missing terminator or "
        "noise, not a code.",
    )
    noread: list[str] = Field(
        ["NOREAD"],
        description="Exact texts the scanner sends when "
        "triggered without a decode; each becomes a `noread` event.",
    )

    @field_validator("noread")
    @classmethod
    def _noread_texts(cls, v: list[str]) -> list[str]:
        for text in v:
            if not text or "\r" in text or "\n" in text:
                raise ValueError(f"a NOREAD text is non-empty and has no CR or LF: {text!r}")
            try:
                text.encode("latin-1")
            except UnicodeEncodeError:
                raise ValueError(f"a NOREAD text must be Latin-1: {text!r}") from None
        return v


class SerialScannerConfig(DeviceBase):
    kind: Literal["serial_scanner"] = Field(
        description="A scanner on a serial port: RS-232, "
        "USB-CDC (virtual COM port), or a serial server."
    )
    port: str = Field(
        min_length=1,
        description="Device path (prefer the stable "
        "`/dev/serial/by-id/...`) or a pyserial URL such as `socket://host:port`.",
    )
    baudrate: int = Field(9600, description="Line speed in baud.")
    bytesize: Literal[7, 8] = Field(8, description="Data bits.")
    parity: Literal["none", "even", "odd", "mark", "space"] = Field("none", description="Parity.")
    stopbits: float = Field(1, description="Stop bits: 1, 1.5 or 2.")
    rtscts: bool = Field(False, description="RTS/CTS hardware flow control.")
    xonxoff: bool = Field(False, description="XON/XOFF software flow control.")
    framing: ScannerFraming = Field(
        default_factory=ScannerFraming, description="How codes are delimited on the line."
    )

    @field_validator("stopbits")
    @classmethod
    def _stopbits(cls, v: float) -> float:
        if v not in (1, 1.5, 2):
            raise ValueError("stop bits are 1, 1.5 or 2")
        return v

    @field_validator("baudrate")
    @classmethod
    def _standard_baud(cls, v: int) -> int:
        if v not in STANDARD_BAUDRATES:
            raise ValueError(
                f"not a standard baud rate; use one of {', '.join(map(str, STANDARD_BAUDRATES))}"
            )
        return v


STANDARD_BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)


class TcpScannerConfig(DeviceBase):
    kind: Literal["tcp_scanner"] = Field(
        description="A fixed-mount scanner that is a TCP server "
        "(Cognex, Keyence, Datalogic ...): the gateway connects "
        "and reads framed codes."
    )
    host: str = Field(min_length=1, description="Scanner host name or address.")
    port: int = Field(ge=1, le=65535, description="Scanner TCP port of its result channel.")
    connect_timeout_s: float = Field(
        5.0, gt=0, le=120, description="Time allowed for the TCP connection."
    )
    keepalive_s: int = Field(
        10,
        ge=1,
        le=7200,
        description="TCP keepalive idle time: a scanner "
        "that vanished without closing is noticed about this plus 3 probes "
        "of 2 s later. Scanners may rightly stay silent for hours.",
    )
    framing: ScannerFraming = Field(
        default_factory=ScannerFraming, description="How codes are delimited on the stream."
    )


DeviceConfig = Annotated[
    SerialScannerConfig | TcpScannerConfig | OpcuaConfig | ModbusConfig | LlrpConfig,
    Field(discriminator="kind"),
]

SCANNER_KINDS = frozenset({"serial_scanner", "tcp_scanner"})


# --- stations ----------------------------------------------------------------------------------


class SignalRef(Model):
    device: Id = Field(description="A PLC device (`opcua` or `modbus`) of this line.")
    signal: str = Field(min_length=1, description="The name of one of its signals.")


class IdentityConfig(Model):
    sources: list[Id] = Field(
        [],
        description="Scanners whose reads identify the unit "
        "at this station (each device serves one station).",
    )
    signal: SignalRef | None = Field(
        None,
        description="A PLC string signal holding the unit's identity (e.g. a code read by the "
        "machine's own camera), read with each cycle's snapshot.",
    )
    schemes: list[CodeScheme] = Field(
        ["sgtin", "sscc"],
        min_length=1,
        description="Identity schemes accepted here. "
        "`sgtin`: GTIN + serial; `sscc`: logistic unit; `lgtin`: GTIN + lot; `gtin`: GTIN alone; "
        "`plain`: a non-GS1 serial matched by `plain_pattern` (required with it). Codes of other "
        "schemes are `rejected`. (RFID tags: see `portal.schemes`.)",
    )
    plain_pattern: str | None = Field(
        None,
        description="Regular expression a whole non-GS1 "
        "code must match to count as a `plain` serial.",
    )

    @field_validator("plain_pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            import re

            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return v

    @model_validator(mode="after")
    def _plain_needs_pattern(self) -> IdentityConfig:
        if not self.sources and self.signal is None:
            raise ValueError("an identity comes from `sources` (scanners) or a PLC `signal`")
        if "plain" in self.schemes and self.plain_pattern is None:
            raise ValueError(
                "accepting `plain` serials needs `plain_pattern`: the regular "
                "expression your serials match"
            )
        return self


class TriggerConfig(SignalRef):
    edge: Literal["rising", "falling", "change"] = Field(
        "rising",
        description="`rising`/`falling`: a bool signal's edge ends a cycle; `change`: any new "
        "value does (a cycle counter: the robust choice over Modbus, whose polling can miss a "
        "short pulse).",
    )


class HandshakeConfig(Model):
    device: Id = Field(description="The PLC that raises the request.")
    request: str = Field(
        min_length=1,
        description="Bool signal the PLC raises when a cycle's "
        "data is ready (and keeps raised until acknowledged).",
    )
    ack: str = Field(
        min_length=1,
        description="Writable bool signal the gateway raises once "
        "the record is committed, and drops once the PLC has dropped its request.",
    )
    verdict: str | None = Field(
        None,
        min_length=1,
        description="Writable integer signal "
        "written before the ack: 1 = recorded OK, 2 = identity "
        "rejected, 3 = no identity read.",
    )
    ack_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="The PLC should drop its "
        "request within this after the ack; if not, a "
        "`handshake.timeout` event says so (once).",
    )


class ParameterConfig(SignalRef):
    name: Id | None = Field(
        None, description="Name of the parameter in events. Default: the signal name."
    )
    min: float | None = Field(
        None, description="Lower tolerance: a value below is recorded with `in_tolerance: false`."
    )
    max: float | None = Field(
        None, description="Upper tolerance: a value above is recorded with `in_tolerance: false`."
    )

    @property
    def param_name(self) -> str:
        return self.name or self.signal


class ResultConfig(SignalRef):
    ok_values: list[bool | int | str] = Field(
        [True, 1, "OK"],
        min_length=1,
        description="Values of the signal that mean OK; any other value is NOK.",
    )


class OutputRule(Model):
    # Not `on:`: YAML 1.1 reads a bare `on` key as the boolean true.
    events: list[Literal["identified", "rejected", "noread", "step.completed"]] = Field(
        min_length=1,
        description="Event types of this station that fire the output: a stack light on "
        "`rejected`, a gate on `identified` ... (a `step.completed` fires on any result).",
    )
    result: Literal["OK", "NOK"] | None = Field(
        None, description="With `step.completed`: only cycles with this result."
    )
    direction: Literal["in", "out"] | None = Field(
        None, description="With portal passes: only passes in this direction."
    )
    device: Id = Field(
        description="An RFID reader (`signal: gpoN`, its output ports) or a PLC (a writable "
        "signal)."
    )
    signal: str = Field(min_length=1, description="`gpo1`, `gpo2` ... or a PLC signal name.")
    value: bool | int = Field(True, description="The value written.")
    pulse_ms: int | None = Field(
        None,
        ge=10,
        le=3_600_000,
        description="Written back to its opposite (false, 0) this long after; a newer firing "
        "restarts the pulse. Empty: the value stays.",
    )


class StationConfig(Model):
    id: Id = Field(description="Station name: part of event topics and the `station` field.")
    step: Id | None = Field(
        None, description="Process step recorded at this station. Default: the station id."
    )
    identity: IdentityConfig | None = Field(
        None, description="Where unit identities come from, and which are valid here."
    )
    portal: PortalConfig | None = Field(
        None,
        description="An RFID portal at this station: each tag pass becomes an "
        "`identified` event (direction, antennas, reads), and binds the station's next cycle.",
    )
    read_window: SignalRef | None = Field(
        None,
        description="A PLC bool signal (a light barrier, a 'part present') that opens the "
        "portal reader's inventory while true (the reader's `inventory: commanded`).",
    )
    trigger: TriggerConfig | None = Field(
        None,
        description="A PLC signal whose edge ends a cycle: a `step.completed` event with "
        "the cycle's parameters and result, read in one request when it fires.",
    )
    handshake: HandshakeConfig | None = Field(
        None,
        description="The PLC request/acknowledge handshake: the record is committed "
        "before the acknowledgement is written (see docs/plc.md).",
    )
    parameters: list[ParameterConfig] = Field(
        [], description="Process parameters recorded with each cycle, with tolerances."
    )
    result: ResultConfig | None = Field(
        None, description="The signal holding the cycle's result (OK/NOK)."
    )
    work_order: str | None = Field(
        None,
        min_length=1,
        description="Work order stamped on events until one is set by command or signal.",
    )
    work_order_signal: WorkOrderSignal | None = Field(
        None,
        description="A PLC string signal holding this station's active work order (each change "
        "becomes `work_order.changed`).",
    )
    window: WindowConfig = Field(
        default_factory=WindowConfig,
        description="Binding by time: which scanned or portal identities belong to a cycle.",
    )
    rules: RulesConfig = Field(
        default_factory=RulesConfig,
        description="What a unit must satisfy here (work order GTINs, uniqueness, route); a "
        "unit that does not is `rejected` with the reason.",
    )
    aggregation: AggregationConfig | None = Field(
        None,
        description="Genealogy at this station: components into a unit (assembly), units into "
        "a case or cases into a pallet (packing), or taking them out (unpacking, rework).",
    )
    commission: CommissionConfig | None = Field(
        None,
        description="Serial commissioning: on each handshake request a serial is taken from a "
        "pool, recorded (`commissioned`) and written to the marker, then acknowledged.",
    )
    verdict: SignalRef | None = Field(
        None,
        description="A writable integer PLC signal that receives this station's verdict on each "
        "identity read by a scanner or portal (1 OK, 2 rejected or `rules.verdict_codes`), "
        "after its record is committed: a diverter for parts that must not go on.",
    )
    epcis: StationEpcisConfig = Field(
        default_factory=StationEpcisConfig,
        description="How this station appears in EPCIS output (`mqtt.payload: epcis`).",
    )
    outputs: list[OutputRule] = Field(
        [],
        description="Outputs driven by this station's events (stack lights, gates, "
        "diverters), written once the event is committed.",
    )

    @model_validator(mode="after")
    def _complete(self) -> StationConfig:
        if self.trigger is not None and self.handshake is not None:
            raise ValueError("a station's cycle ends by `trigger` or by `handshake`, not both")
        cycle = self.trigger is not None or self.handshake is not None
        if (self.parameters or self.result is not None) and not cycle:
            raise ValueError(
                "parameters and result are read when a cycle ends: give a "
                "`trigger` or a `handshake`"
            )
        if self.identity is None and self.portal is None and not cycle:
            raise ValueError(
                "a station needs an `identity`, a `portal`, a `trigger` or a `handshake`"
            )
        if self.read_window is not None and self.portal is None:
            raise ValueError("a `read_window` opens a portal's inventory: give the `portal`")
        if self.identity is not None and self.identity.signal is not None and not cycle:
            raise ValueError(
                "a PLC identity signal is read when a cycle ends: give a `trigger` or a `handshake`"
            )
        names = [p.param_name for p in self.parameters]
        if len(names) != len(set(names)):
            raise ValueError("parameter names must be unique in a station")
        if self.commission is not None and self.handshake is None:
            raise ValueError(
                "commissioning answers a PLC's request for a serial: give the `handshake`"
            )
        if self.verdict is not None and self.handshake is not None:
            raise ValueError(
                "a handshake station writes its verdict with the handshake (`handshake.verdict`)"
            )
        if self.window.after_ms and self.handshake is not None:
            raise ValueError(
                "`window.after_ms` delays a cycle's record; a handshake's PLC waits for its "
                "ack, so identities must come before the request (`before_ms`)"
            )
        if self.aggregation is not None and cycle:
            raise ValueError(
                "an aggregation closes by `count`, by the order of parent and children, or "
                "after `max_open_s`, not by a PLC cycle: give it a station of its own"
            )
        if self.aggregation is not None and self.identity is None and self.portal is None:
            raise ValueError("an aggregation needs identities: give `identity` or `portal`")
        return self

    @property
    def step_name(self) -> str:
        return self.step or self.id


# --- the line file -----------------------------------------------------------------------------


class LineConfig(Model):
    gateway: GatewayConfig = Field(description="Who this gateway is.")
    mqtt: MqttConfig = Field(
        default_factory=MqttConfig, description="The plant broker events are forwarded to."
    )
    journal: JournalConfig = Field(
        default_factory=JournalConfig, description="The durable local outbox."
    )
    supervision: SupervisionConfig = Field(
        default_factory=SupervisionConfig,
        description="Device reconnection and the queue between devices and binder.",
    )
    profile_dirs: list[Path] = Field(
        [],
        description="Directories searched for device profiles "
        "before the bundled ones (relative to the line file).",
    )
    devices: list[DeviceConfig] = Field([], description="The devices this gateway reads.")
    stations: list[StationConfig] = Field(
        [], description="The stations of the line and what binds their events."
    )
    pools: list[PoolConfig] = Field(
        [],
        description="Serial pools for commissioning; their serials come from the MES by the "
        "`serial-pool` command and are kept in the journal.",
    )
    commands: CommandsConfig = Field(
        default_factory=CommandsConfig, description="Commands from the MES over MQTT."
    )
    trace: TraceConfig = Field(
        default_factory=TraceConfig,
        description="The local trace index: what rules and `tracegate trace` know of units.",
    )
    epcis: EpcisConfig = Field(
        default_factory=EpcisConfig,
        description="EPCIS 2.0 output (`mqtt.payload: epcis`): identifiers of places and orders.",
    )
    status: StatusConfig = Field(
        default_factory=StatusConfig,
        description="The local status page and the Prometheus metrics (docs/status.md).",
    )

    def topic_prefix(self) -> str:
        g = self.gateway
        return self.mqtt.topic_prefix.format(site=g.site, line=g.line, gateway=g.id)
