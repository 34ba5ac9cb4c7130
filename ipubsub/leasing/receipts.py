"""Receipts as clients see them: one string names one leased delivery.

* An in-memory lease's receipt is the engine's (:mod:`ipubsub.engine.leases`):
  base64url characters, never a dot.
* A consumer group's receipt is ``g.<group, base64url>.<storage receipt>``
  (:func:`ipubsub.storage.tokens.encode_receipt`), so an ack needs only the
  stream and the receipt, and the group it names is checked against the
  stream.
"""

from __future__ import annotations

import base64
import binascii

import msgspec

from ..errors import InvalidToken
from ..storage.tokens import decode_receipt, encode_receipt

__all__ = ["GroupReceipt", "group_receipt", "is_group_receipt", "parse_group_receipt"]

_GROUP_PREFIX = "g."


class GroupReceipt(msgspec.Struct, frozen=True):
    """A decoded group receipt: which group, which pending entry, which delivery."""

    group: str
    position: int
    delivery: int


def group_receipt(stream_id: str, group: str, position: int, delivery: int) -> str:
    """The receipt of delivery ``delivery`` of the message at ``position``
    to ``group``."""
    name = base64.urlsafe_b64encode(group.encode("utf-8", "surrogatepass")).rstrip(b"=").decode("ascii")
    return f"{_GROUP_PREFIX}{name}.{encode_receipt(stream_id, group, position, delivery)}"


def is_group_receipt(receipt: str) -> bool:
    """Whether ``receipt`` names a group's delivery (else an in-memory lease)."""
    return receipt.startswith(_GROUP_PREFIX)


def parse_group_receipt(receipt: str, stream_id: str, group: str | None = None) -> GroupReceipt:
    """Decode a group receipt of ``stream_id`` (of ``group`` if given).

    Raises:
        InvalidToken: malformed, corrupted, or issued for another stream or
            group (``field`` is ``receipt``).
    """
    _, _, rest = receipt.partition(_GROUP_PREFIX)
    encoded, dot, inner = rest.partition(".")
    if not dot or not encoded:
        raise InvalidToken("receipt is malformed", field="receipt")
    try:
        named = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8", "surrogatepass")
    except (binascii.Error, ValueError):
        raise InvalidToken("receipt is malformed (not base64url)", field="receipt") from None
    if group is not None and named != group:
        raise InvalidToken(f"receipt was issued for group {named!r}, not {group!r}", field="receipt")
    position, delivery = decode_receipt(inner, stream_id, named)
    return GroupReceipt(named, position, delivery)
