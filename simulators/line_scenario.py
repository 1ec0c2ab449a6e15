"""The scenario of a virtual line (simulators.line): one YAML file that says what the line is
and what happens on it. Owns the file format, its validation and its error messages.

A scenario names the line (`line`), the products and `work_orders`, the serial `pools`, the
`stations` with their devices and pace, the `route` the units take, and the `faults`. Each
station runs one of the station programs the virtual line knows (`program`):

- `label`: a scanner reads the unit's pre-printed label (a scan station);
- `mark`: a PLC asks the gateway for a serial (handshake), marks a part with what was written,
  and feeds the parts to an `assembly` station (`feeds`);
- `handshake`: a PLC works the unit, its camera reads the label into `part_id`, and hands
  parameters and result over by request and acknowledge;
- `trigger`: a scanner reads the unit, then the PLC works it and counts its cycle counter up;
- `assembly`: an operator scans a part from the feeder (child), then the unit (parent);
- `packing`: `case_size` units are scanned, then the case's SSCC label (parent);
- `portal`: cases pass an RFID portal (SSCC-96 tags) in `direction`.

Errors name the file, line and column, the field and the value, every problem at once:
`line-x.yaml:12:5: stations[1].plc.profile: no such PLC profile (got 'plcs/nope')`.
See simulators/scenarios/line-assembly.yaml for a complete example.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.config import yamlpos
from gateway.config.loader import bundled_profiles_dir

Program = Literal["label", "mark", "handshake", "trigger", "assembly", "packing", "portal"]
GTIN14 = Annotated[str, Field(pattern=r"^\d{14}$")]
PathKey = tuple[str | int, ...]

# What each program needs of its station.
_NEEDS: dict[str, tuple[str, ...]] = {
    "label": ("scanner",),
    "mark": ("plc", "commission", "feeds"),
    "handshake": ("plc",),
    "trigger": ("plc", "scanner"),
    "assembly": ("scanner",),
    "packing": ("scanner",),
    "portal": ("reader",),
}
_DEVICE_KINDS = {
    "scanner": ("tcp_scanner", "serial_scanner"),
    "plc": ("opcua", "modbus"),
    "reader": ("llrp",),
}
PLC_PROGRAM_SIGNALS = ("part_id", "result", "cycle_counter", "request", "ack", "verdict")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LineNames(_Model):
    gateway: str = Field("gw-line", min_length=1, description="The gateway's id.")
    site: str = Field("plant-1", min_length=1)
    line: str = Field("line-1", min_length=1)


class WorkOrder(_Model):
    work_order: str = Field(min_length=1)
    product: str | None = None
    gtins: list[GTIN14] = Field(min_length=1, description="GTINs of the housings it makes.")
    lot: str = Field(min_length=1, max_length=20)
    expiry: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    units: int | None = Field(
        None, ge=1, description="Units entering under it (then the next); the last: the rest."
    )


class PoolLoad(_Model):
    ranges: list[tuple[int, int]] = []
    serials: list[str] = []


class Pool(_Model):
    id: str = Field(min_length=1)
    template: str = "{seq}"
    low_water: int = Field(1000, ge=0)
    load: PoolLoad = Field(description="What the MES delivers by `cmd/serial-pool` at start.")


class Device(_Model):
    id: str = Field(min_length=1)
    kind: str
    profile: str = Field(min_length=1)
    signals: dict[str, dict[str, Any]] = Field(
        {}, description="PLC signals added to (or changing) the profile's, as in a line file."
    )


class ParameterSpec(_Model):
    name: str = Field(min_length=1, description="The parameter, and the PLC signal holding it.")
    mean: float
    sd: float = Field(ge=0)
    min: float | None = None
    max: float | None = None


class Commission(_Model):
    pool: str
    gtin: GTIN14


class Station(_Model):
    id: str = Field(min_length=1)
    step: str = Field(min_length=1)
    program: Program
    scanner: Device | None = None
    plc: Device | None = None
    reader: Device | None = None
    rules: dict[str, Any] = Field({}, description="The line file's `rules`, as they are.")
    parameters: list[ParameterSpec] = []
    commission: Commission | None = None
    feeds: str | None = Field(None, description="mark: the assembly station its parts go to.")
    cycle_s: float = Field(0.1, ge=0, le=60, description="How long the PLC works a unit.")
    scan_gap_s: float = Field(0.05, ge=0, le=60, description="Between two scans of one job.")
    window_ms: int = Field(3000, ge=1, description="trigger: the gateway's window.before_ms.")
    index_s: float = Field(
        0.0,
        ge=0,
        le=60,
        description="After a unit's job, before the next one's: unloading and loading. At a "
        "trigger station the next unit's read must come clearly after the cycle's end as the "
        "gateway sees it (its poll period and jitter), or both reads fall in one window.",
    )
    divert_nok: bool = Field(False, description="NOK units are taken off the line here.")
    case_size: int = Field(5, ge=1, le=1000)
    pass_s: float = Field(0.4, gt=0, le=60, description="portal: time a case is in the field.")
    direction: Literal["in", "out"] = "out"
    quiet_time_ms: int = Field(
        1000, ge=50, description="portal: the gateway's quiet time that ends a tag pass."
    )

    @model_validator(mode="after")
    def _devices(self) -> Station:
        needs = _NEEDS[self.program]
        for role in ("scanner", "plc", "reader", "commission", "feeds"):
            given = getattr(self, role) is not None
            if given and role not in needs:
                raise ValueError(f"a {self.program} station has no `{role}`")
            if not given and role in needs:
                raise ValueError(f"a {self.program} station needs `{role}`")
        for role, kinds in _DEVICE_KINDS.items():
            dev = getattr(self, role)
            if dev is not None and dev.kind not in kinds:
                raise ValueError(f"{role}.kind must be one of {', '.join(kinds)} (got {dev.kind})")
        if self.parameters and self.program not in ("handshake", "trigger"):
            raise ValueError(f"a {self.program} station records no parameters")
        return self


class CountOrShare(_Model):
    count: int | None = Field(None, ge=0, description="So many, spread over the run.")
    share: float | None = Field(None, ge=0, le=1, description="Or this share of the units.")
    station: str | None = None

    @model_validator(mode="after")
    def _one(self) -> CountOrShare:
        if (self.count is None) == (self.share is None):
            raise ValueError("give `count` or `share`")
        return self


class Misreads(_Model):
    share: float = Field(0.0, ge=0, le=0.5)
    stations: list[str] = []


class Kills(_Model):
    count: int = Field(0, ge=0)
    from_unit: int = Field(10, ge=1)
    to_unit: int | None = Field(None, ge=1, description="Default: the last unit.")


class AtUnit(_Model):
    at_unit: int = Field(ge=1, description="When this unit enters the line.")
    duration_s: float = Field(3.0, gt=0, le=600, description="broker outages: how long.")
    device: str | None = Field(None, description="plc restarts, reader disconnects.")


class DeviceFault(_Model):
    device: str = Field(description="A scanner, PLC or reader of the line.")
    kind: Literal["restart", "silence", "garbage"] = Field(
        description="restart: the device goes away and comes back (connections closed); "
        "silence: connected, but it answers and sends nothing for `duration_s`; garbage: it "
        "sends what no device should (noise, malformed frames, broken responses)."
    )
    at_unit: int = Field(ge=1, description="When this unit enters the line.")
    duration_s: float = Field(3.0, gt=0, le=120, description="silence, garbage: how long.")


class Faults(_Model):
    misreads: Misreads = Misreads()
    duplicate_labels: CountOrShare | None = None
    skips: list[CountOrShare] = []
    nok: dict[str, float] = Field({}, description="Station -> share of its units NOK.")
    gateway_kills: Kills = Kills()
    broker_outages: list[AtUnit] = []
    plc_restarts: list[AtUnit] = []
    reader_disconnects: list[AtUnit] = []
    device_faults: list[DeviceFault] = []


class Scenario(_Model):
    """A virtual line: see the module docstring."""

    line: LineNames = LineNames()
    seed: int = 0
    company_prefix: str = Field(
        "4012345", pattern=r"^\d{7,10}$", description="GS1 company prefix of labels and SSCCs."
    )
    units: int | None = Field(None, ge=1, description="Housings entering; null: endless.")
    takt_s: float = Field(0.2, gt=0, le=600, description="A unit enters every takt.")
    transfer_s: float = Field(0.05, ge=0, le=600, description="Conveyor time between stations.")
    work_orders: list[WorkOrder] = Field(min_length=1)
    pools: list[Pool] = []
    stations: list[Station] = Field(min_length=1)
    route: list[str] = Field(min_length=1, description="Stations the units pass, in order.")
    faults: Faults = Faults()

    def station(self, sid: str) -> Station:
        return next(s for s in self.stations if s.id == sid)

    @property
    def route_stations(self) -> list[Station]:
        """The stations of the route, in order (unknown names left out: a checked scenario
        has none)."""
        known = {s.id: s for s in self.stations}
        return [known[s] for s in self.route if s in known]

    def housing_gtins(self) -> list[str]:
        return sorted({g for wo in self.work_orders for g in wo.gtins})


class ScenarioError(ValueError):
    """Every problem of a scenario file, one a line: `FILE:LINE:COL: field: message`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_scenario(path: str | Path, **overrides: Any) -> Scenario:
    """Read and check a scenario file; `overrides` replace top-level fields (e.g. `units`).
    Raises ScenarioError with every problem."""
    path = Path(path)
    try:
        located = yamlpos.load(path, str(path))
    except yamlpos.YamlProblem as exc:
        raise ScenarioError([f"{exc.mark}: (file): {exc.problem}"]) from None
    except OSError as exc:
        raise ScenarioError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    if not isinstance(located.data, dict):
        raise ScenarioError([f"{located.where(())}: a scenario is a mapping of fields"])
    return scenario_from(dict(located.data, **overrides), located)


