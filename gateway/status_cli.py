"""`tracegate status -c LINE.yaml [--json] [--watch]`: the line's status as its status page
shows it, in a terminal.

It asks the running gateway (GET /status.json on the line file's `status` address) and prints
devices, work orders, the journal backlog and the last events and rejects. When nothing answers,
it says so and still shows the journal backlog, read from the file as `tracegate outbox stats`
does (read-only, its own connection). Exit 0 when the gateway answered, 3 when it did not (the
LSB convention of `status`: not running), 78 for a bad line file.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import Any

from gateway.config.models import LineConfig, StatusConfig

EX_NOT_RUNNING = 3
TIMEOUT_S = 3.0
WATCH_EVERY_S = 1.0


def add_parser(
    sub: Any, with_config: Callable[[argparse.ArgumentParser], None] | None = None
) -> None:
    sp = sub.add_parser(
        "status", help="devices, work order, journal backlog, last events (the status page)"
    )
    if with_config is not None:
        with_config(sp)
    sp.add_argument("--json", action="store_true", help="the status document, as JSON")
    sp.add_argument("--watch", action="store_true", help="refresh every second until Ctrl-C")


def main(args: argparse.Namespace) -> int:
    from gateway.cli import EX_CONFIG
    from gateway.config.loader import load_or_report

    loaded = load_or_report(args.config)
    if loaded is None:
        return EX_CONFIG
    cfg = loaded.config
    if not args.watch:
        return _once(cfg, args.json)
    try:
        while True:
            if not args.json:
                print("\x1b[H\x1b[2J", end="")  # clear the terminal, cursor home
            _once(cfg, args.json)
            sys.stdout.flush()
            time.sleep(WATCH_EVERY_S)  # a terminal follower: polling is the simple, safe way
    except KeyboardInterrupt:
        return 0


def _once(cfg: LineConfig, as_json: bool) -> int:
    doc, why = fetch(cfg.status)
    if doc is not None:
        print(json.dumps(doc, indent=2) if as_json else render(doc))
        return 0
    backlog = journal_backlog(cfg)
    if as_json:
        print(json.dumps({"running": False, "reason": why, "journal": backlog}, indent=2))
    else:
        print(f"gateway {cfg.gateway.id} (line {cfg.gateway.line}) is not running: {why}")
        print(_backlog_text(backlog))
    return EX_NOT_RUNNING


def fetch(sc: StatusConfig) -> tuple[dict[str, Any] | None, str]:
    """The running gateway's status document, or None and why there is none."""
    if not sc.enabled:
        return None, "its status page is off (status.enabled: false), so it cannot be asked"
    if sc.port == 0:
        return None, "status.port is 0 (a free port chosen at start): set a port to ask it"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(sc.listen_host, sc.listen_host)
    where = f"{host}:{sc.port} (status.listen_host, status.port)"
    conn = http.client.HTTPConnection(host, sc.port, timeout=TIMEOUT_S)
    try:
        conn.request("GET", "/status.json")
        resp = conn.getresponse()
        body = resp.read()
    except ConnectionRefusedError:
        return None, f"nothing listens on {where}"
    except OSError as exc:
        return None, f"no answer from {where}: {exc}"
    except http.client.HTTPException as exc:
        return None, f"not a status server on {where}: {exc!r}"
    finally:
        conn.close()
    if resp.status != 200:
        return None, f"{where} answered HTTP {resp.status}, not the status document"
    try:
        doc = json.loads(body)
    except ValueError:
        return None, f"{where} answered something that is not the status document"
    if not isinstance(doc, dict) or doc.get("schema") != "tracegate.status/1":
        return None, f"{where} answered something that is not a Tracegate status document"
    return doc, ""


def journal_backlog(cfg: LineConfig) -> dict[str, Any] | None:
    """What waits in the journal, read from the file (None when there is no journal yet)."""
    from gateway.journal import connect
    from gateway.outbox_cli import stats

    jc = cfg.journal
    if not jc.path.exists():
        return None
    try:
        conn = connect(jc.path, readonly=True)
        try:
            return stats(conn, jc.path, jc.max_rows, jc.max_mib * 1024 * 1024)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return {"path": str(jc.path), "error": str(exc)}


