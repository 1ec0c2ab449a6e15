"""The scanner simulators and their code generators, checked from the outside: raw TCP
clients, a raw reader on the pty, biip (a third-party GS1 parser) as the oracle of the codes,
and the command line as a real child process."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import biip
import pytest

from simulators.codes import FAULTS, KINDS, CodeGenerator, GeneratedCode, gs1_check_digit
from simulators.scanner import SerialScannerSim, TcpScannerSim
from simulators.scenario import Disconnect, Scenario, noise

REPO = Path(__file__).resolve().parent.parent

# --- codes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "check"),
    [
        ("0950600013435", "2"),
        ("400638133393", "1"),
        ("10614141234567890", "8"),
        ("9638507", "4"),
        ("0000000000000", "0"),
    ],
)
def test_gs1_check_digit_matches_published_examples(body: str, check: str) -> None:
    assert gs1_check_digit(body) == check


def test_generators_are_deterministic_per_seed() -> None:
    def texts(seed: int) -> list[str]:
        return [c.text() for c in CodeGenerator(seed).stream("mixed", 50, faulty_share=0.3)]

    assert texts(7) == texts(7)
    assert texts(7) != texts(8)


def test_serials_are_unique() -> None:
    serials = [c.fields["serial"] for c in CodeGenerator(1).stream("gs1_datamatrix", 2000)]
    assert len(set(serials)) == len(serials)


def _parsed_fields(code: GeneratedCode) -> dict[str, str]:
    if code.kind == "digital_link":
        # A Digital Link QR is a plain QR (`]Q1`), and biip 5.2 only looks for a Digital Link
        # after `]Q3`/`]d2` or no prefix at all: so the URI goes in bare.
        result = biip.parse(code.text(aim_prefix=False))
        assert result.gs1_digital_link_uri is not None, result.gs1_digital_link_uri_error
        strings = result.gs1_digital_link_uri.element_strings
    else:
        result = biip.parse(code.text())
        assert result.gs1_message is not None, result.gs1_message_error
        strings = result.gs1_message.element_strings
    names = {"01": "gtin", "21": "serial", "10": "lot", "17": "expiry", "00": "sscc"}
    for es in strings:
        assert es.gtin_error is None and es.sscc_error is None, code
    return {names[es.ai.ai]: es.value for es in strings}


@pytest.mark.parametrize("kind", ["gs1_datamatrix", "gs1_128", "digital_link", "sscc"])
def test_valid_codes_parse_to_their_fields_with_biip(kind: str) -> None:
    for code in CodeGenerator(11).stream(kind, 40):
        assert code.valid
        expected = {k: v for k, v in code.fields.items() if k != "url"}
        assert _parsed_fields(code) == expected


def test_symbology_identifiers_and_separators() -> None:
    gen = CodeGenerator(2)
    dm = gen.gs1_datamatrix()
    assert dm.text().startswith("]d201") and dm.data.count("\x1d") == 2
    assert dm.text(aim_prefix=False) == dm.data
    assert gen.gs1_128().text().startswith("]C101")
    assert gen.sscc().text().startswith("]C100")
    assert gen.digital_link().text().startswith("]Q1https://id.gs1.org/01/")
    plain = gen.plain()
    assert plain.text().startswith("]C0SN") and "\x1d" not in plain.text()


@pytest.mark.parametrize("kind", ["gs1_datamatrix", "gs1_128", "digital_link", "sscc"])
@pytest.mark.parametrize("fault", FAULTS)
def test_faulty_codes_are_rejected_by_biip(kind: str, fault: str) -> None:
    if kind == "sscc" and fault == "bad_date":
        with pytest.raises(ValueError):
            CodeGenerator(3).make(kind, fault)
        return
    for seed in range(10):
        code = CodeGenerator(seed).make(kind, fault)
        assert not code.valid and code.fault == fault
        with pytest.raises(AssertionError):
            _parsed_fields(code)


def test_unknown_kind_is_an_error() -> None:
    assert "plain" in KINDS
    with pytest.raises(ValueError, match="unknown code kind"):
        CodeGenerator().make("ean99")


# --- scenarios -------------------------------------------------------------------------------


def test_scenario_loads_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(
        "codes: ['A1', 'B2']\nrate_per_s: 50\nnoread_share: 0.5\nterminator: crlf\n"
        "aim_prefix: false\ndisconnects:\n  - {after_codes: 1, duration_s: 0.5}\n"
    )
    scenario = Scenario.from_yaml(path)
    assert scenario.codes == ["A1", "B2"]
    assert scenario.terminator == "crlf" and scenario.aim_prefix is False
    assert scenario.disconnects == [Disconnect(1, 0.5)]
    assert list(scenario.triggers()) == ["A1", "B2"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour: red\n", "unknown scenario fields: colour"),
        ("noread_share: 2\n", "noread_share must be between 0 and 1"),
        ("generator: qr_art\n", "unknown generator"),
        ("terminator: tab\n", "terminator must be one of"),
    ],
)
def test_bad_scenario_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        Scenario.from_yaml(path)


def test_noise_has_no_terminator_and_is_never_a_code() -> None:
    import random

    rng = random.Random(0)
    for _ in range(500):
        burst = noise(rng)
        assert b"\r" not in burst and b"\n" not in burst
        assert any((b < 0x20 and b not in (0x1D, 0x1E, 0x04)) or b == 0x7F for b in burst)


# --- TCP simulator ---------------------------------------------------------------------------


async def _read_until(reader: asyncio.StreamReader, size: int) -> bytes:
    async with asyncio.timeout(5):
        return await reader.readexactly(size)


async def test_tcp_sim_sends_exact_bytes_and_records_truth() -> None:
    async with TcpScannerSim(terminator="crlf") as sim:
        lost = await sim.send("EARLY")  # nobody connected yet: lost, as on a real scanner
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        try:
            async with asyncio.timeout(5):
                await sim.wait_client()
            frames = [
                await sim.send("]d2AB\x1dCD"),
                await sim.send_noread(),
                await sim.send_garbage(b"\x00\x01"),
                await sim.send_too_long(30),
            ]
            wire = b"".join(f.payload for f in frames)
            assert await _read_until(reader, len(wire)) == wire
        finally:
            writer.close()
            await writer.wait_closed()
    assert not lost.delivered
    assert [f.kind for f in sim.truth] == ["code", "code", "noread", "garbage", "too_long"]
    assert [f.delivered for f in sim.truth] == [False, True, True, True, True]
    assert sim.truth[1].payload == b"]d2AB\x1dCD\r\n" and sim.truth[1].text == "]d2AB\x1dCD"
    assert sim.truth[2].text == "NOREAD"
    assert len(sim.truth[4].payload) == 32


async def test_tcp_sim_newest_client_wins() -> None:
    async with TcpScannerSim() as sim:
        r1, w1 = await asyncio.open_connection("127.0.0.1", sim.port)
        async with asyncio.timeout(5):
            await sim.wait_client()
        r2, w2 = await asyncio.open_connection("127.0.0.1", sim.port)
        try:
            async with asyncio.timeout(5):
                assert await r1.read() == b""  # the first client was closed
                await sim.wait_client()
            await sim.send("TO-SECOND")
            assert await _read_until(r2, 10) == b"TO-SECOND\r"
        finally:
            for w in (w1, w2):
                w.close()
                await w.wait_closed()


async def test_tcp_sim_scenario_with_outage() -> None:
    scenario = Scenario(
        count=12,
        rate_per_s=400,
        noread_share=0.25,
        garbage_share=0.25,
        too_long_share=0.25,
        seed=4,
        disconnects=[Disconnect(6, 0.02)],
    )
    async with TcpScannerSim() as sim:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        try:
            async with asyncio.timeout(5):
                await sim.wait_client()
            frames = await sim.run_scenario(scenario)
            received = await asyncio.wait_for(reader.read(), 5)  # EOF at the outage
        finally:
            writer.close()
            await writer.wait_closed()
        # After the scenario the scanner listens again.
        _, w = await asyncio.open_connection("127.0.0.1", sim.port)
        w.close()
        await w.wait_closed()
    triggers = [f for f in frames if f.kind in ("code", "noread")]
    assert len(triggers) == 12
    assert {f.kind for f in frames} == {"code", "noread", "garbage", "too_long"}
    # The outage begins after the 6th trigger and outlasts the schedule of the 7th, so from the
    # 7th trigger's noise on, everything is lost (this client does not reconnect).
    cut = frames.index(triggers[5]) + 1
    assert all(f.delivered for f in frames[:cut])
    assert not any(f.delivered for f in frames[cut:])
    assert received == b"".join(f.payload for f in frames[:cut])
    noreads = [f for f in frames if f.kind == "noread"]
    assert all(isinstance(f.code, GeneratedCode) for f in noreads)  # which unit was missed


# --- serial simulator ------------------------------------------------------------------------


class RawReader:
    """Reads a tty path with plain os calls, as a minimal non-pyserial client."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)

    def read(self, size: int, timeout: float = 5.0) -> bytes:
        data = b""
        deadline = time.monotonic() + timeout
        while len(data) < size:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out with {data!r}"
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.fd, size - len(data))
                except OSError:  # EIO: the other side is gone
                    return data
                if not chunk:
                    return data
                data += chunk
        return data

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def raw_reader() -> Iterator[list[RawReader]]:
    readers: list[RawReader] = []
    yield readers
    for r in readers:
        r.close()


