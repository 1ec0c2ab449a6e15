"""Helpers of the status page and metrics tests: raw HTTP over a real socket (so that garbage can
be sent too), a strict parser of the Prometheus text format, and a scanner line with its status
server on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.app import Gateway
from gateway.status_http import StatusServer
from simulators.broker import Mosquitto
from tests.helpers import line_file, wait_for


@dataclass
class Response:
    code: int
    headers: dict[str, str]
    body: bytes


async def request(port: int, raw: bytes, host: str = "127.0.0.1") -> Response | None:
    """Send `raw` as it is, then end the sending side, and read the answer until the server
    closes (None: closed without an answer)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw)
        writer.write_eof()  # all of it: a half request is answered at once, not after a timeout
        await writer.drain()
        async with asyncio.timeout(10):
            try:
                data = await reader.read()
            except ConnectionResetError:  # turned away (too many clients)
                data = b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    if not data:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, code, _ = lines[0].split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    for h in lines[1:]:
        k, _, v = h.partition(":")
        headers[k.lower()] = v.strip()
    assert int(headers["content-length"]) == len(body) or raw.startswith(b"HEAD ")
    return Response(int(code), headers, body)


async def get(port: int, path: str, method: str = "GET", host: str = "localhost") -> Response:
    r = await request(port, f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    assert r is not None, f"{method} {path}: no answer"
    return r


# --- the Prometheus text format (0.0.4), parsed strictly ----------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_SAMPLE = re.compile(rf"({_NAME})(?:\{{(.*)\}})? (\S+)$")
_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


@dataclass
class Metrics:
    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def all(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {lb: v for (n, lb), v in self.samples.items() if n == name}


def _value(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", text):
        raise AssertionError(f"not a sample value: {text!r}")
    return float(text)


def _labels(text: str) -> frozenset[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        assert m, f"bad label set at {text[pos:]!r}"
        value = m.group(2).replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        out.append((m.group(1), value))
        pos = m.end()
        if pos < len(text):
            assert text[pos] == ",", f"labels not separated by a comma: {text!r}"
            pos += 1
    names = [k for k, _ in out]
    assert len(names) == len(set(names)), f"a label twice: {text!r}"
    return frozenset(out)


def parse_metrics(text: str) -> Metrics:
    """Every line checked: HELP and TYPE once per family and before its samples, samples of a
    family together, names and labels well formed, no sample twice, counters end in _total,
    histograms with cumulative buckets up to +Inf equal to their _count."""
    assert text.endswith("\n"), "the exposition ends with a newline"
    m = Metrics()
    current: str | None = None
    done: set[str] = set()
    for line in text[:-1].split("\n"):
        assert line, "no empty lines"
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            assert re.fullmatch(_NAME, name) and name not in m.helps, line
            m.helps[name] = help_
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in _TYPES and name not in m.types, line
            assert name not in done, f"{name}: samples of a family must be together"
            if current is not None:
                done.add(current)
            m.types[name] = kind
            current = name
            if kind == "counter":
                assert name.endswith("_total"), f"a counter's name ends in _total: {name}"
            continue
        assert not line.startswith("#"), f"unknown comment: {line!r}"
        s = _SAMPLE.match(line)
        assert s, f"not a sample line: {line!r}"
        name, labels, value = s.group(1), _labels(s.group(2) or ""), _value(s.group(3))
        assert current is not None, f"sample before any TYPE: {line!r}"
        allowed = {current}
        if m.types[current] == "histogram":
            allowed = {f"{current}_bucket", f"{current}_sum", f"{current}_count"}
        assert name in allowed, f"{name} is not a sample of family {current}"
        key = (name, labels)
        assert key not in m.samples, f"sample twice: {line!r}"
        m.samples[key] = value
    for name, kind in m.types.items():
        assert name in m.helps, f"{name} has no HELP"
        if kind == "histogram":
            _check_histogram(m, name)
    return m


def _check_histogram(m: Metrics, name: str) -> None:
    series: dict[frozenset[tuple[str, str]], list[tuple[float, float]]] = {}
    for lb, v in m.all(f"{name}_bucket").items():
        le = dict(lb)["le"]
        rest = frozenset((k, x) for k, x in lb if k != "le")
        series.setdefault(rest, []).append((_value(le), v))
    assert series, f"{name}: no buckets"
    for rest, buckets in series.items():
        buckets.sort()
        assert math.isinf(buckets[-1][0]), f"{name}: no +Inf bucket"
        counts = [c for _, c in buckets]
        assert counts == sorted(counts), f"{name}: buckets not cumulative"
        assert m.samples[(f"{name}_count", rest)] == counts[-1], f"{name}: +Inf != _count"
        assert (f"{name}_sum", rest) in m.samples, f"{name}: no _sum"


async def scrape(port: int) -> Metrics:
    r = await get(port, "/metrics")
    assert r.code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_metrics(r.body.decode())


# --- a line to look at -------------------------------------------------------------------------


def status_line(tmp_path: Path, broker: Mosquitto, cam_port: int, **status: Any) -> Path:
    """One Cognex scanner (cam-1) at st10 (work order WO-7, GS1 codes only), its status server
    on a free port unless `status` says otherwise."""
    return line_file(
        tmp_path,
        broker,
        devices=[
            {
                "id": "cam-1",
                "profile": "scanners/cognex-dataman-370",
                "host": "127.0.0.1",
                "port": cam_port,
            }
        ],
        stations=[
            {
                "id": "st10",
                "step": "assembly",
                "work_order": "WO-7",
                "identity": {"sources": ["cam-1"], "schemes": ["sgtin", "sscc"]},
            }
        ],
        status={"port": 0, **status},
    )


async def status_port(gw: Gateway) -> int:
    """The port the gateway's status server listens on (once it does)."""
    server: StatusServer = await wait_for(lambda: gw.status_server, 5, "status server")
    await asyncio.wait_for(server.listening.wait(), 5)
    assert server.port is not None
    return server.port
