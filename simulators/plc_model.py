"""The station cycle model both PLC simulators run: one station's PLC program, whatever the
protocol.

A `StationProgram` works a part for `cycle_time_s`, then publishes the cycle's data into PLC
memory (the part's identifier, process parameters with realistic noise and occasional
out-of-tolerance values, an OK/NOK result, a cycle counter) and hands it over the way real
stations do:

- `handshake` mode: raise `request`, wait for the gateway's `ack` (and read its `verdict`),
  drop `request`, wait for `ack` to drop; an ack that does not come within `ack_timeout_s`
  makes the PLC drop and re-raise its request (`max_retries` times), as PLC programs do;
- `trigger` mode: pulse `trigger` for `pulse_ms` (pulses shorter than a publishing or polling
  interval are the classic way to lose cycles), and count `cycle_counter` up;
- `commission` mode (a marker asking for a serial): clear `serial`, count `cycle_counter` up
  (the request number), raise `request`, wait for the ack, read the serial the gateway wrote
  into `serial` and mark the part with it (`CycleRecord.marked`), then drop `request`.

`run()` makes up its parts (random identifiers and values); a virtual line
(simulators.line) drives `work()` instead, with the part at the station and its values.

The simulators keep the variables in their own memory (OPC UA nodes, Modbus registers) behind
the small `Memory` protocol. Every cycle is recorded in `truth`: what really happened, for
tests to compare with what reached the broker.

Variables (names the simulators map to addresses): `part_id` (string), one float per
parameter, `result` (int: 1 OK, 2 NOK), `cycle_counter` (uint32), `request` (bool), `ack`
(bool, written by the gateway), `verdict` (int16, written by the gateway), `trigger` (bool);
`serial` (string, written by the gateway) in commission mode.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from simulators.codes import CodeGenerator

RESULT_OK = 1
RESULT_NOK = 2
POLL_S = 0.002  # how often the simulated PLC looks at its own memory for the gateway's ack


class Memory(Protocol):
    """PLC memory by variable name, as the simulator's server holds it."""

    def read(self, name: str) -> Any: ...

    def write(self, name: str, value: Any) -> None: ...


@dataclass(frozen=True)
class ParameterModel:
    """A process parameter: normally distributed around `mean`; with probability
    `out_of_tolerance_share` a value outside [low, high] instead."""

    name: str
    mean: float
    sd: float
    low: float
    high: float
    unit: str = ""
    out_of_tolerance_share: float = 0.02


DEFAULT_PARAMETERS = (
    ParameterModel("torque", 12.0, 0.15, 11.5, 12.5, "Nm"),
    ParameterModel("angle", 85.0, 1.5, 80.0, 90.0, "deg"),
    ParameterModel("temperature", 41.0, 0.8, 38.0, 44.0, "degC"),
)


@dataclass(frozen=True)
class CycleSpec:
    mode: Literal["handshake", "trigger", "commission"] = "handshake"
    cycle_time_s: float = 1.0
    parameters: tuple[ParameterModel, ...] = DEFAULT_PARAMETERS
    nok_share: float = 0.03
    pulse_ms: int = 20
    ack_timeout_s: float = 5.0
    max_retries: int = 3
    id_kind: Literal["gs1_datamatrix", "plain"] = "gs1_datamatrix"
    seed: int = 0
    serial_signal: str = "serial"  # commission mode: where the gateway writes the serial


@dataclass
class CycleRecord:
    """Ground truth of one cycle."""

    n: int
    part_id: str
    parameters: dict[str, float]
    result: int
    data_ready: float  # wall clock: request raised / trigger pulsed
    acked: float | None = None  # wall clock the ack was seen (handshake mode)
    verdict: int | None = None
    retries: int = 0
    outcome: str = "pending"  # acked, timeout, pulsed
    marked: str | None = None  # commission mode: what was marked (the serial read after the ack)


