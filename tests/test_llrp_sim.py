"""The LLRP reader simulator, judged from the outside over real TCP by a bare asyncio client
(requests encoded and frames decoded by sllurp, by hand where sllurp cannot): one controlling
client, the ROSpec state machine, requests answered or refused, versions, keepalives.

The client and the helpers that build requests are shared by the other tests of the simulator:
test_llrp_sim_reports (ROSpecs and tag reports), test_llrp_sim_faults (faults of the reader
and of its clients), test_llrp_sim_scenarios (scenarios and the command line) and
test_llrp_sim_oracles (sllurp's own client and Wireshark's dissector as judges)."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from simulators import llrp_codec as codec
from simulators.llrp import LlrpReaderSim
from simulators.llrp_codec import Msg, P
from tests.helpers_llrp import (
    Client,
    event_of,
    get_config,
    inventory,
    is_connection_event,
    rospec,
    rospec_states,
    status_of,
)

# --- protocol behaviour --------------------------------------------------------------------------


async def test_one_controlling_client_the_second_is_refused_and_the_first_told() -> None:
    async with LlrpReaderSim(seed=3) as sim, Client(sim.port) as first:
        await first.wait(is_connection_event("Success"))
        async with Client(sim.port) as second:
            await second.wait(
                is_connection_event("Failed (a Client initiated connection already exists)")
            )
            await second.wait_closed()
        await first.wait(is_connection_event("Another connection attempted"))
        assert status_of(await first.request("GET_READER_CAPABILITIES", RequestedData=0)) == 0
        assert (sim.connection_attempts, sim.sessions, sim.refused) == (2, 1, 1)


async def test_rospec_state_machine_and_its_errors() -> None:
    disabled, inactive, active = 0, 1, 2
    async with LlrpReaderSim(seed=4) as sim, Client(sim.port) as c:
        await c.wait(is_connection_event("Success"))
        spec = rospec(1, start="Null")

        async def status(name: str, **fields: Any) -> int:
            return status_of(await c.request(name, **fields))

        async def states() -> dict[int, int]:
            return rospec_states(await c.request_body(Msg.GET_ROSPECS))

        assert await status("ADD_ROSPEC", ROSpecID=1, ROSpec=spec) == 0
        assert await status("ADD_ROSPEC", ROSpecID=1, ROSpec=spec) == 100  # exists
        assert await states() == {1: disabled}
        assert await status("START_ROSPEC", ROSpecID=1) == 101  # not enabled yet
        assert await status("ENABLE_ROSPEC", ROSpecID=1) == 0
        assert await states() == {1: inactive}  # Null start trigger: waits for START
        assert not sim.inventorying
        assert await status("START_ROSPEC", ROSpecID=1) == 0
        assert await states() == {1: active} and sim.inventorying
        assert await status("START_ROSPEC", ROSpecID=1) == 101  # already active
        assert await status("STOP_ROSPEC", ROSpecID=1) == 0
        assert await status("STOP_ROSPEC", ROSpecID=1) == 101  # not active
        assert await status("START_ROSPEC", ROSpecID=0) == 101  # 0 is not an ROSpec
        assert await status("DISABLE_ROSPEC", ROSpecID=1) == 0
        assert await states() == {1: disabled}
        for name in ("ENABLE_ROSPEC", "DISABLE_ROSPEC", "START_ROSPEC", "DELETE_ROSPEC"):
            assert await status(name, ROSpecID=99) == 101  # no such ROSpec
        assert await status("ADD_ROSPEC", ROSpecID=2, ROSpec=rospec(2)) == 0
        assert await status("ENABLE_ROSPEC", ROSpecID=2) == 0  # Immediate: active at once
        assert await states() == {1: disabled, 2: active}
        assert await status("DELETE_ROSPEC", ROSpecID=0) == 0  # all of them
        assert await states() == {}
        assert await status("DELETE_ACCESSSPEC", AccessSpecID=0) == 0
        assert await status("DELETE_ACCESSSPEC", AccessSpecID=7) == 101
        bad = rospec(3, antennas=(9,))  # the reader has 4
        assert await status("ADD_ROSPEC", ROSpecID=3, ROSpec=bad) == 100
        bad = rospec(4) | {"CurrentState": "Active"}  # must be added Disabled
        assert await status("ADD_ROSPEC", ROSpecID=4, ROSpec=bad) == 100


async def test_unsupported_and_malformed_requests_are_answered() -> None:
    async with LlrpReaderSim(seed=8) as sim, Client(sim.port) as c:
        await c.wait(is_connection_event("Success"))
        custom = struct.pack("!IB", 25882, 21) + bytes(4)  # IMPINJ_ENABLE_EXTENSIONS
        error = await c.request_body(Msg.CUSTOM_MESSAGE, custom)
        assert error.type == Msg.ERROR_MESSAGE and status_of(error) == 109
        error = await c.request_body(900)
        assert error.type == Msg.ERROR_MESSAGE and status_of(error) == 109
        error = await c.request_body(Msg.GET_READER_CAPABILITIES, b"\x00", version=3)
        assert error.type == Msg.ERROR_MESSAGE and status_of(error) == 110
        truncated = b"\x00" + struct.pack("!HH", P.KEEPALIVE_SPEC, 9) + b"\x01"
        reply = await c.request_body(Msg.SET_READER_CONFIG, truncated)
        assert reply.type == Msg.SET_READER_CONFIG_RESPONSE and status_of(reply) == 100
        assert reply.msg is not None
        assert reply.msg["LLRPStatus"]["ParameterError"]["ParameterType"] == "KeepaliveSpec"
        reply = await c.request_body(Msg.GET_READER_CONFIG, get_config(antenna=9))
        assert status_of(reply) == 101  # antenna 9
        reply = await c.request_body(Msg.GET_ACCESSSPECS)
        assert reply.type == Msg.GET_ACCESSSPECS_RESPONSE and status_of(reply) == 0
        assert status_of(await c.request("GET_READER_CAPABILITIES", RequestedData=0)) == 0
        # A frame that cannot be framed: the reader says so and hangs up.
        c.writer.write(codec.HEADER.pack((1 << 10) | Msg.GET_READER_CONFIG, 3, 77))
        error = await c.reply(77)
        assert error.type == Msg.ERROR_MESSAGE
        await c.wait_closed()
        await sim.wait_disconnected()


async def test_close_connection_is_answered_then_announced_then_closed() -> None:
    async with LlrpReaderSim(seed=10) as sim, Client(sim.port) as c:
        await c.wait(is_connection_event("Success"))
        reply = await c.request("CLOSE_CONNECTION")
        assert reply.type == Msg.CLOSE_CONNECTION_RESPONSE and status_of(reply) == 0
        await c.wait_closed()
        close = c.frames[-1]
        assert close.type == Msg.READER_EVENT_NOTIFICATION
        assert "ConnectionCloseEvent" in event_of(close)
        assert not c.reset
        await sim.wait_disconnected()


async def test_protocol_version_is_negotiated() -> None:
    async with LlrpReaderSim(seed=11) as sim, Client(sim.port) as c:
        await c.wait(is_connection_event("Success"))
        reply = await c.request_body(Msg.GET_SUPPORTED_VERSION, version=2)
        assert reply.type == Msg.GET_SUPPORTED_VERSION_RESPONSE and reply.body[:2] == b"\x01\x02"
        reply = await c.request_body(Msg.SET_PROTOCOL_VERSION, b"\x02", version=2)
        assert status_of(reply) == 0
        reply = await c.request_body(Msg.GET_READER_CAPABILITIES, b"\x01", version=2)
        assert reply.version == 2 and status_of(reply) == 0
        error = await c.request_body(Msg.GET_READER_CAPABILITIES, b"\x01", version=1)
        assert error.type == Msg.ERROR_MESSAGE and status_of(error) == 110
        reply = await c.request_body(Msg.SET_PROTOCOL_VERSION, b"\x03", version=2)
        assert status_of(reply) == 110
        assert sim.connected


async def test_keepalives_at_the_interval_until_stopped() -> None:
    async with LlrpReaderSim(seed=12) as sim, Client(sim.port) as c:
        await inventory(c, keepalive_ms=30)
        await c.wait(lambda f: sum(f.type == Msg.KEEPALIVE for f in c.frames) >= 3)
        keepalive = next(f for f in c.frames if f.type == Msg.KEEPALIVE)
        c.send("KEEPALIVE_ACK", ID=keepalive.id)
        await sim.wait_for(lambda: sim.keepalive_acks == 1)
        sim.keepalives_enabled = False
        before = sim.keepalives_sent
        await asyncio.sleep(0.2)  # an observation window: nothing may come in it
        assert sim.keepalives_sent == before
        assert status_of(await c.request("GET_READER_CAPABILITIES", RequestedData=1)) == 0
