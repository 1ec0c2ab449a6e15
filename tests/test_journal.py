"""The journal against a real SQLite file: seq, group commit, acks, quota, full disk."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.events import EventContext, TraceEvent
from gateway.journal import Journal

CTX = EventContext("gw-test", "line-1", "cafebabe0000")


def ev(i: int, station: str = "st10") -> TraceEvent:
    return TraceEvent("identified", 1_700_000_000.0 + i, station=station, step="s", detail={"i": i})


@asynccontextmanager
async def running(path: Path, **kw: Any) -> AsyncIterator[Journal]:
    kw.setdefault("max_rows", 1_000_000)
    kw.setdefault("max_bytes", 1 << 30)
    j = await Journal.open(path, CTX, **kw)
    task = asyncio.create_task(j.run())
    try:
        yield j
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await j.close()


def db_rows(path: Path) -> list[tuple[int, str, bytes]]:
    with sqlite3.connect(path) as c:
        return c.execute("SELECT seq, event_id, payload FROM outbox ORDER BY seq").fetchall()


async def test_seq_is_contiguous_and_survives_restart_even_when_emptied(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with running(path) as j:
        seqs = await j.commit([ev(i) for i in range(5)])
        assert seqs == [1, 2, 3, 4, 5]
        rows, _ = await j.read(0, 100)
        j.ack((r.seq, len(r.payload)) for r in rows)
        await j.flush()  # the deletes are committed
        await j.commit([ev(99)])
    assert [r[0] for r in db_rows(path)] == [6]
    async with running(path) as j:
        rows, _ = await j.read(0, 100)
        j.ack((r.seq, len(r.payload)) for r in rows)
        assert await j.commit([ev(100)]) == [7]
    async with running(path) as j:
        await j.flush()
        assert await j.commit([ev(101), ev(102)]) == [8, 9]  # never reused after emptying


async def test_payload_is_the_contract_and_identical_on_every_read(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    e = ev(1)
    async with running(path) as j:
        [seq] = await j.commit([e])
        mem, _ = await j.read(0, 10)
    async with running(path) as j:
        disk, _ = await j.read(0, 10)
    assert mem[0].payload == disk[0].payload
    doc = json.loads(disk[0].payload)
    assert doc["schema"] == "tracegate.event/1"
    assert doc["seq"] == seq
    assert doc["event_id"] == e.event_id
    assert doc["gateway"] == "gw-test" and doc["line"] == "line-1"
    assert doc["config"] == "cafebabe0000"
    assert doc["time"] == "2023-11-14T22:13:21.000Z"
    assert doc["recorded"].endswith("Z")


async def test_group_commit_batches_what_arrives_during_a_commit(tmp_path: Path) -> None:
    async with running(tmp_path / "j.db") as j:
        futures = [await j.append([ev(i)]) for i in range(2000)]
        seqs = [s for f in futures for s in await f]
        assert seqs == list(range(1, 2001))
        assert j.stats().commits < 200  # 2000 appends, far fewer fsynced transactions


async def test_acked_rows_are_range_deleted_and_never_read_again(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with running(path) as j:
        await j.commit([ev(i) for i in range(10)])
        rows, _ = await j.read(0, 100)
        acked = [r for r in rows if r.seq not in (4, 7)]
        j.ack((r.seq, len(r.payload)) for r in acked)
        left, scanned = await j.read(0, 100)
        assert [r.seq for r in left] == [4, 7] and scanned == 10
        await j.flush()
        assert j.stats().rows == 2
        assert [r[0] for r in db_rows(path)] == [4, 7]
        assert await j.first_undelivered() == 4


async def test_quota_holds_new_events_and_records_the_state(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with running(path, max_rows=20) as j:
        await j.commit([ev(i) for i in range(20)])  # exactly the quota
        assert j.full
        blocked = asyncio.create_task(j.commit([ev(20)]))
        # The outbox.state event comes from the reserve: the state is on record.
        await asyncio.wait_for(j.wait_committed(20), 5)
        rows, _ = await j.read(20, 10)
        assert [json.loads(r.payload)["type"] for r in rows] == ["outbox.state"]
        assert json.loads(rows[0].payload)["detail"]["state"] == "full"
        assert not blocked.done()
        first, _ = await j.read(0, 2)
        j.ack((r.seq, len(r.payload)) for r in first)
        await j.flush()
        assert j.full and not blocked.done()  # 19 rows: below the quota, above the 80 % mark
        more, _ = await j.read(2, 8)
        j.ack((r.seq, len(r.payload)) for r in more)
        assert await asyncio.wait_for(blocked, 5) != []  # drained below 80 %: taken again
        types = [json.loads(p)["type"] for _, _, p in db_rows(path)]
        assert types.count("outbox.state") == 2  # full, then ok: no flapping in between
        assert types.count("identified") == 11


async def test_full_disk_keeps_events_pending_and_resumes(tmp_path: Path) -> None:
    """SQLITE_FULL, produced for real by a page cap on the file (max_file_mib)."""
    path = tmp_path / "j.db"
    async with running(path, max_file_pages=40) as j:
        big = [
            TraceEvent("identified", 1.0, station="st", detail={"pad": "x" * 2000})
            for _ in range(200)
        ]
        pending = asyncio.create_task(j.commit(big))
        await asyncio.wait_for(_until(lambda: j.stats().write_error is not None), 10)
        assert j.full and not pending.done()
        j.set_file_page_limit(None)
        seqs = await asyncio.wait_for(pending, 10)
        assert seqs == list(range(seqs[0], seqs[0] + 200))
        assert j.stats().write_error is None
    assert sum(1 for _, _, p in db_rows(path) if b'"pad"' in p) == 200


async def test_cancelled_writer_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = await Journal.open(path, CTX, max_rows=10**6, max_bytes=1 << 30)
    task = asyncio.create_task(j.run())
    events = [ev(i) for i in range(3000)]
    for i in range(0, 3000, 100):
        await j.append(events[i : i + 100])
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await j.close()  # commits what is left
    rows = db_rows(path)
    assert [r[0] for r in rows] == list(range(1, 3001))
    assert [r[1] for r in rows] == [e.event_id for e in events]


async def _until(cond: Any) -> None:
    while not cond():
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("n", [1, 7])
async def test_read_spans_memory_tail_and_database(tmp_path: Path, n: int) -> None:
    async with running(tmp_path / "j.db") as j:
        for i in range(0, 10000, 1000):
            await j.commit([ev(k) for k in range(i, i + 1000)])
        got: list[int] = []
        after = 0
        while True:
            rows, after = await j.read(after, 997 * n)
            if not rows:
                break
            got.extend(r.seq for r in rows)
        assert got == list(range(1, 10001))


async def test_a_journal_full_at_start_says_so_and_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with running(path, max_rows=20) as j:
        await j.commit([ev(i) for i in range(20)])
    async with running(path, max_rows=20) as j:  # restarted with the broker still away
        assert j.full
        await asyncio.wait_for(j.wait_committed(21), 5)  # the first outbox.state event: 21
        rows, _ = await j.read(0, 100)
        states = [
            json.loads(r.payload)["detail"]["state"]
            for r in rows
            if json.loads(r.payload)["type"] == "outbox.state"
        ]
        assert states[-1] == "full"
        assert sum(1 for r in rows if json.loads(r.payload)["type"] == "identified") == 20


async def test_handshake_marks_commit_with_their_event_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    from gateway.events import HandshakeMark

    path = tmp_path / "j.db"
    e1, e2, e3 = ev(1, "st30"), ev(2, "st40"), ev(3, "st30")
    m1 = HandshakeMark("st30", e1.event_id, "h1", 1)
    m2 = HandshakeMark("st40", e2.event_id, "h2", 2)
    m3 = HandshakeMark("st30", e3.event_id, "h3", 1)
    async with running(path) as j:
        await j.commit([e1, e2], marks=[m1, m2])
    async with running(path) as j:
        assert j.handshake_marks == {"st30": m1, "st40": m2}
        await j.commit([e3], marks=[m3])  # a station's next cycle replaces its mark
    async with running(path) as j:
        assert j.handshake_marks == {"st30": m3, "st40": m2}
