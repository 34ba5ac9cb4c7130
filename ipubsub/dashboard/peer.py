"""The dashboard's one call to another node.

Everything the dashboard asks a peer (its summary, a stream it owns) goes
through :func:`ask_peer`, so moving node-to-node calls to another transport
(the multiplexed peer link) means changing this function only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from ..cluster.peers import PeerUnreachable

if TYPE_CHECKING:
    from ..cluster.cluster import Cluster

__all__ = ["PeerAnswer", "PeerUnreachable", "ask_peer"]


class PeerAnswer(Exception):
    """The peer answered, but not with 200: ``status`` and its JSON ``body``."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status}: {body.get('error', body)}")
        self.status = status
        self.body = body


async def ask_peer(cluster: Cluster, address: str, path: str, request: dict[str, Any],
                   timeout: float) -> dict[str, Any]:
    """POST ``request`` as JSON to the internal ``path`` of the node at
    ``address`` and return its decoded 200 answer.

    Raises:
        PeerUnreachable: no answer within ``timeout`` (or refused, reset).
        PeerAnswer: the peer answered with another status, or not with a
            JSON object.
    """
    status, body = await cluster.peers.call(address, path, msgspec.json.encode(request), timeout=timeout)
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        decoded = None
    if not isinstance(decoded, dict):
        raise PeerAnswer(status, {"error": f"not a JSON object: {body[:80]!r}", "code": "bad_peer_answer"})
    if status != 200:
        raise PeerAnswer(status, decoded)
    return decoded
