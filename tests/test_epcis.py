"""EPCIS 2.0 rendering: every document validates against GS1's EPCIS 2.0 JSON Schema (fetched
at test time, see tests/epcis/README.md), expands as JSON-LD with GS1's context without losing
a member, and maps each tracegate.event/1 member where docs/epcis.md says.

Inputs are built the way the gateway publishes them: gateway.events' render_members and compose,
then json.loads."""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import string
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator, FormatChecker
from pyld import jsonld  # type: ignore[import-untyped]

from gateway.events import EventContext, Identity, Parameter, TraceEvent, compose, render_members
from gateway.forward.epcis import (
    BIZ_STEPS,
    DISPOSITIONS,
    EPCIS_CONTEXT,
    EPCIS_TYPES,
    RESERVED_PREFIXES,
    UNITS,
    EpcisOptions,
    StationEpcis,
    encode_epcis,
    render_epcis,
)
from gateway.identifiers import SCHEMES, epc_identity, parse_code
from tests.epcis import artefacts

HERE = Path(__file__).parent / "epcis"
CTX = EventContext("gw-line3", "line-3", "584f68cb19de")
EVENT_ID = "6f1c2d3e-4b5a-4c6d-8e7f-0123456789ab"
T0 = 1_764_000_000.125  # 2025-11-24T16:00:00.125Z
OPTS = EpcisOptions(
    site="plant-ulm",
    stations={
        "st30": StationEpcis(biz_step="assembling", read_point="urn:epc:id:sgln:4012345.00030.0"),
        "dock-1": StationEpcis(biz_location="urn:epc:id:sgln:4012345.00001.0"),
    },
)
GTIN = "09506000134352"
SGTIN = Identity(
    "sgtin",
    f"(01){GTIN}(21)A/B%C",
    f"]d201{GTIN}21A/B%C\x1d10LOT-7",
    "cam-st10",
    {"carrier": "element_string", "gtin": GTIN, "serial": "A/B%C", "lot": "LOT-7"},
)
SGTIN_DL = f"https://id.gs1.org/01/{GTIN}/21/A%2FB%25C"
TORQUE = Parameter(12.8, "Nm", "press-plc", 11.5, 12.5, False, "2025-11-24T16:00:00.100Z")
_JSON_MEMBERS = ("ids", "parent", "children", "detail", "value")  # the `@json` extensions


# --- the official schema, the context, and the checks ---------------------------------------------


@functools.cache
def validator() -> Draft7Validator:
    checker = FormatChecker()
    # Without rfc3986-validator and rfc3339-validator, jsonschema skips these formats silently.
    assert {"uri", "date-time"} <= set(checker.checkers), "format checks are not installed"
    schema = artefacts.load(artefacts.SCHEMA)
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema, format_checker=checker)


def valid(document: dict[str, Any] | None) -> dict[str, Any]:
    """The one event of a rendered document, after validating the whole of it."""
    assert document is not None
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator().iter_errors(document)]
    assert not errors, "\n".join(errors)
    event: dict[str, Any]
    (event,) = document["epcisBody"]["eventList"]
    return event


def published(event: TraceEvent, ctx: EventContext = CTX, **members: Any) -> dict[str, Any]:
    """The document the gateway publishes for `event`. `members` adds top-level members that
    render_members does not write yet (those of `aggregated`: action, kind, parent, children)."""
    doc: dict[str, Any] = json.loads(compose(7, event.time + 0.004, render_members(event, ctx)))
    assert not members.keys() & doc.keys()
    return doc | members


def ev(kind: str, **fields: Any) -> TraceEvent:
    fields.setdefault("station", "st10")
    fields.setdefault("step", "marking-check")
    fields.setdefault("work_order", "WO-2026-0001")
    return TraceEvent(kind, T0, event_id=EVENT_ID, **fields)


def render(event: TraceEvent, opts: EpcisOptions = OPTS, **members: Any) -> dict[str, Any]:
    return valid(render_epcis(published(event, **members), opts))


# --- the document and what every event carries ----------------------------------------------------


