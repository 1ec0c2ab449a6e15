"""Commands from the MES: strict validation of what arrives on `cmd/{name}`, and the replies.

Pure. A payload is checked completely before anything changes: size, JSON, unknown fields,
types, values (pydantic models with `extra="forbid"`). What fails is answered `ok: false` with
every problem, naming the field; nothing changes. What passes is carried out by the binder,
and answered once the event recording it is committed (`Reply.after`).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.binding.commission import GS1_SERIAL
from gateway.events import Command

MAX_CORRELATION = 128


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _gtin14(gtins: list[str]) -> list[str]:
    from gateway.identifiers.gs1 import check_digit

    for g in gtins:
        if not re.fullmatch(r"\d{14}", g):
            raise ValueError(f"{g!r} is not a GTIN-14 (14 digits)")
        if str(check_digit(g[:-1])) != g[-1]:
            raise ValueError(f"{g!r} has a wrong check digit")
    return gtins


class WorkOrderCommand(_Strict):
    correlation_id: str | None = Field(None, max_length=MAX_CORRELATION)
    work_order: str | None = Field(min_length=1, max_length=128)
    station: str | None = Field(None, min_length=1, max_length=64)
    product: str | None = Field(None, max_length=128)
    gtins: list[str] = Field([], max_length=1000)
    lot: str | None = Field(None, min_length=1, max_length=20)
    expiry: str | None = Field(None, description="YYYY-MM-DD")

    _gtins = field_validator("gtins")(_gtin14)

    @field_validator("lot")
    @classmethod
    def _gs1_lot(cls, v: str | None) -> str | None:
        # The lot goes into commissioned identities as AI (10), whose syntax is a GS1 serial's:
        # refused here, it cannot break a commissioning later.
        if v is not None and not GS1_SERIAL.match(v):
            raise ValueError(f"{v!r} is not a GS1 lot (1 to 20 characters of GS1 set 82)")
        return v

    @field_validator("expiry")
    @classmethod
    def _date(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                date.fromisoformat(v)
            except ValueError:
                raise ValueError(f"{v!r} is not a date YYYY-MM-DD") from None
        return v


class SerialPoolCommand(_Strict):
    correlation_id: str | None = Field(None, max_length=MAX_CORRELATION)
    pool: str = Field(min_length=1, max_length=64)
    ranges: list[tuple[int, int]] = Field([], max_length=1000)
    serials: list[str] = Field([], max_length=1_000_000)


COMMANDS: dict[str, type[_Strict]] = {
    "work-order": WorkOrderCommand,
    "serial-pool": SerialPoolCommand,
}


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer to publish on `topic` once the event `after` is committed (None: at once)."""

    topic: str
    payload: bytes
    correlation: bytes | None
    after: str | None


class Invalid(Exception):
    def __init__(self, problems: list[str], correlation_id: str | None) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.correlation_id = correlation_id


def parse(cmd: Command, max_bytes: int) -> _Strict:
    """The validated command, or Invalid with every problem."""
    if len(cmd.payload) > max_bytes:
        raise Invalid([f"payload of {len(cmd.payload)} bytes, more than {max_bytes}"], None)
    model = COMMANDS.get(cmd.name)
    if model is None:
        raise Invalid(
            [f"unknown command {cmd.name!r}; commands: {', '.join(sorted(COMMANDS))}"], None
        )
    try:
        doc = json.loads(cmd.payload)
    except RecursionError:  # json's decoder recurses per nesting level
        raise Invalid(["not JSON: nested too deep"], None) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, Python's int digit limit
        raise Invalid([f"not JSON: {_json_problem(exc)}"], None) from None
    correlation = doc.get("correlation_id") if isinstance(doc, dict) else None
    correlation = correlation if isinstance(correlation, str) else None
    if not isinstance(doc, dict):
        raise Invalid([f"a command is a JSON object, not {type(doc).__name__}"], None)
    try:
        # JSON mode: strict types (no "1" for 1), arrays for tuples.
        return model.model_validate_json(cmd.payload)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(map(str, e['loc'])) or '(payload)'}: {e['msg']}" for e in exc.errors()
        ]
        raise Invalid(problems, correlation) from None


def _json_problem(exc: ValueError) -> str:
    if isinstance(exc, UnicodeDecodeError | json.JSONDecodeError):
        return str(exc)
    # Python refuses to convert an integer of more than sys.get_int_max_str_digits() digits.
    return f"an integer of more than {sys.get_int_max_str_digits()} digits"


def reply(
    cmd: Command,
    correlation_id: str | None,
    *,
    ok: bool,
    after: str | None = None,
    **fields: Any,
) -> Reply:
    doc: dict[str, Any] = {"correlation_id": correlation_id, "ok": ok, "command": cmd.name}
    doc.update(fields)
    try:
        payload = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        # A lone surrogate (a correlation id `"\ud800"`, echoed as it came) has no UTF-8; JSON's
        # own escapes carry it back as the MES sent it.
        payload = json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode()
    return Reply(cmd.reply_to, payload, cmd.correlation, after)