async def test_serial_sim_raw_pty_keeps_cr_and_knows_its_client(
    tmp_path: Path, raw_reader: list[RawReader]
) -> None:
    async with SerialScannerSim(tmp_path / "scanner-link") as sim:
        assert os.readlink(sim.path) == sim.slave_path
        assert not sim.client_connected
        assert not (await sim.send("LOST")).delivered
        raw_reader.append(RawReader(sim.path))
        assert sim.client_connected
        sent = await sim.send("A\x1dB", terminator="cr")
        assert sent.delivered
        assert raw_reader[0].read(4) == b"A\x1dB\r"  # raw: no CR->LF, no echo needed


async def test_serial_sim_unplug_and_replug_move_the_link(
    tmp_path: Path, raw_reader: list[RawReader]
) -> None:
    link = tmp_path / "usb-scanner"
    async with SerialScannerSim(link) as sim:
        raw_reader.append(RawReader(str(link)))
        first = sim.slave_path
        await sim.unplug()
        assert not link.exists() and not sim.client_connected
        assert raw_reader[0].read(1) == b""  # the reader sees the device vanish
        assert not (await sim.send("WHILE-UNPLUGGED")).delivered
        await sim.replug()
        assert sim.slave_path != first
        assert os.readlink(link) == sim.slave_path
        raw_reader.append(RawReader(str(link)))
        await sim.send("AGAIN")
        assert raw_reader[1].read(6) == b"AGAIN\r"


