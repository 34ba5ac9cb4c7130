"""Decoding and validating lease calls: ack and nack bodies, and the query
of the consumer-groups endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from ..calls import AckCall, NackCall
from ..config import Config
from ..errors import BadRequest
from ..protocol import AckBody, NackBody
from .request_codec import check_stream_id, decode_body

__all__ = ["MAX_RECEIPT_CHARS", "parse_ack", "parse_group_query", "parse_nack"]

MAX_RECEIPT_CHARS = 512

_decode_ack = msgspec.json.Decoder(AckBody).decode
_decode_nack = msgspec.json.Decoder(NackBody).decode


def parse_ack(body: bytes, config: Config) -> AckCall:
    """Decode and validate an ack body.

    Raises:
        BadRequest: not a JSON object, ``streamId`` invalid, or not exactly
            one of ``receipt`` / ``receipts`` (1 to
            ``limits.max_batch_messages`` non-empty strings).
    """
    req = decode_body(body, _decode_ack, config.limits.max_message_bytes)
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
    req = decode_body(body, _decode_nack, config.limits.max_message_bytes)
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
