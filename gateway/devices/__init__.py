"""Device adapters, one module per protocol, and the registry that maps a config `kind` to one.

The registry is explicit (one line per kind, no directory scan): adding a protocol means adding
its module and its line here, and `gateway.config.models` its config model. Each factory takes
the validated config model of its kind and returns a `Device` (see `gateway.devices.base`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.devices.base import Device
from gateway.devices.serial_scanner import SerialScanner
from gateway.devices.tcp_scanner import TcpScanner

REGISTRY: dict[str, Callable[[Any], Device]] = {
    "serial_scanner": SerialScanner,
    "tcp_scanner": TcpScanner,
}
