"""The OPC UA adapter against the OPC UA PLC simulator: a real asyncua server over TCP on
127.0.0.1, laid out by the bundled profiles (Siemens S7-1500, Beckhoff TwinCAT 3).

A server takes about 1.5 s to start and 1 s to stop, so the tests share two, started once for
the module: `plc` (the Siemens profile, plus signals of every type and browse-path signals;
security and users on). The tests that restart a server (and the one that needs a server without
security) start a TwinCAT one of their own: a shared server restarted in a test would leave the
new server's tasks running past it. Module-scoped async fixtures need the tests in the same event
loop: every test here runs in the module's loop (conftest's leak check follows the test's loop
scope).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import structlog
from asyncua import ua

from gateway.config.plc import OpcuaSignal
from gateway.devices import factory
from gateway.devices import opcua as opcua_module
from gateway.devices.base import DeviceMisconfigured, DeviceUnavailable, WriteFailed
from gateway.devices.opcua import OpcuaDevice
from gateway.devices.opcua_values import shortest_float32, to_engineering, to_variant
from gateway.events import Signals
from simulators.plc_model import CycleSpec
from simulators.plc_opcua import OpcuaPlcSim
from tests.helpers_opcua import (
    CYCLE_DATA,
    DEVICE,
    PASSWORD,
    PATHS,
    TYPED,
    changes,
    changes_of,
    config,
    eventually,
    free_port,
    initials,
    plan,
    values,
    watching,
)
from tests.helpers_scanner import CollectingContext, failure, running

pytestmark = pytest.mark.asyncio(loop_scope="module")


@contextlib.contextmanager
def _own_default_executor() -> Iterator[None]:
    """A fresh default executor of the running loop for the block, shut down after it (the
    loop's threads for asyncio.to_thread, which asyncua's Server.init uses)."""
    executor = ThreadPoolExecutor(thread_name_prefix="asyncio")
    asyncio.get_running_loop().set_default_executor(executor)
    try:
        yield
    finally:
        executor.shutdown(wait=False)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plc() -> AsyncIterator[OpcuaPlcSim]:
    sim = OpcuaPlcSim(
        "plcs/siemens-s7-1500", signals={**TYPED, **PATHS}, users={"tracegate": PASSWORD}
    )
    with _own_default_executor():
        await sim.start()
    yield sim
    with _own_default_executor():
        await sim.stop()


@contextlib.asynccontextmanager
async def own_twincat(**kwargs: Any) -> AsyncIterator[OpcuaPlcSim]:
    """A TwinCAT simulator of the test's own, for the tests that restart one: a restarted
    shared server's new tasks would outlive the test that started them."""
    async with OpcuaPlcSim("plcs/beckhoff-twincat3", security=False, **kwargs) as sim:
        yield sim


def device(
    sim: OpcuaPlcSim,
    tmp_path: Path,
    watch: list[str],
    snapshot: dict[str, Any] | None = None,
    **settings: Any,
) -> OpcuaDevice:
    return OpcuaDevice(config(sim, **settings), plan(watch, snapshot), tmp_path)


def raised(ctx: CollectingContext) -> list[Signals]:
    """The changes that raised the handshake request."""
    return [s for s in changes(ctx) if s.values[0].name == "request" and s.values[0].value]


# --- values, connect ---------------------------------------------------------------------


async def test_registry_makes_an_opcua_device(plc: OpcuaPlcSim, tmp_path: Path) -> None:
    made = factory("opcua")(config(plc), plan(["request"]), tmp_path)
    assert isinstance(made, OpcuaDevice)


async def test_initial_values_after_connect_keep_the_plcs_timestamps(
    plc: OpcuaPlcSim, tmp_path: Path
) -> None:
    part = "]d2010401234500001621SN-0001\x1d10LOT7"
    plc.clock = lambda: time.time() - 3600.0  # the PLC's clock is an hour behind
    try:
        for name, value in (("part_id", part), ("torque", 12.1), ("request", True)):
            await plc.put(name, value)
    finally:
        plc.clock = time.time
    ctx = CollectingContext(DEVICE)
    dev = device(plc, tmp_path, ["request", "ack"], {"request": CYCLE_DATA})
    async with running(dev, ctx):
        await ctx.wait_until(lambda: bool(initials(ctx)))
    assert ctx.connections[0].startswith(f"{plc.endpoint} (security None), server ")
    assert "S7-1500" in ctx.connections[0]
    (initial,) = initials(ctx)
    assert [v.name for v in initial.values] == ["ack", "request", *CYCLE_DATA]
    got = values(initial)
    assert (got["request"], got["part_id"], got["torque"]) == (True, part, 12.1)
    torque = initial.get("torque")
    assert torque is not None and torque.source_time is not None
    assert torque.server_time is not None
    assert abs(torque.source_time - (time.time() - 3600.0)) < 10
    assert abs(torque.server_time - time.time()) < 10
    await plc.put("request", False)


