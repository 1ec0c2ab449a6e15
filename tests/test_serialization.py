"""Serialization at the edge, pure: binding by window, work orders, rules against the trace
index, genealogy, serial pools and commissioning, commands. The binder with an in-memory trace
index that takes changes at once (as the journal would commit them); and, at the end, the
binder's loop with a real journal, whose index takes them only once committed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.binding import Binder, BindResult
from gateway.binding.result import WriteRequest
from gateway.config.models import LineConfig
from gateway.devices.base import WriteFailed
from gateway.events import (
    Command,
    DeviceState,
    EventContext,
    NoRead,
    Scan,
    Signals,
    SignalValue,
    Tick,
    TraceEvent,
    WriteDone,
)
from gateway.journal import Journal, connect
from gateway.pipeline import BinderLoop, ObservationQueue, Writer
from gateway.trace_index import PoolBlock, StateSet
from simulators.codes import gs1_check_digit
from tests.helpers import wait_for

GTIN_A = "09506000134352"
GTIN_B = "04012345000023"
PLC = {
    "id": "press",
    "kind": "opcua",
    "endpoint": "opc.tcp://127.0.0.1:4840",
    "signals": {
        "request": {"node": "ns=2;s=req", "type": "bool"},
        "ack": {"node": "ns=2;s=ack", "type": "bool", "writable": True},
        "verdict": {"node": "ns=2;s=verdict", "type": "int16", "writable": True},
        "trigger": {"node": "ns=2;s=trig", "type": "bool"},
        "counter": {"node": "ns=2;s=cnt", "type": "uint32"},
        "part_id": {"node": "ns=2;s=part", "type": "string"},
        "serial": {"node": "ns=2;s=serial", "type": "string", "writable": True},
        "wo": {"node": "ns=2;s=wo", "type": "string"},
        "torque": {"node": "ns=2;s=torque", "type": "float32", "unit": "Nm"},
        "result": {"node": "ns=2;s=result", "type": "int16"},
    },
}
SCANNERS = [{"id": f"cam-{n}", "kind": "tcp_scanner", "host": "h", "port": n} for n in range(1, 7)]


def code(serial: str | int, gtin: str = GTIN_A) -> str:
    return f"]d201{gtin}21{serial}"


def key(serial: str | int, gtin: str = GTIN_A) -> str:
    return f"(01){gtin}(21){serial}"


def line(*stations: dict[str, Any], **top: Any) -> LineConfig:
    return LineConfig.model_validate(
        {
            "gateway": {"id": "g", "site": "plant", "line": "l"},
            "devices": [PLC, *SCANNERS],
            "stations": list(stations),
            **top,
        }
    )


def sig(t: float, initial: bool = False, **values: Any) -> Signals:
    return Signals("press", t, tuple(SignalValue(k, v) for k, v in values.items()), initial)


def types(out: BindResult) -> list[str]:
    return [e.type for e in out.events]


def apply(b: Binder, out: BindResult) -> BindResult:
    """What the pipeline does with a result: the index takes its changes (committed)."""
    b.env.view.apply(out.changes)
    return out


def run(b: Binder, obs: Any) -> BindResult:
    return apply(b, b.process(obs))


def command(name: str, **doc: Any) -> Command:
    return Command("", 5.0, name, json.dumps(doc).encode(), f"t/cmd/{name}/reply")


# --- binding by window ---------------------------------------------------------------------------


def scan_station(**kw: Any) -> dict[str, Any]:
    return {
        "id": "st30",
        "step": "leak-test",
        "identity": {"sources": ["cam-1"]},
        "trigger": {"device": "press", "signal": "trigger"},
        "window": {"before_ms": 2000},
        "result": {"device": "press", "signal": "result"},
        **kw,
    }


def cycle(b: Binder, t: float, **data: Any) -> BindResult:
    run(b, sig(t - 0.01, trigger=False))
    return run(b, sig(t, trigger=True, result=1, **data))


def test_one_identity_in_the_window_binds_two_are_ambiguous_none_is_a_noread() -> None:
    b = Binder(line(scan_station()))
    run(b, sig(0.0, True, trigger=False))
    assert types(run(b, Scan("cam-1", 1.0, code(1)))) == ["identified"]
    run(b, Scan("cam-1", 1.2, code(1)))  # the same unit read twice: one candidate
    [ev] = cycle(b, 2.0).events
    assert (ev.type, ev.ids[0].value) == ("step.completed", key(1))
    run(b, Scan("cam-1", 3.0, code(2)))
    run(b, Scan("cam-1", 3.5, code(3)))
    [ev] = cycle(b, 4.0).events
    assert ev.type == "ambiguous" and ev.reason == "several_identities"
    assert [i.value for i in ev.ids] == [key(2), key(3)] and ev.result == "OK"
    [ev] = cycle(b, 5.0).events
    assert (ev.type, ev.reason) == ("noread", "no_identity")


def test_an_identity_no_cycle_takes_becomes_step_incomplete_and_an_old_one_never_binds() -> None:
    b = Binder(line(scan_station()))
    run(b, sig(0.0, True, trigger=False))
    run(b, Scan("cam-1", 1.0, code(9)))
    assert types(run(b, Tick(2.9))) == []  # still within 2 s of a cycle to come
    [ev] = run(b, Tick(3.1)).events
    assert (ev.type, ev.reason, ev.ids[0].value) == ("step.incomplete", "no_cycle", key(9))
    [ev] = cycle(b, 3.2).events
    assert ev.type == "noread"  # never a guess


def test_window_after_the_trigger_waits_for_its_scan() -> None:
    b = Binder(line(scan_station(window={"before_ms": 1000, "after_ms": 500})))
    run(b, sig(0.0, True, trigger=False))
    assert cycle(b, 1.0).events == []  # waits for the window to close
    run(b, Scan("cam-1", 1.3, code(4)))
    assert types(run(b, Tick(1.4))) == []
    [ev] = run(b, Tick(1.51)).events
    assert (ev.type, ev.time, ev.ids[0].value) == ("step.completed", 1.0, key(4))


# --- work orders ---------------------------------------------------------------------------------


def test_work_order_by_command_is_stamped_replied_after_commit_and_restored() -> None:
    cfg = line({"id": "st10", "identity": {"sources": ["cam-1"]}, "work_order": "WO-file"})
    b = Binder(cfg)
    assert run(b, Scan("cam-1", 1.0, code(1))).events[0].work_order == "WO-file"
    out = run(
        b,
        command("work-order", correlation_id="c1", work_order="WO-42", gtins=[GTIN_A], lot="L1"),
    )
    [ev] = out.events
    assert ev.type == "work_order.changed" and ev.work_order == "WO-42"
    assert ev.detail["previous"] is None and ev.detail["gtins"] == [GTIN_A]
    [reply] = out.replies
    assert reply.after == ev.event_id and reply.topic == "t/cmd/work-order/reply"
    assert json.loads(reply.payload) == {
        "correlation_id": "c1",
        "ok": True,
        "command": "work-order",
        "changed": True,
        "event_id": ev.event_id,
    }
    assert run(b, Scan("cam-1", 2.0, code(2))).events[0].work_order == "WO-42"
    again = run(b, command("work-order", correlation_id="c1", work_order="WO-42",
                           gtins=[GTIN_A], lot="L1"))  # fmt: skip
    assert again.events == [] and json.loads(again.replies[0].payload)["changed"] is False
    # Restart: the state committed with the event brings it back.
    state = {c.key: c.value for c in out.changes if isinstance(c, StateSet) and c.value}
    b2 = Binder(cfg, state=state)
    assert run(b2, Scan("cam-1", 3.0, code(3))).events[0].work_order == "WO-42"


def test_a_station_work_order_wins_over_the_line_and_a_plc_signal_sets_one() -> None:
    b = Binder(
        line(
            {"id": "st10", "identity": {"sources": ["cam-1"]}},
            {
                "id": "st20",
                "identity": {"sources": ["cam-2"]},
                "work_order_signal": {"device": "press", "signal": "wo"},
            },
        )
    )
    run(b, command("work-order", work_order="WO-line"))
    [ev] = run(b, sig(1.0, True, wo="WO-plc")).events
    assert (ev.type, ev.station, ev.work_order) == ("work_order.changed", "st20", "WO-plc")
    assert run(b, sig(1.5, wo="WO-plc")).events == []  # no change
    assert run(b, Scan("cam-1", 2.0, code(1))).events[0].work_order == "WO-line"
    assert run(b, Scan("cam-2", 2.0, code(2))).events[0].work_order == "WO-plc"


def test_malformed_or_unknown_commands_are_refused_and_change_nothing() -> None:
    b = Binder(line({"id": "st10", "identity": {"sources": ["cam-1"]}}))
    cases = [
        (command("work-order", correlation_id="x1", work_order="W", gtins=["123"]), "GTIN-14"),
        (command("work-order", correlation_id="x2", work_order="W", colour="red"), "colour"),
        (command("work-order", correlation_id="x3", work_order=7), "work_order"),
        (command("work-order", work_order="W", station="st99"), "no station 'st99'"),
        (command("reboot", correlation_id="x5"), "unknown command 'reboot'"),
        (Command("", 1.0, "work-order", b"{not json", "r"), "not JSON"),
        (Command("", 1.0, "work-order", b"[1, 2]", "r"), "JSON object"),
        (Command("", 1.0, "serial-pool", b" " * 300_000, "r"), "more than"),
    ]
    for cmd, why in cases:
        out = run(b, cmd)
        assert out.events == [] and out.changes == []
        [reply] = out.replies
        doc = json.loads(reply.payload)
        assert doc["ok"] is False and why in doc["error"], (why, doc)
        assert reply.after is None
    assert json.loads(run(b, cases[0][0]).replies[0].payload)["correlation_id"] == "x1"
    assert run(b, Scan("cam-1", 1.0, code(1))).events[0].work_order is None


# --- rules -----------------------------------------------------------------------------------


def route() -> LineConfig:
    return line(
        {
            "id": "st10",
            "step": "labelling",
            "identity": {"sources": ["cam-1"]},
            "rules": {"commission": True, "gtins": "work_order"},
        },
        {
            "id": "st20",
            "step": "tightening",
            "identity": {"signal": {"device": "press", "signal": "part_id"}},
            "handshake": {
                "device": "press", "request": "request", "ack": "ack", "verdict": "verdict",
            },
            "result": {"device": "press", "signal": "result"},
            "rules": {"requires": ["labelling"], "verdict_codes": {"missing_step": 12}},
        },
        {
            "id": "st30",
            "step": "final",
            "identity": {"sources": ["cam-3"]},
            "rules": {"requires": ["tightening"]},
            "verdict": {"device": "press", "signal": "verdict"},
        },
    )  # fmt: skip


def handshake(b: Binder, t: float, serial: int, result: int = 1) -> BindResult:
    run(b, sig(t - 0.01, request=False, ack=False))
    return run(b, sig(t, request=True, part_id=code(serial), result=result, ack=False))


def test_rules_reject_with_the_reason_and_the_verdict_says_which() -> None:
    b = Binder(route())
    [ev] = run(b, Scan("cam-1", 1.0, code(1))).events
    assert (ev.type, ev.reason) == ("rejected", "gtin_not_allowed")  # no work order yet
    run(b, command("work-order", work_order="WO-1", gtins=[GTIN_A]))
    assert types(run(b, Scan("cam-1", 1.0, code(1)))) == ["identified"]  # commissioned
    [ev] = run(b, Scan("cam-1", 1.1, code(1))).events
    assert (ev.type, ev.reason, ev.ids[0].value) == ("rejected", "duplicate_serial", key(1))
    assert ev.detail["rule"] == "commission"
    [ev] = run(b, Scan("cam-1", 1.2, code(2, GTIN_B))).events
    assert ev.reason == "gtin_not_allowed" and GTIN_B in ev.detail["message"]
    # Tightening: unit 1 was labelled; unit 5 was not.
    out = handshake(b, 2.0, 1, result=2)
    assert types(out) == ["step.completed"] and out.events[0].result == "NOK"
    assert [(w.signal, w.value) for w in out.writes] == [("verdict", 1), ("ack", True)]
    out = handshake(b, 3.0, 5)
    assert (out.events[0].type, out.events[0].reason) == ("rejected", "missing_step")
    assert [(w.signal, w.value) for w in out.writes] == [("verdict", 12), ("ack", True)]
    # Final: unit 1's tightening is NOK, unit 5 never got there; the verdict goes to the PLC.
    out = run(b, Scan("cam-3", 4.0, code(1)))
    assert (out.events[0].reason, out.writes[0].value) == ("previous_step_nok", 2)
    assert out.writes[0].after == out.events[0].event_id  # after the commit
    out = run(b, Scan("cam-3", 4.1, code(5)))
    assert out.events[0].reason == "missing_step"
    out = run(b, NoRead("cam-3", 4.2, "NOREAD"))
    assert (out.events[0].type, out.writes[0].value) == ("noread", 3)


def test_serial_reused_under_another_gtin_when_serials_are_unique_by_themselves() -> None:
    b = Binder(
        line(
            {
                "id": "st10",
                "identity": {"sources": ["cam-1"]},
                "rules": {"commission": True, "serial_unique_across_gtins": True},
            }
        )
    )
    assert types(run(b, Scan("cam-1", 1.0, code("S7", GTIN_A)))) == ["identified"]
    [ev] = run(b, Scan("cam-1", 2.0, code("S7", GTIN_B))).events
    assert (ev.type, ev.reason) == ("rejected", "serial_reused") and GTIN_A in ev.detail["message"]


def test_a_rejected_unit_has_not_done_the_step() -> None:
    b = Binder(route())
    run(b, command("work-order", work_order="WO-1", gtins=[GTIN_A]))
    handshake(b, 1.0, 3)  # rejected: not labelled
    assert b.env.view.unit(key(3)) is not None
    assert "tightening" not in b.env.view.unit(key(3)).steps  # type: ignore[union-attr]


# --- genealogy --------------------------------------------------------------------------------


def packing(**agg: Any) -> LineConfig:
    return line(
        {
            "id": "st50",
            "step": "packing",
            "identity": {"sources": ["cam-5"], "schemes": ["sgtin", "sscc"]},
            "aggregation": {
                "kind": "packing",
                "parent": {"schemes": ["sscc"]},
                "children": {"schemes": ["sgtin"]},
                **agg,
            },
        },
        {
            "id": "st60",
            "step": "unpacking",
            "identity": {"sources": ["cam-6"], "schemes": ["sgtin", "sscc"]},
            "aggregation": {
                "kind": "packing",
                "action": "delete",
                "parent": {"schemes": ["sscc"]},
                "children": {"schemes": ["sgtin"]},
                "max_open_s": 5,
            },
        },
    )


def sscc(n: int) -> str:
    body = f"0{4012345}{n:09d}"
    return f"]C100{body}{gs1_check_digit(body)}"


SSCC = [sscc(1), sscc(2)]


def test_parent_last_closes_a_case_and_the_index_knows_who_is_inside() -> None:
    b = Binder(packing())
    for n in (1, 2, 3):
        assert run(b, Scan("cam-5", n, code(n))).events == []  # children wait for their parent
    run(b, Scan("cam-5", 3.5, code(2)))  # read twice: once inside
    [ev] = run(b, Scan("cam-5", 4.0, SSCC[0])).events
    agg = ev.aggregation
    assert ev.type == "aggregated" and agg is not None
    assert (agg.action, agg.kind, agg.parent.scheme) == ("add", "packing", "sscc")
    assert [c.value for c in agg.children] == [key(1), key(2), key(3)]
    assert ev.ids == (agg.parent,) and ev.step == "packing"
    assert b.env.view.children(agg.parent.value) == [key(1), key(2), key(3)]
    assert b.env.view.unit(agg.parent.value).steps == {"packing": None}  # type: ignore[union-attr]


def test_a_child_inside_another_parent_is_rejected_and_the_case_goes_on() -> None:
    b = Binder(packing(count=2))
    run(b, Scan("cam-5", 1.0, SSCC[0]))  # parent first
    run(b, Scan("cam-5", 1.1, code(1)))
    [ev] = run(b, Scan("cam-5", 1.2, code(2))).events  # count reached: closed
    assert ev.type == "aggregated" and len(ev.aggregation.children) == 2  # type: ignore[union-attr]
    run(b, Scan("cam-5", 2.0, SSCC[1]))
    [ev] = run(b, Scan("cam-5", 2.1, code(1))).events
    assert (ev.type, ev.reason) == ("rejected", "already_aggregated")
    run(b, Scan("cam-5", 2.2, code(3)))
    [ev] = run(b, Scan("cam-5", 2.3, code(4))).events
    assert [c.value for c in ev.aggregation.children] == [key(3), key(4)]  # type: ignore[union-attr]


def test_unpacking_takes_out_what_is_read_or_everything() -> None:
    b = Binder(packing(count=3))
    for i, text in enumerate([SSCC[0], code(1), code(2), code(3)]):
        run(b, Scan("cam-5", 1 + i / 10, text))
    parent = b.env.view.unit(key(1)).parent  # type: ignore[union-attr]
    assert parent is not None
    run(b, Scan("cam-6", 3.0, SSCC[0]))
    run(b, Scan("cam-6", 3.1, code(2)))
    [ev] = run(b, Scan("cam-6", 3.2, code(9))).events
    assert (ev.type, ev.reason) == ("rejected", "not_aggregated")
    [ev] = run(b, Scan("cam-6", 4.0, SSCC[1])).events  # the next parent closes this one
    assert ev.aggregation is not None and ev.aggregation.action == "delete"
    assert [c.value for c in ev.aggregation.children] == [key(2)]
    assert b.env.view.children(parent) == [key(1), key(3)]
    # A parent read alone: all its children out, when the aggregation times out.
    b2 = Binder(packing(count=3))
    for i, text in enumerate([SSCC[0], code(1), code(2), code(3)]):
        run(b2, Scan("cam-5", 1 + i / 10, text))
    run(b2, Scan("cam-6", 10.0, SSCC[0]))
    [ev] = run(b2, Tick(16.0)).events
    assert ev.type == "aggregated" and len(ev.aggregation.children) == 3  # type: ignore[union-attr]
    assert b2.env.view.children(parent) == []


def test_children_of_a_rejected_parent_do_not_go_into_the_next_one() -> None:
    cfg = line(
        {"id": "st45", "step": "test", "identity": {"sources": ["cam-1"]}},
        {
            "id": "st50",
            "step": "packing",
            "identity": {"sources": ["cam-5"], "schemes": ["sgtin", "sscc"]},
            "rules": {"requires": ["labelled"]},
            "aggregation": {
                "kind": "packing",
                "parent": {"schemes": ["sscc"]},
                "children": {"schemes": ["sgtin"]},
            },
        },
        {"id": "st05", "step": "labelled", "identity": {"sources": ["cam-2"], "schemes": ["sscc"]}},
    )
    b = Binder(cfg)
    run(b, Scan("cam-2", 0.5, SSCC[1]))  # the second case was labelled, the first was not
    run(b, Scan("cam-5", 1.0, code(1)))
    out = run(b, Scan("cam-5", 2.0, SSCC[0]))
    assert [(e.type, e.reason) for e in out.events] == [
        ("step.incomplete", "parent_rejected"),
        ("rejected", "missing_step"),
    ]
    run(b, Scan("cam-5", 3.0, code(2)))
    [ev] = run(b, Scan("cam-5", 4.0, SSCC[1])).events
    assert [c.value for c in ev.aggregation.children] == [key(2)]  # type: ignore[union-attr]


def test_an_aggregation_left_open_is_step_incomplete() -> None:
    b = Binder(packing(max_open_s=10))
    run(b, Scan("cam-5", 1.0, code(1)))
    assert run(b, Tick(5.0)).events == []
    [ev] = run(b, Tick(11.5)).events
    assert (ev.type, ev.reason, ev.ids[0].value) == (
        "step.incomplete",
        "aggregation_timeout",
        key(1),
    )


# --- serial pools and commissioning ------------------------------------------------------------


def marking(**kw: Any) -> LineConfig:
    return line(
        {
            "id": "st15",
            "step": "marking",
            "handshake": {
                "device": "press", "request": "request", "ack": "ack", "verdict": "verdict",
            },
            "commission": {"pool": "pcb", "write": "serial", "counter": "counter",
                           "gtin": GTIN_B},
            **kw,
        },
        pools=[{"id": "pcb", "template": "P{yy}{seq:05}", "low_water": 2}],
    )  # fmt: skip


def request(b: Binder, t: float, n: int) -> BindResult:
    run(b, sig(t - 0.01, request=False, ack=False, counter=n - 1))
    return run(b, sig(t, request=True, ack=False, counter=n))


def test_serials_are_taken_in_order_written_before_the_ack_never_reused() -> None:
    b = Binder(marking())
    out = run(b, command("serial-pool", correlation_id="p1", pool="pcb", ranges=[[1, 3]]))
    [loaded] = out.events
    assert loaded.type == "pool.loaded" and loaded.detail["added"] == 3
    assert json.loads(out.replies[0].payload)["remaining"] == 3
    serials = []
    for n in (1, 2, 3):
        out = request(b, 10.0 * n, n)
        ev = out.events[0]
        assert ev.type == "commissioned" and ev.ids[0].attrs["gtin"] == GTIN_B
        serials.append(ev.ids[0].attrs["serial"])
        writes = [(w.signal, w.value, w.if_written) for w in out.writes]
        assert writes[0] == ("serial", f"01{GTIN_B}21{serials[-1]}", None)
        assert writes[1:] == [("verdict", 1, "serial"), ("ack", True, "serial")]
        assert all(w.after == ev.event_id for w in out.writes)
    yy = serials[0][1:3]
    assert serials == [f"P{yy}00001", f"P{yy}00002", f"P{yy}00003"]
    # Empty: a rejection, never a reuse.
    out = request(b, 50.0, 4)
    assert (out.events[0].type, out.events[0].reason) == ("rejected", "pool_empty")
    # A re-sent delivery is not loaded twice; an overlapping one is refused.
    again = run(b, command("serial-pool", correlation_id="p1", pool="pcb", ranges=[[1, 3]]))
    assert again.events == [] and json.loads(again.replies[0].payload)["changed"] is False
    refused = run(b, command("serial-pool", correlation_id="p2", pool="pcb", ranges=[[3, 9]]))
    assert "overlaps" in json.loads(refused.replies[0].payload)["error"]


def test_the_pool_cursor_survives_a_restart_with_its_commit() -> None:
    cfg = marking()
    b = Binder(cfg)
    state: dict[str, str] = {}
    blocks: list[PoolBlock] = []
    changes = run(b, command("serial-pool", pool="pcb", ranges=[[100, 199]])).changes
    changes += request(b, 1.0, 1).changes + request(b, 2.0, 2).changes
    for c in changes:
        if isinstance(c, StateSet) and c.value is not None:
            state[c.key] = c.value
        elif isinstance(c, PoolBlock):
            blocks.append(c)
    b2 = Binder(cfg, state=state, pool_blocks=blocks)
    ev = request(b2, 3.0, 3).events[0]
    assert ev.ids[0].attrs["serial"].endswith("00102")


def test_low_water_is_reported_once_per_loading() -> None:
    b = Binder(marking())
    run(b, command("serial-pool", pool="pcb", serials=["A1", "A2", "A3", "A4"]))
    seen = [types(request(b, float(n), n)) for n in range(1, 5)]
    assert seen == [["commissioned"], ["commissioned"], ["commissioned", "pool.low"],
                    ["commissioned"]]  # fmt: skip


def test_no_gtin_no_commissioning() -> None:
    b = Binder(
        line(
            {
                "id": "st15",
                "handshake": {"device": "press", "request": "request", "ack": "ack"},
                "commission": {"pool": "pcb", "write": "serial", "counter": "counter"},
            },
            pools=[{"id": "pcb"}],
        )
    )
    run(b, command("serial-pool", pool="pcb", ranges=[[1, 9]]))
    assert request(b, 1.0, 1).events[0].reason == "no_work_order"
    run(b, command("work-order", work_order="W", gtins=[GTIN_B], lot="L7", expiry="2027-06-30"))
    ev = request(b, 2.0, 2).events[0]
    assert ev.type == "commissioned"
    attrs = ev.ids[0].attrs
    assert (attrs["lot"], attrs["expiry"], attrs["serial"]) == ("L7", "2027-06-30", "1")


# --- property: binding never guesses ------------------------------------------------------------


@st.composite
def line_traffic(draw: st.DrawFn) -> list[tuple[float, str, int]]:
    """Scans of units (by number) and cycle ends, with the clock jumping forward and back (an
    NTP correction, a PC whose clock was wrong)."""
    t, out = 0.0, []
    for _ in range(draw(st.integers(1, 40))):
        t += draw(st.sampled_from([0.05, 0.3, 0.9, 1.5, 2.5, 10.0, -0.5, -30.0]))
        if draw(st.booleans()):
            out.append((t, "scan", draw(st.integers(1, 6))))
        else:
            out.append((t, "cycle", 0))
    return out


@given(line_traffic())
@settings(max_examples=300, deadline=None)
def test_every_cycle_is_bound_to_exactly_the_units_of_its_window_or_flagged(
    traffic: list[tuple[float, str, int]],
) -> None:
    b = Binder(line(scan_station(window={"before_ms": 1000})))
    run(b, sig(-1.0, True, trigger=False))
    held: list[tuple[float, int]] = []  # the oracle: scans not yet taken, nor given up
    expired: set[int] = set()
    records: list[TraceEvent] = []
    for t, what, n in traffic:
        out = run(b, Tick(t))
        records += [e for e in out.events if e.type == "step.incomplete"]
        # A scan older than the window when the clock passes it is given up for good (its
        # step.incomplete is recorded): a clock set back later does not bring it back.
        expired |= {n for s, n in held if s < t - 1.0}  # the binder's arithmetic, to the bit
        held = [(s, n) for s, n in held if s >= t - 1.0]
        if what == "scan":
            out = run(b, Scan("cam-1", t, code(n)))
            assert types(out) == ["identified"]
            held.append((t, n))
            continue
        expected = sorted({n for s, n in held if t - 1.0 <= s <= t})
        held = [(s, n) for s, n in held if not t - 1.0 <= s <= t]
        [ev] = cycle(b, t).events
        got = sorted(int(i.value.rsplit(")", 1)[1]) for i in ev.ids)
        if not expected:
            assert ev.type == "noread" and not ev.ids
        elif len(expected) == 1:
            assert ev.type == "step.completed" and got == expected
        else:
            assert ev.type == "ambiguous" and got == expected
    out = run(b, Tick(max(t for t, _, _ in traffic) + 100))
    records += out.events
    # Every scan no cycle took is flagged as step.incomplete.
    assert {int(e.ids[0].value.rsplit(")", 1)[1]) for e in records} == expired | {
        n for _, n in held
    }


def test_a_request_still_raised_after_a_restart_gets_its_own_serial_again_not_a_new_one() -> None:
    """Killed between the commit of `commissioned` and the serial's write: after the restart the
    PLC's request (same counter) is answered with the serial recorded for it, then the ack."""
    cfg = marking()
    b = Binder(cfg)
    run(b, command("serial-pool", pool="pcb", ranges=[[1, 9]]))
    out = request(b, 1.0, 1)
    [mark] = out.marks
    serial = out.events[0].ids[0].attrs["serial"]
    state = {c.key: c.value for c in out.changes if isinstance(c, StateSet) and c.value}
    blocks = [c for c in b.env.pools.pools["pcb"].blocks]
    restarted = Binder(cfg, marks={"st15": mark}, state=state, pool_blocks=blocks)
    again = run(restarted, sig(2.0, True, request=True, ack=False, counter=1))
    assert again.events == []  # never recorded twice
    assert [(w.signal, w.value, w.if_written) for w in again.writes] == [
        ("serial", f"01{GTIN_B}21{serial}", None),
        ("verdict", 1, "serial"),
        ("ack", True, "serial"),
    ]
    # The next request is a new cycle, with the next serial.
    ev = request(restarted, 3.0, 2).events[0]
    assert ev.type == "commissioned" and ev.ids[0].attrs["serial"] != serial


