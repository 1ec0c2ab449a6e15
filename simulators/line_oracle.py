"""The oracle of a virtual line: what reached the broker against the ground truth.

`compare(truth, events)` takes the events a subscriber received (duplicates included: delivery
is at least once) and reports, precisely, every way in which they differ from what the truth
says the gateway had to record:

- `seq`: no gaps, no seq used by two events, nothing re-sent with other content;
- per station: the events in `seq` order are the truth's, in the order the station caused
  them (each missing, extra or out-of-order event named);
- per unit (housing, board, case, by identity key): its history rebuilt from the events, its
  steps with parameters (value, unit, in_tolerance) and results, rejections with their
  reasons, work orders, commissioned serials, genealogy (parent, children), equal to the
  truth's; a unit is exact when all of it is;
- the PLCs' side: verdicts received and what the marking laser marked;
- events without a cause: only the gateway's own (`device.state`, `outbox.state`) are allowed
  anywhere; `handshake.error`/`handshake.timeout`/`trigger.error` only at a station while a
  fault of the truth struck it; `gap` never.

Delivered events are normalised here into the `fields` of simulators.line_truth.Expect.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from simulators.line_truth import FAULT_EVENTS, OWN_EVENTS, Expect, Truth

TOLERANCE = 5e-4  # parameter values: the truth's 3 decimals against a float32 on the wire
FAULT_SLACK_S = 10.0  # after a fault, how long its consequences may still be recorded
PER_KIND = 10  # differences of one kind listed before "... and N more"
Norm = tuple[str | None, str, str | None, dict[str, Any], tuple[str, ...]]


def normalize(ev: dict[str, Any]) -> Norm:
    """station, type, key, fields, children of a delivered event (see Expect)."""
    t = ev["type"]
    ids = ev.get("ids") or []
    key = ids[0]["value"] if ids else None
    fields: dict[str, Any] = {"step": ev.get("step"), "work_order": ev.get("work_order")}
    children = tuple(c.get("value") for c in ev.get("children") or [])
    fields.update(_TYPE_FIELDS.get(t, _other)(ev))
    return ev.get("station"), t, key, fields, children


def _parameters(ev: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {"value": p.get("value"), "unit": p.get("unit")}
        | ({"in_tolerance": p["in_tolerance"]} if "in_tolerance" in p else {})
        for name, p in (ev.get("parameters") or {}).items()
    }


def _detail(ev: dict[str, Any]) -> dict[str, Any]:
    return ev.get("detail") or {}


def _identified(ev: dict[str, Any]) -> dict[str, Any]:
    tag_pass = _detail(ev).get("pass")
    return {"direction": tag_pass.get("direction")} if isinstance(tag_pass, dict) else {}


def _rejected(ev: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"reason": ev.get("reason")}
    params = _parameters(ev)
    if params or ev.get("result") is not None:  # a cycle's rejection keeps the cycle's data
        out.update(result=ev.get("result"), parameters=params)
    return out


def _commissioned(ev: dict[str, Any]) -> dict[str, Any]:
    ids = ev.get("ids") or [{}]
    out = {name: ids[0].get(name) for name in ("gtin", "serial", "lot", "expiry")}
    return out | {"pool": _detail(ev).get("pool"), "remaining": _detail(ev).get("remaining")}


def _aggregated(ev: dict[str, Any]) -> dict[str, Any]:
    return {
        "action": ev.get("action"),
        "kind": ev.get("kind"),
        "parent": (ev.get("parent") or {}).get("value"),
        "children": [c.get("value") for c in ev.get("children") or []],
    }


def _pool(ev: dict[str, Any]) -> dict[str, Any]:
    d = _detail(ev)
    out = {"pool": d.get("pool"), "remaining": d.get("remaining")}
    return out | ({"added": d.get("added")} if ev["type"] == "pool.loaded" else {})


def _other(ev: dict[str, Any]) -> dict[str, Any]:
    return {"reason": ev.get("reason")}


_TYPE_FIELDS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "identified": _identified,
    "noread": lambda ev: {"reason": ev.get("reason"), "source": _detail(ev).get("source")},
    "rejected": _rejected,
    "step.completed": lambda ev: {"result": ev.get("result"), "parameters": _parameters(ev)},
    "commissioned": _commissioned,
    "aggregated": _aggregated,
    "work_order.changed": lambda ev: {
        "work_order": ev.get("work_order"),
        "previous": _detail(ev).get("previous"),
    },
    "pool.loaded": _pool,
    "pool.low": _pool,
}


def differences(expected: Any, got: Any, path: str = "") -> list[str]:
    """Where `got` differs from `expected` (numbers within TOLERANCE), as `path: exp, got`."""
    if isinstance(expected, dict) and isinstance(got, dict):
        out: list[str] = []
        for k in sorted(set(expected) | set(got), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in got:
                out.append(f"{sub}: expected {expected[k]!r}, missing")
            elif k not in expected:
                out.append(f"{sub}: not expected, got {got[k]!r}")
            else:
                out += differences(expected[k], got[k], sub)
        return out
    numbers = (int, float)
    if (
        isinstance(expected, numbers)
        and isinstance(got, numbers)
        and not isinstance(expected, bool)
        and not isinstance(got, bool)
    ):
        return (
            [] if abs(expected - got) <= TOLERANCE else [f"{path}: expected {expected}, got {got}"]
        )
    return [] if expected == got else [f"{path}: expected {expected!r}, got {got!r}"]


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)
    rows: list[tuple[str, int, int, int]] = field(default_factory=list)  # what, exp, got, ok
    info: list[str] = field(default_factory=list)
    # The differences counted (docs/reliability.md): lost (the truth's, never delivered),
    # duplicated (delivered twice under two event ids), resent (the same event id again: at
    # least once, allowed), reordered (within a station), unexplained (no cause in the truth).
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.failures

    def table(self) -> str:
        width = max([len(r[0]) for r in self.rows] + [10])
        lines = [f"{'compared':<{width}}  {'truth':>6} {'broker':>6} {'exact':>6}"]
        lines += [f"{w:<{width}}  {e:>6} {g:>6} {k:>6}" for w, e, g, k in self.rows]
        return "\n".join(lines + [f"  {i}" for i in self.info])


class _Compare:
    def __init__(self, truth: Truth, events: Iterable[dict[str, Any]]) -> None:
        self.truth = truth
        self.report = Report()
        self.received = list(events)
        self.events = self._distinct(self.received)

    def fail(self, msg: str) -> None:
        self.report.failures.append(msg)

    def _distinct(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        by_id: dict[str, dict[str, Any]] = {}
        for ev in events:
            first = by_id.setdefault(ev["event_id"], ev)
            self.report.counts["resent"] += first is not ev
            if first is not ev and json.dumps(first, sort_keys=True) != json.dumps(
                ev, sort_keys=True
            ):
                self.report.counts["resent_changed"] += 1
                self.fail(
                    f"event {ev['event_id']} was re-sent with other content (seq {ev['seq']})"
                )
        return sorted(by_id.values(), key=lambda e: e["seq"])

    # --- seq -----------------------------------------------------------------------------------

    def seqs(self) -> None:
        seqs = [e["seq"] for e in self.events]
        before = len(self.report.failures)
        for s, n in Counter(seqs).items():
            if n > 1:
                self.fail(f"seq {s} is used by {n} different events")
        if seqs:
            missing = sorted(set(range(1, max(seqs) + 1)) - set(seqs))
            if missing:
                self.fail(f"seq gaps: {len(missing)} missing, first {missing[:10]}")
        self.report.rows.append(
            (
                "seq 1..max without gaps",
                len(seqs),
                len(set(seqs)),
                len(set(seqs)) if len(self.report.failures) == before else 0,
            )
        )
        self.report.info.append(
            f"{len(self.received)} messages received, {len(self.events)} distinct events "
            f"({len(self.received) - len(self.events)} re-sent)"
        )

    # --- stations ------------------------------------------------------------------------------

    def _caused(self, ev: dict[str, Any]) -> bool:
        """An event of a fault's own making, while that fault struck its station."""
        from datetime import datetime

        t = datetime.fromisoformat(ev["time"].replace("Z", "+00:00")).timestamp()
        return any(
            ev.get("station") in f.stations
            and f.start - 1.0 <= t <= (f.end or f.start) + FAULT_SLACK_S
            for f in self.truth.faults
        )

    def stations(self) -> dict[str | None, list[tuple[Expect, Norm]]]:
        """Pair the delivered events with the truth's, station by station, in order."""
        expected: dict[str | None, list[Expect]] = defaultdict(list)
        for e in self.truth.expected:
            expected[e.station].append(e)
        got: dict[str | None, list[Norm]] = defaultdict(list)
        own: Counter[str] = Counter()
        incidental: Counter[tuple[Any, ...]] = Counter()
        for ev in self.events:
            n = normalize(ev)
            if n[1] in OWN_EVENTS:
                own[n[1]] += 1
            elif n[1] in FAULT_EVENTS and self._caused(ev):
                incidental[(n[0], n[1], n[3].get("reason"))] += 1
            else:
                got[n[0]].append(n)
            if n[1] == "gap":
                self.fail(f"a gap event: {ev.get('detail')}")
        pairs: dict[str | None, list[tuple[Expect, Norm]]] = {}
        for station in sorted(set(expected) | set(got), key=lambda s: s or ""):
            pairs[station] = self._align(station, expected[station], got[station])
        self.report.info.append(
            "gateway's own events: " + (", ".join(f"{k} {v}" for k, v in own.items()) or "none")
        )
        for (st, t, reason), count in incidental.items():
            self.report.info.append(f"{count} {t} ({reason}) at {st} during a fault there")
        return pairs

    def _align(
        self, station: str | None, exp: list[Expect], got: list[Norm]
    ) -> list[tuple[Expect, Norm]]:
        where = station or "(no station)"
        a = [(e.type, e.key) for e in exp]
        b = [(g[1], g[2]) for g in got]
        pairs: list[tuple[Expect, Norm]] = []
        missing: list[Expect] = []
        extra: list[Norm] = []
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
            if op == "equal":
                pairs += zip(exp[i1:i2], got[j1:j2], strict=True)
            else:
                missing += exp[i1:i2]
                extra += got[j1:j2]
        # What is both missing and extra came in another order than the station caused it.
        extra_by: dict[tuple[str, str | None], list[Norm]] = defaultdict(list)
        for g in extra:
            extra_by[(g[1], g[2])].append(g)
        lines: dict[str, list[str]] = defaultdict(list)
        for e in missing:
            again = extra_by.get((e.type, e.key))
            if again:
                pairs.append((e, again.pop(0)))
                lines["out of order"].append(f"{e.type} {e.key or ''} ({e.cause})")
                self.report.counts["reordered"] += 1
            else:
                lines["missing"].append(f"{e.type} {e.key or ''} ({e.cause}) {e.fields}")
                self.report.counts["lost"] += 1
        expected_keys = set(a)
        for left in extra_by.values():
            for g in left:
                lines["without a cause in the truth"].append(f"{g[1]} {g[2] or ''} {g[3]}")
                self.report.counts[
                    "duplicated" if (g[1], g[2]) in expected_keys else "unexplained"
                ] += 1
        for what, found in lines.items():
            self._listed(f"{where}: {what}: ", found)
        label = "line" if station is None else station
        for t in sorted({e.type for e in exp} | {g[1] for g in got}):
            n_exp = sum(1 for e in exp if e.type == t)
            n_got = sum(1 for g in got if g[1] == t)
            n_ok = sum(1 for e, g in pairs if e.type == t and not differences(e.fields, g[3]))
            self.report.rows.append((f"{label} {t}", n_exp, n_got, n_ok))
        return pairs

    def _listed(self, prefix: str, found: list[str], most: int = PER_KIND) -> None:
        for line in found[:most]:
            self.fail(prefix + line)
        if len(found) > most:
            self.fail(f"{prefix}... and {len(found) - most} more")

    # --- units -----------------------------------------------------------------------------------

    def _names(self) -> dict[str, list[str]]:
        """Identity key -> the physical items that carry it (two housings share a label's)."""
        names: dict[str, list[str]] = defaultdict(list)
        p = self.truth.planner
        for u in p.units.values():
            names[u.label.key].append(u.id)
        for b in p.boards:
            names[b.key].append(b.id)
        for c in p.cases:
            names[c.key].append(c.id)
        return names

    def units(self) -> None:
        names = self._names()
        exp_h: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        got_h: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for e in self.truth.expected:
            for k, item in _items(e.station, e.type, e.key, e.fields, e.children):
                exp_h[k].append(item)
        for ev in self.events:
            n = normalize(ev)
            if n[1] in OWN_EVENTS or n[1] in FAULT_EVENTS:
                continue
            for k, item in _items(*n):
                got_h[k].append(item)
        kinds = {"U": "housings", "B": "boards", "C": "cases"}
        totals: Counter[str] = Counter()
        exact: Counter[str] = Counter()
        wrong: list[str] = []
        for key, ids in names.items():
            kind = kinds[ids[0][0]]
            totals[kind] += 1
            problems = _history_diff(exp_h.get(key, []), got_h.get(key, []))
            if problems:
                wrong.append(f"{'/'.join(ids)} {key}: " + "; ".join(problems[:4]))
            else:
                exact[kind] += 1
        self._listed("not exact: ", wrong, 4 * PER_KIND)
        for key in sorted(set(got_h) - set(names)):
            self.fail(f"a unit the line never had: {key} ({[i[:2] for i in got_h[key]]})")
        for kind in kinds.values():
            self.report.rows.append((f"{kind} exact", totals[kind], totals[kind], exact[kind]))

    def plc(self) -> None:
        wrong_v = [c for c in self.truth.plc_checks if c.verdict_seen != c.verdict_expected]
        wrong_m = [c for c in self.truth.plc_checks if c.marked_expected != c.marked_seen]
        for c in wrong_v[:20]:
            self.fail(
                f"{c.station} {c.item}: the PLC got verdict {c.verdict_seen}, the contract "
                f"says {c.verdict_expected}"
            )
        for c in wrong_m[:20]:
            self.fail(
                f"{c.station} {c.item}: marked {c.marked_seen!r}, should be {c.marked_expected!r}"
            )
        n = len(self.truth.plc_checks)
        self.report.rows.append(
            ("PLC verdicts and markings", n, n, n - len({id(c) for c in wrong_v + wrong_m}))
        )


