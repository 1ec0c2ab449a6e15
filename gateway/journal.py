"""The durable outbox: every trace event is committed here before anything else happens.

Delivery semantics (DESIGN section 5) rest on these invariants:

1. Commit first. An event exists once the SQLite transaction that inserted it has committed
   (WAL mode, `synchronous=FULL`: COMMIT returns after the WAL is fsynced). `append()` returns a
   future that resolves only then; whoever acknowledges anything upstream (a PLC handshake, a
   command reply) awaits it first. A crash at any instant loses nothing that was committed.
2. `seq` is assigned inside the committing transaction, strictly increasing by one: no gaps, no
   reuse. The next value is stored in the same transaction (table `meta`), so an emptied outbox
   continues from it after a restart. `event_id` is fixed before commit and stored with the row.
3. Rows leave only after the broker's PUBACK (`ack()`), by range deletes that ride along with a
   later transaction. A crash between PUBACK and delete re-sends the row: duplicates always carry
   the same `event_id` and `seq`. What is published is the stored payload, byte for byte.
4. Group commit: a single writer thread; whatever is appended while a commit is in flight goes
   into the next transaction (up to `commit_max_events`). That is how it is fast *and* durable.
5. Quota (rows and payload bytes). When full, `append()` waits: back-pressure, never eviction of
   unsent rows and never a silent drop. A small reserve above the quota is kept for the gateway's
   own events (`outbox.full`, `gap`, `device.state`) so that the state is always recorded. Sources
   that cannot wait (scanners, RFID) count what they could not hand over and report it as a `gap`
   event (gateway.pipeline.ObservationQueue). A full disk (SQLITE_FULL) is handled the same way:
   the batch stays pending and is retried with backoff.
6. Readers (the forwarder, `tracegate outbox`) use their own connections; WAL lets them read
   while the writer commits. Recently committed rows are also kept in a bounded in-memory tail,
   so that live events reach the forwarder without a read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

from gateway import trace_index
from gateway.events import (
    NO_STATION,
    EventContext,
    HandshakeMark,
    TraceEvent,
    compose,
    render_members,
)
from gateway.log import Throttle, get_logger
from gateway.metrics import LATENCY_BUCKETS_S, Histogram
from gateway.trace_index import Change, PoolBlock, TraceView

log = get_logger(__name__)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    station TEXT NOT NULL,
    time REAL NOT NULL,
    recorded REAL NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS handshakes (
    station TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    data_hash TEXT NOT NULL,
    verdict INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES ('next_seq', 1);
INSERT OR IGNORE INTO meta VALUES ('schema_version', 1);
"""

RECENT_ROWS = 8192  # in-memory tail of committed rows handed to the forwarder without a read
ACK_BATCH = 512  # acks that are worth a transaction of their own right away
ACK_LINGER_S = 0.05  # otherwise deletes wait this long for company
NO_PAGE_LIMIT = 4294967294
SLOW_COMMIT_MS = 1000  # a commit (fsync included) slower than this says the disk is in trouble


class Row(NamedTuple):
    """A committed event as stored and published."""

    seq: int
    station: str
    type: str
    recorded: float
    payload: bytes


@dataclass(slots=True)
class _Ticket:
    """One append() call: resolved with its seqs once all its events are committed."""

    future: asyncio.Future[list[int]]
    remaining: int
    seqs: list[int]


@dataclass(slots=True)
class _Pending:
    event_id: str
    type: str
    station: str
    time: float
    members: str
    ticket: _Ticket | None
    mark: HandshakeMark | None = None
    changes: tuple[Change, ...] = ()  # trace index and durable state (gateway.trace_index)


@dataclass(frozen=True, slots=True)
class Stats:
    rows: int
    bytes: int
    next_seq: int
    pending: int
    full: bool
    max_rows: int
    max_bytes: int
    commits: int
    last_commit_ms: float
    write_error: str | None
    acked: int = 0  # of `rows`, PUBACKed already: deleted with the next transaction


