"""The forwarder against real Mosquitto brokers: refusals, TLS and passwords, a hung broker, a
killed broker, replay lanes, and the paho overrides it relies on."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt import _packet
from paho.mqtt.client import MQTTv5, MQTTv311
from structlog.testing import capture_logs

from gateway.forward.paho_bridge import decode_puback
from simulators.broker import Mosquitto
from simulators.codes import CodeGenerator
from simulators.scanner import TcpScannerSim
from tests.helpers import cam_line, running_gateway, subscriber, wait_for

GW_STATUS = "tracegate/test-site/gateway/gw-test/status"


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x01",
        b"\xff\xfe",
        b"\x12\x34\x00",
        b"\x12\x34\x10",
        b"\x12\x34\x87",
        b"\x00\x07\x97\x00",
        b"\x00\x07\x80",
    ],
)
def test_fast_puback_decoding_agrees_with_paho(body: bytes) -> None:
    mid, rc = decode_puback(body) or (None, None)
    assert rc is not None
    for proto in (MQTTv5, MQTTv311) if len(body) == 2 else (MQTTv5,):
        ref = _packet.decode_puback(0x40, body, proto)
        assert (mid, rc.value, rc.is_failure) == (ref.mid, ref.reason.value, ref.reason.is_failure)


@pytest.mark.parametrize("body", [b"\x00", b"\x00\x01\x00\x03\x26\x00\x00", b"\x00\x01\x00\x01"])
def test_unusual_pubacks_are_left_to_paho(body: bytes) -> None:
    assert decode_puback(body) is None


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    acl = tmp_path / "acl"
    acl.write_text(
        "topic readwrite tracegate/test-site/gateway/#\n"
        "topic write tracegate/test-site/line-1/_gateway/#\n"
        "topic write tracegate/test-site/line-1/st10/#\n"
    )
    broker = Mosquitto(extra_config=f"acl_file {acl}\n")
    broker.start()
    yield broker
    broker.close()


async def test_refused_publishes_stay_in_the_journal_until_the_broker_takes_them(
    tmp_path: Path, acl_broker: Mosquitto
) -> None:
    """MQTT 5 reports an ACL refusal in the PUBACK (0x87): the row is kept, not deleted, and
    sent again on the next connection. (MQTT 3.1.1 cannot tell: the broker acks and drops.)"""
    gen = CodeGenerator(seed=4)
    async with TcpScannerSim(terminator="crlf") as cam1, TcpScannerSim(terminator="crlf") as cam2:
        path = cam_line(tmp_path, acl_broker, cam1.port, cam2.port)
        with capture_logs() as logs:
            async with running_gateway(path) as gw:
                assert gw.journal is not None
                journal = gw.journal
                await asyncio.wait_for(cam1.wait_client(), 5)
                await asyncio.wait_for(cam2.wait_client(), 5)
                await wait_for(lambda: journal.stats().rows == 0, 5, "device states delivered")
                for _ in range(3):
                    await cam1.send(gen.gs1_datamatrix())
                    await cam2.send(gen.gs1_datamatrix())
                await wait_for(lambda: any(lg["event"] == "publish_refused" for lg in logs), 5)
                await asyncio.sleep(0.3)  # give deletes a chance to (wrongly) happen
                await journal.flush()
                assert journal.stats().rows == 3  # st20's three events, refused, kept
                assert gw.forwarder is not None and gw.forwarder.stats.refused >= 3
                # The broker's policy is fixed: the next connection delivers them (the journal
                # empties only on PUBACKs that say success).
                (tmp_path / "acl").write_text("topic readwrite #\n")
                acl_broker.stop()
                acl_broker.start()
                await wait_for(lambda: journal.stats().rows == 0, 15, "accepted at last")
    refused = [lg for lg in logs if lg["event"].startswith("publish_refused")]
    assert refused[0]["log_level"] == "warning" and "Not authorized" in refused[0]["reason"]


# --- TLS, mutual TLS, passwords --------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _new_ca(d: Path, name: str, cn: str) -> Path:
    """A self-signed CA: `name`.pem and `name`.key in `d`."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={cn}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        cwd=d,
    )
    return d / f"{name}.pem"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    _new_ca(d, "ca", "Tracegate test CA")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn in (("server", "127.0.0.1"), ("client", "gw-test")):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={cn}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=d,
        )
        ext = ["-extfile", "san.ext"] if name == "server" else []
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            f"{name}.pem",
            *ext,
            cwd=d,
        )
    return d


