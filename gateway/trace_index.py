"""The local trace index: what the line has recorded about each unit, kept in the journal's
database so that rules work offline and `tracegate trace` can answer on the line.

Invariants:

1. **Written with its events.** The binder emits index changes beside its events (`Change`, each
   naming its event); the journal writes them in the transaction that commits the event
   (`write()`). The index never says what no committed event says, and never misses what one
   says. The same goes for durable state (active work orders, serial pools): `StateSet`,
   `PoolBlock`.
2. **The binder sees its decisions at once.** `TraceView` answers from the database plus the
   changes not committed yet (`pending`), applied in order; changes are idempotent assignments,
   so one both pending and committed (between the commit and `committed()`) reads the same.
3. **Bounded.** Units not seen for `trace.retention_days` leave the index (`prune()`); unsent
   events are in the outbox, not here, so pruning never loses data.

Reads are point queries on the loop thread (a read-only connection, WAL: they never wait for
the writer), tens of microseconds each, asked only by stations with rules or genealogy.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    key TEXT PRIMARY KEY,
    scheme TEXT NOT NULL,
    gtin TEXT,
    serial TEXT,
    commissioned INTEGER,          -- seq of the commissioning event
    parent TEXT,                   -- the unit or container it is in now
    first_seq INTEGER NOT NULL,
    last_time REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS units_serial ON units(serial) WHERE commissioned IS NOT NULL;
CREATE INDEX IF NOT EXISTS units_parent ON units(parent) WHERE parent IS NOT NULL;
CREATE INDEX IF NOT EXISTS units_last ON units(last_time);
CREATE TABLE IF NOT EXISTS unit_steps (
    key TEXT NOT NULL,
    step TEXT NOT NULL,
    result TEXT,
    seq INTEGER NOT NULL,
    PRIMARY KEY (key, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unit_events (
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (key, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trace_events (
    seq INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    doc BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pool_blocks (
    pool TEXT NOT NULL,
    block INTEGER NOT NULL,
    first INTEGER,
    last INTEGER,
    serials TEXT,                  -- a JSON list, for pools delivered as lists
    PRIMARY KEY (pool, block)
) WITHOUT ROWID;
"""


# --- changes (binder -> journal transaction) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnitChange:
    """Event `event_id` concerns unit `key` (as `role`: unit, parent, child, candidate). Each
    optional part is an assignment: a step done with its result, commissioned, put into
    `parent`, or taken out of its parent (`unparent`)."""

    event_id: str
    key: str
    scheme: str
    time: float
    role: str = "unit"
    gtin: str | None = None
    serial: str | None = None
    step: str | None = None
    result: str | None = None
    commissioned: bool = False
    parent: str | None = None
    unparent: bool = False


@dataclass(frozen=True, slots=True)
class StateSet:
    """Durable state `key` := `value` (JSON text; None deletes), with event `event_id`."""

    event_id: str
    key: str
    value: str | None


@dataclass(frozen=True, slots=True)
class PoolBlock:
    """A block of serials delivered to `pool`: numbers `first`..`last`, or a list."""

    event_id: str
    pool: str
    block: int
    first: int | None = None
    last: int | None = None
    serials: tuple[str, ...] | None = None

    @property
    def size(self) -> int:
        if self.serials is not None:
            return len(self.serials)
        assert self.first is not None and self.last is not None
        return self.last - self.first + 1


Change = UnitChange | StateSet | PoolBlock


