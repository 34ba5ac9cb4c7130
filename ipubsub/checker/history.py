"""The run's history: one JSON object per line, written as things happen,
read back by the analysis (the same file anyone can re-check later with
``ipubsub check --recheck FILE``).

Times are seconds on the checker's monotonic clock since the run began.
Every line has ``ev``: ``meta`` (the run's parameters), ``send`` (one HTTP
attempt of a send), ``recv`` (one receive or durable read), ``fault``
(``phase`` begin or end) and ``phase`` (the run's own stages).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["History", "read_history"]


class History:
    """Appends events to ``path``; :meth:`close` flushes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "wb", buffering=1 << 16)
        self._encoder = msgspec.json.Encoder()
        self._t0 = time.monotonic()
        self.wall0 = time.time()  # the wall clock at t = 0 (to find a moment in the nodes' logs)
        self.events = 0

    def now(self) -> float:
        """Seconds since the run began (rounded to 0.1 ms)."""
        return round(time.monotonic() - self._t0, 4)

    def write(self, event: dict[str, Any]) -> None:
        self._file.write(self._encoder.encode(event) + b"\n")
        self.events += 1

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def read_history(path: Path) -> Iterator[dict[str, Any]]:
    """The events of a history file, in order.

    Raises:
        ValueError: a line is not a JSON object (the file is not a history).
    """
    decoder = msgspec.json.Decoder(dict[str, Any])
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield decoder.decode(line)
            except msgspec.DecodeError as exc:
                raise ValueError(f"{path}:{number}: not a history line ({exc})") from None
