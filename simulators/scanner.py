"""Barcode scanner simulators: a fixed-mount TCP scanner and a serial (pty) scanner.

Owns what a real scanner does on its result channel, for tests and for trying a line file before
going near a line: send framed codes (CR, LF or CRLF, optional AIM prefix), NOREADs, binary noise
and frames with no terminator in sight; drop off the network or get unplugged and come back.
Each simulator records a ground truth (`truth`): every frame it sent, when, what kind, and
whether a client could receive it. A code scanned while nobody is connected is lost, as with a
real scanner, and recorded as such.

    async with TcpScannerSim() as sim:            # 127.0.0.1, free port: sim.port
        await sim.wait_client()
        await sim.send("]d2" + "0104012345000016" + "21ABC" + "\\x1d" + "10L1")
        await sim.run_scenario(Scenario(count=100, rate_per_s=20, noread_share=0.05))

    python -m simulators.scanner tcp --port 2001 --scenario line1.yaml
    python -m simulators.scanner serial --link /tmp/scanners/by-id-scanner-1 --rate 2

A scenario (simulators.scenario) is a YAML file of the fields of `Scenario`, e.g.:

    generator: gs1_datamatrix     # or gs1_128, digital_link, sscc, plain, mixed
    count: 200                    # omit for endless
    rate_per_s: 5
    noread_share: 0.05
    garbage_share: 0.02
    too_long_share: 0.01
    terminator: crlf
    disconnects: [{after_codes: 100, duration_s: 3}]
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import dataclasses
import errno
import os
import random
import select
import sys
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from simulators import cli
from simulators.codes import KINDS, GeneratedCode
from simulators.scenario import (
    TERMINATORS,
    FrameKind,
    Scenario,
    Terminator,
    noise,
)


@dataclass(frozen=True, slots=True)
class SentFrame:
    """One frame of the ground truth.

    `payload` is the bytes put on the wire (terminator included); `text` is what the gateway
    must report for it (the `Scan` or `NoRead` text), None for noise; `code` is the unit's code
    (for a NOREAD, the code that went unread); `delivered` says a client was connected when it
    was written (not that it read it).
    """

    time: float
    kind: FrameKind
    payload: bytes
    text: str | None
    code: GeneratedCode | None
    delivered: bool


class ScannerSim(abc.ABC):
    """What both simulators share: frames, ground truth, scenarios. Subclasses own the wire."""

    def __init__(
        self,
        terminator: Terminator = "cr",
        aim_prefix: bool = True,
        noread_text: str = "NOREAD",
        seed: int = 0,
    ) -> None:
        self.terminator: Terminator = terminator
        self.aim_prefix = aim_prefix
        self.noread_text = noread_text
        self.truth: list[SentFrame] = []
        self._rng = random.Random(seed)
        self._write_lock = asyncio.Lock()
        # Called with each frame once sent (the CLI prints them so).
        self.on_frame: list[Callable[[SentFrame], None]] = []

    # --- to be provided by the wire ---------------------------------------------------------

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def unplug(self) -> None: ...

    @abc.abstractmethod
    async def replug(self) -> None: ...

    @property
    @abc.abstractmethod
    def client_connected(self) -> bool: ...

    @abc.abstractmethod
    async def wait_client(self) -> None:
        """Return once a client is connected (bound it with `asyncio.timeout`)."""

    @abc.abstractmethod
    async def _write(self, payload: bytes) -> bool:
        """Write `payload` if a client is there; whether one was."""

    # --- frames -----------------------------------------------------------------------------

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

    async def send(
        self,
        code: str | GeneratedCode,
        *,
        terminator: Terminator | None = None,
        aim_prefix: bool | None = None,
    ) -> SentFrame:
        """Send one code. A `str` goes as given (include any AIM prefix yourself); a
        `GeneratedCode` gets its AIM prefix when `aim_prefix` (default: the simulator's)."""
        aim = self.aim_prefix if aim_prefix is None else aim_prefix
        text = code if isinstance(code, str) else code.text(aim)
        unit = code if isinstance(code, GeneratedCode) else None
        return await self.send_raw(
            self._frame(text.encode("latin-1"), terminator), "code", text=text, code=unit
        )

    async def send_noread(
        self, unit: GeneratedCode | None = None, *, terminator: Terminator | None = None
    ) -> SentFrame:
        payload = self._frame(self.noread_text.encode("latin-1"), terminator)
        return await self.send_raw(payload, "noread", text=self.noread_text, code=unit)

    async def send_garbage(
        self, data: bytes | None = None, *, terminator: Terminator | None = None
    ) -> SentFrame:
        """A noise burst and a terminator (`data`: your own noise, no terminator in it)."""
        burst = noise(self._rng) if data is None else data
        return await self.send_raw(self._frame(burst, terminator), "garbage")

    async def send_too_long(
        self, size: int = 2048, *, terminator: Terminator | None = None
    ) -> SentFrame:
        """`size` printable bytes, then a terminator: too long for a gateway whose
        `max_code_bytes` is smaller."""
        body = "".join(self._rng.choices("0123456789ABCDEF", k=size)).encode()
        return await self.send_raw(self._frame(body, terminator), "too_long")

    async def send_raw(
        self,
        payload: bytes,
        kind: FrameKind,
        *,
        text: str | None = None,
        code: GeneratedCode | None = None,
    ) -> SentFrame:
        """Put `payload` on the wire exactly as given and record it under `kind`."""
        async with self._write_lock:
            delivered = await self._write(payload)
            sent = SentFrame(time.time(), kind, payload, text, code, delivered)
            self.truth.append(sent)
        for callback in self.on_frame:
            callback(sent)
        return sent

    def _frame(self, body: bytes, terminator: Terminator | None) -> bytes:
        return body + TERMINATORS[terminator or self.terminator]

    async def run_scenario(self, scenario: Scenario) -> list[SentFrame]:
        """Play `scenario` at its rate; return the frames it produced (also in `truth`).

        Returns with the scanner online, even if the scenario ends inside an outage."""
        scenario.check()
        rng = random.Random(scenario.seed)
        loop = asyncio.get_running_loop()
        start, first = loop.time(), len(self.truth)
        offline_until: float | None = None
        term = scenario.terminator
        for n, unit in enumerate(scenario.triggers(), start=1):
            due = start + (n - 1) / scenario.rate_per_s if scenario.rate_per_s else loop.time()
            if offline_until is not None and offline_until <= due:
                await asyncio.sleep(offline_until - loop.time())
                await self.replug()
                offline_until = None
            await asyncio.sleep(max(0.0, due - loop.time()))
            if rng.random() < scenario.garbage_share:
                await self.send_garbage(noise(rng), terminator=term)
            if rng.random() < scenario.too_long_share:
                await self.send_too_long(scenario.too_long_bytes, terminator=term)
            if rng.random() < scenario.noread_share:
                payload = self._frame(scenario.noread_text.encode("latin-1"), term)
                await self.send_raw(
                    payload,
                    "noread",
                    text=scenario.noread_text,
                    code=unit if isinstance(unit, GeneratedCode) else None,
                )
            else:
                await self.send(unit, terminator=term, aim_prefix=scenario.aim_prefix)
            for outage in scenario.disconnects:
                if outage.after_codes == n:
                    await self.unplug()
                    offline_until = loop.time() + outage.duration_s
        if offline_until is not None:
            await asyncio.sleep(max(0.0, offline_until - loop.time()))
            await self.replug()
        return self.truth[first:]


class TcpScannerSim(ScannerSim):
    """A fixed-mount scanner's TCP result channel: it listens, the gateway connects.

    One client at a time, the newest wins: a new connection is accepted and the previous one
    closed. (Cognex DataMan and Keyence SR behave so on their single result channel; it also
    lets a gateway whose old connection went half-open reconnect at once.) What the client sends
    is read and ignored.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._client: asyncio.StreamWriter | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._client_changed = asyncio.Event()

    @property
    def client_connected(self) -> bool:
        return self._client is not None and not self._client.is_closing()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await self.unplug()

    async def unplug(self) -> None:
        """Stop listening and close the client: a reboot or power cut (with FIN, not silence)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self.drop_client()
        if server is not None:
            # After the clients: from Python 3.12 on, wait_closed also waits for connections.
            await server.wait_closed()

    async def replug(self) -> None:
        """Listen again on the same port."""
        if self._server is None:
            await self.start()

    async def drop_client(self) -> None:
        """Close the current client connection (keep listening) and wait until it is gone."""
        if self._client is not None:
            self._client.close()
        handlers = list(self._handlers)
        if handlers:
            await asyncio.gather(*handlers, return_exceptions=True)

    async def wait_client(self) -> None:
        while not self.client_connected:
            self._client_changed.clear()
            await self._client_changed.wait()

    async def wait_no_client(self) -> None:
        """Return once no client is connected (the gateway closed its side)."""
        while self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        previous, self._client = self._client, writer
        if previous is not None:
            previous.close()
        self._client_changed.set()
        try:
            while await reader.read(4096):
                pass
        except OSError:
            pass  # reset by the client: it is gone either way
        finally:
            if self._client is writer:
                self._client = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self._handlers.discard(task)
            self._client_changed.set()

    async def _write(self, payload: bytes) -> bool:
        writer = self._client
        if writer is None or writer.is_closing():
            return False
        writer.write(payload)
        try:
            await writer.drain()
        except OSError:
            return False
        return True


class SerialScannerSim(ScannerSim):
    """A scanner on a serial port, as a pty pair: the gateway opens `path`.

    `link`, when given, is a symlink kept pointing at the current pty, as udev keeps
    `/dev/serial/by-id/...` pointing at a USB scanner. `unplug` closes the pty master (the
    reader's next read fails, the pty node vanishes) and removes the link; `replug` makes a new
    pty, under another name as a re-enumerated USB device gets, and re-points the link.
    A client counts as connected while some process has the slave open.
    """

    def __init__(self, link: str | Path | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.link = Path(link) if link is not None else None
        self.slave_path: str | None = None
        self._master: int | None = None

    @property
    def path(self) -> str:
        """What a gateway should open: the link if there is one, else the pty slave."""
        if self.link is not None:
            return str(self.link)
        if self.slave_path is None:
            raise RuntimeError("the simulator is not plugged in")
        return self.slave_path

    @property
    def client_connected(self) -> bool:
        if self._master is None:
            return False
        # The master reports POLLHUP while no process has the slave open.
        poller = select.poll()
        poller.register(self._master, select.POLLHUP)
        return not any(ev & select.POLLHUP for _, ev in poller.poll(0))

    async def start(self) -> None:
        self._plug()

    async def stop(self) -> None:
        self._unplug()

    async def unplug(self) -> None:
        self._unplug()

    async def replug(self) -> None:
        if self._master is None:
            self._plug()

    async def wait_client(self) -> None:
        # A pty tells nobody when its slave is opened (and the master's POLLHUP, level-
        # triggered, would spin an event loop reader while nobody has it open): so, polling.
        while not self.client_connected:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    def _plug(self) -> None:
        master, slave = os.openpty()
        name = os.ttyname(slave)
        if name == self.slave_path:
            # Same number as before the unplug: take the next one, like USB re-enumeration.
            master2, slave2 = os.openpty()
            os.close(master)
            os.close(slave)
            master, slave, name = master2, slave2, os.ttyname(slave2)
        # Raw before anyone opens it, or the line discipline turns CR into LF and echoes.
        tty.setraw(slave)
        # Closed right away: the master then tells (POLLHUP) whether a reader has it open.
        os.close(slave)
        os.set_blocking(master, False)
        self._master, self.slave_path = master, name
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(name)
            tmp.replace(self.link)  # atomic: readers see the old or the new target

    def _unplug(self) -> None:
        if self._master is not None:
            os.close(self._master)
            self._master = None
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()

    async def _write(self, payload: bytes) -> bool:
        if self._master is None or not self.client_connected:
            return False  # nobody listening on the line: the bytes are gone
        loop = asyncio.get_running_loop()
        view = memoryview(payload)
        while view:
            try:
                view = view[os.write(self._master, view) :]
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_writer(self._master, ready.set_result, None)
                try:
                    await ready
                finally:
                    loop.remove_writer(self._master)
            except OSError as exc:
                if exc.errno == errno.EIO:  # reader closed it meanwhile
                    return False
                raise
        return True


# --- command line ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.scanner",
        description="Simulated barcode scanner (TCP or serial).",
    )
    sub = parser.add_subparsers(dest="wire", required=True)
    tcp = sub.add_parser("tcp", help="a fixed-mount scanner serving results over TCP")
    tcp.add_argument("--host", default="127.0.0.1")
    tcp.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    ser = sub.add_parser("serial", help="a serial scanner on a pty")
    ser.add_argument("--link", type=Path, help="keep this symlink pointing at the pty")
    for p in (tcp, ser):
        p.add_argument("--scenario", type=Path, help="scenario YAML file")
        p.add_argument("--generator", choices=(*KINDS, "mixed"))
        p.add_argument("--count", type=int, help="number of triggers (default: endless)")
        p.add_argument("--rate", type=float, help="triggers per second")
        p.add_argument("--terminator", choices=tuple(TERMINATORS))
        p.add_argument("--no-aim", action="store_true", help="no AIM symbology prefix")
        p.add_argument("--noread-share", type=float)
        p.add_argument("--garbage-share", type=float)
        p.add_argument("--too-long-share", type=float)
        p.add_argument("--seed", type=int)
        p.add_argument(
            "--no-wait",
            action="store_true",
            help="start at once instead of waiting for the first client",
        )
    return parser


def _scenario(args: argparse.Namespace) -> Scenario:
    scenario = Scenario.from_yaml(args.scenario) if args.scenario else Scenario()
    overrides = {
        "generator": args.generator,
        "count": args.count,
        "rate_per_s": args.rate,
        "terminator": args.terminator,
        "noread_share": args.noread_share,
        "garbage_share": args.garbage_share,
        "too_long_share": args.too_long_share,
        "seed": args.seed,
        "aim_prefix": False if args.no_aim else None,
    }
    scenario = dataclasses.replace(
        scenario, **{k: v for k, v in overrides.items() if v is not None}
    )
    scenario.check()
    return scenario


def _print_frame(frame: SentFrame) -> None:
    shown = repr(frame.text) if frame.text is not None else frame.payload[:24].hex(" ")
    state = "sent" if frame.delivered else "lost"
    print(f"{frame.time:.3f} {frame.kind:<8} {state} {shown}", flush=True)


async def _main(args: argparse.Namespace) -> None:
    scenario = _scenario(args)
    sim: TcpScannerSim | SerialScannerSim
    if args.wire == "tcp":
        sim = TcpScannerSim(args.host, args.port, terminator=scenario.terminator)
    else:
        sim = SerialScannerSim(args.link, terminator=scenario.terminator)
    sim.on_frame.append(_print_frame)
    async with sim:
        if isinstance(sim, TcpScannerSim):
            print(f"tcp scanner listening on {sim.host}:{sim.port}", flush=True)
        else:
            link = f" (link {sim.link})" if sim.link else ""
            print(f"serial scanner on {sim.slave_path}{link}", flush=True)
        if not args.no_wait:
            print("waiting for a client", flush=True)
            await sim.wait_client()
        await sim.run_scenario(scenario)
        print("scenario done; Ctrl-C to stop", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, _parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
