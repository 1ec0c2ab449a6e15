"""`tracegate status`: the line's status as its status page shows it (being built)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_parser(
    sub: Any, with_config: Callable[[argparse.ArgumentParser], None] | None = None
) -> None:
    sub.add_parser("status", help="the line's status as its status page shows it")


def main(args: argparse.Namespace) -> int:
    print("tracegate status: not available yet")
    return 64
