"""The fault layer of the campaign (bench/faults/shim.c) does what docs/reliability.md says: a
power cut loses exactly the writes that were not synced, injected errors reach SQLite as the
errors a full or failing disk gives, and the wall clock moves while the monotonic one does not.

Each test drives a real child process under the layer (LD_PRELOAD), over its stdin and stdout.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.faults.layer import FaultLayer, LayerError, read_undo
from tests.helpers import ROOT

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")

CHILD = textwrap.dedent(
    """
    import os, sqlite3, sys, time
    db, sync = sys.argv[1], sys.argv[2]
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.execute("CREATE TABLE IF NOT EXISTS t (i INTEGER PRIMARY KEY, v BLOB)")
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "insert":
            for _ in range(int(arg)):  # one transaction each
                n = conn.execute("INSERT INTO t (v) VALUES (randomblob(3000))").lastrowid
            print(f"committed {n}", flush=True)
        elif cmd == "stream":
            for _ in range(int(arg)):
                n = conn.execute("INSERT INTO t (v) VALUES (randomblob(3000))").lastrowid
                print(f"committed {n}", flush=True)
        elif cmd == "try":
            try:
                conn.execute("INSERT INTO t (v) VALUES (randomblob(3000))")
                print("ok", flush=True)
            except sqlite3.Error as exc:
                print(f"error {exc}", flush=True)
        elif cmd == "checkpoint":
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            print("done", flush=True)
        elif cmd == "time":
            print(f"time {time.time()!r} {time.monotonic()!r}", flush=True)
        elif cmd == "gwclock":
            from gateway import clock
            t = clock.now()
            print(f"gwclock {t!r} {clock.to_wall(t)!r} {time.monotonic()!r}", flush=True)
        elif cmd == "plain":
            with open(arg, "w") as f:
                f.write("unsynced")
            print("done", flush=True)
    """
)


class Child:
    def __init__(self, layer: FaultLayer, db: Path, sync: str = "FULL") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), sync],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**layer.env(), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        )
        assert self.line() == "ready"

    def line(self) -> str:
        assert self.proc.stdout is not None
        out = self.proc.stdout.readline().strip()
        assert out, f"the child ended (exit {self.proc.poll()})"
        return out

    def ask(self, cmd: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.line()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


@pytest.fixture
def layer(tmp_path: Path) -> Iterator[FaultLayer]:
    journal = tmp_path / "journal"
    journal.mkdir()
    yield FaultLayer(journal, tmp_path / "layer")


def rows(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])
    except sqlite3.OperationalError:  # the table itself was never synced
        return 0
    finally:
        conn.close()


def test_a_power_cut_keeps_every_synced_commit(layer: FaultLayer) -> None:
    db = layer.journal_dir / "j.db"
    child = Child(layer, db)
    last = 0
    for burst in (40, 25, 60):  # WAL grows, is checkpointed and restarted from its beginning
        last = int(child.ask(f"insert {burst}").split()[1])
        if burst == 25:
            assert child.ask("checkpoint") == "done"
    child.kill()
    cut = layer.power_cut()
    assert rows(db) == last == 125
    assert cut.writes == 0  # synchronous=FULL: a commit returns once all of it is synced ...
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.parametrize("nth", [1, 2, 3, 5, 8, 13])
def test_a_power_cut_in_the_middle_of_a_commit_keeps_every_commit_before_it(
    layer: FaultLayer, nth: int
) -> None:
    """The process dies right after its nth write (between a write and its sync, wherever
    the nth falls in a transaction): every commit it reported is there, and nothing else."""
    db = layer.journal_dir / "j.db"
    child = Child(layer, db)
    assert child.ask("insert 20").startswith("committed")
    layer.set(die_after_writes=nth + 40)  # past the next few commits, in the middle of one
    assert child.proc.stdin is not None and child.proc.stdout is not None
    child.proc.stdin.write("stream 1000\n")
    child.proc.stdin.flush()
    reported = 20
    for out in child.proc.stdout:  # until it dies
        reported = int(out.split()[1])
    child.kill()
    assert child.proc.returncode == -9
    cut = layer.power_cut()
    assert reported < 1020 and cut.writes > 0
    assert reported <= rows(db) <= reported + 1  # the one in flight: committed or not at all
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_power_cut_loses_what_was_never_synced(layer: FaultLayer) -> None:
    db = layer.journal_dir / "j.db"
    child = Child(layer, db, sync="OFF")  # ... unlike a journal that never syncs
    child.ask("insert 30")
    plain = layer.journal_dir / "plain.txt"
    assert child.ask(f"plain {plain}") == "done"
    child.kill()
    # (Not opened before the cut: closing a connection checkpoints the WAL into the database
    # outside the layer. test_a_sigkill_without_a_cut_loses_nothing shows the page cache.)
    cut = layer.power_cut()
    assert cut.writes > 30  # each commit appended to the WAL, never synced
    assert rows(db) == 0
    assert plain.read_bytes() == b""  # created (directory entries are durable), never synced


def test_a_sigkill_without_a_cut_loses_nothing(layer: FaultLayer) -> None:
    db = layer.journal_dir / "j.db"
    child = Child(layer, db, sync="OFF")
    child.ask("insert 20")
    child.kill()
    layer.forget()
    assert rows(db) == 20


def test_a_full_disk_and_io_errors_reach_sqlite_and_pass(layer: FaultLayer) -> None:
    db = layer.journal_dir / "j.db"
    child = Child(layer, db)
    assert child.ask("try") == "ok"
    layer.set(write="enospc")
    assert child.ask("try") == "error database or disk is full"
    layer.set(write="ok", fsync="eio")
    assert child.ask("try") == "error disk I/O error"
    layer.set(fsync="ok")
    # SQLite carries on after a failed sync of the WAL (the frames are rewritten).
    assert child.ask("try") == "ok"
    child.kill()
    layer.power_cut()
    assert rows(db) == 2  # the two that succeeded, nothing of the failed ones


def test_the_wall_clock_jumps_and_the_monotonic_clock_does_not(layer: FaultLayer) -> None:
    child = Child(layer, layer.journal_dir / "j.db")
    t0, m0 = (float(x) for x in child.ask("time").split()[1:])
    layer.set(clock=3600)
    t1, m1 = (float(x) for x in child.ask("time").split()[1:])
    layer.set(clock=-3600)
    t2, m2 = (float(x) for x in child.ask("time").split()[1:])
    child.kill()
    assert 3599 < t1 - t0 - (m1 - m0) < 3601
    assert -3601 < t2 - t0 - (m2 - m0) < -3599
    assert m0 <= m1 <= m2


def test_the_gateways_clock_does_not_jump_and_events_get_the_new_wall_time(
    layer: FaultLayer,
) -> None:
    """gateway.clock under a real step of CLOCK_REALTIME: observation stamps (now) go on
    steadily, the time an event is rendered with (to_wall) follows the step."""
    child = Child(layer, layer.journal_dir / "j.db")
    n0, w0, m0 = (float(x) for x in child.ask("gwclock").split()[1:])
    layer.set(clock=3600)
    n1, w1, m1 = (float(x) for x in child.ask("gwclock").split()[1:])
    child.kill()
    assert abs((n1 - n0) - (m1 - m0)) < 0.01  # a difference of stamps: the monotonic one
    assert abs(w0 - n0) < 0.01  # no step yet: the wall clock itself
    assert abs((w1 - n1) - 3600) < 0.01  # stepped: the event's time follows


def test_an_undo_log_cut_short_is_an_error() -> None:
    with pytest.raises(LayerError, match="cut short"):
        read_undo(b"W\x01\x00\x00\x00x" + b"\x00" * 10)
