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

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

# One append-only log of what each event says about each unit, with one index by unit: a line
# identifies a different unit with nearly every event, so every index keyed by unit costs a
# random B-tree insert (a dirty page) per event. Measured: three such tables (units, steps,
# events) halved the durable path; one log with one index keeps it near the outbox alone.
SCHEMA = """
CREATE TABLE IF NOT EXISTS trace_events (
    seq INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    doc BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS unit_log (
    seq INTEGER NOT NULL,          -- the event that says it
    h INTEGER NOT NULL,            -- key_hash(key): what the index holds (8 bytes, not the key)
    key TEXT NOT NULL,
    scheme TEXT NOT NULL,
    role TEXT NOT NULL,            -- unit, parent, child, candidate
    step TEXT,                     -- a step done, with its result
    result TEXT,
    flags INTEGER NOT NULL,        -- 1 commissioned, 2 put into `parent`, 4 taken out of one
    parent TEXT
);
CREATE INDEX IF NOT EXISTS unit_log_h ON unit_log(h);
CREATE TABLE IF NOT EXISTS serials (serial TEXT NOT NULL, gtin TEXT, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS serials_serial ON serials(serial);
CREATE TABLE IF NOT EXISTS members (
    parent TEXT NOT NULL,
    seq INTEGER NOT NULL,
    child TEXT NOT NULL,
    added INTEGER NOT NULL         -- 1 put in, 0 taken out
);
CREATE INDEX IF NOT EXISTS members_parent ON members(parent, seq);
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
COMMISSIONED, PUT_IN, TAKEN_OUT = 1, 2, 4
ROWS_PER_STATEMENT = 1024
MAX_VARIABLES = 32766  # SQLite's default limit of bound parameters in one statement


def insert_many(
    conn: sqlite3.Connection, table: str, columns: int, rows: Sequence[Sequence[Any]]
) -> None:
    """INSERT rows, many per statement. The sqlite3 module releases the GIL around every
    statement step and takes it back after: with `executemany`, once per row. While the event
    loop thread is busy, taking the GIL back is what the journal's writer thread spends most of
    its time on (measured: 50 us a row at 16,000 events/s, most of the commit); a statement of
    1,024 rows gives the GIL back 1,024 times less often."""
    one = "(" + ",".join("?" * columns) + ")"
    per = min(ROWS_PER_STATEMENT, MAX_VARIABLES // columns)
    n = len(rows)
    whole = n - n % per
    if whole:
        full = f"INSERT INTO {table} VALUES " + ",".join([one] * per)
        for start in range(0, whole, per):
            chunk = rows[start : start + per]
            conn.execute(full, [v for row in chunk for v in row])
    if whole < n:
        rest = rows[whole:]
        sql = f"INSERT INTO {table} VALUES " + ",".join([one] * len(rest))
        conn.execute(sql, [v for row in rest for v in row])


def key_hash(key: str) -> int:
    """A unit's key as a signed 64-bit integer (BLAKE2b): the index is of these, a quarter the
    size of one of keys. Rows are matched on the key too, so a collision costs nothing but a
    row read."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


# --- changes (binder -> journal transaction) --------------------------------------------------


@dataclass(slots=True)  # not frozen: one per event on the hot path (a third of the cost)
class UnitChange:
    """Event `event_id` concerns unit `key` (as `role`: unit, parent, child, candidate). Each
    optional part is an assignment: a step done with its result, commissioned, put into
    `parent`, or (with `unparent`) taken out of `parent`."""

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
    conn: sqlite3.Connection,
    batch: Sequence[tuple[int, float, bytes, Sequence[Change]]],
) -> None:
    """Inside the journal's transaction: the index rows and state of committed events, given as
    (seq, time, payload, changes). One statement per kind of row for the whole batch (a commit
    carries thousands of events: a Python loop of single inserts would cost more than SQLite)."""
    docs: list[tuple[int, float, bytes]] = []
    log: list[tuple[int, int, str, str, str, str | None, str | None, int, str | None]] = []
    serials: list[tuple[str, str | None, int]] = []
    members: list[tuple[str, int, str, int]] = []
    for seq, time, doc, changes in batch:
        touched = False
        for c in changes:
            if isinstance(c, UnitChange):
                touched = True
                moved = 0 if c.parent is None else (TAKEN_OUT if c.unparent else PUT_IN)
                flags = (COMMISSIONED if c.commissioned else 0) | moved
                log.append(
                    (
                        seq,
                        key_hash(c.key),
                        c.key,
                        c.scheme,
                        c.role,
                        c.step,
                        c.result,
                        flags,
                        c.parent,
                    )
                )
                if c.commissioned and c.serial is not None:
                    serials.append((c.serial, c.gtin, seq))
                if c.parent is not None:
                    members.append((c.parent, seq, c.key, 0 if c.unparent else 1))
            else:
                _state(conn, c)
        if touched:
            docs.append((seq, time, doc))
    if not docs:
        return
    insert_many(conn, "trace_events", 3, docs)
    insert_many(conn, "unit_log", 9, log)
    if serials:
        insert_many(conn, "serials", 3, serials)
    if members:
        insert_many(conn, "members", 4, members)