TYPED_VALUES = {
    "t_bool": True,
    "t_i8": -128,
    "t_u8": 255,
    "t_i16": -32768,
    "t_u16": 65535,
    "t_i32": -(2**31),
    "t_u32": 2**32 - 1,
    "t_i64": -(2**63),
    "t_u64": 2**64 - 1,
    "t_f32": 3.14159,
    "t_f64": 2.718281828459045,
    "t_str": "Grüße ]d2\x1d 日本",
    "t_dt": datetime(2026, 11, 25, 17, 6, 24, 123456, tzinfo=UTC),
    "t_arr_i16": [1, -2, 3, -4],
    "t_arr_f32": [0.1, 1.5, -2.25],
    "t_arr_str": ["a", "ü"],
    "t_arr_bool": [True, False, True],
    "t_scaled": 615,  # raw: 615 * 0.1 - 40 = 21.5 degC
    "t_readonly": 7,
}
ENGINEERING = {
    **TYPED_VALUES,
    "t_dt": "2026-11-25T17:06:24.123456Z",
    "t_arr_i16": (1, -2, 3, -4),
    "t_arr_f32": (0.1, 1.5, -2.25),
    "t_arr_str": ("a", "ü"),
    "t_arr_bool": (True, False, True),
    "t_scaled": 21.5,
}


async def test_every_type_arrives_in_engineering_units(plc: OpcuaPlcSim, tmp_path: Path) -> None:
    for name, value in TYPED_VALUES.items():
        await plc.put(name, value)
    others = [n for n in TYPED if n != "t_bool"]
    ctx, ready = CollectingContext(DEVICE), watching(plc, "t_bool")
    async with running(device(plc, tmp_path, ["t_bool"], {"t_bool": others}), ctx):
        await ready()
        await plc.put("t_bool", False)
        await ctx.wait_until(lambda: bool(changes(ctx)))
    assert values(initials(ctx)[0]) == ENGINEERING
    assert values(changes(ctx)[0]) == {**ENGINEERING, "t_bool": False}
    assert all(v.good for v in changes(ctx)[0].values)


async def test_writes_use_the_nodes_own_type(plc: OpcuaPlcSim, tmp_path: Path) -> None:
    signals = dict(plc.signals)
    # The gateway believes it may write this one; the PLC does not (read-only node).
    signals["t_readonly"] = signals["t_readonly"].model_copy(update={"writable": True})
    dev = OpcuaDevice(config(plc, signals), plan(["t_bool"]), tmp_path)
    ctx = CollectingContext(DEVICE)
    writes = [
        ("t_u32", 4_000_000_000, ua.VariantType.UInt32, 4_000_000_000),
        ("t_i16", -1234, ua.VariantType.Int16, -1234),
        ("t_bool", True, ua.VariantType.Boolean, True),
        ("t_f32", 12.5, ua.VariantType.Float, 12.5),
        ("t_scaled", 25.0, ua.VariantType.Int16, 650),  # (25 + 40) / 0.1
        ("t_str", "ÄÖ\x1d", ua.VariantType.String, "ÄÖ\x1d"),
        ("t_arr_i16", [4, 3, 2, 1], ua.VariantType.Int16, [4, 3, 2, 1]),
        (
            "t_dt",
            "2026-01-02T03:04:05.000006Z",
            ua.VariantType.DateTime,
            datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        ),
    ]
    async with running(dev, ctx):
        await ctx.wait_connected()
        before = len(plc.writes)
        for name, value, _, _ in writes:
            await dev.write(name, value)
        assert plc.writes[before:] == [(n, raw, vt) for n, _, vt, raw in writes]
        assert plc.memory.read("t_scaled") == 650
        refusals = {
            "t_readonly": (4, "BadUserAccessDenied"),
            "result": (1, "not writable"),
            "nope": (1, "has no signal"),
            "t_i16": (70_000, "out of range for Int16"),
            "t_bool": ("yes", "is not a bool"),
            "t_arr_i16": (5, "takes a list"),
        }
        for name, (value, why) in refusals.items():
            with pytest.raises(WriteFailed) as refused:
                await dev.write(name, value)
            assert why in str(refused.value) and DEVICE in str(refused.value)
            assert name in str(refused.value)
        assert len(plc.writes) == before + len(writes)
    with pytest.raises(WriteFailed, match="not connected"):
        await dev.write("ack", True)


