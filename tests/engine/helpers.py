"""Helpers shared by the engine's unit tests."""

from __future__ import annotations

import asyncio
from typing import Any

from ipubsub.engine import Message


def msg(n: int | str, payload: bytes | None = None) -> Message:
    """Message ``u<n>`` with a small JSON payload (or ``payload``)."""
    return Message(f"u{n}", payload if payload is not None else f'{{"n":"{n}"}}'.encode(), 1000 + len(str(n)))


def ids(msgs: list[Message]) -> list[str]:
    return [m.uuid for m in msgs]


async def settle() -> None:
    """Let every ready callback and task step run."""
    for _ in range(5):
        await asyncio.sleep(0)


class Outcomes(list):  # type: ignore[type-arg]
    """A ``deliver`` callback for parked receives that keeps what it got."""

    def __call__(self, outcome: Any) -> None:
        self.append(outcome)
