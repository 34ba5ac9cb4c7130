"""Command-line pieces shared by the modes, so every mode spells the same
option the same way."""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator, Callable

from .servers import Launcher
from .window import Row

__all__ = ["RunMode", "add_mode", "add_rounds", "add_window", "pid_list", "url_list"]

#: what a mode runs: parsed options and the run's launcher in, result rows out
RunMode = Callable[[argparse.Namespace, Launcher], AsyncIterator[Row]]

_TWO_CPUS = (os.cpu_count() or 1) >= 2


def pid_list(text: str) -> list[int]:
    """``--pid 12`` or ``--pid 12,13``: several processes whose CPU is summed."""
    return [int(p) for p in text.split(",") if p]


def url_list(text: str) -> list[str]:
    return [u for u in text.split(",") if u]


def add_mode(
    sub: argparse._SubParsersAction, name: str, run: RunMode, help: str, description: str | None = None
) -> argparse.ArgumentParser:
    """A subcommand running ``run``, with the options every mode has."""
    p = sub.add_parser(name, help=help, description=description or help,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=run)
    p.add_argument("--server-cpu", type=int, default=0 if _TWO_CPUS else None,
                   help="CPU that servers the harness starts are pinned to (default 0)")
    p.add_argument("--client-cpu", type=int, default=1 if _TWO_CPUS else None,
                   help="CPU the harness pins itself to when it starts servers (default 1)")
    return p


def add_window(p: argparse.ArgumentParser, duration: float = 8.0, warmup: float = 2.0) -> None:
    p.add_argument("--duration", type=float, default=duration, help="measured seconds")
    p.add_argument("--warmup", type=float, default=warmup, help="seconds of load before measuring")


def add_rounds(p: argparse.ArgumentParser, rounds: int = 1) -> None:
    p.add_argument("--rounds", type=int, default=rounds,
                   help="interleaved rounds; ratios are taken within a round, then the median")
    p.add_argument("--ratio-to", action="append", default=[], metavar="LABEL",
                   help="reference label(s) for the CPU ratios of the summary (default: the first)")