def write(
    conn: sqlite3.Connection, seq: int, time: float, doc: bytes, changes: Sequence[Change]
) -> None:
    """Inside the journal's transaction: the index rows and state of one committed event."""
    units = [c for c in changes if isinstance(c, UnitChange)]
    if units:
        conn.execute("INSERT OR REPLACE INTO trace_events VALUES (?,?,?)", (seq, time, doc))
    for c in units:
        conn.execute(
            "INSERT INTO units (key, scheme, gtin, serial, first_seq, last_time) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET last_time=excluded.last_time",
            (c.key, c.scheme, c.gtin, c.serial, seq, c.time),
        )
        conn.execute("INSERT OR IGNORE INTO unit_events VALUES (?,?,?)", (c.key, seq, c.role))
        if c.step is not None:
            conn.execute(
                "INSERT OR REPLACE INTO unit_steps VALUES (?,?,?,?)", (c.key, c.step, c.result, seq)
            )
        if c.commissioned:
            conn.execute(
                "UPDATE units SET commissioned=? WHERE key=? AND commissioned IS NULL", (seq, c.key)
            )
        if c.parent is not None:
            conn.execute("UPDATE units SET parent=? WHERE key=?", (c.parent, c.key))
        elif c.unparent:
            conn.execute("UPDATE units SET parent=NULL WHERE key=?", (c.key,))
    for change in changes:
        if isinstance(change, StateSet):
            if change.value is None:
                conn.execute("DELETE FROM state WHERE key=?", (change.key,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO state VALUES (?,?)", (change.key, change.value)
                )
        elif isinstance(change, PoolBlock):
            listed = json.dumps(list(change.serials)) if change.serials is not None else None
            conn.execute(
                "INSERT OR REPLACE INTO pool_blocks VALUES (?,?,?,?,?)",
                (change.pool, change.block, change.first, change.last, listed),
            )


def load_state(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM state"))


def load_pool_blocks(conn: sqlite3.Connection) -> list[PoolBlock]:
    out = []
    for pool, block, first, last, serials in conn.execute(
        "SELECT pool, block, first, last, serials FROM pool_blocks ORDER BY pool, block"
    ):
        listed = tuple(json.loads(serials)) if serials is not None else None
        out.append(PoolBlock("", pool, block, first, last, listed))
    return out


def prune(conn: sqlite3.Connection, before: float) -> int:
    """Forget units last seen before `before` (and what only they referenced); returns how
    many. Runs in its own transaction, in the journal's writer thread."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        old = [r[0] for r in conn.execute("SELECT key FROM units WHERE last_time < ?", (before,))]
        conn.executemany("DELETE FROM unit_steps WHERE key=?", ((k,) for k in old))
        conn.executemany("DELETE FROM unit_events WHERE key=?", ((k,) for k in old))
        conn.executemany("DELETE FROM units WHERE key=?", ((k,) for k in old))
        conn.execute(
            "DELETE FROM trace_events WHERE time < ? AND seq NOT IN (SELECT seq FROM unit_events)",
            (before,),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(old)


# --- reading (the binder's view) ---------------------------------------------------------------


@dataclass
class UnitState:
    scheme: str
    gtin: str | None = None
    serial: str | None = None
    commissioned: bool = False
    parent: str | None = None
    steps: dict[str, str | None] = field(default_factory=dict)  # step -> its latest result

    def apply(self, c: UnitChange) -> None:
        if c.gtin is not None:
            self.gtin = c.gtin
        if c.serial is not None:
            self.serial = c.serial
        if c.step is not None:
            self.steps[c.step] = c.result
        if c.commissioned:
            self.commissioned = True
        if c.parent is not None:
            self.parent = c.parent
        elif c.unparent:
            self.parent = None


class TraceView:
    """What the binder may ask of the index: the database as committed, plus the binder's own
    changes not committed yet (invariant 2). With `direct`, changes are written to the
    database at once (tests and tools without a journal)."""

    def __init__(self, conn: sqlite3.Connection, *, direct: bool = False) -> None:
        self._conn = conn
        self._direct = direct
        self._pending: dict[str, list[UnitChange]] = {}  # event id -> its unit changes
        self._by_key: dict[str, list[UnitChange]] = {}
        self._seq = 0

    @classmethod
    def memory(cls) -> TraceView:
        """An empty index in memory that applies changes at once."""
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        conn.executescript(SCHEMA)
        return cls(conn, direct=True)

    def apply(self, changes: Iterable[Change]) -> None:
        units = [c for c in changes if isinstance(c, UnitChange)]
        if not units:
            return
        if self._direct:
            by_event: dict[str, list[UnitChange]] = {}
            for c in units:
                by_event.setdefault(c.event_id, []).append(c)
            for cs in by_event.values():
                self._seq += 1
                write(self._conn, self._seq, cs[0].time, b"{}", cs)
            return
        for c in units:
            self._pending.setdefault(c.event_id, []).append(c)
            self._by_key.setdefault(c.key, []).append(c)

    def committed(self, event_ids: Iterable[str]) -> None:
        """These events are in the database now: their changes need not be replayed."""
        for eid in event_ids:
            for c in self._pending.pop(eid, ()):
                lst = self._by_key.get(c.key)
                if lst is not None:
                    lst.remove(c)
                    if not lst:
                        del self._by_key[c.key]

    @property
    def pending(self) -> int:
        return len(self._pending)

    def unit(self, key: str) -> UnitState | None:
        row = self._conn.execute(
            "SELECT scheme, gtin, serial, commissioned, parent FROM units WHERE key=?", (key,)
        ).fetchone()
        state = None
        if row is not None:
            state = UnitState(row[0], row[1], row[2], row[3] is not None, row[4])
            state.steps = dict(
                self._conn.execute("SELECT step, result FROM unit_steps WHERE key=?", (key,))
            )
        for c in self._by_key.get(key, ()):
            if state is None:
                state = UnitState(c.scheme)
            state.apply(c)
        return state

    def children(self, parent: str) -> list[str]:
        """Units inside `parent` now, in the order they were first seen."""
        keys = [
            r[0]
            for r in self._conn.execute(
                "SELECT key FROM units WHERE parent=? ORDER BY first_seq", (parent,)
            )
        ]
        touched = {c.key for cs in self._pending.values() for c in cs if c.parent or c.unparent}
        for key in touched:
            state = self.unit(key)
            inside = state is not None and state.parent == parent
            if inside and key not in keys:
                keys.append(key)
            elif not inside and key in keys:
                keys.remove(key)
        return keys

    def serial_gtins(self, serial: str) -> set[str]:
        """GTINs under which `serial` has been commissioned."""
        gtins = {
            r[0]
            for r in self._conn.execute(
                "SELECT gtin FROM units WHERE serial=? AND commissioned IS NOT NULL", (serial,)
            )
            if r[0] is not None
        }
        for cs in self._pending.values():
            for c in cs:
                if c.commissioned and c.serial == serial and c.gtin is not None:
                    gtins.add(c.gtin)
        return gtins


# --- the trace of one unit (`tracegate trace`) -------------------------------------------------


@dataclass
class Trace:
    key: str
    unit: dict[str, Any] | None
    events: list[dict[str, Any]]  # the unit's events, oldest first (role added)
    parents: list[str]  # its container, that one's container ... outwards
    children: list[dict[str, Any]]  # what is inside it now, recursively (key, scheme, children)


def trace(conn: sqlite3.Connection, key: str, depth: int = 8) -> Trace:
    """Backward and forward trace of `key` from the index (read-only connection)."""
    row = conn.execute(
        "SELECT scheme, gtin, serial, commissioned, parent, first_seq, last_time FROM units "
        "WHERE key=?",
        (key,),
    ).fetchone()
    unit = None
    if row is not None:
        unit = dict(
            zip(
                ("scheme", "gtin", "serial", "commissioned_seq", "parent", "first_seq",
                 "last_time"),
                row,
                strict=True,
            )
        )  # fmt: skip
    events = []
    for role, doc in conn.execute(
        "SELECT e.role, t.doc FROM unit_events e JOIN trace_events t ON t.seq = e.seq "
        "WHERE e.key=? ORDER BY e.seq",
        (key,),
    ):
        d = json.loads(doc)
        d["role"] = role
        events.append(d)
    parents = list(_parents(conn, key, depth))
    return Trace(key, unit, events, parents, _children(conn, key, depth))


def _parents(conn: sqlite3.Connection, key: str, depth: int) -> Iterator[str]:
    seen = {key}
    for _ in range(depth):
        row = conn.execute("SELECT parent FROM units WHERE key=?", (key,)).fetchone()
        if row is None or row[0] is None or row[0] in seen:
            return
        key = row[0]
        seen.add(key)
        yield key


def _children(conn: sqlite3.Connection, key: str, depth: int) -> list[dict[str, Any]]:
    if depth <= 0:
        return []
    out = []
    for child, scheme in conn.execute(
        "SELECT key, scheme FROM units WHERE parent=? ORDER BY first_seq", (key,)
    ).fetchall():
        out.append({"key": child, "scheme": scheme, "children": _children(conn, child, depth - 1)})
    return out
