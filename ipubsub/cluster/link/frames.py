"""The link's wire format: the one place that knows how a frame looks.

Every frame is a fixed 13-byte prefix, a MessagePack header ("meta") and raw
payload bytes::

    u32  size      bytes that follow this field (9 + meta + payload)
    u8   kind      CALL, REPLY, CANCEL, ... (constants below)
    u32  call id   the call this frame is about (0 for link-level frames)
    u32  meta      length of the header that follows
    meta           msgspec MessagePack of an ``array_like`` tagged struct
    payload        opaque bytes, never decoded by the link

Writers build frames straight into one ``bytearray`` per event-loop tick
(:class:`FrameWriter`); readers parse complete frames out of one receive
buffer with offsets (:class:`FrameReader`): the only copy per frame is the
payload handed to its owner.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = [
    "ABORTED",
    "CALL",
    "CANCEL",
    "CHALLENGE",
    "GOAWAY",
    "HELLO",
    "KIND_NAMES",
    "PING",
    "PONG",
    "PREFIX_SIZE",
    "REFUSED",
    "REJECT",
    "REPLY",
    "WELCOME",
    "FrameError",
    "FrameReader",
    "FrameWriter",
]

# Frames about one call.
CALL = 1  # a request; meta is the caller's request header
REPLY = 2  # the answer; meta is the callee's reply header
CANCEL = 3  # the caller no longer waits for this call
REFUSED = 4  # the call was not dispatched (busy, malformed, closing): it had no effect
ABORTED = 5  # the call ended without an answer (cancelled, handler failed): effect unknown
# Link-level frames.
PING = 6
PONG = 7
CHALLENGE = 16  # server -> client, first frame: a nonce
HELLO = 17  # client -> server: identity and proof of the secret
WELCOME = 18  # server -> client: accepted, with the server's proof
REJECT = 19  # server -> client: handshake refused, with the reason
GOAWAY = 20  # server -> client: no new calls on this connection

KIND_NAMES = {
    CALL: "call", REPLY: "reply", CANCEL: "cancel", REFUSED: "refused", ABORTED: "aborted",
    PING: "ping", PONG: "pong", CHALLENGE: "challenge", HELLO: "hello", WELCOME: "welcome",
    REJECT: "reject", GOAWAY: "goaway",
}  # fmt: skip

_SIZE = struct.Struct(">I")
_HEAD = struct.Struct(">BII")
_PREFIX = struct.Struct(">IBII")
PREFIX_SIZE = _PREFIX.size  # 13
_BLANK = bytes(PREFIX_SIZE)
_MIN_READ = 64 * 1024
_encode_into = msgspec.msgpack.Encoder().encode_into


class FrameError(Exception):
    """The byte stream is not a valid sequence of frames (the peer is broken
    or not an ipubsub node): the connection must be closed."""


class FrameWriter:
    """Frames queued during one event-loop tick, written with one call."""

    __slots__ = ("_buf", "_max_frame")

    def __init__(self, max_frame: int) -> None:
        self._buf = bytearray()
        self._max_frame = max_frame

    def __len__(self) -> int:
        return len(self._buf)

    def add(self, kind: int, call_id: int, meta: Any = None, payload: bytes = b"") -> None:
        """Append one frame; ``meta`` is a msgspec struct (or ``None``).

        Raises:
            FrameError: the frame would exceed the frame size limit (nothing
                was appended).
        """
        buf = self._buf
        start = len(buf)
        buf += _BLANK
        if meta is not None:
            _encode_into(meta, buf, -1)
        meta_len = len(buf) - start - PREFIX_SIZE
        size = meta_len + len(payload) + 9
        if size + 4 > self._max_frame:
            del buf[start:]
            raise FrameError(f"a frame of {size + 4} bytes exceeds the limit of {self._max_frame}")
        if payload:
            buf += payload
        _PREFIX.pack_into(buf, start, size, kind, call_id, meta_len)

    def take(self) -> bytearray:
        """The queued bytes; the writer starts a new buffer (the transport may
        keep a reference to the one returned)."""
        buf, self._buf = self._buf, bytearray()
        return buf


# on_frame(kind, call_id, meta, payload): meta is a memoryview valid only
# during the call (decode it there), payload is bytes the callee may keep.
FrameHandler = Callable[[int, int, memoryview, bytes], None]


class FrameReader:
    """The receive buffer of one connection (for an ``asyncio.BufferedProtocol``).

    The transport reads straight into :meth:`get_buffer`; :meth:`parse`
    hands every complete frame to a callback.  The buffer is never resized
    in place (the transport may still hold a view of it): it is replaced by
    a larger one when a frame does not fit, and by a default-sized one once
    a large frame was consumed.
    """

    __slots__ = ("_buf", "_start", "_end", "_need", "_max_frame")

    def __init__(self, max_frame: int) -> None:
        self._buf = bytearray(_MIN_READ * 2)
        self._start = 0
        self._end = 0
        self._need = 0  # bytes the incomplete frame at _start needs in all
        self._max_frame = max_frame

    @property
    def pending(self) -> int:
        """Bytes received but not yet parsed (an incomplete frame)."""
        return self._end - self._start

    def get_buffer(self) -> memoryview:
        buf, start, end = self._buf, self._start, self._end
        if start == end and start:
            self._start = self._end = start = end = 0
            if len(buf) > _MIN_READ * 2:
                self._buf = buf = bytearray(_MIN_READ * 2)
        want = max(self._need, _MIN_READ)
        if len(buf) - start < want:
            fresh = bytearray(max(want, _MIN_READ * 2))
            fresh[: end - start] = buf[start:end]
            self._buf = buf = fresh
            self._end = end = end - start
            self._start = start = 0
        elif len(buf) - end < _MIN_READ // 4:
            kept = end - start
            buf[:kept] = buf[start:end]
            self._start, self._end = 0, kept
            end = kept
        return memoryview(buf)[end:]

    def parse(self, received: int, on_frame: FrameHandler) -> None:
        """Account ``received`` new bytes and pass on every complete frame.

        Raises:
            FrameError: a frame is malformed or over the size limit.
        """
        self._end += received
        buf, pos, end = self._buf, self._start, self._end
        with memoryview(buf) as view:
            while end - pos >= 4:
                (size,) = _SIZE.unpack_from(buf, pos)
                if size < 9 or size + 4 > self._max_frame:
                    raise FrameError(f"frame size {size + 4} out of bounds (limit {self._max_frame})")
                frame_end = pos + 4 + size
                if frame_end > end:
                    self._need = 4 + size
                    break
                kind, call_id, meta_len = _HEAD.unpack_from(buf, pos + 4)
                meta_start = pos + PREFIX_SIZE
                meta_end = meta_start + meta_len
                if meta_end > frame_end:
                    raise FrameError("frame header longer than its frame")
                payload = bytes(view[meta_end:frame_end]) if meta_end < frame_end else b""
                self._start = pos = frame_end
                with view[meta_start:meta_end] as meta:
                    on_frame(kind, call_id, meta, payload)
                if self._buf is not buf:  # pragma: no cover - callbacks never touch the buffer
                    raise RuntimeError("receive buffer replaced during parsing")
            else:
                self._need = 0