def test_cases_go_into_a_pallet_and_the_trace_runs_both_ways() -> None:
    """Packing on two levels: units into cases, cases into a pallet (both SSCCs: told apart by
    the scanner that reads them)."""
    cfg = line(
        {
            "id": "st50",
            "identity": {"sources": ["cam-5"], "schemes": ["sgtin", "sscc"]},
            "aggregation": {
                "kind": "packing",
                "parent": {"schemes": ["sscc"]},
                "children": {"schemes": ["sgtin"]},
                "count": 2,
            },
        },
        {
            "id": "st60",
            "identity": {"sources": ["cam-6", "cam-4"], "schemes": ["sscc"]},
            "aggregation": {
                "kind": "packing",
                "parent": {"sources": ["cam-4"]},
                "children": {"sources": ["cam-6"]},
                "count": 2,
            },
        },
    )
    b = Binder(cfg)
    for i, text in enumerate([SSCC[0], code(1), code(2), SSCC[1], code(3), code(4)]):
        run(b, Scan("cam-5", i, text))
    pallet = sscc(99)
    run(b, Scan("cam-4", 10.0, pallet))
    run(b, Scan("cam-6", 10.1, SSCC[0]))
    [ev] = run(b, Scan("cam-6", 10.2, SSCC[1])).events
    assert ev.type == "aggregated" and ev.aggregation is not None
    assert ev.aggregation.parent.scheme == "sscc" and len(ev.aggregation.children) == 2
    view = b.env.view
    unit = view.unit(key(3))
    assert unit is not None and unit.parent == ev.aggregation.children[1].value
    assert view.unit(unit.parent).parent == ev.aggregation.parent.value  # type: ignore[union-attr]


