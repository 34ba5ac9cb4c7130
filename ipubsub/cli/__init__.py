"""Command line: ``ipubsub serve`` runs a node; the other commands talk to one."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from .check import add_check_command
from .client_commands import add_client_commands
from .serve import add_serve_command
from .token_commands import add_token_commands

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipubsub",
        description="ipubsub: a distributed long-poll stream service (iPubSub API).",
    )
    parser.add_argument("--version", action="version", version=f"ipubsub {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_serve_command(commands)
    add_client_commands(commands)
    add_token_commands(commands)
    add_check_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ipubsub`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args))
