"""The reader models the LLRP simulator can be: what a model is (`ReaderModel`, with its RF mode
table of `RfMode` entries, its transmit power table, GPIO, antennas and regulatory region, all
that GET_READER_CAPABILITIES reports) and the models on offer, `READER_MODELS` by name.

A model is plain data: the simulator reports it, and checks the requests of a client against
it (an antenna, a power index, a mode the model does not have is refused).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class RfMode:
    """A UHFC1G2RFModeTableEntry."""

    id: int
    m: int  # 0 FM0, 1 Miller-2, 2 Miller-4, 3 Miller-8
    bdr: int  # backscatter data rate, bit/s
    pie: int  # 1000 x PIE ratio
    min_tari: int  # ns
    max_tari: int
    step_tari: int = 0
    dr_64_3: bool = True
    flm: int = 0  # forward link modulation: 0 PR-ASK, 1 SSB-ASK, 2 DSB-ASK
    mask: int = 2  # spectral mask: 1 single, 2 multi, 3 dense interrogator
    conformant: bool = False


@dataclass(frozen=True, slots=True)
class ReaderModel:
    """What GET_READER_CAPABILITIES reports for a reader model."""

    name: str
    manufacturer: int  # IANA private enterprise number
    model_number: int
    firmware: str
    power_table_cdbm: Sequence[int]  # transmit power per index 1..n, in 1/100 dBm
    modes: Sequence[RfMode]
    num_gpi: int = 4
    num_gpo: int = 4
    country: int = 276  # ISO 3166 numeric
    comm_standard: int = 2  # 2: ETSI EN 302 208
    hopping: bool = False
    frequencies_khz: Sequence[int] = (865700, 866300, 866900, 867500)
    max_rospecs: int = 8
    antennas: int = 4

    def power_dbm(self, index: int) -> float:
        return self.power_table_cdbm[index - 1] / 100


def _impinj_modes() -> list[RfMode]:
    # Impinj's ModeIdentifiers (the reader wants these as C1G2RFControl's ModeIndex): the
    # classic modes 0-4 and the AutoSet modes, whose table values are only nominal.
    return [
        RfMode(0, 0, 640_000, 1500, 6250, 6250, mask=2),
        RfMode(1, 1, 640_000, 1500, 6250, 6250, mask=2),
        RfMode(2, 2, 274_000, 2000, 20_000, 20_000, mask=3),
        RfMode(3, 3, 170_600, 2000, 20_000, 20_000, mask=3),
        RfMode(4, 2, 640_000, 1500, 7140, 7140, mask=2),
        RfMode(1000, 2, 274_000, 2000, 6250, 25_000, step_tari=6250, mask=3),
        RfMode(1002, 2, 274_000, 2000, 6250, 25_000, step_tari=6250, mask=3),
        RfMode(1003, 2, 274_000, 2000, 6250, 25_000, step_tari=6250, mask=3),
        RfMode(1004, 2, 274_000, 2000, 6250, 25_000, step_tari=6250, mask=3),
        RfMode(1005, 1, 320_000, 1500, 6250, 25_000, step_tari=6250, mask=3),
    ]


def _zebra_modes() -> list[RfMode]:
    # Zebra numbers its table rows 0..n and takes the row as ModeIndex.
    rows = [
        (0, 640_000, 1500, 6250),
        (1, 320_000, 1500, 6250),
        (2, 256_000, 2000, 12_500),
        (2, 160_000, 2000, 25_000),
        (3, 80_000, 2000, 25_000),
        (2, 320_000, 1500, 6250),
        (1, 250_000, 2000, 12_500),
    ]
    return [
        RfMode(i, m, bdr, pie, tari, tari, mask=3) for i, (m, bdr, pie, tari) in enumerate(rows)
    ]


READER_MODELS: Final[dict[str, ReaderModel]] = {
    "impinj-r700": ReaderModel(
        name="impinj-r700",
        manufacturer=25882,
        model_number=2001052,
        firmware="8.4.1.240",
        power_table_cdbm=tuple(range(1000, 3301, 25)),  # 10.00 .. 33.00 dBm
        modes=tuple(_impinj_modes()),
        antennas=4,
    ),
    "impinj-speedway-r420": ReaderModel(
        name="impinj-speedway-r420",
        manufacturer=25882,
        model_number=2001002,
        firmware="5.14.0.240",
        power_table_cdbm=tuple(range(1000, 3251, 25)),  # 10.00 .. 32.50 dBm
        modes=tuple(_impinj_modes()),
        antennas=4,
    ),
    "zebra-fx9600": ReaderModel(
        name="zebra-fx9600",
        manufacturer=161,
        model_number=9600,
        firmware="3.28.8.0",
        power_table_cdbm=tuple(range(1000, 3151, 10)),  # 10.0 .. 31.5 dBm
        modes=tuple(_zebra_modes()),
        antennas=8,
    ),
}
VENDOR_OUI: Final = {25882: b"\x00\x16\x25", 161: b"\x84\x24\x8d"}  # the vendors' MAC prefixes