def test_document_and_common_fields() -> None:
    document = render_epcis(published(ev("identified", ids=(SGTIN,))), OPTS)
    event = valid(document)
    assert document is not None
    assert document["@context"] == [
        EPCIS_CONTEXT,
        {"tg": "urn:tracegate:epcis:"} | {f"tg:{m}": {"@type": "@json"} for m in _JSON_MEMBERS},
    ]
    assert document["type"] == "EPCISDocument"
    assert document["schemaVersion"] == "2.0"
    assert document["creationDate"] == "2025-11-24T16:00:00.129Z"  # `recorded`: no clock
    assert event["type"] == "ObjectEvent"
    assert event["eventID"] == f"urn:uuid:{EVENT_ID}"
    assert event["eventTime"] == "2025-11-24T16:00:00.125Z"
    assert event["recordTime"] == "2025-11-24T16:00:00.129Z"
    assert event["eventTimeZoneOffset"] == "+00:00"
    assert event["readPoint"] == {"id": "urn:tracegate:loc:plant-ulm:line-3:st10"}
    assert event["bizTransactionList"] == [
        {"type": "prodorder", "bizTransaction": "urn:tracegate:prodorder:plant-ulm:WO-2026-0001"}
    ]
    assert "bizLocation" not in event
    assert {k: v for k, v in event.items() if k.startswith("tg:")} == {
        "tg:seq": 7,
        "tg:type": "identified",
        "tg:gateway": "gw-line3",
        "tg:line": "line-3",
        "tg:station": "st10",
        "tg:step": "marking-check",
        "tg:work_order": "WO-2026-0001",
        "tg:config": "584f68cb19de",
        "tg:ids": [SGTIN.to_json()],  # the canonical key, raw text and attributes
    }


def test_same_document_same_bytes_and_compact_utf8() -> None:
    doc = published(ev("identified", ids=(Identity("plain", "SN-ä 1", "SN-ä 1", "cam"),)))
    first = encode_epcis(render_epcis(doc, OPTS) or {})
    assert first == encode_epcis(render_epcis(copy.deepcopy(doc), OPTS) or {})
    assert b", " not in first and b": " not in first
    assert "SN-ä 1".encode() in first  # UTF-8, not \u escapes
    assert json.loads(first) == render_epcis(doc, OPTS)


def test_no_work_order_no_biz_transaction_and_station_locations() -> None:
    event = render(ev("identified", station="dock-1", work_order=None, ids=(SGTIN,)))
    assert "bizTransactionList" not in event and "tg:work_order" not in event
    assert event["bizLocation"] == {"id": "urn:epc:id:sgln:4012345.00001.0"}
    event = render(ev("identified", station="st30", ids=(SGTIN,)))
    assert event["readPoint"] == {"id": "urn:epc:id:sgln:4012345.00030.0"}


def test_default_options_alone_render_valid_documents() -> None:
    event = render(ev("step.completed", ids=(SGTIN,), parameters={"t": TORQUE}), EpcisOptions())
    assert event["readPoint"] == {"id": "urn:tracegate:loc:site:line-3:st10"}


# --- identified -----------------------------------------------------------------------------------


def test_identified_scan() -> None:
    event = render(ev("identified", ids=(SGTIN,)))
    assert event["action"] == "OBSERVE"
    assert event["epcList"] == [SGTIN_DL]
    assert event["bizStep"] == "inspecting"
    assert "disposition" not in event and "sensorElementList" not in event


@pytest.mark.parametrize(
    ("direction", "default", "configured"),
    [
        ("in", "arriving", "receiving"),
        ("out", "departing", "shipping"),
        (None, "inspecting", "other"),
    ],
)
def test_identified_portal_pass(direction: str | None, default: str, configured: str) -> None:
    tag = epc_identity("3074257BF7194E4000001A85", source="dock-reader", schemes=frozenset(SCHEMES))
    detail = {"source": "dock-reader", "pass": {"reads": 9, "direction": direction}}
    event = ev("identified", station="dock-1", ids=(tag,), detail=detail)
    rendered = render(event)
    assert rendered["bizStep"] == default
    # The tag of an SGTIN-96 gets the same Digital Link as the DataMatrix of the unit.
    assert rendered["epcList"] == ["https://id.gs1.org/01/80614141123458/21/6789"]
    assert rendered["tg:detail"] == detail
    assert rendered["tg:ids"][0]["epc_uri"] == "urn:epc:id:sgtin:0614141.812345.6789"
    station = StationEpcis(biz_step="other", biz_step_in="receiving", biz_step_out="shipping")
    assert render(event, EpcisOptions(stations={"dock-1": station}))["bizStep"] == configured