# --- the pipeline: decisions of one batch ------------------------------------------------------


async def test_the_decisions_of_one_batch_see_each_other_before_their_commit(
    tmp_path: Path,
) -> None:
    """Observations that queued up while the journal could not commit (a full disk, a slow
    fsync) reach the binder as one batch: each decision must see the ones before it, or a label
    read twice passes twice and a labelled unit is refused at the next step."""
    journal = await Journal.open(
        tmp_path / "j.db", EventContext("g", "l", "cafe"), max_rows=1000, max_bytes=1 << 24
    )
    task = asyncio.create_task(journal.run())
    try:
        b = Binder(route(), view=journal.trace_view())
        queue = ObservationQueue(100)
        writes = _Writes(lambda _: None, queue.put)
        loop = BinderLoop(queue, b, journal, writes)
        await loop._bind([command("work-order", work_order="WO-1", gtins=[GTIN_A])])
        await journal.flush()
        await loop._bind(
            [
                Scan("cam-1", 1.0, code(1)),
                Scan("cam-1", 1.1, code(1)),  # the same label again
                sig(1.2, request=False, ack=False),
                sig(1.3, request=True, part_id=code(1), result=1, ack=False),
            ]
        )
        await journal.flush()
        got = [(e["type"], e.get("reason")) for e in map(json.loads, _payloads(journal))]
        assert got[-3:] == [
            ("identified", None),
            ("rejected", "duplicate_serial"),
            ("step.completed", None),
        ]
        assert [(w.signal, w.value) for w in writes.requests][-2:] == [
            ("verdict", 1),
            ("ack", True),
        ]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await journal.close()


