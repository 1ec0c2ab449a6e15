"""The gateway's line file for a scenario: the devices pointed at the simulators, the stations
with their rules, aggregation and commissioning, the pools. What `tracegate run` runs as the
system under test of a virtual line, and what `tracegate check` validates.

Pure: the scenario and where each simulator listens in, a line-file document out. Signal names
are the station programs' (simulators.plc_model), which the bundled PLC profiles use.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.config.loader import bundled_profiles_dir
from simulators.line_scenario import Device, Scenario, Station


@dataclass
class Endpoints:
    """Where the simulators are: device id -> TCP port (scanners, PLCs, readers), or the path
    of a serial scanner's pty link."""

    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    broker: tuple[str, int] = ("127.0.0.1", 1883)
    log_level: str = "info"
    log_format: str = "json"

    @classmethod
    def example(cls, sc: Scenario) -> Endpoints:
        """Fixed addresses on this machine, for a line file people read (the virtual line
        writes its own with the simulators' real ports)."""
        at = cls(log_level="warning", log_format="console")
        base = {"tcp_scanner": 2300, "opcua": 4840, "modbus": 5020, "llrp": 5084}
        used: dict[str, int] = {}
        for st in sc.stations:
            for dev in _devices(st):
                if dev.kind == "serial_scanner":
                    at.paths[dev.id] = f"/dev/serial/by-id/usb-demo-{dev.id}"
                else:
                    at.ports[dev.id] = base[dev.kind] + used.get(dev.kind, 0)
                    used[dev.kind] = used.get(dev.kind, 0) + 1
        return at


def device_signals(dev: Device) -> dict[str, dict[str, Any]]:
    """A PLC's signals: its profile's, with the scenario's additions."""
    doc = yaml.safe_load((bundled_profiles_dir() / f"{dev.profile}.yaml").read_text())
    base = dict((doc.get("settings") or {}).get("signals") or {})
    for name, spec in dev.signals.items():
        base[name] = {**base.get(name, {}), **spec}
    return base


def parameter_units(sc: Scenario) -> dict[str, dict[str, str | None]]:
    """Station -> parameter -> the engineering unit its signal declares."""
    out: dict[str, dict[str, str | None]] = {}
    for st in sc.stations:
        if st.plc is not None:
            signals = device_signals(st.plc)
            out[st.id] = {p.name: signals[p.name].get("unit") for p in st.parameters}
    return out


def line_document(sc: Scenario, at: Endpoints, journal: str = "journal.db") -> dict[str, Any]:
    names = sc.line
    devices = [_device(dev, at) for st in sc.stations for dev in _devices(st)]
    return {
        "gateway": {
            "id": names.gateway,
            "site": names.site,
            "line": names.line,
            "log_level": at.log_level,
            "log_format": at.log_format,
        },
        "mqtt": {
            "host": at.broker[0],
            "port": at.broker[1],
            "keepalive_s": 5,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.5,
        },
        "journal": {"path": journal},
        "supervision": {"backoff_initial_s": 0.05, "backoff_max_s": 0.5},
        "devices": devices,
        "pools": [{"id": p.id, "template": p.template, "low_water": p.low_water} for p in sc.pools],
        "stations": [_station(sc, st) for st in sc.stations],
    }


def line_text(sc: Scenario, at: Endpoints, journal: str = "journal.db") -> str:
    header = (
        f"# The line file of the virtual line {sc.line.line!r}, written by simulators.line_config\n"
        "# from its scenario: the devices point at the line's simulators.\n"
    )
    doc = line_document(sc, at, journal)
    return header + yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True)


def write_line_file(sc: Scenario, at: Endpoints, path: Path) -> Path:
    path.write_text(line_text(sc, at))
    return path


def _devices(st: Station) -> list[Device]:
    return [d for d in (st.scanner, st.plc, st.reader) if d is not None]


