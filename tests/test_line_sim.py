"""The virtual line's own behaviour (simulators.line*): scenario files and their errors, the plan
(every unit along the route by the contract's rules), the ground truth's bookkeeping, the
gateway line file it writes, the oracle against a perfect and an imperfect gateway, and a
short line on real simulators driving each device with the same units."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.app import Gateway
from gateway.config import load_line
from gateway.events import rfc3339
from simulators.broker import Mosquitto
from simulators.line import VirtualLine
from simulators.line_config import Endpoints, line_document, parameter_units, write_line_file
from simulators.line_oracle import compare, normalize
from simulators.line_plan import NOK, Planner, UnitPlan, Work, pool_size, yymmdd
from simulators.line_scenario import Scenario, ScenarioError, load_scenario, scenario_from
from simulators.line_stations import parse_element_string
from simulators.line_truth import Expect, Truth
from tests.helpers import ROOT, subscriber, wait_for

SCENARIOS = ROOT / "simulators" / "scenarios"
ASSEMBLY = SCENARIOS / "line-assembly.yaml"
DEMO = SCENARIOS / "line-demo.yaml"
PROBLEM = re.compile(r"^\S+:\d+:\d+: \S+: .+$")


def assembly(**overrides: Any) -> Scenario:
    return load_scenario(ASSEMBLY, **overrides)


# --- scenario files ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("line-*.yaml")), ids=lambda p: p.stem)
def test_bundled_line_scenarios_load(path: Path) -> None:
    sc = load_scenario(path)
    assert sc.route[0] == "st10" and sc.work_orders


def _bad(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "line-bad.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as exc:
        load_scenario(path)
    for p in exc.value.problems:
        assert PROBLEM.match(p), p
        assert p.startswith(str(path)), p
    return exc.value.problems


def test_errors_name_the_file_line_field_and_value_all_at_once(tmp_path: Path) -> None:
    text = ASSEMBLY.read_text()
    text = text.replace("takt_s: 0.14", "takt_s: -1\ncolour: blue")
    text = text.replace("program: trigger", "program: trigga")
    problems = _bad(tmp_path, text)
    assert len(problems) == 3
    assert any(":18:9: takt_s: Input should be greater than 0 (got -1)" in p for p in problems)
    assert any("colour: Extra inputs are not permitted (got 'blue')" in p for p in problems)
    assert any(
        "stations[3].program: Input should be 'label'" in p and "'trigga'" in p for p in problems
    )


def test_references_between_stations_devices_and_faults_are_checked(tmp_path: Path) -> None:
    text = ASSEMBLY.read_text()
    text = text.replace("route: [st10, st20,", "route: [st10, st99, st20,")
    text = text.replace("{name: pressure, mean", "{name: presure, mean")
    text = text.replace("{device: laser-plc, at_unit: 330}", "{device: laser, at_unit: 330}")
    problems = _bad(tmp_path, text)
    assert len(problems) == 3, problems
    route, params, fault = sorted(problems, key=lambda p: ("route" not in p, "profile" not in p))
    assert route.endswith("route[1]: no such station (got 'st99')")
    assert "stations[3].plc.profile: has no signal presure" in params
    assert "(add it in `signals`;" in params and "pressure" in params
    assert fault.endswith("faults.plc_restarts[1].device: no such PLC (got 'laser')")


def test_a_station_program_needs_its_devices(tmp_path: Path) -> None:
    text = ASSEMBLY.read_text().replace(
        "    scanner: {id: cam-50, kind: tcp_scanner, profile: scanners/cognex-dataman-370}\n", ""
    )
    [problem] = _bad(tmp_path, text)
    assert "stations[5]: a packing station needs `scanner`" in problem


def test_an_unreadable_or_invalid_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "nope.yaml")
    [problem] = _bad(tmp_path, "seed: 1\nroute: [st10\n")
    assert "invalid YAML" in problem


# --- the plan --------------------------------------------------------------------------------


def test_the_plan_is_the_same_for_the_same_seed_and_another_for_another() -> None:
    def labels(sc: Scenario) -> list[str]:
        return [u.label.key for u in Planner(sc, year=2026)]

    assert labels(assembly(units=60)) == labels(assembly(units=60))
    assert labels(assembly(units=60)) != labels(assembly(units=60, seed=8))


def test_every_unit_follows_the_route_and_the_contract_decides_where_it_leaves() -> None:
    sc = assembly()
    plan = Planner(sc, year=2026)
    units = list(plan)
    route = sc.route[:-1]  # the portal sees cases
    for u in units:
        stations = [w.station for w in u.work]
        assert stations == route[: len(stations)], u.id
        assert all(not w.diverted for w in u.work[:-1]), u.id
        last = u.work[-1]
        if last.station != "st50":
            assert last.diverted, f"{u.id} leaves the line at {last.station} without a reason"
    by_anomaly: dict[str, list[UnitPlan]] = {}
    for u in units:
        for a in u.anomalies:
            by_anomaly.setdefault(a.split(":")[0], []).append(u)
    # Injected anomalies, each rejected (or diverted) as the contract says.
    assert len(by_anomaly["duplicate_label_of"]) == 4
    for u in by_anomaly["duplicate_label_of"]:
        original = plan.units[int(u.anomalies[0].split(":U")[1])]
        assert u.label == original.label and u.n > original.n
        assert [(w.station, w.outcome, w.reason) for w in u.work] == [
            ("st10", "rejected", "duplicate_serial")
        ]
    assert len(by_anomaly["skip"]) == 4
    for u in by_anomaly["skip"]:
        st10, st20 = u.work
        assert st10.outcome == "skipped"
        assert (st20.outcome, st20.reason, st20.verdict) == ("rejected", "missing_step", 12)
    for u in by_anomaly["nok"]:
        st20, st30 = at(u, "st20"), u.at("st30")
        if "nok:st20" in u.anomalies and st20.outcome == "recorded":
            assert st20.result == NOK and not 11.5 <= st20.parameters["torque"] <= 12.5
            assert st30 is not None and (st30.outcome, st30.reason) == (
                "rejected",
                "previous_step_nok",
            )
        elif "nok:st30" in u.anomalies and st30 is not None and st30.outcome == "recorded":
            assert u.work[-1] is st30 and st30.result == NOK and st30.parameters["pressure"] > 0.8
            assert st30.diverted  # the leak tester scraps it


def at(u: UnitPlan, station: str) -> Work:
    w = u.at(station)
    assert w is not None, f"{u.id} never came to {station}"
    return w


def test_boards_cases_and_work_orders_add_up() -> None:
    sc = assembly()
    plan = Planner(sc, year=2026)
    units = list(plan)
    assert len(units) >= (sc.units or 0)  # extended, if need be, to fill the last case
    assembled = [u for u in units if u.at("st40") is not None]
    assert [u.board for u in assembled] == list(range(len(plan.boards)))
    assert [b.serial for b in plan.boards[:3]] == ["P260000001", "P260000002", "P260000003"]
    assert [b.remaining for b in plan.boards[:2]] == [549, 548]
    for b in plan.boards:
        wo = sc.work_orders[plan.units[b.unit].phase]
        assert (b.lot, b.expiry) == (wo.lot, wo.expiry)
    assert plan.pool_low_after("pcb") == 451 <= len(plan.boards)
    packed = [u.n for u in units if u.at("st50") is not None]
    assert [n for c in plan.cases for n in c.units] == packed
    for c in plan.cases:
        assert len(c.units) == 5 and {plan.units[n].phase for n in c.units} == {c.phase}
        assert c.label == f"]C100{c.sscc}" and c.key == f"(00){c.sscc}"
    phases = Counter(u.phase for u in units)
    assert phases[0] >= 250 and phases[1] > 0


def test_a_unit_the_line_could_not_take_out_of_an_assembly_is_refused() -> None:
    sc = assembly(units=200)
    stations = [
        s.model_copy(update={"divert_nok": False}) if s.id == "st30" else s for s in sc.stations
    ]
    with pytest.raises(ScenarioError, match="rejected at assembly station st40"):
        list(Planner(sc.model_copy(update={"stations": stations}), year=2026))


# --- the ground truth --------------------------------------------------------------------------


def dry_run(sc: Scenario) -> Truth:
    """The truth's calls the stations make, without devices (each station's order kept)."""
    plan = Planner(sc, year=2026)
    truth = Truth(sc, plan, parameter_units(sc))
    for pool in sc.pools:
        truth.pool_loaded(pool.id, pool_size(pool))
    truth.work_order_changed(0)
    phase = 0
    for u in plan:
        if u.phase != phase:
            truth.work_order_changed(u.phase)
            phase = u.phase
        for w in u.work:
            st = sc.station(w.station)
            if w.outcome == "skipped":
                continue
            if st.program in ("label", "trigger") and w.misreads:
                truth.noread(st, u.phase, st.scanner.id, u.id)  # type: ignore[union-attr]
            if st.program in ("label", "trigger"):
                truth.identified(st, u, w)
            if st.program in ("handshake", "trigger"):
                truth.cycle(st, u, w)
            if st.program == "assembly":
                board = plan.boards[u.board]  # type: ignore[index]
                truth.commissioned(sc.station("st15"), board)
                truth.aggregated(st, u.phase, u.label.key, [board.key], "assembled")
            if st.program == "packing" and u.case is not None:
                case = plan.cases[u.case]
                if case.units[-1] == u.n:
                    children = [plan.units[n].label.key for n in case.units]
                    truth.aggregated(st, u.phase, case.key, children, "packed")
                    truth.passed(sc.station("dock"), case)
    return truth


def test_the_truth_expects_what_the_contract_says_for_each_unit() -> None:
    truth = dry_run(assembly())
    kinds = Counter((e.station, e.type) for e in truth.expected)
    plan = truth.planner
    assert kinds[("st10", "rejected")] == 4  # the duplicate labels
    assert kinds[("st20", "rejected")] == 4  # the housings that skipped st10
    assert kinds[("st15", "commissioned")] == len(plan.boards)
    assert kinds[("st40", "aggregated")] == len(plan.boards)
    assert kinds[("st50", "aggregated")] == kinds[("dock", "identified")] == len(plan.cases)
    assert kinds[(None, "work_order.changed")] == 2 and kinds[(None, "pool.low")] == 1
    rejected = [e for e in truth.expected if e.type == "rejected" and e.station == "st30"]
    assert {e.fields["reason"] for e in rejected} == {"previous_step_nok"}
    assert all(e.fields["parameters"]["pressure"]["unit"] == "mbar" for e in rejected)
    nok = next(e for e in truth.expected if e.station == "st20" and e.fields.get("result") == NOK)
    torque = nok.fields["parameters"]["torque"]
    assert torque["in_tolerance"] is False and torque["unit"] == "Nm"
    wo2 = truth.sc.work_orders[1].work_order
    assert all(e.fields["work_order"] == wo2 for e in truth.expected[-20:] if e.station)
    doc = truth.to_json()
    dup = next(u for u in doc["units"] if u["anomalies"][:1] and "duplicate" in u["anomalies"][0])
    assert dup["route"][0]["reason"] == "duplicate_serial"


# --- the line file -------------------------------------------------------------------------------


def test_the_line_file_validates_and_points_at_the_simulators(tmp_path: Path) -> None:
    sc = assembly()
    at = Endpoints(broker=("127.0.0.1", 1999), paths={"hand-40": "/dev/ttyX"})
    at.ports = {"cam-10": 2001, "press-plc": 4841, "laser-plc": 5021, "dock-reader": 5085}
    cfg = load_line(write_line_file(sc, at, tmp_path / "line.yaml")).config
    devices = {d.id: d for d in cfg.devices}
    assert devices["cam-10"].port == 2001  # type: ignore[union-attr]
    assert devices["press-plc"].endpoint == "opc.tcp://127.0.0.1:4841/"  # type: ignore[union-attr]
    assert devices["hand-40"].port == "/dev/ttyX"  # type: ignore[union-attr]
    assert "pressure" in devices["leak-plc"].signals  # type: ignore[union-attr]
    st = {s.id: s for s in cfg.stations}
    assert st["st10"].rules.commission and st["st10"].rules.gtins == "work_order"
    assert st["st15"].commission is not None and st["st15"].commission.pool == "pcb"
    assert st["st15"].commission.write == "serial"
    assert st["st20"].rules.requires == ["labelling"]
    assert st["st20"].rules.verdict_codes == {"missing_step": 12}
    assert st["st30"].trigger is not None and st["st30"].trigger.edge == "change"
    assert st["st40"].aggregation is not None and st["st40"].aggregation.kind == "assembly"
    assert st["st40"].aggregation.parent.gtins == ["04012345000016", "04012345000030"]
    assert st["st50"].aggregation is not None and st["st50"].aggregation.count == 5
    assert st["dock"].portal is not None and st["dock"].portal.schemes == ["sscc"]
    assert [p.id for p in cfg.pools] == ["pcb"]


def test_the_bundled_demo_line_file_is_the_demo_scenarios() -> None:
    sc = load_scenario(DEMO)
    bundled = yaml.safe_load((ROOT / "device_profiles" / "lines" / "demo.yaml").read_text())
    assert bundled == line_document(sc, Endpoints.example(sc), "demo-journal.db")


# --- the oracle --------------------------------------------------------------------------------


def event_of(e: Expect, seq: int) -> dict[str, Any]:
    """What a gateway that keeps the contract publishes for `e`."""
    f = e.fields
    ev: dict[str, Any] = {
        "schema": "tracegate.event/1",
        "seq": seq,
        "event_id": str(uuid.uuid4()),
        "type": e.type,
        "time": rfc3339(1.8e9 + seq),
        "station": e.station,
        "step": f["step"],
        "work_order": f["work_order"],
        "ids": [],
        "parameters": {},
        "result": None,
        "detail": {},
    }
    if e.key is not None:
        ev["ids"] = [{"scheme": "sgtin", "value": e.key}]
    for name in ("result", "reason"):
        if name in f:
            ev[name] = f[name]
    ev["parameters"] = {n: {**p, "source": "plc"} for n, p in f.get("parameters", {}).items()}
    if "direction" in f:
        ev["detail"]["pass"] = {"direction": f["direction"]}
    if e.type == "noread":
        ev["detail"]["source"] = f["source"]
    if e.type == "commissioned":
        ev["ids"][0].update({k: f[k] for k in ("gtin", "serial", "lot", "expiry")})
    if e.type == "aggregated":
        ev.update(
            action=f["action"],
            kind=f["kind"],
            parent={"value": f["parent"]},
            children=[{"value": c} for c in f["children"]],
        )
    for name in ("pool", "remaining", "added", "previous"):
        if name in f:
            ev["detail"][name] = f[name]
    return ev


def test_a_gateway_that_keeps_the_contract_passes_the_oracle() -> None:
    truth = dry_run(assembly(units=60))
    events = [event_of(e, n) for n, e in enumerate(truth.expected, start=1)]
    for e, ev in zip(truth.expected, events, strict=True):
        assert normalize(ev)[3] == e.fields  # the oracle reads back what the truth says
    events.insert(5, dict(events[3]))  # delivered twice: at least once is fine
    events.append(
        event_of(
            Expect(None, "device.state", None, {"step": None, "work_order": None}, ""), len(events)
        )
    )
    report = compare(truth, events)
    assert report.ok, report.failures
    assert "housings exact" in report.table()


def test_the_oracle_names_the_unit_and_what_differs() -> None:
    truth = dry_run(assembly(units=60))
    events = [event_of(e, n) for n, e in enumerate(truth.expected, start=1)]
    completed = next(
        ev for ev in events if ev["type"] == "step.completed" and ev["station"] == "st20"
    )
    torque = completed["parameters"]["torque"]
    was = torque["in_tolerance"]
    torque["in_tolerance"] = not was
    key = completed["ids"][0]["value"]
    unit = next(u for u in truth.planner.units.values() if u.label.key == key)
    lost = next(ev for ev in events if ev["type"] == "aggregated" and ev["station"] == "st40")
    events.remove(lost)
    phantom = event_of(
        Expect(
            "st30",
            "identified",
            "(01)04012345000016(21)NOBODY",
            {"step": "leak-test", "work_order": "WO-2026-0042"},
            "",
        ),
        9999,
    )
    events.append(phantom)
    report = compare(truth, events)
    text = "\n".join(report.failures)
    differs = f"st20 step.completed: parameters.torque.in_tolerance: expected {was}, got {not was}"
    assert f"not exact: {unit.id} {key}: history " in text and differs in text
    assert f"({unit.id} worked at st20): parameters.torque.in_tolerance" in text
    assert f"st40: missing: aggregated {lost['ids'][0]['value']}" in text
    assert "st30: without a cause in the truth: identified (01)04012345000016(21)NOBODY" in text
    assert "a unit the line never had: (01)04012345000016(21)NOBODY" in text
    assert "seq gaps:" in text  # the lost event's seq, and everything up to 9999


# --- a short line on real simulators -------------------------------------------------------------


class InProcess:
    """The gateway in the test's loop (no kills: the short scenario has none)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.gateway: Gateway | None = None
        self.task: Any = None

    async def start(self) -> None:
        import asyncio

        self.gateway = Gateway(load_line(self.path))
        self.task = asyncio.create_task(self.gateway.run(), name="gateway-under-test")

    async def kill(self) -> None:  # pragma: no cover - not used
        raise NotImplementedError

    async def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.request_stop()
            await self.task