def scenario_from(doc: dict[str, Any], located: yamlpos.Located | None = None) -> Scenario:
    """A checked scenario from its fields (`located`: where they came from, for messages)."""
    where = _Where(located)
    try:
        scenario = Scenario.model_validate(doc)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            loc = tuple(e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            problems.append(where.line(loc, msg, e.get("input"), e["type"] != "missing"))
        raise ScenarioError(problems) from None
    problems = [where.line(loc, msg, got, True) for loc, msg, got in _cross_checks(scenario)]
    if problems:
        raise ScenarioError(problems)
    return scenario


class _Where:
    def __init__(self, located: yamlpos.Located | None) -> None:
        self.located = located

    def line(self, loc: PathKey, msg: str, got: Any, has_got: bool) -> str:
        field = _path_text(loc)
        at = f"{self.located.where(loc)}: " if self.located is not None else ""
        tail = f" (got {got!r})" if has_got and not isinstance(got, dict | list) else ""
        return f"{at}{field}: {msg}{tail}"


def _path_text(loc: PathKey) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(scenario)"


def _cross_checks(sc: Scenario) -> list[tuple[PathKey, str, Any]]:
    """What one field cannot say alone: references between stations, devices, pools, faults."""
    out: list[tuple[PathKey, str, Any]] = []
    ids = [s.id for s in sc.stations]
    for i, sid in enumerate(ids):
        if sid in ids[:i]:
            out.append((("stations", i, "id"), "duplicate station id", sid))
    devices: list[str] = []
    for i, st in enumerate(sc.stations):
        for role in ("scanner", "plc", "reader"):
            dev = getattr(st, role)
            if dev is None:
                continue
            if dev.id in devices:
                out.append((("stations", i, role, "id"), "a device serves one station", dev.id))
            devices.append(dev.id)
            out += _profile_problems(("stations", i, role), dev, st)
        if st.commission is not None and st.commission.pool not in {p.id for p in sc.pools}:
            out.append((("stations", i, "commission", "pool"), "no such pool", st.commission.pool))
        if st.feeds is not None:
            fed = next((s for s in sc.stations if s.id == st.feeds), None)
            if fed is None or fed.program != "assembly":
                out.append((("stations", i, "feeds"), "not an assembly station", st.feeds))
    out += _route_problems(sc)
    out += _fault_problems(sc)
    last = sc.work_orders[-1]
    for i, wo in enumerate(sc.work_orders[:-1]):
        if wo.units is None:
            out.append((("work_orders", i, "units"), "all but the last need `units`", None))
    if sc.units is not None and last.units is not None:
        at = ("work_orders", len(sc.work_orders) - 1, "units")
        out.append((at, "the last work order takes the rest: leave `units` out", last.units))
    return out


def _route_problems(sc: Scenario) -> list[tuple[PathKey, str, Any]]:
    out: list[tuple[PathKey, str, Any]] = []
    known = {s.id: s for s in sc.stations}
    programs: list[str] = []
    for k, sid in enumerate(sc.route):
        st = known.get(sid)
        if st is None:
            out.append((("route", k), "no such station", sid))
            continue
        if st.program == "mark":
            out.append((("route", k), "a mark station feeds parts; it is not on the route", sid))
        if sid in sc.route[:k]:
            out.append((("route", k), "a unit passes a station once", sid))
        if st.program == "portal" and "packing" not in programs:
            out.append((("route", k), "cases carry the RFID tags: put it after packing", sid))
        if st.program != "portal" and "packing" in programs:
            out.append((("route", k), "after packing only portals (cases) follow", sid))
        if st.program == "assembly" and not any(s.feeds == sid for s in sc.stations):
            out.append((("route", k), "no mark station feeds this assembly station", sid))
        programs.append(st.program)
    for i, st in enumerate(sc.stations):
        if st.program != "mark" and st.id not in sc.route:
            out.append((("stations", i, "id"), "not on the route", st.id))
    return out


def _fault_problems(sc: Scenario) -> list[tuple[PathKey, str, Any]]:
    out: list[tuple[PathKey, str, Any]] = []
    f = sc.faults
    programs = {s.id: s.program for s in sc.stations}
    for k, sid in enumerate(f.misreads.stations):
        if programs.get(sid) not in ("label", "trigger", "assembly", "packing"):
            out.append((("faults", "misreads", "stations", k), "no scanner station", sid))
    for k, skip in enumerate(f.skips):
        if programs.get(skip.station or "") not in ("label", "handshake", "trigger"):
            msg = "a unit can skip a label, handshake or trigger station"
            out.append((("faults", "skips", k, "station"), msg, skip.station))
    commissions = [
        s for s in sc.route_stations if s.program == "label" and s.rules.get("commission")
    ]
    if f.duplicate_labels is not None and not commissions:
        msg = "needs a label station with `rules.commission: true` on the route"
        out.append((("faults", "duplicate_labels"), msg, None))
    for sid, share in f.nok.items():
        if programs.get(sid) not in ("handshake", "trigger"):
            out.append((("faults", "nok", sid), "NOK needs a handshake or trigger station", sid))
        elif not 0 <= share <= 1:
            out.append((("faults", "nok", sid), "a share between 0 and 1", share))
    return out + _device_fault_problems(sc)


def _device_fault_problems(sc: Scenario) -> list[tuple[PathKey, str, Any]]:
    out: list[tuple[PathKey, str, Any]] = []
    f = sc.faults
    plcs = [s.plc.id for s in sc.stations if s.plc is not None]
    readers = [s.reader.id for s in sc.stations if s.reader is not None]
    for k, r in enumerate(f.plc_restarts):
        if r.device not in plcs:
            out.append((("faults", "plc_restarts", k, "device"), "no such PLC", r.device))
    for k, r in enumerate(f.reader_disconnects):
        if r.device is not None and r.device not in readers:
            out.append((("faults", "reader_disconnects", k, "device"), "no such reader", r.device))
        if not readers:
            out.append((("faults", "reader_disconnects", k), "the line has no reader", None))
    devices = [d.id for s in sc.stations for d in (s.scanner, s.plc, s.reader) if d is not None]
    for k, d in enumerate(f.device_faults):
        if d.device not in devices:
            out.append((("faults", "device_faults", k, "device"), "no such device", d.device))
    return out


def _profile_problems(at: PathKey, dev: Device, st: Station) -> list[tuple[PathKey, str, Any]]:
    """The profile exists and is of the device's kind; a PLC has the program's signals."""
    path = bundled_profiles_dir() / f"{dev.profile}.yaml"
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError:
        return [((*at, "profile"), "no such bundled profile", dev.profile)]
    if doc.get("kind") != dev.kind:
        return [((*at, "profile"), f"a {doc.get('kind')} profile, not {dev.kind}", dev.profile)]
    if dev.kind not in ("opcua", "modbus"):
        return []
    signals = {**((doc.get("settings") or {}).get("signals") or {}), **dev.signals}
    needed = [*PLC_PROGRAM_SIGNALS, *(p.name for p in st.parameters)]
    if st.program == "mark":
        needed.append("serial")
    missing = [s for s in needed if s not in signals]
    if missing:
        msg = (
            f"has no signal {', '.join(missing)} (add it in `signals`; it has "
            f"{', '.join(sorted(signals))})"
        )
        return [((*at, "profile"), msg, dev.profile)]
    return []
