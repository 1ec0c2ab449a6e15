"""Faults of the LLRP reader simulator, and of its clients: random and mutated requests that
must never break the reader; silence, an abrupt drop, garbage and malformed frames sent to the
client, refused connections, a stale session, a restart."""

from __future__ import annotations

import asyncio
import random

import pytest
from sllurp.llrp import LLRPMessage

from simulators import llrp_codec as codec
from simulators.llrp import LlrpReaderSim
from simulators.llrp_codec import Msg
from tests.helpers_llrp import (
    EPC96,
    RESPONSE_TYPES,
    Client,
    get_config,
    inventory,
    is_connection_event,
    rospec,
    rospec_states,
    status_of,
)

# --- what a client sends wrong -------------------------------------------------------------------

_CLIENT_TYPES = [
    Msg.GET_READER_CAPABILITIES, Msg.GET_READER_CONFIG, Msg.SET_READER_CONFIG,
    Msg.CLOSE_CONNECTION, Msg.ADD_ROSPEC, Msg.DELETE_ROSPEC, Msg.START_ROSPEC,
    Msg.STOP_ROSPEC, Msg.ENABLE_ROSPEC, Msg.DISABLE_ROSPEC, Msg.GET_ROSPECS,
    Msg.ADD_ACCESSSPEC, Msg.DELETE_ACCESSSPEC, Msg.ENABLE_ACCESSSPEC, Msg.DISABLE_ACCESSSPEC,
    Msg.GET_ACCESSSPECS, Msg.GET_SUPPORTED_VERSION, Msg.SET_PROTOCOL_VERSION, Msg.GET_REPORT,
    Msg.ENABLE_EVENTS_AND_REPORTS, Msg.KEEPALIVE_ACK, Msg.CUSTOM_MESSAGE, Msg.KEEPALIVE,
]  # fmt: skip


async def test_client_garbage_never_breaks_the_reader() -> None:
    """Random and mutated bodies of every client message: each gets its response (or none,
    for the messages that have none) and the session goes on."""
    rng = random.Random(9)
    valid = [
        LLRPMessage(msgdict={"ADD_ROSPEC": {"ID": 1, "ROSpecID": 5, "ROSpec": rospec(5)}}),
        LLRPMessage(
            msgdict={
                "SET_READER_CONFIG": {
                    "ID": 1,
                    "KeepaliveSpec": {"KeepaliveTriggerType": 1, "TimeInterval": 5000},
                    "ReaderEventNotificationSpec": {"EventNotificationState": {"GPIEvent": True}},
                }
            }
        ),
    ]
    async with LlrpReaderSim(seed=9) as sim, Client(sim.port) as c:
        await c.wait(is_connection_event("Success"))
        for _ in range(300):
            mtype: int
            if rng.random() < 0.5:
                mtype = rng.choice(_CLIENT_TYPES)
                body = rng.randbytes(rng.randrange(24))
            else:
                base = rng.choice(valid).msgbytes
                mtype = codec.parse_header(base).type
                mutated = bytearray(base[codec.HEADER_LEN :])
                for _ in range(rng.randrange(1, 4)):
                    mutated[rng.randrange(len(mutated))] = rng.randrange(256)
                body = bytes(mutated[: rng.randrange(len(mutated) + 1)])
            if mtype == Msg.CLOSE_CONNECTION and not body:
                continue  # that one would be obeyed
            sent = c.send_body(mtype, body)
            probe = await c.request("GET_READER_CAPABILITIES", RequestedData=1)
            assert status_of(probe) == 0, "the reader stopped answering"
            answers = [f for f in c.frames if f.id == sent and f.type in RESPONSE_TYPES]
            assert len(answers) <= 1
        assert sim.connected and sim.sessions == 1


# --- faults of the reader ------------------------------------------------------------------------


