"""Genealogy at a station: children into a parent (assembly, packing), or out of it (unpacking,
rework). Pure; the trace view says which unit is inside which.

Identities read at the station are told apart by the aggregation's sides (`sources`, `schemes`,
`gtins`). The open aggregation closes, and becomes an `aggregated` event, when `count` children
are in with a parent, when the parent is read after its children (parent last), or when the next
parent arrives (parent first); one left open for `max_open_s` ends as `step.incomplete`. The
station's rules apply to the parent; a child inside another parent is `rejected`
(`already_aggregated`), as is taking out one that is not inside (`not_aggregated`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from gateway.binding import rules
from gateway.binding.env import Env
from gateway.binding.result import BindResult
from gateway.config.models import StationConfig
from gateway.config.serialization import AggregationSide
from gateway.events import Aggregation, Identity, TraceEvent
from gateway.trace_index import UnitChange


@dataclass
class _Open:
    opened: float
    parent: Identity | None = None
    children: dict[str, Identity] = field(default_factory=dict)  # key -> identity, in order


def _matches(side: AggregationSide, ident: Identity, source: str) -> bool:
    return (
        (not side.sources or source in side.sources)
        and (not side.schemes or ident.scheme in side.schemes)
        and (not side.gtins or ident.attrs.get("gtin") in side.gtins)
    )


class AggregationStation:
    def __init__(self, st: StationConfig, env: Env) -> None:
        assert st.aggregation is not None
        self.st = st
        self.cfg = st.aggregation
        self.env = env
        self.open: _Open | None = None

    def offer(self, ident: Identity, t: float, source: str, detail: dict[str, Any]) -> BindResult:
        cfg = self.cfg
        if _matches(cfg.parent, ident, source):
            return self._parent(ident, t, detail)
        if _matches(cfg.children, ident, source):
            return self._child(ident, t, detail)
        return self._rejected(
            ident,
            t,
            reason="scheme_not_accepted",
            rule="aggregation",
            message=f"{ident.value} is neither a parent nor a child at {self.st.id}",
            detail=detail,
        )

    def tick(self, now: float) -> BindResult:
        agg = self.open
        if agg is None or now - agg.opened < self.cfg.max_open_s:
            return BindResult()
        if self.cfg.action == "delete" and agg.parent is not None and not agg.children:
            return self._close(now)  # the parent alone: all its children out
        self.open = None
        ids = tuple(x for x in (agg.parent, *agg.children.values()) if x is not None)
        ev = self._event(
            "step.incomplete",
            now,
            ids,
            reason="aggregation_timeout",
            detail={
                "parent": agg.parent.value if agg.parent is not None else None,
                "children": len(agg.children),
                "max_open_s": self.cfg.max_open_s,
            },
        )
        return BindResult(events=[ev], changes=[rules.seen(i, ev.event_id, now) for i in ids])

    # --- the sides ------------------------------------------------------------------------------

    def _parent(self, ident: Identity, t: float, detail: dict[str, Any]) -> BindResult:
        refusal = rules.check(self.st, ident, self.env.view, self.env.orders.current(self.st.id))
        if refusal is not None:
            out = self._without_parent(t)
            out.extend(
                self._rejected(
                    ident,
                    t,
                    reason=refusal.reason,
                    rule=refusal.rule,
                    message=refusal.message,
                    detail=detail,
                )
            )
            return out
        out = BindResult()
        agg = self.open
        if agg is not None and agg.parent is not None and agg.parent.value != ident.value:
            out.extend(self._close(t))  # parent first: the next parent closes the last
            agg = None
        if agg is None:
            self.open = _Open(t, parent=ident)
            return out
        if agg.parent is None:
            agg.parent = ident
            if agg.children and self.cfg.count is None:
                out.extend(self._close(t))  # parent last
            elif self.cfg.count is not None and len(agg.children) >= self.cfg.count:
                out.extend(self._close(t))
        return out

    def _child(self, ident: Identity, t: float, detail: dict[str, Any]) -> BindResult:
        agg = self.open
        if agg is None:
            agg = self.open = _Open(t)
        if ident.value in agg.children:
            return BindResult()  # read twice
        unit = self.env.view.unit(ident.value)
        inside = unit.parent if unit is not None else None
        if (
            self.cfg.action == "add"
            and inside is not None
            and (agg.parent is None or inside != agg.parent.value)
        ):
            return self._rejected(
                ident,
                t,
                reason="already_aggregated",
                rule="aggregation",
                message=f"{ident.value} is inside {inside}; take it out first",
                detail=detail,
            )
        if self.cfg.action == "delete" and agg.parent is not None and inside != agg.parent.value:
            return self._rejected(
                ident,
                t,
                reason="not_aggregated",
                rule="aggregation",
                message=f"{ident.value} is not inside {agg.parent.value}"
                + (f" but inside {inside}" if inside else ""),
                detail=detail,
            )
        agg.children[ident.value] = ident
        if self.cfg.count is not None and len(agg.children) >= self.cfg.count and agg.parent:
            return self._close(t)
        return BindResult()

    def _without_parent(self, t: float) -> BindResult:
        """A parent arrived and was rejected. An open aggregation with a parent of its own ends
        (the next parent ends it, parent first); children waiting for a parent were this
        one's (parent last): they end as `step.incomplete`, and the next parent starts anew."""
        agg = self.open
        if agg is None:
            return BindResult()
        if agg.parent is not None:
            return self._close(t)
        self.open = None
        children = tuple(agg.children.values())
        ev = self._event(
            "step.incomplete",
            t,
            children,
            reason="parent_rejected",
            detail={"children": len(children)},
        )
        return BindResult(events=[ev], changes=[rules.seen(c, ev.event_id, t) for c in children])

    # --- closing --------------------------------------------------------------------------------

    def _close(self, t: float) -> BindResult:
        agg, self.open = self.open, None
        assert agg is not None and agg.parent is not None
        parent, cfg = agg.parent, self.cfg
        children = tuple(agg.children.values())
        if cfg.action == "delete" and not children:
            keys = self.env.view.children(parent.value)
            children = tuple(_known(self.env, k) for k in keys)
        if not children:
            return BindResult()
        agg_ev = Aggregation(cfg.action, cfg.kind, parent, children)
        ev = self._event("aggregated", t, (parent,), aggregation=agg_ev)
        changes: list[UnitChange] = [
            rules.step_done(self.st, parent, ev.event_id, t, role="parent")
        ]
        for c in children:
            change = rules.seen(c, ev.event_id, t, "child")
            if cfg.action == "add":
                change = _with(change, parent=parent.value)
            else:
                change = _with(change, parent=parent.value, unparent=True)
            changes.append(change)
        return BindResult(events=[ev], changes=list(changes))

    def _rejected(
        self,
        ident: Identity,
        t: float,
        *,
        reason: str,
        rule: str,
        message: str,
        detail: dict[str, Any],
    ) -> BindResult:
        ev = self._event(
            "rejected",
            t,
            (ident,),
            reason=reason,
            detail={**detail, "rule": rule, "message": message},
        )
        return BindResult(events=[ev], changes=[rules.seen(ident, ev.event_id, t)])

    def _event(self, kind: str, t: float, ids: tuple[Identity, ...], **kw: Any) -> TraceEvent:
        st = self.st
        return TraceEvent(kind, t, st.id, st.step_name, self.env.orders.name(st.id), ids=ids, **kw)


def _known(env: Env, key: str) -> Identity:
    """An identity known only by its key (a child taken out without being read)."""
    unit = env.view.unit(key)
    scheme = unit.scheme if unit is not None else "plain"
    attrs = {}
    if unit is not None and unit.gtin:
        attrs["gtin"] = unit.gtin
    if unit is not None and unit.serial:
        attrs["serial"] = unit.serial
    return Identity(scheme, key, key, "trace_index", attrs)


def _with(c: UnitChange, **kw: Any) -> UnitChange:
    return replace(c, **kw)
