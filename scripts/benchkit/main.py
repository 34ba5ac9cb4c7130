"""Command line of scripts/bench.py: parse, pin, run the mode, print rows."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

from . import __doc__ as GUIDE
from .modes import add_parsers
from .servers import Launcher

__all__ = ["main"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench.py", description=GUIDE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_parsers(p.add_subparsers(dest="mode", required=True, metavar="MODE"))
    return p


async def _run(args: argparse.Namespace) -> None:
    # SIGTERM ends the run like Ctrl-C: the launcher still stops its servers
    # and removes its files.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    async with Launcher(args.server_cpu) as launch:
        async for row in args.run(args, launch):
            print(json.dumps(row), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "spawn", None) and args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})
    loop_factory = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        try:
            runner.run(_run(args))
        except asyncio.CancelledError:
            return 143  # ended by SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main())
