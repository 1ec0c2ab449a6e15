"""Metrics: the exposition format, and the figures of a real gateway following real traffic (a
TCP scanner simulator, a real Mosquitto stopped and started again)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.metrics import Family, Histogram, LoopLag, render, rss_bytes
from simulators.broker import Mosquitto
from simulators.codes import CodeGenerator
from simulators.scanner import TcpScannerSim
from tests.helpers import running_gateway
from tests.helpers_status import Metrics, parse_metrics, scrape, status_line, status_port

# --- the format ---------------------------------------------------------------------------------


def test_render_writes_the_text_format_that_a_strict_parser_reads_back() -> None:
    h = Histogram([0.1, 1.0])
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v)
    text = render(
        [
            Family("x_total", "counter", "Things.\nWith a \\ and a newline.")
            .add(3, kind='a "quoted"\nvalue\\')
            .add(0, kind="b"),
            Family("g", "gauge", "A gauge.").add(1.5).add(float("nan"), device="d"),
            Family("lat_seconds", "histogram", "Latency.").add_histogram(h, part="p"),
        ]
    )
    m = parse_metrics(text)
    assert m.types == {"x_total": "counter", "g": "gauge", "lat_seconds": "histogram"}
    assert m.helps["x_total"] == "Things.\\nWith a \\\\ and a newline."
    assert m.value("x_total", kind='a "quoted"\nvalue\\') == 3
    assert m.value("g") == 1.5
    buckets = m.all("lat_seconds_bucket")
    assert buckets[frozenset({("part", "p"), ("le", "0.1")})] == 2  # 0.1 is in the 0.1 bucket
    assert buckets[frozenset({("part", "p"), ("le", "1")})] == 3
    assert buckets[frozenset({("part", "p"), ("le", "+Inf")})] == 4
    assert m.value("lat_seconds_sum", part="p") == pytest.approx(3.65)
    assert h.quantile(0.5) == 0.1 and h.quantile(1.0) == float("inf")
    assert Histogram([1]).quantile(0.5) is None


@pytest.mark.parametrize(
    "bad",
    [
        "# TYPE a counter\na 1\n",  # a counter not ending in _total
        '# HELP a x\n# TYPE a gauge\na{l="1"} 1\na{l="1"} 2\n',  # a sample twice
        "# HELP a x\n# TYPE a gauge\na one\n",  # not a number
        "# HELP a x\n# TYPE a gauge\nb 1\n",  # a sample outside its family
        "# HELP a x\n# TYPE a gauge\na 1",  # no final newline
        '# HELP h x\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\n'
        "h_sum 1\nh_count 1\n",  # not cumulative
    ],
)
def test_the_test_parser_refuses_what_prometheus_would(bad: str) -> None:
    with pytest.raises(AssertionError):
        parse_metrics(bad)


def test_loop_lag_keeps_the_worst_of_the_window_and_rss_is_read() -> None:
    lag = LoopLag(window_s=3600)
    for v in (0.001, 0.2, 0.003, -0.001):  # a negative overshoot (clock granularity) is 0
        lag.sample(v)
    assert lag.last_s == 0 and lag.max_s == 0.2 and lag.histogram.count == 4
    rss = rss_bytes()
    assert rss is not None and rss > 10 * 1024 * 1024


# --- a real gateway -----------------------------------------------------------------------------


def _dev(m: Metrics, name: str, **labels: str) -> float | None:
    return m.value(name, device="cam-1", **labels)


async def test_metrics_follow_reads_rejects_an_outage_and_a_dead_scanner(
    tmp_path: Path, broker: Mosquitto
) -> None:
    gen = CodeGenerator(seed=21)
    async with (
        TcpScannerSim(terminator="crlf") as cam,
        running_gateway(status_line(tmp_path, broker, cam.port)) as gw,
    ):
        port = await status_port(gw)
        await asyncio.wait_for(cam.wait_client(), 5)
        m = await _until(port, lambda m: _dev(m, "tracegate_device_up") == 1, "cam-1 up")
        assert _dev(m, "tracegate_device_state", state="connected") == 1
        assert _dev(m, "tracegate_device_reads_total") == 0
        assert _dev(m, "tracegate_device_last_read_age_seconds") is None  # never read

        for _ in range(5):
            await cam.send(gen.gs1_datamatrix())
        await cam.send("HELLO WORLD")  # not GS1, and plain is not accepted at st10
        await cam.send(gen.gs1_datamatrix(faulty="check_digit"))
        m = await _until(
            port,
            lambda m: (
                m.value("tracegate_journal_committed_seq") == 8  # 7 reads and cam-1 connected
                and m.value("tracegate_forwarder_acked_total") == 8
            ),
            "2 rejects, everything acked",
        )
        assert _dev(m, "tracegate_device_reads_total") == 7
        assert m.value("tracegate_events_total", type="identified") == 5
        assert m.value("tracegate_rejects_total", station="st10", reason="unrecognized") == 1
        assert m.value("tracegate_rejects_total", station="st10", reason="bad_check_digit") == 1
        age = _dev(m, "tracegate_device_last_read_age_seconds")
        assert age is not None and 0 <= age < 10
        assert (m.value("tracegate_journal_commit_seconds_count") or 0) > 0
        assert (m.value("tracegate_forwarder_publish_seconds_count") or 0) > 0
        assert m.value("tracegate_journal_events") == 0
        assert m.value("tracegate_journal_oldest_unsent_age_seconds") == 0
        assert m.value("tracegate_broker_connected") == 1
        assert (m.value("tracegate_process_resident_memory_bytes") or 0) > 10 * 2**20
        assert (m.value("tracegate_journal_file_bytes") or 0) > 0

        # A broker outage: the journal holds what comes meanwhile, and it ages.
        broker.stop()
        await _until(port, lambda m: m.value("tracegate_broker_connected") == 0, "broker down")
        for _ in range(3):
            await cam.send(gen.gs1_datamatrix())
        m = await _until(
            port,
            lambda m: (
                (m.value("tracegate_journal_events") or 0) >= 3
                and (m.value("tracegate_journal_oldest_unsent_age_seconds") or 0) >= 0.3
            ),
            "a backlog that ages",
        )
        broker.start()
        m = await _until(
            port,
            lambda m: (
                m.value("tracegate_journal_events") == 0
                and m.value("tracegate_broker_connected") == 1
            ),
            "backlog delivered",
        )
        assert (m.value("tracegate_forwarder_reconnects_total") or 0) >= 1
        assert (m.value("tracegate_forwarder_connect_failures_total") or 0) >= 1
        assert m.value("tracegate_journal_oldest_unsent_age_seconds") == 0

        # The scanner dies: the device is down, and the failure is counted by kind.
        await cam.stop()
        m = await _until(port, lambda m: _dev(m, "tracegate_device_up") == 0, "cam-1 down")
        assert _dev(m, "tracegate_device_state", state="connected") == 0
        assert _dev(m, "tracegate_device_state", state="disconnected") == 1
        assert (_dev(m, "tracegate_device_errors_total", kind="unavailable") or 0) >= 1
        assert _dev(m, "tracegate_device_reads_total") == 10
        assert (m.value("tracegate_event_loop_lag_seconds_count") or 0) > 0


async def _until(
    port: int, pred: Callable[[Metrics], bool], what: str, timeout: float = 15.0
) -> Metrics:
    """Scrape until `pred` holds for the metrics; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        m = await scrape(port)
        if pred(m):
            return m
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
