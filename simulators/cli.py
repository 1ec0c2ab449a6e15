"""What the simulators' command lines share: run the async main until Ctrl-C, with the exit
codes of the project (2: bad arguments or scenario)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any


def run(
    main: Callable[[argparse.Namespace], Coroutine[Any, Any, None]], args: argparse.Namespace
) -> int:
    try:
        asyncio.run(main(args))
    except KeyboardInterrupt:
        print("stopped", flush=True)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
