"""Streaming over WebSocket: ``GET /api/v1/ws``, JSON text frames.

Client → server (each may carry ``ref``, echoed on its answer):

* ``{"op": "send", <send fields>}`` → ``{"op": "sent", <send answer>}``;
* ``{"op": "subscribe", "sub": id, "streamId": S, "readFromDB"?, "dbResumeToken"?, "credit"?: N}``
  → ``{"op": "subscribed", "sub": id}``, then ``{"op": "message", "sub": id, <receive answer>}``
  while credit lasts (a message is taken only when the subscription has credit);
  With ``"fromHistory": true`` (and ``"position"``?) it reads the stream's fan-out
  history after that position instead (messages carry their ``position``; nothing is
  taken); a position that cannot be continued gives ``{"op": "gap", "sub": id,
  "recovered": false, "gap": ..., "position": P}`` and reading goes on after P;
* ``{"op": "credit", "sub": id, "n": N}`` grants N more;
* ``{"op": "unsubscribe", "sub": id}`` → ``{"op": "unsubscribed", "sub": id}`` (after any
  message taken but not sent went back);
* ``{"op": "ping"}`` → ``{"op": "pong"}``.

Errors answer ``{"op": "error", "ref"?, "sub"?, "error": text, "code": code, ...}`` with the
codes of the HTTP API and never close the socket or other subscriptions.  A subscription
that ends by itself (node stopping, stream handed off, storage error) gets
``{"op": "end", "sub": id, "reason": ..., "code"?: ...}``.  The server pings every
``stream.heartbeat_seconds`` (WebSocket ping/pong).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import WSMsgType, web

from ..auth.access import Permission
from ..calls import Relayed
from ..errors import BadRequest, IPubSubError, ReceiveTimeout, StreamReleased
from ..protocol import FROM_HISTORY_PARAM, POSITION_PARAM
from ..subscriptions import Subscriber
from .codec import check_stream_id, encode_json, encode_sent, parse_send
from .errors import status_of
from .guard import authorize
from .history_codec import check_position
from .history_stream import HistorySubscriber
from .streaming import WRITE_BATCH

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["WebSocketRoute"]

log = logging.getLogger("ipubsub.api")

MAX_SUB_ID_CHARS = 200
MAX_CREDIT = 10**9
_decode_frame = msgspec.json.Decoder(dict[str, Any])


class _Sub:
    __slots__ = ("id", "sub", "credit", "ready", "task", "json_id")

    def __init__(self, sub_id: str, sub: Subscriber, credit: int) -> None:
        self.id = sub_id
        self.json_id = encode_json(sub_id)
        self.sub = sub
        self.credit = credit
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


def _frame(op: str, extra: dict[str, Any] | None = None, **fields: Any) -> str:
    body: dict[str, Any] = {"op": op}
    body.update({k: v for k, v in fields.items() if v is not None})
    if extra:
        body.update(extra)
    return encode_json(body).decode()


def _splice(head: bytes, body: bytes) -> bytes:
    """``head`` (``{"op":...,`` fields) followed by the fields of the JSON object ``body``."""
    return head + body[1:] if body != b"{}" else head[:-1] + b"}"


class WebSocketRoute:
    """The WebSocket endpoint of one node."""

    def __init__(self, node: Node) -> None:
        self._node = node
        config = node.config
        self._heartbeat = float(config.stream.heartbeat_seconds)
        self._max_msg = config.limits.max_message_bytes + 64 * 1024

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=self._heartbeat, compress=False, max_msg_size=self._max_msg)
        if not ws.can_prepare(request).ok:
            raise BadRequest("this endpoint takes a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)")
        await ws.prepare(request)
        session = _Session(self._node, request, ws)
        self._node.subscriptions.add_session(session.shut)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await session.on_text(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    await session.error(BadRequest("binary frames are not accepted: send JSON text frames"))
        finally:
            self._node.subscriptions.remove_session(session.shut)
            await session.close()
        return ws


class _Session:
    """The subscriptions and sends of one socket."""

    def __init__(self, node: Node, request: web.Request, ws: web.WebSocketResponse) -> None:
        self._node = node
        self._request = request
        self._ws = ws
        self._subs: dict[str, _Sub] = {}
        self._max_subs = node.config.stream.max_subscriptions_per_socket
        self._heartbeat = node.config.stream.heartbeat_seconds

    async def _out(self, text: str) -> bool:
        try:
            await self._ws.send_str(text)
            return True
        except (ConnectionError, RuntimeError):
            return False

    async def error(self, exc: IPubSubError, ref: Any = None, sub: str | None = None) -> None:
        await self._out(_frame("error", exc.to_dict(), ref=ref, sub=sub, status=status_of(exc)))

    async def on_text(self, text: str) -> None:
        try:
            frame = _decode_frame.decode(text)
        except msgspec.DecodeError as exc:
            await self.error(BadRequest(f"a frame must be a JSON object: {exc}"[:300]))
            return
        ref = frame.get("ref")
        op = frame.get("op")
        try:
            if op == "send":
                await self._send(text, ref)
            elif op == "subscribe":
                await self._subscribe(frame, ref)
            elif op == "credit":
                self._credit(frame)
            elif op == "unsubscribe":
                await self._unsubscribe(frame, ref)
            elif op == "ping":
                await self._out(_frame("pong", ref=ref))
            else:
                raise BadRequest(
                    f"op must be send, subscribe, credit, unsubscribe or ping, got {str(op)[:40]!r}", field="op"
                )
        except IPubSubError as exc:
            sub = frame.get("sub")
            await self.error(exc, ref, sub if isinstance(sub, str) else None)

    async def _send(self, text: str, ref: Any) -> None:
        cmd = parse_send(text.encode(), self._node.config)
        authorize(self._request, Permission.SEND, (cmd.stream_id,))
        result = await self._node.send(cmd)
        if isinstance(result, Relayed):
            if result.status != 200:
                body = msgspec.json.decode(result.body)
                await self._out(_frame("error", body if isinstance(body, dict) else {}, ref=ref, status=result.status))
                return
            body = result.body
        else:
            body = encode_sent(result)
        await self._out(_splice(_frame("sent", ref=ref)[:-1].encode() + b",", body).decode())

    async def _subscribe(self, frame: dict[str, Any], ref: Any) -> None:
        sub_id = frame.get("sub")
        if not isinstance(sub_id, str) or not 1 <= len(sub_id) <= MAX_SUB_ID_CHARS:
            raise BadRequest(f"sub must be a string of 1 to {MAX_SUB_ID_CHARS} characters", field="sub")
        if sub_id in self._subs:
            raise BadRequest(f"subscription {sub_id[:40]!r} is already open on this socket", field="sub")
        if len(self._subs) >= self._max_subs:
            raise BadRequest(
                f"this socket has {len(self._subs)} subscriptions (stream.max_subscriptions_per_socket)", field="sub"
            )
        stream_id = check_stream_id(frame.get("streamId"))
        from_db = frame.get("readFromDB", False)
        if not isinstance(from_db, bool):
            raise BadRequest("readFromDB must be true or false", field="readFromDB")
        token = frame.get("dbResumeToken")
        if token is not None and not isinstance(token, str):
            raise BadRequest("dbResumeToken must be a string", field="dbResumeToken")
        from_history, position = _history_fields(frame, from_db)
        credit = _credit_value(frame.get("credit", 0), "credit", minimum=0)
        authorize(self._request, Permission.RECEIVE, (stream_id,))
        if from_history:
            subscriber = self._node.subscriptions.open(stream_id, kind=HistorySubscriber)
            assert isinstance(subscriber, HistorySubscriber)
            subscriber.position = position
        else:
            subscriber = self._node.subscriptions.open(stream_id, from_db=from_db, token=token or None)
        s = _Sub(sub_id, subscriber, credit)
        self._subs[sub_id] = s
        subscriber.wake = s.ready.set
        await self._out(_frame("subscribed", ref=ref, sub=sub_id))
        s.task = asyncio.get_running_loop().create_task(self._run(s), name="ipubsub-ws-subscription")
        subscriber.task = s.task

    def _credit(self, frame: dict[str, Any]) -> None:
        s = self._named(frame)
        s.credit = min(MAX_CREDIT, s.credit + _credit_value(frame.get("n"), "n", minimum=1))
        s.ready.set()

    async def _unsubscribe(self, frame: dict[str, Any], ref: Any) -> None:
        s = self._named(frame)
        await self._stop(s)
        await self._out(_frame("unsubscribed", ref=ref, sub=s.id))

    def _named(self, frame: dict[str, Any]) -> _Sub:
        sub_id = frame.get("sub")
        s = self._subs.get(sub_id) if isinstance(sub_id, str) else None
        if s is None:
            raise BadRequest(f"no subscription {str(sub_id)[:40]!r} on this socket", field="sub")
        return s

    async def _stop(self, s: _Sub) -> None:
        self._subs.pop(s.id, None)
        if s.task is not None and not s.task.done():
            s.task.cancel()
            await asyncio.gather(s.task, return_exceptions=True)

    async def _run(self, s: _Sub) -> None:
        """Push messages while credit lasts; end the subscription on a
        forced end (with an ``end`` frame)."""
        sub = s.sub
        head = b'{"op":"message","sub":' + s.json_id + b","
        gap_head = b'{"op":"gap","sub":' + s.json_id + b","
        reason: str = "closed"
        error: IPubSubError | None = None
        try:
            while True:
                while s.credit <= 0 and not sub.closing:
                    s.ready.clear()
                    await s.ready.wait()
                if sub.closing:
                    reason = "shutdown"
                    break
                try:
                    items = await sub.next_batch(self._heartbeat, min(s.credit, WRITE_BATCH))
                except ReceiveTimeout:
                    continue
                except StreamReleased as exc:
                    reason, error = ("shutdown" if sub.closing else "released"), exc
                    break
                except IPubSubError as exc:
                    reason, error = "error", exc
                    break
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if sub.closing and task is not None and task.uncancel() == 0:
                        reason = "shutdown"
                        break
                    raise
                k = 0  # items sent
                try:
                    while k < len(items):
                        # the body is UTF-8 JSON already: a text frame without decoding it
                        item = items[k]
                        await self._ws.send_frame(
                            _splice(head if item.event is None else gap_head, item.body), WSMsgType.TEXT
                        )
                        k += 1
                except (ConnectionError, RuntimeError):
                    sub.give_back_all(items[k:])
                    return
                except BaseException:
                    sub.give_back_all(items[k:])
                    raise
                transport = self._request.transport
                if transport is None or transport.is_closing():
                    sub.give_back_all(items)  # the loop dropped the bytes without raising
                    return
                s.credit -= len(items)
            self._subs.pop(s.id, None)
            extra = error.to_dict() if error is not None else None
            await self._out(_frame("end", extra, sub=s.id, reason=reason))
        finally:
            self._node.subscriptions.close_one(sub)

    async def shut(self) -> None:
        """Node stop: end every subscription (``end`` frames), then close the
        socket with 1001 (going away)."""
        tasks = [s.task for s in self._subs.values() if s.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        try:
            await self._ws.close(code=1001, message=b"node shutting down")
        except (ConnectionError, RuntimeError):
            pass

    async def close(self) -> None:
        """The socket ended: stop every subscription (messages taken and not
        sent go back)."""
        for s in list(self._subs.values()):
            await self._stop(s)


def _history_fields(frame: dict[str, Any], from_db: bool) -> tuple[bool, str | None]:
    """``(fromHistory, position)`` of a subscribe frame, validated."""
    from_history = frame.get(FROM_HISTORY_PARAM, False)
    if not isinstance(from_history, bool):
        raise BadRequest("fromHistory must be true or false", field=FROM_HISTORY_PARAM)
    if from_history and from_db:
        raise BadRequest("fromHistory and readFromDB cannot be combined: choose one", field=FROM_HISTORY_PARAM)
    position = frame.get(POSITION_PARAM)
    if position is not None and not isinstance(position, str):
        raise BadRequest("position must be a string", field=POSITION_PARAM)
    return from_history, check_position(position or None) if from_history else None


def _credit_value(raw: Any, field: str, *, minimum: int) -> int:
    if type(raw) is not int or not minimum <= raw <= MAX_CREDIT:
        raise BadRequest(f"{field} must be a whole number from {minimum} to {MAX_CREDIT}", field=field)
    return raw

