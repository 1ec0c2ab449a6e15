"""Device adapters, one module per protocol, and the registry that maps a config `kind` to one.

The registry is explicit (one line per kind, no directory scan): adding a protocol means adding
its module and its line here, and `gateway.config` its config model. Each factory takes the
validated config model of its kind, the `DevicePlan` the stations need of it (what PLC signals
to watch and snapshot; scanners ignore it) and the gateway's state directory (where a device may
keep files, e.g. a generated OPC UA certificate), and returns a `Device`
(see `gateway.devices.base`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.devices.base import Device, DevicePlan
from gateway.devices.modbus import ModbusDevice
from gateway.devices.opcua import OpcuaDevice
from gateway.devices.serial_scanner import SerialScanner
from gateway.devices.tcp_scanner import TcpScanner

Factory = Callable[[Any, DevicePlan, Path], Device]

REGISTRY: dict[str, Factory] = {
    "serial_scanner": lambda config, plan, state_dir: SerialScanner(config),
    "tcp_scanner": lambda config, plan, state_dir: TcpScanner(config),
    "opcua": OpcuaDevice,
    "modbus": ModbusDevice,
}