def test_station_disposition_where_no_result_decides() -> None:
    opts = EpcisOptions(stations={"st10": StationEpcis(disposition="in_progress")})
    assert render(ev("identified", ids=(SGTIN,)), opts)["disposition"] == "in_progress"
    assert render(ev("step.completed", ids=(SGTIN,)), opts)["disposition"] == "in_progress"
    nok = render(ev("step.completed", ids=(SGTIN,), result="NOK"), opts)
    assert nok["disposition"] == "non_conformant"


# --- step.completed and its parameters ------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "disposition"), [("OK", "conformant"), ("NOK", "non_conformant"), (None, None)]
)
def test_step_completed(result: str | None, disposition: str | None) -> None:
    event = render(
        ev(
            "step.completed",
            station="st30",
            ids=(SGTIN,),
            parameters={"torque": TORQUE},
            result=result,
        )
    )
    assert event["action"] == "OBSERVE"
    assert event["bizStep"] == "assembling"  # the station's
    assert event.get("disposition") == disposition
    assert event.get("tg:result") == result
    assert event["sensorElementList"] == [
        {
            "sensorReport": [
                {
                    "type": "gs1:Torque",
                    "value": 12.8,
                    "uom": "NU",
                    "time": "2025-11-24T16:00:00.100Z",  # the PLC's own timestamp
                    "tg:name": "torque",
                    "tg:unit": "Nm",
                    "tg:source": "press-plc",
                    "tg:low": 11.5,  # tolerances, not EPCIS' minValue/maxValue (measured)
                    "tg:high": 12.5,
                    "tg:in_tolerance": False,
                }
            ]
        }
    ]


@pytest.mark.parametrize(
    ("unit", "uom", "measured"),
    [
        ("Nm", "NU", "Torque"),
        ("degC", "CEL", "Temperature"),
        ("deg", "DD", "Angle"),
        ("bar", "BAR", "Pressure"),
        ("kPa", "KPA", "Pressure"),
        ("mm", "MMT", "Length"),
        ("s", "SEC", "Time"),
        ("ms", "C26", "Time"),
        ("A", "AMP", "ElectricCurrent"),
        ("V", "VLT", "Voltage"),
        ("kg", "KGM", "Mass"),
        ("g", "GRM", "Mass"),
        ("%", "P1", "Dimensionless"),
        ("rpm", "RPM", "AngularVelocity"),
    ],
)
def test_units(unit: str, uom: str, measured: str) -> None:
    event = render(
        ev("step.completed", ids=(SGTIN,), parameters={"p": Parameter(1.5, unit, "plc")})
    )
    report = event["sensorElementList"][0]["sensorReport"][0]
    assert (report["type"], report["value"], report["uom"], report["tg:unit"]) == (
        f"gs1:{measured}",
        1.5,
        uom,
        unit,
    )


def test_parameters_of_every_kind_are_kept() -> None:
    params = {
        "feed": Parameter(3, "furlong/fortnight", "plc"),  # unknown unit: kept, no uom
        "clamped": Parameter(True, None, "plc"),
        "program": Parameter("P-17", None, "plc"),
        "curve": Parameter([1.0, 2.5, 3.0], "Nm", "plc"),
        "temp": Parameter(None, "degC", "plc", status="BadNodeIdUnknown"),
    }
    reports = render(ev("step.completed", ids=(SGTIN,), parameters=params))["sensorElementList"]
    by_name = {r["tg:name"]: r for r in reports[0]["sensorReport"]}
    assert list(by_name) == list(params)
    assert by_name["feed"] == {
        "type": "tg:Parameter",
        "value": 3,
        "tg:name": "feed",
        "tg:unit": "furlong/fortnight",
        "tg:source": "plc",
    }
    assert by_name["clamped"]["booleanValue"] is True
    assert by_name["program"]["stringValue"] == "P-17"
    assert by_name["curve"]["tg:value"] == [1.0, 2.5, 3.0] and "value" not in by_name["curve"]
    assert by_name["temp"]["tg:status"] == "BadNodeIdUnknown" and "value" not in by_name["temp"]
    assert by_name["temp"]["type"] == "gs1:Temperature"