class _Writes(Writer):
    """The writes the binder asks for, kept (no PLC here)."""

    requests: list[WriteRequest]

    def submit(self, req: WriteRequest, committed: asyncio.Future[Any] | None) -> None:
        self.__dict__.setdefault("requests", []).append(req)


def _payloads(journal: Journal) -> list[bytes]:
    conn = connect(journal.path, readonly=True)
    try:
        return [r[0] for r in conn.execute("SELECT payload FROM outbox ORDER BY seq")]
    finally:
        conn.close()


async def test_a_write_that_failed_and_then_succeeded_no_longer_holds_back_the_ack() -> None:
    """Found by the fault campaign: a serial write failed (the laser PLC restarting), the PLC
    raised its request again, the serial was written again, and its ack was still refused
    ("serial of this record failed") at every retry, for ever: the station stood still."""

    class Plc:
        def __init__(self) -> None:
            self.fail = True
            self.written: list[tuple[str, Any]] = []

        async def write(self, signal: str, value: Any) -> None:
            if self.fail and signal == "serial":
                raise WriteFailed("not connected")
            self.written.append((signal, value))

    plc = Plc()
    reports: list[Any] = []
    writer = Writer(lambda _: plc, reports.append)

    def attempt() -> None:
        writer.submit(WriteRequest("laser", "serial", "P1", "ev-1", "st15/serial"), None)
        for signal, value in (("verdict", 1), ("ack", True)):
            writer.submit(
                WriteRequest("laser", signal, value, "ev-1", f"st15/{signal}", None, "serial"),
                None,
            )

    task = asyncio.create_task(writer.run())
    try:
        await wait_for(lambda: writer._tg is not None, 5, "the writer running")
        attempt()
        await wait_for(lambda: len(reports) == 3, 5, "three writes done")
        assert [r.error is not None for r in reports] == [True, True, True]
        assert plc.written == []  # no ack for a serial the PLC was not given
        plc.fail = False
        attempt()  # the PLC raised its request again: the record's writes again
        await wait_for(lambda: len(reports) == 6, 5, "six writes done")
        assert plc.written == [("serial", "P1"), ("verdict", 1), ("ack", True)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_a_full_queue_drops_and_counts_only_what_devices_read() -> None:
    """Ticks, write results, device states and commands are not device data: a tick is let go
    (the next one tells the time), the others always get in; only reads become a `gap`."""
    q = ObservationQueue(2)
    q.put(Scan("cam-1", 1.0, code(1)))
    q.put(Scan("cam-1", 1.1, code(2)))
    q.put(Tick(1.2))
    q.put(WriteDone("press", 1.3, "ack", True, None, "st20/ack"))
    q.put(DeviceState("cam-1", 1.4, "disconnected", "reset"))
    q.put(command("work-order", work_order="W"))
    q.put(Scan("cam-1", 1.5, code(3)))  # a read: dropped and counted
    assert q.total_dropped == 1 and q.dropped_by_device == {"cam-1": 1}
    batch = asyncio.run(q.get_batch(10))
    kinds = [type(o).__name__ for o in batch]
    assert kinds == ["Scan", "Scan", "WriteDone", "DeviceState", "Command", "Loss"]
    assert (batch[-1].device, batch[-1].count) == ("cam-1", 1)  # type: ignore[union-attr]
