"""What the binder hands back for each observation: events to commit, and what rides with them
(handshake marks and trace index changes in the same transaction; writes and command replies
after it; log notes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.binding.commands import Reply
from gateway.events import HandshakeMark, TraceEvent
from gateway.trace_index import Change


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """A write the pipeline performs: after the commit of `after` (an event id) when given;
    with `pulse_s`, the opposite value is written that long after (unless written again); with
    `if_written`, only if the write tagged so for the same event succeeded (a PLC must not get
    an ack for a serial it was not given)."""

    device: str
    signal: str
    value: Any
    after: str | None
    tag: str
    pulse_s: float | None = None
    if_written: str | None = None


@dataclass
class BindResult:
    events: list[TraceEvent] = field(default_factory=list)
    writes: list[WriteRequest] = field(default_factory=list)
    marks: list[HandshakeMark] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    notes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # for the log

    def extend(self, other: BindResult) -> None:
        self.events += other.events
        self.writes += other.writes
        self.marks += other.marks
        self.changes += other.changes
        self.replies += other.replies
        self.notes += other.notes
