"""Shared fixtures: a real Mosquitto per test session, and the leak check every test passes.

Leaks are bugs: a test that leaves an asyncio task, a thread or a child process behind fails
(the idea comes from pymodbus' test suite).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator

import psutil
import pytest
import pytest_asyncio

from simulators.broker import Mosquitto, find_mosquitto

LEAK_GRACE_S = 5.0


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest_asyncio.fixture(autouse=True)
async def _no_leaks(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fails the test if it leaves an asyncio task, a thread or a child process behind."""
    tasks, threads, children = asyncio.all_tasks(), _threads(), _children()
    yield
    # Threads of the loop's default executor (asyncio.to_thread, getaddrinfo, pyserial's close)
    # live until the loop closes, after this check: shut the executor down first.
    await asyncio.get_running_loop().shutdown_default_executor()
    me = asyncio.current_task()  # teardown may run in another task than setup did
    deadline = time.monotonic() + LEAK_GRACE_S
    while True:
        leaked = {t for t in asyncio.all_tasks() - tasks if t is not me and not t.done()}
        broker = request.session.stash.get(_BROKER_KEY, None)
        allowed = {broker.proc.pid} if broker is not None and broker.proc is not None else set()
        extra_threads = _threads() - threads
        extra_children = _children() - children - allowed
        if not (leaked or extra_threads or extra_children) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)  # waiting for things that are ending to end
    for t in leaked:
        t.cancel()
    if leaked or extra_threads or extra_children:
        pytest.fail(
            f"test leaked tasks {sorted(t.get_name() for t in leaked)}, threads "
            f"{sorted(t.name for t in extra_threads)}, processes {sorted(extra_children)}"
        )


_BROKER_KEY = pytest.StashKey[Mosquitto]()


@pytest.fixture(scope="session")
def _session_broker(request: pytest.FixtureRequest) -> Iterator[Mosquitto]:
    if find_mosquitto() is None:
        pytest.fail(
            "mosquitto is not installed: run `make test`, which installs it "
            "(Debian package `mosquitto`)"
        )
    # Persistence keeps the test subscribers' sessions across a clean broker restart.
    broker = Mosquitto(persistence=True)
    broker.start()
    request.session.stash[_BROKER_KEY] = broker
    yield broker
    broker.close()


@pytest.fixture
def broker(_session_broker: Mosquitto) -> Iterator[Mosquitto]:
    """The session's Mosquitto, running. A test may stop, kill or pause it; it is running
    again for the next test."""
    _session_broker.resume()
    _session_broker.start()
    yield _session_broker
    _session_broker.resume()
    _session_broker.start()
