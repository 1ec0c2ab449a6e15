"""`tracegate trace -c LINE.yaml ID`: the backward and forward trace of one unit, from the local
trace index (gateway.trace_index), for a line technician; `--json` for machines.

Read-only, on its own connection: works while the daemon runs, and with the broker down. ID is
what one has in hand: a scanned code (GS1 element string with or without AIM prefix, Digital
Link URI), an RFID tag's EPC in hex, or a canonical key such as `(01)04012345123456(21)ABC`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import sys
from typing import Any

from gateway.cli import EX_CONFIG, EX_IOERR, EX_OK
from gateway.config.loader import load_or_report
from gateway.identifiers import SCHEMES, IdentifierRejected, decode_epc, parse_code
from gateway.journal import connect
from gateway.trace_index import Trace, trace

EX_NOT_FOUND = 1
_CODE_SCHEMES = frozenset(s for s in SCHEMES if s in ("sgtin", "sscc", "lgtin", "gtin"))


def main(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return EX_CONFIG
    path = loaded.config.journal.path
    if not path.exists():
        print(f"no journal at {path}: the gateway has recorded nothing here yet", file=sys.stderr)
        return EX_IOERR
    try:
        conn = connect(path, readonly=True)
    except sqlite3.Error as exc:
        print(f"cannot open journal {path}: {exc}", file=sys.stderr)
        return EX_IOERR
    try:
        found = _lookup(conn, args.id)
    except sqlite3.OperationalError as exc:
        print(f"cannot read the trace index of {path}: {exc}", file=sys.stderr)
        return EX_IOERR
    finally:
        conn.close()
    if found is None:
        print(
            f"{args.id}: not in the trace index of this line (keys tried: "
            f"{', '.join(candidates(args.id))})",
            file=sys.stderr,
        )
        return EX_NOT_FOUND
    if args.json:
        doc = {
            "key": found.key,
            "unit": found.unit,
            "events": found.events,
            "parents": found.parents,
            "children": found.children,
        }
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        print(render(found))
    return EX_OK


def candidates(text: str) -> list[str]:
    """The canonical keys `text` may stand for."""
    keys = []
    with contextlib.suppress(IdentifierRejected):
        keys.append(parse_code(text, source="cli", schemes=_CODE_SCHEMES).value)
    if all(c in "0123456789abcdefABCDEF" for c in text) and len(text) >= 16:
        decoded = decode_epc(text)
        if decoded.key:
            keys.append(decoded.key)
    keys.append(text)
    return list(dict.fromkeys(keys))


def _lookup(conn: sqlite3.Connection, text: str) -> Trace | None:
    for k in candidates(text):
        t = trace(conn, k)
        if t.unit is not None:
            return t
    return None


def render(t: Trace) -> str:
    u = t.unit or {}
    lines = [f"Unit {t.key}  ({u.get('scheme')})"]
    facts = [f"GTIN {u['gtin']}" if u.get("gtin") else "", f"serial {u['serial']}" if u.get(
        "serial") else ""]  # fmt: skip
    if any(facts):
        lines.append("  " + ", ".join(f for f in facts if f))
    if u.get("commissioned_seq") is not None:
        lines.append(f"  commissioned (event seq {u['commissioned_seq']})")
    if t.parents:
        lines.append("  inside: " + " -> ".join(t.parents))
    lines.append("")
    lines.append("History, oldest first:")
    for e in t.events:
        lines.append("  " + _event_line(e, t.key))
    if t.children:
        lines.append("")
        lines.append("Contains:")
        lines += _tree(t.children, 1)
    return "\n".join(lines)


def _event_line(e: dict[str, Any], key: str) -> str:
    when = str(e.get("time", "")).replace("T", " ").rstrip("Z")
    parts = [when, f"{e.get('station') or '-':<8}", f"{e.get('step') or '-':<14}"]
    kind = e["type"] if e.get("role") in (None, "unit") else f"{e['type']} ({e['role']})"
    parts.append(f"{kind:<24}")
    if e.get("result"):
        parts.append(e["result"])
    if e.get("reason"):
        parts.append(f"reason {e['reason']}")
    if e.get("work_order"):
        parts.append(f"WO {e['work_order']}")
    params = []
    for name, p in (e.get("parameters") or {}).items():
        unit = f" {p['unit']}" if p.get("unit") else ""
        tol = " OUT OF TOLERANCE" if p.get("in_tolerance") is False else ""
        params.append(f"{name} {p.get('value')}{unit}{tol}")
    if params:
        parts.append(", ".join(params))
    if e["type"] == "aggregated":
        children = [c["value"] for c in e.get("children", [])]
        parent = (e.get("parent") or {}).get("value")
        if e.get("role") == "parent":
            parts.append(f"{e.get('action')} {len(children)}: {', '.join(children[:5])}"
                         + (" ..." if len(children) > 5 else ""))  # fmt: skip
        else:
            parts.append(f"{e.get('action')} into {parent}")
    return "  ".join(parts)


def _tree(children: list[dict[str, Any]], depth: int) -> list[str]:
    out = []
    for c in children:
        out.append("  " * depth + f"{c['key']}  ({c['scheme']})")
        out += _tree(c["children"], depth + 1)
    return out
