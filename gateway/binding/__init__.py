"""Binding: observations in, trace events out. Pure: no I/O, no sleeping, no clock of its own
(every time comes with the observation, or with a Tick), so it can be tested exhaustively and
replayed."""

from gateway.binding.cycles import BindResult, WriteRequest
from gateway.binding.engine import Binder, plans

__all__ = ["BindResult", "Binder", "WriteRequest", "plans"]
