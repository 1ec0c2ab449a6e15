"""Serialization rules at the edge: may this unit be recorded at this station now?

Pure, given the trace view (what the line has recorded of the unit, gateway.trace_index) and the
work order in force. Checked in the order of docs/serialization.md; the first failure is the
reason. A passing unit gets the index changes of doing the station's step.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.binding.context import WorkOrder
from gateway.config.models import StationConfig
from gateway.config.serialization import VERDICT_REJECTED
from gateway.events import Identity
from gateway.trace_index import TraceView, UnitChange


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    rule: str
    message: str


def check(
    st: StationConfig, ident: Identity, view: TraceView, order: WorkOrder | None
) -> Refusal | None:
    rules = st.rules
    gtin = ident.attrs.get("gtin")
    if rules.gtins == "work_order":
        if order is None or not order.gtins:
            return Refusal(
                "gtin_not_allowed",
                "gtins",
                f"no work order with GTINs is active at {st.id}, so GTIN {gtin} cannot be "
                "checked against one",
            )
        if gtin not in order.gtins:
            return Refusal(
                "gtin_not_allowed",
                "gtins",
                f"GTIN {gtin} is not one of work order {order.work_order}'s "
                f"({', '.join(order.gtins)})",
            )
    if not (rules.commission or rules.requires):
        return None
    unit = view.unit(ident.value)
    if rules.commission:
        if unit is not None and unit.commissioned:
            return Refusal(
                "duplicate_serial", "commission", f"{ident.value} was commissioned before"
            )
        serial = ident.attrs.get("serial")
        if rules.serial_unique_across_gtins and serial is not None:
            others = view.serial_gtins(serial) - {gtin}
            if others:
                return Refusal(
                    "serial_reused",
                    "serial_unique_across_gtins",
                    f"serial {serial!r} was commissioned under GTIN {', '.join(sorted(others))}",
                )
    for step in rules.requires:
        if unit is None or step not in unit.steps:
            return Refusal(
                "missing_step", "requires", f"{ident.value} has no record of step {step!r}"
            )
        if rules.requires_ok and unit.steps[step] == "NOK":
            return Refusal(
                "previous_step_nok",
                "requires",
                f"{ident.value}'s latest result at step {step!r} is NOK",
            )
    return None


def verdict_code(st: StationConfig, reason: str) -> int:
    return st.rules.verdict_codes.get(reason, VERDICT_REJECTED)


def step_done(
    st: StationConfig,
    ident: Identity,
    event_id: str,
    time: float,
    result: str | None = None,
    *,
    role: str = "unit",
) -> UnitChange:
    """The index change of `ident` doing this station's step (and being commissioned by it,
    where the station commissions)."""
    return UnitChange(
        event_id,
        ident.value,
        ident.scheme,
        time,
        role,
        ident.attrs.get("gtin"),
        ident.attrs.get("serial"),
        st.step_name,
        result,
        commissioned=st.rules.commission or st.commission is not None,
    )


def seen(ident: Identity, event_id: str, time: float, role: str = "unit") -> UnitChange:
    """The index change of an event that concerns `ident` without recording a step for it."""
    return UnitChange(
        event_id,
        ident.value,
        ident.scheme,
        time,
        role,
        ident.attrs.get("gtin"),
        ident.attrs.get("serial"),
    )