# --- subscription -----------------------------------------------------------------------------


async def test_every_pulse_of_a_burst_arrives_with_its_snapshot(
    plc: OpcuaPlcSim, tmp_path: Path
) -> None:
    await plc.put("trigger", False)
    sigs = dict(plc.signals)
    short = {**sigs, "trigger": sigs["trigger"].model_copy(update={"queue_size": 1})}
    snapshot = {"trigger": ["cycle_counter"]}
    # Pulses of a few ms, all between two publishes 500 ms apart.
    queued = OpcuaDevice(
        config(plc, publishing_interval_ms=500), plan(["trigger"], snapshot), tmp_path
    )
    lossy = OpcuaDevice(
        config(plc, short, publishing_interval_ms=500), plan(["trigger"], snapshot), tmp_path
    )
    ctx, lossy_ctx = CollectingContext(DEVICE), CollectingContext(DEVICE)
    ready = watching(plc, "trigger", devices=2)
    async with running(queued, ctx), running(lossy, lossy_ctx):
        await ready()
        for n in range(1, 11):
            plc.memory.write("cycle_counter", n)
            plc.memory.write("trigger", True)
            plc.memory.write("trigger", False)
        await plc.flush()
        await ctx.wait_until(lambda: len(changes(ctx)) >= 20)
        await lossy_ctx.wait_until(lambda: bool(changes(lossy_ctx)))
    assert [v.value for v in changes_of(ctx, "trigger")] == [True, False] * 10
    assert all(s.get("cycle_counter") is not None for s in changes(ctx))
    # With OPC UA's default queue of 1, the burst collapses into its last value(s).
    assert len(changes(lossy_ctx)) < 20


async def test_handshake_with_the_station_program(plc: OpcuaPlcSim, tmp_path: Path) -> None:
    for name, value in (("request", False), ("ack", False), ("verdict", 0)):
        await plc.put(name, value)
    spec = CycleSpec(mode="handshake", cycle_time_s=0.05, nok_share=0.5, seed=11)
    dev = device(plc, tmp_path, ["request"], {"request": CYCLE_DATA})
    ctx, ready = CollectingContext(DEVICE), watching(plc, "request")
    verdicts = []
    async with running(dev, ctx):
        await ready()
        async with plc.running_program(spec, cycles=3) as program:
            for n in range(1, 4):
                await ctx.wait_until(lambda n=n: len(raised(ctx)) >= n)  # type: ignore[misc]
                got, cycle = values(raised(ctx)[n - 1]), program.truth[n - 1]
                # The snapshot read with the request is this cycle's data, consistent.
                assert got["part_id"] == cycle.part_id
                assert {p: got[p] for p in cycle.parameters} == cycle.parameters
                assert (got["result"], got["cycle_counter"]) == (cycle.result, n)
                verdicts.append(1 if cycle.result == 1 else 2)
                await dev.write("verdict", verdicts[-1])
                await dev.write("ack", True)
                await ctx.wait_until(lambda: changes_of(ctx, "request")[-1].value is False)
                await dev.write("ack", False)
            await eventually(
                lambda: len(program.truth) == 3 and program.truth[-1].acked is not None
            )
    assert [(c.outcome, c.verdict, c.retries) for c in program.truth] == [
        ("acked", v, 0) for v in verdicts
    ]
    assert [v.value for v in changes_of(ctx, "request")] == [True, False] * 3


