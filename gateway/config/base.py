"""What every configuration model shares: strictness (unknown keys are errors, values frozen),
the id format, and the fields of every device entry."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# Names that end up in MQTT topics, file names and log events: no wildcards, no separators.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

Id = Annotated[str, Field(pattern=ID_PATTERN)]

# Identity schemes (gateway.identifiers.reasons.SCHEMES mirrors them): what a scanned code can
# be, and what an RFID tag can be (the GS1 EPC schemes, and `epc` for any other EPC, kept raw).
CodeScheme = Literal["sgtin", "sscc", "lgtin", "gtin", "plain"]
TagScheme = Literal["sgtin", "sscc", "sgln", "grai", "giai", "epc"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=False)


class DeviceBase(Model):
    id: Id = Field(
        description="Your name for this device; referenced by stations, shown in "
        "events (`source`) and logs."
    )
    profile: str | None = Field(
        None,
        description="Device profile whose settings this entry "
        "extends: a name under device_profiles/ such as "
        "`scanners/cognex-dataman-370`, or a path to a YAML file.",
    )
    enabled: bool = Field(True, description="A disabled device is validated but not started.")
    description: str = Field("", description="Free text for people.")
