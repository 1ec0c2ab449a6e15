"""The event wire format: the hand-written JSON is exactly json.dumps of the document, times are
RFC 3339 as datetime renders them, event ids are version 4 UUIDs."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.events import (
    Aggregation,
    EventContext,
    Identity,
    Parameter,
    TraceEvent,
    compose,
    render_members,
    rfc3339,
)

text = st.text(max_size=30)  # any Unicode, control characters and quotes included
maybe = st.none() | text


def reference(event: TraceEvent, ctx: EventContext) -> str:
    """The specification: the document of DESIGN section 4, rendered by json.dumps."""
    doc: dict[str, Any] = {
        "event_id": event.event_id,
        "gateway": ctx.gateway,
        "type": event.type,
        "time": rfc3339(event.time),
        "line": ctx.line,
        "station": event.station,
        "step": event.step,
        "work_order": event.work_order,
        "ids": [i.to_json() for i in event.ids],
        "parameters": {k: p.to_json() for k, p in event.parameters.items()},
        "result": event.result,
        "config": ctx.config_hash,
    }
    if event.reason is not None:
        doc["reason"] = event.reason
    if event.aggregation is not None:
        agg = event.aggregation
        doc["action"], doc["kind"] = agg.action, agg.kind
        doc["parent"] = agg.parent.to_json()
        doc["children"] = [c.to_json() for c in agg.children]
    if event.detail:
        doc["detail"] = dict(event.detail)
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)[1:-1]


identities = st.builds(
    Identity,
    scheme=st.sampled_from(["sgtin", "sscc", "plain"]),
    value=text,
    raw=text,
    source=text,
    attrs=st.dictionaries(st.sampled_from(["gtin", "serial", "lot", "expiry", "raw"]), text),
)
parameters = st.dictionaries(
    text,
    st.builds(
        Parameter,
        value=st.floats(allow_nan=False, allow_infinity=False) | st.integers() | text,
        unit=maybe,
        source=text,
    ),
    max_size=3,
)
events = st.builds(
    TraceEvent,
    type=st.sampled_from(["identified", "rejected", "noread", "gap"]),
    time=st.floats(0, 4e9),
    station=maybe,
    step=maybe,
    work_order=maybe,
    ids=st.lists(identities, max_size=3).map(tuple),
    parameters=parameters,
    result=maybe,
    reason=maybe,
    detail=st.dictionaries(text, st.integers() | text | st.none(), max_size=3),
    aggregation=st.none()
    | st.builds(
        Aggregation,
        action=st.sampled_from(["add", "delete"]),
        kind=st.sampled_from(["assembly", "packing"]),
        parent=identities,
        children=st.lists(identities, max_size=4).map(tuple),
    ),
)
contexts = st.builds(EventContext, gateway=text, line=text, config_hash=text)


@given(events, contexts)
@settings(max_examples=400, deadline=None)
def test_render_members_is_exactly_json_dumps_of_the_document(
    event: TraceEvent, ctx: EventContext
) -> None:
    members = render_members(event, ctx)
    assert members == reference(event, ctx)
    doc = json.loads(compose(42, 1.5, members))
    assert doc["seq"] == 42 and doc["schema"] == "tracegate.event/1"
    assert doc["event_id"] == event.event_id


@given(st.floats(0, 4e9))
@settings(max_examples=2000)
def test_rfc3339_matches_datetime(t: float) -> None:
    d = dt.datetime.fromtimestamp(t, dt.UTC)
    assert rfc3339(t) == d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def test_event_ids_are_unique_version_4_uuids() -> None:
    ids = [TraceEvent("x", 0.0).event_id for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    for i in ids[:1000]:
        u = uuid.UUID(i)
        assert u.version == 4 and u.variant == uuid.RFC_4122 and str(u) == i
