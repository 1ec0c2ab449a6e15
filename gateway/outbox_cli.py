"""`tracegate outbox stats` and `tracegate outbox tail`: read the journal of a line, read-only.

They open their own read-only SQLite connection, so they work while the daemon writes (WAL lets
readers and the writer proceed together) and can never disturb it.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from gateway.cli import EX_CONFIG, EX_IOERR, EX_OK
from gateway.config.loader import load_or_report
from gateway.events import rfc3339
from gateway.journal import connect


def main(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return EX_CONFIG
    jc = loaded.config.journal
    path = jc.path
    if not path.exists():
        print(
            f"no journal at {path} yet: the gateway creates it when it first starts",
            file=sys.stderr,
        )
        return EX_IOERR
    try:
        conn = connect(path, readonly=True)
    except sqlite3.Error as exc:
        print(f"cannot open journal {path}: {exc}", file=sys.stderr)
        return EX_IOERR
    try:
        if args.outbox_command == "stats":
            return _stats(conn, path, jc.max_rows, jc.max_mib * 1024 * 1024, args.json)
        return _tail(conn, args.n, args.follow)
    except sqlite3.Error as exc:
        print(f"cannot read journal {path}: {exc}", file=sys.stderr)
        return EX_IOERR
    finally:
        conn.close()


def stats(conn: sqlite3.Connection, path: Path, max_rows: int, max_bytes: int) -> dict[str, Any]:
    rows, size, first, last, oldest = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), MIN(seq), MAX(seq), MIN(recorded) "
        "FROM outbox"
    ).fetchone()
    next_seq = conn.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0]
    wal = path.with_name(path.name + "-wal")
    by_station = conn.execute(
        "SELECT station, COUNT(*) FROM outbox GROUP BY station ORDER BY station"
    ).fetchall()
    return {
        "path": str(path),
        "file_bytes": path.stat().st_size,
        "wal_bytes": wal.stat().st_size if wal.exists() else 0,
        "waiting": rows,
        "payload_bytes": size,
        "first_seq": first,
        "last_seq": last,
        "next_seq": next_seq,
        "oldest_recorded": rfc3339(oldest) if oldest is not None else None,
        "oldest_age_s": round(time.time() - oldest, 1) if oldest is not None else None,
        "max_rows": max_rows,
        "max_bytes": max_bytes,
        "quota_used_percent": round(max(rows / max_rows, size / max_bytes) * 100, 2),
        "full": rows >= max_rows or size >= max_bytes,
        "by_station": dict(by_station),
    }


def _stats(
    conn: sqlite3.Connection, path: Path, max_rows: int, max_bytes: int, as_json: bool
) -> int:
    s = stats(conn, path, max_rows, max_bytes)
    if as_json:
        print(json.dumps(s, indent=2))
        return EX_OK
    mib = 1024 * 1024
    print(
        f"journal   {s['path']} ({s['file_bytes'] / mib:.1f} MiB, WAL "
        f"{s['wal_bytes'] / mib:.1f} MiB)"
    )
    print(
        f"waiting   {s['waiting']:,} events, {s['payload_bytes'] / mib:.2f} MiB "
        f"({s['quota_used_percent']} % of quota: {max_rows:,} events / "
        f"{max_bytes // mib} MiB){'  FULL' if s['full'] else ''}"
    )
    if s["waiting"]:
        print(f"seq       {s['first_seq']}..{s['last_seq']} waiting, next {s['next_seq']}")
        print(f"oldest    {s['oldest_recorded']} ({s['oldest_age_s']} s ago)")
        for station, n in s["by_station"].items():
            print(f"  {station:<24} {n:,}")
    else:
        print(f"seq       nothing waiting, next {s['next_seq']}")
    return EX_OK


def _tail(conn: sqlite3.Connection, n: int, follow: bool) -> int:
    rows = conn.execute(
        "SELECT seq, payload FROM outbox ORDER BY seq DESC LIMIT ?", (max(n, 0),)
    ).fetchall()
    last = 0
    for seq, payload in reversed(rows):
        print(bytes(payload).decode())
        last = seq
    if not follow:
        return EX_OK
    if not rows:
        last = conn.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0] - 1
    try:
        while True:
            new = conn.execute(
                "SELECT seq, payload FROM outbox WHERE seq > ? ORDER BY seq", (last,)
            ).fetchall()
            for seq, payload in new:
                print(bytes(payload).decode(), flush=True)
                last = seq
            time.sleep(0.5)  # a terminal follower: polling the file is the simple, safe way
    except KeyboardInterrupt:
        return EX_OK
