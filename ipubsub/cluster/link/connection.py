"""What both ends of a link share: framed reading, one coalescing writer,
transport back-pressure and the silence watchdog."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import msgspec

from .frames import PING, FrameError, FrameReader, FrameWriter
from .handshake import Reason

__all__ = ["Connection", "LinkLimits"]

log = logging.getLogger("ipubsub.cluster.link")

MIB = 1024 * 1024
_decode_reason = msgspec.msgpack.Decoder(Reason).decode


@dataclass(frozen=True, slots=True)
class LinkLimits:
    """Bounds and timings of one link (both ends use the same values).

    ``max_in_flight`` counts calls that were sent and not yet answered,
    waiting long polls included.  ``max_buffered_bytes`` bounds the bytes a
    caller queues for a peer that does not read them fast enough.  Call
    deadlines are checked every ``ping_interval``; a call past its deadline
    is cancelled at the peer and fails if no answer comes within
    ``cancel_grace``.
    """

    max_in_flight: int = 20_000
    max_buffered_bytes: int = 64 * MIB
    max_frame_bytes: int = 80 * MIB
    connect_timeout: float = 1.0
    handshake_timeout: float = 2.0
    ping_interval: float = 1.0
    silence_timeout: float = 10.0
    cancel_grace: float = 5.0
    backoff_initial: float = 0.05
    backoff_max: float = 2.0
    write_high_water: int = 1 * MIB


class Connection(asyncio.BufferedProtocol):
    """One TCP connection of a link.

    Frames queued with :meth:`send` during one event-loop tick leave in one
    ``transport.write`` at the start of the next.  ``item``s given with a
    frame are reported to :meth:`_written` once their frame reached the
    transport, or to :meth:`_unwritten` if the connection closed first.
    """

    def __init__(self, limits: LinkLimits) -> None:
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.writing_paused = False
        self.last_received = self.loop.time()
        self._reader = FrameReader(limits.max_frame_bytes)
        self._writer = FrameWriter(limits.max_frame_bytes)
        self._unflushed: list[Any] = []
        self._flush_handle: asyncio.Handle | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._buffered_at_tick = 0

    # -- asyncio protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        high = self.limits.write_high_water
        self.transport.set_write_buffer_limits(high=high, low=high // 4)  # type: ignore[union-attr]
        self.last_received = self.loop.time()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._reader.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.last_received = self.loop.time()
        try:
            self._reader.parse(nbytes, self._on_frame)
        except (FrameError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.abort(f"protocol error: {exc}")

    def eof_received(self) -> bool:
        return False  # close our side too

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        items, self._unflushed = self._unflushed, []
        self._writer.take()
        if items:
            self._unwritten(items)
        self._lost(exc)

    # -- writing -------------------------------------------------------------------

    def send(self, kind: int, call_id: int, meta: Any = None, payload: bytes = b"", item: Any = None) -> None:
        """Queue one frame for this tick's write.

        Raises:
            FrameError: the frame is over ``max_frame_bytes`` (not queued).
        """
        if self.closed:
            if item is not None:
                self._unwritten([item])
            return
        self._writer.add(kind, call_id, meta, payload)
        if item is not None:
            self._unflushed.append(item)
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        items, self._unflushed = self._unflushed, []
        data = self._writer.take()
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            if items:
                self._unwritten(items)
            return
        transport.write(data)
        if items:
            self._written(items)

    @property
    def buffered_bytes(self) -> int:
        """Bytes queued here or in the transport, not yet taken by the kernel."""
        transport = self.transport
        queued = len(self._writer)
        if transport is not None and not self.closed:
            queued += transport.get_write_buffer_size()
        return queued

    # -- closing ---------------------------------------------------------------------

    def close(self) -> None:
        """Write what is queued, then close."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self, reason: str) -> None:
        """Drop the connection at once (protocol error, silent peer)."""
        if not self.closed and self.transport is not None:
            log.warning("%s: closing the link: %s", self.describe(), reason)
            self.transport.abort()

    def start_watchdog(self, ping: bool) -> None:
        """Check every ``ping_interval`` that the peer was heard from within
        ``silence_timeout``; with ``ping``, keep a quiet link talking."""
        self._watchdog = self.loop.call_later(self.limits.ping_interval, self._watch, ping)

    def _watch(self, ping: bool) -> None:
        now = self.loop.time()
        if self.writing_paused:
            # The peer is slow to read what we write (a callee then stops
            # reading it, so it hears nothing): it is alive while it drains.
            buffered = self.buffered_bytes
            if buffered < self._buffered_at_tick:
                self.last_received = now
            self._buffered_at_tick = buffered
        silent = now - self.last_received
        if silent > self.limits.silence_timeout:
            self.abort(f"peer silent for {silent:.1f}s")
            return
        if ping and silent >= self.limits.ping_interval:
            self.send(PING, 0)
        self._tick(now)
        self._watchdog = self.loop.call_later(self.limits.ping_interval, self._watch, ping)

    @staticmethod
    def reason_of(meta: memoryview) -> str:
        try:
            return _decode_reason(meta).text
        except (msgspec.DecodeError, msgspec.ValidationError):
            return "(no reason given)"

    # -- for subclasses ----------------------------------------------------------------

    def describe(self) -> str:
        return "link"

    def _on_frame(self, kind: int, call_id: int, meta: memoryview, payload: bytes) -> None:
        raise NotImplementedError

    def _tick(self, now: float) -> None:
        """Called by the watchdog every ``ping_interval``."""

    def _written(self, items: list[Any]) -> None:
        pass

    def _unwritten(self, items: list[Any]) -> None:
        pass

    def _lost(self, exc: Exception | None) -> None:
        pass
