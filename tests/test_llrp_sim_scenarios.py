"""Portal scenarios for the LLRP reader simulator (the bundled files plan, their errors say
where, one played against a client) and `python -m simulators.llrp` serving a scenario."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from simulators.llrp import LlrpReaderSim
from simulators.llrp_scenario import PortalScenario, items_of, plan
from tests.helpers_llrp import (
    EPC96,
    REPO,
    Client,
    inventory,
)


@pytest.mark.parametrize("path", sorted((REPO / "simulators/scenarios").glob("portal-*.yaml")))
def test_bundled_portal_scenarios_plan(path: Path) -> None:
    scenario = PortalScenario.from_yaml(path)
    planned, floods = items_of(scenario)
    reads, truths = plan(planned, scenario.physics, scenario.seed)
    again, _ = plan(planned, scenario.physics, scenario.seed)
    assert reads == again  # seeded
    assert scenario.items and 0 < scenario.length_s() < 120
    assert all(t.planned > 0 for t in truths)
    assert reads or floods


def test_scenario_errors_say_where() -> None:
    with pytest.raises(ValueError, match=r"items\[0\]: unknown kind 'tunnel'"):
        PortalScenario.from_dict({"items": [{"kind": "tunnel"}]})
    with pytest.raises(ValueError, match="unknown fields: speed"):
        PortalScenario.from_dict({"items": [{"kind": "pass", "epc": EPC96, "speed": 1}]})


async def test_a_scenario_plays_passes_and_floods_together() -> None:
    doc = {
        "seed": 5,
        "physics": {"miss_share": 0.1},
        "items": [
            {"kind": "units", "count": 3, "interval_s": 0.1, "duration_s": 0.3},
            {"kind": "flood", "reads_per_s": 2000, "duration_s": 0.2, "tags": 50},
            {"kind": "stray", "epc": EPC96, "antenna": 3, "at_s": 0.1},
        ],
    }
    async with LlrpReaderSim(seed=24) as sim, Client(sim.port) as c:
        await inventory(c, antennas=(1, 2, 3), n=50)
        truths = await sim.run_scenario(PortalScenario.from_dict(doc))
        assert [t.kind for t in truths] == ["pass", "pass", "pass", "stray"]
        total = sum(t.reads_delivered for t in truths) + 400
        await c.wait(lambda f: len(c.tag_reports()) == total, timeout=5)


class Cli:
    """`python -m simulators.llrp` as a child process, stdout read line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulators.llrp", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )

    def readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


async def test_the_command_line_serves_a_scenario_until_ctrl_c(tmp_path: Path) -> None:
    scenario = tmp_path / "one.yaml"
    scenario.write_text(f"items:\n  - {{kind: stray, epc: {EPC96}, reads: 2}}\n")
    cli = Cli("--model", "zebra-fx9600", "--port", "0", "--scenario", str(scenario))
    try:
        first = await asyncio.to_thread(cli.readline)
        assert first.startswith("llrp reader zebra-fx9600 listening on 127.0.0.1:")
        async with Client(int(first.rsplit(":", 1)[1])) as c:
            await inventory(c, model="zebra-fx9600")
            await c.wait(lambda f: len(c.tag_reports()) == 2)
            assert [await asyncio.to_thread(cli.readline) for _ in range(2)] == [
                "waiting for a client to start inventory\n",
                "scenario played: 1 tags, 2 reads sent, 0 not delivered\n",
            ]
        cli.proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.to_thread(cli.proc.communicate, timeout=10)
        assert cli.proc.returncode == 0 and out.strip().endswith("stopped")
    finally:
        cli.close()