@dataclass
class StationProgram:
    """One station's PLC program (see the module docstring)."""

    spec: CycleSpec
    memory: Memory
    truth: list[CycleRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.spec.seed)
        self._codes = CodeGenerator(self.spec.seed)
        self._counter = 0
        mem = self.memory
        mem.write("part_id", "")
        for p in self.spec.parameters:
            mem.write(p.name, 0.0)
        for name, value in (
            ("result", 0),
            ("cycle_counter", 0),
            ("request", False),
            ("trigger", False),
        ):
            mem.write(name, value)

    def next_cycle(
        self,
        part_id: str | None = None,
        parameters: dict[str, float] | None = None,
        result: int | None = None,
    ) -> CycleRecord:
        """The data of the next cycle (no I/O): the part, its parameters, its result; what is
        not given is made up (a commissioning cycle's part has no identifier yet)."""
        self._counter += 1
        if part_id is None:
            part_id = "" if self.spec.mode == "commission" else self._part()
        values, in_tol = (dict(parameters), True) if parameters is not None else self._values()
        if result is None:
            nok = not in_tol or self._rng.random() < self.spec.nok_share
            result = RESULT_NOK if nok else RESULT_OK
        return CycleRecord(self._counter, part_id, values, result, 0.0)

    def _part(self) -> str:
        if self.spec.id_kind == "plain":
            return self._codes.plain().data
        return self._codes.gs1_datamatrix().text(True)

    def _values(self) -> tuple[dict[str, float], bool]:
        rng = self._rng
        values: dict[str, float] = {}
        in_tol = True
        for p in self.spec.parameters:
            if rng.random() < p.out_of_tolerance_share:
                below = rng.random() < 0.5
                v = (
                    p.low - abs(rng.gauss(0, p.sd)) - p.sd
                    if below
                    else p.high + abs(rng.gauss(0, p.sd)) + p.sd
                )
                in_tol = False
            else:
                v = min(max(rng.gauss(p.mean, p.sd), p.low), p.high)
            values[p.name] = round(v, 3)
        return values, in_tol

    def publish(self, cycle: CycleRecord) -> None:
        mem = self.memory
        mem.write("part_id", cycle.part_id)
        for name, value in cycle.parameters.items():
            mem.write(name, value)
        mem.write("result", cycle.result)
        mem.write("cycle_counter", cycle.n)

    async def run(self, cycles: int | None = None) -> None:
        """Work `cycles` cycles of made-up parts, `cycle_time_s` each (forever when None)."""
        done = 0
        while cycles is None or done < cycles:
            await asyncio.sleep(self.spec.cycle_time_s)
            await self.work()
            done += 1

    async def work(
        self,
        part_id: str | None = None,
        parameters: dict[str, float] | None = None,
        result: int | None = None,
    ) -> CycleRecord:
        """One cycle, at once: publish the part's data and hand it over (pulse, handshake or
        request for a serial); returns its record (also in `truth`) once handed over."""
        cycle = self.next_cycle(part_id, parameters, result)
        if self.spec.mode == "commission":
            self.memory.write(self.spec.serial_signal, "")  # never mark a stale serial
        self.publish(cycle)
        cycle.data_ready = time.time()
        self.truth.append(cycle)
        if self.spec.mode == "trigger":
            await self._pulse(cycle)
        else:
            await self._handshake(cycle)
        return cycle

    async def _pulse(self, cycle: CycleRecord) -> None:
        self.memory.write("trigger", True)
        await asyncio.sleep(self.spec.pulse_ms / 1000)
        self.memory.write("trigger", False)
        cycle.outcome = "pulsed"

    async def _handshake(self, cycle: CycleRecord) -> None:
        mem = self.memory
        for attempt in range(self.spec.max_retries + 1):
            cycle.retries = attempt
            mem.write("request", True)
            if await self._wait(lambda: bool(mem.read("ack")), self.spec.ack_timeout_s):
                cycle.acked = time.time()
                cycle.verdict = int(mem.read("verdict") or 0)
                cycle.outcome = "acked"
                if self.spec.mode == "commission":
                    cycle.marked = str(mem.read(self.spec.serial_signal) or "")
                mem.write("request", False)
                await self._wait(lambda: not mem.read("ack"), self.spec.ack_timeout_s)
                return
            mem.write("request", False)  # no ack in time: drop, and raise again
            await asyncio.sleep(0.1)
        cycle.outcome = "timeout"

    @staticmethod
    async def _wait(cond: Any, timeout_s: float) -> bool:
        # A PLC scans its memory cyclically; so does the simulated one.
        deadline = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(POLL_S)
        return True


class DictMemory:
    """Memory as a plain dict (tests of the model itself, and the base of simulator memories)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {"ack": False, "verdict": 0}

    def read(self, name: str) -> Any:
        return self.values.get(name)

    def write(self, name: str, value: Any) -> None:
        self.values[name] = value
