"""Decoding and validating sends: one ``send`` body, and ``sendBatch``
bodies item by item (see :mod:`ipubsub.api.codec` for the compatibility
rules the fields follow)."""

from __future__ import annotations

import msgspec

from ..calls import SendCall
from ..config import Config
from ..engine import DEFAULT_STREAM_SIZE
from ..errors import BadRequest, IPubSubError, MessageTooLarge
from ..protocol import SendBatchBody, SendBody
from .history_codec import history_fields
from .request_codec import check_stream_id, decode_body, validation_error

__all__ = ["DEFAULT_TTL_SECONDS", "MAX_UUID_CHARS", "NotInBatch", "parse_send", "parse_send_batch"]

MAX_UUID_CHARS = 128
DEFAULT_TTL_SECONDS = 86400

_decode_send = msgspec.json.Decoder(SendBody).decode
_decode_send_item = msgspec.json.Decoder(SendBody).decode
_decode_batch = msgspec.json.Decoder(SendBatchBody).decode


def parse_send(body: bytes, config: Config) -> SendCall:
    """Decode and validate a send request body.

    Raises:
        MessageTooLarge: the body exceeds ``limits.max_message_bytes``.
        BadRequest: not a JSON object, a field missing, of the wrong type or
            out of range.
    """
    req = decode_body(body, _decode_send, config.limits.max_message_bytes)
    return _send_call(req, config, body)


class NotInBatch(BadRequest):
    """A batch item asks for something a batch does not do (a blocking or
    sync-match send): send it on its own."""

    code = "not_supported_in_batch"


def parse_send_batch(body: bytes, config: Config) -> list[SendCall | IPubSubError]:
    """Decode a batch send: one validated call, or the error of that item
    alone, per item, in request order.

    Raises:
        MessageTooLarge: the body exceeds ``limits.max_batch_bytes``.
        BadRequest: the batch as a whole is malformed: not a JSON object with
            a ``messages`` list, empty, or more than
            ``limits.max_batch_messages`` items.
    """
    limits = config.limits
    items = decode_body(body, _decode_batch, limits.max_batch_bytes).messages
    if not items:
        raise BadRequest("messages must hold at least one item", field="messages")
    if len(items) > limits.max_batch_messages:
        raise BadRequest(
            f"messages holds {len(items)} items, more than limits.max_batch_messages ({limits.max_batch_messages})",
            field="messages",
        )
    out: list[SendCall | IPubSubError] = []
    for raw in items:
        try:
            out.append(_batch_item(bytes(raw), config))
        except IPubSubError as exc:
            out.append(exc)
    return out


def _batch_item(raw: bytes, config: Config) -> SendCall:
    if len(raw) > config.limits.max_message_bytes:
        raise MessageTooLarge(len(raw), config.limits.max_message_bytes)
    try:
        req = _decode_send_item(raw)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, item=True) from None
    except msgspec.DecodeError as exc:  # pragma: no cover - the batch decoded, so each item is JSON
        raise BadRequest(f"not valid JSON: {exc}") from None
    call = _send_call(req, config, raw)
    if call.blocking_timeout and not call.persist:
        raise NotInBatch(
            "blocking and sync-match sends (blockingSendTimeoutSeconds > 0) are not taken in a batch; "
            "send this item on its own",
            field="blockingSendTimeoutSeconds",
        )
    return call


def _send_call(req: SendBody, config: Config, raw: bytes) -> SendCall:
    """Validate the fields of a decoded send against the node's limits."""
    limits = config.limits
    check_stream_id(req.streamId)
    uuid = req.messageUuid or None
    if uuid is not None:
        if len(uuid) > MAX_UUID_CHARS:
            raise BadRequest(
                f"messageUuid must be 1 to {MAX_UUID_CHARS} characters, got {len(uuid)}",
                field="messageUuid",
            )
        if "\x00" in uuid:
            raise BadRequest("messageUuid must not contain NUL characters", field="messageUuid")
    blocking = max(0, req.blockingSendTimeoutSeconds or 0)
    persist = bool(req.writeToDB)
    if blocking > config.match.send_max_timeout_seconds:
        raise BadRequest(
            f"blockingSendTimeoutSeconds must be at most {config.match.send_max_timeout_seconds}, "
            f"got {blocking}",
            field="blockingSendTimeoutSeconds",
        )
    size = req.inMemoryStreamSize
    if size is None or (size == 0 and blocking == 0):
        size = DEFAULT_STREAM_SIZE
    elif size < 0:
        raise BadRequest(f"inMemoryStreamSize must be >= 0, got {size}", field="inMemoryStreamSize")
    elif size > limits.max_stream_size:
        raise BadRequest(
            f"inMemoryStreamSize must be at most {limits.max_stream_size} "
            f"(limits.max_stream_size), got {size}",
            field="inMemoryStreamSize",
        )
    ttl = DEFAULT_TTL_SECONDS
    if persist and req.dbTTLSeconds:
        ttl = req.dbTTLSeconds
        if ttl < 0:
            raise BadRequest(f"dbTTLSeconds must be >= 1, got {ttl}", field="dbTTLSeconds")
        if ttl > config.storage.max_ttl_seconds:
            raise BadRequest(
                f"dbTTLSeconds must be at most {config.storage.max_ttl_seconds} "
                f"(storage.max_ttl_seconds), got {ttl}",
                field="dbTTLSeconds",
            )
    history_size, history_ttl = history_fields(req, config) if req.historySize else (0, 0)  # 0/absent: none
    return SendCall(
        stream_id=req.streamId,
        payload=bytes(req.message),
        uuid=uuid,
        size=size,
        blocking_timeout=blocking,
        persist=persist,
        ttl_seconds=ttl,
        raw=raw,
        history_size=history_size,
        history_ttl=history_ttl,
    )
