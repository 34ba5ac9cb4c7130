"""Command line: ``ipubsub serve`` runs a node; the other commands talk to one."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Sequence

from . import __version__
from .cli_client import add_client_commands
from .config import Config, ConfigError, load_config

__all__ = ["main"]

log = logging.getLogger("ipubsub.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipubsub",
        description="ipubsub: a distributed long-poll stream service (iPubSub API).",
    )
    parser.add_argument("--version", action="version", version=f"ipubsub {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run a node",
        description="Run an ipubsub node. Without --config: one node on 127.0.0.1:8080 "
        "with SQLite persistence under ./ipubsub-data.",
    )
    serve.add_argument("--config", metavar="FILE", help="YAML configuration file")
    serve.set_defaults(func=_serve)
    add_client_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ipubsub`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args))


def _serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"ipubsub: config error: {exc}", file=sys.stderr)
        return 2
    from .logs import setup_logging

    setup_logging(config.log, config.node.name)
    runner = _loop_runner(config)
    try:
        with runner:
            return runner.run(_run_node(config))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130


def _loop_runner(config: Config) -> asyncio.Runner:
    choice = config.node.event_loop
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise SystemExit("ipubsub: event_loop uvloop needs: pip install 'ipubsub[speed]'") from None
        else:
            return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    return asyncio.Runner()


async def _run_node(config: Config) -> int:
    from .node import Node

    node = Node(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.start()
        await node.serve()
    except OSError as exc:
        log.error("cannot listen on %s: %s", config.node.listen, exc.strerror or exc)
        await node.stop()
        return 1
    await stop.wait()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    await node.stop()
    return 0
