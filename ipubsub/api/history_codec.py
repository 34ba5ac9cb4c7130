"""Fan-out histories on the wire: the history fields of a send, the
``position`` of a read, and the answer of a read
(``receive?fromHistory=true``).

Fan-out sends the same message to many readers: each history entry is
encoded once, on its first read, and the bytes are kept on the entry
(:attr:`ipubsub.engine.HistoryEntry.encoded`), so an answer is a join of
ready fragments whatever the number of readers.
"""

from __future__ import annotations

import msgspec

from ..config import Config
from ..engine import HistoryEntry, HistoryRead, format_position, format_timestamp, parse_position
from ..errors import BadRequest, InvalidPosition
from ..protocol import POSITION_PARAM, HistoryMessage, HistoryReply, SendBody

__all__ = ["check_position", "encode_history", "entry_json", "history_fields"]

_encode = msgspec.json.Encoder().encode


def history_fields(req: SendBody, config: Config) -> tuple[int, int]:
    """``(historySize, historyTTLSeconds)`` of a send, validated; ``(0, 0)``:
    no history.  ``historyTTLSeconds`` 0 or absent is the default and is
    ignored without ``historySize``.

    Raises:
        BadRequest: out of range, or a history on a durable send.
    """
    limits = config.limits
    size = req.historySize or 0
    if size < 0 or size > limits.max_history_size:
        raise BadRequest(
            f"historySize must be 0 to {limits.max_history_size} (limits.max_history_size), got {size}",
            field="historySize",
        )
    if size == 0:
        return 0, 0
    if req.writeToDB:
        raise BadRequest(
            "historySize is for in-memory streams; a durable send (writeToDB) keeps its own log", field="historySize"
        )
    ttl = req.historyTTLSeconds or limits.default_history_ttl_seconds
    if ttl < 0 or ttl > limits.max_history_ttl_seconds:
        raise BadRequest(
            f"historyTTLSeconds must be 1 to {limits.max_history_ttl_seconds} "
            f"(limits.max_history_ttl_seconds), got {ttl}",
            field="historyTTLSeconds",
        )
    return size, ttl


def check_position(text: str | None) -> str | None:
    """A read's ``position`` (``None``: absent), checked to be one a history wrote.

    Raises:
        InvalidPosition: it is not.
    """
    if text is not None:
        try:
            parse_position(text)
        except ValueError:
            raise InvalidPosition(
                f"position {text[:70]!r} is not a history position (pass back one the server answered)",
                field=POSITION_PARAM,
            ) from None
    return text


def entry_json(entry: HistoryEntry, epoch: str) -> bytes:
    """The JSON object of one history message (made once per entry)."""
    encoded = entry.encoded
    if encoded is None:
        msg = entry.message
        encoded = entry.encoded = _encode(
            HistoryMessage(
                msg.uuid,
                msgspec.Raw(msg.payload),
                format_timestamp(msg.timestamp_us),
                format_position(epoch, entry.offset),
            )
        )
    return encoded


def encode_history(read: HistoryRead) -> bytes:
    """The 200 answer of a history read (:class:`ipubsub.protocol.HistoryReply`),
    made once per answer however many readers share it."""
    body = read.encoded
    if body is None:
        epoch = read.epoch
        messages = [msgspec.Raw(entry_json(e, epoch)) for e in read.entries] if epoch is not None else []
        body = read.encoded = _encode(HistoryReply(messages, read.position, read.recovered, read.gap))
    return body
