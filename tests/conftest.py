"""Shared fixtures: a real Mosquitto per test session, and the leak check every test passes.

Leaks are bugs: a test that leaves an asyncio task, a thread or a child process behind fails
(the idea comes from pymodbus' test suite).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import psutil
import pytest
import pytest_asyncio

from simulators.broker import Mosquitto, find_mosquitto

LEAK_GRACE_S = 5.0


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


LoopScope = Literal["function", "module", "session"]


def _leak_check(loop_scope: LoopScope) -> Any:
    """The leak check, run in the event loop of the given scope (a test whose loop is shared
    with a module of tests must be checked in that loop, not in a fresh one)."""

    @pytest_asyncio.fixture(loop_scope=loop_scope)
    async def check(request: pytest.FixtureRequest) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        # The test gets a default executor of its own: its threads (asyncio.to_thread,
        # getaddrinfo, pyserial's close) are then the test's to end, and the loop keeps a
        # usable executor for whatever runs after (a shared server's teardown).
        executor = ThreadPoolExecutor(thread_name_prefix="test-default-executor")
        loop.set_default_executor(executor)
        tasks, threads, children = asyncio.all_tasks(), _threads(), _children()
        yield
        executor.shutdown(wait=False)
        loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="default-executor"))
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

    return check


_no_leaks_function = _leak_check("function")
_no_leaks_module = _leak_check("module")
_no_leaks_session = _leak_check("session")


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest) -> None:
    """Fails the test if it leaves an asyncio task, a thread or a child process behind."""
    marker = request.node.get_closest_marker("asyncio")
    scope = marker.kwargs.get("loop_scope", "function") if marker is not None else "function"
    request.getfixturevalue(f"_no_leaks_{scope}")


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
