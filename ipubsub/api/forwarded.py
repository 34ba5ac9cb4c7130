"""The owner's side of public calls that peers forward over the link.

Each is served exactly as if a client had made it here (same node methods,
same limits, same JSON answers and statuses), and answered on the link with
the status, ``Retry-After`` and the exact body the forwarding node then
writes to its client.  Peers proved the cluster secret when their link
opened, so forwarded calls need no credentials of their own.

An in-memory take (a plain receive, or a batch with ``maxMessages``) is
*parked* in the engine: no task, one callback.  Cancelling the call on the
link ends it at once; an answer that cannot be written (the link is gone)
gives its messages back to the front of the stream.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from ..calls import Delivery, ReceiveCall, Relayed, SendCall
from ..cluster.forwarder import is_take
from ..cluster.link import Incoming
from ..cluster.link_calls import Answer, ForwardAck, ForwardNack, ForwardReceive, ForwardSend, ForwardSendBatch
from ..engine import Message, Parked, Released
from ..engine.receiving import POLL_CANCELLED
from ..errors import IPubSubError, ReceiveTimeout, StreamReleased
from ..observability.logs import REQUEST_ID
from ..protocol import RETRY_AFTER_HEADER
from .codec import encode_batch_results, encode_deliveries, encode_delivery, encode_sent, parse_send_batch
from .errors import error_response, internal_error_response, status_of
from .history_codec import encode_history

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["ForwardedCalls"]

log = logging.getLogger("ipubsub.api")

_OK = Answer(200)


def _error_answer(exc: IPubSubError | None) -> tuple[Answer, bytes]:
    response = error_response(exc) if exc is not None else internal_error_response()
    body = response.body
    assert isinstance(body, bytes)
    return Answer(response.status, response.headers.get(RETRY_AFTER_HEADER)), body


class ForwardedCalls:
    """Serves forwarded calls for one node (given to
    :meth:`ipubsub.cluster.cluster.Cluster.serve_forwarded_calls`).  With
    ``log.access_log`` each answered call gets an access line, tagged with
    the request id the forwarding node passed on."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._access = logging.getLogger("ipubsub.access") if node.config.log.access_log else None

    def _reply(
        self, incoming: Incoming, what: str, request_id: str | None, answer: Answer, body: bytes,
        undo: Callable[[], None] | None = None,
    ) -> None:  # fmt: skip
        incoming.reply(answer, body, undo)
        if self._access is not None:
            token = REQUEST_ID.set(request_id)
            try:
                peer = incoming.peer.node if incoming.peer is not None else "?"
                self._access.info('link from %s "%s" %d %d', peer, what, answer.status, len(body))
            finally:
                REQUEST_ID.reset(token)

    def _reply_error(self, incoming: Incoming, what: str, request_id: str | None, exc: IPubSubError | None) -> None:
        answer, body = _error_answer(exc)
        self._reply(incoming, what, request_id, answer, body)

    def _reply_relayed(self, incoming: Incoming, what: str, request_id: str | None, relayed: Relayed) -> None:
        self._reply(incoming, what, request_id, Answer(relayed.status, relayed.retry_after), relayed.body)

    def handle(self, incoming: Incoming) -> Awaitable[None] | None:
        meta = incoming.meta
        if isinstance(meta, ForwardReceive):
            if is_take(meta.call):
                self._park(incoming, meta.call, meta.request_id)
                return None
            return self._receive(incoming, meta)
        if isinstance(meta, ForwardSend):
            return self._send(incoming, meta, meta.call(incoming.payload))
        if isinstance(meta, ForwardSendBatch):
            return self._send_batch(incoming, meta)
        if isinstance(meta, (ForwardAck, ForwardNack)):
            return self._settle(incoming, meta)
        incoming.abort(f"{type(meta).__name__} calls are not served by this node")
        return None

    # -- in-memory takes: parked, no task ------------------------------------------------

    def _park(self, incoming: Incoming, cmd: ReceiveCall, request_id: str | None) -> None:
        answer = _ParkedAnswer(self, incoming, cmd, request_id)
        try:
            answer.parked = self._node.park_forwarded_receive(cmd, answer.deliver)
        except IPubSubError as exc:
            self._reply_error(incoming, f"receive {cmd.stream_id}", request_id, exc)
            return
        if answer.parked is not None:
            incoming.on_cancel = answer.cancel

    # -- everything else: a task per call ---------------------------------------------------

    async def _receive(self, incoming: Incoming, meta: ForwardReceive) -> None:
        REQUEST_ID.set(meta.request_id)
        cmd, node, rid = meta.call, self._node, meta.request_id
        what = f"receive {cmd.stream_id}"
        peer = incoming.peer.node if incoming.peer is not None else "?"
        try:
            if cmd.from_history:
                read = await node.read_history(cmd, forwarded_by=peer, request_id=rid)
                if isinstance(read, Relayed):
                    self._reply_relayed(incoming, what, rid, read)
                else:
                    self._reply(incoming, what, rid, _OK, encode_history(read))
                return
            result = await node.receive(cmd, forwarded_by=peer, request_id=rid)
        except IPubSubError as exc:
            self._reply_error(incoming, what, rid, exc)
            return
        except Exception:
            log.exception("failed serving a receive forwarded by %s", peer)
            self._reply_error(incoming, what, rid, None)
            return
        if isinstance(result, Relayed):
            self._reply_relayed(incoming, what, rid, result)
        elif isinstance(result, list):
            body = encode_deliveries(result) if cmd.max_messages is not None else encode_delivery(result[0])
            self._reply(incoming, what, rid, _OK, body)
        else:
            self._reply(incoming, what, rid, _OK, encode_delivery(result))

    def _send(self, incoming: Incoming, meta: ForwardSend, cmd: SendCall) -> Awaitable[None] | None:
        what = f"send {cmd.stream_id}" if self._access is not None else "send"
        try:
            sent = self._node.send_forwarded_now(cmd)
        except IPubSubError as exc:
            self._reply_error(incoming, what, meta.request_id, exc)
            return None
        if sent is None:
            return self._send_later(incoming, meta, cmd, what)
        self._reply(incoming, what, meta.request_id, _OK, encode_sent(sent))
        return None

    async def _send_later(self, incoming: Incoming, meta: ForwardSend, cmd: SendCall, what: str) -> None:
        REQUEST_ID.set(meta.request_id)
        rid = meta.request_id
        peer = incoming.peer.node if incoming.peer is not None else "?"
        try:
            result = await self._node.send(cmd, forwarded_by=peer, request_id=rid)
        except IPubSubError as exc:
            self._reply_error(incoming, what, rid, exc)
            return
        except Exception:
            log.exception("failed serving a send forwarded by %s", peer)
            self._reply_error(incoming, what, rid, None)
            return
        if isinstance(result, Relayed):
            self._reply_relayed(incoming, what, rid, result)
        else:
            self._reply(incoming, what, rid, _OK, encode_sent(result))

    async def _send_batch(self, incoming: Incoming, meta: ForwardSendBatch) -> None:
        REQUEST_ID.set(meta.request_id)
        node, rid, what = self._node, meta.request_id, "sendBatch"
        peer = incoming.peer.node if incoming.peer is not None else "?"
        try:
            items = parse_send_batch(incoming.payload, node.config)
            results = await node.send_batch(items, forwarded_by=peer, request_id=rid)
        except IPubSubError as exc:
            self._reply_error(incoming, what, rid, exc)
            return
        except Exception:
            log.exception("failed serving a batch forwarded by %s", peer)
            self._reply_error(incoming, what, rid, None)
            return
        self._reply(incoming, what, rid, _OK, encode_batch_results(results, status_of))

    async def _settle(self, incoming: Incoming, meta: ForwardAck | ForwardNack) -> None:
        REQUEST_ID.set(meta.request_id)
        node, rid = self._node, meta.request_id
        what = f"{'ack' if isinstance(meta, ForwardAck) else 'nack'} {meta.call.stream_id}"
        peer = incoming.peer.node if incoming.peer is not None else "?"
        try:
            if isinstance(meta, ForwardAck):
                answers = await node.ack(meta.call, forwarded_by=peer, request_id=rid)
            else:
                answers = await node.nack(meta.call, forwarded_by=peer, request_id=rid)
        except IPubSubError as exc:
            self._reply_error(incoming, what, rid, exc)
            return
        except Exception:
            log.exception("failed serving an ack forwarded by %s", peer)
            self._reply_error(incoming, what, rid, None)
            return
        self._reply(incoming, what, rid, _OK, msgspec.json.encode(answers))


