"""LLRP reader simulator: an asyncio TCP server that speaks LLRP 1.1 as an Impinj or Zebra fixed
reader does, for tests and for trying a line file without a reader.

Owns what a reader does on its LLRP port: one controlling client at a time (a second one is
refused with a ConnectionAttemptEvent, and the holder told); the reader configuration; ROSpecs
with their state machine (Disabled, Inactive, Active), start and stop triggers; tag reports as
the ROReportSpec asks; keepalives; GPI events and GPO writes; and the faults of real readers:
abrupt drops, silence, garbage, malformed frames, refused connections, a stale session that
outlives a drop, reboots. The wire is `simulators.llrp_codec`; the physics of tags in a portal
and the ground truth are `simulators.llrp_scenario`.

    async with LlrpReaderSim(model="impinj-r700", seed=1) as sim:   # 127.0.0.1, sim.port
        await sim.wait_inventorying(timeout=5)
        truth = await sim.run_passes([TagPass(epc="3074257bf7194e4000001a85")], miss_share=0.2)

    python -m simulators.llrp --model impinj-r700 --port 5084 --scenario portal.yaml

Invariants. Reader state (configuration, ROSpecs, GPIO) outlives connections, as on a real
reader, until `restart()` or a ResetToFactoryDefault. State changes happen synchronously in the
request handler, before the next request is read, so a client sees them in order; timers only
decide when. Each message is one `write()`, so messages never interleave. A read counts as sent
once its RO_ACCESS_REPORT is written; reads while no client is connected, no ROSpec is active
on their antenna, or the reader is silent, are not delivered, unless the client asked the
reader to hold events and reports (then they wait for its ENABLE_EVENTS_AND_REPORTS).

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
import random
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, NamedTuple, Self

import structlog

from simulators import cli
from simulators import llrp_codec as codec
from simulators.llrp_codec import (
    AntennaConfig,
    ContentSelector,
    Header,
    LlrpError,
    Msg,
    P,
    ReaderModel,
    ReportSpec,
    RfMode,
    RoSpec,
    Status,
    TagRead,
)
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

log = structlog.get_logger("simulators.llrp")


def _impinj_modes() -> list[RfMode]:
    # Impinj's ModeIdentifiers (the reader wants these as C1G2RFControl's ModeIndex): the
    # classic modes 0-4 and the AutoSet modes, whose table values are only nominal.
    return [
        RfMode(0, 0, 640_000, 1500, 6250, 6250, mask=2),
        RfMode(1, 1, 640_000, 1500, 6250, 6250, mask=2),
        RfMode(2, 2, 274_000, 2000, 20_000, 20_000, mask=3),
        RfMode(3, 3, 170_600, 2000, 20_000, 20_000, mask=3),
        RfMode(4, 2, 640_000, 1500, 7140, 7140, mask=2),
        RfMode(1000, 2, 274_000, 2000, 6250, 25_000, step_tari=6250, mask=3),
        RfMode(1002, 2, 274_000, 2000, 6250, 25_000, step_tari=6250, mask=3),
        RfMode(1003, 2, 274_000, 2000, 6250, 25_000, step_tari=6250, mask=3),
        RfMode(1004, 2, 274_000, 2000, 6250, 25_000, step_tari=6250, mask=3),
        RfMode(1005, 1, 320_000, 1500, 6250, 25_000, step_tari=6250, mask=3),
    ]


def _zebra_modes() -> list[RfMode]:
    # Zebra numbers its table rows 0..n and takes the row as ModeIndex.
    rows = [
        (0, 640_000, 1500, 6250),
        (1, 320_000, 1500, 6250),
        (2, 256_000, 2000, 12_500),
        (2, 160_000, 2000, 25_000),
        (3, 80_000, 2000, 25_000),
        (2, 320_000, 1500, 6250),
        (1, 250_000, 2000, 12_500),
    ]
    return [
        RfMode(i, m, bdr, pie, tari, tari, mask=3) for i, (m, bdr, pie, tari) in enumerate(rows)
    ]


READER_MODELS: Final[dict[str, ReaderModel]] = {
    "impinj-r700": ReaderModel(
        name="impinj-r700",
        manufacturer=25882,
        model_number=2001052,
        firmware="8.4.1.240",
        power_table_cdbm=tuple(range(1000, 3301, 25)),  # 10.00 .. 33.00 dBm
        modes=tuple(_impinj_modes()),
        antennas=4,
    ),
    "impinj-speedway-r420": ReaderModel(
        name="impinj-speedway-r420",
        manufacturer=25882,
        model_number=2001002,
        firmware="5.14.0.240",
        power_table_cdbm=tuple(range(1000, 3251, 25)),  # 10.00 .. 32.50 dBm
        modes=tuple(_impinj_modes()),
        antennas=4,
    ),
    "zebra-fx9600": ReaderModel(
        name="zebra-fx9600",
        manufacturer=161,
        model_number=9600,
        firmware="3.28.8.0",
        power_table_cdbm=tuple(range(1000, 3151, 10)),  # 10.0 .. 31.5 dBm
        modes=tuple(_zebra_modes()),
        antennas=8,
    ),
}
_OUI: Final = {25882: b"\x00\x16\x25", 161: b"\x84\x24\x8d"}  # the vendors' MAC prefixes

DISABLED, INACTIVE, ACTIVE = 0, 1, 2  # ROSpec states
EVENT_GPI, EVENT_ROSPEC = 1, 2  # EventNotificationState event types
CONNECTED, CLIENT_EXISTS, ANOTHER_ATTEMPT = 0, 2, 4  # ConnectionAttemptEvent status
MAX_REPORTS_PER_MESSAGE: Final = 1000
RESPONSES: Final[dict[int, int]] = {
    Msg.GET_READER_CAPABILITIES: Msg.GET_READER_CAPABILITIES_RESPONSE,
    Msg.GET_READER_CONFIG: Msg.GET_READER_CONFIG_RESPONSE,
    Msg.SET_READER_CONFIG: Msg.SET_READER_CONFIG_RESPONSE,
    Msg.CLOSE_CONNECTION: Msg.CLOSE_CONNECTION_RESPONSE,
    Msg.ADD_ROSPEC: Msg.ADD_ROSPEC_RESPONSE,
    Msg.DELETE_ROSPEC: Msg.DELETE_ROSPEC_RESPONSE,
    Msg.START_ROSPEC: Msg.START_ROSPEC_RESPONSE,
    Msg.STOP_ROSPEC: Msg.STOP_ROSPEC_RESPONSE,
    Msg.ENABLE_ROSPEC: Msg.ENABLE_ROSPEC_RESPONSE,
    Msg.DISABLE_ROSPEC: Msg.DISABLE_ROSPEC_RESPONSE,
    Msg.GET_ROSPECS: Msg.GET_ROSPECS_RESPONSE,
    Msg.ADD_ACCESSSPEC: Msg.ADD_ACCESSSPEC_RESPONSE,
    Msg.DELETE_ACCESSSPEC: Msg.DELETE_ACCESSSPEC_RESPONSE,
    Msg.ENABLE_ACCESSSPEC: Msg.ENABLE_ACCESSSPEC_RESPONSE,
    Msg.DISABLE_ACCESSSPEC: Msg.DISABLE_ACCESSSPEC_RESPONSE,
    Msg.GET_ACCESSSPECS: Msg.GET_ACCESSSPECS_RESPONSE,
    Msg.GET_SUPPORTED_VERSION: Msg.GET_SUPPORTED_VERSION_RESPONSE,
    Msg.SET_PROTOCOL_VERSION: Msg.SET_PROTOCOL_VERSION_RESPONSE,
}


class GpoWrite(NamedTuple):
    """A GPO write a client made: `for at, port, state in sim.gpo_history`."""

    time: float  # UTC seconds
    port: int
    state: bool


@dataclass(slots=True)
class _Antenna:
    """One antenna's settings in the reader configuration (AntennaConfiguration)."""

    power_index: int
    mode_index: int
    channel: int = 1
    sensitivity: int = 1
    tari: int = 0
    session: int = 2
    population: int = 32
    transit_ms: int = 0

    def apply(self, conf: AntennaConfig) -> None:
        self.sensitivity = conf.receiver_sensitivity or self.sensitivity
        self.channel = conf.channel or self.channel
        self.power_index = conf.power_index or self.power_index
        inv = conf.inventory
        if inv is not None:
            self.mode_index = inv.mode_index if inv.mode_index is not None else self.mode_index
            self.tari = inv.tari if inv.tari is not None else self.tari
            self.session = inv.session if inv.session is not None else self.session
            if inv.tag_population is not None:
                self.population = inv.tag_population
            if inv.tag_transit_ms is not None:
                self.transit_ms = inv.tag_transit_ms


