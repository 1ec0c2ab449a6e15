"""Device adapters, one module per protocol, and the registry that maps a config `kind` to one.

The registry is explicit (one line per kind, no directory scan): adding a protocol means adding
its module and its line here, and `gateway.config` its config model. Each factory takes the
validated config model of its kind, the `DevicePlan` the stations need of it (what PLC signals
to watch and snapshot; scanners ignore it) and the gateway's state directory (where a device may
keep files, e.g. a generated OPC UA certificate), and returns a `Device`
(see `gateway.devices.base`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.devices.base import Device, DevicePlan

Factory = Callable[[Any, DevicePlan, Path], Device]

# kind -> "module:class". Imported on first use: a line without PLCs or readers never loads
# asyncua, pymodbus or sllurp (tens of MiB, and start-up time).
REGISTRY: dict[str, str] = {
    "serial_scanner": "gateway.devices.serial_scanner:SerialScanner",
    "tcp_scanner": "gateway.devices.tcp_scanner:TcpScanner",
    "opcua": "gateway.devices.opcua:OpcuaDevice",
    "modbus": "gateway.devices.modbus:ModbusDevice",
    "llrp": "gateway.devices.llrp:LlrpDevice",
}


def factory(kind: str) -> Factory:
    """The adapter class of `kind`: called as `(config, plan, state_dir)`."""
    module, _, name = REGISTRY[kind].partition(":")
    cls: Factory = getattr(importlib.import_module(module), name)
    return cls
