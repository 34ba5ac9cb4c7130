"""The stream inspector: what one stream holds, read-only, from any node.

The owner answers for its stream (its memory holds the stream's buffer and
waiters); any other node asks the owner.  A lookup costs O(1) in the engine
plus one indexed read of the durable log: nothing lists streams.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..engine import format_timestamp
from ..errors import BadRequest, OwnerUnavailable, StorageUnavailable
from ..protocol import INTERNAL_DASHBOARD_STREAM_PATH
from ..storage.tokens import encode_token
from .peer import PeerAnswer, PeerUnreachable, ask_peer

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["DEFAULT_MESSAGES", "MAX_MESSAGES", "inspect_here", "inspect_stream", "parse_messages"]
DEFAULT_MESSAGES = 5
MAX_MESSAGES = 20
PREVIEW_CHARS = 200


def parse_messages(value: Any) -> int:
    """How many durable messages to show: 0..MAX_MESSAGES, default 5.

    Raises:
        BadRequest: not an integer in range.
    """
    if value is None:
        return DEFAULT_MESSAGES
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = -1
    if not 0 <= count <= MAX_MESSAGES or isinstance(value, bool):
        raise BadRequest(f"messages must be an integer from 0 to {MAX_MESSAGES}", field="messages")
    return count


async def inspect_stream(node: Node, stream_id: str, messages: int, timeout: float) -> dict[str, Any]:
    """The stream as its owner sees it, asked of the owner when that is
    another node, with the owner's name and address added.

    Raises:
        OwnerUnavailable: the owner did not answer within ``timeout``.
    """
    owner, address = node.owner_of(stream_id)
    if owner == node.name:
        body = await inspect_here(node, stream_id, messages)
    else:
        try:
            body = await ask_peer(node.cluster, address, INTERNAL_DASHBOARD_STREAM_PATH,
                                  {"streamId": stream_id, "messages": messages}, timeout)
        except (PeerUnreachable, PeerAnswer) as exc:
            raise OwnerUnavailable(
                f"the owner of stream {stream_id!r}, node {owner}, did not answer ({exc})", retry_after=1, node=owner
            ) from None
    return {**body, "owner": {"node": owner, "address": address}, "askedNode": node.name}


async def inspect_here(node: Node, stream_id: str, messages: int) -> dict[str, Any]:
    """What this node holds of the stream (whoever owns it)."""
    memory = _memory(node, stream_id)
    durable = await _durable(node, stream_id, messages)
    held = [part for part, there in (("memory", memory["present"]), ("durable", bool(durable.get("messages"))))
            if there]
    return {
        "streamId": stream_id,
        "servedBy": node.name,
        "mode": "+".join(held) or "none",
        "memory": memory,
        "durable": durable,
    }


def _memory(node: Node, stream_id: str) -> dict[str, Any]:
    info = node.engine.stream_info(stream_id)
    if info is None:
        return {"present": False}
    if info.capacity is None:
        mode = "receivers-only"  # no send has fixed its size yet
    elif info.capacity == 0:
        mode = "sync"
    else:
        mode = "queue"  # circular or blocking: chosen by each send
    return {
        "present": True,
        "mode": mode,
        "size": info.capacity,
        "bufferedMessages": info.buffered_messages,
        "bufferedBytes": info.buffered_bytes,
        "waitingReceivers": info.waiting_receivers,
        "blockedSenders": info.blocked_senders,
    }


async def _durable(node: Node, stream_id: str, messages: int) -> dict[str, Any]:
    durable = node.durable
    if durable is None:
        return {"configured": False}
    out: dict[str, Any] = {"configured": True, "backend": durable.store.name, "status": durable.status}
    if messages == 0:
        return out
    try:
        rows = await durable.latest(stream_id, messages)
    except StorageUnavailable as exc:
        return {**out, "status": durable.status, "error": str(exc)}
    out["messages"] = [
        {
            "position": row.position,
            "token": encode_token(stream_id, row.position),
            "messageUuid": row.uuid,
            "timestamp": format_timestamp(row.timestamp_us),
            "expiresAt": format_timestamp(row.expires_at_us),
            "bytes": len(row.payload),
            "preview": row.payload[: PREVIEW_CHARS * 4].decode("utf-8", "replace")[:PREVIEW_CHARS],
        }
        for row in rows
    ]
    return out
