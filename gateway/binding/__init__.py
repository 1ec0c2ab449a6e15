"""Binding: observations in, trace events out. Pure: no I/O, no sleeping, no clock of its own
(every time comes with the observation), so it can be tested exhaustively and replayed."""

from gateway.binding.engine import Binder

__all__ = ["Binder"]