async def test_a_silent_reader_keeps_tcp_up_and_answers_nothing() -> None:
    async with LlrpReaderSim(seed=13) as sim, Client(sim.port) as c:
        await inventory(c, keepalive_ms=20)
        await c.wait(lambda f: f.type == Msg.KEEPALIVE)
        sim.silent = True
        frames = len(c.frames)
        msg_id = c.send("GET_READER_CAPABILITIES", RequestedData=1)
        with pytest.raises(TimeoutError):
            await c.reply(msg_id, timeout=0.2)  # 10 keepalive intervals
        truth = await sim.stray(EPC96)
        assert truth.not_delivered == 1 and not c.tag_reports()
        assert sim.connected and not c.closed and len(c.frames) == frames  # nothing at all
        sim.silent = False
        assert status_of(await c.request("GET_READER_CAPABILITIES", RequestedData=1)) == 0


async def test_an_abrupt_drop_is_a_reset() -> None:
    async with LlrpReaderSim(seed=14) as sim, Client(sim.port) as c:
        await inventory(c)
        assert sim.drop_connection()
        await c.wait_closed()
        assert c.reset
        await sim.wait_disconnected()
        assert not sim.drop_connection()
        truth = await sim.stray(EPC96)
        assert truth.not_delivered == 1  # nobody connected


async def test_garbage_and_malformed_frames_reach_the_client() -> None:
    async with LlrpReaderSim(seed=15) as sim:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        try:
            await sim.wait_connected()
            head = await reader.readexactly(10)  # the ConnectionAttemptEvent
            await reader.readexactly(codec.parse_header(head).length - 10)
            sent = await sim.send_garbage(b"\xde\xad\xbe\xef")
            assert await reader.readexactly(len(sent)) == b"\xde\xad\xbe\xef"
            frame = await sim.send_malformed("parameter")
            got = await reader.readexactly(len(frame))
            with pytest.raises(codec.LlrpError):
                codec.split_params(got[10:], None)  # the TagReportData overruns the message
            frame = await sim.send_malformed("length")
            assert codec.parse_header(await reader.readexactly(10)).length == 4 == len(frame) - 6
        finally:
            writer.close()
            await writer.wait_closed()


async def test_refused_connections_then_accepted() -> None:
    async with LlrpReaderSim(seed=16) as sim:
        sim.refuse_next(2)
        for _ in range(2):
            async with Client(sim.port) as c:
                await c.wait(
                    is_connection_event("Failed (a Client initiated connection already exists)")
                )
                await c.wait_closed()
        async with Client(sim.port) as c:
            await c.wait(is_connection_event("Success"))
        assert (sim.connection_attempts, sim.refused, sim.sessions) == (3, 2, 1)


async def test_a_stale_session_refuses_reconnects_for_stale_s() -> None:
    async with LlrpReaderSim(seed=17) as sim:
        sim.stale_s = 0.3
        async with Client(sim.port) as c:
            await c.wait(is_connection_event("Success"))
            dropped = asyncio.get_running_loop().time()
            sim.drop_connection()
            await c.wait_closed()
        attempts = 0
        while True:  # a client retrying, 50 ms apart
            attempts += 1
            async with Client(sim.port) as c:
                first = await c.wait(lambda f: f.type == Msg.READER_EVENT_NOTIFICATION)
                if is_connection_event("Success")(first):
                    break
                await c.wait_closed()
            await asyncio.sleep(0.05)
        assert asyncio.get_running_loop().time() - dropped >= 0.3
        assert attempts > 1 and sim.refused == attempts - 1 and sim.sessions == 2


async def test_restart_listens_again_on_the_same_port_with_factory_state() -> None:
    async with LlrpReaderSim(seed=18) as sim:
        port = sim.port
        async with Client(port) as c:
            await inventory(c, keepalive_ms=1000)
            await sim.restart()
            await c.wait_closed()
        assert sim.port == port and not sim.rospecs
        async with Client(port) as c:
            await c.wait(is_connection_event("Success"))
            reply = await c.request_body(Msg.GET_READER_CONFIG, get_config(requested=8))
            assert reply.msg is not None
            assert reply.msg["KeepaliveSpec"]["KeepaliveTriggerType"] == "Null"
            assert rospec_states(await c.request_body(Msg.GET_ROSPECS)) == {}
        assert sim.sessions == 2
