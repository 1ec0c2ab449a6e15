"""The faults of a virtual line's scenario, played one after the other as the units they are
tied to enter the line: gateway kills (SIGKILL at a random moment, restarted at once), broker
outages, PLC restarts, reader disconnects, and device faults (a scanner, PLC or reader
restarted, silent for a while, or sending garbage). Each is recorded in the truth
(`FaultRecord`) with when it began and ended, when the gateway was back at work (`recovered`),
and the stations where it may cause events of its own (`handshake.error` for a write to a PLC
that is restarting).

A fault that would lose what scanners or a reader sent into the gateway first holds the line's
scanner and portal stations (`Interlock.hold`): their running jobs end, what the gateway owes
for them is delivered, then the fault strikes; handshake stations keep working through it
(their PLCs wait for the ack), so kills land at random moments of their handshakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import TYPE_CHECKING

from simulators.line_scenario import AtUnit, DeviceFault, Station
from simulators.line_truth import FaultRecord

if TYPE_CHECKING:
    from simulators.line import VirtualLine

Fault = tuple[int, float, str, AtUnit | DeviceFault | None]  # at unit, after s, kind, spec


class FaultDriver:
    def __init__(self, line: VirtualLine) -> None:
        self.line = line
        sc = line.sc
        f = sc.faults
        rng = random.Random(f"{sc.seed}:kills")
        plan: list[Fault] = []
        kills = f.gateway_kills
        if kills.count:
            last = kills.to_unit or sc.units or kills.from_unit + 10 * kills.count
            span = range(kills.from_unit, max(kills.from_unit, last) + 1)
            for n in sorted(rng.sample(span, min(kills.count, len(span)))):
                plan.append((n, rng.uniform(0.0, 3 * sc.takt_s), "gateway_kill", None))
        plan += [(o.at_unit, 0.0, "broker_outage", o) for o in f.broker_outages]
        plan += [(r.at_unit, 0.0, "plc_restart", r) for r in f.plc_restarts]
        plan += [(r.at_unit, 0.0, "reader_disconnect", r) for r in f.reader_disconnects]
        plan += [(d.at_unit, 0.0, "device_fault", d) for d in f.device_faults]
        self.plan = sorted(plan, key=lambda x: (x[0], x[1]))
        self.kills = 0
        self.needs_gateway = bool(kills.count)

    async def run(self) -> None:
        line = self.line
        for at, after, kind, spec in self.plan:
            await line.until(lambda at=at: line.entered >= at or line.fed_all)
            if line.entered < at:
                line.truth.notes.append(f"{kind} at unit {at} skipped: the run had {line.entered}")
                continue
            await asyncio.sleep(after)  # a random moment of that unit's time on the line
            try:
                await self.strike(kind, spec)
            except TimeoutError as exc:  # the gateway did not come back: the truth says so
                line.truth.notes.append(f"{kind} at unit {at}: {exc}")

    async def strike(self, kind: str, spec: AtUnit | DeviceFault | None) -> None:
        if isinstance(spec, DeviceFault):
            await self.device_fault(spec)
        elif kind == "gateway_kill":
            await self.kill()
        elif kind == "broker_outage":
            assert isinstance(spec, AtUnit)
            await self.outage(spec.duration_s)
        elif kind == "plc_restart":
            assert spec is not None and spec.device is not None
            await self.plc_restart(spec.device)
        else:
            assert spec is not None
            await self.reader_disconnect(spec.device)

    async def kill(self) -> None:
        """Every other kill is aimed between a handshake's commit and its ack: the OPC UA PLCs
        hold the gateway's writes, and the kill strikes once a handshake station's record has
        reached the MES (committed) while its ack is still held. That is where a gateway that
        is not exactly-once records a cycle twice. (Random kills land in the same window now
        and then, at the Modbus laser too: a serial given twice.)"""
        line = self.line
        assert line.gateway is not None
        self.kills += 1
        aimed = self.kills % 2 == 0
        try:
            # Aimed while the line runs: held scanner stations feed no unit to the handshake.
            if aimed:
                await self._a_handshake_recorded()
            async with line.core.interlock.hold():
                held = line.held_stations()
                await line.owed(held, 20.0, "the scanner stations' events before a kill")
                rec = line.truth.fault(
                    "gateway_kill", line.sc.line.gateway, note="aimed" if aimed else ""
                )
                onlines = line.mes.onlines
                line.kill_aimed = aimed  # for a GatewayControl that strikes in its own way
                await line.gateway.kill()
                self._hold_writes(False)
                await line.gone()
                await line.gateway.start()
                await line.ready(onlines=onlines + 1)
                rec.end = rec.recovered = time.time()
        finally:
            self._hold_writes(False)

    def _aimed_stations(self) -> list[Station]:
        """Where an aimed kill holds the PLC's writes: OPC UA handshake stations, whose request
        timeout (4 s) outlasts the hold; a Modbus write would time out (1 s) first and be
        recorded as `handshake.error`."""
        line = self.line
        return [
            s
            for s in line.sc.stations
            if s.plc is not None and s.program == "handshake" and s.plc.id in line.opcua
        ]

    def _hold_writes(self, held: bool) -> None:
        for st in self._aimed_stations():
            assert st.plc is not None
            self.line.opcua[st.plc.id].hold_writes(held)

    async def _a_handshake_recorded(self) -> None:
        mes = self.line.mes
        stations = [s.id for s in self._aimed_stations()]
        before = {s: mes.station_count(s) for s in stations}
        # The PLCs hold the gateway's writes (acks) while the records travel to the MES: the
        # kill then strikes between commit and ack whatever the machine's load (a slow answer
        # instead left it to a race between the ack and the broker's delivery).
        self._hold_writes(True)
        with contextlib.suppress(TimeoutError):
            await mes.wait(
                lambda: any(mes.station_count(s) > n for s, n in before.items()),
                3.0,
                "a handshake recorded",
            )

    async def outage(self, duration_s: float) -> None:
        line = self.line
        broker = line.broker
        if broker is None:
            line.truth.notes.append("broker outage skipped: the line does not own the broker")
            return
        rec = line.truth.fault("broker_outage", f"{broker.host}:{broker.port}")
        onlines = line.mes.onlines
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(duration_s)  # the outage's length (the line goes on meanwhile)
        await asyncio.to_thread(broker.start)
        rec.end = time.time()
        # Recovered: the gateway online again and its backlog delivered (the line goes on, so
        # "owing nothing" is met between two of its events).
        with contextlib.suppress(TimeoutError):
            await line.mes.wait(
                lambda: line.mes.onlines > onlines and not line.owing(None),
                max(60.0, duration_s),
                "the gateway's backlog after a broker outage",
            )
            rec.recovered = time.time()

    async def plc_restart(self, device: str) -> None:
        line = self.line
        st = next(s for s in line.sc.stations if s.plc is not None and s.plc.id == device)
        rec = line.truth.fault("plc_restart", device, stations=(st.id,))
        if st.program == "trigger":
            # Cycles that end while its server is down are not seen: the PLC waits, as the
            # station's program would for the traceability link.
            async with line.core.interlock.hold():
                await line.owed(line.held_stations(), 20.0, "events before a PLC restart")
                await self._restart(device)
                await line.ready(onlines=line.mes.onlines)
        else:
            await self._restart(device)
        rec.end = rec.recovered = time.time()

    async def _restart(self, device: str) -> None:
        line = self.line
        if device in line.opcua:
            await line.opcua[device].restart()
        else:
            await line.modbus[device].restart()

    async def reader_disconnect(self, device: str | None) -> None:
        line = self.line
        name = device or next(iter(line.readers))
        reader = line.readers[name]
        async with line.core.interlock.hold():
            await line.owed(line.held_stations(), 20.0, "the portal's events before a disconnect")
            rec = line.truth.fault("reader_disconnect", name)
            reader.drop_connection()
            await reader.wait_disconnected(timeout=10)
            await reader.wait_inventorying(timeout=60)
            rec.end = rec.recovered = time.time()

    # --- devices restarted, silent, sending garbage ----------------------------------------------

    async def device_fault(self, f: DeviceFault) -> None:
        """A scanner, PLC or reader restarted, silent for a while, or sending garbage. A fault
        that would lose what the device sends holds the line's scanner and portal stations
        first (as for a kill); one at a handshake station strikes while the line runs: the PLC
        waits for its ack, and `handshake.error` at that station is the fault's own event."""
        line = self.line
        name = f.device
        st = next(
            s
            for s in line.sc.stations
            if name in {d.id for d in (s.scanner, s.plc, s.reader) if d is not None}
        )
        if f.kind == "restart" and (name in line.opcua or name in line.modbus):
            await self.plc_restart(name)
        elif f.kind == "restart" and name in line.readers:
            await self.reader_disconnect(name)
        elif name in line.opcua or name in line.modbus:
            await self._plc_fault(f, st)
        else:
            async with line.core.interlock.hold():
                await line.owed(line.held_stations(), 20.0, f"events before {name}'s {f.kind}")
                kind = "scanner" if name in line.scanners else "reader"
                rec = line.truth.fault(f"{kind}_{f.kind}", name, stations=(st.id,))
                if name in line.scanners:
                    await self._scanner_fault(f, rec)
                else:
                    await self._reader_fault(f, rec)
                rec.recovered = time.time()

    async def _scanner_fault(self, f: DeviceFault, rec: FaultRecord) -> None:
        """The fault, its end recorded; returns once the gateway reads the scanner again."""
        from simulators.line import READY_S  # (simulators.line imports this module)

        sim = self.line.scanners[f.device]
        if f.kind == "restart":
            await sim.unplug()
            await sim.replug()
            rec.end = time.time()
            async with asyncio.timeout(READY_S):
                await sim.wait_client()
        elif f.kind == "silence":
            await asyncio.sleep(f.duration_s)  # connected, nothing scanned: nothing to record
        else:
            # Noise (a wrong baud rate) and frames longer than any code: dropped with a
            # warning, never an event; the connection stays.
            loop = asyncio.get_running_loop()
            until = loop.time() + f.duration_s
            while loop.time() < until:
                await sim.send_garbage()
                await sim.send_too_long(10_000)  # over every profile's max_code_bytes
                await asyncio.sleep(0.05)  # a burst every 50 ms, for duration_s
        rec.end = rec.end or time.time()

    async def _reader_fault(self, f: DeviceFault, rec: FaultRecord) -> None:
        """The fault, its end recorded; returns once the reader inventories for the gateway
        again."""
        reader = self.line.readers[f.device]
        if f.kind == "silence":
            # Keepalives stop too: the gateway's watchdog notices and reconnects.
            reader.silent = True
            try:
                await asyncio.sleep(f.duration_s)
            finally:
                reader.silent = False
        else:
            # A report that claims more than it holds (skipped), then a header that cannot be
            # framed (the connection is unusable: the gateway drops it and reconnects).
            await reader.send_malformed("parameter")
            await reader.send_garbage()
            await reader.send_malformed("length")
        rec.end = time.time()
        await reader.wait_inventorying(timeout=60)

    async def _plc_fault(self, f: DeviceFault, st: Station) -> None:
        from simulators.line import poll_until  # (simulators.line imports this module)

        line = self.line
        name = f.device
        if name in line.opcua and f.kind == "garbage":
            line.truth.notes.append(f"{name}: an OPC UA server sends no garbage (skipped)")
            return
        hold = line.core.interlock.hold() if st.program == "trigger" else contextlib.nullcontext()
        async with hold:
            if st.program == "trigger":
                await line.owed(line.held_stations(), 20.0, f"events before {name}'s {f.kind}")
            rec = line.truth.fault(f"plc_{f.kind}", name, stations=(st.id,))
            if name in line.opcua:
                sim = line.opcua[name]
                sim.pause()  # reads, writes and keepalives hang
                try:
                    await asyncio.sleep(f.duration_s)
                finally:
                    sim.resume()
            else:
                mb = line.modbus[name]
                units = set(mb.specs)
                if f.kind == "silence":
                    mb.faults.silent.update(units)
                else:
                    mb.faults.garbage = True
                try:
                    await asyncio.sleep(f.duration_s)
                finally:
                    mb.faults.silent.difference_update(units)
                    mb.faults.garbage = False
            rec.end = time.time()
            if name in line.modbus:  # back: the gateway polls it again
                mb = line.modbus[name]
                n = sum(mb.requests.values())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(30):
                        await poll_until(lambda: sum(mb.requests.values()) > n + 2)
            # ... and what the station did meanwhile has arrived.
            with contextlib.suppress(TimeoutError):
                await line.mes.wait(
                    lambda: not line.owing(frozenset({st.id})), 30, f"{st.id} after a fault"
                )
            rec.recovered = time.time()
