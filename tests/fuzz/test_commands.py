"""Fuzzing MES commands (MQTT `cmd/{name}` payloads): the validation alone, and the binder's whole
path, for `work-order`, `serial-pool` and names that are neither.

Payloads are JSON documents built near-valid (the commands' own fields, values that pass or
just miss their checks) and then mutated, or raw bytes: broken JSON, deep nesting, huge
numbers, lone surrogates. Each command either is carried out (and the reply says what it did)
or is refused with `ok: false` and an error naming the field, changing nothing. After the
commands, the line's two commissioning stations (one on a GS1 pool, one on a `gs1: false` pool)
each get a request for a serial: what the commands set up must not break a cycle.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.binding import Binder
from gateway.binding import commands as cmds
from gateway.config.models import LineConfig
from gateway.events import Command, Signals, SignalValue
from gateway.identifiers import REASONS
from simulators.codes import gs1_check_digit
from tests.fuzz.harness import Known, fuzz, mutated, one_input


def _marker(n: int) -> dict[str, Any]:
    """The signals of one marking station's handshake (a PLC asking for a serial)."""
    return {
        f"request{n}": {"node": f"ns=2;s=req{n}", "type": "bool"},
        f"ack{n}": {"node": f"ns=2;s=ack{n}", "type": "bool", "writable": True},
        f"counter{n}": {"node": f"ns=2;s=cnt{n}", "type": "uint32"},
        f"serial{n}": {"node": f"ns=2;s=serial{n}", "type": "string", "writable": True},
    }


def _marking(station: str, n: int, pool: str) -> dict[str, Any]:
    return {
        "id": station,
        "step": "marking",
        "handshake": {"device": "press", "request": f"request{n}", "ack": f"ack{n}"},
        "commission": {"pool": pool, "write": f"serial{n}", "counter": f"counter{n}"},
    }


LINE = LineConfig.model_validate(
    {
        "gateway": {"id": "g", "site": "plant", "line": "l"},
        "devices": [
            {"id": "cam-1", "kind": "tcp_scanner", "host": "h", "port": 1},
            {"id": "cam-2", "kind": "tcp_scanner", "host": "h", "port": 2},
            {
                "id": "press",
                "kind": "opcua",
                "endpoint": "opc.tcp://127.0.0.1:4840",
                "signals": {**_marker(1), **_marker(2)},
            },
        ],
        "stations": [
            {"id": "st10", "identity": {"sources": ["cam-1"]}},
            {"id": "st20", "identity": {"sources": ["cam-2"]}},
            _marking("st30", 1, "p1"),
            _marking("st40", 2, "p2"),
        ],
        "pools": [
            {"id": "p1"},
            {"id": "p2", "gs1": False, "template": "S{seq:06}-{yy}{station}"},
            {"id": "p3", "low_water": 5, "template": "{plant}{seq}"},
        ],
    }
)
NAMES = ("work-order", "serial-pool")

anything = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2)
    ),
    max_leaves=6,
)
texts = st.sampled_from(["", "x", "\ud800", "a" * 129, "WO-1", "WO-2"]) | st.text(max_size=24)
correlations = st.one_of(texts, texts, texts, st.integers(), st.none())
gtins = st.text(alphabet="0123456789", min_size=13, max_size=13).map(
    lambda p: p + gs1_check_digit(p)
)
gtin_values = gtins | gtins.map(lambda g: g[:-1] + str((int(g[-1]) + 1) % 10)) | texts
serials = st.text(alphabet="ABC012!%_-", min_size=1, max_size=22) | texts
numbers = (
    st.integers(-2, 30) | st.integers(0, 2**63) | st.floats(-2, 30) | st.sampled_from([True, "3"])
)

work_orders = st.fixed_dictionaries(
    {"work_order": st.none() | texts | st.integers()},
    optional={
        "correlation_id": correlations,
        "station": st.sampled_from(["st10", "st30", "st40", "st99", ""])
        | st.none()
        | st.integers(),
        "product": texts | st.none(),
        "gtins": st.lists(gtin_values, max_size=4) | anything,
        "lot": texts | st.none(),
        "expiry": st.sampled_from(["2026-12-31", "2026-02-30", "31.12.2026", "", "2026-1-1"])
        | st.dates().map(str)
        | st.none(),
        "colour": anything,
    },
)
pool_names = st.sampled_from(["p1", "p2", "p3"])
ranges = st.lists(
    st.tuples(st.integers(0, 500), st.integers(0, 60)).map(lambda r: [r[0], r[0] + r[1]]),
    min_size=1,
    max_size=3,
)
pool_loads = st.fixed_dictionaries(
    {
        "pool": st.one_of(pool_names, pool_names, pool_names, st.just("p9"), texts, st.integers()),
        "ranges": st.one_of(
            ranges,
            ranges,
            ranges,
            st.lists(st.lists(numbers, max_size=3) | anything, max_size=4),
            anything,
        ),
    },
    optional={"correlation_id": correlations, "serials": st.lists(serials, max_size=6) | anything},
)


