"""Resume tokens (ipubsub/storage/tokens.py): opaque, URL-safe, tied to one
stream, and every kind of damage is refused with a 400-class error that
names ``dbResumeToken``."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest

from ipubsub.errors import InvalidToken
from ipubsub.storage.tokens import decode_token, encode_token

POSITIONS = [0, 1, 255, 2**32, 2**63 - 1, 2**64 - 1]
STREAMS = ["s", "user-42", "é" * 128, "a/b?c=d&e#f", "\ud800 lone surrogate", "x" * 256]


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("position", POSITIONS)
def test_every_position_of_every_stream_round_trips(stream: str, position: int) -> None:
    token = encode_token(stream, position)
    assert decode_token(token, stream) == position
    # URL-safe as is: no padding, no '+' or '/', a fixed short length
    assert len(token) == 28 and token.isascii()
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_tokens_are_deterministic_and_differ_by_position_and_stream() -> None:
    assert encode_token("s", 7) == encode_token("s", 7)
    tokens = {encode_token(stream, position) for stream in STREAMS for position in POSITIONS}
    assert len(tokens) == len(STREAMS) * len(POSITIONS)


def test_a_token_of_another_stream_is_refused() -> None:
    token = encode_token("orders", 5)
    for other in ("Orders", "orders ", "order", ""):
        with pytest.raises(InvalidToken, match="issued for another stream") as caught:
            decode_token(token, other)
        assert caught.value.fields["field"] == "dbResumeToken"


@pytest.mark.parametrize(("token", "says"), [
    ("", "malformed"),
    ("A" * 65, "malformed"),
    ("ü" * 10, "malformed"),
    ("!!!!", "malformed"),
    ("A", "not base64url"),  # no length of base64 text
    (encode_token("s", 1) + "!!", "malformed"),  # a lenient decoder would skip them and accept it
    (encode_token("s", 1).replace("A", "+").replace("-", "+"), "malformed"),  # standard base64, not ours
    ("AAAA", "malformed or of an unknown version"),
    (encode_token("s", 1)[:-4], "malformed or of an unknown version"),  # truncated
    (encode_token("s", 1) + "AAAA", "malformed or of an unknown version"),  # extended
])
def test_malformed_tokens_are_refused(token: str, says: str) -> None:
    with pytest.raises(InvalidToken, match=says) as caught:
        decode_token(token, "s")
    assert caught.value.fields["field"] == "dbResumeToken"


def test_every_single_character_change_is_detected() -> None:
    token = encode_token("stream", 123456789)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i, char in enumerate(token):
        changed = token[:i] + alphabet[(alphabet.index(char) + 1) % len(alphabet)] + token[i + 1:]
        with pytest.raises(InvalidToken):
            decode_token(changed, "stream")


def _forge(version: int, stream: str, position: int) -> str:
    """A token built by hand with a correct checksum (what tokens.py's
    layout documents), to reach the checks behind the checksum."""
    body = struct.pack(">B8sQ", version, hashlib.blake2b(stream.encode(), digest_size=8).digest(), position)
    check = hashlib.blake2b(body, digest_size=4, person=b"ipubsub-token").digest()
    return base64.urlsafe_b64encode(body + check).rstrip(b"=").decode()


def test_the_documented_layout_is_what_is_encoded_and_other_versions_are_refused() -> None:
    assert _forge(1, "s", 42) == encode_token("s", 42)
    with pytest.raises(InvalidToken, match="unknown version"):
        decode_token(_forge(2, "s", 42), "s")
