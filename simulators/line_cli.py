"""`python -m simulators.line SCENARIO --workdir DIR`: a virtual line from the command line.

Starts the scenario's simulators (and a private Mosquitto unless `--broker`), writes the
gateway's line file into DIR, runs `tracegate run` on it as a child process (the scenario's
gateway kills kill that process), plays the scenario and writes the ground truth to
DIR/truth.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from simulators import cli
from simulators.broker import Mosquitto
from simulators.line import VirtualLine
from simulators.line_scenario import load_scenario


class SubprocessGateway:
    """`tracegate run -c LINE` as a child process, killed with SIGKILL."""

    def __init__(self, line_file: Path, log: Path) -> None:
        self.line_file, self.log = line_file, log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway",
                "run",
                "-c",
                str(self.line_file),
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def terminate(self) -> int | None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            return await self.proc.wait()
        return None


async def _main(args: argparse.Namespace) -> None:
    overrides = {"units": args.units} if args.units else {}
    scenario = load_scenario(args.scenario, **overrides)
    workdir = Path(args.workdir)
    with contextlib.ExitStack() as stack:
        if args.broker:
            host, _, port = args.broker.rpartition(":")
            broker: Mosquitto | tuple[str, int] = (host or "127.0.0.1", int(port))
        else:
            broker = stack.enter_context(Mosquitto())
        async with VirtualLine(scenario, workdir, broker) as line:
            print(f"line file: {line.line_file}", flush=True)
            gw = SubprocessGateway(line.line_file, workdir / "gateway.log")
            try:
                truth = await line.run(gw)
            finally:
                await gw.terminate()
            print(f"{len(truth.expected)} events expected; truth: {workdir / 'truth.json'}")
            for note in truth.notes:
                print(f"note: {note}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulators.line", description=__doc__)
    p.add_argument("scenario", help="a scenario file (simulators/scenarios/line-*.yaml)")
    p.add_argument("--workdir", required=True, help="where the line file and the truth go")
    p.add_argument("--units", type=int, help="override the scenario's number of units")
    p.add_argument("--broker", help="HOST:PORT of a broker (default: a private Mosquitto)")
    return cli.run(_main, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
