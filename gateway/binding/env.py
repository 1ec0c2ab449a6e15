"""What every station of the binder consults besides its own state: the trace view (what the
line recorded of units), the active work orders, and the serial pools. One per binder; a
reload hands the same work orders and pools to the new binder (they are durable state, not
configuration)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.binding.commission import Pools
from gateway.binding.context import WorkOrders
from gateway.trace_index import TraceView


@dataclass
class Env:
    view: TraceView
    orders: WorkOrders
    pools: Pools