async def test_unresolvable_signals_report_their_status_and_the_others_go_on(
    plc: OpcuaPlcSim, tmp_path: Path
) -> None:
    signals = {
        **plc.signals,
        "ghost": OpcuaSignal.model_validate({"node": 'ns=3;s="DB_Trace"."Ghost"', "type": "bool"}),
        "lost": OpcuaSignal.model_validate({"path": ["3:Line", "3:Nowhere"], "type": "int16"}),
    }
    await plc.put("request", False)
    dev = OpcuaDevice(
        config(plc, signals),
        plan(["request", "ghost"], {"request": ["torque", "ghost", "lost"]}),
        tmp_path,
    )
    ctx, ready = CollectingContext(DEVICE), watching(plc, "request")
    with structlog.testing.capture_logs() as logs:
        async with running(dev, ctx):
            await ready()
            await plc.put("request", True)
            await ctx.wait_until(lambda: bool(changes(ctx)))
    statuses = {v.name: v.status for v in initials(ctx)[0].values}
    assert statuses == {
        "ghost": "BadNodeIdUnknown",
        "request": "good",
        "torque": "good",
        "lost": "BadNoMatch",
    }
    change = changes(ctx)[0]
    assert [(v.name, v.status) for v in change.values] == [
        ("request", "good"),
        ("torque", "good"),
        ("ghost", "BadNodeIdUnknown"),
        ("lost", "BadNoMatch"),
    ]
    wanted = {"request", "ghost", "torque", "lost"} | {n for n, s in signals.items() if s.writable}
    assert f", {len(wanted) - 2} of {len(wanted)} signals resolved" in ctx.connections[0]
    unresolved = [e for e in logs if e["event"] == "opcua_signal_unresolved"]
    assert {e["signal"] for e in unresolved} == {"ghost", "lost"}
    await plc.put("request", False)


async def test_a_slow_snapshot_read_reports_timeouts_and_the_change_still_counts(
    plc: OpcuaPlcSim, tmp_path: Path
) -> None:
    await plc.put("request", False)
    dev = device(plc, tmp_path, ["request"], {"request": ["torque"]}, request_timeout_s=0.3)
    ctx, ready = CollectingContext(DEVICE), watching(plc, "request")
    async with running(dev, ctx):
        await ready()
        plc.slow(0.6)
        try:
            await plc.put("request", True)
            await ctx.wait_until(lambda: bool(changes(ctx)))
        finally:
            plc.slow(0)
        await plc.put("request", False)
        await ctx.wait_until(lambda: len(changes(ctx)) == 2)
    first, second = changes(ctx)
    assert (first.values[0].value, first.get("torque")) == (True, first.values[1])
    assert first.values[1].status == "timeout" and first.values[1].value is None
    assert second.values[1].status == "good"


