"""Parsing and validating the query of a receive: timeouts, durable reads,
batches, leases and consumer groups, history reads."""

from __future__ import annotations

from collections.abc import Mapping

from ..calls import ReceiveCall
from ..config import Config
from ..errors import BadRequest
from ..protocol import FROM_HISTORY_PARAM, POSITION_PARAM, STRICT_RECOVERY_PARAM
from .history_codec import check_position
from .request_codec import MAX_INT_CHARS, MAX_STREAM_ID_BYTES, check_stream_id, parse_bool

__all__ = ["DEFAULT_CONSUMER", "parse_receive"]

#: the consumer a group receive without ``consumer`` claims for
DEFAULT_CONSUMER = "anonymous"


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
        timeout = 0 if negative else int(digits) if len(digits) <= MAX_INT_CHARS else 10**MAX_INT_CHARS
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
    elif not (raw_max.isascii() and raw_max.isdigit() and len(raw_max) <= MAX_INT_CHARS):
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
