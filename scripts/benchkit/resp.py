"""A minimal Redis client speaking raw RESP2 on an asyncio protocol.

Like ``rawhttp``, it keeps one command in flight per connection and does
nothing else, so that driving Redis costs the load generator about what
driving ipubsub does (no redis-py layers in the way).
"""

from __future__ import annotations

from .conn import OneCallConnection

__all__ = ["RedisError", "RespConnection", "RespPipeline", "bulk", "command", "command_head"]

Reply = bytes | int | list["Reply"] | None


class RedisError(Exception):
    """An error reply (``-ERR ...``)."""


class _Incomplete(Exception):
    pass


def bulk(arg: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


def command(*args: bytes) -> bytes:
    """Encode one command as a RESP array of bulk strings.

    A hot loop encodes the fixed start once with ``command_head`` and
    appends ``bulk(value)`` per call.
    """
    return b"*%d\r\n" % len(args) + b"".join(bulk(arg) for arg in args)


def command_head(count: int, *args: bytes) -> bytes:
    """The start of a command of ``count`` arguments whose first ones are ``args``."""
    return b"*%d\r\n" % count + b"".join(bulk(arg) for arg in args)


def _parse(buf: bytearray, at: int) -> tuple[Reply | RedisError, int]:
    """One reply starting at ``at``: (value, position after it)."""
    eol = buf.find(b"\r\n", at)
    if eol < 0:
        raise _Incomplete
    kind, line = buf[at], bytes(buf[at + 1 : eol])
    at = eol + 2
    if kind == 0x2B:  # +simple
        return line, at
    if kind == 0x2D:  # -error
        return RedisError(line.decode()), at
    if kind == 0x3A:  # :integer
        return int(line), at
    if kind == 0x24:  # $bulk
        n = int(line)
        if n < 0:
            return None, at
        if len(buf) < at + n + 2:
            raise _Incomplete
        return bytes(buf[at : at + n]), at + n + 2
    if kind == 0x2A:  # *array
        n = int(line)
        if n < 0:
            return None, at
        items: list[Reply] = []
        for _ in range(n):
            item, at = _parse(buf, at)
            if isinstance(item, RedisError):
                return item, at
            items.append(item)
        return items, at
    raise ValueError(f"unexpected RESP type byte {kind!r}")


class RespConnection(OneCallConnection[Reply]):
    """RESP2: replies are bytes, int, None or lists of them; an error reply
    raises ``RedisError`` from ``request``."""

    def parse(self, buf: bytearray) -> tuple[Reply | Exception, int] | None:
        try:
            return _parse(buf, 0)
        except _Incomplete:
            return None


class RespPipeline(OneCallConnection[int]):
    """Pipelined commands: :meth:`request_many` writes several at once and
    waits for as many replies (their values are not kept: the fan-out
    sender's RPUSHes)."""

    expected = 0

    def parse(self, buf: bytearray) -> tuple[int | Exception, int] | None:
        at = 0
        for _ in range(self.expected):
            try:
                value, at = _parse(buf, at)
            except _Incomplete:
                return None
            if isinstance(value, RedisError):
                return value, at
        return self.expected, at

    async def request_many(self, data: bytes, count: int) -> int:
        """Write ``count`` commands (``data``) and await all their replies.

        Raises:
            RedisError: one of them failed.  ConnectionError: the connection closed.
        """
        self.expected = count
        return await self.start(data)
