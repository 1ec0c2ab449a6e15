"""Configuration of serialization at the edge: how identities bind to cycles (windows), the rules
a unit must pass at a station, genealogy (assembly, packing), serial commissioning from pools,
work orders, and the trace index that rules and `tracegate trace` read.

Semantics are in docs/serialization.md; the binder (gateway.binding) carries them out.
"""

from __future__ import annotations

import string
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.base import Id, Model

AnyScheme = Literal["sgtin", "sscc", "lgtin", "gtin", "plain", "sgln", "grai", "giai", "epc"]

# Why a unit is rejected by a rule (the `reason` of `rejected` events), beside the identifier
# reasons of gateway.identifiers.reasons.
RULE_REASONS = (
    "gtin_not_allowed",  # the GTIN is not one of the active work order's
    "duplicate_serial",  # commissioned before: the same unit (GTIN + serial) twice
    "serial_reused",  # the serial was commissioned under another GTIN
    "missing_step",  # a mandatory earlier step was never recorded for the unit
    "previous_step_nok",  # it was, but its latest result is NOK
    "already_aggregated",  # a child that is inside another parent
    "not_aggregated",  # removing a child that is not inside this parent
    "pool_empty",  # no serial left to commission
    "no_work_order",  # commissioning needs the GTIN of a work order, and none is active
)
VERDICT_OK, VERDICT_REJECTED, VERDICT_NO_IDENTITY = 1, 2, 3


class WindowConfig(Model):
    before_ms: int = Field(
        10_000,
        ge=0,
        le=3_600_000,
        description="Identities read up to this long before a cycle ends (trigger or request) "
        "belong to that cycle.",
    )
    after_ms: int = Field(
        0,
        ge=0,
        le=60_000,
        description="And identities read up to this long after it: the cycle's record then "
        "waits that long (a scanner placed after the machine).",
    )


class RulesConfig(Model):
    gtins: Literal["any", "work_order"] = Field(
        "any",
        description="`work_order`: a GTIN must be one of the active work order's `gtins` "
        "(`gtin_not_allowed`); `any`: no check. Needs a work order that lists them.",
    )
    commission: bool = Field(
        False,
        description="This step gives units their identity (marking, labelling, "
        "commissioning): a unit commissioned before is rejected (`duplicate_serial`).",
    )
    serial_unique_across_gtins: bool = Field(
        False,
        description="With `commission`: a serial already commissioned under another GTIN is "
        "rejected too (`serial_reused`), for plants whose serials are unique by themselves.",
    )
    requires: list[Id] = Field(
        [],
        description="Steps a unit must have passed before this one (`missing_step`).",
    )
    requires_ok: bool = Field(
        True,
        description="And the latest result of each of them must be OK (`previous_step_nok`); "
        "a step recorded without a result counts as OK.",
    )
    verdict_codes: dict[str, int] = Field(
        {},
        description="Verdict written to the PLC per rejection reason (e.g. "
        "`{duplicate_serial: 11, missing_step: 12}`); reasons not listed write 2, OK writes 1, "
        "no identity writes 3.",
    )

    @field_validator("verdict_codes")
    @classmethod
    def _reasons(cls, codes: dict[str, int]) -> dict[str, int]:
        from gateway.identifiers.reasons import REASONS

        known = set(REASONS) | set(RULE_REASONS)
        for reason, code in codes.items():
            if reason not in known:
                raise ValueError(
                    f"{reason!r} is not a rejection reason (one of: {', '.join(sorted(known))})"
                )
            if not -32768 <= code <= 32767:
                raise ValueError(f"verdict code {code} for {reason!r} does not fit an int16")
        return codes


class AggregationSide(Model):
    sources: list[Id] = Field(
        [],
        description="Devices (scanners, readers) whose identities are this side. Empty: "
        "decided by `schemes`.",
    )
    schemes: list[AnyScheme] = Field(
        [],
        description="Identity schemes of this side (e.g. parent `sscc`, children `sgtin`). "
        "Empty: any.",
    )
    gtins: list[str] = Field(
        [],
        description="GTIN-14s of this side (a housing is the parent of its circuit board, both "
        "`sgtin`). Empty: any.",
    )

    @field_validator("gtins")
    @classmethod
    def _gtin14(cls, gtins: list[str]) -> list[str]:
        for g in gtins:
            if len(g) != 14 or not g.isdigit():
                raise ValueError(f"{g!r} is not a GTIN-14 (14 digits)")
        return gtins


class AggregationConfig(Model):
    kind: Literal["assembly", "packing"] = Field(
        description="`assembly`: components into the unit they are built into; `packing`: "
        "units into a case, cases into a pallet."
    )
    action: Literal["add", "delete"] = Field(
        "add",
        description="`add`: children are put into the parent; `delete`: unpacking or rework, "
        "the children read are taken out (the parent alone: all of them).",
    )
    parent: AggregationSide = Field(description="Which identities are the parent.")
    children: AggregationSide = Field(description="Which identities are children.")
    count: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Close the aggregation when this many children are in (a full case). "
        "Without it, it closes when the parent is read after its children, when the next "
        "parent is read, or when the station's cycle ends.",
    )
    max_open_s: float = Field(
        600.0,
        gt=0,
        le=86_400,
        description="An aggregation left open this long is closed as `step.incomplete` with "
        "what it has.",
    )

    @model_validator(mode="after")
    def _sides_differ(self) -> AggregationConfig:
        p, c = self.parent, self.children
        if not (p.sources or p.schemes or p.gtins) or not (c.sources or c.schemes or c.gtins):
            raise ValueError("say which identities are the parent and which the children")

        def overlap(a: list[str], b: list[str]) -> bool:
            return not a or not b or bool(set(a) & set(b))

        if (
            overlap(p.sources, c.sources)
            and overlap(list(p.schemes), list(c.schemes))
            and overlap(p.gtins, c.gtins)
        ):
            raise ValueError(
                "parent and children must differ by `sources`, `schemes` or `gtins`: as "
                "given, one identity could be either"
            )
        return self


