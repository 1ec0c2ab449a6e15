"""EPCIS 2.0 JSON-LD rendering of Tracegate events, the other forwarding format.

Owns the mapping of a published `tracegate.event/1` document (the parsed JSON of
gateway.events.compose) onto a GS1 EPCIS 2.0 `EPCISDocument` holding exactly one event, and the
encoding of that document. docs/epcis.md has the mapping table, the identifiers and the units.

Invariants:
- Pure: no I/O, no clock, no randomness. `creationDate` is the event's `recorded`, so the same
  document and options give the same bytes on every re-send, and `eventID`
  (`urn:uuid:<event_id>`) stays the consumers' de-duplication key.
- Never raises on a document the gateway writes. ValueError only for input that is not a
  tracegate.event/1 document at all (no schema, event id, type or times). Events with no EPCIS
  meaning render as None (EPCIS_TYPES lists the ones that have one).
- The output validates against the GS1 EPCIS 2.0 JSON Schema, whatever the identities,
  parameters and texts, for any options EpcisOptions accepts: options check their URIs, names
  and templates when they are made, and every URI built from event data is percent-encoded.
- Nothing of the event is lost: what EPCIS has no field for is carried in the extension
  namespace (prefix `tg` by default) under the member names of tracegate.event/1.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import quote

from gateway.events import EMPTY, NO_STATION, SCHEMA

EPCIS_CONTEXT: Final = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
DIGITAL_LINK: Final = "https://id.gs1.org"

# The tracegate types that become an EPCIS event; every other type renders as None.
EPCIS_TYPES: Final = frozenset(
    {"identified", "step.completed", "commissioned", "aggregated", "rejected"}
)

# CBV 2.0 business steps and dispositions, as the EPCIS 2.0 JSON Schema enumerates them.
BIZ_STEPS: Final = frozenset(
    "accepting arriving assembling collecting commissioning consigning "  # noqa: SIM905
    "creating_class_instance cycle_counting decommissioning departing destroying "
    "disassembling dispensing encoding entering_exiting holding inspecting installing "
    "killing loading other packing picking receiving removing repackaging repairing "
    "replacing reserving retail_selling shipping staging_outbound stock_taking stocking "
    "storing transporting unloading unpacking void_shipping sensor_reporting sampling".split()
)
DISPOSITIONS: Final = frozenset(
    "active container_closed damaged destroyed dispensed disposed encoded expired "  # noqa: SIM905
    "in_progress in_transit inactive no_pedigree_match non_sellable_other "
    "partially_dispensed recalled reserved retail_sold returned sellable_accessible "
    "sellable_not_accessible stolen unknown available completeness_verified "
    "completeness_inferred conformant container_open mismatch_instance mismatch_class "
    "mismatch_quantity needs_replacement non_conformant unavailable".split()
)

# Unit strings of the line file -> (UN/ECE Recommendation 20 code, GS1 Web Vocabulary
# measurement type). A unit not listed keeps its string in the extension `unit`, without `uom`.
UNITS: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        **dict.fromkeys(("Nm", "N.m", "N·m"), ("NU", "Torque")),
        "N": ("NEW", "Force"),
        **dict.fromkeys(("degC", "°C"), ("CEL", "Temperature")),
        **dict.fromkeys(("degF", "°F"), ("FAH", "Temperature")),
        "K": ("KEL", "Temperature"),
        **dict.fromkeys(("deg", "°"), ("DD", "Angle")),
        "rad": ("C81", "Angle"),
        "bar": ("BAR", "Pressure"),
        "mbar": ("MBR", "Pressure"),
        "Pa": ("PAL", "Pressure"),
        "kPa": ("KPA", "Pressure"),
        "MPa": ("MPA", "Pressure"),
        **dict.fromkeys(("um", "µm"), ("4H", "Length")),
        "mm": ("MMT", "Length"),
        "cm": ("CMT", "Length"),
        "m": ("MTR", "Length"),
        "s": ("SEC", "Time"),
        "ms": ("C26", "Time"),
        "min": ("MIN", "Time"),
        "h": ("HUR", "Time"),
        "A": ("AMP", "ElectricCurrent"),
        "mA": ("4K", "ElectricCurrent"),
        "V": ("VLT", "Voltage"),
        "mV": ("2Z", "Voltage"),
        "W": ("WTT", "Power"),
        "kW": ("KWT", "Power"),
        "J": ("JOU", "Energy"),
        "kg": ("KGM", "Mass"),
        "g": ("GRM", "Mass"),
        "mg": ("MGM", "Mass"),
        "%": ("P1", "Dimensionless"),
        "rpm": ("RPM", "AngularVelocity"),
        "Hz": ("HTZ", "Frequency"),
        **dict.fromkeys(("l", "L"), ("LTR", "Volume")),
        **dict.fromkeys(("ml", "mL"), ("MLT", "Volume")),
        **dict.fromkeys(("l/min", "L/min"), ("L2", "VolumeFlowRate")),
        "m/s": ("MTS", "Speed"),
        **dict.fromkeys(("ohm", "Ω"), ("OHM", "Resistance")),
    }
)

# An absolute URI (RFC 3986 characters; one fragment at most), as options must give.
_URI: Final = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*:(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*"
    r"(?:#(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?"
)
_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# The EPCIS schema refuses CBV values written as URIs: CBV's own go by their bare names.
_CBV_URI: Final = re.compile(r"urn:epcglobal:cbv|https?://ns\.gs1\.org/cbv/")
_PREFIX: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
# Terms of the GS1 context where extension members go (document, event, sensor report) that a
# lowercase prefix could be: ours must be none of them (JSON-LD refuses redefined protected terms).
RESERVED_PREFIXES: Final = frozenset(
    "action cbv cbvmda children component dcterms disposition epcis exception gs1 id ilmd member "  # noqa: SIM905
    "microorganism owl quantity rdfs receiver sender time type uom value xsd".split()
)
# What templates may name; each value is percent-encoded (all but unreserved characters and ":").
TEMPLATE_FIELDS: Final = frozenset(
    {"site", "line", "gateway", "station", "work_order", "scheme", "value"}
)

# Canonical keys (gateway.identifiers) -> the AIs of their GS1 Digital Link path, in order.
_KEYS: Final[Mapping[str, tuple[re.Pattern[str], tuple[str, ...]]]] = {
    "sgtin": (re.compile(r"\(01\)([0-9]{14})\(21\)(.+)", re.DOTALL), ("01", "21")),
    "lgtin": (re.compile(r"\(01\)([0-9]{14})\(10\)(.+)", re.DOTALL), ("01", "10")),
    "gtin": (re.compile(r"\(01\)([0-9]{14})"), ("01",)),
    "sscc": (re.compile(r"\(00\)([0-9]{18})"), ("00",)),
    "sgln": (re.compile(r"\(414\)([0-9]{13})(?:\(254\)(.+))?", re.DOTALL), ("414", "254")),
    "grai": (re.compile(r"\(8003\)([0-9]{14}.*)", re.DOTALL), ("8003",)),
    "giai": (re.compile(r"\(8004\)(.+)", re.DOTALL), ("8004",)),
}
_CLASS_SCHEMES: Final = frozenset({"lgtin", "gtin"})
# Members of tracegate.event/1 carried as extensions, under their own names, when not null.
_CARRIED: Final = (
    "seq", "type", "gateway", "line", "station", "step", "work_order", "config", "result",
    "reason", "ids",
)  # fmt: skip
# Extension members that hold JSON values as they are (JSON-LD `@json` literals).
_JSON_MEMBERS: Final = ("ids", "parent", "children", "detail", "value")


@dataclass(frozen=True, slots=True)
class StationEpcis:
    """What EPCIS says about one station; a field left None takes EpcisOptions' default.

    `biz_step` applies to what the station observes (`identified`, `step.completed`,
    `rejected`), `biz_step_in` / `biz_step_out` to RFID portal passes with that direction.
    `disposition` applies where no result decides one (`identified`, and `step.completed`
    without result): the PLC's OK / NOK is never overridden. Business steps and dispositions are
    CBV 2.0 names (`assembling`, `in_progress`) or URIs of your own vocabulary."""

    read_point: str | None = None
    biz_location: str | None = None
    biz_step: str | None = None
    biz_step_in: str | None = None
    biz_step_out: str | None = None
    disposition: str | None = None

    def __post_init__(self) -> None:
        for name in ("read_point", "biz_location"):
            _check_uri(name, getattr(self, name))
        for name in ("biz_step", "biz_step_in", "biz_step_out"):
            _check_vocabulary(name, getattr(self, name), BIZ_STEPS)
        _check_vocabulary("disposition", self.disposition, DISPOSITIONS)


@dataclass(frozen=True, slots=True)
class EpcisOptions:
    """How events become EPCIS. The defaults render valid documents; real lines set `site` and
    the readPoint of each station (a GLN: `urn:epc:id:sgln:...` or a Digital Link `/414/`).

    Templates name fields in braces (TEMPLATE_FIELDS); `line` and `gateway` come from the
    event. `serial_uri_template` makes the URI of a non-GS1 (`plain`) serial,
    `epc_uri_template` that of a tag kept raw (`epc`: its value is the TDS raw URI,
    `urn:epc:raw:...`, a URI already), `work_order_template` that of the work order."""

    site: str = "site"
    read_point_template: str = "urn:tracegate:loc:{site}:{line}:{station}"
    biz_location: str | None = None
    stations: Mapping[str, StationEpcis] = field(default_factory=lambda: EMPTY)
    serial_uri_template: str = "urn:tracegate:serial:{value}"
    epc_uri_template: str = "{value}"
    work_order_template: str = "urn:tracegate:prodorder:{site}:{work_order}"
    extension_prefix: str = "tg"
    extension_namespace: str = "urn:tracegate:epcis:"

    def __post_init__(self) -> None:
        object.__setattr__(self, "stations", MappingProxyType(dict(self.stations)))
        for station, st in self.stations.items():
            if not isinstance(st, StationEpcis):
                raise ValueError(f"stations[{station!r}] is not a StationEpcis (got {st!r})")
        for name in ("read_point_template", "serial_uri_template", "work_order_template"):
            _check_template(name, getattr(self, name), "SN-1", literal_scheme=True)
        # A raw EPC is a URI already: "{value}" is fine here, and each result is checked.
        _check_template("epc_uri_template", self.epc_uri_template, "urn:epc:raw:96.x3034")
        _check_uri("biz_location", self.biz_location)
        prefix = self.extension_prefix
        if not _PREFIX.fullmatch(prefix) or prefix in RESERVED_PREFIXES:
            raise ValueError(
                "extension_prefix must be a lowercase name (letters, digits, '_', '-') that the "
                f"GS1 context does not define (got {prefix!r})"
            )
        _check_uri("extension_namespace", self.extension_namespace)
        if self.extension_namespace[-1] not in ":/#":
            raise ValueError(
                "extension_namespace must end in ':', '/' or '#' "
                f"(got {self.extension_namespace!r})"
            )


def render_epcis(doc: Mapping[str, Any], opts: EpcisOptions) -> dict[str, Any] | None:
    """The EPCISDocument of one published event (a parsed tracegate.event/1 document), or None
    for an event that has no EPCIS meaning (see EPCIS_TYPES and docs/epcis.md)."""
    ev = _Event(doc, opts)
    event = ev.event()
    if event is None:
        return None
    p = opts.extension_prefix
    context = {p: opts.extension_namespace} | {
        f"{p}:{m}": {"@type": "@json"} for m in _JSON_MEMBERS
    }
    return {
        "@context": [EPCIS_CONTEXT, context],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": ev.recorded,
        "epcisBody": {"eventList": [event]},
    }


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def encode_epcis(document: Mapping[str, Any]) -> bytes:
    """A rendered EPCISDocument as compact UTF-8 JSON: the payload of one message."""
    return _dumps(document).encode()


# --- one event ------------------------------------------------------------------------------------


class _Event:
    """One tracegate document being rendered, with the options that apply to its station."""

    def __init__(self, doc: Mapping[str, Any], opts: EpcisOptions) -> None:
        if doc.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} document (schema {doc.get('schema')!r})")
        for name in ("event_id", "type", "time", "recorded"):
            if not isinstance(doc.get(name), str):
                raise ValueError(f"{SCHEMA} document without a string {name!r}")
        if not _UUID.fullmatch(doc["event_id"]):
            raise ValueError(f"event_id {doc['event_id']!r} is not a UUID")
        self.doc, self.opts = doc, opts
        self.type: str = doc["type"]
        self.recorded: str = doc["recorded"]
        self.station = doc.get("station") if isinstance(doc.get("station"), str) else None
        self.st = opts.stations.get(self.station or "") or StationEpcis()
        self.ids = [i for i in _list(doc.get("ids")) if isinstance(i, Mapping)]
        detail = doc.get("detail")
        self.detail: Mapping[str, Any] = detail if isinstance(detail, Mapping) else EMPTY
        self.fields = {
            "site": opts.site,
            "line": _text(doc.get("line")),
            "gateway": _text(doc.get("gateway")),
            "station": self.station or NO_STATION,
            "work_order": _text(doc.get("work_order")),
            "scheme": "",  # an identity's own, in the URIs of identities
            "value": "",
        }

    def event(self) -> dict[str, Any] | None:
        match self.type:
            case "identified":
                return self.object_event("OBSERVE", self.observed_step(), self.st.disposition)
            case "step.completed":
                return self.object_event("OBSERVE", self.observed_step(), self.verdict())
            case "rejected" if self.ids:
                return self.object_event("OBSERVE", self.observed_step(), "non_conformant")
            case "commissioned":
                return self.object_event("ADD", "commissioning", "active")
            case "aggregated":
                return self.aggregation_event()
        return None

    # --- what the station says --------------------------------------------------------------------

    def observed_step(self) -> str:
        passed = self.detail.get("pass")
        direction = passed.get("direction") if isinstance(passed, Mapping) else None
        if direction == "in":
            return self.st.biz_step_in or "arriving"
        if direction == "out":
            return self.st.biz_step_out or "departing"
        return self.st.biz_step or "inspecting"

    def verdict(self) -> str | None:
        result = self.doc.get("result")
        if result == "OK":
            return "conformant"
        if result == "NOK":
            return "non_conformant"
        return self.st.disposition if result is None else None

    # --- events -----------------------------------------------------------------------------------

    def object_event(self, action: str, step: str, disposition: str | None) -> dict[str, Any]:
        instances, classes = self.identifiers(self.ids)
        event = self.head("ObjectEvent", action)
        event["epcList"] = instances  # even empty: what the schema asks of an event without ids
        if classes:
            event["quantityList"] = classes
        event.update(self.where(step, disposition))
        if action == "ADD":
            ilmd = _ilmd(self.ids)
            if ilmd:
                event["ilmd"] = ilmd
        event.update(self.extensions())
        return event

    def aggregation_event(self) -> dict[str, Any] | None:
        action = {"add": "ADD", "delete": "DELETE"}.get(_text(self.doc.get("action")))
        parent = self.doc.get("parent")
        children = [c for c in _list(self.doc.get("children")) if isinstance(c, Mapping)]
        if action is None or not isinstance(parent, Mapping) or (action == "ADD" and not children):
            return None  # EPCIS needs a parent to add to or remove from, and children to add
        kind = self.doc.get("kind")
        steps = {"packing": ("packing", "unpacking"), "assembly": ("assembling", "disassembling")}
        step = steps[kind][action == "DELETE"] if kind in steps else None
        event = self.head("AggregationEvent", action)
        event["parentID"] = self.identifier(parent)[0]
        instances, classes = self.identifiers(children)
        if instances:
            event["childEPCs"] = instances
        if classes:
            event["childQuantityList"] = classes
        event.update(self.where(step, None))
        extra = {"kind": kind, "parent": dict(parent), "children": [dict(c) for c in children]}
        event.update(self.extensions(**extra))
        return event

    def head(self, kind: str, action: str) -> dict[str, Any]:
        return {
            "type": kind,
            "eventID": f"urn:uuid:{self.doc['event_id'].lower()}",
            "eventTime": self.doc["time"],
            "eventTimeZoneOffset": "+00:00",  # tracegate times are UTC
            "recordTime": self.recorded,
            "action": action,
        }

    def where(self, step: str | None, disposition: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if step is not None:
            out["bizStep"] = step
        if disposition is not None:
            out["disposition"] = disposition
        read_point = self.st.read_point or self.template(self.opts.read_point_template)
        out["readPoint"] = {"id": read_point}
        biz_location = self.st.biz_location or self.opts.biz_location
        if biz_location is not None:
            out["bizLocation"] = {"id": biz_location}
        if self.fields["work_order"]:
            order = self.template(self.opts.work_order_template)
            out["bizTransactionList"] = [{"type": "prodorder", "bizTransaction": order}]
        sensors = self.sensor_elements()
        if sensors:
            out["sensorElementList"] = sensors
        return out

    def extensions(self, **extra: Any) -> dict[str, Any]:
        """Every member EPCIS has no field for, under our prefix and its tracegate name."""
        members = {name: self.doc.get(name) for name in _CARRIED} | extra
        members["detail"] = dict(self.detail) or None
        p = self.opts.extension_prefix
        return {f"{p}:{k}": v for k, v in members.items() if v is not None and v != []}

    # --- identifiers ------------------------------------------------------------------------------

    def identifiers(self, ids: list[Mapping[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
        """Instance URIs (without repeats) and quantity elements of class-level identities."""
        instances: dict[str, None] = {}
        classes: dict[str, int] = {}
        for ident in ids:
            uri, is_class = self.identifier(ident)
            if is_class:
                classes[uri] = classes.get(uri, 0) + 1
            else:
                instances[uri] = None
        return list(instances), [{"epcClass": c, "quantity": n} for c, n in classes.items()]

    def identifier(self, ident: Mapping[str, Any]) -> tuple[str, bool]:
        """The EPCIS URI of an identity, and whether it names a class (lgtin, gtin, a GRAI
        without serial) rather than one object."""
        scheme, value = _text(ident.get("scheme")), _text(ident.get("value"))
        form = _KEYS.get(scheme)
        if form is not None:
            match = form[0].fullmatch(value)
            if match is not None:
                path = "".join(
                    f"/{ai}/{quote(v, safe='')}"
                    for ai, v in zip(form[1], match.groups(), strict=True)
                    if v is not None
                )
                is_class = scheme in _CLASS_SCHEMES or (scheme == "grai" and len(match[1]) == 14)
                return DIGITAL_LINK + path, is_class
        elif scheme in ("plain", "epc"):
            template = self.opts.serial_uri_template
            if scheme == "epc":
                template = self.opts.epc_uri_template
            uri = self.template(template, scheme=scheme, value=value)
            if _URI.fullmatch(uri):
                return uri, False
        # Not a canonical key of its scheme (never so in documents the gateway writes): still
        # a URI, and the identity itself is in the `ids` extension.
        return f"urn:tracegate:id:{_enc(scheme)}:{_enc(value)}", False

    def template(self, template: str, **more: str) -> str:
        return template.format_map({k: _enc(v) for k, v in (self.fields | more).items()})

    # --- parameters -------------------------------------------------------------------------------

    def sensor_elements(self) -> list[dict[str, Any]]:
        params = self.doc.get("parameters")
        if not isinstance(params, Mapping) or not params:
            return []
        p = self.opts.extension_prefix
        reports = [_sensor_report(name, value, p) for name, value in params.items()]
        return [{"sensorReport": reports}]


def _sensor_report(name: str, param: Any, p: str) -> dict[str, Any]:
    """One parameter: its value, unit and time as EPCIS has them; name, tolerances, unit string
    and source device in the extension."""
    param = param if isinstance(param, Mapping) else {"value": param}
    unit = param.get("unit")
    uom, measured = UNITS.get(unit, (None, None)) if isinstance(unit, str) else (None, None)
    report: dict[str, Any] = {"type": f"gs1:{measured}" if measured else f"{p}:Parameter"}
    value = param.get("value")
    extra: dict[str, Any] = {"name": name}
    if isinstance(value, bool):
        report["booleanValue"] = value
    elif isinstance(value, int | float):
        report["value"] = value
    elif isinstance(value, str):
        report["stringValue"] = value
    elif value is not None:  # an array: EPCIS has no field for it
        extra["value"] = value
    if uom is not None:
        report["uom"] = uom
    plc_time = param.get("plc_time")
    if isinstance(plc_time, str) and _is_rfc3339(plc_time):
        report["time"] = plc_time
    elif plc_time is not None:
        extra["plc_time"] = plc_time
    for key in ("unit", "source", "low", "high", "in_tolerance", "status"):
        if param.get(key) is not None:
            extra[key] = param[key]
    report.update({f"{p}:{k}": v for k, v in extra.items()})
    return report


_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)


def _is_rfc3339(text: str) -> bool:
    if not _RFC3339.fullmatch(text):
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _ilmd(ids: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Lot and expiry of what is commissioned (CBV master data attributes)."""
    out: dict[str, Any] = {}
    if ids:  # a commissioning names one unit
        lot, expiry = ids[0].get("lot"), ids[0].get("expiry")
        if isinstance(lot, str) and lot:
            out["cbvmda:lotNumber"] = lot
        if isinstance(expiry, str) and expiry:
            out["cbvmda:itemExpirationDate"] = expiry
    return out


