"""At-least-once commands of the ``ipubsub`` command line: ``consume``
(a worker loop), ``ack``/``nack`` of a receipt, and ``groups``.  Leased
single receives are ``ipubsub receive --lease N``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from .client_commands import EXIT_NOTHING, EXIT_OK, EXIT_REJECTED, Work, non_negative, positive_int, print_json

if TYPE_CHECKING:
    from ..client import AsyncClient, LeasedMessage

__all__ = ["add_lease_commands"]

AddCommand = Callable[[str, str, str, str, Work], argparse.ArgumentParser]


def add_lease_commands(add: AddCommand) -> None:
    """Add ``consume``, ``ack``, ``nack`` and ``groups`` with ``add`` (the
    client commands' own helper: common options, help layout, running)."""
    consume = add(
        "consume",
        "process messages at least once (leases, consumer groups)",
        "Take messages of STREAM with a lease and acknowledge each one once it is handled: "
        "printed as one JSON line (with receipt and deliveryCount), or, with --exec, given on "
        "stdin to a command that must exit 0 (else the message is given back and delivered "
        "again). With --group, read the durable stream as --consumer of that consumer group "
        "(each message goes to one consumer of the group); without, lease in-memory messages "
        "(--lease is then required). A message whose handling is cut short (Ctrl-C, a crash) "
        "is delivered again once its lease ends.",
        "  ipubsub consume orders --group billing --consumer worker-1\n"
        "  ipubsub consume orders --group billing --consumer w2 --exec 'python bill.py'\n"
        "  ipubsub consume jobs --lease 60 --count 10",
        _consume,
    )
    consume.add_argument("stream", metavar="STREAM", help="stream id")
    consume.add_argument("--group", metavar="G", help="consumer group of the durable stream (created on first use)")
    consume.add_argument("--consumer", metavar="C", help="this consumer's name in the group (default: the host and pid)")
    consume.add_argument("--lease", type=non_negative, metavar="SECONDS",
                         help="lease of each message (a group's default: the server's, 30)")
    consume.add_argument("--max-deliveries", type=int, metavar="N",
                         help="deliveries before a message goes to STREAM.dead (server default 5; 0: never)")
    consume.add_argument("--exec", dest="exec_command", metavar="CMD",
                         help="shell command run per message with its JSON on stdin; exit 0 acknowledges")
    consume.add_argument("--count", type=positive_int, metavar="N", help="stop after N messages (default: never)")
    consume.add_argument("--timeout", type=positive_int, default=30, metavar="N",
                         help="long-poll seconds per request (default: 30)")

    for name, verb in (("ack", "acknowledge"), ("nack", "give back")):
        settle = add(
            name,
            f"{verb} a leased delivery by its receipt",
            f"{verb.capitalize()} the delivery of STREAM named by RECEIPT (from `receive --lease` or a "
            "group). Exits 4 if no such lease is held any more (it ended: the message is delivered again).",
            f"  ipubsub {name} jobs Q2x1c3Rlci1sZWFzZQ1f",
            _ack if name == "ack" else _nack,
        )
        settle.add_argument("stream", metavar="STREAM", help="stream id")
        settle.add_argument("receipt", metavar="RECEIPT", help="the receipt of the delivery")
        if name == "nack":
            settle.add_argument("--delay", type=non_negative, default=0.0, metavar="SECONDS",
                                help="deliver it again only after this long (default: at once)")

    groups = add(
        "groups",
        "list the consumer groups of a durable stream",
        "One JSON line per consumer group of STREAM: lag (never delivered), pending "
        "(delivered, not acknowledged), oldest pending age in seconds, last activity.",
        "  ipubsub groups orders",
        _groups,
    )
    groups.add_argument("stream", metavar="STREAM", help="stream id")


async def _consume(client: AsyncClient, args: argparse.Namespace) -> int:
    if args.group is None and args.lease is None:
        print("ipubsub: consume without --group needs --lease SECONDS", file=sys.stderr)
        return 2
    consumer = args.consumer or _default_consumer()
    handled = 0
    async with client.consume(
        args.stream, group=args.group, consumer=consumer, lease=args.lease or None, timeout=args.timeout,
        max_deliveries=args.max_deliveries,
    ) as messages:
        async for message in messages:
            if args.exec_command is not None and not await _run_command(args.exec_command, message):
                await message.nack()
                print(f"ipubsub: {args.exec_command!r} failed for message {message.uuid}; given back", file=sys.stderr)
            else:
                print_json(message.to_dict())
            handled += 1
            if args.count is not None and handled >= args.count:
                break  # leaving the block acknowledges this last one
    return EXIT_OK


async def _run_command(command: str, message: LeasedMessage) -> bool:
    import msgspec

    process = await asyncio.create_subprocess_shell(command, stdin=asyncio.subprocess.PIPE)
    await process.communicate(msgspec.json.encode(message.to_dict()) + b"\n")
    return process.returncode == 0


async def _ack(client: AsyncClient, args: argparse.Namespace) -> int:
    return _settled(await client.ack(args.stream, args.receipt), "acked")


async def _nack(client: AsyncClient, args: argparse.Namespace) -> int:
    return _settled(await client.nack(args.stream, args.receipt, args.delay), "nacked")


def _settled(held: bool, what: str) -> int:
    if not held:
        print("ipubsub: no lease with this receipt is held any more (it ended or was settled)", file=sys.stderr)
        return EXIT_REJECTED
    print_json({what: 1})
    return EXIT_OK


async def _groups(client: AsyncClient, args: argparse.Namespace) -> int:
    groups = await client.groups(args.stream)
    for g in groups:
        print_json({
            "group": g.group,
            "lag": g.lag,
            "pending": g.pending,
            "oldestPendingAgeSeconds": g.oldest_pending_age,
            "lastActive": g.last_active.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        })
    return EXIT_OK if groups else EXIT_NOTHING


def _default_consumer() -> str:
    import os
    import socket

    return f"{socket.gethostname()}-{os.getpid()}"