async def test_a_backlog_beyond_the_queue_drops_the_session(
    plc: OpcuaPlcSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(opcua_module, "NOTIFICATION_QUEUE", 5)
    dev = device(plc, tmp_path, ["t_u32"], {"t_u32": ["t_i16"]}, request_timeout_s=2)
    ctx, ready = CollectingContext(DEVICE), watching(plc, "t_u32")
    async with running(dev, ctx) as task:
        await ready()
        plc.slow(0.3)  # each snapshot read: the consumer falls behind
        try:
            for n in range(50):
                plc.memory.write("t_u32", n)
            await plc.flush()
            exc = await failure(task)
        finally:
            plc.slow(0)
    assert isinstance(exc, DeviceUnavailable)
    assert "notifications waiting" in str(exc)


async def test_a_program_download_is_followed_by_browse_path(
    plc: OpcuaPlcSim, tmp_path: Path
) -> None:
    await plc.put("p_request", False)
    dev = device(plc, tmp_path, ["p_request"], {"p_request": ["p_counter", "p_torque"]})
    ctx, ready = CollectingContext(DEVICE), watching(plc, "p_request")
    old = plc.node_id("p_request")
    async with running(dev, ctx) as task:
        await ready()
        await plc.download_program()  # live: old nodes go bad, new ones appear
        exc = await failure(task)
    assert isinstance(exc, DeviceUnavailable)
    assert "p_request turned BadNodeIdUnknown" in str(exc)
    assert plc.node_id("p_request") != old
    ready = watching(plc, "p_request")
    async with running(dev, ctx):
        await ready()
        await plc.put("p_counter", 7)
        await plc.put("p_request", True)
        await ctx.wait_until(lambda: bool(changes(ctx)))
    assert values(changes(ctx)[-1]) == {"p_request": True, "p_counter": 7, "p_torque": 0.0}
    await plc.put("p_request", False)


# --- liveness and restarts ---------------------------------------------------------------------


async def test_the_watchdog_notices_a_server_that_stops_answering(
    plc: OpcuaPlcSim, tmp_path: Path
) -> None:
    dev = device(plc, tmp_path, [], watchdog_s=1.0, session_timeout_s=1.0)
    ctx = CollectingContext(DEVICE)
    async with running(dev, ctx) as task:
        await ctx.wait_until(lambda: bool(initials(ctx)))
        plc.pause()
        paused = time.monotonic()
        try:
            exc = await failure(task)
        finally:
            plc.resume()
    assert isinstance(exc, DeviceUnavailable)
    assert "answered no keepalive read for 1.0 s" in str(exc)
    assert time.monotonic() - paused < 4.0  # 1 s watchdog, then a close bounded at 2 s


async def test_a_killed_server_sees_one_session_attempt_per_run(tmp_path: Path) -> None:
    async with own_twincat() as twincat:
        await _killed_and_back(twincat, tmp_path)


async def _killed_and_back(twincat: OpcuaPlcSim, tmp_path: Path) -> None:
    await twincat.put("request", False)
    created, activations = twincat.sessions_created, twincat.activations
    dev = device(twincat, tmp_path, ["request"], {"request": ["cycle_counter"]})
    ctx, ready = CollectingContext(DEVICE), watching(twincat, "request")
    async with running(dev, ctx) as task:
        await ready()
        await twincat.put("request", True)
        await ctx.wait_until(lambda: bool(changes(ctx)))
        await twincat.kill()
        exc = await failure(task)
    assert isinstance(exc, DeviceUnavailable) and "lost" in str(exc)
    assert twincat.sessions_created == created + 1
    async with running(dev, ctx) as task:  # the server is down: refused, nothing retried
        exc = await failure(task)
    assert isinstance(exc, DeviceUnavailable) and "cannot connect" in str(exc)
    await twincat.start()
    ready = watching(twincat, "request")
    async with running(dev, ctx):
        await ready()
        assert values(initials(ctx)[1])["request"] is True  # the level, read again
        await twincat.put("request", False)
        await ctx.wait_until(lambda: len(changes(ctx)) == 2)
    assert (twincat.sessions_created, twincat.activations) == (created + 2, activations + 2)


async def test_namespace_uris_survive_a_new_namespace_index(tmp_path: Path) -> None:
    async with own_twincat() as twincat:
        await _namespace_moved(twincat, tmp_path)


async def _namespace_moved(twincat: OpcuaPlcSim, tmp_path: Path) -> None:
    signals = {
        **twincat.signals,
        "fixed_index": OpcuaSignal.model_validate({"node": "ns=4;s=MAIN.bRequest", "type": "bool"}),
    }
    await twincat.put("request", False)
    dev = OpcuaDevice(config(twincat, signals), plan(["request", "fixed_index"]), tmp_path)
    ctx = CollectingContext(DEVICE)
    async with running(dev, ctx) as task:
        await ctx.wait_until(lambda: bool(initials(ctx)))
        await twincat.download_program(new_namespace="urn:vendor:companion-spec")
        exc = await failure(task)
    assert isinstance(exc, DeviceUnavailable)
    assert {v.name: v.status for v in initials(ctx)[0].values} == {
        "request": "good",
        "fixed_index": "good",
    }
    ready = watching(twincat, "request")
    async with running(dev, ctx):
        await ready()
        await twincat.put("request", True)
        await ctx.wait_until(lambda: bool(changes(ctx)))
    # `nsu=` found PLC1's namespace at its new index; `ns=4` now points elsewhere.
    assert {v.name: v.status for v in initials(ctx)[1].values} == {
        "request": "good",
        "fixed_index": "BadNodeIdUnknown",
    }
    assert twincat.node_id("request").NamespaceIndex == 5
    assert changes_of(ctx, "request")[-1].value is True
    await twincat.put("request", False)


async def test_connection_refused_is_unavailable(tmp_path: Path) -> None:
    cfg = config(OpcuaPlcSim(port=free_port(), security=False), {})
    ctx = CollectingContext(DEVICE)
    async with running(OpcuaDevice(cfg, plan([]), tmp_path), ctx) as task:
        exc = await failure(task)
    assert isinstance(exc, DeviceUnavailable) and "cannot connect" in str(exc)
    assert ctx.connections == []


# --- security and users ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
async def test_security_with_a_generated_certificate_kept_across_runs(
    plc: OpcuaPlcSim, tmp_path: Path, mode: str
) -> None:
    dev = device(plc, tmp_path, ["request"], security_mode=mode)
    ctx = CollectingContext(DEVICE)
    cert = tmp_path / "opcua" / DEVICE / "client-cert.der"
    with structlog.testing.capture_logs() as logs:
        async with running(dev, ctx):
            await ctx.wait_until(lambda: bool(initials(ctx)))
        first = cert.read_bytes()
        async with running(dev, ctx):
            await ctx.wait_until(lambda: len(initials(ctx)) == 2)
    assert cert.read_bytes() == first  # kept, not generated again
    assert f"(security {mode} Basic256Sha256)" in ctx.connections[0]
    assert [e["event"] for e in logs].count("opcua_certificate_generated") == 1
    assert oct((tmp_path / "opcua" / DEVICE / "client-key.pem").stat().st_mode & 0o777) == "0o600"


async def test_an_untrusted_certificate_is_retried_until_the_server_trusts_it(
    plc: OpcuaPlcSim, tmp_path: Path
) -> None:
    server_cert = tmp_path / "server.der"
    server_cert.write_bytes(plc.certificate)
    dev = device(
        plc,
        tmp_path,
        ["request"],
        security_mode="SignAndEncrypt",
        server_certificate_file=str(server_cert),
    )
    ctx = CollectingContext(DEVICE)
    plc.trusted = []
    try:
        async with running(dev, ctx) as task:
            exc = await failure(task)
        assert isinstance(exc, DeviceUnavailable)  # retried: trusting is done on the server
        cert = tmp_path / "opcua" / DEVICE / "client-cert.der"
        assert "BadCertificateUntrusted" in str(exc) and str(cert) in str(exc)
        plc.trusted = [cert.read_bytes()]
        async with running(dev, ctx):
            await ctx.wait_until(lambda: bool(initials(ctx)))
    finally:
        plc.trusted = None


async def test_username_and_password(
    plc: OpcuaPlcSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password_file = tmp_path / "plc-password"
    password_file.write_text(f"{PASSWORD}\nsecond line ignored\n")
    good = device(plc, tmp_path, [], username="tracegate", password_file=str(password_file))
    ctx = CollectingContext(DEVICE)
    refused = plc.refused
    async with running(good, ctx):
        await ctx.wait_connected()
    assert ", user tracegate)" in ctx.connections[0]
    assert plc.refused == refused
    monkeypatch.setenv("TG_TEST_PLC_PASSWORD", "wrong-password")
    bad = device(plc, tmp_path, [], username="tracegate", password_env="TG_TEST_PLC_PASSWORD")
    with structlog.testing.capture_logs() as logs:
        async with running(bad, ctx) as task:
            exc = await failure(task)
    # Not retried: only a configuration change helps, and retries may lock the account.
    assert isinstance(exc, DeviceMisconfigured)
    assert "refuses user 'tracegate' (BadUserAccessDenied)" in str(exc)
    assert plc.refused == refused + 1
    assert "wrong-password" not in repr(logs) + str(exc) and PASSWORD not in repr(logs)


async def test_no_endpoint_with_the_configured_security_is_misconfigured(tmp_path: Path) -> None:
    async with own_twincat() as twincat:  # None only
        dev = device(twincat, tmp_path, [], security_mode="SignAndEncrypt")
        ctx = CollectingContext(DEVICE)
        async with running(dev, ctx) as task:
            exc = await failure(task)
    assert isinstance(exc, DeviceMisconfigured)
    assert "offers no endpoint with security SignAndEncrypt / Basic256Sha256" in str(exc)


# --- conversions (no server) --------------------------------------------------------------------


async def test_float32_values_read_as_the_decimal_the_plc_wrote() -> None:
    import struct

    for x in (12.1, 0.1, 85.123, 41.0, -2.25, 3.4e38, 1e-7, 16777217.0):
        f32 = struct.unpack("<f", struct.pack("<f", x))[0]
        assert shortest_float32(f32) == (x if x != 16777217.0 else 16777216.0)


async def test_conversions_refuse_what_does_not_fit() -> None:
    sig = OpcuaSignal.model_validate({"node": "i=1", "type": "int16", "scale": 0.5})
    assert to_variant(10.2, sig, ua.VariantType.Int16) == ua.Variant(20, ua.VariantType.Int16)
    assert to_engineering(3, sig, ua.VariantType.Int16) == 1.5
    with pytest.raises(ValueError, match="out of range"):
        to_variant(20_000, sig, ua.VariantType.Int16)
    plain = OpcuaSignal.model_validate({"node": "i=1", "type": "int32"})
    with pytest.raises(ValueError, match="not an integer"):
        to_variant(2.5, plain, ua.VariantType.Int32)
    nan = OpcuaSignal.model_validate({"node": "i=1", "type": "float64"})
    with pytest.raises(ValueError, match="non-finite"):
        to_engineering(float("nan"), nan, ua.VariantType.Double)
