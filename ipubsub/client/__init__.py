"""Python client of an ipubsub cluster.

:class:`AsyncClient` for asyncio code, :class:`Client` (blocking) for
scripts and notebooks.  Both route each call to the stream's owner, retry
connection errors and 503s within a :class:`RetryPolicy`, and raise the
:mod:`ipubsub.errors` classes with the server's own error text (plus
:class:`Unreachable` when no node answers)::

    async with AsyncClient("http://127.0.0.1:8080") as client:
        await client.send("orders", {"id": 1})
        msg = await client.receive("orders", timeout=5)
"""

from .aio import AsyncClient
from .iterators import Replay, Subscription
from .retry import ClientStats, RetryPolicy, Unreachable
from .sync import Client, SyncReplay, SyncSubscription
from .wire import ClusterView, Member, ReceivedMessage, SendResult

__all__ = [
    "AsyncClient",
    "Client",
    "ClientStats",
    "ClusterView",
    "Member",
    "ReceivedMessage",
    "Replay",
    "RetryPolicy",
    "SendResult",
    "Subscription",
    "SyncReplay",
    "SyncSubscription",
    "Unreachable",
]