@st.composite
def documents(draw: st.DrawFn, docs: st.SearchStrategy[Any]) -> bytes:
    doc = draw(docs)
    ascii_only = draw(st.booleans())
    return json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def near_valid(docs: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(documents(docs), documents(docs), documents(docs).flatmap(mutated))


payloads = st.one_of(
    near_valid(work_orders | pool_loads | anything),
    st.binary(max_size=64),
    st.integers(1, 3000).map(lambda n: b'{"pool": ' + b"[" * n),
    st.integers(4200, 4400).map(lambda n: b'{"pool":"p1","ranges":[[1,' + b"9" * n + b"]]}"),
    st.just(b" " * 5000),
)
names = st.sampled_from(NAMES) | st.sampled_from(NAMES) | st.text(max_size=12)


# Findings fixed so far: commands-json-too-deep, commands-json-huge-integer,
# commands-reply-lone-surrogate, commission-non-gs1-lot-or-serial and commission-non-gs1-serial
# (docs/fuzzing.md). A new one goes here with its reproduction.
KNOWN: list[Known] = []

FIELD = re.compile(
    r"(?P<field>\(payload\)|correlation_id|work_order|station|product|gtins|lot|expiry|pool"
    r"|ranges|serials|[^\s:.]+)(?:\.[^\s:]+)?: \S.*",
    re.DOTALL,
)
WHOLE = {
    "payload too large": re.compile(r"payload of \d+ bytes, more than \d+"),
    "unknown command": re.compile(r"unknown command .+; commands: serial-pool, work-order"),
    "not JSON": re.compile(r"not JSON: .+"),
    "not an object": re.compile(r"a command is a JSON object, not \w+"),
    "pool: no such pool": re.compile(r"no pool .+ \(pools: .+\)"),
    "ranges: empty or negative": re.compile(r"range \[-?\d+, -?\d+\] is empty or negative"),
    "ranges: overlap": re.compile(r"range \[\d+, \d+\] overlaps \[\d+, \d+\] delivered before.*"),
    "nothing to load": re.compile(r"nothing to load: give `ranges` or `serials`"),
    "serials: repeated": re.compile(r"the list repeats a serial"),
    # The serials as they were sent, any characters (a newline too).
    "serials: delivered before": re.compile(r"serials delivered before: .*", re.DOTALL),
    "not a GS1 serial": re.compile(r".+ is not a GS1 serial \(1 to 20 characters .+"),
}


def explained(problem: str, model: type[Any] | None) -> str:
    """The reason a refusal gives, or AssertionError if it gives none we know."""
    for reason, pattern in WHOLE.items():
        if pattern.fullmatch(problem):
            return reason
    if problem.endswith(": Extra inputs are not permitted"):
        return "unknown field"  # named as sent, whatever its characters (an empty one: "(payload)")
    match = FIELD.fullmatch(problem)
    assert match, f"unexplained refusal {problem!r}"
    field = match["field"]
    message = problem.split(": ", 1)[1]
    if model is not None and field != "(payload)":
        assert field in model.model_fields, f"{problem!r} names no field of {model.__name__}"
    return f"{field}: " + re.sub(r"'[^']*'|\d+", "#", message)[:48]


@fuzz(weight=3)
@given(
    command=st.tuples(st.just("work-order"), near_valid(work_orders))
    | st.tuples(st.just("serial-pool"), near_valid(pool_loads))
    | st.tuples(names, payloads),
    max_bytes=st.sampled_from([1024, 4096, 262_144]),
)
def test_fuzz_command_parse(command: tuple[str, bytes], max_bytes: int) -> None:
    """commands.parse: the validated command of the name's model, or Invalid with every
    problem, each naming its field (or the payload as a whole)."""
    name, payload = command
    cmd = Command("", 5.0, name, payload, f"t/cmd/{name}/reply")
    with one_input("commands.parse", KNOWN) as outcome:
        try:
            parsed = cmds.parse(cmd, max_bytes)
        except cmds.Invalid as exc:
            assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
            assert exc.correlation_id is None or isinstance(exc.correlation_id, str)
            model = cmds.COMMANDS.get(name)
            outcome.reason = "rejected:" + explained(exc.problems[0], model)
            for problem in exc.problems[1:]:
                outcome.also("rejected:" + explained(problem, model))
            return
        assert isinstance(parsed, cmds.COMMANDS[name]) and len(payload) <= max_bytes
        outcome.reason = f"ok:{name}"


def _state(binder: Binder) -> tuple[Any, Any]:
    orders = dict(binder.env.orders.active)
    pools = {
        pid: (tuple(p.blocks), p.block, p.offset, p.issued, p.low_reported, tuple(p.loads))
        for pid, p in binder.env.pools.pools.items()
    }
    return orders, pools


# Commands that set a marking station up (a pool with serials, a work order with a GTIN), with
# a lot or serials that may not be GS1.
setups = st.one_of(
    st.builds(
        lambda gtin, lot: ("work-order", {"work_order": "W", "gtins": [gtin], "lot": lot}),
        gtins,
        st.text(alphabet="ABC012-% /", min_size=1, max_size=20),
    ),
    st.builds(lambda pool, r: ("serial-pool", {"pool": pool, "ranges": r}), pool_names, ranges),
    st.builds(
        lambda pool, sn: ("serial-pool", {"pool": pool, "serials": sn}),
        pool_names,
        st.lists(serials, min_size=1, max_size=3, unique=True),
    ),
).map(lambda c: (c[0], json.dumps(c[1]).encode()))


@fuzz(weight=3)
@given(
    commands=st.lists(
        st.tuples(st.just("work-order"), near_valid(work_orders))
        | st.tuples(st.just("serial-pool"), near_valid(pool_loads))
        | st.tuples(names, payloads),
        min_size=1,
        max_size=3,
    ),
    setup=st.lists(setups, max_size=3),
    order=st.randoms(use_true_random=False),
)
def test_fuzz_command_binder(
    commands: list[tuple[str, bytes]], setup: list[tuple[str, bytes]], order: Any
) -> None:
    """The binder's path: one reply per command, JSON with `ok`; a refusal says why, naming the
    field, with no event and no change of work orders or pools; a command carried out says
    what it changed, and the binder's state agrees."""
    commands = commands + setup
    order.shuffle(commands)
    with one_input("commands.binder", KNOWN) as outcome:
        binder = Binder(LINE)
        outcome.reasons = []
        for name, payload in commands:
            outcome.also(_one(binder, name, payload))
        for n, station in ((1, "st30"), (2, "st40")):
            outcome.also(_request_a_serial(binder, n, station))


def _request_a_serial(binder: Binder, n: int, station: str) -> str:
    """One request of a marking station's PLC: `commissioned`, or `rejected` saying why."""
    idle = (SignalValue(f"request{n}", False), SignalValue(f"ack{n}", False))
    binder.process(Signals("press", 6.0, (*idle, SignalValue(f"counter{n}", 0)), True))
    raised = (SignalValue(f"request{n}", True), SignalValue(f"ack{n}", False))
    out = binder.process(Signals("press", 7.0, (*raised, SignalValue(f"counter{n}", 1))))
    binder.env.view.apply(out.changes)
    [event, *low] = out.events
    assert [e.type for e in low] in ([], ["pool.low"])
    assert event.station == station
    if event.type == "rejected":
        # No serial to give, or (a `gs1: false` pool) one that makes no SGTIN: used up.
        assert event.reason in ("no_work_order", "pool_empty") or (
            event.reason in REASONS and "serial" in event.detail
        ), event
        return f"rejected:cycle {event.reason}"
    assert event.type == "commissioned" and event.ids[0].scheme == "sgtin"
    return "ok:cycle commissioned"


def _one(binder: Binder, name: str, payload: bytes) -> str:
    cmd = Command("", 5.0, name, payload, f"t/cmd/{name}/reply", b"corr")
    before = _state(binder)
    remaining = {pid: binder.env.pools.remaining(pid) for pid in binder.env.pools.pools}
    out = binder.process(cmd)
    [reply] = out.replies
    assert (reply.topic, reply.correlation) == (cmd.reply_to, b"corr")
    doc = json.loads(reply.payload.decode("utf-8"))
    assert doc["command"] == name and isinstance(doc["ok"], bool)
    assert doc["correlation_id"] is None or isinstance(doc["correlation_id"], str)
    if not doc["ok"]:
        assert out.events == [] and out.changes == [] and out.writes == []
        assert reply.after is None
        assert _state(binder) == before, "a refused command changed the binder's state"
        assert isinstance(doc["error"], str) and doc["error"]
        [(note, detail)] = out.notes
        assert note == "command_refused" and "; ".join(detail["problems"]) == doc["error"]
        model = cmds.COMMANDS.get(name)
        return "rejected:" + explained(detail["problems"][0], model)
    binder.env.view.apply(out.changes)  # committed, as the pipeline does
    if not doc["changed"]:
        assert out.events == [] and reply.after is None and _state(binder) == before
        return f"ok:{name} unchanged"
    [event] = out.events
    assert reply.after == event.event_id == doc["event_id"]
    parsed = cmds.parse(cmd, LINE.commands.max_bytes)
    if isinstance(parsed, cmds.WorkOrderCommand):
        assert event.type == "work_order.changed"
        scope = parsed.station or "*"
        active = binder.env.orders.active.get(scope)
        assert (active.work_order if active else None) == parsed.work_order
    else:
        assert isinstance(parsed, cmds.SerialPoolCommand) and event.type == "pool.loaded"
        now = binder.env.pools.remaining(parsed.pool)
        assert now == doc["remaining"] == remaining[parsed.pool] + event.detail["added"]
    return f"ok:{name} changed"


# --- what the fuzzers found --------------------------------------------------------------------


def _refused(name: str, payload: bytes) -> dict[str, Any]:
    out = Binder(LINE).process(Command("", 5.0, name, payload, "r"))
    doc: dict[str, Any] = json.loads(out.replies[0].payload)
    return doc


def test_bug_deeply_nested_json_is_refused() -> None:
    doc = _refused("serial-pool", b'{"pool": ' + b"[" * 2000)
    assert (doc["ok"], doc["error"]) == (False, "not JSON: nested too deep")


def test_bug_an_integer_of_thousands_of_digits_is_refused() -> None:
    doc = _refused("serial-pool", b'{"pool":"p1","ranges":[[1,' + b"9" * 4400 + b"]]}")
    assert (doc["ok"], doc["error"]) == (False, "not JSON: an integer of more than 4300 digits")


def test_bug_a_lone_surrogate_correlation_id_is_answered() -> None:
    """Fixed: the reply escapes it as JSON does, so the MES gets its own id back."""
    out = Binder(LINE).process(
        Command("", 5.0, "work-order", b'{"correlation_id":"\\ud800","work_order":5}', "r")
    )
    payload = out.replies[0].payload
    assert payload.startswith(b'{"correlation_id":"\\ud800","ok":false,')
    doc = json.loads(payload)
    assert (doc["correlation_id"], doc["ok"]) == ("\ud800", False)
    assert doc["error"].startswith("(payload): Invalid JSON")  # pydantic refuses the surrogate


def _commission_after(*commands: tuple[str, dict[str, Any]]) -> list[str]:
    binder = Binder(LINE)
    for name, doc in commands:
        out = binder.process(Command("", 5.0, name, json.dumps(doc).encode(), "r"))
        assert json.loads(out.replies[0].payload)["ok"] is True
        binder.env.view.apply(out.changes)
    return [_request_a_serial(binder, 1, "st30"), _request_a_serial(binder, 2, "st40")]


GTIN = "0950600013435" + gs1_check_digit("0950600013435")


def test_bug_a_work_order_lot_with_a_space_does_not_break_commissioning() -> None:
    """Fixed: the work-order command refuses a lot that is no GS1 AI (10), so the lot of an
    active work order always makes an element string; one that is commissions."""
    doc = _refused("work-order", json.dumps({"work_order": "W", "lot": "LOT 1"}).encode())
    assert (doc["ok"], doc["error"]) == (
        False,
        "lot: Value error, 'LOT 1' is not a GS1 lot (1 to 20 characters of GS1 set 82)",
    )
    assert _commission_after(
        ("serial-pool", {"pool": "p1", "ranges": [[1, 9]]}),
        ("serial-pool", {"pool": "p2", "ranges": [[1, 9]]}),
        ("work-order", {"work_order": "W", "gtins": [GTIN], "lot": "LOT-1/%"}),
    ) == ["ok:cycle commissioned", "ok:cycle commissioned"]


def test_bug_a_serial_of_a_non_gs1_pool_does_not_break_commissioning() -> None:
    """Fixed: a serial of a `gs1: false` pool that makes no SGTIN is refused at the request
    (and used up), not raised out of the binder."""
    assert _commission_after(
        ("serial-pool", {"pool": "p2", "serials": ["A 1", ""]}),
        ("work-order", {"work_order": "W", "gtins": [GTIN]}),
    ) == ["rejected:cycle pool_empty", "rejected:cycle unrecognized"]