def _state(conn: sqlite3.Connection, c: StateSet | PoolBlock) -> None:
    if isinstance(c, StateSet):
        if c.value is None:
            conn.execute("DELETE FROM state WHERE key=?", (c.key,))
        else:
            conn.execute("INSERT OR REPLACE INTO state VALUES (?,?)", (c.key, c.value))
        return
    listed = json.dumps(list(c.serials)) if c.serials is not None else None
    conn.execute(
        "INSERT OR REPLACE INTO pool_blocks VALUES (?,?,?,?,?)",
        (c.pool, c.block, c.first, c.last, listed),
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


def prune(conn: sqlite3.Connection, before: float, chunk: int = 50_000) -> int:
    """Forget what events older than `before` said (the index remembers
    trace.retention_days); returns how many index rows went. Chunked transactions, in the
    journal's writer thread, so that commits never wait long behind it. Rows are appended in
    seq order, so everything below the first recent seq goes."""
    newest_old = conn.execute(
        "SELECT MAX(seq) FROM trace_events WHERE time < ?", (before,)
    ).fetchone()[0]
    if newest_old is None:
        return 0
    gone = 0
    for table in ("unit_log", "members", "serials", "trace_events"):
        while True:
            conn.execute("BEGIN IMMEDIATE")
            try:
                n = conn.execute(
                    f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} "
                    "WHERE seq <= ? LIMIT ?)",
                    (newest_old, chunk),
                ).rowcount
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            gone += n if table == "unit_log" else 0
            if n < chunk:
                break
    return gone


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
        if c.unparent:
            self.parent = None
        elif c.parent is not None:
            self.parent = c.parent


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
            batch = []
            for cs in by_event.values():
                self._seq += 1
                batch.append((self._seq, cs[0].time, b"{}", cs))
            write(self._conn, batch)
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
        state = None
        for scheme, step, result, flags, parent in self._conn.execute(
            "SELECT scheme, step, result, flags, parent FROM unit_log WHERE h=? AND key=? "
            "ORDER BY seq",
            (key_hash(key), key),
        ):
            if state is None:
                state = UnitState(scheme, *_gtin_serial(key))
            if step is not None:
                state.steps[step] = result
            if flags & COMMISSIONED:
                state.commissioned = True
            if flags & PUT_IN:
                state.parent = parent
            elif flags & TAKEN_OUT:
                state.parent = None
        for c in self._by_key.get(key, ()):
            if state is None:
                state = UnitState(c.scheme, *_gtin_serial(key))
            state.apply(c)
        return state

    def children(self, parent: str) -> list[str]:
        """Units inside `parent` now, in the order they were put in."""
        inside: dict[str, None] = {}
        for child, added in self._conn.execute(
            "SELECT child, added FROM members WHERE parent=? ORDER BY seq", (parent,)
        ):
            if added:
                inside[child] = None
            else:
                inside.pop(child, None)
        for cs in self._pending.values():
            for c in cs:
                if c.parent == parent:
                    if c.unparent:
                        inside.pop(c.key, None)
                    else:
                        inside[c.key] = None
        return list(inside)

    def serial_gtins(self, serial: str) -> set[str]:
        """GTINs under which `serial` has been commissioned."""
        gtins = {
            r[0]
            for r in self._conn.execute("SELECT gtin FROM serials WHERE serial=?", (serial,))
            if r[0] is not None
        }
        for cs in self._pending.values():
            for c in cs:
                if c.commissioned and c.serial == serial and c.gtin is not None:
                    gtins.add(c.gtin)
        return gtins


def _gtin_serial(key: str) -> tuple[str | None, str | None]:
    """GTIN and serial of an SGTIN's key `(01)<gtin>(21)<serial>`."""
    if key.startswith("(01)") and key[18:22] == "(21)":
        return key[4:18], key[22:]
    return None, None


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
    view = TraceView(conn)
    state = view.unit(key)
    unit = None
    if state is not None:
        h = key_hash(key)
        first = conn.execute(
            "SELECT MIN(seq) FROM unit_log WHERE h=? AND key=?", (h, key)
        ).fetchone()[0]
        commissioned = conn.execute(
            "SELECT MIN(seq) FROM unit_log WHERE h=? AND key=? AND flags & 1", (h, key)
        ).fetchone()[0]
        unit = {
            "scheme": state.scheme,
            "gtin": state.gtin,
            "serial": state.serial,
            "commissioned_seq": commissioned,
            "parent": state.parent,
            "first_seq": first,
            "steps": state.steps,
        }
    events = []
    for role, doc in conn.execute(
        "SELECT l.role, t.doc FROM unit_log l JOIN trace_events t ON t.seq = l.seq "
        "WHERE l.h=? AND l.key=? ORDER BY l.seq",
        (key_hash(key), key),
    ):
        d = json.loads(doc)
        d["role"] = role
        events.append(d)
    return Trace(key, unit, events, list(_parents(view, key, depth)), _children(view, key, depth))


def _parents(view: TraceView, key: str, depth: int) -> Iterator[str]:
    seen = {key}
    for _ in range(depth):
        state = view.unit(key)
        if state is None or state.parent is None or state.parent in seen:
            return
        key = state.parent
        seen.add(key)
        yield key


def _children(view: TraceView, key: str, depth: int) -> list[dict[str, Any]]:
    if depth <= 0:
        return []
    out = []
    for child in view.children(key):
        state = view.unit(child)
        scheme = state.scheme if state is not None else "?"
        out.append({"key": child, "scheme": scheme, "children": _children(view, child, depth - 1)})
    return out
