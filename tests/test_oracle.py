"""THE ORACLE TEST: the reference line of docs/serialization.md, played by the virtual line
(simulators/scenarios/line-assembly.yaml) against `tracegate run` as a real process, and what
reaches the broker compared with the ground truth, unit by unit.

Over 500 housings through seven stations (a TCP camera, a Modbus laser marker asking for
serials, an OPC UA press, a Modbus leak tester with a TCP scanner, a handheld on a pty, a
packing camera, an RFID portal), two work orders with a changeover, and every fault of the
scenario: misreads, duplicate labels, housings skipping the label check, NOK results, a broker
outage, PLC restarts, a reader disconnect, and the gateway killed with SIGKILL at least ten
times at random moments. Every unit's history (steps, parameters, results, work order,
genealogy, commissioned serials) must be exact, every injected anomaly rejected with the
contract's reason, no event without a cause, `seq` without gaps, each station's events in the
order the station caused them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_line
from gateway.journal import connect
from gateway.trace_index import trace
from simulators.broker import Mosquitto
from simulators.line import VirtualLine
from simulators.line_oracle import compare
from simulators.line_scenario import load_scenario
from simulators.line_truth import Expect
from tests.helpers import ROOT, GatewayProcess, subscriber, wait_for

SCENARIO = ROOT / "simulators" / "scenarios" / "line-assembly.yaml"


class ProcessControl:
    """The line's GatewayControl over a GatewayProcess (SIGKILL, restart)."""

    def __init__(self, gw: GatewayProcess) -> None:
        self.gw = gw
        self.kills = 0

    async def start(self) -> None:
        self.gw.start()

    async def kill(self) -> None:
        self.gw.kill()
        self.kills += 1


def test_the_scenario_is_the_whole_reference_line() -> None:
    sc = load_scenario(SCENARIO)
    assert sc.units is not None and sc.units >= 500
    assert [s.program for s in sc.stations] == [
        "label",
        "mark",
        "handshake",
        "trigger",
        "assembly",
        "packing",
        "portal",
    ]
    kinds = {d.kind for s in sc.stations for d in (s.scanner, s.plc, s.reader) if d is not None}
    assert kinds == {"tcp_scanner", "serial_scanner", "opcua", "modbus", "llrp"}
    f = sc.faults
    assert f.misreads.share > 0 and f.duplicate_labels is not None and f.skips and f.nok
    assert f.gateway_kills.count >= 10
    assert f.broker_outages and f.plc_restarts and f.reader_disconnects
    assert len(sc.work_orders) == 2


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_every_unit_is_exact_through_kills_outages_and_restarts(
    tmp_path: Path, broker: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = load_scenario(SCENARIO)
    with subscriber(broker, "tracegate/#") as sub:
        async with VirtualLine(scenario, tmp_path / "line", broker) as line:
            gw = GatewayProcess(line.line_file, tmp_path / "gateway.log")
            control = ProcessControl(gw)
            try:
                truth = await line.run(control, deadline_s=220)
                # The line's MES has seen everything arrive; the test's subscriber too, then.
                await wait_for(
                    lambda: len({e["event_id"] for e in sub.events()}) >= line.mes.events,
                    20,
                    "the subscriber to have every event",
                )
                assert gw.terminate() == 0
            finally:
                gw.cleanup()
    report = compare(truth, sub.events())
    # Kills that landed between a handshake's commit and its ack (re-acknowledged, once).
    reacked = sum(1 for lg in gw.logs() if lg.get("event") == "handshake_reacknowledged")
    with capsys.disabled():
        print(
            f"\nthe oracle: {len(truth.planner.units)} housings, {control.kills} kills "
            f"({reacked} handshakes re-acknowledged after one), "
            f"faults {[f.kind for f in truth.faults if f.kind != 'gateway_kill']}"
        )
        print(report.table())
    assert report.ok, f"{len(report.failures)} differences:\n" + "\n".join(report.failures[:80])
    assert control.kills >= 10
    assert reacked >= 3, f"only {reacked} kills landed between a commit and its ack"
    check_traces(truth.expected, line.line_file)


def check_traces(expected: list[Expect], line_file: Path) -> None:
    """`tracegate trace` of units from the local index says what the ground truth says: each
    unit's own events (station and type, in order), its container, and its contents."""
    by_key: dict[str, list[Expect]] = {}
    contents: dict[str, set[str]] = {}
    for e in expected:
        if e.key is not None:
            by_key.setdefault(e.key, []).append(e)
        if e.type == "aggregated" and e.key is not None:
            contents.setdefault(e.key, set()).update(e.children)
    conn = connect(load_line(line_file).config.journal.path, readonly=True)
    try:
        sample = sorted(by_key)[:: max(1, len(by_key) // 40)]  # about 40, of every kind
        for key in sample:
            t = trace(conn, key)
            got = [(d["station"], d["type"]) for d in t.events if d["role"] in ("unit", "parent")]
            want = [(e.station, e.type) for e in by_key[key]]
            assert sorted(got) == sorted(want), f"trace of {key}: {got} != {want}"
            inside = {c["key"] for c in t.children}
            assert inside == contents.get(key, set()), f"contents of {key}"
            for child in inside:
                assert trace(conn, child).parents[:1] == [key], f"{child} is inside {key}"
    finally:
        conn.close()
    # And as a technician reads it: the command's own output, for one case.
    case = next(k for k in sorted(contents) if k.startswith("(00)"))
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "trace", "-c", str(line_file), case],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"Unit {case}" in proc.stdout and "Contains:" in proc.stdout
    assert all(child in proc.stdout for child in contents[case])