class CommissionConfig(Model):
    pool: Id = Field(description="The serial pool (`pools`) serials are taken from.")
    counter: str = Field(
        min_length=1,
        description="A signal of the handshake PLC that changes with each request (its request "
        "number): what tells a new request from the one already answered when the gateway "
        "restarts while a request is raised (all other data of a request for a serial is the "
        "same every time).",
    )
    write: str = Field(
        min_length=1,
        description="Writable string signal of the station's handshake PLC that receives the "
        "serial (the marker's or printer's input), before the ack.",
    )
    write_format: Literal["serial", "element_string", "digital_link"] = Field(
        "element_string",
        description="What is written: the serial alone, the GS1 element string "
        "`01<GTIN>21<serial>` (with `10<lot>`/`17<expiry>` of the work order), or a GS1 "
        "Digital Link URI.",
    )
    gtin: str | None = Field(
        None,
        pattern=r"^\d{14}$",
        description="GTIN-14 of the units marked here. Default: the active work order's first "
        "GTIN (`no_work_order` when there is none).",
    )


TEMPLATE_FIELDS = frozenset({"seq", "yy", "yyyy", "plant", "line", "station"})


class PoolConfig(Model):
    id: Id = Field(description="Pool name, as commands and stations refer to it.")
    template: str = Field(
        "{seq}",
        min_length=1,
        description="How a number of a range becomes a serial: `{seq}`, `{seq:06}` (zero "
        "padded), `{yy}` / `{yyyy}` (year of assignment), `{plant}` (the site), `{line}`, "
        "`{station}`. Serials given as lists are used as they are.",
    )
    low_water: int = Field(
        1000,
        ge=0,
        description="A `pool.low` event (once) when fewer serials than this are left.",
    )
    gs1: bool = Field(
        True,
        description="Serials must be valid GS1 serials (AI 21: 1 to 20 characters of GS1 "
        "set 82); a pool delivering others is refused.",
    )

    @field_validator("template")
    @classmethod
    def _fields(cls, template: str) -> str:
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise ValueError(f"not a template: {exc}") from None
        for _, name, _, _ in parsed:
            if name is not None and name not in TEMPLATE_FIELDS:
                raise ValueError(
                    f"unknown field {{{name}}}; fields: {', '.join(sorted(TEMPLATE_FIELDS))}"
                )
        if "seq" not in {name for _, name, _, _ in parsed}:
            raise ValueError("a template needs {seq}, or every serial would be the same")
        return template


class WorkOrderSignal(Model):
    device: Id = Field(description="A PLC device of this line.")
    signal: str = Field(
        min_length=1,
        description="A string signal holding the active work order (its change is a "
        "`work_order.changed`); empty means none.",
    )


class CommandsConfig(Model):
    enabled: bool = Field(
        True,
        description="Accept commands on `{prefix}/gateway/{id}/cmd/{name}` (work orders, "
        "serial pools, unpacking ...). Each is answered on `.../cmd/{name}/reply`.",
    )
    max_bytes: int = Field(
        262_144,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Larger command payloads are refused without being parsed.",
    )


class TraceConfig(Model):
    retention_days: float = Field(
        90.0,
        gt=0,
        le=3650,
        description="Units not seen for this long leave the local trace index (rules and "
        "`tracegate trace` see only the index; delivered events are in the plant's systems).",
    )


class EpcisConfig(Model):
    read_point_template: str = Field(
        "urn:tracegate:loc:{site}:{line}:{station}",
        description="EPCIS readPoint of a station without its own `epcis.read_point`: a URI, "
        "`{site}`, `{line}`, `{station}` replaced (an SGLN URI if your plant has GLNs).",
    )
    biz_location: str | None = Field(
        None, description="EPCIS bizLocation of every event (a URI), unless a station has one."
    )
    serial_uri_template: str = Field(
        "urn:tracegate:serial:{value}",
        description="URI of a non-GS1 (`plain`) serial in EPCIS; `{value}` is the serial.",
    )
    work_order_template: str = Field(
        "urn:tracegate:prodorder:{site}:{work_order}",
        description="URI of a work order, the EPCIS bizTransaction of type `prodorder`.",
    )

    @model_validator(mode="after")
    def _renders(self) -> EpcisConfig:
        from gateway.forward.epcis import EpcisOptions

        EpcisOptions(  # its checks: URIs, templates (raises ValueError, reported here)
            read_point_template=self.read_point_template,
            biz_location=self.biz_location,
            serial_uri_template=self.serial_uri_template,
            work_order_template=self.work_order_template,
        )
        return self


class StationEpcisConfig(Model):
    read_point: str | None = Field(None, description="EPCIS readPoint of this station (a URI).")
    biz_location: str | None = Field(None, description="EPCIS bizLocation of this station.")
    biz_step: str | None = Field(
        None,
        description="CBV business step of this station's events (`assembling`, `packing`, "
        "`inspecting` ...). Default: by event type (docs/epcis.md).",
    )
    biz_step_in: str | None = Field(None, description="bizStep of inbound portal passes.")
    biz_step_out: str | None = Field(None, description="bizStep of outbound portal passes.")
    disposition: str | None = Field(
        None, description="CBV disposition where no result decides one."
    )

    @model_validator(mode="after")
    def _renders(self) -> StationEpcisConfig:
        from gateway.forward.epcis import EpcisOptions, StationEpcis

        EpcisOptions(stations={"s": StationEpcis(**self.model_dump())})
        return self