@dataclass
class _Config:
    """The reader configuration: what GET_READER_CONFIG reports and SET_READER_CONFIG sets."""

    antennas: dict[int, _Antenna]
    events: dict[int, bool] = field(default_factory=lambda: dict.fromkeys(range(10), False))
    report: ReportSpec = field(default_factory=lambda: ReportSpec(1, 1))
    access_report_trigger: int = 0
    keepalive: tuple[int, int] = (0, 0)  # trigger type (1: periodic), interval ms
    gpi_enabled: dict[int, bool] = field(default_factory=dict)
    hold: bool = False  # HoldEventsAndReportsUponReconnect

    @classmethod
    def defaults(cls, model: ReaderModel) -> _Config:
        top = len(model.power_table_cdbm)
        mode = model.modes[0].id
        return cls(
            {a: _Antenna(top, mode) for a in range(1, model.antennas + 1)},
            gpi_enabled=dict.fromkeys(range(1, model.num_gpi + 1), True),
        )


@dataclass
class _RoSpec:
    """An added ROSpec and what it is doing."""

    spec: RoSpec
    state: int = DISABLED
    pending: list[tuple[TagRead, PassTruth]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # EPCs of this run (tag observation trigger)
    flush: asyncio.TimerHandle | None = None
    stop_timer: asyncio.TimerHandle | None = None
    periodic: asyncio.Task[None] | None = None

    @property
    def id(self) -> int:
        return self.spec.id

    @property
    def antennas(self) -> list[int]:
        return self.spec.aispecs[0].antennas

    def covers(self, antenna: int) -> bool:
        return self.antennas == [0] or antenna in self.antennas

    def antenna_config(self, antenna: int) -> AntennaConfig | None:
        for conf in self.spec.aispecs[0].antenna_configs:
            if conf.antenna in (0, antenna):
                return conf
        return None


@dataclass
class _Session:
    """One client connection. `holding`: the client asked (HoldEventsAndReportsUponReconnect)
    that events and reports wait for its ENABLE_EVENTS_AND_REPORTS."""

    writer: asyncio.StreamWriter
    holding: bool
    version: int = 1
    keepalive: asyncio.Task[None] | None = None
    closing: bool = False

    def alive(self) -> bool:
        return not self.closing and not self.writer.is_closing()


@dataclass(slots=True)
class _Outgoing:
    """An event or a report batch on its way to the client: sent at once, or held."""

    body: bytes | None = None  # a READER_EVENT_NOTIFICATION's body
    selector: ContentSelector | None = None
    reads: list[tuple[TagRead, PassTruth]] = field(default_factory=list)


Handler = Callable[[_Session, Header, bytes], None]


class LlrpReaderSim:
    """A simulated LLRP reader on `host`:`port` (0: a free port, then in `port`).

    Counters for tests: `connection_attempts` (every TCP accept), `sessions` (accepted as the
    controlling client), `refused`, `keepalives_sent`, `keepalive_acks`, `reports_sent`
    (TagReportData written), `messages_sent` and `messages_received` (by message name).
    `truth` holds a `PassTruth` per tag of every run."""

    def __init__(
        self,
        model: str | ReaderModel = "impinj-r700",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        seed: int = 0,
        clock_offset_s: float = 0.0,
        flush_after_s: float | None = 0.1,
    ) -> None:
        self.model = READER_MODELS[model] if isinstance(model, str) else model
        self.host, self.port = host, port
        self.clock_offset_s = clock_offset_s
        self.flush_after_s = flush_after_s
        # Faults.
        self.keepalives_enabled = True
        self.silent = False  # nothing answered or sent; TCP stays up
        self.stale_s = 0.0  # after an abrupt drop, the old session "exists" this long
        self._refuse_next = 0
        self._stale_until = 0.0
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._session: _Session | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._change = asyncio.Event()
        oui = _OUI.get(self.model.manufacturer, b"\x02\x00\x00")
        self._mac = oui + b"\xff\xfe" + self._rng.randbytes(3)  # EUI-64 from the MAC-48
        self._dispatch = self._handlers()
        self._reset_state()
        self.connection_attempts = self.sessions = self.refused = 0
        self.keepalives_sent = self.keepalive_acks = self.reports_sent = 0
        self.messages_sent: Counter[str] = Counter()
        self.messages_received: Counter[str] = Counter()
        self.truth: list[PassTruth] = []

    def _reset_state(self) -> None:
        self.config = _Config.defaults(self.model)
        self.rospecs: dict[int, _RoSpec] = {}
        self.gpi_state: dict[int, bool] = dict.fromkeys(range(1, self.model.num_gpi + 1), False)
        self.gpo_state: dict[int, bool] = dict.fromkeys(range(1, self.model.num_gpo + 1), False)
        self.gpo_history: list[GpoWrite] = []
        self._held: list[_Outgoing] = []
        self._config_state = 1  # LLRPConfigurationStateValue: changes with the configuration
        self._next_id = 1

    # --- life cycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, close the connection (FIN), end every timer."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for rs in self.rospecs.values():
            self._stop_timers(rs)
        if self._session is not None:
            self._session.writer.close()
        tasks = [*self._connections, *self._tasks]
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def restart(self, down_s: float = 0.0) -> None:
        """A reboot: listener and connection closed, `down_s` offline, then listening again on
        the same port with the factory configuration and no ROSpecs. Counters are kept."""
        await self.stop()
        self._reset_state()
        self._stale_until = 0.0
        if down_s:
            await asyncio.sleep(down_s)
        await self.start()
        self._changed()

    # --- waiting --------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.alive()

    @property
    def inventorying(self) -> bool:
        """A client is connected and a ROSpec is active: reads would be reported."""
        return self.connected and any(rs.state == ACTIVE for rs in self.rospecs.values())

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

    def _changed(self) -> None:
        # Wake every waiter; the next ones wait on a fresh event.
        self._change.set()
        self._change = asyncio.Event()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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

    def _go_stale(self) -> None:
        if self.stale_s > 0:
            self._stale_until = asyncio.get_running_loop().time() + self.stale_s

    # --- GPIO -----------------------------------------------------------------------------------

    async def set_gpi(self, port: int, state: bool) -> None:
        """The level of a GPI port (a light barrier): a GPIEvent if the level changed, GPI
        events are enabled and the port is; GPI start and stop triggers fire."""
        if port not in self.gpi_state:
            raise ValueError(f"GPI port {port} does not exist (1..{self.model.num_gpi})")
        if self.gpi_state[port] == state:
            return
        self.gpi_state[port] = state
        if not self.config.gpi_enabled.get(port, False):
            return
        if self.config.events[EVENT_GPI]:
            self._event(codec.gpi_event(port, state))
        for rs in list(self.rospecs.values()):
            start, stop = rs.spec.start, rs.spec.stop
            ai_stop = rs.spec.aispecs[0].stop
            if rs.state == INACTIVE and start.kind == 3 and _fires(start.gpi, port, state):
                self._activate(rs)
            elif rs.state == ACTIVE and any(
                t.kind == 2 and _fires(t.gpi, port, state) for t in (stop, ai_stop)
            ):
                self._deactivate(rs)
        await self._drain()

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
            active = [rs for rs in self.rospecs.values() if rs.state == ACTIVE]
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
                lambda: not any(rs.pending and rs.flush for rs in self.rospecs.values()),
                self.flush_after_s + 1.0,
            )
        await self._drain()

    async def _drain(self) -> None:
        session = self._session
        if session is not None and session.alive():
            with contextlib.suppress(ConnectionError):
                await session.writer.drain()

    def _utc_us(self, wall: float) -> int:
        return int((wall + self.clock_offset_s) * 1_000_000)

    def _tag(
        self, epc: str, antenna: int, rssi: int, t_us: int, truth: PassTruth, *, floor: float = -128
    ) -> None:
        """One read (`rssi` at full power): into the report batch of the ROSpec that takes it,
        missed if the antenna's transmit power makes it weaker than `floor`, or not delivered."""
        rs = self._taker(antenna)
        if rs is None or self.silent or (not self.connected and not self.config.hold):
            truth.not_delivered += 1
            return
        conf = rs.antenna_config(antenna)
        power = (conf.power_index if conf else None) or self.config.antennas[antenna].power_index
        table = self.model.power_table_cdbm
        # The tag's reply weakens dB for dB with the transmit power.
        rssi += round((table[power - 1] - max(table)) / 100)
        if rssi < floor:
            truth.missed += 1
            return
        channel = (conf.channel if conf else None) or self.config.antennas[antenna].channel
        ips = rs.spec.aispecs[0].inventory_specs[0]
        read = TagRead(epc, antenna, rssi, t_us, t_us, 1, rs.id, 1, ips, channel)
        rs.pending.append((read, truth))
        rs.seen.add(epc)
        report = rs.spec.report or self.config.report
        if report.trigger in (1, 2) and report.n and len(rs.pending) >= report.n:
            self._flush(rs)
        elif rs.flush is None:
            delay = _flush_delay(report, self.flush_after_s)
            if delay is not None:
                rs.flush = asyncio.get_running_loop().call_later(delay, self._flush, rs)
        observe = rs.spec.aispecs[0].stop
        if observe.kind == 3 and observe.n_tags and len(rs.seen) >= observe.n_tags:
            self._deactivate(rs)

    def _taker(self, antenna: int) -> _RoSpec | None:
        active = [rs for rs in self.rospecs.values() if rs.state == ACTIVE and rs.covers(antenna)]
        return min(active, key=lambda rs: (rs.spec.priority, rs.id), default=None)

    def _flush(self, rs: _RoSpec) -> None:
        if rs.flush is not None:
            rs.flush.cancel()
            rs.flush = None
        batch, rs.pending = rs.pending, []
        if batch:
            sel = (rs.spec.report or self.config.report).content
            self._deliver(_Outgoing(selector=sel, reads=batch))
        self._changed()

    def _deliver(self, item: _Outgoing) -> None:
        """Send an event or a report batch, hold it, or count it lost."""
        session = self._session
        live = session is not None and session.alive() and not self.silent
        if live and session is not None and not session.holding:
            self._send_item(session, item)
        elif self.config.hold and not self.silent:
            self._held.append(item)
        else:
            for _, truth in item.reads:
                truth.not_delivered += 1

    def _send_item(self, session: _Session, item: _Outgoing) -> None:
        if item.body is not None:
            self._send(session, Msg.READER_EVENT_NOTIFICATION, item.body)
            return
        assert item.selector is not None
        for at in range(0, len(item.reads), MAX_REPORTS_PER_MESSAGE):
            chunk = item.reads[at : at + MAX_REPORTS_PER_MESSAGE]
            body = codec.ro_access_report([r for r, _ in chunk], item.selector)
            sent = self._send(session, Msg.RO_ACCESS_REPORT, body)
            if sent:
                self.reports_sent += len(chunk)
            for read, truth in chunk:
                if sent:
                    truth.record_sent(read.antenna, read.rssi)
                else:
                    truth.not_delivered += 1

    def _event(self, *params: bytes) -> None:
        self._deliver(_Outgoing(body=codec.reader_event(self._utc_us(time.time()), *params)))

    # --- connections ----------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.connection_attempts += 1
        session: _Session | None = None
        try:
            why = self._refusal()
            if why is not None:
                self.refused += 1
                log.info("llrp_connection_refused", reason=why)
                refusal = self._event_body(codec.connection_attempt_event(CLIENT_EXISTS))
                self._send(_Session(writer, holding=False), Msg.READER_EVENT_NOTIFICATION, refusal)
                await self._hang_up(reader, writer)
                return
            session = self._session = _Session(writer, holding=self.config.hold)
            self.sessions += 1
            attempt = codec.connection_attempt_event(CONNECTED)
            self._send(session, Msg.READER_EVENT_NOTIFICATION, self._event_body(attempt))
            self._restart_keepalives()
            self._changed()
            await self._read_loop(session, reader)
        except ConnectionResetError:
            self._go_stale()  # the client vanished without a goodbye: the session lingers
        except OSError as exc:
            log.info("llrp_connection_failed", error=str(exc))
        finally:
            if session is not None:
                session.closing = True
                if session.keepalive is not None:
                    session.keepalive.cancel()
                if self._session is session:
                    self._session = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self._connections.discard(task)
            self._changed()

    async def _hang_up(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Close after the refusal, without a reset: closing a socket with unread bytes (a
        client that sent its first request before reading) sends RST, and the client may then
        lose the refusal before it reads it."""
        await writer.drain()
        writer.write_eof()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                while await reader.read(4096):
                    pass

    def _refusal(self) -> str | None:
        if self._refuse_next > 0:
            self._refuse_next -= 1
            return "refused on request"
        holder = self._session
        if holder is not None and holder.alive():
            attempt = codec.connection_attempt_event(ANOTHER_ATTEMPT)
            self._send(holder, Msg.READER_EVENT_NOTIFICATION, self._event_body(attempt))
            return "a client is connected"
        if asyncio.get_running_loop().time() < self._stale_until:
            return "a stale session exists"
        return None

    def _event_body(self, *params: bytes) -> bytes:
        return codec.reader_event(self._utc_us(time.time()), *params)

    async def _read_loop(self, session: _Session, reader: asyncio.StreamReader) -> None:
        while session.alive():
            try:
                head = await reader.readexactly(codec.HEADER_LEN)
            except asyncio.IncompleteReadError:
                return  # the client closed
            header = codec.parse_header(head)
            self.messages_received[codec.msg_name(header.type)] += 1
            if not codec.HEADER_LEN <= header.length <= codec.MAX_MESSAGE_LEN:
                # No way to find the next message in the stream: say why, then hang up.
                log.warning("llrp_frame_refused", type=header.type, length=header.length)
                if not self.silent:
                    text = f"message length {header.length} is impossible; closing"
                    status = codec.llrp_status(Status.M_FIELD_ERROR, text)
                    self._send(session, Msg.ERROR_MESSAGE, status, header.id)
                return
            try:
                body = await reader.readexactly(header.length - codec.HEADER_LEN)
            except asyncio.IncompleteReadError:
                return
            if not self.silent:
                self._handle(session, header, body)
            await self._drain()

    def _handle(self, session: _Session, header: Header, body: bytes) -> None:
        handler = self._dispatch.get(header.type)
        try:
            if header.version not in (1, 2) or (
                header.version != session.version
                and header.type not in (Msg.GET_SUPPORTED_VERSION, Msg.SET_PROTOCOL_VERSION)
            ):
                raise LlrpError(
                    Status.M_UNSUPPORTED_VERSION,
                    f"version {header.version} (this session speaks {session.version})",
                )
            if handler is None:
                raise LlrpError(
                    Status.M_UNSUPPORTED_MESSAGE,
                    f"{codec.msg_name(header.type)} is not supported",
                )
            handler(session, header, body)
        except LlrpError as err:
            name = codec.msg_name(header.type)
            log.info("llrp_request_refused", message=name, status=err.code.name, detail=str(err))
            unsupported = err.code in (Status.M_UNSUPPORTED_MESSAGE, Status.M_UNSUPPORTED_VERSION)
            reply = Msg.ERROR_MESSAGE if unsupported else RESPONSES.get(header.type)
            self._send(session, reply or Msg.ERROR_MESSAGE, err.status(), header.id)

    def _send(self, session: _Session, mtype: int, body: bytes, msg_id: int | None = None) -> bool:
        """Write one message; whether the connection could take it."""
        if not session.alive():
            return False
        ident = self._take_id() if msg_id is None else msg_id
        session.writer.write(codec.message(mtype, ident, body, session.version))
        self.messages_sent[codec.msg_name(mtype)] += 1
        return True

    def _take_id(self) -> int:
        ident, self._next_id = self._next_id, (self._next_id + 1) & 0xFFFFFFFF
        return ident

    def _restart_keepalives(self) -> None:
        session = self._session
        if session is None:
            return
        if session.keepalive is not None:
            session.keepalive.cancel()
            session.keepalive = None
        kind, interval = self.config.keepalive
        if kind == 1 and interval > 0:
            session.keepalive = self._spawn(self._keepalives(session, interval / 1000))

    async def _keepalives(self, session: _Session, interval_s: float) -> None:
        while session.alive():
            await asyncio.sleep(interval_s)
            if self.keepalives_enabled and not self.silent:
                if self._send(session, Msg.KEEPALIVE, b""):
                    self.keepalives_sent += 1
                self._changed()

    # --- requests -------------------------------------------------------------------------------

    def _handlers(self) -> dict[int, Handler]:
        return {
            Msg.GET_READER_CAPABILITIES: self._get_capabilities,
            Msg.GET_READER_CONFIG: self._get_config,
            Msg.SET_READER_CONFIG: self._set_config,
            Msg.CLOSE_CONNECTION: self._close_connection,
            Msg.ADD_ROSPEC: self._add_rospec,
            Msg.DELETE_ROSPEC: self._rospec_command,
            Msg.START_ROSPEC: self._rospec_command,
            Msg.STOP_ROSPEC: self._rospec_command,
            Msg.ENABLE_ROSPEC: self._rospec_command,
            Msg.DISABLE_ROSPEC: self._rospec_command,
            Msg.GET_ROSPECS: self._get_rospecs,
            Msg.ADD_ACCESSSPEC: self._add_accessspec,
            Msg.DELETE_ACCESSSPEC: self._accessspec_command,
            Msg.ENABLE_ACCESSSPEC: self._accessspec_command,
            Msg.DISABLE_ACCESSSPEC: self._accessspec_command,
            Msg.GET_ACCESSSPECS: self._get_accessspecs,
            Msg.GET_SUPPORTED_VERSION: self._get_supported_version,
            Msg.SET_PROTOCOL_VERSION: self._set_protocol_version,
            Msg.GET_REPORT: self._get_report,
            Msg.ENABLE_EVENTS_AND_REPORTS: self._enable_events_and_reports,
            Msg.KEEPALIVE_ACK: self._keepalive_ack,
            Msg.CUSTOM_MESSAGE: self._custom_message,
        }

    def _reply(self, session: _Session, header: Header, *params: bytes) -> None:
        body = codec.llrp_status() + b"".join(params)
        self._send(session, RESPONSES[Msg(header.type)], body, header.id)

    def _get_capabilities(self, session: _Session, header: Header, body: bytes) -> None:
        requested = codec.parse_get_capabilities(body)
        self._reply(session, header, codec.capabilities(self.model, self.model.antennas, requested))

    def _get_config(self, session: _Session, header: Header, body: bytes) -> None:
        req = codec.parse_get_reader_config(body)
        cfg, model = self.config, self.model
        limits = (
            ("AntennaID", 0, req.antenna, model.antennas),
            ("GPIPortNum", 2, req.gpi_port, model.num_gpi),
            ("GPOPortNum", 3, req.gpo_port, model.num_gpo),
        )
        for name, num, value, top in limits:
            if value > top:
                text = f"{name} {value} does not exist (1..{top}, or 0 for all)"
                raise codec.out_of_range(None, num, text)

        ants = [req.antenna] if req.antenna else sorted(cfg.antennas)
        gpis = [req.gpi_port] if req.gpi_port else sorted(self.gpi_state)
        gpos = [req.gpo_port] if req.gpo_port else sorted(self.gpo_state)
        # RequestedData number -> its parameters, in the order of the response.
        sections: list[tuple[int, Callable[[], list[bytes]]]] = [
            (1, lambda: [codec.identification(self._mac)]),
            (2, lambda: [codec.antenna_properties(a) for a in ants]),
            (3, lambda: [_antenna_configuration(a, cfg.antennas[a]) for a in ants]),
            (5, lambda: [codec.event_notification_spec(cfg.events)]),
            (4, lambda: [codec.ro_report_spec(cfg.report)]),
            (6, lambda: [codec.access_report_spec(cfg.access_report_trigger)]),
            (7, lambda: [codec.configuration_state(self._config_state)]),
            (8, lambda: [codec.keepalive_spec(*cfg.keepalive)]),
            (9, lambda: [self._gpi_port_state(p) for p in gpis]),
            (10, lambda: [codec.gpo_write_data(p, self.gpo_state[p]) for p in gpos]),
            (11, lambda: [codec.events_and_reports(cfg.hold)]),
        ]
        parts = [p for n, make in sections if req.requested in (0, n) for p in make()]
        self._reply(session, header, *parts)

    def _gpi_port_state(self, port: int) -> bytes:
        enabled = self.config.gpi_enabled.get(port, False)
        return codec.gpi_port_state(port, enabled, int(self.gpi_state[port]) if enabled else 2)

    def _set_config(self, session: _Session, header: Header, body: bytes) -> None:
        update = codec.parse_set_reader_config(body)
        self._check_update(update)
        self._apply_update(update)
        self._reply(session, header)
        if update.keepalive is not None or update.reset:
            self.config.keepalive = update.keepalive or (0, 0)
            self._restart_keepalives()
        self._changed()

    def _check_update(self, update: codec.ReaderConfigUpdate) -> None:
        """Everything a SET_READER_CONFIG asks, checked before any of it is applied."""
        model = self.model
        if update.antenna_properties:
            raise LlrpError(
                Status.M_PARAMETER_ERROR,
                "antenna properties cannot be set on this reader (CanSetAntennaProperties 0)",
                param=P.ANTENNA_PROPERTIES,
                param_code=Status.P_UNSUPPORTED_PARAMETER,
            )
        for conf in update.antenna_configs:
            self._check_antenna_config(conf)
        for port in update.gpo_writes:
            if not 1 <= port <= model.num_gpo:
                raise codec.out_of_range(P.GPO_WRITE_DATA, 0, f"GPO port {port} does not exist")
        for port in update.gpi_configs:
            if not 1 <= port <= model.num_gpi:
                raise codec.out_of_range(
                    P.GPI_PORT_CURRENT_STATE, 0, f"GPI port {port} does not exist"
                )
        if update.keepalive is not None and update.keepalive[0] == 1 and update.keepalive[1] == 0:
            raise codec.out_of_range(P.KEEPALIVE_SPEC, 1, "a periodic keepalive needs an interval")

    def _apply_update(self, update: codec.ReaderConfigUpdate) -> None:
        if update.reset:
            for rs in list(self.rospecs.values()):
                self._remove(rs)
            self.config = _Config.defaults(self.model)
        cfg = self.config
        cfg.events.update(update.events)
        for conf in update.antenna_configs:
            for a in [conf.antenna] if conf.antenna else sorted(cfg.antennas):
                cfg.antennas[a].apply(conf)
        if update.report is not None:
            cfg.report = update.report
        if update.access_report_trigger is not None:
            cfg.access_report_trigger = update.access_report_trigger
        cfg.gpi_enabled.update(update.gpi_configs)
        if update.hold_events is not None:
            cfg.hold = update.hold_events
        now = time.time()
        for port, state in update.gpo_writes.items():
            self.gpo_state[port] = state
            self.gpo_history.append(GpoWrite(now, port, state))
        self._config_state += 1

    def _check_antenna_config(self, conf: AntennaConfig) -> None:
        model, where = self.model, P.ANTENNA_CONFIGURATION
        if conf.antenna > model.antennas:
            raise codec.out_of_range(where, 0, f"antenna {conf.antenna} does not exist")
        powers = len(model.power_table_cdbm)
        if conf.power_index is not None and not 1 <= conf.power_index <= powers:
            text = f"transmit power index {conf.power_index} is not in the table (1..{powers})"
            raise codec.out_of_range(P.RF_TRANSMITTER, 2, text)
        if conf.channel is not None and not 1 <= conf.channel <= len(model.frequencies_khz):
            raise codec.out_of_range(P.RF_TRANSMITTER, 1, f"channel {conf.channel} does not exist")
        if conf.receiver_sensitivity not in (None, 0, 1):
            raise codec.out_of_range(P.RF_RECEIVER, 0, "receiver sensitivity index is not 1")
        inv = conf.inventory
        modes = {m.id for m in model.modes}
        if inv is not None and inv.mode_index is not None and inv.mode_index not in modes:
            raise codec.out_of_range(
                P.C1G2_RF_CONTROL, 0, f"RF mode {inv.mode_index} is not in the mode table"
            )

    def _close_connection(self, session: _Session, header: Header, body: bytes) -> None:
        codec.children(body, None, {})
        self._reply(session, header)
        close = self._event_body(codec.connection_close_event())
        self._send(session, Msg.READER_EVENT_NOTIFICATION, close)
        session.closing = True  # the read loop ends; the connection is closed after it

    def _keepalive_ack(self, session: _Session, header: Header, body: bytes) -> None:
        codec.children(body, None, {})
        self.keepalive_acks += 1
        self._changed()

    def _enable_events_and_reports(self, session: _Session, header: Header, body: bytes) -> None:
        codec.children(body, None, {})
        if session.holding:
            session.holding = False
            held, self._held = self._held, []
            for item in held:
                self._send_item(session, item)

    def _get_report(self, session: _Session, header: Header, body: bytes) -> None:
        codec.children(body, None, {})
        for rs in self.rospecs.values():
            self._flush(rs)

    def _custom_message(self, session: _Session, header: Header, body: bytes) -> None:
        vendor, subtype = codec.parse_custom_message(body)
        raise LlrpError(
            Status.M_UNSUPPORTED_MESSAGE,
            f"custom message of vendor {vendor}, subtype {subtype} is not supported",
        )

    def _get_supported_version(self, session: _Session, header: Header, body: bytes) -> None:
        codec.children(body, None, {})
        body = codec.supported_version(session.version, 2) + codec.llrp_status()
        self._send(session, Msg.GET_SUPPORTED_VERSION_RESPONSE, body, header.id)

    def _set_protocol_version(self, session: _Session, header: Header, body: bytes) -> None:
        version = codec.parse_set_protocol_version(body)
        if version not in (1, 2):
            raise LlrpError(Status.M_UNSUPPORTED_VERSION, f"version {version} is not supported")
        self._reply(session, header)
        session.version = version

    # --- ROSpecs --------------------------------------------------------------------------------

    def _add_rospec(self, session: _Session, header: Header, body: bytes) -> None:
        spec = codec.parse_add_rospec(body)
        if spec.id in self.rospecs:
            raise codec.fault("field", P.RO_SPEC, f"ROSpec {spec.id} exists", field_num=0)
        if len(self.rospecs) >= self.model.max_rospecs:
            raise LlrpError(
                Status.M_PARAMETER_ERROR,
                f"this reader holds at most {self.model.max_rospecs} ROSpecs",
                param=P.RO_SPEC,
                param_code=Status.P_OVERFLOW_PARAMETER,
            )
        (ai, *more) = spec.aispecs
        if more or len(ai.inventory_specs) > 1:
            raise LlrpError(
                Status.M_PARAMETER_ERROR,
                "one AISpec per ROSpec, one InventoryParameterSpec per AISpec",
                param=P.AI_SPEC if more else P.INVENTORY_PARAMETER_SPEC,
                param_code=Status.P_OVERFLOW_PARAMETER,
            )
        top = self.model.antennas
        bad = [a for a in ai.antennas if a > top or (a == 0 and len(ai.antennas) > 1)]
        if bad:
            raise codec.out_of_range(P.AI_SPEC, 0, f"antennas {bad} do not exist")
        for conf in ai.antenna_configs:
            self._check_antenna_config(conf)
        for trigger in (spec.start.gpi, spec.stop.gpi, ai.stop.gpi):
            if trigger is not None and not 1 <= trigger.port <= self.model.num_gpi:
                raise codec.out_of_range(
                    P.GPI_TRIGGER_VALUE, 0, f"GPI port {trigger.port} does not exist"
                )
        self.rospecs[spec.id] = _RoSpec(spec)
        self._config_state += 1
        self._reply(session, header)
        self._changed()

    def _rospec_command(self, session: _Session, header: Header, body: bytes) -> None:
        mtype = Msg(header.type)
        targets = self._rospec_targets(mtype, codec.parse_spec_id(body))
        self._reply(session, header)
        for rs in targets:
            if mtype == Msg.DELETE_ROSPEC:
                self._remove(rs)
            elif mtype == Msg.ENABLE_ROSPEC and rs.state == DISABLED:
                self._enable(rs)
            elif mtype == Msg.DISABLE_ROSPEC and rs.state != DISABLED:
                self._deactivate(rs, DISABLED)
            elif mtype == Msg.START_ROSPEC:
                self._activate(rs)
            elif mtype == Msg.STOP_ROSPEC:
                self._deactivate(rs)
        self._changed()

    def _rospec_targets(self, mtype: Msg, spec_id: int) -> list[_RoSpec]:
        """The ROSpecs a command is for (ID 0: all, except for START and STOP), checked."""
        if spec_id == 0 and mtype in (Msg.START_ROSPEC, Msg.STOP_ROSPEC):
            raise codec.out_of_range(None, 0, "ROSpecID 0 names no ROSpec to start or stop")
        if spec_id == 0:
            targets = list(self.rospecs.values())
        elif spec_id in self.rospecs:
            targets = [self.rospecs[spec_id]]
        else:
            raise codec.fault("field", None, f"no ROSpec with ID {spec_id}", field_num=0)
        for rs in targets:
            if mtype == Msg.START_ROSPEC and rs.state != INACTIVE:
                raise codec.fault("field", None, f"ROSpec {rs.id} is not inactive", field_num=0)
            if mtype == Msg.STOP_ROSPEC and rs.state != ACTIVE:
                raise codec.fault("field", None, f"ROSpec {rs.id} is not active", field_num=0)
        return targets

    def _get_rospecs(self, session: _Session, header: Header, body: bytes) -> None:
        codec.children(body, None, {})
        specs = [codec.rospec_with_state(rs.spec.raw, rs.state) for rs in self.rospecs.values()]
        self._reply(session, header, *specs)

    def _add_accessspec(self, session: _Session, header: Header, body: bytes) -> None:
        raise codec.fault("unsupported", None, "AccessSpecs are not simulated (inventory only)")

    def _accessspec_command(self, session: _Session, header: Header, body: bytes) -> None:
        spec_id = codec.parse_spec_id(body)
        if spec_id != 0:
            raise codec.fault("field", None, f"no AccessSpec with ID {spec_id}", field_num=0)
        self._reply(session, header)

    def _get_accessspecs(self, session: _Session, header: Header, body: bytes) -> None:
        codec.children(body, None, {})
        self._reply(session, header)

    def _enable(self, rs: _RoSpec) -> None:
        rs.state = INACTIVE
        start = rs.spec.start
        if start.kind == 1:
            self._activate(rs)
        elif start.kind == 2:
            rs.periodic = self._spawn(self._periodic(rs, start.offset_ms, start.period_ms))

    async def _periodic(self, rs: _RoSpec, offset_ms: int, period_ms: int) -> None:
        await asyncio.sleep(offset_ms / 1000)
        while True:
            if rs.state == INACTIVE:
                self._activate(rs)
                await self._drain()
            if period_ms == 0:
                return
            await asyncio.sleep(period_ms / 1000)

    def _activate(self, rs: _RoSpec) -> None:
        rs.state = ACTIVE
        rs.seen = set()
        if self.config.events[EVENT_ROSPEC]:
            self._event(codec.rospec_event(0, rs.id))
        limits = [
            t.duration_ms
            for t in (rs.spec.stop, rs.spec.aispecs[0].stop)
            if t.kind == 1 and t.duration_ms
        ]
        limits += [
            t.gpi.timeout_ms
            for t in (rs.spec.stop, rs.spec.aispecs[0].stop)
            if t.kind == 2 and t.gpi is not None and t.gpi.timeout_ms
        ]
        if limits:
            loop = asyncio.get_running_loop()
            rs.stop_timer = loop.call_later(min(limits) / 1000, self._timed_out, rs)
        self._changed()

    def _timed_out(self, rs: _RoSpec) -> None:
        rs.stop_timer = None
        if rs.state == ACTIVE:
            self._deactivate(rs)

    def _deactivate(self, rs: _RoSpec, state: int = INACTIVE) -> None:
        """End a run (the end of the AISpec and of the ROSpec: reports go out) and go to
        `state`; to Disabled also from Inactive."""
        was_active = rs.state == ACTIVE
        if rs.stop_timer is not None:
            rs.stop_timer.cancel()
            rs.stop_timer = None
        if was_active and (rs.spec.report or self.config.report).trigger != 0:
            self._flush(rs)
        rs.state = state
        if state == DISABLED and rs.periodic is not None:
            rs.periodic.cancel()
            rs.periodic = None
        if was_active and self.config.events[EVENT_ROSPEC]:
            self._event(codec.rospec_event(1, rs.id))
        self._changed()

    def _remove(self, rs: _RoSpec) -> None:
        self._deactivate(rs, DISABLED)
        self._stop_timers(rs)
        for _, truth in rs.pending:  # held for a GET_REPORT that will not come now
            truth.not_delivered += 1
        rs.pending = []
        self.rospecs.pop(rs.id, None)
        self._config_state += 1

    def _stop_timers(self, rs: _RoSpec) -> None:
        for handle in (rs.flush, rs.stop_timer):
            if handle is not None:
                handle.cancel()
        rs.flush = rs.stop_timer = None
        if rs.periodic is not None:
            rs.periodic.cancel()
            rs.periodic = None


def _fires(trigger: codec.GpiTrigger | None, port: int, state: bool) -> bool:
    return trigger is not None and trigger.port == port and trigger.event == state


def _flush_delay(report: ReportSpec, flush_after_s: float | None) -> float | None:
    """When a batch that has just begun must go out, by the ROReportTrigger (None: only at the
    end of the ROSpec, or on GET_REPORT)."""
    if report.trigger in (3, 4):
        return float(report.n)
    if report.trigger in (5, 6):
        return report.n / 1000
    if report.trigger in (1, 2) and report.n > 1:
        return flush_after_s
    return None


def _antenna_configuration(antenna: int, a: _Antenna) -> bytes:
    return codec.antenna_configuration(
        antenna,
        sensitivity=a.sensitivity,
        channel=a.channel,
        power_index=a.power_index,
        mode_index=a.mode_index,
        tari=a.tari,
        session=a.session,
        population=a.population,
        transit_ms=a.transit_ms,
    )


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