@dataclass(frozen=True, slots=True)
class Backlog:
    """What the status page and metrics show of the file and the oldest waiting row."""

    oldest_recorded: float | None  # when the oldest row still waiting for its PUBACK committed
    file_bytes: int  # database file plus its WAL
    disk_free_bytes: int | None  # free space of the file system the journal is on


class JournalError(Exception):
    """The journal file cannot be used (not a journal, corrupt, unreadable)."""


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection with the journal's pragmas. Read-only connections serve readers and the
    `tracegate outbox` commands while the daemon writes."""
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class Journal:
    """The outbox. Create with `await Journal.open(...)`, run `run()` as a task, `close()` last."""

    def __init__(
        self,
        path: Path,
        ctx: EventContext,
        *,
        max_rows: int,
        max_bytes: int,
        warn_at_percent: int = 80,
        commit_max_events: int = 4096,
        max_file_pages: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.ctx = ctx
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._warn_rows = max_rows * warn_at_percent // 100
        self._warn_bytes = max_bytes * warn_at_percent // 100
        self._reserve_rows = max(100, max_rows // 100)
        self._reserve_bytes = max(1 << 20, max_bytes // 100)
        self._commit_max = commit_max_events
        self._max_pending = max(4 * commit_max_events, 1024)
        self._clock = clock
        self._max_file_pages = max_file_pages
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="journal-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="journal-reader")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._pending: deque[_Pending] = deque()
        self._acked: dict[int, int] = {}  # seq -> payload size, PUBACKed, delete not committed
        self.handshake_marks: dict[str, HandshakeMark] = {}  # as found at open
        self.state: dict[str, str] = {}  # durable state as found at open (work orders, pools)
        self.pool_blocks: list[PoolBlock] = []  # likewise
        self._gone: set[int] = set()  # deleted seqs still inside the recent tail
        self.recent: deque[Row] = deque(maxlen=RECENT_ROWS)
        self._rows = 0
        self._bytes = 0
        self._next_seq = 1
        self._wakeup = asyncio.Event()
        self._appended = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._committed = asyncio.Event()  # pulsed after every commit (readers wait on it)
        self._full = False
        self._high = False
        self._commits = 0
        self._last_commit_ms = 0.0
        self.commit_seconds = Histogram(LATENCY_BUCKETS_S)  # one observation per transaction
        self._write_error: str | None = None
        self._write_throttle = Throttle(log, "journal_write_failed")
        self._slow_throttle = Throttle(log, "journal_commit_slow")
        self.busy_since: float | None = None  # monotonic start of the commit in flight
        self._listeners: list[Callable[[], None]] = []

    # --- opening / closing -------------------------------------------------------------------

    @classmethod
    async def open(cls, path: Path, ctx: EventContext, **kwargs: Any) -> Journal:
        j = cls(path, ctx, **kwargs)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(j._writer, j._open_sync)
        except BaseException:
            j._shutdown_executors()
            raise
        j._update_full()  # on the loop: a journal full at start records that as an event
        return j

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = connect(self.path)
            conn.executescript(_SCHEMA + trace_index.SCHEMA)
            if self._max_file_pages is not None:
                conn.execute(f"PRAGMA max_page_count={int(self._max_file_pages)}")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise JournalError(f"journal {self.path} failed its integrity check: {check}")
            version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if version[0] != SCHEMA_VERSION:
                raise JournalError(
                    f"journal {self.path} has schema {version[0]}, "
                    f"this version reads {SCHEMA_VERSION}"
                )
            self._next_seq = int(
                conn.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0]
            )
            rows, size = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox"
            ).fetchone()
            columns = {r[1] for r in conn.execute("PRAGMA table_info(handshakes)")}
            if "written" not in columns:  # journals made before commissioning existed
                conn.execute("ALTER TABLE handshakes ADD COLUMN written TEXT")
            self.handshake_marks = {
                r[0]: HandshakeMark(
                    r[0], r[1], r[2], r[3], tuple(map(tuple, json.loads(r[4] or "[]")))
                )
                for r in conn.execute(
                    "SELECT station, event_id, data_hash, verdict, written FROM handshakes"
                )
            }
            self.state = trace_index.load_state(conn)
            self.pool_blocks = trace_index.load_pool_blocks(conn)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from exc
        self._wconn = conn
        self._rconn = connect(self.path, readonly=True)
        self._rows, self._bytes = int(rows), int(size)
        log.info(
            "journal_opened",
            path=str(self.path),
            rows=self._rows,
            bytes=self._bytes,
            next_seq=self._next_seq,
        )

    async def close(self) -> None:
        """Commit what is pending (and pending deletes), then close. Idempotent."""
        if self._wconn is not None:
            with contextlib.suppress(JournalError):
                await self._drain()
        loop = asyncio.get_running_loop()
        if self._wconn is not None:
            wconn, self._wconn = self._wconn, None
            await loop.run_in_executor(self._writer, wconn.close)
        if self._rconn is not None:
            rconn, self._rconn = self._rconn, None
            await loop.run_in_executor(self._reader, rconn.close)
        self._shutdown_executors()

    def _shutdown_executors(self) -> None:
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)

    def set_file_page_limit(self, pages: int | None) -> None:
        """Change the hard cap on the file (journal.max_file_mib); None lifts it. SQLite reports
        SQLITE_FULL beyond it, which the journal handles exactly like a full disk."""
        limit = NO_PAGE_LIMIT if pages is None else int(pages)

        def apply() -> None:
            assert self._wconn is not None
            self._wconn.execute(f"PRAGMA max_page_count={limit}")

        self._writer.submit(apply)
        self._wakeup.set()

    # --- appending ---------------------------------------------------------------------------

    async def append(
        self,
        events: Sequence[TraceEvent],
        *,
        reserve: bool = False,
        marks: Sequence[HandshakeMark] = (),
        changes: Sequence[Change] = (),
    ) -> asyncio.Future[list[int]]:
        """Queue events for the next commit; returns a future of their seqs, resolved once
        committed. `marks` and `changes` are written in the transaction of the event they name.
        Waits first while the outbox is full (unless `reserve`, for the gateway's own events) or
        too much is pending."""
        while not self._may_append(reserve):
            self._space.clear()
            await self._space.wait()
        return self._enqueue(events, marks, changes)

    def _enqueue(
        self,
        events: Sequence[TraceEvent],
        marks: Sequence[HandshakeMark] = (),
        changes: Sequence[Change] = (),
    ) -> asyncio.Future[list[int]]:
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        if not events:
            future.set_result([])
            return future
        ticket = _Ticket(future, len(events), [])
        ctx = self.ctx
        by_event = {m.event_id: m for m in marks}
        changed: dict[str, list[Change]] = {}
        for c in changes:
            changed.setdefault(c.event_id, []).append(c)
        self._pending.extend(
            _Pending(
                ev.event_id,
                ev.type,
                ev.station or NO_STATION,
                ev.time,
                render_members(ev, ctx),
                ticket,
                by_event.get(ev.event_id),
                tuple(changed.get(ev.event_id, ())) if changed else (),
            )
            for ev in events
        )
        self._wakeup.set()
        self._appended.set()
        return future

    async def prune_trace(self, before: float) -> int:
        """Forget units of the trace index last seen before `before` (trace.retention_days)."""
        assert self._wconn is not None
        conn = self._wconn
        n = await asyncio.get_running_loop().run_in_executor(
            self._writer, trace_index.prune, conn, before
        )
        if n:
            log.info("trace_pruned", units=n, before=before)
        return n

    def trace_view(self) -> TraceView:
        """The binder's view of the trace index (gateway.trace_index), on a connection of its
        own, read-only, used from the loop thread (point queries)."""
        return TraceView(connect(self.path, readonly=True))

    async def commit(
        self,
        events: Sequence[TraceEvent],
        *,
        reserve: bool = False,
        marks: Sequence[HandshakeMark] = (),
    ) -> list[int]:
        """Append and wait until committed."""
        return await (await self.append(events, reserve=reserve, marks=marks))

    def _may_append(self, reserve: bool) -> bool:
        if len(self._pending) >= self._max_pending:
            return False
        rows = self._rows + len(self._pending)
        if reserve:
            return (
                rows < self.max_rows + self._reserve_rows
                and self._bytes < self.max_bytes + self._reserve_bytes
            )
        return not self._full and rows < self.max_rows

    # --- acknowledging (forwarder) ------------------------------------------------------------

    def ack(self, rows: Iterable[tuple[int, int]]) -> None:
        """(seq, payload size) pairs the broker has PUBACKed: deleted in a coming transaction
        (with the next events, or after a short linger that gathers many acks into one)."""
        for seq, size in rows:
            self._acked[seq] = size
        self._wakeup.set()

    async def flush(self) -> None:
        """Return once everything appended and acked so far is committed (and deleted)."""
        while self._pending or self._acked:
            self._wakeup.set()
            self._committed.clear()
            await self._committed.wait()

    def is_delivered(self, seq: int) -> bool:
        return seq in self._acked or seq in self._gone

    # --- reading (forwarder) ------------------------------------------------------------------

    @property
    def committed_seq(self) -> int:
        """Highest committed seq (0 when none ever was)."""
        return self._next_seq - 1

    async def wait_committed(self, after_seq: int) -> None:
        """Return once a seq above `after_seq` has been committed."""
        while self.committed_seq <= after_seq:
            self._committed.clear()
            await self._committed.wait()

    async def read(
        self, after_seq: int, limit: int, until_seq: int | None = None
    ) -> tuple[list[Row], int]:
        """Committed, undelivered rows with `after_seq < seq <= until_seq`, oldest first, and
        the highest seq looked at (the caller's next `after_seq`: delivered rows are skipped).
        Served from the in-memory tail when it covers the range, else from the database."""
        top = self.committed_seq if until_seq is None else min(until_seq, self.committed_seq)
        if top <= after_seq:
            return [], after_seq
        recent = self.recent
        if recent and recent[0].seq <= after_seq + 1:
            start = after_seq + 1 - recent[0].seq
            window = [r for r in islice(recent, start, start + limit) if r.seq <= top]
            if window:
                return (
                    [r for r in window if r.seq not in self._acked and r.seq not in self._gone],
                    window[-1].seq,
                )
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(self._reader, self._read_sync, after_seq, top, limit)
        if not rows:
            return [], top
        return [r for r in rows if r.seq not in self._acked], rows[-1].seq

    def _read_sync(self, after_seq: int, top: int, limit: int) -> list[Row]:
        assert self._rconn is not None
        cur = self._rconn.execute(
            "SELECT seq, station, type, recorded, payload FROM outbox "
            "WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (after_seq, top, limit),
        )
        return [Row(*r) for r in cur]

    async def first_undelivered(self) -> int:
        """The lowest seq still waiting for delivery, or committed_seq + 1 when none."""
        after = 0
        while True:
            rows, scanned = await self.read(after, 256)
            if rows:
                return rows[0].seq
            if scanned >= self.committed_seq or scanned == after:
                return self.committed_seq + 1
            after = scanned

    async def backlog(self) -> Backlog:
        """The oldest undelivered row's commit time, the file's size and the disk's free space,
        read on the reader thread (a few point reads: the oldest rows by seq, two stats)."""
        loop = asyncio.get_running_loop()
        after = 0
        oldest: float | None = None
        while oldest is None and self._rconn is not None:
            rows = await loop.run_in_executor(self._reader, self._oldest_sync, after)
            if not rows:
                break
            # Skip rows PUBACKed whose delete has not committed yet.
            oldest = next((rec for seq, rec in rows if not self.is_delivered(seq)), None)
            after = rows[-1][0]
        file_bytes, free = await loop.run_in_executor(self._reader, self._disk_sync)
        return Backlog(oldest, file_bytes, free)

    def _oldest_sync(self, after_seq: int) -> list[tuple[int, float]]:
        assert self._rconn is not None
        cur = self._rconn.execute(
            "SELECT seq, recorded FROM outbox WHERE seq > ? ORDER BY seq LIMIT 256", (after_seq,)
        )
        return [(int(r[0]), float(r[1])) for r in cur]

    def _disk_sync(self) -> tuple[int, int | None]:
        size = 0
        for p in (self.path, self.path.with_name(self.path.name + "-wal")):
            with contextlib.suppress(OSError):
                size += p.stat().st_size
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return size, None
        return size, st.f_bavail * st.f_frsize

    def add_listener(self, fn: Callable[[], None]) -> None:
        """`fn()` is called on the loop after every commit (the forwarder's wake-up)."""
        self._listeners.append(fn)

    # --- the writer loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Group commit loop. Cancel it to stop; `close()` then commits what is left."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._pending and len(self._acked) < ACK_BATCH and not self._full:
                # Only deletes to do: linger so that one transaction carries many of them, but
                # never keep a new event waiting for that.
                self._appended.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(ACK_LINGER_S):
                        await self._appended.wait()
            await self._drain()

    async def _drain(self) -> None:
        """Commit until nothing is pending. Retries failed commits with backoff (disk full,
        I/O error); the batch stays pending meanwhile (appends wait once it is large)."""
        delay = 0.05
        while self._pending or self._acked:
            try:
                await self._commit_once()
            except sqlite3.DatabaseError as exc:
                self._write_error = str(exc)
                self._write_throttle.hit(
                    error=str(exc), path=str(self.path), pending=len(self._pending)
                )
                if not self._full:
                    self._set_full(True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                if self._write_error is not None:
                    self._write_error = None
                    self._write_throttle.clear(path=str(self.path))
                delay = 0.05

    async def _commit_once(self) -> None:
        n = min(len(self._pending), self._commit_max)
        batch = [self._pending[i] for i in range(n)]
        acked = dict(self._acked)
        ranges = _runs(sorted(acked))
        loop = asyncio.get_running_loop()
        started = self.busy_since = time.monotonic()
        job = loop.run_in_executor(self._writer, self._txn_sync, batch, ranges, self._clock())
        try:
            rows = await asyncio.shield(job)
        except asyncio.CancelledError:
            # The transaction runs on in its thread and may commit: account for it before
            # giving up, or close() would commit the same events again under new seqs.
            with contextlib.suppress(sqlite3.DatabaseError):
                self._committed_batch(n, batch, acked, await job)
            raise
        finally:
            self.busy_since = None
        elapsed = time.monotonic() - started
        self.commit_seconds.observe(elapsed)
        self._last_commit_ms = elapsed * 1000
        if self._last_commit_ms > SLOW_COMMIT_MS:
            self._slow_throttle.hit(ms=round(self._last_commit_ms), events=n, path=str(self.path))
        self._committed_batch(n, batch, acked, rows)

    def _committed_batch(
        self,
        n: int,
        batch: list[_Pending],
        acked: dict[int, int],
        rows: list[Row],
    ) -> None:
        self._commits += 1
        for _ in range(n):
            self._pending.popleft()
        for seq in acked:
            del self._acked[seq]
        recent_start = self.recent[0].seq if self.recent else 0
        self._rows += len(rows) - len(acked)
        self._bytes += sum(len(r.payload) for r in rows) - sum(acked.values())
        self._gone.update(s for s in acked if s >= recent_start)
        self.recent.extend(rows)
        if self._gone and self.recent:
            floor = self.recent[0].seq
            self._gone = {s for s in self._gone if s >= floor}
        for p, row in zip(batch, rows, strict=True):
            t = p.ticket
            if t is not None:
                t.seqs.append(row.seq)
                t.remaining -= 1
                if t.remaining == 0 and not t.future.done():
                    t.future.set_result(t.seqs)
        self._committed.set()
        for fn in self._listeners:
            fn()
        self._update_full()

    def _txn_sync(
        self,
        batch: list[_Pending],
        ranges: list[tuple[int, int]],
        now: float,
    ) -> list[Row]:
        conn = self._wconn
        assert conn is not None
        seq0 = self._next_seq
        rows: list[Row] = []
        params = []
        for i, p in enumerate(batch):
            seq = seq0 + i
            payload = compose(seq, now, p.members).encode()
            rows.append(Row(seq, p.station, p.type, now, payload))
            params.append((seq, p.event_id, p.type, p.station, p.time, now, payload))
        conn.execute("BEGIN IMMEDIATE")
        try:
            if params:
                trace_index.insert_many(conn, "outbox", 7, params)
                conn.execute("UPDATE meta SET value=? WHERE key='next_seq'", (seq0 + len(params),))
            if ranges:
                conn.executemany("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", ranges)
            marks = [
                (m.station, m.event_id, m.data_hash, m.verdict, _written(m))
                for m in (p.mark for p in batch)
                if m is not None
            ]
            if marks:  # in the transaction of their events: see gateway.binding.cycles
                conn.executemany(
                    "INSERT OR REPLACE INTO handshakes (station, event_id, data_hash, verdict, "
                    "written) VALUES (?,?,?,?,?)",
                    marks,
                )
            changed = [
                (row.seq, p.time, row.payload, p.changes)
                for p, row in zip(batch, rows, strict=True)
                if p.changes
            ]
            if changed:  # likewise: see gateway.trace_index
                trace_index.write(conn, changed)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._next_seq = seq0 + len(params)  # only once committed: a failed batch keeps its seqs
        return rows

    # --- quota -------------------------------------------------------------------------------

    def _update_full(self) -> None:
        """Full at the quota (or on a write error); not full again only once drained below
        `warn_at_percent`: the hysteresis keeps a line at the quota from flapping between
        full and ok with every batch."""
        high = self._rows >= self._warn_rows or self._bytes >= self._warn_bytes
        over = self._rows >= self.max_rows or self._bytes >= self.max_bytes
        full = self._write_error is not None or over or (self._full and high)
        if full != self._full:
            self._set_full(full)
        if high and not self._high:
            log.warning(
                "outbox_high",
                rows=self._rows,
                bytes=self._bytes,
                max_rows=self.max_rows,
                max_bytes=self.max_bytes,
            )
        self._high = high
        self._space.set()  # waiters re-check their own condition

    def _set_full(self, full: bool) -> None:
        """Quota or disk state changed: log it and record it as an `outbox.state` event (from the
        reserve, so the record exists whatever the quota says)."""
        self._full = full
        reason = (
            "write_error"
            if self._write_error is not None
            else "max_rows"
            if self._rows >= self.max_rows
            else "max_mib"
            if self._bytes >= self.max_bytes
            else None
        )
        detail = {
            "state": "full" if full else "ok",
            "rows": self._rows,
            "bytes": self._bytes,
            "max_rows": self.max_rows,
            "max_bytes": self.max_bytes,
        }
        if full:
            log.warning(
                "outbox_full",
                **detail,
                reason=reason,
                write_error=self._write_error,
                policy="new events wait; devices that cannot wait report a gap",
            )
        else:
            log.info("outbox_recovered", **detail)
        self._enqueue([TraceEvent("outbox.state", self._clock(), reason=reason, detail=detail)])

    @property
    def full(self) -> bool:
        return self._full

    def stats(self) -> Stats:
        return Stats(
            self._rows,
            self._bytes,
            self._next_seq,
            len(self._pending),
            self._full,
            self.max_rows,
            self.max_bytes,
            self._commits,
            self._last_commit_ms,
            self._write_error,
            len(self._acked),
        )


def _written(mark: HandshakeMark) -> str | None:
    return json.dumps([list(w) for w in mark.written]) if mark.written else None


def _runs(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted seqs -> contiguous (first, last) ranges, for range deletes."""
    out: list[tuple[int, int]] = []
    for s in seqs:
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out
