"""``ipubsub serve``: run a node until SIGTERM or SIGINT, then shut it down
in order (see :meth:`ipubsub.node.Node.stop`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from ..config import Config, ConfigError, load_config
from ..storage import check_driver

__all__ = ["add_serve_command"]

log = logging.getLogger("ipubsub.cli")


def add_serve_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run a node",
        description="Run an ipubsub node. Without --config: one node on 127.0.0.1:8080 "
        "with SQLite persistence under ./ipubsub-data.",
    )
    serve.add_argument("--config", metavar="FILE", help="YAML configuration file")
    serve.add_argument(
        "--dry-run",
        action="store_true",
        help="check the configuration and that the storage backend's driver is installed, then exit",
    )
    serve.add_argument(
        "--ready-file",
        metavar="PATH",
        help="once serving, write {\"node\", \"http\", \"pid\"} as JSON to PATH (for scripts and tests "
        "that start a node on port 0 and need the port it got)",
    )
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        check_driver(config.storage.backend)
        check_security(config)
    except ConfigError as exc:
        print(f"ipubsub: config error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"ipubsub: configuration ok (node {config.node.name}, storage {config.storage.backend})")
        return 0
    from ..observability.logs import setup_logging

    setup_logging(config.log, config.node.name)
    runner = _loop_runner(config)
    try:
        with runner:
            return runner.run(_run_node(config, args.ready_file))
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


async def _run_node(config: Config, ready_file: str | None) -> int:
    from ..node import Node

    node = Node(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, node.reload_tls)
    try:
        node.bind()
        await node.start()
        await node.serve()
    except OSError as exc:
        log.error("cannot listen on %s: %s", config.node.listen, exc.strerror or exc)
        await node.stop()
        return 1
    if ready_file:
        _write_ready_file(Path(ready_file), {"node": node.name, "http": node.listen_address, "link": node.cluster.links.address, "pid": os.getpid()})
    await stop.wait()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(sig)
    await node.stop()
    return 0


def check_security(config: Config) -> None:
    """Load what auth and TLS need (key files, certificates) now, so that a
    bad path stops the node (and ``--dry-run``) with one line.

    Raises:
        ConfigError: a key, token-key or certificate file cannot be used.
    """
    from ..auth.authenticator import Authenticator
    from ..tls import TlsContexts

    TlsContexts(config)
    if config.auth.enabled:
        try:
            Authenticator(config.auth)
        except ValueError as exc:
            raise ConfigError(f"auth.jwt: {exc}") from None


def _write_ready_file(path: Path, facts: dict[str, object]) -> None:
    """Write ``facts`` so that a reader never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(facts))
    tmp.replace(path)