class _ParkedAnswer:
    """The answer of one parked forwarded take (a small object rather than
    closures: thousands of these wait at once, see docs/benchmarks.md)."""

    __slots__ = ("calls", "incoming", "cmd", "request_id", "parked")

    def __init__(self, calls: ForwardedCalls, incoming: Incoming, cmd: ReceiveCall, request_id: str | None) -> None:
        self.calls = calls
        self.incoming = incoming
        self.cmd = cmd
        self.request_id = request_id
        self.parked: Parked | None = None

    def cancel(self) -> None:
        if self.parked is not None:
            self.parked.end(POLL_CANCELLED)

    def deliver(self, result: Any) -> None:
        calls, incoming, cmd = self.calls, self.incoming, self.cmd
        stream_id = cmd.stream_id
        what = f"receive {stream_id}" if calls._access is not None else "receive"
        if type(result) is Message or type(result) is list:
            msgs: list[Message] = [result] if type(result) is Message else result  # type: ignore[assignment]
            engine = calls._node.engine
            if incoming.answered:  # the call ended meanwhile: nobody takes them
                engine.give_back(stream_id, msgs)
                return
            body = (
                encode_delivery(Delivery(msgs[0]))
                if cmd.max_messages is None
                else encode_deliveries([Delivery(m) for m in msgs])
            )
            calls._reply(incoming, what, self.request_id, _OK, body, lambda: engine.give_back(stream_id, msgs))
        elif result is None:
            calls._reply_error(incoming, what, self.request_id, ReceiveTimeout(stream_id, cmd.timeout))
        else:
            assert isinstance(result, Released)
            calls._reply_error(incoming, what, self.request_id, StreamReleased(stream_id, result.reason))
