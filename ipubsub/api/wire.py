"""The public wire format: parsing and validating requests, encoding replies.

Pure functions over bytes and strings, testable without a server.  The
``message`` payload is kept as the exact JSON text the sender wrote
(``msgspec.Raw``), so it round-trips unchanged and is never re-encoded.
"""

from __future__ import annotations

from typing import Annotated, Mapping

import msgspec

from ..commands import Delivery, ReceiveCommand, SendCommand, SendResult
from ..config import Config
from ..engine import format_timestamp
from ..errors import BadRequest, MessageTooLarge

__all__ = [
    "MAX_STREAM_ID_BYTES",
    "MAX_UUID_CHARS",
    "encode_delivery",
    "encode_json",
    "encode_send_result",
    "parse_receive",
    "parse_send",
]

MAX_STREAM_ID_BYTES = 256
MAX_UUID_CHARS = 128


class _SendBody(msgspec.Struct):
    streamId: str
    message: msgspec.Raw
    messageUuid: str | None = None
    inMemoryStreamSize: Annotated[int, msgspec.Meta(ge=0)] = 100
    blockingSendTimeoutSeconds: Annotated[int, msgspec.Meta(ge=0)] = 0
    writeToDB: bool = False
    dbTTLSeconds: Annotated[int, msgspec.Meta(ge=1)] = 86400


class _SendReply(msgspec.Struct, omit_defaults=True):
    messageUuid: str
    dbResumeToken: str | None = None


class _ReceiveReply(msgspec.Struct, omit_defaults=True):
    messageUuid: str
    message: msgspec.Raw
    timestamp: str
    dbResumeToken: str | None = None


_decode_send = msgspec.json.Decoder(_SendBody).decode
_encoder = msgspec.json.Encoder()
encode_json = _encoder.encode


def check_stream_id(value: str | None, field: str = "streamId") -> str:
    """Validate a stream id: 1..256 UTF-8 bytes, no NUL.

    Raises:
        BadRequest: missing, empty, too long or containing NUL.
    """
    if value is None:
        raise BadRequest(f"{field} is required", field=field)
    size = len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= MAX_STREAM_ID_BYTES:
        raise BadRequest(
            f"{field} must be 1 to {MAX_STREAM_ID_BYTES} UTF-8 bytes, got {size}", field=field
        )
    if "\x00" in value:
        raise BadRequest(f"{field} must not contain NUL characters", field=field)
    return value


def parse_send(body: bytes, config: Config) -> SendCommand:
    """Decode and validate a send request body.

    Raises:
        MessageTooLarge: the body exceeds ``limits.max_message_bytes``.
        BadRequest: not a JSON object, a field missing, of the wrong type or
            out of range.
    """
    limits = config.limits
    if len(body) > limits.max_message_bytes:
        raise MessageTooLarge(len(body), limits.max_message_bytes)
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"the request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        req = _decode_send(body)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc) from None
    except msgspec.DecodeError as exc:
        text = "the request body is empty" if not body else f"the request body is not valid JSON: {exc}"
        raise BadRequest(text) from None
    check_stream_id(req.streamId)
    uuid = req.messageUuid
    if uuid is not None:
        if not 1 <= len(uuid) <= MAX_UUID_CHARS:
            raise BadRequest(
                f"messageUuid must be 1 to {MAX_UUID_CHARS} characters, got {len(uuid)}",
                field="messageUuid",
            )
        if "\x00" in uuid:
            raise BadRequest("messageUuid must not contain NUL characters", field="messageUuid")
    size = req.inMemoryStreamSize
    if size > limits.max_stream_size:
        raise BadRequest(
            f"inMemoryStreamSize must be at most {limits.max_stream_size} "
            f"(limits.max_stream_size), got {size}",
            field="inMemoryStreamSize",
        )
    blocking = req.blockingSendTimeoutSeconds
    if blocking > config.match.send_max_timeout_seconds:
        raise BadRequest(
            f"blockingSendTimeoutSeconds must be at most {config.match.send_max_timeout_seconds}, "
            f"got {blocking}",
            field="blockingSendTimeoutSeconds",
        )
    if size == 0 and blocking == 0 and not req.writeToDB:
        raise BadRequest(
            "inMemoryStreamSize 0 (sync match) needs blockingSendTimeoutSeconds > 0",
            field="inMemoryStreamSize",
        )
    if req.dbTTLSeconds > config.storage.max_ttl_seconds:
        raise BadRequest(
            f"dbTTLSeconds must be at most {config.storage.max_ttl_seconds} "
            f"(storage.max_ttl_seconds), got {req.dbTTLSeconds}",
            field="dbTTLSeconds",
        )
    return SendCommand(
        stream_id=req.streamId,
        payload=bytes(req.message),
        uuid=uuid,
        size=size,
        blocking_timeout=blocking,
        persist=req.writeToDB,
        ttl_seconds=req.dbTTLSeconds,
        raw=body,
    )


def parse_receive(query: Mapping[str, str], config: Config) -> ReceiveCommand:
    """Validate the query of a receive request.

    Raises:
        BadRequest: ``streamId`` missing or invalid, ``timeoutSeconds`` not an
            integer in range, ``readFromDB`` not a boolean, or a token without
            ``readFromDB``.
    """
    stream_id = check_stream_id(query.get("streamId"))
    match = config.match
    raw_timeout = query.get("timeoutSeconds")
    if raw_timeout is None or raw_timeout == "":
        timeout = match.receive_default_timeout_seconds
    else:
        if not (raw_timeout.isascii() and raw_timeout.isdigit()) or len(raw_timeout) > 9:
            raise BadRequest(
                f"timeoutSeconds must be an integer >= 0, got {raw_timeout!r}", field="timeoutSeconds"
            )
        timeout = int(raw_timeout)
        if timeout > match.receive_max_timeout_seconds:
            raise BadRequest(
                f"timeoutSeconds must be at most {match.receive_max_timeout_seconds} "
                f"(match.receive_max_timeout_seconds), got {timeout}",
                field="timeoutSeconds",
            )
    from_db = _parse_bool(query.get("readFromDB"), "readFromDB")
    token = query.get("dbResumeToken")
    if token == "":
        token = None
    if token is not None and not from_db:
        raise BadRequest("dbResumeToken needs readFromDB=true", field="dbResumeToken")
    return ReceiveCommand(stream_id=stream_id, timeout=timeout, from_db=from_db, token=token)


def encode_send_result(result: SendResult) -> bytes:
    return _encoder.encode(_SendReply(result.uuid, result.token))


def encode_delivery(delivery: Delivery) -> bytes:
    msg = delivery.message
    return _encoder.encode(
        _ReceiveReply(
            msg.uuid, msgspec.Raw(msg.payload), format_timestamp(msg.timestamp_us), delivery.token
        )
    )


def _parse_bool(value: str | None, field: str) -> bool:
    if value is None or value == "":
        return False
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise BadRequest(f"{field} must be true or false, got {value!r}", field=field)


def _validation_error(exc: msgspec.ValidationError) -> BadRequest:
    text = str(exc)
    field = None
    if " - at `$." in text:
        text, _, path = text.rpartition(" - at `$.")
        field = path.rstrip("`")
        text = f"{field}: {text}"
    elif text.startswith("Object missing required field `"):
        field = text.split("`")[1]
        text = f"{field} is required"
    elif text.startswith("Expected `object`"):
        text = f"the request body must be a JSON object ({text})"
    return BadRequest(text.replace("`", ""), field=field)
