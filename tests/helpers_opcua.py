"""Shared helpers of the OPC UA tests: extra signals of every type for the simulator, config and
plan builders, and reading what an adapter emitted. Tests wait on conditions, never on sleeps.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from gateway.config.plc import OpcuaConfig, OpcuaSignal
from gateway.devices.base import DevicePlan
from gateway.events import Signals, SignalValue
from simulators.plc_opcua import OpcuaPlcSim
from tests.helpers_scanner import WAIT_S, CollectingContext

DEVICE = "plc-1"
PASSWORD = "s3cret pass;word"  # a space and a semicolon: taken verbatim from the file's line

CYCLE_DATA = ("part_id", "torque", "angle", "temperature", "result", "cycle_counter")


def _typed(name: str, type_: str, **extra: Any) -> tuple[str, OpcuaSignal]:
    spec = {"node": f'ns=3;s="DB_Types"."{name}"', "type": type_, "writable": True, **extra}
    return f"t_{name}", OpcuaSignal.model_validate(spec)


# Every value type, as an S7-1500 holds them in a second data block "DB_Types".
TYPED: dict[str, OpcuaSignal] = dict(
    [
        _typed("bool", "bool"),
        _typed("i8", "int8"),
        _typed("u8", "uint8"),
        _typed("i16", "int16"),
        _typed("u16", "uint16"),
        _typed("i32", "int32"),
        _typed("u32", "uint32"),
        _typed("i64", "int64"),
        _typed("u64", "uint64"),
        _typed("f32", "float32"),
        _typed("f64", "float64"),
        _typed("str", "string"),
        _typed("dt", "datetime"),
        _typed("arr_i16", "int16", array_length=4),
        _typed("arr_f32", "float32", array_length=3),
        _typed("arr_str", "string", array_length=2),
        _typed("arr_bool", "bool", array_length=3),
        _typed("scaled", "int16", scale=0.1, offset=-40.0, unit="degC"),
        _typed("readonly", "uint32", writable=False),
    ]
)

# Signals a program download renumbers: found by browse path only.
PATHS: dict[str, OpcuaSignal] = {
    name: OpcuaSignal.model_validate(
        {"path": ["3:Line", "3:Station20", f"3:{leaf}"], "type": type_, "sampling_ms": 0}
    )
    for name, leaf, type_ in (
        ("p_request", "Request", "bool"),
        ("p_counter", "Counter", "uint32"),
        ("p_torque", "Torque", "float32"),
    )
}


def config(
    sim: OpcuaPlcSim,
    signals: Mapping[str, OpcuaSignal] | None = None,
    **settings: Any,
) -> OpcuaConfig:
    """A device entry for `sim`: its signals (or `signals`), no security unless given."""
    sigs = sim.signals if signals is None else signals
    doc = {
        "id": DEVICE,
        "kind": "opcua",
        "endpoint": sim.endpoint,
        "security_mode": "None",
        "publishing_interval_ms": 50,
        "signals": {n: s.model_dump(exclude_none=True) for n, s in sigs.items()},
        **settings,
    }
    return OpcuaConfig.model_validate(doc)


def plan(watch: Iterable[str], snapshot: Mapping[str, Iterable[str]] | None = None) -> DevicePlan:
    return DevicePlan(
        watch=frozenset(watch), snapshot={k: tuple(v) for k, v in (snapshot or {}).items()}
    )


def changes(ctx: CollectingContext) -> list[Signals]:
    """The non-initial Signals, in order."""
    return [o for o in ctx.observations if isinstance(o, Signals) and not o.initial]


def initials(ctx: CollectingContext) -> list[Signals]:
    return [o for o in ctx.observations if isinstance(o, Signals) and o.initial]


def changes_of(ctx: CollectingContext, name: str) -> list[SignalValue]:
    """The first value of each change Signals, when it is `name`'s."""
    return [s.values[0] for s in changes(ctx) if s.values[0].name == name]


def values(signals: Signals) -> dict[str, Any]:
    return {v.name: v.value for v in signals.values}


async def eventually(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    """Return once `predicate()` holds (for conditions no event announces, such as the
    simulated PLC's truth); fail after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


def free_port() -> int:
    """A port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def watching(sim: OpcuaPlcSim, *names: str, devices: int = 1) -> Callable[[], Awaitable[None]]:
    """A wait for `devices` more monitored items on each of `names` than now: changes made
    after it are seen by the subscriptions (the initial Signals come before them)."""
    base = {n: sim.monitored[n] for n in names}

    async def ready() -> None:
        await eventually(lambda: all(sim.monitored[n] >= base[n] + devices for n in names))

    return ready