# --- command line ----------------------------------------------------------------------------


class Cli:
    """The simulator's command line as a child process, its stdout read line by line without
    buffering surprises (select on the fd, our own line buffer)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulators.scanner", *args], cwd=REPO, stdout=subprocess.PIPE
        )
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        self._buf = b""

    def readline(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self._fd], [], [], max(remaining, 0))
            assert ready, f"the simulator printed no full line (got {self._buf!r})"
            chunk = os.read(self._fd, 4096)
            assert chunk, f"the simulator exited (got {self._buf!r})"
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode() + "\n"

    def stop(self) -> str:
        """Ctrl-C; the rest of the output once it exited cleanly."""
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=10)
        assert self.proc.returncode == 0
        return (self._buf + out).decode()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def cli() -> Iterator[list[Cli]]:
    procs: list[Cli] = []
    yield procs
    for proc in procs:
        proc.close()


def test_cli_tcp_prints_frames_and_stops_on_ctrl_c(cli: list[Cli]) -> None:
    proc = Cli("tcp", "--count", "3", "--rate", "100", "--generator", "sscc")
    cli.append(proc)
    first = proc.readline()
    assert first.startswith("tcp scanner listening on 127.0.0.1:")
    port = int(first.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        received = b""
        while received.count(b"\r") < 3:
            chunk = client.recv(4096)
            assert chunk
            received += chunk
        lines = [proc.readline() for _ in range(5)]
        assert lines[0] == "waiting for a client\n"
        assert all(" code     sent ']C100" in line for line in lines[1:4])
        assert lines[4] == "scenario done; Ctrl-C to stop\n"
        assert proc.stop().strip().endswith("stopped")
    assert all(frame.startswith(b"]C100") for frame in received.split(b"\r")[:3])


def test_cli_serial_keeps_a_link_and_stops_on_ctrl_c(tmp_path: Path, cli: list[Cli]) -> None:
    link = tmp_path / "by-id-scanner"
    proc = Cli(
        "serial",
        "--link",
        str(link),
        "--count",
        "2",
        "--rate",
        "100",
        "--terminator",
        "lf",
        "--no-aim",
    )
    cli.append(proc)
    first = proc.readline()
    assert first.startswith("serial scanner on /dev/pts/") and str(link) in first
    reader = RawReader(str(link))
    try:
        data = reader.read(2, timeout=10)
        while data.count(b"\n") < 2:
            data += reader.read(1)
    finally:
        reader.close()
    codes = data.split(b"\n")[:2]
    assert all(code.startswith(b"01") and b"\x1d" in code for code in codes)
    proc.stop()
    assert not link.exists()


@pytest.mark.parametrize(
    "path",
    sorted(  # the scanner scenarios (portal-* are the reader simulator's, line-* the line's)
        p
        for p in (Path(__file__).parents[1] / "simulators" / "scenarios").glob("*.yaml")
        if not p.name.startswith(("portal-", "line-"))
    ),
    ids=lambda p: p.stem,
)
def test_bundled_scenarios_load(path: Path) -> None:
    scenario = Scenario.from_yaml(path)
    assert scenario.rate_per_s and scenario.disconnects