def test_step_completed_without_identity_is_a_sensor_event() -> None:
    event = render(ev("step.completed", parameters={"torque": TORQUE}, result="OK"))
    assert event["epcList"] == []
    assert event["sensorElementList"][0]["sensorReport"][0]["value"] == 12.8


# --- commissioned, aggregated, rejected -----------------------------------------------------------


def test_commissioned() -> None:
    unit = Identity(
        "sgtin",
        f"(01){GTIN}(21)100001",
        "pool:line-3",
        "serial-pool",
        {"gtin": GTIN, "serial": "100001", "lot": "L/2026 07", "expiry": "2027-03-31"},
    )
    event = render(ev("commissioned", ids=(unit,)))
    assert event["action"] == "ADD"
    assert event["bizStep"] == "commissioning"
    assert event["disposition"] == "active"
    assert event["epcList"] == [f"https://id.gs1.org/01/{GTIN}/21/100001"]
    assert event["ilmd"] == {
        "cbvmda:lotNumber": "L/2026 07",
        "cbvmda:itemExpirationDate": "2027-03-31",
    }
    bare = Identity("sgtin", f"(01){GTIN}(21)100002", "", "serial-pool")
    assert "ilmd" not in render(ev("commissioned", ids=(bare,)))


CASE = {"scheme": "sscc", "value": "(00)106141411234567897", "raw": "", "source": "cam-pack"}
UNIT = SGTIN.to_json()
LOT = {"scheme": "lgtin", "value": f"(01){GTIN}(10)LOT-7", "raw": "", "source": "cam-pack"}


@pytest.mark.parametrize(
    ("kind", "action", "step"),
    [
        ("packing", "add", "packing"),
        ("packing", "delete", "unpacking"),
        ("assembly", "add", "assembling"),
        ("assembly", "delete", "disassembling"),
    ],
)
def test_aggregated(kind: str, action: str, step: str) -> None:
    children = [UNIT, LOT, LOT]
    event = render(ev("aggregated"), kind=kind, action=action, parent=CASE, children=children)
    assert event["type"] == "AggregationEvent"
    assert event["action"] == action.upper()
    assert event["bizStep"] == step
    assert event["parentID"] == "https://id.gs1.org/00/106141411234567897"
    assert event["childEPCs"] == [SGTIN_DL]
    assert event["childQuantityList"] == [
        {"epcClass": f"https://id.gs1.org/01/{GTIN}/10/LOT-7", "quantity": 2}
    ]
    assert (event["tg:kind"], event["tg:parent"], event["tg:children"]) == (kind, CASE, children)


def test_aggregated_delete_all_children() -> None:
    event = render(ev("aggregated"), kind="packing", action="delete", parent=CASE, children=[])
    assert "childEPCs" not in event and event["action"] == "DELETE"


@pytest.mark.parametrize(
    "members",
    [
        {"kind": "packing", "action": "add", "parent": CASE, "children": []},
        {"kind": "packing", "action": "add", "children": [UNIT]},
        {"kind": "packing", "action": "observe", "parent": CASE, "children": [UNIT]},
    ],
    ids=["add-nothing", "no-parent", "unknown-action"],
)
def test_aggregated_without_epcis_meaning(members: dict[str, Any]) -> None:
    assert render_epcis(published(ev("aggregated"), **members), OPTS) is None


@pytest.mark.parametrize("reason", ["duplicate_serial", "route_violation"])
def test_rejected_with_identity(reason: str) -> None:
    detail = {"message": "serial commissioned before", "first_event": EVENT_ID}
    event = render(ev("rejected", ids=(SGTIN,), reason=reason, detail=detail))
    assert event["action"] == "OBSERVE"
    assert event["disposition"] == "non_conformant"
    assert event["bizStep"] == "inspecting"
    assert event["epcList"] == [SGTIN_DL]
    assert event["tg:reason"] == reason
    assert event["tg:detail"] == detail