# --- helpers --------------------------------------------------------------------------------------


def _enc(value: str) -> str:
    """`value` fit for a URI: every character but the unreserved ones and ":" percent-encoded
    (UTF-8), so a `%`, `/`, space or non-ASCII character of a serial keeps its meaning."""
    return quote(value, safe=":")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _check_uri(name: str, value: str | None) -> None:
    if value is not None and not _URI.fullmatch(value):
        raise ValueError(f"{name} must be an absolute URI (got {value!r})")


def _check_vocabulary(name: str, value: str | None, names: frozenset[str]) -> None:
    if value is None or value in names:
        return
    if ":" in value and _URI.fullmatch(value) and not _CBV_URI.match(value):
        return  # a vocabulary of your own; CBV's own values go by their bare names
    raise ValueError(f"{name} must be a CBV 2.0 name or a URI of your own (got {value!r})")


def _check_template(name: str, template: str, sample: str, *, literal_scheme: bool = False) -> None:
    """A template whose fields are all known and whose result is a URI, whatever the fields
    hold (they are percent-encoded): so it must begin with its scheme, not with a field."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{name}: {exc} (got {template!r})") from None
    if literal_scheme and not (parsed and _SCHEME.match(parsed[0][0])):
        raise ValueError(f"{name} must begin with a URI scheme such as 'urn:' (got {template!r})")
    for _, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        if field_name not in TEMPLATE_FIELDS or spec or conversion:
            known = ", ".join(f"{{{f}}}" for f in sorted(TEMPLATE_FIELDS))
            raise ValueError(f"{name} may name only {known} (got {template!r})")
    filled = template.format_map(dict.fromkeys(TEMPLATE_FIELDS, "x") | {"value": sample})
    if not _URI.fullmatch(filled):
        raise ValueError(f"{name} must give an absolute URI (got {template!r}, giving {filled!r})")
