"""``ipubsub check``: run a local cluster under faults and check every
guarantee against the recorded history (see :mod:`ipubsub.checker`)."""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["add_check_command"]

_EPILOG = """\
examples:
  ipubsub check --backend postgres --duration 60 --seed 7      # 3 nodes, every fault kind
  ipubsub check --faults kill,partition --duration 600 --rate 120
  ipubsub check --nodes 1 --faults term,solo --backend sqlite  # a lone node's planned restarts
  ipubsub check --recheck /tmp/ipubsub-check-x/history.jsonl   # judge a recorded history again
  ipubsub check --attach http://10.0.0.1:8080,http://10.0.0.2:8080 --duration 60   # your cluster, no faults

fault kinds:
{kinds}

exit codes: 0 every promise kept · 1 a promise broken · 2 bad options or database
unreachable · 3 the cluster did not start
"""


def add_check_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..checker.backends import BACKENDS
    from ..checker.faults import FAULT_HELP, FAULT_KINDS

    kinds = "\n".join(f"  {k:10} {FAULT_HELP[k]}" for k in FAULT_KINDS)
    check = commands.add_parser(
        "check",
        help="fault-injection check: run a local cluster under faults and verify every guarantee",
        description="Start a local cluster of ipubsub nodes (loopback, port 0, a TCP proxy on every peer "
        "and database path), run writers and readers of every mode under injected faults, record the history "
        "as JSON lines and check it: lost, duplicated, reordered and phantom messages per guarantee.",
        epilog=_EPILOG.format(kinds=kinds),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("--nodes", type=int, default=3, help="nodes at the start (default 3)")
    check.add_argument("--backend", choices=BACKENDS, default="postgres", help="durable backend (default postgres)")
    check.add_argument("--db-url", metavar="URL",
                       help="the database: a DSN/URL, host:port for cassandra (default: the local server)")
    check.add_argument("--duration", type=float, default=60.0, metavar="SECONDS",
                       help="how long faults go on (default 60; every chosen kind runs at least once)")
    check.add_argument("--seed", type=int, help="fault plan and workload choices (default: random, printed)")
    check.add_argument("--faults", default="all", metavar="KINDS",
                       help=f"comma-separated kinds, 'all' or 'none' (default all: {','.join(FAULT_KINDS)})")
    check.add_argument("--rate", type=float, default=100.0, metavar="MSG/S",
                       help="target sends per second, all writers together (default 100)")
    check.add_argument("--fast", action="store_true",
                       help="faster failure detection in the generated configs (heartbeat 0.2s, dead after 2s)")
    check.add_argument("--workdir", type=Path, help="where configs, logs and the history go (kept)")
    check.add_argument("--history", type=Path, metavar="FILE", help="history file (default WORKDIR/history.jsonl)")
    check.add_argument("--keep", action="store_true", help="keep the temporary workdir even when all is well")
    check.add_argument("--recheck", type=Path, metavar="FILE", help="only judge a recorded history file")
    check.add_argument("--without", default="", metavar="PARTS",
                       help="leave parts of the workload out: leases (leased receives and consumer groups), "
                       "histories (fan-out readers), abandoners (polls that walk away)")
    check.add_argument("--attach", metavar="URLS",
                       help="comma-separated URLs of nodes you run: the workload and the verdict only, "
                       "no cluster started, no faults (streams are named after the run; durable ones expire in 1 h)")
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from ..checker.faults import FAULT_KINDS
    from ..checker.run import CheckOptions, check_history, run_check

    def say(text: str) -> None:
        print(text, flush=True)

    if args.recheck is not None:
        try:
            return check_history(args.recheck, say)
        except (OSError, ValueError) as exc:
            print(f"ipubsub check: {exc}", file=sys.stderr)
            return 2
    attach = [u.strip() for u in (args.attach or "").split(",") if u.strip()]
    if attach and args.faults not in ("all", "none"):
        print("ipubsub check: --attach takes no --faults (faults need the processes)", file=sys.stderr)
        return 2
    if attach:
        kinds: list[str] = []
    elif args.faults == "all":
        kinds = list(FAULT_KINDS)
    elif args.faults == "none":
        kinds = []
    else:
        kinds = [k.strip() for k in args.faults.split(",") if k.strip()]
        unknown = [k for k in kinds if k not in FAULT_KINDS]
        if unknown:
            print(f"ipubsub check: unknown fault kind {', '.join(unknown)} (one of {', '.join(FAULT_KINDS)})",
                  file=sys.stderr)
            return 2
    from ..checker.run import WORKLOAD_PARTS

    without = [p.strip() for p in args.without.split(",") if p.strip()]
    if any(p not in WORKLOAD_PARTS for p in without):
        print(f"ipubsub check: --without takes {', '.join(WORKLOAD_PARTS)}", file=sys.stderr)
        return 2
    if args.nodes < 1 or args.duration < 0 or args.rate <= 0:
        print("ipubsub check: --nodes must be >= 1, --duration >= 0, --rate > 0", file=sys.stderr)
        return 2
    command = "ipubsub " + " ".join(shlex.quote(a) for a in sys.argv[1:] if a) if sys.argv else "ipubsub check"
    command = _without_seed(command)
    options = CheckOptions(
        nodes=args.nodes, backend=args.backend, db_url=args.db_url, duration=args.duration, seed=args.seed,
        faults=kinds, rate=args.rate, fast=args.fast, workdir=args.workdir, history=args.history, keep=args.keep,
        attach=attach, without=without, command=command,
    )
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(run_check(options, say))
    except KeyboardInterrupt:
        return 130


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed: the checker's proxies carry every byte between
    nodes, and should cost as little as the nodes' own loops."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _without_seed(command: str) -> str:
    parts = shlex.split(command)
    out = []
    skip = False
    for part in parts:
        if skip:
            skip = False
            continue
        if part == "--seed":
            skip = True
            continue
        if part.startswith("--seed="):
            continue
        out.append(part)
    return " ".join(shlex.quote(p) for p in out)