def _device(dev: Device, at: Endpoints) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": dev.id, "profile": dev.profile}
    port = at.ports.get(dev.id, 1)
    if dev.kind == "tcp_scanner":
        entry.update(host=at.host, port=port)
    elif dev.kind == "serial_scanner":
        entry["port"] = at.paths.get(dev.id, "/dev/null")
    elif dev.kind == "opcua":
        # The simulator offers no security; a fast publishing interval keeps the handshake
        # short (the profile's 100 ms is a real S7's minimum sampling, not a limit here).
        entry.update(
            endpoint=f"opc.tcp://{at.host}:{port}/",
            security_mode="None",
            publishing_interval_ms=20,
        )
    elif dev.kind == "modbus":
        entry.update(
            host=at.host,
            port=port,
            poll_groups={"default": {"period_ms": 20}, "handshake": {"period_ms": 10}},
        )
    elif dev.kind == "llrp":
        entry.update(host=at.host, port=port, antennas=[1, 2])
    if dev.signals:
        entry["signals"] = {name: dict(spec) for name, spec in dev.signals.items()}
    return entry


def _station(sc: Scenario, st: Station) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": st.id, "step": st.step}
    scanner = st.scanner.id if st.scanner is not None else None
    plc = st.plc.id if st.plc is not None else None
    handshake = {"device": plc, "request": "request", "ack": "ack", "verdict": "verdict"}
    parameters = [
        {"device": plc, "signal": p.name}
        | ({"min": p.min} if p.min is not None else {})
        | ({"max": p.max} if p.max is not None else {})
        for p in st.parameters
    ]
    result = {"device": plc, "signal": "result", "ok_values": [1]}
    if st.program == "label":
        doc["identity"] = {"sources": [scanner], "schemes": ["sgtin"]}
    elif st.program == "mark":
        assert st.commission is not None
        doc["handshake"] = handshake
        doc["commission"] = {
            "pool": st.commission.pool,
            "counter": "cycle_counter",
            "write": "serial",
            "gtin": st.commission.gtin,
        }
    elif st.program == "handshake":
        doc["identity"] = {"signal": {"device": plc, "signal": "part_id"}, "schemes": ["sgtin"]}
        doc.update(handshake=handshake, parameters=parameters, result=result)
    elif st.program == "trigger":
        doc["identity"] = {"sources": [scanner], "schemes": ["sgtin"]}
        doc["trigger"] = {"device": plc, "signal": "cycle_counter", "edge": "change"}
        doc["window"] = {"before_ms": st.window_ms}
        doc.update(parameters=parameters, result=result)
    elif st.program == "assembly":
        feeder = next(s for s in sc.stations if s.feeds == st.id)
        assert feeder.commission is not None
        doc["identity"] = {"sources": [scanner], "schemes": ["sgtin"]}
        doc["aggregation"] = {
            "kind": "assembly",
            "parent": {"gtins": sc.housing_gtins()},
            "children": {"gtins": [feeder.commission.gtin]},
        }
    elif st.program == "packing":
        doc["identity"] = {"sources": [scanner], "schemes": ["sgtin", "sscc"]}
        doc["aggregation"] = {
            "kind": "packing",
            "parent": {"schemes": ["sscc"]},
            "children": {"schemes": ["sgtin"]},
            "count": st.case_size,
        }
    elif st.program == "portal":
        assert st.reader is not None
        doc["portal"] = {
            "device": st.reader.id,
            "antennas": [1, 2],
            "schemes": ["sscc"],
            "quiet_time_ms": st.quiet_time_ms,
        }
    if st.rules:
        doc["rules"] = dict(st.rules)
    return doc


def main(argv: list[str] | None = None) -> int:
    """`python -m simulators.line_config SCENARIO`: its line file, with example addresses."""
    import argparse

    from simulators.line_scenario import ScenarioError, load_scenario

    p = argparse.ArgumentParser(prog="python -m simulators.line_config", description=main.__doc__)
    p.add_argument("scenario")
    p.add_argument("--journal", default="journal.db")
    args = p.parse_args(argv)
    try:
        sc = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(line_text(sc, Endpoints.example(sc), args.journal), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
