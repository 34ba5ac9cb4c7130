"""The modes of scripts/bench.py, one module per family (see benchkit)."""

from __future__ import annotations

import argparse

from . import client, cluster, fanout, group, memory, persist, pipe, replay, streaming

__all__ = ["add_parsers"]

FAMILIES = [pipe, memory, cluster, client, persist, replay, fanout, group, streaming]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add every mode of every family as a subcommand."""
    for family in FAMILIES:
        family.add_parsers(sub)
