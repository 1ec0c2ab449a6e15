"""Writes the figures of a fuzz run where `python -m bench.fuzz` asks for them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fuzz import harness


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get(harness.STATS_ENV)
    if path:
        harness.write_stats(Path(path))