async def test_a_short_line_drives_every_device_with_the_same_units(
    tmp_path: Path, broker: Mosquitto
) -> None:
    sc = assembly(units=14)
    faults = sc.faults.model_copy(
        update={
            "gateway_kills": sc.faults.gateway_kills.model_copy(update={"count": 0}),
            "broker_outages": [],
            "plc_restarts": [],
            "reader_disconnects": [],
            "duplicate_labels": None,
            "skips": [],
        }
    )
    orders = [sc.work_orders[0].model_copy(update={"units": 7}), sc.work_orders[1]]
    sc = scenario_from(
        sc.model_dump()
        | {"faults": faults.model_dump(), "work_orders": [w.model_dump() for w in orders]}
    )
    with subscriber(broker, "tracegate/#") as sub:
        async with VirtualLine(sc, tmp_path / "line", broker) as line:
            gw = InProcess(line.line_file)
            try:
                truth = await line.run(gw, deadline_s=60)
                await wait_for(lambda: len(sub.events()) >= line.mes.events, 10, "events")
            finally:
                await gw.stop()
            plan = line.planner
            # The same units, in route order, at every device of every station.
            cam10 = [f.text for f in line.scanners["cam-10"].truth if f.kind == "code"]
            assert cam10 == [u.label.text() for u in plan.units.values()]
            press = line.programs["press-plc"].truth
            reached = [u for u in plan.units.values() if u.at("st20") is not None]
            assert [c.part_id for c in press] == [u.label.text() for u in reached]
            assert [c.parameters for c in press] == [at(u, "st20").parameters for u in reached]
            assert [c.verdict for c in press] == [1] * len(reached)
            laser = line.programs["laser-plc"].truth  # marked what the gateway wrote
            assert [parse_element_string(c.marked or "") for c in laser] == [
                {"01": b.gtin, "17": yymmdd(b.expiry), "10": b.lot, "21": b.serial}
                for b in plan.boards
            ]
            dock = line.readers["dock-reader"].truth
            assert [t.epc for t in dock] == [c.epc for c in plan.cases]
            assert all(t.direction == "out" for t in dock)
    assert (tmp_path / "line" / "truth.json").is_file()
    report = compare(truth, sub.events())
    assert report.ok, "\n".join(report.failures)