@pytest.mark.parametrize(
    "event",
    [
        ev("rejected", reason="bad_check_digit", detail={"message": "...", "raw": "0101"}),
        ev("noread", detail={"source": "cam-st10", "raw": "NoRead"}),
        ev("noread", parameters={"torque": TORQUE}, result="OK", reason="no_identity"),
        TraceEvent("device.state", T0, detail={"device": "cam", "state": "connected"}),
        TraceEvent("gap", T0, reason="queue_full", detail={"device": "cam", "lost": 3}),
        TraceEvent("outbox.state", T0, reason="full", detail={"rows": 10}),
        ev("handshake.timeout", reason="request_not_dropped"),
        ev("handshake.error", reason="write_failed"),
        ev("trigger.error", reason="signal_unreadable"),
        ev("some.future.type", ids=(SGTIN,)),
    ],
    ids=lambda e: f"{e.type}:{e.reason}",
)
def test_events_without_epcis_meaning(event: TraceEvent) -> None:
    assert render_epcis(published(event), OPTS) is None


def test_not_a_tracegate_document() -> None:
    doc = published(ev("identified", ids=(SGTIN,)))
    for broken in ({**doc, "schema": "tracegate.event/2"}, {**doc, "event_id": "7"}, {"a": 1}):
        with pytest.raises(ValueError, match=r"tracegate\.event/1|UUID"):
            render_epcis(broken, OPTS)


# --- identifiers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "value", "uri", "is_class"),
    [
        ("sgtin", f"(01){GTIN}(21)A/B%C", SGTIN_DL, False),
        (
            "sgtin",
            f"(01){GTIN}(21)!\"%&'()*+,",
            f"/01/{GTIN}/21/%21%22%25%26%27%28%29%2A%2B%2C",
            False,
        ),
        ("sgtin", f"(01){GTIN}(21)-./:;<=>?_", f"/01/{GTIN}/21/-.%2F%3A%3B%3C%3D%3E%3F_", False),
        ("sscc", "(00)106141411234567897", "/00/106141411234567897", False),
        ("lgtin", f"(01){GTIN}(10)L/1", f"/01/{GTIN}/10/L%2F1", True),
        ("gtin", f"(01){GTIN}", f"/01/{GTIN}", True),
        ("sgln", "(414)0614141000005", "/414/0614141000005", False),
        ("sgln", "(414)0614141000005(254)A/1", "/414/0614141000005/254/A%2F1", False),
        ("grai", "(8003)00614141000012S/1", "/8003/00614141000012S%2F1", False),
        ("grai", "(8003)00614141000012", "/8003/00614141000012", True),
        ("giai", "(8004)0614141A/B", "/8004/0614141A%2FB", False),
        ("plain", "SN 12/ä%", "urn:tracegate:serial:SN%2012%2F%C3%A4%25", False),
        ("plain", "MWC:7", "urn:tracegate:serial:MWC:7", False),
        ("epc", "urn:epc:raw:64.xE280116060000209", "urn:epc:raw:64.xE280116060000209", False),
        ("epc", "not a raw uri", "urn:tracegate:id:epc:not%20a%20raw%20uri", False),
        ("sgtin", "(01)123(21)X", "urn:tracegate:id:sgtin:%2801%29123%2821%29X", False),
        ("rfc", "ä", "urn:tracegate:id:rfc:%C3%A4", False),
    ],
)
def test_identifiers(scheme: str, value: str, uri: str, is_class: bool) -> None:
    if uri.startswith("/"):
        uri = "https://id.gs1.org" + uri
    event = render(ev("identified", ids=(Identity(scheme, value, value, "cam"),)))
    if is_class:
        assert event["epcList"] == []
        assert event["quantityList"] == [{"epcClass": uri, "quantity": 1}]
    else:
        assert event["epcList"] == [uri] and "quantityList" not in event
    assert event["tg:ids"][0]["value"] == value


