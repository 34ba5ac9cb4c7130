"""The client commands of the ``ipubsub`` command line: ``send``,
``send-batch``, ``receive``, ``tail`` and ``cluster`` (and those of :mod:`.lease_commands`), on top of
:class:`ipubsub.client.AsyncClient`.

Exit codes: 0 ok; 2 usage (bad arguments, invalid MESSAGE_JSON); 3 nothing
received in time; 4 the server rejected the call (or still answered 503
after the retries); 5 no node could be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from ..client import AsyncClient, BatchItem, RetryPolicy, SendResult, Unreachable
from ..client.routing import parse_urls
from ..errors import IPubSubError

__all__ = [
    "DEFAULT_URL",
    "EXIT_NOTHING",
    "EXIT_OK",
    "EXIT_REJECTED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "Work",
    "add_client_commands",
    "non_negative",
    "positive_int",
    "print_json",
]

DEFAULT_URL = "http://127.0.0.1:8080"
EXIT_OK, EXIT_USAGE, EXIT_NOTHING, EXIT_REJECTED, EXIT_UNREACHABLE = 0, 2, 3, 4, 5

_EXIT_CODES = """\
exit codes: 0 ok, 2 usage error, 3 nothing received in time, 4 rejected by the
server (or still unavailable after retries), 5 no node reachable."""

Work = Callable[[AsyncClient, argparse.Namespace], Awaitable[int]]


def add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``send``, ``send-batch``, ``receive``, ``tail`` and ``cluster`` to the
    subcommands of the ``ipubsub`` parser (``add_subparsers()``'s result)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        type=_urls,
        default=os.environ.get("IPUBSUB_URL") or DEFAULT_URL,
        metavar="URL[,URL...]",
        help="node URL(s), comma-separated; the client routes each call to the "
        f"stream's owner (default: $IPUBSUB_URL, else {DEFAULT_URL})",
    )
    common.add_argument(
        "--token",
        default=os.environ.get("IPUBSUB_TOKEN") or None,
        metavar="KEY_OR_JWT",
        help="API key or token for nodes with auth (default: $IPUBSUB_TOKEN)",
    )
    common.add_argument(
        "--retry-seconds",
        type=_non_negative,
        default=15.0,
        metavar="N",
        help="how long to keep retrying timeouts and 503 answers; a refused connection "
        "(nothing listening) fails at once (default: 15)",
    )

    def add(name: str, help: str, description: str, examples: str, work: Work) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name,
            parents=[common],
            help=help,
            description=description,
            epilog=f"examples:\n{examples}\n\n{_EXIT_CODES}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(func=lambda args: _run(args, work))
        return parser

    send = add(
        "send",
        "send a message to a stream",
        "Send MESSAGE_JSON (any JSON value) to STREAM and print the server's JSON answer "
        "(messageUuid, and dbResumeToken with --persist).",
        "  ipubsub send orders '{\"id\": 42, \"item\": \"book\"}'\n"
        "  ipubsub send orders '\"plain text\"' --persist --ttl 3600\n"
        "  echo '[1, 2, 3]' | ipubsub send numbers - --url http://10.0.0.1:8080,http://10.0.0.2:8080",
        _send,
    )
    send.add_argument("stream", metavar="STREAM", help="stream id")
    send.add_argument("message", metavar="MESSAGE_JSON", type=_json_value,
                      help="the message as JSON (a string needs its quotes: '\"hi\"'); - reads stdin")
    send.add_argument("--persist", action="store_true", help="also write it to the durable log (writeToDB)")
    send.add_argument("--ttl", type=_positive_int, metavar="N", help="seconds a persisted message is kept")
    send.add_argument("--size", type=_non_negative_int, metavar="N",
                      help="in-memory stream size (server default 100; 0 = sync match)")
    send.add_argument("--blocking-timeout", type=_non_negative_int, metavar="N",
                      help="wait up to N s for room in the stream (or for a receiver with --size 0)")
    send.add_argument("--uuid", metavar="U", help="messageUuid (default: a new uuid4)")

    batch = add(
        "send-batch",
        "send many messages to a stream in few calls",
        "Read JSON values from stdin, one per line (blank lines skipped), and send them to STREAM "
        "in batches of --chunk (sendBatch, one call per chunk, order kept). Prints one JSON line per "
        "message: the server's answer, or the error of that message alone. Exits 4 if any failed.",
        "  seq 1 1000 | ipubsub send-batch numbers\n"
        "  jq -c '.[]' events.json | ipubsub send-batch audit --persist --ttl 86400",
        _send_batch,
    )
    batch.add_argument("stream", metavar="STREAM", help="stream id")
    batch.add_argument("--persist", action="store_true", help="also write them to the durable log (writeToDB)")
    batch.add_argument("--ttl", type=_positive_int, metavar="N", help="seconds a persisted message is kept")
    batch.add_argument("--size", type=_positive_int, metavar="N", help="in-memory stream size (server default 100)")
    batch.add_argument("--chunk", type=_positive_int, default=1000, metavar="N",
                       help="messages per call (default: 1000, the server's limits.max_batch_messages)")

    receive = add(
        "receive",
        "take the next message of a stream",
        "Take the next in-memory message of STREAM, waiting up to --timeout seconds, and "
        "print it as one JSON line (messageUuid, message, timestamp). Exits 3 if none came.",
        "  ipubsub receive orders\n"
        "  ipubsub receive orders --timeout 5 | jq .message",
        _receive,
    )
    receive.add_argument("stream", metavar="STREAM", help="stream id")
    receive.add_argument("--timeout", type=_non_negative_int, default=30, metavar="N",
                         help="seconds to wait for a message (default: 30)")
    receive.add_argument("--max", dest="max_messages", type=_positive_int, metavar="N",
                         help="take up to N messages in one poll (those available with the first), "
                         "one JSON line each")
    receive.add_argument("--lease", type=_non_negative, metavar="SECONDS",
                         help="lease the message instead of taking it: the line carries a receipt for "
                         "`ipubsub ack`/`nack`; unacknowledged, it is delivered again after SECONDS")

    tail = add(
        "tail",
        "follow the durable log of a stream",
        "Print the persisted messages of STREAM, one JSON line each (messageUuid, message, "
        "timestamp, dbResumeToken), then keep following new ones. Reading removes nothing. "
        "Ctrl-C stops (exit 0); pass the last dbResumeToken to --from to resume after it.",
        "  ipubsub tail orders\n"
        "  ipubsub tail orders --from AdWs6-hntH9NAAAAAAAAAAH63WzP",
        _tail,
    )
    tail.add_argument("stream", metavar="STREAM", help="stream id")
    tail.add_argument("--from", dest="token", metavar="TOKEN",
                      help="resume after this dbResumeToken (default: the oldest message kept)")
    tail.add_argument("--poll", action="store_true",
                      help="long-poll the log (readFromDB receives) instead of streaming it over SSE")
    tail.add_argument("--batch", type=_positive_int, default=100, metavar="N",
                      help="with --poll: messages read per call (default: 100)")

    add_lease_commands(add)

    add(
        "cluster",
        "show the cluster's members and ring",
        "Show the members of the cluster, their state and whether they are in the hash "
        "ring, as seen by the first node that answers.",
        "  ipubsub cluster\n"
        "  IPUBSUB_URL=http://10.0.0.1:8080 ipubsub cluster",
        _cluster,
    )


# -- the commands ----------------------------------------------------------------


async def _send(client: AsyncClient, args: argparse.Namespace) -> int:
    result = await client.send(
        args.stream,
        args.message,
        uuid=args.uuid,
        size=args.size,
        blocking_timeout=args.blocking_timeout,
        persist=args.persist,
        ttl=args.ttl,
    )
    _print_json(result.to_dict())
    return EXIT_OK


async def _send_batch(client: AsyncClient, args: argparse.Namespace) -> int:
    items = []
    for number, line in enumerate(sys.stdin, 1):
        if line.strip():
            try:
                message = msgspec.json.decode(line)
            except msgspec.DecodeError as exc:
                print(f"ipubsub: line {number} is not valid JSON ({exc}): {line[:80]!r}", file=sys.stderr)
                return EXIT_USAGE
            items.append(BatchItem(args.stream, message, size=args.size, persist=args.persist, ttl=args.ttl))
    if not items:
        print("ipubsub: nothing to send (stdin held no JSON lines)", file=sys.stderr)
        return EXIT_USAGE
    failed = 0
    for result in await client.send_batch(items, chunk=args.chunk):
        if isinstance(result, SendResult):
            _print_json(result.to_dict())
        else:
            failed += 1
            _print_json({"error": result.message, "code": result.code})
    if failed:
        print(f"ipubsub: {failed} of {len(items)} messages were not accepted", file=sys.stderr)
        return EXIT_REJECTED
    return EXIT_OK


async def _receive(client: AsyncClient, args: argparse.Namespace) -> int:
    if args.max_messages is not None:
        got = await client.receive(args.stream, args.timeout, lease=args.lease or None, max_messages=args.max_messages)
        for each in got:
            _print_json(each.to_dict())
        if not got:
            print(f"ipubsub: nothing arrived on stream {args.stream!r} within {args.timeout} s", file=sys.stderr)
            return EXIT_NOTHING
        return EXIT_OK
    message = await client.receive(args.stream, args.timeout, lease=args.lease or None)
    if message is None:
        print(f"ipubsub: nothing arrived on stream {args.stream!r} within {args.timeout} s", file=sys.stderr)
        return EXIT_NOTHING
    _print_json(message.to_dict())
    return EXIT_OK


async def _tail(client: AsyncClient, args: argparse.Namespace) -> int:
    if args.poll:
        messages: Any = client.replay(args.stream, args.token, batch=args.batch)
    else:  # the node pushes them (SSE); after a disconnect it resumes from the last token
        messages = client.stream(args.stream, durable=True, token=args.token)
    async for message in messages:
        _print_json(message.to_dict())
    return EXIT_OK


async def _cluster(client: AsyncClient, args: argparse.Namespace) -> int:
    view = await client.cluster()
    rows = [("NAME", "ADDRESS", "STATUS", "IN RING")]
    rows += [(m.name, m.address, m.status, "yes" if m.name in view.ring_members else "no") for m in view.members]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(
        f"\nring version {view.ring_version} (hash {view.ring_hash}): {len(view.ring_members)} "
        f"of {len(view.members)} members, {view.virtual_nodes} virtual nodes each; "
        f"cluster {view.cluster!r}, as seen by {view.node}"
    )
    return EXIT_OK


# -- running and reporting -----------------------------------------------------


def _run(args: argparse.Namespace, work: Work) -> int:
    async def main() -> int:
        # A command line fails fast where nothing listens; it still waits out
        # timeouts and 503s (a node restarting, an owner being replaced).
        retry = RetryPolicy(max_total_seconds=args.retry_seconds, retry_refused=False)
        async with AsyncClient(args.url, retry=retry, token=args.token) as client:
            return await work(client, args)

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return EXIT_OK if args.command in ("tail", "consume") else 130
    except BrokenPipeError:  # the reader went away (| head): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return EXIT_OK
    except Unreachable as exc:
        print(f"ipubsub: {exc.message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except IPubSubError as exc:
        print(f"ipubsub: the server rejected the call: {exc.message} [{exc.code}]", file=sys.stderr)
        return EXIT_REJECTED


def _print_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    sys.stdout.flush()


print_json = _print_json


# -- argument types ----------------------------------------------------------------


def _urls(value: str) -> list[str]:
    try:
        return parse_urls(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _json_value(value: str) -> Any:
    text = sys.stdin.read() if value == "-" else value
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text[:80]!r}") from None


def _number(value: str, minimum: float, kind: type[int] | type[float]) -> Any:
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or number < minimum:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"want {what} >= {minimum:g}, got {value!r}")
    return number


def _positive_int(value: str) -> int:
    return int(_number(value, 1, int))


def _non_negative_int(value: str) -> int:
    return int(_number(value, 0, int))


def _non_negative(value: str) -> float:
    return float(_number(value, 0, float))


positive_int = _positive_int
non_negative = _non_negative


from .lease_commands import add_lease_commands  # noqa: E402  (it imports the helpers above)
