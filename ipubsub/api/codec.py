"""Decoding and validating public requests, encoding replies: one import
path for the codecs, which live by responsibility in
:mod:`.request_codec` (shared checks: stream ids, booleans, body decoding),
:mod:`.send_codec` (send and ``sendBatch`` bodies), :mod:`.receive_codec`
(the receive query), :mod:`.lease_codec` (ack/nack bodies, the groups
query) and :mod:`.reply_codec` (every answer).

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

from .lease_codec import MAX_RECEIPT_CHARS, parse_ack, parse_group_query, parse_nack
from .receive_codec import DEFAULT_CONSUMER, parse_receive
from .reply_codec import (
    encode_ack,
    encode_batch_results,
    encode_deliveries,
    encode_delivery,
    encode_groups,
    encode_json,
    encode_sent,
)
from .request_codec import MAX_STREAM_ID_BYTES, check_stream_id, parse_bool, too_deep
from .send_codec import DEFAULT_TTL_SECONDS, MAX_UUID_CHARS, NotInBatch, parse_send, parse_send_batch

__all__ = [
    "DEFAULT_CONSUMER",
    "DEFAULT_TTL_SECONDS",
    "MAX_RECEIPT_CHARS",
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
    "parse_bool",
    "parse_group_query",
    "parse_nack",
    "parse_receive",
    "parse_send",
    "parse_send_batch",
    "too_deep",
]