def _items(
    station: str | None,
    t: str,
    key: str | None,
    fields: dict[str, Any],
    children: tuple[str, ...],
) -> list[tuple[str, tuple[Any, ...]]]:
    """An event as items of the histories of the units it concerns."""
    out: list[tuple[str, tuple[Any, ...]]] = []
    if key is not None:
        out.append((key, (station, t, fields)))
    for c in children:
        view = {k: fields.get(k) for k in ("step", "work_order", "action", "kind", "parent")}
        out.append((c, (station, f"{t} (child)", view)))
    return out


def _history_diff(exp: list[tuple[Any, ...]], got: list[tuple[Any, ...]]) -> list[str]:
    """What differs between two histories of one unit, event by event in order."""
    problems: list[str] = []
    a = [(s, t) for s, t, _ in exp]
    b = [(s, t) for s, t, _ in got]
    if a != b:
        problems.append(f"history {_short(a)} expected, got {_short(b)}")
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            (s, t, f_exp), (_, _, f_got) = exp[block.a + k], got[block.b + k]
            problems += [f"{s} {t}: {d}" for d in differences(f_exp, f_got)]
    return problems


def _short(items: list[tuple[Any, ...]]) -> str:
    return "[" + ", ".join(f"{s}:{t}" for s, t in items) + "]"


def compare(truth: Truth, events: Iterable[dict[str, Any]]) -> Report:
    c = _Compare(truth, events)
    if truth.stopped is not None:
        c.fail(truth.stopped)
        c.report.info.append(truth.stopped)
    c.seqs()
    pairs = c.stations()
    for station, matched in pairs.items():
        found = [
            f"{e.type} {e.key or ''} ({e.cause}): {d}"
            for e, g in matched
            for d in differences(e.fields, g[3])
        ]
        c._listed(f"{station or 'line'}: ", found)
    c.units()
    c.plc()
    for note in truth.notes:
        c.report.info.append(f"note: {note}")
    return c.report
