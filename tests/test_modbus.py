"""The Modbus adapter against the Modbus PLC simulator: real pymodbus servers on 127.0.0.1 (TCP,
RTU framing over TCP) and on a pty pair (RTU), broken on purpose. The simulator encodes values
with pymodbus' converters, the adapter with its own codec: they must agree, and the raw
register images are checked against known values too."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path
from typing import Any

import pytest
import structlog

from gateway.config.plc import ModbusConfig
from gateway.devices import factory
from gateway.devices.base import DeviceMisconfigured, DeviceUnavailable, WriteFailed
from gateway.devices.modbus import ModbusDevice
from gateway.events import Signals
from simulators.plc_modbus import ModbusPlcSim
from simulators.plc_model import RESULT_OK, CycleSpec
from tests.helpers_plc import (
    PlcContext,
    Stopwatch,
    eventually,
    modbus_config,
    plan,
    profile_config,
    status_is,
    value_is,
)
from tests.helpers_scanner import failure, running

STATE = Path("/nonexistent")
EXC2 = "modbus exception 2 (illegal data address)"
GENERIC = "plcs/generic-modbus-tcp"
SNAPSHOT = ("part_id", "torque", "angle", "temperature", "result", "cycle_counter")

ALL_TYPES: dict[str, dict[str, Any]] = {
    "coil": {"table": "coil", "address": 0, "type": "bool"},
    "coils": {"table": "coil", "address": 3, "type": "bool", "array_length": 5},
    "input": {"table": "discrete_input", "address": 2, "type": "bool"},
    "bit": {"address": 0, "bit": 3, "type": "bool"},
    "bits": {"address": 1, "bit": 14, "type": "bool", "array_length": 4},  # registers 1-2
    "flag": {"address": 3, "type": "bool"},  # a whole register
    "i8": {"address": 4, "type": "int8"},
    "u8": {"address": 5, "type": "uint8"},
    "i16": {"address": 6, "type": "int16"},
    "u16": {"address": 7, "type": "uint16"},
    "i32": {"address": 8, "type": "int32"},
    "u32": {"address": 10, "type": "uint32"},
    "i64": {"address": 12, "type": "int64"},
    "u64": {"address": 16, "type": "uint64"},
    "f32": {"address": 20, "type": "float32", "unit": "Nm"},
    "f64": {"address": 22, "type": "float64"},
    "scaled": {"address": 26, "type": "int16", "scale": 0.1, "offset": -40.0, "unit": "degC"},
    "curve": {"address": 27, "type": "float32", "array_length": 3},
    "text": {"address": 33, "type": "string", "length": 8},
    "counter": {"table": "input_register", "address": 0, "type": "uint32"},
}
VALUES: dict[str, Any] = {
    "coil": True,
    "coils": (True, False, True, True, False),
    "input": True,
    "bit": True,
    "bits": (True, False, False, True),
    "flag": True,
    "i8": -5,
    "u8": 200,
    "i16": -1234,
    "u16": 54321,
    "i32": -123456789,
    "u32": 0x12345678,
    "i64": -(2**40) - 7,
    "u64": 2**63 + 5,
    "f32": 12.5,
    "f64": -1234.5678,
    "scaled": 25.3,
    "curve": (1.5, -2.25, 1e10),  # 1e10 is 9999998976 in float32: read as 1e10 again
    "text": "SN-Müller-0042",
    "counter": 4_000_000_000,
}
NEW_VALUES: dict[str, Any] = {
    "coil": False,
    "coils": (False, True, False, False, True),
    "bit": False,
    "bits": (False, True, True, False),
    "flag": False,
    "i8": 100,
    "u8": 7,
    "i16": 32767,
    "u16": 1,
    "i32": 2**31 - 1,
    "u32": 7,
    "i64": 2**62,
    "u64": 1,
    "f32": -0.125,
    "f64": 1e-300,
    "scaled": -12.7,
    "curve": (0.0, 3.0, -1e-3),
    "text": "X",
}
U32_IMAGES = {  # 0x12345678 in registers 10-11, by (byte_order, word_order)
    ("big", "big"): [0x1234, 0x5678],
    ("big", "little"): [0x5678, 0x1234],
    ("little", "big"): [0x3412, 0x7856],
    ("little", "little"): [0x7856, 0x3412],
}


def writable(spec: dict[str, Any]) -> dict[str, Any]:
    table = spec.get("table", "holding_register")
    return {**spec, "table": table, "writable": table not in ("discrete_input", "input_register")}


async def started(ctx: PlcContext) -> Signals:
    """The initial values of the run just started."""
    return await ctx.wait_initial(len(ctx.initial) + 1)


def test_registry_maps_modbus() -> None:
    config = modbus_config(502, {})
    assert isinstance(factory("modbus")(config, plan([]), STATE), ModbusDevice)


# --- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("byte_order", "word_order"), list(U32_IMAGES))
async def test_every_type_and_order_reads_and_writes(byte_order: str, word_order: str) -> None:
    signals = {name: writable(spec) for name, spec in ALL_TYPES.items()}
    layout = modbus_config(502, signals, byte_order=byte_order, word_order=word_order)
    async with ModbusPlcSim(layout) as sim:
        memory = sim.memory()
        for name, value in VALUES.items():
            memory.write(name, value)
        assert memory.get_raw("holding_register", 10, 2) == U32_IMAGES[byte_order, word_order]
        config = layout.model_copy(update={"port": sim.port})
        device = ModbusDevice(config, plan(signals), STATE)
        ctx = PlcContext()
        async with running(device, ctx):
            initial = await started(ctx)
            got = {v.name: v.value for v in initial.values}
            assert got == VALUES
            assert [v.name for v in initial.values] == list(ALL_TYPES)  # declaration order
            assert all(v.good for v in initial.values)

            before = memory.get_raw("holding_register", 0, 1)[0]
            for name, value in NEW_VALUES.items():
                await device.write(name, value)
            for name, value in NEW_VALUES.items():
                expected = list(value) if isinstance(value, tuple) else value
                if not isinstance(value, str):
                    expected = pytest.approx(expected, rel=1e-6)
                assert memory.read(name) == expected, name
            # The bit was set by read-modify-write: only bit 3 of register 0 changed.
            after = memory.get_raw("holding_register", 0, 1)[0]
            assert before ^ after == (1 << 3 if byte_order == "big" else 1 << 11)
            for name, value in NEW_VALUES.items():
                await ctx.wait_change(name, value_is(value))


async def test_initial_values_then_a_held_bool_rises_with_its_snapshot() -> None:
    async with ModbusPlcSim(GENERIC) as sim:
        memory = sim.memory()
        memory.write("part_id", "P-1")
        memory.write("torque", 1.5)
        config = profile_config(GENERIC, port=sim.port)
        device = ModbusDevice(config, plan(["request"], {"request": SNAPSHOT}), STATE)
        ctx = PlcContext()
        async with running(device, ctx):
            initial = await started(ctx)
            assert [v.name for v in initial.values] == [*SNAPSHOT, "request"]
            assert initial.get("part_id").value == "P-1"  # type: ignore[union-attr]
            assert initial.get("torque").value == 1.5  # type: ignore[union-attr]
            assert initial.get("request").value is False  # type: ignore[union-attr]
            assert ctx.connections == [f"127.0.0.1:{sim.port}"]

            for name, value in (("part_id", "P-2"), ("torque", 12.25), ("angle", 85.5)):
                memory.write(name, value)
            memory.write("result", 2)
            memory.write("cycle_counter", 7)
            memory.write("request", True)  # the data first, then the request: one scan
            rose = await ctx.wait_change("request", value_is(True))
            assert [v.name for v in rose.values] == ["request", *SNAPSHOT]
            assert {v.name: v.value for v in rose.values[1:]} == {
                "part_id": "P-2",
                "torque": 12.25,
                "angle": 85.5,
                "temperature": 0.0,
                "result": 2,
                "cycle_counter": 7,
            }
            memory.write("request", False)
            await ctx.wait_change("request", value_is(False))
    assert len(ctx.changes("request")) == 2


async def test_several_changes_in_one_poll_make_one_signals_each_in_declaration_order() -> None:
    async with ModbusPlcSim(GENERIC) as sim:
        config = profile_config(GENERIC, port=sim.port)
        watched = ["trigger", "request", "cycle_counter"]
        device = ModbusDevice(config, plan(watched, {"trigger": ["result"]}), STATE)
        ctx = PlcContext()
        async with running(device, ctx):
            await started(ctx)
            memory = sim.memory()
            memory.write("result", 1)
            memory.write("trigger", True)  # three changes between two polls
            memory.write("request", True)
            memory.write("cycle_counter", 1)
            await ctx.wait_until(lambda: len(ctx.signals) >= 4)
        changes = ctx.signals[1:4]
        assert [s.values[0].name for s in changes] == ["cycle_counter", "request", "trigger"]
        assert [v.name for v in changes[2].values] == ["trigger", "result"]
        assert changes[2].get("result").value == 1  # type: ignore[union-attr]
        assert len({s.time for s in changes}) == 1  # seen in the same poll


async def test_modicon_words_are_low_first_and_the_ack_bit_is_read_modify_written() -> None:
    profile = "plcs/schneider-modicon-m340"
    async with ModbusPlcSim(profile) as sim:
        memory = sim.memory()
        memory.write("torque", 12.5)
        memory.write("cycle_counter", 70000)
        assert memory.get_raw("holding_register", 132, 2) == [0x0000, 0x4148]
        assert memory.get_raw("holding_register", 140, 2) == [70000 & 0xFFFF, 70000 >> 16]
        memory.set_raw("holding_register", 146, [0xA5A0])  # other bits of the command word
        device = ModbusDevice(profile_config(profile, port=sim.port), plan(["ack"]), STATE)
        ctx = PlcContext()
        async with running(device, ctx):
            await started(ctx)
            await device.write("ack", True)
            assert memory.get_raw("holding_register", 146, 1) == [0xA5A1]
            await ctx.wait_change("ack", value_is(True))
            await device.write("ack", False)
            assert memory.get_raw("holding_register", 146, 1) == [0xA5A0]
            assert (await device_read(device, ctx, "torque")) == 12.5


async def device_read(device: ModbusDevice, ctx: PlcContext, name: str) -> Any:
    """What the device reads for `name`, through a fresh run that watches it."""
    probe = ModbusDevice(device.config, plan([name]), STATE)
    probe_ctx = PlcContext()
    async with running(probe, probe_ctx):
        initial = await probe_ctx.wait_initial()
    value = initial.get(name)
    assert value is not None
    return value.value


# --- writes ------------------------------------------------------------------------------------


async def test_writes_refused_with_the_reason() -> None:
    async with ModbusPlcSim(GENERIC) as sim:
        config = profile_config(GENERIC, port=sim.port, timeout_s=0.2)
        device = ModbusDevice(config, plan(["ack"]), STATE)
        with pytest.raises(WriteFailed, match="cannot write ack of plc-1: not connected"):
            await device.write("ack", True)
        ctx = PlcContext()
        async with running(device, ctx):
            await started(ctx)
            await device.write("verdict", 2)
            await device.write("ack", True)
            assert (sim.memory().read("verdict"), sim.memory().read("ack")) == (2, True)

            with pytest.raises(WriteFailed, match="cannot write torque of plc-1: the signal is"):
                await device.write("torque", 1.0)
            with pytest.raises(WriteFailed, match="cannot write 'nope' of plc-1: no such signal"):
                await device.write("nope", 1)
            with pytest.raises(WriteFailed, match=r"40000 to verdict of plc-1: 40000 is out of"):
                await device.write("verdict", 40000)
            sim.faults.refuse[1, "holding_register", 44] = 2
            with pytest.raises(
                WriteFailed, match=re.escape(f"cannot write verdict of plc-1: {EXC2}")
            ):
                await device.write("verdict", 1)
            sim.faults.silent.add(1)
            with pytest.raises(WriteFailed, match="cannot write ack of plc-1: timeout"):
                await device.write("ack", False)
    assert sim.memory().read("verdict") == 2


# --- failures ----------------------------------------------------------------------------------


async def test_exception_responses_are_per_signal_and_a_refused_merged_read_is_split() -> None:
    async with ModbusPlcSim(GENERIC) as sim:
        signals = {
            "x": {"table": "holding_register", "address": 46, "type": "int16"},
            "y": {"table": "holding_register", "address": 50, "type": "int16"},
            "z": {"table": "holding_register", "address": 54, "type": "int16"},
        }
        config = modbus_config(sim.port, signals)
        sim.faults.refuse[1, "holding_register", 50] = 2
        sim.memory().set_raw("holding_register", 46, [1, 0, 0, 0, 2, 0, 0, 0, 3])
        ctx = PlcContext()
        with structlog.testing.capture_logs() as logs:
            device = ModbusDevice(config, plan(signals), STATE)
            async with running(device, ctx):
                initial = await ctx.wait_initial()
                assert [(v.name, v.value, v.status) for v in initial.values] == [
                    ("x", 1, "good"),
                    ("y", None, EXC2),
                    ("z", 3, "good"),
                ]
                await eventually(lambda: device.stats.polls >= 3)
                assert ctx.changes("y") == []  # the same failure is no change
                del sim.faults.refuse[1, "holding_register", 50]
                await ctx.wait_change("y", value_is(2))  # bad to good is a change
                sim.faults.refuse[1, "holding_register", 54] = 4
                await ctx.wait_change("z", status_is("modbus exception 4 (server device failure)"))
    split = [e for e in logs if e["event"] == "modbus_read_split"]
    assert [(e["log_level"], e["signals"]) for e in split] == [("warning", ["x", "y", "z"])]
    failed = [(e["address"], e["log_level"]) for e in logs if e["event"] == "modbus_read_failed"]
    assert failed[0] == (46, "warning")  # the merged read
    y_alone = [level for address, level in failed if address == 50]
    assert y_alone[0] == "warning" and set(y_alone[1:]) == {"debug"}  # failed at every poll


async def test_server_restart_is_unavailable_and_a_new_run_reads_again() -> None:
    async with ModbusPlcSim(GENERIC) as sim:
        config = profile_config(GENERIC, port=sim.port)
        device = ModbusDevice(config, plan(["cycle_counter"]), STATE)
        ctx = PlcContext()
        sim.memory().write("cycle_counter", 5)
        async with running(device, ctx) as task:
            await started(ctx)
            await sim.stop_serving()  # the PLC's communication goes down
            exc = await failure(task)
        assert isinstance(exc, DeviceUnavailable)
        assert f"connection to 127.0.0.1:{sim.port} lost" in str(exc)

        async with running(device, ctx) as task:
            exc = await failure(task)
        assert isinstance(exc, DeviceUnavailable)
        assert "cannot connect" in str(exc)

        sim.memory().write("cycle_counter", 6)  # memory lives on while the server is down
        await sim.start()
        async with running(device, ctx):
            again = await started(ctx)
            assert again.get("cycle_counter").value == 6  # type: ignore[union-attr]
            sim.memory().write("cycle_counter", 7)
            await ctx.wait_change("cycle_counter", value_is(7))
        with pytest.raises(WriteFailed, match="not connected"):
            await device.write("ack", True)


async def test_silent_unit_on_a_multidrop_line_does_not_starve_the_others() -> None:
    # The usual RS-485 set-up, behind a TCP gateway: every unit in one poll group. The silent
    # unit has four reads (too far apart to merge): after its first timeout they are skipped,
    # and as it stays silent it is asked less and less often.
    timeout_s, period_s = 0.2, 0.05
    second = {
        f"u2_{i}": {"unit_id": 2, "table": "holding_register", "address": 20 * i, "type": "int16"}
        for i in range(4)
    }
    signals = {
        "counter": {"unit_id": 1, "table": "holding_register", "address": 40, "type": "uint32"},
        **second,
    }
    groups = {"default": {"period_ms": int(period_s * 1000)}}
    async with ModbusPlcSim(GENERIC, transport="rtu_over_tcp", units={1: None, 2: None}) as sim:
        config = modbus_config(
            sim.port, signals, transport="rtu_over_tcp", timeout_s=timeout_s, poll_groups=groups
        )
        ctx = PlcContext()
        with structlog.testing.capture_logs() as logs:
            async with running(ModbusDevice(config, plan(signals), STATE), ctx):
                await ctx.wait_initial()
                sim.faults.silent.add(2)
                for name in second:  # the whole unit is reported, each signal once
                    await ctx.wait_change(name, status_is("timeout"))
                asked_before = sim.requests[2]
                latencies = []
                for n in range(1, 13):
                    clock = Stopwatch()
                    sim.memory(1).write("cycle_counter", n)
                    await ctx.wait_change("counter", value_is(n))
                    latencies.append(clock.elapsed)
                asked = sim.requests[2] - asked_before
                sim.faults.silent.clear()
                await ctx.wait_change("u2_0", value_is(0))
    latencies.sort()
    assert latencies[len(latencies) // 2] < period_s + 0.05, latencies  # median: its period
    assert latencies[-1] < period_s + timeout_s + 0.2, latencies  # at worst one retry between
    assert asked <= 5, asked  # held off: not once per poll (and never four per poll)
    assert len(ctx.changes("u2_0")) == 2  # timeout, then good: no repeats while silent
    levels = [e["log_level"] for e in logs if e["event"] == "modbus_unit_timed_out"]
    assert levels[0] == "warning" and set(levels[1:]) == {"debug"}
    assert all(e["unit_id"] == 2 for e in logs if e["event"] == "modbus_unit_timed_out")
    assert [e["event"] for e in logs if e["event"].endswith("_cleared")] == [
        "modbus_unit_timed_out_cleared"
    ]


async def test_slow_answers_then_answers_too_late_then_garbage() -> None:
    async with ModbusPlcSim(GENERIC) as sim:
        config = profile_config(GENERIC, port=sim.port, timeout_s=0.3)
        device = ModbusDevice(config, plan(["cycle_counter"]), STATE)
        ctx = PlcContext()
        async with running(device, ctx):
            await started(ctx)
            sim.faults.delay_s = 0.1  # slow, within the timeout
            sim.memory().write("cycle_counter", 1)
            await ctx.wait_change("cycle_counter", value_is(1))
            sim.faults.delay_s = 0.5  # too slow
            await ctx.wait_change("cycle_counter", status_is("timeout"))
            sim.faults.delay_s = 0.0
            sim.memory().write("cycle_counter", 2)
            await ctx.wait_change("cycle_counter", value_is(2))
            sim.faults.garbage = True
            await ctx.wait_change("cycle_counter", lambda v: not v.good)
            sim.faults.garbage = False
            await ctx.wait_change("cycle_counter", value_is(2))


# --- transports and the station program --------------------------------------------------------


def rtu_config(profile: str, sim: ModbusPlcSim) -> ModbusConfig:
    # A pty refuses parity bits (termios EINVAL): the test line runs 8N1.
    return profile_config(profile, serial_port=sim.serial_path, parity="none", timeout_s=0.3)


async def test_rtu_on_a_serial_line_counter_with_its_snapshot() -> None:
    profile = "plcs/modbus-rtu-tightening-controller"
    spec = CycleSpec(mode="trigger", cycle_time_s=0.1, seed=4)
    async with ModbusPlcSim(profile, transport="rtu", units={1: spec}, cycles=4) as sim:
        config = rtu_config(profile, sim)
        watch = plan(["cycle_counter"], {"cycle_counter": ["torque", "angle", "result"]})
        device = ModbusDevice(config, watch, STATE)
        ctx = PlcContext()
        async with running(device, ctx):
            await started(ctx)
            assert ctx.connections == [f"{sim.serial_path} at 19200 8N1"]
            for n in range(1, 5):
                seen = await ctx.wait_change("cycle_counter", value_is(n))
                cycle = sim.truth[n - 1]
                assert seen.get("torque").value == pytest.approx(  # type: ignore[union-attr]
                    cycle.parameters["torque"], abs=0.005
                )
                assert seen.get("angle").value == pytest.approx(  # type: ignore[union-attr]
                    cycle.parameters["angle"], abs=0.05
                )
                assert seen.get("result").value == cycle.result  # type: ignore[union-attr]
            await sim.wait()


async def test_rtu_line_pulled_is_unavailable() -> None:
    profile = "plcs/modbus-rtu-tightening-controller"
    async with ModbusPlcSim(profile, transport="rtu") as sim:
        device = ModbusDevice(rtu_config(profile, sim), plan(["cycle_counter"]), STATE)
        ctx = PlcContext()
        async with running(device, ctx) as task:
            await started(ctx)
            assert sim.pty is not None
            sim.pty.close()
            exc = await failure(task)
        assert isinstance(exc, DeviceUnavailable)
        assert "lost" in str(exc)


async def test_handshake_with_the_station_program() -> None:
    spec = CycleSpec(mode="handshake", cycle_time_s=0.05, ack_timeout_s=3.0, seed=7)
    async with ModbusPlcSim(GENERIC, units={1: spec}, cycles=3) as sim:
        config = profile_config(GENERIC, port=sim.port)
        watch = plan(["request", "ack"], {"request": [*SNAPSHOT, "ack"]})
        device = ModbusDevice(config, watch, STATE)
        ctx = PlcContext()
        async with running(device, ctx):
            await started(ctx)
            for n in range(3):
                raised = await ctx.wait_change("request", value_is(True))
                cycle = sim.truth[n]
                assert raised.get("part_id").value == cycle.part_id  # type: ignore[union-attr]
                assert raised.get("cycle_counter").value == cycle.n  # type: ignore[union-attr]
                assert raised.get("torque").value == cycle.parameters["torque"]  # type: ignore[union-attr]
                assert raised.get("ack").value is False  # type: ignore[union-attr]
                verdict = 1 if cycle.result == RESULT_OK else 2
                await device.write("verdict", verdict)
                await device.write("ack", True)
                await ctx.wait_change("request", value_is(False))
                await device.write("ack", False)
                await ctx.wait_change("ack", value_is(False))
            await asyncio.wait_for(sim.wait(), 5)
    assert [c.outcome for c in sim.truth] == ["acked"] * 3
    assert [c.verdict for c in sim.truth] == [1 if c.result == RESULT_OK else 2 for c in sim.truth]
    assert all(c.retries == 0 for c in sim.truth)


# --- connecting --------------------------------------------------------------------------------


async def test_connection_refused_and_missing_serial_port_are_unavailable(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ctx = PlcContext()
    async with running(ModbusDevice(modbus_config(port, {}), plan([]), STATE), ctx) as task:
        exc = await failure(task)
    assert isinstance(exc, DeviceUnavailable)
    assert f"cannot connect to 127.0.0.1:{port}" in str(exc)

    rtu = profile_config(
        "plcs/modbus-rtu-tightening-controller", serial_port=str(tmp_path / "ttyUSB7")
    )
    async with running(ModbusDevice(rtu, plan([]), STATE), ctx) as task:
        exc = await failure(task)
    assert isinstance(exc, DeviceUnavailable)
    assert "not present" in str(exc)
    assert ctx.connections == []


async def test_a_serial_port_refusing_the_settings_is_misconfigured() -> None:
    profile = "plcs/modbus-rtu-tightening-controller"
    async with ModbusPlcSim(profile, transport="rtu") as sim:
        port = sim.serial_path
        config = profile_config(profile, serial_port=port)  # even parity: no pty has it
        ctx = PlcContext()
        async with running(ModbusDevice(config, plan(["result"]), STATE), ctx) as task:
            exc = await failure(task)
    assert isinstance(exc, DeviceMisconfigured)
    assert f"serial port {port} at 19200 8E1 rejects the settings" in str(exc)


async def test_a_plan_naming_unknown_signals_is_misconfigured() -> None:
    device = ModbusDevice(modbus_config(502, {}), plan(["request"], {"request": ["x"]}), STATE)
    ctx = PlcContext()
    async with running(device, ctx) as task:
        exc = await failure(task)
    assert isinstance(exc, DeviceMisconfigured)
    assert str(exc) == "device plc-1 has no signal 'request', 'x' (used by a station)"


async def test_a_fast_polling_device_always_stops_when_cancelled() -> None:
    """Python 3.11's asyncio.wait_for (inside pymodbus) loses a cancellation that arrives as a
    response completes. A device polling back to back must still stop on every cancel: the
    poll loop re-raises a cancellation a library swallowed."""
    from gateway.config.plc import PollGroup

    async with ModbusPlcSim(GENERIC) as sim:
        config = profile_config(GENERIC, port=sim.port)
        config = config.model_copy(
            update={
                "poll_groups": {
                    "default": PollGroup.model_construct(period_ms=0),
                    "handshake": PollGroup.model_construct(period_ms=0),
                }
            }
        )
        for i in range(30):
            device = ModbusDevice(config, plan(["request", "cycle_counter"]), STATE)
            ctx = PlcContext()
            task = asyncio.create_task(device.run(ctx))
            await ctx.wait_initial()  # connected and read once: polling is under way
            await asyncio.sleep(0.002 * (i % 10))  # somewhere in the stream of requests
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=2)
            assert done, f"cancel {i} was ignored: the device polls on"
