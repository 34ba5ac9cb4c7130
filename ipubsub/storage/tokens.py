"""Resume tokens and group receipts: opaque, URL-safe, versioned and checked.

A token names a position in one stream's durable log.  Layout (version 1),
base64url without padding::

    version (1 byte = 1) | stream digest (8) | position (8, big-endian) | check (4)

The stream digest makes a token from another stream detectable; the check
(an unkeyed BLAKE2b of the rest) rejects typos and truncation.  Tokens are
not secret and not signed: they only say where to resume.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import struct
from collections.abc import Iterable

from ..errors import InvalidToken

__all__ = ["decode_receipt", "decode_token", "encode_receipt", "encode_token", "encode_tokens"]

_VERSION = 1
_LAYOUT = struct.Struct(">B8sQ")
_CHECK_BYTES = 4
_TOKEN_BYTES = _LAYOUT.size + _CHECK_BYTES
_BASE64URL = re.compile(r"[A-Za-z0-9_-]{1,64}")


@functools.lru_cache(maxsize=4096)  # a batch's tokens mostly name few streams
def _stream_digest(stream_id: str) -> bytes:
    return hashlib.blake2b(stream_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def _check(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=_CHECK_BYTES, person=b"ipubsub-token").digest()


def _unpadded_base64url(text: str, field: str) -> bytes:
    """The bytes of ``text`` as we write it (base64url without padding, at
    most 64 characters); any other character, even one a lenient decoder
    would skip, makes it malformed.

    Raises:
        InvalidToken: with ``field``.
    """
    if not _BASE64URL.fullmatch(text):
        raise InvalidToken(f"{field} is malformed", field=field)
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken(f"{field} is malformed (not base64url)", field=field) from None


def encode_token(stream_id: str, position: int) -> str:
    """The token that resumes ``stream_id`` after ``position``."""
    body = _LAYOUT.pack(_VERSION, _stream_digest(stream_id), position)
    return base64.urlsafe_b64encode(body + _check(body)).rstrip(b"=").decode("ascii")


def encode_tokens(stream_id: str, positions: Iterable[int]) -> list[str]:
    """:func:`encode_token` of each position of one stream (the stream's
    digest computed once: a batch read's tokens)."""
    digest = _stream_digest(stream_id)
    pack = _LAYOUT.pack
    out = []
    for position in positions:
        body = pack(_VERSION, digest, position)
        out.append(base64.urlsafe_b64encode(body + _check(body)).rstrip(b"=").decode("ascii"))
    return out


def decode_token(token: str, stream_id: str) -> int:
    """The position a token resumes after.

    Raises:
        InvalidToken: malformed, of an unknown version, corrupted, or issued
            for another stream.
    """
    raw = _unpadded_base64url(token, "dbResumeToken")
    if len(raw) != _TOKEN_BYTES or raw[0] != _VERSION:
        raise InvalidToken("dbResumeToken is malformed or of an unknown version", field="dbResumeToken")
    body, check = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
    if _check(body) != check:
        raise InvalidToken("dbResumeToken is corrupted (checksum mismatch)", field="dbResumeToken")
    _, digest, position = _LAYOUT.unpack(body)
    if digest != _stream_digest(stream_id):
        raise InvalidToken(
            f"dbResumeToken was issued for another stream, not {stream_id!r}", field="dbResumeToken"
        )
    return int(position)


# A receipt names one delivery of a consumer group's pending entry (see
# ipubsub.storage.base.LeaseRef).  Layout (version 1), base64url:
#     version (1 byte = 1) | stream+group digest (8) | position (8) | delivery (4) | check (4)
_RECEIPT = struct.Struct(">B8sQI")


def _group_digest(stream_id: str, group: str) -> bytes:
    key = stream_id.encode("utf-8", "surrogatepass") + b"\x00" + group.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(key, digest_size=8, person=b"ipubsub-group").digest()


def encode_receipt(stream_id: str, group: str, position: int, delivery: int) -> str:
    """The receipt of one delivery of a group's message (ack/nack it)."""
    body = _RECEIPT.pack(_VERSION, _group_digest(stream_id, group), position, delivery)
    return base64.urlsafe_b64encode(body + _check(body)).rstrip(b"=").decode("ascii")


def decode_receipt(receipt: str, stream_id: str, group: str) -> tuple[int, int]:
    """``(position, delivery)`` of a receipt.

    Raises:
        InvalidToken: malformed, corrupted, or issued for another stream or
            group (``field`` is ``receipt``).
    """
    size = _RECEIPT.size + _CHECK_BYTES
    raw = _unpadded_base64url(receipt, "receipt")
    if len(raw) != size or raw[0] != _VERSION:
        raise InvalidToken("receipt is malformed or of an unknown version", field="receipt")
    body, check = raw[: _RECEIPT.size], raw[_RECEIPT.size :]
    if _check(body) != check:
        raise InvalidToken("receipt is corrupted (checksum mismatch)", field="receipt")
    _, digest, position, delivery = _RECEIPT.unpack(body)
    if digest != _group_digest(stream_id, group):
        raise InvalidToken(f"receipt was issued for another stream or group, not {stream_id!r}/{group!r}", field="receipt")
    return int(position), int(delivery)
