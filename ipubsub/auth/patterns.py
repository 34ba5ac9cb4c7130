"""Stream-id patterns of a key or token, compiled once.

A pattern is an exact stream id (``audit``), a prefix (``user-*``: every id
starting with ``user-``), a glob (``tenant-?-*``, ``[ab]-*``, as
:mod:`fnmatch`, case-sensitive) or ``*`` (every stream).  Checking an id
costs a set lookup, a ``str.startswith`` over a tuple and, only when globs
are configured, one regular-expression match.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

__all__ = ["StreamPatterns"]

_GLOB_CHARS = frozenset("*?[")


def _is_plain(text: str) -> bool:
    return not (_GLOB_CHARS & set(text))


class StreamPatterns:
    """A compiled set of patterns; ``stream_id in patterns`` tells whether
    one of them matches."""

    __slots__ = ("patterns", "everything", "_exact", "_prefixes", "_glob")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self.everything = "*" in self.patterns
        self._exact = frozenset(p for p in self.patterns if _is_plain(p))
        self._prefixes = tuple(p[:-1] for p in self.patterns if p.endswith("*") and _is_plain(p[:-1]) and p != "*")
        globs = [p for p in self.patterns if not _is_plain(p) and not (p.endswith("*") and _is_plain(p[:-1]))]
        self._glob = re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs)) if globs else None

    def __contains__(self, stream_id: str) -> bool:
        if self.everything or stream_id in self._exact:
            return True
        if self._prefixes and stream_id.startswith(self._prefixes):
            return True
        return self._glob is not None and self._glob.match(stream_id) is not None

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"StreamPatterns({list(self.patterns)!r})"