def test_templates_of_your_own() -> None:
    opts = EpcisOptions(
        site="ulm",
        read_point_template="https://plant.example/{site}/{line}/{station}",
        serial_uri_template="urn:example:sn:{line}:{value}",
        epc_uri_template="urn:example:epc:{value}",
        work_order_template="urn:epcglobal:cbv:bt:4012345000009:{work_order}",
        extension_prefix="acme",
        extension_namespace="https://ns.example.com/tracegate/",
    )
    ids = (Identity("plain", "SN/1", "", "cam"), Identity("epc", "urn:epc:raw:8.x30", "", "rd"))
    document = render_epcis(published(ev("identified", ids=ids, work_order="WO 7")), opts)
    event = valid(document)
    assert document is not None and document["@context"][1]["acme"] == opts.extension_namespace
    assert event["readPoint"] == {"id": "https://plant.example/ulm/line-3/st10"}
    assert event["epcList"] == ["urn:example:sn:line-3:SN%2F1", "urn:example:epc:urn:epc:raw:8.x30"]
    assert event["bizTransactionList"][0]["bizTransaction"] == (
        "urn:epcglobal:cbv:bt:4012345000009:WO%207"
    )
    assert event["acme:seq"] == 7 and not any(k.startswith("tg:") for k in event)


@pytest.mark.parametrize(
    "bad",
    [
        {"read_point_template": "{station}"},  # the scheme would come from the data
        {"serial_uri_template": "urn:x:{serial}"},  # unknown field
        {"work_order_template": "urn:x:{work_order!r}"},
        {"epc_uri_template": "raw {value"},
        {"biz_location": "not a uri"},
        {"extension_prefix": "gs1"},  # GS1's, and protected in its context
        {"extension_prefix": "t g"},
        {"extension_prefix": "Acme"},
        {"extension_namespace": "urn:x"},  # no separator to append names to
        {"stations": {"st10": {"biz_step": "assembling"}}},  # not a StationEpcis
    ],
)
def test_options_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        EpcisOptions(**bad)


@pytest.mark.parametrize(
    "bad",
    [
        {"biz_step": "urn:epcglobal:cbv:bizstep:assembling"},  # CBV's own go by their bare name
        {"disposition": "non-conformant"},
        {"biz_step_in": "inspectin"},
        {"read_point": "st10"},
    ],
)
def test_station_options_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        StationEpcis(**bad)


def test_vocabulary_of_your_own() -> None:
    station = StationEpcis(biz_step="https://ns.example.com/bizstep/torquing")
    event = render(ev("identified", ids=(SGTIN,)), EpcisOptions(stations={"st10": station}))
    assert event["bizStep"] == "https://ns.example.com/bizstep/torquing"


# --- the schema check itself ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "breakage",
    [
        lambda e: e.update(eventTime="2025-11-24 16:00"),  # format date-time
        lambda e: e.update(epcList=["not a uri"]),  # format uri
        lambda e: e.update(bizStep="inspectin"),  # CBV enumeration
        lambda e: e.update(seq=7),  # an extension member outside any namespace
        lambda e: e.pop("eventTimeZoneOffset"),
        lambda e: e.update(action="ADD", ilmd={"lot": "L1"}),  # ilmd keys are URIs
        lambda e: e["sensorElementList"][0]["sensorReport"][0].pop("type"),
    ],
    ids=["time", "uri", "bizstep", "extension", "offset", "ilmd", "sensor-type"],
)
def test_the_validator_rejects_broken_documents(breakage: Any) -> None:
    document = render_epcis(
        published(ev("step.completed", ids=(SGTIN,), parameters={"t": TORQUE})), OPTS
    )
    valid(document)
    assert document is not None
    breakage(document["epcisBody"]["eventList"][0])
    assert not validator().is_valid(document)


def test_vocabularies_are_the_schemas() -> None:
    definitions = artefacts.load(artefacts.SCHEMA)["definitions"]

    def names(definition: str) -> set[str]:
        (named,) = [d for d in definitions[definition]["anyOf"] if "enum" in d]
        return set(named["enum"])

    assert names("bizStep") == BIZ_STEPS
    assert names("disposition") == DISPOSITIONS
    assert {measured for _, measured in UNITS.values()} <= names("measurementType")
    assert all(re.fullmatch(definitions["uom"]["pattern"], uom) for uom, _ in UNITS.values())


def test_reserved_prefixes_are_the_contexts_terms() -> None:
    context = artefacts.load(artefacts.CONTEXT)["@context"]
    sensors = context["sensorElementList"]["@context"]
    terms = {*context, *sensors, *sensors["sensorReport"]["@context"]}
    terms |= set(sensors["sensorMetadata"]["@context"])
    assert {t for t in terms if re.fullmatch(r"[a-z][a-z0-9_-]*", t)} <= RESERVED_PREFIXES
    for term in terms:
        with pytest.raises(ValueError):
            EpcisOptions(extension_prefix=term)


