"""The `tracegate` command (also `python -m gateway`).

    tracegate run -c LINE.yaml          the daemon, in the foreground (what systemd starts)
    tracegate check -c LINE.yaml        validate; every problem as FILE:LINE:COL: path: message
    tracegate schema                    JSON Schema of the line file (for editors)
    tracegate simulate -c LINE.yaml     simulators for the devices of a line
    tracegate demo                      a bundled demo line, end to end, until Ctrl-C
    tracegate outbox stats|tail -c ...  inspect the journal (also while the daemon runs)
    tracegate trace -c LINE.yaml ID     what the line recorded of one unit (--json)
    tracegate status -c LINE.yaml       devices, work order, backlog, last events
    tracegate service install|upgrade|uninstall    as a systemd service on a line PC

Exit codes: 0 clean stop, 78 configuration error (EX_CONFIG; systemd does not restart it),
74 journal unusable (EX_IOERR), 70 an internal error (logged as `gateway_crashed`); anything
other than 0 and 78 makes systemd restart the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

from gateway import __version__
from gateway.config.loader import load_or_report

EX_OK = 0
EX_CONFIG = 78
EX_IOERR = 74
EX_USAGE = 64
EX_SOFTWARE = 70


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tracegate", description="Edge gateway for product serialization and traceability."
    )
    p.add_argument("--version", action="version", version=f"tracegate {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "-c", "--config", required=True, type=Path, metavar="LINE.yaml", help="the line file"
        )

    sp = sub.add_parser("run", help="run the gateway in the foreground")
    with_config(sp)
    sp.add_argument("--log-format", choices=["json", "console"], help="override gateway.log_format")
    sp.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="override gateway.log_level",
    )

    sp = sub.add_parser("check", help="validate a line file and its profiles")
    with_config(sp)

    sub.add_parser("schema", help="print the JSON Schema of the line file")

    sp = sub.add_parser("simulate", help="start simulators for the devices of a line")
    with_config(sp)
    sp.add_argument("--rate", type=float, default=1.0, help="codes per second per scanner")

    sp = sub.add_parser("demo", help="run the bundled demo line end to end")
    sp.add_argument(
        "--broker",
        metavar="HOST:PORT",
        help="use this broker instead of starting a private Mosquitto",
    )
    sp.add_argument("--rate", type=float, default=2.0, help="scans per second per scanner")
    sp.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: until Ctrl-C)",
    )

    sp = sub.add_parser("trace", help="backward and forward trace of one unit, from the journal")
    with_config(sp)
    sp.add_argument("id", help="a scanned code, an EPC (hex) or a canonical key")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    # Commands whose arguments live beside their code (gateway/status_cli.py, gateway/service.py).
    import gateway.service
    import gateway.status_cli

    gateway.status_cli.add_parser(sub, with_config)
    gateway.service.add_parser(sub)

    sp = sub.add_parser("outbox", help="inspect the journal")
    osub = sp.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    st = osub.add_parser("stats", help="how much is waiting, how old, quota use")
    with_config(st)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    tl = osub.add_parser("tail", help="the newest events waiting in the outbox")
    with_config(tl)
    tl.add_argument("-n", type=int, default=10, help="how many (default 10)")
    tl.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "schema":
            return _schema()
        if args.command == "check":
            return _check(args.config)
        if args.command == "run":
            return _run(args)
        if args.command == "outbox":
            import gateway.outbox_cli

            return gateway.outbox_cli.main(args)
        if args.command == "trace":
            import gateway.trace_cli

            return gateway.trace_cli.main(args)
        if args.command == "status":
            import gateway.status_cli

            return gateway.status_cli.main(args)
        if args.command == "service":
            import gateway.service

            return gateway.service.main(args)
        if args.command == "simulate":
            import gateway.simulate

            return gateway.simulate.simulate_main(args)
        if args.command == "demo":
            import gateway.demo

            return gateway.demo.demo_main(args)
    except KeyboardInterrupt:
        return 130
    return EX_USAGE  # pragma: no cover - argparse requires a command


def _schema() -> int:
    from gateway.config.models import LineConfig

    schema = LineConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Tracegate line file"
    print(json.dumps(schema, indent=2))
    return EX_OK


def _check(path: Path) -> int:
    loaded = load_or_report(path)
    if loaded is None:
        return EX_CONFIG
    cfg = loaded.config
    print(
        f"{path}: valid; gateway {cfg.gateway.id}, line {cfg.gateway.line}, "
        f"{len(cfg.devices)} device(s), {len(cfg.stations)} station(s), "
        f"config {loaded.config_hash}"
    )
    return EX_OK


def _run(args: argparse.Namespace) -> int:
    from gateway import log

    loaded = load_or_report(args.config)
    if loaded is None:
        return EX_CONFIG
    g = loaded.config.gateway
    log.configure(args.log_level or g.log_level, args.log_format or g.log_format)
    from gateway.app import Gateway
    from gateway.journal import JournalError

    try:
        asyncio.run(Gateway(loaded).run())
    except JournalError as exc:
        log.get_logger("gateway.cli").critical("journal_unusable", error=str(exc))
        return EX_IOERR
    except Exception:  # noqa: BLE001 - a bug: one structured record of it, then systemd restarts
        log.get_logger("gateway.cli").exception("gateway_crashed")
        return EX_SOFTWARE
    return EX_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
