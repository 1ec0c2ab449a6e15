"""The reader configuration of the simulated LLRP reader: what GET_READER_CONFIG reports and
SET_READER_CONFIG sets, its factory defaults for a reader model, and the checks a request must
pass against that model.

The checks raise `LlrpError` with the parameter and field at fault, and run before anything of
a request is applied, so that a refused SET_READER_CONFIG changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simulators import llrp_codec as codec
from simulators.llrp_codec import AntennaConfig, LlrpError, P, ReportSpec, Status
from simulators.llrp_models import ReaderModel

EVENT_GPI, EVENT_ROSPEC = 1, 2  # EventNotificationState event types


@dataclass(slots=True)
class AntennaSettings:
    """One antenna's settings in the reader configuration (AntennaConfiguration)."""

    power_index: int
    mode_index: int
    channel: int = 1
    sensitivity: int = 1
    tari: int = 0
    session: int = 2
    population: int = 32
    transit_ms: int = 0

    def apply(self, conf: AntennaConfig) -> None:
        self.sensitivity = conf.receiver_sensitivity or self.sensitivity
        self.channel = conf.channel or self.channel
        self.power_index = conf.power_index or self.power_index
        inv = conf.inventory
        if inv is not None:
            self.mode_index = inv.mode_index if inv.mode_index is not None else self.mode_index
            self.tari = inv.tari if inv.tari is not None else self.tari
            self.session = inv.session if inv.session is not None else self.session
            if inv.tag_population is not None:
                self.population = inv.tag_population
            if inv.tag_transit_ms is not None:
                self.transit_ms = inv.tag_transit_ms

    def parameter(self, antenna: int) -> bytes:
        """The AntennaConfiguration parameter of GET_READER_CONFIG_RESPONSE."""
        return codec.antenna_configuration(
            antenna,
            sensitivity=self.sensitivity,
            channel=self.channel,
            power_index=self.power_index,
            mode_index=self.mode_index,
            tari=self.tari,
            session=self.session,
            population=self.population,
            transit_ms=self.transit_ms,
        )


@dataclass
class ReaderConfig:
    """The reader configuration: what GET_READER_CONFIG reports and SET_READER_CONFIG sets."""

    antennas: dict[int, AntennaSettings]
    events: dict[int, bool] = field(default_factory=lambda: dict.fromkeys(range(10), False))
    report: ReportSpec = field(default_factory=lambda: ReportSpec(1, 1))
    access_report_trigger: int = 0
    keepalive: tuple[int, int] = (0, 0)  # trigger type (1: periodic), interval ms
    gpi_enabled: dict[int, bool] = field(default_factory=dict)
    hold: bool = False  # HoldEventsAndReportsUponReconnect

    @classmethod
    def defaults(cls, model: ReaderModel) -> ReaderConfig:
        top = len(model.power_table_cdbm)
        mode = model.modes[0].id
        return cls(
            {a: AntennaSettings(top, mode) for a in range(1, model.antennas + 1)},
            gpi_enabled=dict.fromkeys(range(1, model.num_gpi + 1), True),
        )

    def apply(self, update: codec.ReaderConfigUpdate) -> None:
        """The settings of a checked SET_READER_CONFIG (its reset, keepalive and GPO writes are
        the reader's to carry out)."""
        self.events.update(update.events)
        for conf in update.antenna_configs:
            for a in [conf.antenna] if conf.antenna else sorted(self.antennas):
                self.antennas[a].apply(conf)
        if update.report is not None:
            self.report = update.report
        if update.access_report_trigger is not None:
            self.access_report_trigger = update.access_report_trigger
        self.gpi_enabled.update(update.gpi_configs)
        if update.hold_events is not None:
            self.hold = update.hold_events


def check_update(model: ReaderModel, update: codec.ReaderConfigUpdate) -> None:
    """Everything a SET_READER_CONFIG asks, checked before any of it is applied."""
    if update.antenna_properties:
        raise LlrpError(
            Status.M_PARAMETER_ERROR,
            "antenna properties cannot be set on this reader (CanSetAntennaProperties 0)",
            param=P.ANTENNA_PROPERTIES,
            param_code=Status.P_UNSUPPORTED_PARAMETER,
        )
    for conf in update.antenna_configs:
        check_antenna_config(model, conf)
    for port in update.gpo_writes:
        if not 1 <= port <= model.num_gpo:
            raise codec.out_of_range(P.GPO_WRITE_DATA, 0, f"GPO port {port} does not exist")
    for port in update.gpi_configs:
        if not 1 <= port <= model.num_gpi:
            raise codec.out_of_range(P.GPI_PORT_CURRENT_STATE, 0, f"GPI port {port} does not exist")
    if update.keepalive is not None and update.keepalive[0] == 1 and update.keepalive[1] == 0:
        raise codec.out_of_range(P.KEEPALIVE_SPEC, 1, "a periodic keepalive needs an interval")


def check_antenna_config(model: ReaderModel, conf: AntennaConfig) -> None:
    """An AntennaConfiguration (of SET_READER_CONFIG or in an ROSpec) that `model` can do."""
    where = P.ANTENNA_CONFIGURATION
    if conf.antenna > model.antennas:
        raise codec.out_of_range(where, 0, f"antenna {conf.antenna} does not exist")
    powers = len(model.power_table_cdbm)
    if conf.power_index is not None and not 1 <= conf.power_index <= powers:
        text = f"transmit power index {conf.power_index} is not in the table (1..{powers})"
        raise codec.out_of_range(P.RF_TRANSMITTER, 2, text)
    if conf.channel is not None and not 1 <= conf.channel <= len(model.frequencies_khz):
        raise codec.out_of_range(P.RF_TRANSMITTER, 1, f"channel {conf.channel} does not exist")
    if conf.receiver_sensitivity not in (None, 0, 1):
        raise codec.out_of_range(P.RF_RECEIVER, 0, "receiver sensitivity index is not 1")
    inv = conf.inventory
    modes = {m.id for m in model.modes}
    if inv is not None and inv.mode_index is not None and inv.mode_index not in modes:
        raise codec.out_of_range(
            P.C1G2_RF_CONTROL, 0, f"RF mode {inv.mode_index} is not in the mode table"
        )
