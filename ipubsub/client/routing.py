"""Owner-aware routing: which node the client calls for a stream.

The client keeps the last cluster view it fetched and builds the same
:class:`~ipubsub.cluster.ring.Ring` as the servers from it, so it computes
the same owner for every stream and calls that node directly (no forwarding
hop).  The rest of the nodes are fallbacks, in a rotating order; a node that
just failed to connect goes last for :data:`DOWN_SECONDS`.  The router does
no I/O: :class:`~ipubsub.client.aio.AsyncClient` fetches views and feeds
them in.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from urllib.parse import urlsplit

from ..cluster.ring import Ring
from .wire import ClusterView

__all__ = ["DOWN_SECONDS", "Router", "parse_urls"]

# How long a node that refused or dropped a connection is tried last.
DOWN_SECONDS = 3.0


def parse_urls(urls: str | Iterable[str]) -> list[str]:
    """Node URLs from a list or a comma-separated string.

    ``host:port`` gets ``http://``; trailing slashes go; duplicates are
    dropped, order kept.

    Raises:
        ValueError: no URL, or one that is not ``http(s)://host:port``.
    """
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    out: list[str] = []
    for item in items:
        url = item.strip().rstrip("/")
        if not url:
            continue
        if "://" not in url:
            url = "http://" + url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
            raise ValueError(f"not a node URL (want http://host:port): {item.strip()!r}")
        if url not in out:
            out.append(url)
    if not out:
        raise ValueError("no node URL given")
    return out


class Router:
    """The client's view of the cluster and its routing choices.

    Args:
        seeds: URLs the caller gave; used until a cluster view is known, and
            as a last resort afterwards.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, seeds: Sequence[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.seeds = list(seeds)
        self._scheme = urlsplit(self.seeds[0]).scheme
        self._clock = clock
        self._ring: Ring | None = None
        self._urls: dict[str, str] = {}  # ring member name -> URL
        self._member_urls: list[str] = []  # every alive or suspect member
        self._down: dict[str, float] = {}  # URL -> tried last until this time
        self._turn = itertools.count()
        self.view: ClusterView | None = None
        self.refreshed_at: float | None = None  # last refresh attempt

    # -- the view -----------------------------------------------------------

    def apply(self, view: ClusterView) -> bool:
        """Take a fresh cluster view; returns whether the ring changed.

        The ring is rebuilt only when its member names or addresses, or the
        virtual node count, differ from the current ones.
        """
        addresses = {m.name: m.address for m in view.members}
        ring_members = {name: addresses.get(name, "") for name in view.ring_members}
        old = self.view
        changed = (
            old is None
            or self._ring is None
            or self._ring.members != ring_members
            or old.virtual_nodes != view.virtual_nodes
        )
        if changed:
            self._ring = Ring(ring_members, view.virtual_nodes, view.ring_version)
            self._urls = {name: self._url(addr) for name, addr in ring_members.items() if addr}
        self._member_urls = [self._url(m.address) for m in view.members if m.status != "dead"]
        self.view = view
        return changed

    def note_refresh(self) -> None:
        """A refresh was attempted now (whether or not it succeeded)."""
        self.refreshed_at = self._clock()

    def seconds_since_refresh(self) -> float:
        """Seconds since the last refresh attempt (infinite before the first)."""
        if self.refreshed_at is None:
            return float("inf")
        return self._clock() - self.refreshed_at

    @property
    def ring_members(self) -> list[str]:
        """Names of the nodes in the known ring (empty before the first view)."""
        return sorted(self._urls)

    # -- choices ------------------------------------------------------------

    def owner(self, stream: str) -> str | None:
        """Name of the owner of ``stream`` in the known ring, if any."""
        return self._ring.owner(stream) if self._ring is not None else None

    def owner_url(self, stream: str) -> str | None:
        """URL of the owner of ``stream`` in the known ring, if any."""
        owner = self.owner(stream)
        return self._urls.get(owner) if owner is not None else None

    def candidates(self, stream: str | None = None) -> list[str]:
        """Every known node URL in the order to try: the stream's owner,
        then the other members from a rotating start, then seeds; nodes
        that recently failed to connect go last."""
        others = list(dict.fromkeys([*self._urls.values(), *self._member_urls]))
        if others:
            start = next(self._turn) % len(others)
            others = others[start:] + others[:start]
        owner = self.owner_url(stream) if stream is not None else None
        order = list(dict.fromkeys([*([owner] if owner else []), *others, *self.seeds]))
        now = self._clock()
        self._down = {url: until for url, until in self._down.items() if until > now}
        return [u for u in order if u not in self._down] + [u for u in order if u in self._down]

    def pick(self, stream: str | None, exclude: set[str]) -> str | None:
        """The first candidate not in ``exclude``, or ``None``."""
        for url in self.candidates(stream):
            if url not in exclude:
                return url
        return None

    def mark_down(self, url: str) -> None:
        """``url`` failed to connect: try it last for a while."""
        self._down[url] = self._clock() + DOWN_SECONDS

    def mark_up(self, url: str) -> None:
        """``url`` answered."""
        self._down.pop(url, None)

    def _url(self, address: str) -> str:
        return f"{self._scheme}://{address}"
