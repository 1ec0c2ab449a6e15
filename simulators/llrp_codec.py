"""LLRP 1.1 on the wire, for the reader simulator, under one name: `from simulators import
llrp_codec as codec`, then `codec.message`, `codec.parse_add_rospec`, `codec.capabilities`.

Owns nothing itself; it gathers three modules, each one direction of the wire:
`simulators.llrp_wire` (type numbers, status codes and `LlrpError`, the header, TLV and TV
parameters), `simulators.llrp_parse` (what a client sends, parsed into plain data) and
`simulators.llrp_encode` (what a reader sends), and the reader model types the capabilities are
encoded from (`simulators.llrp_models`). Written from the LLRP 1.1 specification, not from a
client library, so that sllurp and Wireshark's dissector judge it independently.
"""

from __future__ import annotations

from simulators import llrp_encode, llrp_parse, llrp_wire
from simulators.llrp_encode import *  # noqa: F403
from simulators.llrp_models import ReaderModel, RfMode
from simulators.llrp_parse import *  # noqa: F403
from simulators.llrp_wire import *  # noqa: F403

__all__ = ["ReaderModel", "RfMode"]
__all__ += llrp_wire.__all__
__all__ += llrp_parse.__all__
__all__ += llrp_encode.__all__
