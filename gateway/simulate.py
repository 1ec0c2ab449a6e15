"""`tracegate simulate -c LINE.yaml`: simulators for the devices of a line file.

Scanners (TCP ones whose host is this machine; serial ones get a pty, linked at their configured
port path when that path is free), RFID readers on this machine (the reader model of the
device's profile, with units passing through each portal that uses it), and PLCs whose address
is this machine: an OPC UA or Modbus
server laid out by the device's own signals, running the shared station program
(simulators.plc_model) in handshake mode when a station of the line uses the PLC's handshake,
else in trigger mode. Runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import random
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.cli import EX_CONFIG, EX_OK
from gateway.config import LoadedConfig
from gateway.config.loader import load_or_report
from gateway.config.models import SerialScannerConfig, TcpScannerConfig
from gateway.config.plc import ModbusConfig, OpcuaConfig
from gateway.config.rfid import LlrpConfig
from gateway.demo import _feed
from simulators.codes import CodeGenerator
from simulators.plc_model import CycleSpec
from simulators.scanner import ScannerSim, SerialScannerSim, TcpScannerSim

PLC_CYCLE_S = 2.0
DEMO_GTIN = "04012345123456"  # company prefix 4012345


def simulate_main(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return EX_CONFIG
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_simulate(loaded, args.rate))
    return EX_OK


async def _simulate(loaded: LoadedConfig, rate: float) -> None:
    sims: list[tuple[str, ScannerSim]] = []
    async with contextlib.AsyncExitStack() as stack:
        plcs = await _plcs(loaded, stack)
        readers = await _readers(loaded, rate, stack)
        await _scanners(loaded, rate, sims, stack, plcs + readers)


async def _readers(loaded: LoadedConfig, rate: float, stack: contextlib.AsyncExitStack) -> int:
    """Start a reader simulator per LLRP reader on this machine, with tags passing through each
    portal that uses it (in and out, a fifth of the reads missed); returns how many."""
    from simulators.llrp import READER_MODELS, LlrpReaderSim

    cfg = loaded.config
    n = 0
    for d in cfg.devices:
        if not isinstance(d, LlrpConfig):
            continue
        if not _is_local(d.host):
            print(f"{d.id}: skipped, {d.host} is not this machine", flush=True)
            continue
        model = Path(d.profile or "").name.removesuffix(".yaml")
        if model not in READER_MODELS:
            model = "impinj-r700"
        sim = await stack.enter_async_context(LlrpReaderSim(model, d.host, d.port, seed=n))
        portals = [st.portal for st in cfg.stations if st.portal and st.portal.device == d.id]
        antennas = tuple(portals[0].antennas or d.antennas) if portals else tuple(d.antennas)
        stack.push_async_callback(_stop, asyncio.create_task(_tags(sim, antennas, rate)))
        print(f"{d.id}: simulated {model} reader on {d.host}:{sim.port}", flush=True)
        n += 1
    return n


async def _tags(sim: Any, antennas: tuple[int, ...], rate: float) -> None:
    """Units passing through a portal, one about every 1/rate s, forever."""
    from simulators.epc import sgtin96_series
    from simulators.llrp import TagPass

    rng = random.Random(11)
    epcs = sgtin96_series(DEMO_GTIN, 7, 1, 100_000, seed=5)
    for epc in epcs:
        await sim.wait_for(lambda: sim.inventorying, None)  # a gateway reads it
        inbound = rng.random() < 0.7
        duration = rng.uniform(0.5, 1.5)
        await sim.run_passes([TagPass(epc, "in" if inbound else "out", antennas, 0.0, duration)])
        await asyncio.sleep(rng.expovariate(rate))


async def _plcs(loaded: LoadedConfig, stack: contextlib.AsyncExitStack) -> int:
    """Start the PLC simulators; returns how many."""
    from simulators.plc_modbus import ModbusPlcSim
    from simulators.plc_opcua import OpcuaPlcSim

    cfg = loaded.config
    handshakes = {st.handshake.device for st in cfg.stations if st.handshake is not None}
    n = 0
    for d in cfg.devices:
        mode: Any = "handshake" if d.id in handshakes else "trigger"
        spec = CycleSpec(mode=mode, cycle_time_s=PLC_CYCLE_S)
        if isinstance(d, OpcuaConfig):
            url = urlsplit(d.endpoint)
            if not _is_local(url.hostname or ""):
                print(f"{d.id}: skipped, {url.hostname} is not this machine", flush=True)
                continue
            sim = await stack.enter_async_context(
                OpcuaPlcSim(
                    signals=d.signals,
                    host=url.hostname or "127.0.0.1",
                    port=url.port or 4840,
                    security=d.security_mode != "None",
                )
            )
            where = sim.endpoint
            program = _program(sim.load_program, spec, d.id)
            if program is not None:
                stack.push_async_callback(_stop, asyncio.create_task(program.run()))
        elif isinstance(d, ModbusConfig) and d.transport != "rtu" and d.host is not None:
            if not _is_local(d.host):
                print(f"{d.id}: skipped, {d.host} is not this machine", flush=True)
                continue
            units = {s.unit_id for s in d.signals.values()} or {1}
            mb = await stack.enter_async_context(
                ModbusPlcSim(
                    d,
                    transport=d.transport,
                    host=d.host,
                    port=d.port,
                    units={min(units): spec, **dict.fromkeys(sorted(units)[1:])},
                )
            )
            where = f"{d.host}:{mb.port} ({d.transport})"
        else:
            continue
        print(
            f"{d.id}: simulated PLC ({mode}, a cycle every {PLC_CYCLE_S:g} s) on {where}",
            flush=True,
        )
        n += 1
    return n


def _program(load: Any, spec: CycleSpec, device: str) -> Any:
    try:
        return load(spec)
    except ValueError as exc:  # the line's signals are not the station program's variables
        print(f"{device}: serving its signals without a station program ({exc})", flush=True)
        return None


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _scanners(
    loaded: LoadedConfig,
    rate: float,
    sims: list[tuple[str, ScannerSim]],
    stack: contextlib.AsyncExitStack,
    plcs: int,
) -> None:
    for d in loaded.config.devices:
        if isinstance(d, TcpScannerConfig):
            if not _is_local(d.host):
                print(f"{d.id}: skipped, {d.host} is not this machine", flush=True)
                continue
            term = "cr" if d.framing.terminator == "cr" else "crlf"
            sims.append((d.id, TcpScannerSim(d.host, d.port, terminator=term)))
        elif isinstance(d, SerialScannerConfig):
            sims.append((d.id, SerialScannerSim(link=_free_link(Path(d.port)))))
    for dev, sim in sims:
        await stack.enter_async_context(sim)
        where = f"127.0.0.1:{sim.port}" if isinstance(sim, TcpScannerSim) else sim.path  # type: ignore[attr-defined]
        print(f"{dev}: simulated on {where}", flush=True)
    if not sims and not plcs:
        print("no device of this line can be simulated here", flush=True)
        return
    gen = CodeGenerator(1)
    async with asyncio.TaskGroup() as tg:
        for _, sim in sims:
            tg.create_task(_feed(sim, [gen.make("gs1_datamatrix") for _ in range(100_000)], rate))
        await asyncio.Event().wait()  # until Ctrl-C


def _free_link(port: Path) -> Path | None:
    """The configured port path, if the simulator may create it as a link to its pty."""
    if port.parent.is_dir() and os.access(port.parent, os.W_OK) and not port.exists():
        return port
    return None


def _is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