SECRET = "s3cret-Pa55-do-not-log"


@pytest.fixture
def tls_broker(pki: Path, tmp_path: Path) -> Iterator[Mosquitto]:
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwd), "gw-test", SECRET],
        check=True,
        capture_output=True,
    )
    passwd.chmod(0o644)  # mosquitto runs as the current user here (see simulators/broker.py)
    broker = Mosquitto(
        extra_config=(
            f"cafile {pki / 'ca.pem'}\ncertfile {pki / 'server.pem'}\n"
            f"keyfile {pki / 'server.key'}\n"
            f"require_certificate true\npassword_file {passwd}\n"
        )
    )
    # The listener block of the generated config allows anonymous; a password file overrides
    # that only with allow_anonymous false:
    broker.extra_config += "allow_anonymous false\n"
    broker.start()
    yield broker
    broker.close()


def _tls_line(tmp_path: Path, broker: Mosquitto, pki: Path, cam: int, **mqtt: Any) -> Path:
    return cam_line(
        tmp_path,
        broker,
        cam,
        mqtt={
            "tls": {
                "ca_file": str(pki / "ca.pem"),
                "cert_file": str(pki / "client.pem"),
                "key_file": str(pki / "client.key"),
            },
            "username": "gw-test",
            **mqtt,
        },
    )


