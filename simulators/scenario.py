"""Scenarios of the scanner simulators: what a simulated scanner does, trigger by trigger, and the
wire-level pieces (terminators, noise) that do not depend on how it is connected.

A scenario YAML file holds the fields of `Scenario` (codes as a list, or a `generator`); see
simulators/scenarios/ for examples.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import yaml

from simulators.codes import KINDS, CodeGenerator, GeneratedCode

Terminator = Literal["cr", "lf", "crlf"]
FrameKind = Literal["code", "noread", "garbage", "too_long"]

TERMINATORS: Final[dict[str, bytes]] = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n"}

# What a code may contain (printable ASCII / Latin-1, GS, RS, EOT). Defined here, not imported
# from the gateway, so the simulator's noise is noise by its own definition.
_CODE_BYTES: Final = frozenset([0x1D, 0x1E, 0x04, *range(0x20, 0x7F), *range(0xA0, 0x100)])
# C0 controls and DEL: no code, in Latin-1 or in UTF-8, holds one of these.
_NOISE_MARKERS: Final = bytes(b for b in (*range(0x20), 0x7F) if b not in _CODE_BYTES | {13, 10})
_NOISE_BYTES: Final = bytes(b for b in range(256) if b not in (0x0D, 0x0A))


@dataclass(frozen=True, slots=True)
class Disconnect:
    """After the `after_codes`-th trigger, go offline for `duration_s` (TCP: connection and
    listening socket closed, as a reboot does; serial: unplugged, by-id link removed)."""

    after_codes: int
    duration_s: float


@dataclass
class Scenario:
    """What a simulated scanner does, trigger by trigger.

    Each trigger reads one unit's code: sent as a code, or (share `noread_share`) as a NOREAD.
    Before it, with shares `garbage_share` and `too_long_share`, come a noise burst (binary bytes
    with no terminator inside, then one) and a frame of `too_long_bytes` printable bytes.
    """

    codes: Iterable[str | GeneratedCode] | None = None
    generator: str = "gs1_datamatrix"
    count: int | None = None
    faulty_share: float = 0.0
    rate_per_s: float | None = 10.0
    noread_share: float = 0.0
    garbage_share: float = 0.0
    too_long_share: float = 0.0
    too_long_bytes: int = 2048
    terminator: Terminator = "cr"
    aim_prefix: bool = True
    noread_text: str = "NOREAD"
    disconnects: list[Disconnect] = field(default_factory=list)
    seed: int = 0

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Scenario:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ValueError(f"unknown scenario fields: {', '.join(unknown)}")
        values = dict(doc)
        values["disconnects"] = [Disconnect(**d) for d in doc.get("disconnects", [])]
        scenario = cls(**values)
        scenario.check()
        return scenario

    @classmethod
    def from_yaml(cls, path: str | Path) -> Scenario:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: a scenario is a mapping of fields")
        return cls.from_dict(doc)

    def check(self) -> None:
        if self.codes is None and self.generator not in (*KINDS, "mixed"):
            raise ValueError(f"unknown generator {self.generator!r}")
        if self.terminator not in TERMINATORS:
            raise ValueError(f"terminator must be one of {', '.join(TERMINATORS)}")
        for name in ("faulty_share", "noread_share", "garbage_share", "too_long_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.rate_per_s is not None and self.rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive (or null: as fast as possible)")

    def triggers(self) -> Iterator[str | GeneratedCode]:
        if self.codes is not None:
            source: Iterator[str | GeneratedCode] = iter(self.codes)
        else:
            source = CodeGenerator(self.seed).stream(self.generator, None, self.faulty_share)
        for n, code in enumerate(source):
            if self.count is not None and n >= self.count:
                return
            yield code


def noise(rng: random.Random, size: int = 24) -> bytes:
    """A burst of binary noise, as a wrong baud rate produces: no CR or LF inside, and at least
    one byte no code contains."""
    body = rng.choices(_NOISE_BYTES, k=max(size, 1) - 1)
    body.insert(rng.randrange(len(body) + 1), rng.choice(_NOISE_MARKERS))
    return bytes(body)
