"""Opening a link: both ends prove they know ``cluster.secret``.

1. server → ``Challenge(nonce)`` as soon as the connection is accepted;
2. client → ``Hello(cluster, node, incarnation, nonce, proof)`` where
   ``proof`` is an HMAC-SHA256 under the secret over both nonces and the
   client's identity;
3. server → ``Welcome(node, incarnation, proof)`` (its own HMAC over the
   same facts, so the client knows it reached a real member), or
   ``Reason(text)`` in a REJECT frame, and the connection is closed.

Proofs are compared in constant time.  Nonces are fresh per connection, so
a recorded handshake cannot be replayed.  The secret itself never travels.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections import OrderedDict
from dataclasses import dataclass

import msgspec

__all__ = ["Challenge", "FailedAttempts", "Hello", "Identity", "Reason", "Welcome"]

PROTOCOL_VERSION = 1
NONCE_BYTES = 16


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this end of a link is: its cluster, node name, incarnation
    (start time in µs, larger for each process start) and the shared secret."""

    cluster: str
    node: str
    incarnation: int
    secret: bytes


class Challenge(msgspec.Struct, array_like=True, frozen=True):
    nonce: bytes
    version: int = PROTOCOL_VERSION


class Hello(msgspec.Struct, array_like=True, frozen=True):
    cluster: str
    node: str
    incarnation: int
    nonce: bytes
    proof: bytes
    version: int = PROTOCOL_VERSION


class Welcome(msgspec.Struct, array_like=True, frozen=True):
    node: str
    incarnation: int
    proof: bytes


class Reason(msgspec.Struct, array_like=True, frozen=True):
    """Why a call was refused or aborted, a handshake rejected, or a
    connection is going away."""

    text: str


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def _mac(secret: bytes, role: bytes, *facts: object) -> bytes:
    data = msgspec.msgpack.encode((b"ipubsub-link", PROTOCOL_VERSION, role, *facts))
    return hmac.new(secret, data, hashlib.sha256).digest()


def client_proof(me: Identity, server_nonce: bytes, client_nonce: bytes) -> bytes:
    return _mac(me.secret, b"client", server_nonce, client_nonce, me.cluster, me.node, me.incarnation)


def server_proof(me: Identity, hello: Hello, server_nonce: bytes) -> bytes:
    return _mac(
        me.secret, b"server", server_nonce, hello.nonce, me.cluster, hello.node, hello.incarnation,
        me.node, me.incarnation,
    )  # fmt: skip


def check_hello(me: Identity, hello: Hello, server_nonce: bytes) -> str | None:
    """``None`` if the client proved the secret for our cluster, else the
    reason to give it."""
    if hello.version != PROTOCOL_VERSION:
        return f"link protocol version {hello.version} is not supported (this node speaks {PROTOCOL_VERSION})"
    if hello.cluster != me.cluster:
        return f"this node belongs to cluster {me.cluster!r}, not {hello.cluster!r}"
    expected = _mac(
        me.secret, b"client", server_nonce, hello.nonce, hello.cluster, hello.node, hello.incarnation
    )
    if not hmac.compare_digest(expected, hello.proof):
        return "wrong cluster secret"
    return None


def check_welcome(me: Identity, welcome: Welcome, server_nonce: bytes, client_nonce: bytes) -> bool:
    """Whether the server proved the secret."""
    expected = _mac(
        me.secret, b"server", server_nonce, client_nonce, me.cluster, me.node, me.incarnation,
        welcome.node, welcome.incarnation,
    )  # fmt: skip
    return hmac.compare_digest(expected, welcome.proof)


class FailedAttempts:
    """Failed handshakes per remote host, to slow down guessing.

    A host with ``limit`` failures within ``window`` seconds is *throttled*:
    its next handshakes are judged only after ``penalty`` seconds, and it may
    have at most ``max_pending`` handshakes open at once (more are closed at
    once).  Good members on the same host are slowed, never locked out.
    """

    def __init__(
        self, *, limit: int = 5, window: float = 10.0, penalty: float = 1.0, max_pending: int = 8,
        max_hosts: int = 4096,
    ) -> None:  # fmt: skip
        self.limit = limit
        self.window = window
        self.penalty = penalty
        self.max_pending = max_pending
        self._max_hosts = max_hosts
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._pending: dict[str, int] = {}
        self.failed_total = 0
        self.throttled_total = 0

    def _recent(self, host: str, now: float) -> list[float]:
        times = self._failures.get(host)
        if times is None:
            return []
        times[:] = [t for t in times if now - t < self.window]
        if not times:
            del self._failures[host]
        return times

    def delay(self, host: str) -> float:
        """Seconds to wait before judging a handshake from ``host``."""
        if len(self._recent(host, time.monotonic())) >= self.limit:
            self.throttled_total += 1
            return self.penalty
        return 0.0

    def failed(self, host: str) -> None:
        self.failed_total += 1
        times = self._failures.setdefault(host, [])
        self._failures.move_to_end(host)
        times.append(time.monotonic())
        del times[: -self.limit]
        while len(self._failures) > self._max_hosts:
            self._failures.popitem(last=False)

    def begin(self, host: str) -> bool:
        """Register an open handshake; ``False`` if the host has too many."""
        pending = self._pending.get(host, 0)
        if pending >= self.max_pending:
            self.throttled_total += 1
            return False
        self._pending[host] = pending + 1
        return True

    def end(self, host: str) -> None:
        pending = self._pending.get(host, 0) - 1
        if pending > 0:
            self._pending[host] = pending
        else:
            self._pending.pop(host, None)