async def test_mutual_tls_with_password_file_delivers_and_never_logs_the_password(
    tmp_path: Path, pki: Path, tls_broker: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pw").write_text(SECRET + "\n")
    gen = CodeGenerator(seed=8)
    async with TcpScannerSim(terminator="crlf") as cam:
        path = _tls_line(tmp_path, tls_broker, pki, cam.port, password_file="pw")
        with capture_logs() as logs:
            async with running_gateway(path) as gw:
                await asyncio.wait_for(cam.wait_client(), 5)
                assert gw.journal is not None
                journal = gw.journal
                await cam.send(gen.gs1_datamatrix())
                await wait_for(lambda: journal.committed_seq >= 2, 5, "committed")
                await wait_for(lambda: journal.stats().rows == 0, 10, "delivered over TLS")
    assert any(lg["event"] == "broker_connected" for lg in logs)
    everything = json.dumps(logs, default=str) + capsys.readouterr().out
    assert SECRET not in everything


async def test_wrong_password_from_env_is_refused_loudly_and_never_logged(
    tmp_path: Path, pki: Path, tls_broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACEGATE_TEST_PW", SECRET + "-wrong")
    async with TcpScannerSim(terminator="crlf") as cam:
        path = _tls_line(tmp_path, tls_broker, pki, cam.port, password_env="TRACEGATE_TEST_PW")
        with capture_logs() as logs:
            async with running_gateway(path):
                await wait_for(
                    lambda: any(lg["event"] == "broker_unavailable" for lg in logs),
                    10,
                    "refusal logged",
                )
    first = next(lg for lg in logs if lg["event"] == "broker_unavailable")
    assert first["log_level"] == "warning" and "refused" in first["error"]
    assert SECRET not in json.dumps(logs, default=str)


async def test_untrusted_broker_certificate_is_refused(
    tmp_path: Path, pki: Path, tls_broker: Mosquitto
) -> None:
    (tmp_path / "pw").write_text(SECRET)
    other_ca = _new_ca(tmp_path, "other-ca", "Someone else's CA")
    async with TcpScannerSim(terminator="crlf") as cam:
        path = _tls_line(tmp_path, tls_broker, pki, cam.port, password_file="pw")
        text = path.read_text().replace(str(pki / "ca.pem"), str(other_ca))
        path.write_text(text)
        with capture_logs() as logs:
            async with running_gateway(path):
                await wait_for(
                    lambda: any(lg["event"] == "broker_unavailable" for lg in logs),
                    10,
                    "refusal logged",
                )
    assert "CERTIFICATE_VERIFY_FAILED" in next(
        lg["error"] for lg in logs if lg["event"] == "broker_unavailable"
    )


# --- a hung broker, a killed broker ------------------------------------------------------------


@pytest.mark.slow
async def test_hung_broker_is_detected_by_keepalive_and_nothing_is_lost(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """SIGSTOP: the TCP connection stays up but nothing is answered. The keepalive notices; the
    rows published into the void stay in the journal and go out after the broker resumes."""
    gen = CodeGenerator(seed=12)
    async with TcpScannerSim(terminator="crlf") as cam:
        path = cam_line(tmp_path, broker, cam.port)
        with capture_logs() as logs:
            async with running_gateway(path) as gw:
                assert gw.journal is not None and gw.forwarder is not None
                journal, fwd = gw.journal, gw.forwarder
                await asyncio.wait_for(cam.wait_client(), 5)
                await wait_for(lambda: fwd.stats.connected, 5)
                broker.pause()
                try:
                    for _ in range(10):
                        await cam.send(gen.gs1_datamatrix())
                    await wait_for(lambda: journal.committed_seq >= 11, 5, "committed")
                    await wait_for(lambda: not fwd.stats.connected, 20, "keepalive noticed")
                    assert journal.stats().rows >= 10
                finally:
                    broker.resume()
                await wait_for(lambda: journal.stats().rows == 0, 20, "delivered after resume")
    assert any(lg["event"] == "broker_disconnected" for lg in logs)


async def test_killed_broker_loses_nothing_the_journal_committed(
    tmp_path: Path, broker: Mosquitto
) -> None:
    gen = CodeGenerator(seed=13)
    async with TcpScannerSim(terminator="crlf") as cam:
        path = cam_line(tmp_path, broker, cam.port)
        async with running_gateway(path) as gw:
            assert gw.journal is not None and gw.forwarder is not None
            journal = gw.journal
            await asyncio.wait_for(cam.wait_client(), 5)
            for i in range(400):
                await cam.send(gen.gs1_datamatrix())
                if i == 150:
                    broker.kill()
                if i == 300:
                    broker.start()
            await wait_for(lambda: journal.committed_seq >= 401, 10, "all committed")
            await wait_for(lambda: journal.stats().rows == 0, 20, "every row PUBACKed")
            assert gw.forwarder.stats.acked >= 400


# --- replay lanes -----------------------------------------------------------------------------


async def test_large_backlog_replays_in_two_lanes_and_live_events_go_first(
    tmp_path: Path, broker: Mosquitto
) -> None:
    gen = CodeGenerator(seed=30)
    async with TcpScannerSim(terminator="crlf") as cam1, TcpScannerSim(terminator="crlf") as cam2:
        path = cam_line(
            tmp_path, broker, cam1.port, cam2.port, mqtt={"replay_threshold_events": 500}
        )
        with subscriber(broker, "tracegate/test-site/line-1/#") as sub, capture_logs() as logs:
            async with running_gateway(path) as gw:
                assert gw.journal is not None
                journal = gw.journal
                await asyncio.wait_for(cam1.wait_client(), 5)
                broker.stop()
                for _ in range(3000):
                    await cam1.send(gen.gs1_datamatrix())
                await wait_for(lambda: journal.stats().rows >= 3000, 10, "backlog")
                broker.start()
                await wait_for(lambda: any(lg["event"] == "replay_started" for lg in logs), 10)
                for _ in range(5):
                    await cam2.send(gen.gs1_datamatrix())
                await wait_for(lambda: len(sub.events("identified")) == 3005, 30, "everything")
    arrivals = sub.events("identified")
    live = [i for i, e in enumerate(arrivals) if e["station"] == "st20"]
    assert live[-1] < 2900, "live events should overtake the backlog, not wait behind it"
    for station in ("st10", "st20"):  # each lane in seq order
        seqs = [e["seq"] for e in arrivals if e["station"] == station]
        assert seqs == sorted(seqs)
    assert any(lg["event"] == "replay_finished" for lg in logs)