def _backlog_text(b: dict[str, Any] | None) -> str:
    if b is None:
        return "journal   none yet (the gateway creates it when it first starts)"
    if "error" in b:
        return f"journal   {b['path']}: cannot be read: {b['error']}"
    text = (
        f"journal   {b['waiting']:,} events waiting ({b['quota_used_percent']} % of quota)"
        f"{'  FULL' if b['full'] else ''}, next seq {b['next_seq']}"
    )
    if b["waiting"]:
        text += f"\noldest    {b['oldest_recorded']} ({_age(b['oldest_age_s'])})"
    return text


# --- the terminal rendering --------------------------------------------------------------------


def render(doc: dict[str, Any]) -> str:
    g, b, j = doc["gateway"], doc["broker"], doc["journal"]
    out = [
        f"Tracegate {g['line']}  gateway {g['id']}  site {g['site']}  config {g['config']}  "
        f"v{g['version']}  up {_duration(g['uptime_s'])}",
        f"health    {'healthy' if g['healthy'] else 'STUCK (pipelines make no progress)'}",
        f"broker    {'connected' if b['connected'] else 'DOWN'} {b['host']}:{b['port']}"
        + (f"  in flight {b.get('inflight', 0)}/{b.get('window', 0)}" if b["connected"] else "")
        + ("  replaying backlog" if b.get("replaying") else "")
        + ("" if b["connected"] or not b.get("last_error") else f"  ({b['last_error']})"),
        "",
        "DEVICES",
    ]
    out += _table(
        ["device", "kind", "state", "last read", "reads/s", "reads", "errors", "detail"],
        [
            [
                d["id"],
                d["kind"],
                d["state"],
                _age(d["last_read_age_s"]),
                f"{d['reads_per_s']:.1f}",
                str(d["reads"]),
                ", ".join(f"{k} {n}" for k, n in d["errors"].items()) or "-",
                d["detail"][:60],
            ]
            for d in doc["devices"]
        ],
    )
    wo = doc["work_orders"]
    line = wo["line"]
    out += ["", "WORK ORDER" + (f"  line: {line['work_order']}" if line else "  line: none set")]
    out += _table(
        ["station", "work order", "set by", "product", "lot"],
        [
            [
                s["station"],
                s["work_order"] or "none",
                s["source"] or "-",
                s["product"] or "-",
                s["lot"] or "-",
            ]
            for s in wo["stations"]
        ],
    )
    oldest = j.get("oldest_unsent_age_s")
    out += [
        "",
        f"JOURNAL   {j['waiting']:,} events waiting"
        + (f" (+{j['pending']} committing)" if j.get("pending") else "")
        + f", {j['quota_used_percent']} % of quota{'  FULL' if j['full'] else ''}, "
        + ("nothing unsent" if oldest is None else f"oldest unsent {_age(oldest)}")
        + f", last seq {j['committed_seq']:,}",
    ]
    if j.get("write_error"):
        out.append(f"          write error: {j['write_error']}")
    out += ["", "LAST EVENTS"]
    out += _table(
        ["time", "seq", "type", "station", "identity", "result", "work order"],
        [
            [
                (e["time"] or "")[11:23],
                str(e["seq"]),
                e["type"] or "",
                e["station"] or "-",
                " ".join(e["ids"]) or (f"{e['device']} {e['state'] or ''}" if e["device"] else ""),
                e["result"] or e["reason"] or "",
                e["work_order"] or "",
            ]
            for e in doc["events"]["recent"][:10]
        ],
    )
    out += ["", "LAST REJECTS"]
    out += _table(
        ["time", "station", "reason", "code", "why"],
        [
            [
                r["time"][11:23],
                r["station"] or "-",
                r["reason"] or "?",
                " ".join(r["ids"])[:40],
                (r["message"] or "")[:60],
            ]
            for r in doc["rejects"]["recent"][:10]
        ],
    )
    p = doc["process"]
    rss = p["rss_bytes"]
    out += [
        "",
        f"process   RSS {rss / 1048576:.1f} MiB, loop lag {p['loop_lag_ms']} ms "
        f"(max {p['loop_lag_max_ms']} ms)"
        if rss is not None
        else f"process   loop lag {p['loop_lag_ms']} ms",
    ]
    return "\n".join(out)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["  (none)"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]


def _age(s: float | None) -> str:
    if s is None:
        return "never"
    if s < 60:
        return f"{s:.1f} s ago"
    if s < 3600:
        return f"{s / 60:.0f} min ago"
    return f"{s / 3600:.1f} h ago"


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"