def test_golden_document() -> None:
    """The example of docs/epcis.md. TRACEGATE_UPDATE_GOLDEN=1 writes it anew."""
    event = ev(
        "step.completed",
        station="st30",
        step="tightening",
        ids=(SGTIN,),
        parameters={"torque": TORQUE, "angle": Parameter(38.5, "deg", "press-plc", 30, 45, True)},
        result="NOK",
        detail={"device": "press-plc", "trigger": "request"},
    )
    document = render_epcis(published(event), OPTS)
    valid(document)
    golden = HERE / "step-completed.epcis.json"
    if os.environ.get("TRACEGATE_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    assert document == json.loads(golden.read_text(encoding="utf-8"))


# --- JSON-LD: every member means something to a JSON-LD consumer ----------------------------------


def _loader(url: str, options: Any = None) -> dict[str, Any]:
    assert url == EPCIS_CONTEXT, f"the document needs another context: {url}"
    context = artefacts.load(artefacts.CONTEXT)
    return {
        "contentType": "application/ld+json",
        "contextUrl": None,
        "documentUrl": url,
        "document": context,
    }


def _leaves(value: Any) -> int:
    if isinstance(value, dict):
        return sum(_leaves(v) for k, v in value.items() if k != "@context")
    if isinstance(value, list):
        return sum(_leaves(v) for v in value)
    return 1


def _expanded_leaves(value: Any) -> int:
    if isinstance(value, list):
        return sum(_expanded_leaves(v) for v in value)
    assert isinstance(value, dict)
    if "@value" in value:
        return _leaves(value["@value"]) if value.get("@type") == "@json" else 1
    return sum(
        len(v) if k == "@type" else 1 if k == "@id" else _expanded_leaves(v)
        for k, v in value.items()
    )


EXAMPLES: dict[str, tuple[TraceEvent, dict[str, Any]]] = {
    "identified": (ev("identified", ids=(SGTIN,), detail={"pass": {"direction": "in"}}), {}),
    "step.completed": (ev("step.completed", ids=(SGTIN,), parameters={"t": TORQUE}), {}),
    "commissioned": (ev("commissioned", ids=(SGTIN,)), {}),
    "aggregated": (
        ev("aggregated"),
        {"kind": "packing", "action": "add", "parent": CASE, "children": [UNIT, LOT]},
    ),
    "rejected": (ev("rejected", ids=(SGTIN,), reason="duplicate_serial"), {}),
}


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_json_ld_expansion_keeps_every_member(kind: str) -> None:
    event, members = EXAMPLES[kind]
    document = render_epcis(published(event, **members), OPTS)
    valid(document)
    expanded = jsonld.expand(document, {"documentLoader": _loader})
    # JSON-LD drops what its context does not define: a term we made up would vanish here.
    assert _expanded_leaves(expanded) == _leaves(document)
    (body,) = expanded[0]["https://ref.gs1.org/epcis/epcisBody"]
    (node,) = body["https://ref.gs1.org/epcis/eventList"]
    assert node["@id"] == f"urn:uuid:{EVENT_ID}"
    assert node["urn:tracegate:epcis:seq"] == [{"@value": 7}]


def test_every_event_type_has_an_example() -> None:
    assert set(EXAMPLES) == EPCIS_TYPES


# --- properties -----------------------------------------------------------------------------------

SET82 = "".join(c for c in string.printable if c.isalnum() or c in "!\"%&'()*+,-./:;<=>?_")
anything = st.text(max_size=24)
set82 = st.text(alphabet=SET82, min_size=1, max_size=20)

gs1_keys = st.one_of(
    set82.map(lambda s: ("sgtin", f"(01){GTIN}(21){s}")),
    set82.map(lambda s: ("lgtin", f"(01){GTIN}(10){s}")),
    st.just(("gtin", f"(01){GTIN}")),
    st.just(("sscc", "(00)106141411234567897")),
    set82.map(lambda s: ("giai", f"(8004)0614141{s}")),
    st.tuples(st.sampled_from([*SCHEMES, "weird"]), anything),
)
identities = st.builds(
    lambda key, raw, attrs: Identity(key[0], key[1], raw, "dev", attrs),
    gs1_keys,
    anything,
    st.dictionaries(st.sampled_from(["gtin", "serial", "lot", "expiry", "epc_uri"]), anything),
)
tags = st.binary(min_size=1, max_size=32).map(
    lambda b: epc_identity(b.hex(), source="rd", schemes=frozenset(SCHEMES))
)
numbers = st.integers(-(2**63), 2**63) | st.floats(allow_nan=False, allow_infinity=False)
parameters = st.builds(
    Parameter,
    value=st.none() | st.booleans() | numbers | anything | st.lists(numbers, max_size=3),
    unit=st.none() | st.sampled_from(sorted(UNITS)) | anything,
    source=anything,
    low=st.none() | numbers,
    high=st.none() | numbers,
    in_tolerance=st.none() | st.booleans(),
    plc_time=st.none() | st.just("2025-11-24T16:00:00.100Z") | anything,
    status=st.sampled_from(["good", "not read", "timeout"]),
)
TYPES = [*EPCIS_TYPES, "noread", "device.state", "gap", "outbox.state", "handshake.timeout"]
events = st.builds(
    TraceEvent,
    type=st.sampled_from(TYPES),
    time=st.floats(0, 4_102_444_800),
    station=st.none() | st.sampled_from(["st10", "st30", "dock-1"]) | anything,
    step=st.none() | anything,
    work_order=st.none() | anything,
    ids=st.lists(identities | tags, max_size=3).map(tuple),
    parameters=st.dictionaries(anything, parameters, max_size=4),
    result=st.sampled_from([None, "OK", "NOK"]),
    reason=st.none() | anything,
    detail=st.fixed_dictionaries(
        {}, optional={"pass": st.fixed_dictionaries({"direction": st.sampled_from(["in", "out"])})}
    ),
)
id_docs = (identities | tags).map(Identity.to_json)
aggregation = {
    "action": st.sampled_from(["add", "delete", "move"]),
    "kind": st.sampled_from(["packing", "assembly", "kitting"]),
    "parent": id_docs,
    "children": st.lists(id_docs, max_size=4),
}
aggregations = st.fixed_dictionaries(aggregation) | st.fixed_dictionaries({}, optional=aggregation)
options = st.sampled_from(
    [
        EpcisOptions(),
        OPTS,
        EpcisOptions(
            site="Ulm Süd/2",
            stations={"st10": StationEpcis(biz_step="packing", disposition="in_progress")},
            read_point_template="urn:x:{gateway}:{scheme}:{value}",
            work_order_template="https://erp.example/{site}/{station}/{work_order}?{line}#{value}",
            serial_uri_template="tag:example.com,2026:{gateway}:{value}",
            epc_uri_template="{site}{value}",  # no URI for most sites: falls back
        ),
    ]
)
contexts = st.builds(EventContext, anything, anything, anything)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events, aggregations, options, contexts)
def test_any_event_renders_valid_or_not_at_all(
    event: TraceEvent, extra: dict[str, Any], opts: EpcisOptions, ctx: EventContext
) -> None:
    doc = published(event, ctx, **(extra if event.type == "aggregated" else {}))
    document = render_epcis(doc, opts)
    if event.type not in EPCIS_TYPES or (event.type == "rejected" and not event.ids):
        assert document is None
        return
    if document is None:
        assert event.type == "aggregated"
        return
    rendered = valid(document)
    assert rendered["eventID"] == f"urn:uuid:{event.event_id}"
    assert json.loads(encode_epcis(document)) == document


@settings(max_examples=100, deadline=None)
@given(set82, st.sampled_from(["sgtin", "lgtin"]))
def test_digital_links_read_back_as_the_same_key(serial: str, scheme: str) -> None:
    ai = "21" if scheme == "sgtin" else "10"
    key = f"(01){GTIN}({ai}){serial}"
    event = render(ev("identified", ids=(Identity(scheme, key, key, "cam"),)))
    (uri,) = event["epcList"] or [event["quantityList"][0]["epcClass"]]
    assert unquote(uri.rsplit("/", 1)[1]) == serial
    read = parse_code(uri, source="cam", schemes=frozenset(SCHEMES))
    assert (read.scheme, read.value) == (scheme, key)
