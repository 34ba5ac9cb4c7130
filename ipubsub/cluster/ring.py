"""The consistent-hash ring: which node owns which stream.

A :class:`Ring` is an immutable snapshot built from a member set; a new one
is built on every membership change and swapped in.  Every node (and the
Python client) building a ring from the same member names and
``virtual_nodes`` computes the same owner for every stream.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

from uhashring import HashRing

__all__ = ["Ring"]

# uhashring's default hash is the md5 digest read as one integer.
_HASH_SPACE = 1 << 128


class Ring:
    """Owners of streams for one member set.

    Args:
        members: node name -> advertised ``host:port``.
        virtual_nodes: points per node on the ring.
        version: this node's count of ring changes (for change detection).
    """

    __slots__ = ("_members", "_ring", "_single", "_shares", "version", "fingerprint")

    def __init__(self, members: Mapping[str, str], virtual_nodes: int, version: int = 0) -> None:
        self._members = dict(sorted(members.items()))
        names = list(self._members)
        self._single = names[0] if len(names) == 1 else None
        self._ring = HashRing(nodes=names, vnodes=virtual_nodes) if len(names) > 1 else None
        self.version = version
        # Identical on every node holding the same member set.
        self.fingerprint = zlib.crc32("\n".join(names).encode()) if names else 0
        self._shares: dict[str, float] | None = None

    def owner(self, stream_id: str) -> str | None:
        """Name of the node owning ``stream_id`` (``None`` for an empty ring)."""
        if self._single is not None:
            return self._single
        if self._ring is None:
            return None
        return self._ring.get_node(stream_id)

    def address(self, name: str) -> str:
        """Advertised address of a member.

        Raises:
            KeyError: not a member of this ring.
        """
        return self._members[name]

    def shares(self) -> dict[str, float]:
        """Fraction of the hash space each member owns (so, on average, of
        all stream ids); the fractions add up to 1.  Computed once per ring."""
        if self._shares is None:
            self._shares = self._compute_shares()
        return dict(self._shares)

    def _compute_shares(self) -> dict[str, float]:
        if self._ring is None:
            return {name: 1.0 for name in self._members}
        # A key goes to the first point above its hash (wrapping to the
        # first point), so each point owns the arc from the point before it.
        points = self._ring.get_points()
        arcs = dict.fromkeys(self._members, 0)
        previous = points[-1][0] - _HASH_SPACE
        for point, name in points:
            arcs[name] += point - previous
            previous = point
        return {name: arc / _HASH_SPACE for name, arc in arcs.items()}

    @property
    def members(self) -> dict[str, str]:
        return dict(self._members)

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def __len__(self) -> int:
        return len(self._members)

    def same_members(self, other: Ring) -> bool:
        return self._members == other._members
