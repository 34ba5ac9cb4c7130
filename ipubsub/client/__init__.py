"""Python client of an ipubsub cluster.

:class:`AsyncClient` for asyncio code, :class:`Client` (blocking) for
scripts and notebooks.  Both route each call to the stream's owner, retry
connection errors and 503s within a :class:`RetryPolicy`, and raise the
:mod:`ipubsub.errors` classes with the server's own error text (plus
:class:`Unreachable` when no node answers)::

    async with AsyncClient("http://127.0.0.1:8080") as client:
        await client.send("orders", {"id": 1})
        msg = await client.receive("orders", timeout=5)

With auth on the nodes, pass ``token=`` (an API key or a JWT); a backend
holding ``auth.jwt.secret`` mints browser tokens with :func:`mint_token`.
"""

from typing import Any

from .aio import AsyncClient
from .batches import BatchItem
from .consumer import Consumer
from .history import Follower, HistoryBatch, HistoryMessage
from .iterators import Replay, Subscription
from .retry import ClientStats, RetryPolicy, Unreachable
from .sync import Client, SyncConsumer, SyncFollower, SyncReplay, SyncSubscription
from .wire import ClusterView, GroupInfo, LeasedMessage, Member, ReceivedMessage, SendResult


def mint_token(secret: str, *, receive: list[str], send: list[str] | None = None, ttl_seconds: float = 3600.0,
               **claims: Any) -> str:
    """A JWT signed with ``auth.jwt.secret`` (HS256) letting its bearer
    receive from the ``receive`` stream patterns (and send to ``send``) for
    ``ttl_seconds``; ``subject``, ``audience``, ``issuer`` as keywords.  See
    :func:`ipubsub.auth.jwt_tokens.mint_token`."""
    from ..auth.jwt_tokens import mint_token as mint  # PyJWT only when used

    return mint(secret, receive=receive, send=send, ttl_seconds=ttl_seconds, **claims)


__all__ = [
    "AsyncClient",
    "BatchItem",
    "Client",
    "ClientStats",
    "ClusterView",
    "Consumer",
    "Follower",
    "GroupInfo",
    "HistoryBatch",
    "HistoryMessage",
    "LeasedMessage",
    "Member",
    "ReceivedMessage",
    "Replay",
    "RetryPolicy",
    "SendResult",
    "Subscription",
    "SyncConsumer",
    "SyncFollower",
    "SyncReplay",
    "SyncSubscription",
    "Unreachable",
    "mint_token",
]
