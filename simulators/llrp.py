"""LLRP reader simulator: an asyncio TCP server that speaks LLRP 1.1 as an Impinj or Zebra fixed
reader does, for tests and for trying a line file without a reader. This module is its API
for tests and its command line; the parts are:

- `simulators.llrp_server`: the TCP port, one controlling client at a time, dispatch, replies,
  keepalives, events and reports sent, held or lost;
- `simulators.llrp_reader`, `llrp_config`, `llrp_rospec`: the reader's state (configuration,
  ROSpecs with their state machine and triggers, GPIO) and the requests on it;
- `simulators.llrp_models`: the reader models; `simulators.llrp_codec`: the wire;
- `simulators.llrp_scenario`: the physics of tags in a portal and the ground truth.

Owns what a test does to a reader: waiting for a state, playing tags (passes, bursts, strays,
floods, whole scenarios) in real time, setting GPI levels, and the faults of real readers:
abrupt drops, silence, garbage, malformed frames, refused connections, a stale session that
outlives a drop, reboots.

    async with LlrpReaderSim(model="impinj-r700", seed=1) as sim:   # 127.0.0.1, sim.port
        await sim.wait_inventorying(timeout=5)
        truth = await sim.run_passes([TagPass(epc="3074257bf7194e4000001a85")], miss_share=0.2)

    python -m simulators.llrp --model impinj-r700 --port 5084 --scenario portal.yaml

Invariants. Reader state (configuration, ROSpecs, GPIO) outlives connections, as on a real
reader, until `restart()` or a ResetToFactoryDefault. Reads while no client is connected, no
ROSpec is active on their antenna, or the reader is silent, are not delivered, unless the
client asked the reader to hold events and reports (then they wait for its
ENABLE_EVENTS_AND_REPORTS).

Simplifications: one AISpec per ROSpec and one InventoryParameterSpec per AISpec (the
capabilities say so); no AccessSpecs (ADD_ACCESSSPEC is refused); a read is reported once, by
the highest-priority active ROSpec that inventories its antenna; an ROSpec is done when its
AISpec is, and is not started again by an Immediate trigger; Gen2 sessions and tag persistence
are not modelled. One deviation from LLRP, on purpose: a report batch of N > 1 tags also goes
out `flush_after_s` after its first read (None: never), so a slow trickle is not held back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from simulators import cli
from simulators import llrp_codec as codec
from simulators.llrp_codec import Msg, P
from simulators.llrp_config import ReaderConfig
from simulators.llrp_models import READER_MODELS
from simulators.llrp_reader import GpoWrite
from simulators.llrp_rospec import AddedRoSpec
from simulators.llrp_scenario import (
    Burst,
    Flood,
    PassTruth,
    Physics,
    PortalScenario,
    StrayRead,
    TagPass,
    check_antennas,
    items_of,
    plan,
    sgtin96s,
)
from simulators.llrp_server import ReaderServer

__all__ = [
    "READER_MODELS",
    "Burst",
    "GpoWrite",
    "LlrpReaderSim",
    "PassTruth",
    "Physics",
    "PortalScenario",
    "StrayRead",
    "TagPass",
]


class LlrpReaderSim(ReaderServer):
    """A simulated LLRP reader on `host`:`port` (0: a free port, then in `port`).

    Counters for tests: `connection_attempts` (every TCP accept), `sessions` (accepted as the
    controlling client), `refused`, `keepalives_sent`, `keepalive_acks`, `reports_sent`
    (TagReportData written), `messages_sent` and `messages_received` (by message name).
    `truth` holds a `PassTruth` per tag of every run. Fault switches: `silent`, `stale_s`,
    `keepalives_enabled`. The reader's state is in `state`; its parts are here too."""

    @property
    def config(self) -> ReaderConfig:
        return self.state.config

    @property
    def rospecs(self) -> dict[int, AddedRoSpec]:
        return self.state.rospecs

    @property
    def gpi_state(self) -> dict[int, bool]:
        return self.state.gpi_state

    @property
    def gpo_state(self) -> dict[int, bool]:
        return self.state.gpo_state

    @property
    def gpo_history(self) -> list[GpoWrite]:
        return self.state.gpo_history

    @property
    def flush_after_s(self) -> float | None:
        return self.state.flush_after_s

    @flush_after_s.setter
    def flush_after_s(self, value: float | None) -> None:
        self.state.flush_after_s = value

    # --- waiting --------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.alive()

    @property
    def inventorying(self) -> bool:
        """A client is connected and a ROSpec is active: reads would be reported."""
        return self.connected and bool(self.state.active())

    # A timeout argument (ASYNC109) because the adapter tests read best so.
    async def wait_for(
        self,
        condition: Callable[[], Any],
        timeout: float | None = 5.0,  # noqa: ASYNC109
    ) -> None:
        """Return once `condition()` is true (checked at each change of state); raise
        TimeoutError after `timeout` seconds (None: wait as long as it takes)."""
        async with asyncio.timeout(timeout):
            while not condition():
                await self._change.wait()

    async def wait_connected(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        await self.wait_for(lambda: self.connected, timeout)

    async def wait_disconnected(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        await self.wait_for(lambda: self._session is None, timeout)

    async def wait_inventorying(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        await self.wait_for(lambda: self.inventorying, timeout)

    # --- faults ---------------------------------------------------------------------------------

    def refuse_next(self, count: int = 1) -> None:
        """Refuse the next `count` connections: "a client-initiated connection already
        exists", as a reader does that still holds another session."""
        self._refuse_next += count

    def drop_connection(self) -> bool:
        """Reset the client's connection (RST, nothing more sent), as a crashed reader or a cut
        cable does; with `stale_s`, the reader then believes the session exists that long.
        Whether there was a connection."""
        session = self._session
        if session is None or not session.alive():
            return False
        sock = session.writer.get_extra_info("socket")
        if sock is not None:
            # Linger on, timeout 0: close() sends RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        session.closing = True
        session.writer.transport.abort()
        self._go_stale()
        return True

    async def send_garbage(self, data: bytes | None = None) -> bytes:
        """Write `data` (default: 32 random bytes) to the client as they are, outside any
        frame; returns what was written."""
        garbage = self._rng.randbytes(32) if data is None else data
        await self._write_raw(garbage)
        return garbage

    async def send_malformed(self, kind: Literal["length", "parameter"] = "length") -> bytes:
        """Write a broken message: `length`, a header whose length (4) is shorter than the
        header itself, so the stream cannot be framed any further; `parameter`, a well-framed
        RO_ACCESS_REPORT whose TagReportData claims more bytes than the message holds."""
        if kind == "length":
            frame = codec.HEADER.pack((1 << 10) | Msg.RO_ACCESS_REPORT, 4, self._take_id())
        elif kind == "parameter":
            epc = codec.tv(codec.TV_EPC_96, bytes(12))
            body = struct.pack("!HH", P.TAG_REPORT_DATA, 200) + epc
            frame = codec.message(Msg.RO_ACCESS_REPORT, self._take_id(), body)
        else:
            raise ValueError(f"kind is length or parameter, not {kind!r}")
        await self._write_raw(frame)
        return frame

    async def _write_raw(self, data: bytes) -> None:
        session = self._session
        if session is None or not session.alive():
            raise RuntimeError("no client is connected")
        session.writer.write(data)
        await session.writer.drain()

    # --- GPIO -----------------------------------------------------------------------------------

    async def set_gpi(self, port: int, state: bool) -> None:
        """The level of a GPI port (a light barrier): a GPIEvent if the level changed, GPI
        events are enabled and the port is; GPI start and stop triggers fire."""
        await self.state.set_gpi(port, state)

    # --- tags -----------------------------------------------------------------------------------

    async def run_passes(
        self,
        passes: Iterable[TagPass],
        miss_share: float = 0.2,
        *,
        physics: Physics | None = None,
    ) -> list[PassTruth]:
        """Play tag passes (start times from now); return their truths once all are over."""
        base = physics or Physics()
        return await self.play(list(passes), dataclasses.replace(base, miss_share=miss_share))

    async def burst(
        self,
        epcs: Sequence[str],
        antennas: Sequence[int] = (1, 2),
        duration_s: float = 1.0,
        *,
        miss_share: float = 0.0,
    ) -> list[PassTruth]:
        """Tags all in the field at once (a pallet), sharing the reader's singulations."""
        burst = Burst(tuple(epcs), tuple(antennas), 0.0, duration_s)
        return await self.play([burst], Physics(miss_share=miss_share))

    async def stray(self, epc: str, antenna: int = 1, reads: int = 1) -> PassTruth:
        """A tag of the neighbouring portal, glimpsed `reads` times."""
        (truth,) = await self.play([StrayRead(epc, antenna, 0.0, reads)], Physics())
        return truth

    async def run_scenario(self, scenario: PortalScenario) -> list[PassTruth]:
        """Play a scenario once: planned items and floods together."""
        planned, floods = items_of(scenario)
        tasks = [self._spawn(self._delayed_flood(f)) for f in floods]
        try:
            return await self.play(planned, scenario.physics)
        finally:
            await asyncio.gather(*tasks)

    async def play(
        self, items: Sequence[TagPass | Burst | StrayRead], physics: Physics
    ) -> list[PassTruth]:
        """Plan `items` with the next seed and play the reads in real time; return their
        truths (also appended to `truth`) when the last item is over and its reports sent."""
        check_antennas(items, self.model.antennas)
        loop = asyncio.get_running_loop()
        start, wall = loop.time(), time.time()
        reads, truths = plan(items, physics, self._rng.randrange(1 << 32), wall)
        self.truth += truths
        i = 0
        while i < len(reads):
            await asyncio.sleep(max(0.0, start + reads[i].t_s - loop.time()))
            now = loop.time() - start + 0.002  # what is due within 2 ms goes now
            while i < len(reads) and reads[i].t_s <= now:
                r, stamp = reads[i], self._utc_us(wall + reads[i].t_s)
                floor = physics.sensitivity_dbm
                self._tag(r.epc, r.antenna, r.rssi, stamp, truths[r.truth], floor=floor)
                i += 1
            await self._drain()
        end = max((t.end_s for t in truths), default=wall)
        await asyncio.sleep(max(0.0, end - time.time()))
        await self._settle()
        return truths

    async def flood(
        self,
        reads_per_s: float,
        duration_s: float,
        epcs: Sequence[str] | None = None,
        antennas: Sequence[int] | None = None,
    ) -> int:
        """`reads_per_s` reads for `duration_s` (all of them, later if the client reads
        slower), cycling over `epcs` (default: 1000 generated) and `antennas` (default: those
        of the active ROSpec); returns the tag reports sent."""
        if antennas is None:
            active = self.state.active()
            ants = active[0].antennas if active else [1]
            antennas = list(range(1, self.model.antennas + 1)) if ants == [0] else ants
        tags = tuple(epcs) if epcs else sgtin96s(1000, self._rng.randrange(1 << 32))
        tally = PassTruth("flood", "*", None, tuple(antennas), time.time(), 0.0)
        rssi = [self._rng.randint(-70, -40) for _ in tags]
        total, done = round(reads_per_s * duration_s), 0
        loop = asyncio.get_running_loop()
        start = loop.time()
        while done < total:
            due = min(total, int((loop.time() - start) * reads_per_s) + 1)
            stamp = self._utc_us(time.time())
            for k in range(done, due):
                n = k % len(tags)
                tally.planned += 1
                self._tag(tags[n], antennas[k % len(antennas)], rssi[n], stamp, tally)
            done = due
            await self._drain()
            await asyncio.sleep(0.005)
        await self._settle()
        tally.end_s = time.time()
        return tally.reads_delivered

    async def _delayed_flood(self, f: Flood) -> None:
        await asyncio.sleep(f.start_s)
        await self.flood(f.reads_per_s, f.duration_s, f.epcs, f.antennas)

    async def _settle(self) -> None:
        # Reports in batches waiting for their flush timer go out within flush_after_s.
        if self.flush_after_s is None:
            return
        with contextlib.suppress(TimeoutError):
            await self.wait_for(
                lambda: not any(rs.pending and rs.flush_timer for rs in self.rospecs.values()),
                self.flush_after_s + 1.0,
            )
        await self._drain()

    def _tag(
        self, epc: str, antenna: int, rssi: int, t_us: int, truth: PassTruth, *, floor: float = -128
    ) -> None:
        """One read, for the reader's state to report (see `ReaderState.tag`), or not delivered
        if the reader is silent or nobody is connected and nothing is held."""
        if self.silent or (not self.connected and not self.state.config.hold):
            truth.not_delivered += 1
            return
        self.state.tag(epc, antenna, rssi, t_us, truth, floor=floor)


# --- command line -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.llrp",
        description="Simulated LLRP RFID reader (Impinj or Zebra) serving LLRP 1.1 over TCP.",
    )
    parser.add_argument("--model", choices=sorted(READER_MODELS), default="impinj-r700")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5084, help="0: any free port (printed)")
    parser.add_argument("--scenario", type=Path, help="portal scenario YAML file")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _summary(truths: Sequence[PassTruth]) -> str:
    sent = sum(t.reads_delivered for t in truths)
    lost = sum(t.not_delivered for t in truths)
    return f"{len(truths)} tags, {sent} reads sent, {lost} not delivered"


async def _main(args: argparse.Namespace) -> None:
    scenario = PortalScenario.from_yaml(args.scenario) if args.scenario else None
    async with LlrpReaderSim(args.model, args.host, args.port, seed=args.seed) as sim:
        print(f"llrp reader {args.model} listening on {sim.host}:{sim.port}", flush=True)
        while scenario is not None:
            print("waiting for a client to start inventory", flush=True)
            await sim.wait_for(lambda: sim.inventorying, timeout=None)
            truths = await sim.run_scenario(scenario)
            print(f"scenario played: {_summary(truths)}", flush=True)
            if not scenario.repeat:
                break
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, _parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
