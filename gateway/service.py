"""`tracegate service`: the gateway as a systemd service on a line PC (being built)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_parser(
    sub: Any, with_config: Callable[[argparse.ArgumentParser], None] | None = None
) -> None:
    sub.add_parser("service", help="install, upgrade or uninstall the gateway as a systemd service")


def main(args: argparse.Namespace) -> int:
    print("tracegate service: not available yet")
    return 64
