"""The binder's PLC stations, pure: triggers, the handshake (with restarts), parameters and
tolerances, identities from PLC memory, timeouts. Hypothesis drives the handshake through
arbitrary request levels, reconnects and restarts: every cycle is recorded exactly once."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.binding import Binder, BindResult, plans
from gateway.config.models import LineConfig
from gateway.events import HandshakeMark, Scan, Signals, SignalValue, Tick, WriteDone

GTIN_CODE = "]d2010950600013435221SN-"  # + serial
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
        "torque": {"node": "ns=2;s=torque", "type": "float32", "unit": "Nm"},
        "result": {"node": "ns=2;s=result", "type": "int16"},
    },
}


def line(**station: Any) -> LineConfig:
    st = {
        "id": "st30",
        "step": "tightening",
        "work_order": "WO-7",
        "parameters": [{"device": "press", "signal": "torque", "min": 11.5, "max": 12.5}],
        "result": {"device": "press", "signal": "result"},
        "identity": {"signal": {"device": "press", "signal": "part_id"}},
        **station,
    }
    return LineConfig.model_validate(
        {
            "gateway": {"id": "g", "site": "s", "line": "l"},
            "devices": [PLC, {"id": "cam", "kind": "tcp_scanner", "host": "h", "port": 1}],
            "stations": [st],
        }
    )


HANDSHAKE = {
    "handshake": {"device": "press", "request": "request", "ack": "ack", "verdict": "verdict"}
}


def sig(t: float, initial: bool = False, **values: Any) -> Signals:
    return Signals("press", t, tuple(SignalValue(k, v) for k, v in values.items()), initial)


def cycle_data(serial: str = "1", torque: float = 12.0, result: int = 1) -> dict[str, Any]:
    return {"part_id": GTIN_CODE + serial, "torque": torque, "result": result}


# --- trigger stations ---------------------------------------------------------------------------


def test_rising_trigger_records_a_cycle_with_its_snapshot() -> None:
    b = Binder(line(trigger={"device": "press", "signal": "trigger"}))
    assert b.process(sig(1.0, True, trigger=False, **cycle_data())).events == []  # baseline
    out = b.process(sig(2.0, trigger=True, **cycle_data("7", torque=12.8, result=2)))
    [ev] = out.events
    assert ev.type == "step.completed" and ev.station == "st30" and ev.step == "tightening"
    assert ev.work_order == "WO-7" and ev.result == "NOK"
    assert ev.ids[0].value == "(01)09506000134352(21)SN-7"
    torque = ev.parameters["torque"]
    assert (torque.value, torque.unit, torque.in_tolerance) == (12.8, "Nm", False)
    assert b.process(sig(3.0, trigger=True, **cycle_data())).events == []  # still high
    assert b.process(sig(4.0, trigger=False, **cycle_data())).events == []
    assert len(b.process(sig(5.0, trigger=True, **cycle_data("8"))).events) == 1


def test_a_level_seen_first_at_connect_is_not_an_edge() -> None:
    b = Binder(line(trigger={"device": "press", "signal": "trigger"}))
    assert b.process(sig(1.0, True, trigger=True, **cycle_data())).events == []


def test_counter_trigger_fires_on_every_change() -> None:
    b = Binder(line(trigger={"device": "press", "signal": "counter", "edge": "change"}))
    b.process(sig(1.0, True, counter=41, **cycle_data()))
    assert len(b.process(sig(2.0, counter=42, **cycle_data("2"))).events) == 1
    assert len(b.process(sig(3.0, counter=43, **cycle_data("3"))).events) == 1


def test_scanned_unit_is_bound_to_the_next_cycle_and_missing_identity_is_a_noread() -> None:
    b = Binder(
        line(trigger={"device": "press", "signal": "trigger"}, identity={"sources": ["cam"]})
    )
    b.process(sig(0.0, True, trigger=False))
    scan = b.process(Scan("cam", 1.0, GTIN_CODE + "42"))
    assert [e.type for e in scan.events] == ["identified"]
    [ev] = b.process(sig(2.0, trigger=True, torque=12.0, result=1)).events
    assert ev.type == "step.completed" and ev.ids[0].value.endswith("SN-42")
    b.process(sig(3.0, trigger=False))
    [ev] = b.process(sig(4.0, trigger=True, torque=12.0, result=1)).events
    assert ev.type == "noread" and ev.reason == "no_identity"
    assert ev.parameters["torque"].value == 12.0  # the step's data is kept all the same


def test_bad_identity_in_plc_memory_is_rejected_with_the_data_kept() -> None:
    b = Binder(line(trigger={"device": "press", "signal": "trigger"}))
    b.process(sig(0.0, True, trigger=False))
    data = cycle_data() | {"part_id": "]d2010950600013435321X"}  # wrong check digit
    [ev] = b.process(sig(1.0, trigger=True, **data)).events
    assert ev.type == "rejected" and ev.reason == "bad_check_digit"
    assert ev.parameters["torque"].value == 12.0 and ev.result == "OK"


def test_unreadable_parameter_is_recorded_with_its_status() -> None:
    b = Binder(line(trigger={"device": "press", "signal": "trigger"}))
    b.process(sig(0.0, True, trigger=False))
    obs = Signals(
        "press",
        1.0,
        (
            SignalValue("trigger", True),
            SignalValue("part_id", GTIN_CODE + "1"),
            SignalValue("torque", None, "BadNodeIdUnknown"),
            SignalValue("result", 1),
        ),
    )
    [ev] = b.process(obs).events
    p = ev.parameters["torque"]
    assert p.value is None and p.status == "BadNodeIdUnknown" and p.in_tolerance is None


# --- the handshake -----------------------------------------------------------------------------


def test_handshake_commit_then_verdict_and_ack_then_drop() -> None:
    b = Binder(line(**HANDSHAKE))
    assert b.process(sig(0.0, True, request=False, ack=False)).events == []
    out = b.process(sig(1.0, request=True, ack=False, **cycle_data()))
    [ev] = out.events
    assert ev.type == "step.completed"
    [mark] = out.marks
    assert mark.event_id == ev.event_id and mark.verdict == 1
    assert [(w.signal, w.value, w.after) for w in out.writes] == [
        ("verdict", 1, ev.event_id),
        ("ack", True, ev.event_id),
    ]
    assert b.process(sig(1.5, request=True, ack=True, **cycle_data())).events == []
    out = b.process(sig(2.0, request=False, ack=True))
    assert out.events == [] and out.marks == []
    assert [(w.signal, w.value, w.after) for w in out.writes] == [("ack", False, None)]
    assert b.marks() == {"st30": mark}  # the last recorded cycle stays known


def test_verdict_codes_say_what_happened() -> None:
    b = Binder(line(**HANDSHAKE))
    b.process(sig(0.0, True, request=False, ack=False))
    out = b.process(sig(1.0, request=True, **(cycle_data() | {"part_id": ""})))
    assert out.events[0].type == "noread" and out.marks[0].verdict == 3
    b.process(sig(2.0, request=False, ack=True))
    out = b.process(
        sig(3.0, request=True, **(cycle_data() | {"part_id": "]d2010950600013435321X"}))
    )
    assert out.events[0].type == "rejected" and out.marks[0].verdict == 2


def test_request_still_raised_after_a_restart_is_acked_not_recorded_again() -> None:
    b = Binder(line(**HANDSHAKE))
    b.process(sig(0.0, True, request=False, ack=False))
    [mark] = b.process(sig(1.0, request=True, ack=False, **cycle_data("5"))).marks
    # The gateway dies before writing the ack; the mark was committed with the record.
    b2 = Binder(line(**HANDSHAKE), marks={"st30": mark})
    out = b2.process(sig(5.0, True, request=True, ack=False, **cycle_data("5")))
    assert out.events == [] and out.marks == []
    assert [(w.signal, w.value, w.after) for w in out.writes] == [
        ("verdict", 1, None),
        ("ack", True, None),
    ]
    # A different cycle's data under the raised request is a new record.
    b3 = Binder(line(**HANDSHAKE), marks={"st30": mark})
    out = b3.process(sig(5.0, True, request=True, ack=False, **cycle_data("6")))
    assert len(out.events) == 1 and out.marks[0] != mark


def test_a_plc_raising_its_request_again_for_the_same_cycle_gets_an_ack_not_a_record() -> None:
    """A PLC that saw no ack in time drops its request and raises it again, same data."""
    b = Binder(line(**HANDSHAKE))
    b.process(sig(0.0, True, request=False, ack=False))
    assert len(b.process(sig(1.0, request=True, ack=False, **cycle_data("9"))).events) == 1
    b.process(sig(6.0, request=False, ack=False))
    out = b.process(sig(6.1, request=True, ack=False, **cycle_data("9")))
    assert out.events == [] and [w.signal for w in out.writes] == ["verdict", "ack"]


def test_ack_timeout_and_write_errors_are_events() -> None:
    b = Binder(line(**HANDSHAKE))
    b.process(sig(0.0, True, request=False, ack=False))
    b.process(sig(1.0, request=True, **cycle_data()))
    b.process(WriteDone("press", 1.01, "ack", True, None, "st30/ack"))
    assert b.process(Tick(5.0)).events == []
    [ev] = b.process(Tick(11.5)).events  # default ack_timeout_s 10
    assert ev.type == "handshake.timeout" and ev.station == "st30"
    assert b.process(Tick(20.0)).events == []  # reported once
    [err] = b.process(WriteDone("press", 21.0, "ack", True, "BadNotWritable", "st30/ack")).events
    assert err.type == "handshake.error" and err.detail["error"] == "BadNotWritable"


def test_plans_watch_cycle_ends_and_snapshot_their_data() -> None:
    p = plans(line(**HANDSHAKE))["press"]
    assert p.watch == {"request"}
    assert set(p.snapshot_of("request")) == {"torque", "result", "part_id", "ack"}
    p = plans(line(trigger={"device": "press", "signal": "trigger"}))["press"]
    assert p.watch == {"trigger"} and "ack" not in p.snapshot_of("trigger")


@st.composite
def plc_histories(draw: st.DrawFn) -> list[tuple[str, int]]:
    """A PLC's life: cycles (a serial), each raising and dropping its request, with reconnects
    and gateway restarts at arbitrary points (`("cycle", n)`, `("reconnect", 0)`, ...)."""
    steps: list[tuple[str, int]] = []
    for n in range(draw(st.integers(1, 12))):
        steps.append(("raise", n))
        for _ in range(draw(st.integers(0, 2))):
            steps.append(
                (draw(st.sampled_from(["reconnect", "restart", "restart_before_commit"])), n)
            )
        steps.append(("drop", n))
        if draw(st.booleans()):
            steps.append((draw(st.sampled_from(["reconnect", "restart"])), n))
    return steps


@given(plc_histories())
@settings(max_examples=300, deadline=None)
def test_every_cycle_is_recorded_exactly_once_whatever_the_interruptions(
    history: list[tuple[str, int]],
) -> None:
    cfg = line(**HANDSHAKE)
    committed: list[HandshakeMark] = []  # the journal's marks table: the last one counts
    records: list[str] = []  # serials of committed records
    binder = Binder(cfg)
    request, data = False, cycle_data()
    t = 0.0

    def feed(obs: Signals, commit: bool = True) -> BindResult:
        out = binder.process(obs)
        if commit:
            records.extend(e.ids[0].value for e in out.events if e.type == "step.completed")
            committed.extend(out.marks)
        return out

    feed(sig(t, True, request=False, ack=False))
    for what, n in history:
        t += 1
        if what == "raise":
            request, data = True, cycle_data(str(n))
            feed(sig(t, request=True, ack=False, **data))
        elif what == "drop":
            request = False
            feed(sig(t, request=False, ack=True))
        elif what == "reconnect":
            feed(sig(t, True, request=request, ack=False, **data))
        else:  # a restart: the binder's memory is lost, the journal's marks are not
            if (
                what == "restart_before_commit"
                and request
                and records
                and records[-1].endswith(f"SN-{n}")
            ):
                # the record of this cycle had not reached the disk: nothing of it survives
                records.pop()
                committed.pop()
            binder = Binder(cfg, marks={"st30": committed[-1]} if committed else {})
            feed(sig(t, True, request=request, ack=False, **data))
    raised = sorted({n for what, n in history if what == "raise"})
    assert sorted(records, key=lambda r: int(r.rsplit("-", 1)[1])) == [
        f"(01)09506000134352(21)SN-{n}" for n in raised
    ]


def test_an_unreadable_request_is_reported_once_per_episode() -> None:
    b = Binder(line(**HANDSHAKE))
    bad = Signals("press", 1.0, (SignalValue("request", None, "BadNodeIdUnknown"),))
    [ev] = b.process(bad).events
    assert ev.type == "handshake.error" and ev.reason == "signal_unreadable"
    assert ev.detail["status"] == "BadNodeIdUnknown"
    assert b.process(bad).events == []  # once
    b.process(sig(2.0, True, request=False, ack=False))  # readable again
    assert len(b.process(bad).events) == 1  # a new episode
