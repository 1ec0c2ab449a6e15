"""Binding: observations in, trace events out. Pure: no I/O, no sleeping, no clock of its own
(every time comes with the observation, or with a Tick), so it can be tested exhaustively and
replayed. What the line has recorded about units comes from a trace view (gateway.trace_index)
it is given."""

from gateway.binding.engine import Binder, plans
from gateway.binding.result import BindResult, WriteRequest

__all__ = ["BindResult", "Binder", "WriteRequest", "plans"]
