"""What a route requires (:class:`Access`) and what a caller may do
(:class:`Principal`).

Every route declares its :class:`Access` when it is mounted
(``add(method, path, handler, access=...)``): the permission it needs and
where its stream ids come from.  A route that declares nothing is for
operators (``admin``) unless its path is internal (``/internal/``, guarded by
the cluster secret instead): forgetting a declaration closes a route, it
never opens one.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import AdminRequired, StreamForbidden
from ..protocol import OPENAPI_PATH
from .patterns import StreamPatterns
from .rate import TokenBucket

__all__ = ["Access", "Permission", "Principal", "default_access", "route_access"]

# The only route under /api/ that anyone may call: the API's description.
_PUBLIC_API_PATHS = frozenset((OPENAPI_PATH,))


class Permission(enum.Enum):
    PUBLIC = "public"  # no credentials (health, service info, OpenAPI)
    AUTHENTICATED = "authenticated"  # any valid credentials (owner lookup)
    SEND = "send"  # send to the route's streams
    RECEIVE = "receive"  # receive from the route's streams
    ADMIN = "admin"  # operators (cluster view, metrics, dashboard)
    INTERNAL = "internal"  # node to node: the cluster secret, checked by the route itself


@dataclass(frozen=True, slots=True)
class Access:
    """A route's requirements.

    Attributes:
        permission: what the caller must hold.
        query_streams: the query parameter naming the route's stream(s):
            every value is checked before the handler runs.
        body_streams: the stream ids are in the body: the handler must call
            :func:`ipubsub.api.guard.authorize` for each one it decodes
            (every item of a batch) before acting on any.
        query_token: the JWT may come as the ``access_token`` query
            parameter (receive and subscribe only: ``EventSource`` cannot
            set headers).
        multiple_streams: ``query_streams`` may be repeated (every value is
            checked); else only its first value is read, as the route does.
        rate_each: every :func:`~ipubsub.api.guard.authorize` call (each
            message of a long-lived connection that names streams) also
            takes from the caller's request rate, like a request of its own.
    """

    permission: Permission
    query_streams: str | None = None
    body_streams: bool = False
    query_token: bool = False
    multiple_streams: bool = False
    rate_each: bool = False

    @classmethod
    def public(cls) -> Access:
        return cls(Permission.PUBLIC)

    @classmethod
    def authenticated(cls) -> Access:
        return cls(Permission.AUTHENTICATED)

    @classmethod
    def admin(cls) -> Access:
        return cls(Permission.ADMIN)

    @classmethod
    def internal(cls) -> Access:
        return cls(Permission.INTERNAL)

    @classmethod
    def send(cls, *, query: str | None = None) -> Access:
        """Send to streams named in the body (or in query parameter ``query``)."""
        return cls(Permission.SEND, query_streams=query, body_streams=query is None)

    @classmethod
    def connection(cls) -> Access:
        """A long-lived connection (a WebSocket) whose messages name streams:
        any valid credentials open it (a token may be ``access_token``); each
        message's streams are checked by :func:`~ipubsub.api.guard.authorize`,
        which also counts it against the caller's request rate."""
        return cls(Permission.AUTHENTICATED, body_streams=True, query_token=True, rate_each=True)

    @classmethod
    def receive(cls, *, query: str | None = "streamId", query_token: bool = True, multiple: bool = False) -> Access:
        """Receive from streams named in query parameter ``query`` (repeated
        with ``multiple``; ``None``: in the body or in later messages,
        checked by the handler)."""
        return cls(Permission.RECEIVE, query_streams=query, body_streams=query is None, query_token=query_token,
                   multiple_streams=multiple)


def default_access(path: str) -> Access:
    """The access of a route mounted without a declaration."""
    return Access.internal() if path.startswith("/internal/") else Access.admin()


def route_access(path: str, access: Access | None) -> Access:
    """The access a route mounted at ``path`` gets: its declaration, or
    :func:`default_access` without one.

    The route table holds the rules, not the handlers: whatever a route
    group declares, every route under ``/api/`` (streams, batches,
    subscriptions, WebSockets, ...) needs credentials when auth is on, and
    only ``/internal/`` routes skip the guard for the cluster secret.

    Raises:
        ValueError: a declaration that would open an API route to anyone
            (``public`` under ``/api/``) or exempt a non-internal route
            from the guard (``internal`` outside ``/internal/``).
    """
    if access is None:
        return default_access(path)
    if access.permission is Permission.PUBLIC and path.startswith("/api/") and path not in _PUBLIC_API_PATHS:
        raise ValueError(f"route {path} is under /api/: it may not be public (declare send, receive or authenticated)")
    if access.permission is Permission.INTERNAL and not path.startswith("/internal/"):
        raise ValueError(f"route {path} is not under /internal/: it may not skip the guard for the cluster secret")
    if access.permission is not Permission.INTERNAL and path.startswith("/internal/"):
        raise ValueError(f"route {path} is internal: it is guarded by the cluster secret, declare nothing")
    return access


class Principal:
    """An authenticated caller: an API key or a token's subject.

    ``expires`` is when a token's credentials end (Unix time, leeway
    included; infinite for an API key): a connection that outlives its
    token (a WebSocket) is refused further streams after it.
    """

    __slots__ = ("name", "send", "receive", "admin", "bucket", "expires")

    def __init__(
        self,
        name: str,
        send: StreamPatterns,
        receive: StreamPatterns,
        admin: bool,
        bucket: TokenBucket | None = None,
        expires: float = math.inf,
    ) -> None:
        self.name = name
        self.send = send
        self.receive = receive
        self.admin = admin
        self.bucket = bucket
        self.expires = expires

    def require(self, permission: Permission, stream_ids: Iterable[str] = ()) -> None:
        """Check that this caller holds ``permission`` on every stream id.

        Raises:
            AdminRequired: an operators' route and no ``admin``.
            StreamForbidden: a stream the caller may not send to / receive from.
        """
        # identity tests: an Enum's hash is computed in Python
        if permission is Permission.RECEIVE:
            patterns = self.receive
        elif permission is Permission.SEND:
            patterns = self.send
        else:
            if permission is Permission.ADMIN and not self.admin:
                raise AdminRequired(f"{self.name} may not use this endpoint (admin only)")
            return
        if patterns.everything:
            return
        for stream_id in stream_ids:
            if stream_id not in patterns:
                raise StreamForbidden(
                    f"{self.name} may not {permission.value} {'to' if permission is Permission.SEND else 'from'} "
                    f"stream {stream_id[:300]!r}",
                    streamId=stream_id,
                )

    def __repr__(self) -> str:
        return f"Principal({self.name!r})"
