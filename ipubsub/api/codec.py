"""Decoding and validating public requests, encoding replies.

Pure functions over bytes and strings, testable without a server.  The
``message`` payload is kept as the exact JSON text the sender wrote
(``msgspec.Raw``), so it round-trips unchanged and is never re-encoded.

Compatibility with iPubSub clients (generated clients send zero values for
fields they leave unset; docs/design.md lists every difference):

* ``dbTTLSeconds`` is ignored unless ``writeToDB``; with ``writeToDB``, 0 or
  absent means the default (24 h);
* ``dbResumeToken`` is ignored unless ``readFromDB``;
* a negative ``blockingSendTimeoutSeconds`` means 0 (circular buffer);
* ``inMemoryStreamSize`` 0 (or absent) without a blocking timeout means the
  default size; 0 with a blocking timeout is a sync match;
* an empty ``messageUuid`` is treated as absent (the server makes one up);
* a negative ``timeoutSeconds`` answers at once, like 0.

History (an extension): ``historySize`` 0 or absent keeps none;
``historyTTLSeconds`` 0 or absent means ``limits.default_history_ttl_seconds``
and is ignored without ``historySize``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, TypeVar

import msgspec

from ..calls import AckCall, Delivery, NackCall, ReceiveCall, SendCall, Sent
from ..config import Config
from ..engine import DEFAULT_STREAM_SIZE, format_timestamp
from ..errors import BadRequest, IPubSubError, LeaseNotFound, MessageTooLarge
from ..protocol import (
    FROM_HISTORY_PARAM,
    POSITION_PARAM,
    STRICT_RECOVERY_PARAM,
    AckBody,
    AckReply,
    GroupReply,
    GroupsReply,
    NackBody,
    NackReply,
    BatchItemError,
    ReceiveBatchReply,
    ReceiveReply,
    SendBatchBody,
    SendBatchReply,
    SendBody,
    SendReply,
)
from .history_codec import check_position, history_fields

__all__ = [
    "DEFAULT_CONSUMER",
    "MAX_STREAM_ID_BYTES",
    "MAX_UUID_CHARS",
    "NotInBatch",
    "check_stream_id",
    "encode_ack",
    "encode_batch_results",
    "encode_deliveries",
    "encode_delivery",
    "encode_groups",
    "encode_json",
    "encode_sent",
    "parse_ack",
    "parse_group_query",
    "parse_nack",
    "parse_receive",
    "parse_send",
    "parse_send_batch",
    "too_deep",
]

if TYPE_CHECKING:
    from ..storage.base import GroupInfo

MAX_STREAM_ID_BYTES = 256
MAX_UUID_CHARS = 128
DEFAULT_TTL_SECONDS = 86400
#: the consumer a group receive without ``consumer`` claims for
DEFAULT_CONSUMER = "anonymous"
# Longest integer text accepted in a query (beyond, the value is out of range anyway).
_MAX_INT_CHARS = 9

T = TypeVar("T")

_decode_send = msgspec.json.Decoder(SendBody).decode
_decode_send_item = msgspec.json.Decoder(SendBody).decode
_decode_batch = msgspec.json.Decoder(SendBatchBody).decode
_decode_ack = msgspec.json.Decoder(AckBody).decode
_decode_nack = msgspec.json.Decoder(NackBody).decode
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


def parse_send(body: bytes, config: Config) -> SendCall:
    """Decode and validate a send request body.

    Raises:
        MessageTooLarge: the body exceeds ``limits.max_message_bytes``.
        BadRequest: not a JSON object, a field missing, of the wrong type or
            out of range.
    """
    req = _decode_body(body, _decode_send, config.limits.max_message_bytes)
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
    items = _decode_body(body, _decode_batch, limits.max_batch_bytes).messages
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
        raise _validation_error(exc, item=True) from None
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


def _decode_body(body: bytes, decode: Callable[[bytes], T], limit: int) -> T:
    """A request body decoded into its struct, or the clear 4xx saying why not.

    Raises:
        MessageTooLarge: over ``limit`` bytes.
        BadRequest: not UTF-8, not JSON, nested too deep, or not of the shape.
    """
    if len(body) > limit:
        raise MessageTooLarge(len(body), limit)
    _check_utf8(body)
    try:
        return decode(body)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc) from None
    except msgspec.DecodeError as exc:
        text = "the request body is empty" if not body else f"the request body is not valid JSON: {exc}"
        raise BadRequest(text) from None
    except RecursionError:
        raise too_deep() from None


def _check_utf8(body: bytes) -> None:
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"the request body is not valid UTF-8 (byte {exc.start})") from None


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



def too_deep() -> BadRequest:
    """The answer to JSON nested deeper than the decoder goes (about 900
    levels of arrays or objects)."""
    return BadRequest("the request body nests arrays or objects too deeply (at most about 900 levels)", field="message")


def parse_receive(query: Mapping[str, str], config: Config) -> ReceiveCall:
    """Validate the query of a receive request.

    Raises:
        BadRequest: ``streamId`` missing or invalid, ``timeoutSeconds`` not an
            integer or above the limit, ``readFromDB`` not a boolean.
    """
    stream_id = check_stream_id(query.get("streamId"))
    match = config.match
    raw_timeout = query.get("timeoutSeconds")
    if raw_timeout is None or raw_timeout == "":
        timeout = match.receive_default_timeout_seconds
    else:
        negative = raw_timeout[0] == "-"
        digits = raw_timeout[1:] if raw_timeout[0] in "-+" else raw_timeout
        if not (digits.isascii() and digits.isdigit()):
            raise BadRequest(f"timeoutSeconds must be an integer, got {raw_timeout[:40]!r}", field="timeoutSeconds")
        # any negative value means 0; a positive one too long to be in range is out of range
        timeout = 0 if negative else int(digits) if len(digits) <= _MAX_INT_CHARS else 10**_MAX_INT_CHARS
        if timeout > match.receive_max_timeout_seconds:
            raise BadRequest(
                f"timeoutSeconds must be at most {match.receive_max_timeout_seconds} "
                f"(match.receive_max_timeout_seconds), got {raw_timeout[:40]}",
                field="timeoutSeconds",
            )
    from_db = parse_bool(query.get("readFromDB"), "readFromDB")
    token = query.get("dbResumeToken") or None
    max_messages = None
    raw_max = query.get("maxMessages")
    if raw_max:
        limit = config.limits.max_batch_messages
        if not (raw_max.isascii() and raw_max.isdigit()) or not 1 <= int(raw_max[:9]) <= limit:
            raise BadRequest(
                f"maxMessages must be an integer from 1 to {limit} (limits.max_batch_messages), got {raw_max[:40]!r}",
                field="maxMessages",
            )
        max_messages = int(raw_max)
    lease_seconds, max_deliveries, group, consumer = _at_least_once(query, config, stream_id, from_db, token)
    from_history = parse_bool(query.get(FROM_HISTORY_PARAM), FROM_HISTORY_PARAM)
    strict = parse_bool(query.get(STRICT_RECOVERY_PARAM), STRICT_RECOVERY_PARAM)
    position = check_position(query.get(POSITION_PARAM) or None)
    if from_history and from_db:
        raise BadRequest("fromHistory and readFromDB cannot be combined: choose one", field=FROM_HISTORY_PARAM)
    return ReceiveCall(
        stream_id=stream_id,
        timeout=timeout,
        from_db=from_db,
        token=token if from_db else None,
        max_messages=max_messages,
        lease_seconds=lease_seconds,
        max_deliveries=max_deliveries,
        group=group,
        consumer=consumer,
        from_history=from_history,
        position=position if from_history else None,
        strict=from_history and strict,
    )


def _at_least_once(
    query: Mapping[str, str], config: Config, stream_id: str, from_db: bool, token: str | None
) -> tuple[float | None, int, str | None, str | None]:
    """``leaseSeconds``, ``maxDeliveries``, ``group`` and ``consumer`` of a
    receive, checked together (see :class:`~ipubsub.calls.ReceiveCall`)."""
    leases = config.leases
    lease = _positive_seconds(query.get("leaseSeconds"), "leaseSeconds", leases.max_lease_seconds)
    group = query.get("group") or None
    consumer = query.get("consumer") or None
    if group is not None:
        check_stream_id(group, "group")
        if not from_db:
            raise BadRequest("group needs readFromDB=true: consumer groups read durable streams", field="group")
        if token is not None:
            raise BadRequest(
                "dbResumeToken does not apply to a group receive: the group keeps its own position",
                field="dbResumeToken",
            )
        consumer = check_stream_id(consumer, "consumer") if consumer is not None else DEFAULT_CONSUMER
        if lease is None:
            lease = float(leases.group_lease_seconds)
    elif consumer is not None:
        raise BadRequest("consumer needs group", field="consumer")
    elif lease is not None and from_db:
        raise BadRequest(
            "leaseSeconds on a durable read needs group: a plain durable read takes nothing", field="leaseSeconds"
        )
    raw_max = query.get("maxDeliveries")
    if raw_max is None or raw_max == "":
        max_deliveries = leases.max_deliveries
    elif lease is None:
        raise BadRequest("maxDeliveries applies to leased receives (leaseSeconds or group)", field="maxDeliveries")
    elif not (raw_max.isascii() and raw_max.isdigit() and len(raw_max) <= _MAX_INT_CHARS):
        raise BadRequest(f"maxDeliveries must be an integer >= 0, got {raw_max[:40]!r}", field="maxDeliveries")
    else:
        max_deliveries = int(raw_max)
    if lease is not None and max_deliveries:
        dead = stream_id + leases.dead_letter_suffix
        if len(dead.encode("utf-8", "surrogatepass")) > MAX_STREAM_ID_BYTES:
            raise BadRequest(
                f"streamId is too long for its dead-letter stream ({dead[:40]!r}… over {MAX_STREAM_ID_BYTES} bytes); "
                "use a shorter stream id or maxDeliveries=0",
                field="streamId",
            )
    return lease, (max_deliveries if lease is not None else 0), group, consumer


def _positive_seconds(raw: str | None, field: str, maximum: int) -> float | None:
    """A duration in seconds from a query value: absent is ``None``;
    otherwise a number > 0 and <= ``maximum``.

    Raises:
        BadRequest: not a finite number in that range.
    """
    if raw is None or raw == "":
        return None
    try:
        value = float(raw) if len(raw) <= 32 and raw.isascii() else float("nan")
    except ValueError:
        value = float("nan")
    if not 0 < value <= maximum:  # also false for nan
        raise BadRequest(f"{field} must be a number > 0 and <= {maximum}, got {raw[:40]!r}", field=field)
    return value


def parse_ack(body: bytes, config: Config) -> AckCall:
    """Decode and validate an ack body.

    Raises:
        BadRequest: not a JSON object, ``streamId`` invalid, or not exactly
            one of ``receipt`` / ``receipts`` (1 to
            ``limits.max_batch_messages`` non-empty strings).
    """
    req = _decode_body(body, _decode_ack, config.limits.max_message_bytes)
    stream_id, receipts, group, single = _lease_target(
        req.streamId, _set(req.receipt), _set(req.receipts), _set(req.group), config
    )
    return AckCall(stream_id, receipts, group, single)


def parse_nack(body: bytes, config: Config) -> NackCall:
    """Decode and validate a nack body (as :func:`parse_ack`, plus
    ``delaySeconds``: 0 to ``leases.max_lease_seconds``).

    Raises:
        BadRequest: as :func:`parse_ack`, or ``delaySeconds`` out of range.
    """
    req = _decode_body(body, _decode_nack, config.limits.max_message_bytes)
    stream_id, receipts, group, single = _lease_target(
        req.streamId, _set(req.receipt), _set(req.receipts), _set(req.group), config
    )
    delay = _set(req.delaySeconds) or 0.0
    limit = config.leases.max_lease_seconds
    if not 0 <= delay <= limit:  # also false for nan
        raise BadRequest(f"delaySeconds must be 0 to {limit}, got {req.delaySeconds}", field="delaySeconds")
    return NackCall(stream_id, receipts, group, single, float(delay))


def parse_group_query(query: Mapping[str, str], *, need_group: bool) -> tuple[str, str | None]:
    """``streamId`` and ``group`` of a groups call (``need_group``: DELETE).

    Raises:
        BadRequest: either is missing (when needed) or invalid.
    """
    stream_id = check_stream_id(query.get("streamId"))
    group = query.get("group")
    if group is None and not need_group:
        return stream_id, None
    return stream_id, check_stream_id(group, "group")


MAX_RECEIPT_CHARS = 512


def _set(value: Any) -> Any:
    """``None`` for a field the body did not have (``msgspec.UNSET``)."""
    return None if value is msgspec.UNSET else value


def _lease_target(
    stream_id: str, receipt: str | None, receipts: list[str] | None, group: str | None, config: Config
) -> tuple[str, tuple[str, ...], str | None, bool]:
    check_stream_id(stream_id)
    if group is not None:
        check_stream_id(group, "group")
    if (receipt is None) == (receipts is None):
        raise BadRequest("give exactly one of receipt and receipts", field="receipt")
    single = receipt is not None
    items = [receipt] if receipt is not None else receipts or []
    field = "receipt" if single else "receipts"
    if not single and not 1 <= len(items) <= config.limits.max_batch_messages:
        raise BadRequest(
            f"receipts must hold 1 to {config.limits.max_batch_messages} receipts (limits.max_batch_messages), "
            f"got {len(items)}",
            field=field,
        )
    for item in items:
        if not item or len(item) > MAX_RECEIPT_CHARS or not item.isascii():
            raise BadRequest(
                f"{field} must be receipts as received (1 to {MAX_RECEIPT_CHARS} ASCII characters)", field=field
            )
    return stream_id, tuple(items), group, single


def encode_ack(call: AckCall | NackCall, answers: list[bool]) -> bytes:
    """The answer of an ack or nack whose leases were found as ``answers``
    says (one per receipt).

    Raises:
        LeaseNotFound: a single receipt named no lease held now.
    """
    count = sum(answers)
    if call.single and not count:
        raise LeaseNotFound(
            f"no lease with this receipt is held on stream {call.stream_id!r}: it expired (the message was "
            "delivered again or dead-lettered), was acknowledged or nacked already, or never existed",
            streamId=call.stream_id,
        )
    missing = None if call.single else [r for r, ok in zip(call.receipts, answers) if not ok]
    if isinstance(call, AckCall):
        return _encoder.encode(AckReply(count, missing))
    return _encoder.encode(NackReply(count, missing))


def encode_groups(stream_id: str, groups: list[GroupInfo], now_us: int) -> bytes:
    """The answer of ``GET /api/v1/streams/groups``."""
    return _encoder.encode(GroupsReply(stream_id, [
        GroupReply(
            g.group,
            g.lag,
            g.pending,
            None if g.oldest_pending_us is None else max(0.0, (now_us - g.oldest_pending_us) / 1_000_000),
            format_timestamp(g.active_at_us),
        )
        for g in groups
    ]))


def encode_sent(result: Sent) -> bytes:
    return _encoder.encode(SendReply(result.uuid, result.token))


def encode_delivery(delivery: Delivery) -> bytes:
    return _encoder.encode(_receive_reply(delivery))


def _receive_reply(delivery: Delivery) -> ReceiveReply:
    msg = delivery.message
    if delivery.receipt is None:
        return ReceiveReply(msg.uuid, msgspec.Raw(msg.payload), format_timestamp(msg.timestamp_us), delivery.token)
    return ReceiveReply(
        msg.uuid,
        msgspec.Raw(msg.payload),
        format_timestamp(msg.timestamp_us),
        None,
        delivery.receipt,
        delivery.delivery_count,
    )


def encode_deliveries(deliveries: list[Delivery]) -> bytes:
    """The answer of a batch receive: the messages, oldest first, and for
    durable reads the token after the last one.

    Plain deliveries (no receipt) are written piece by piece, the same bytes
    :class:`ReceiveBatchReply` encodes to, without a struct per message (the
    payload is already JSON; tokens are base64url)."""
    token = deliveries[-1].token if deliveries else None
    if any(d.receipt is not None for d in deliveries):
        return _encoder.encode(ReceiveBatchReply([_receive_reply(d) for d in deliveries], token))
    encode = _encoder.encode
    parts = []
    for d in deliveries:
        msg = d.message
        head = b'{"messageUuid":%b,"message":%b,"timestamp":"%b"' % (
            encode(msg.uuid), msg.payload, format_timestamp(msg.timestamp_us).encode())
        parts.append(head + b"}" if d.token is None else head + b',"dbResumeToken":"%b"}' % d.token.encode())
    tail = b"]}" if token is None else b'],"dbResumeToken":"%b"}' % token.encode()
    return b'{"messages":[' + b",".join(parts) + tail


def encode_batch_results(
    results: Sequence[Sent | IPubSubError | msgspec.Raw], status_of: Callable[[IPubSubError], int]
) -> bytes:
    """The answer of a batch send: per item, its send answer or its error
    (with the HTTP status ``status_of`` gives it); an owner's result of a
    forwarded item (``msgspec.Raw``) passes through unchanged."""
    out: list[Any] = []  # encoded as they are (the reply's type only documents the shape)
    for result in results:
        if type(result) is Sent:
            out.append(SendReply(result.uuid, result.token) if result.token is not None else {"messageUuid": result.uuid})
        elif isinstance(result, msgspec.Raw):
            out.append(result)
        else:
            assert isinstance(result, IPubSubError)
            field = result.fields.get("field")
            out.append(
                BatchItemError(status_of(result), result.code, result.message, field if isinstance(field, str) else None)
            )
    return _encoder.encode(SendBatchReply(out))


_TRUE = frozenset(("true", "1", "t", "yes"))
_FALSE = frozenset(("false", "0", "f", "no"))


def parse_bool(value: str | None, field: str) -> bool:
    """A boolean query parameter: absent or empty is false; ``true``/``1``/``t``
    and ``false``/``0``/``f`` in any case.

    Raises:
        BadRequest: any other value.
    """
    if value is None or value == "":
        return False
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise BadRequest(f"{field} must be true or false, got {value!r}", field=field)


def _validation_error(exc: msgspec.ValidationError, *, item: bool = False) -> BadRequest:
    """A clear 400 from msgspec's message (``item``: the text is about one
    batch item, not the whole request body)."""
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
        text = f"{'each item' if item else 'the request body'} must be a JSON object ({text})"
    return BadRequest(text.replace("`", ""), field=field)
