"""Resume tokens and group receipts: round trips and every way to be wrong."""

from __future__ import annotations

import pytest

from ipubsub.errors import InvalidToken
from ipubsub.storage.tokens import decode_receipt, decode_token, encode_receipt, encode_token


def test_tokens_round_trip_and_are_tied_to_their_stream() -> None:
    token = encode_token("s", 2**63 - 1)
    assert decode_token(token, "s") == 2**63 - 1
    with pytest.raises(InvalidToken, match="another stream"):
        decode_token(token, "t")


def test_receipts_round_trip_and_are_tied_to_stream_and_group() -> None:
    receipt = encode_receipt("s", "g", 42, 3)
    assert receipt.isascii() and "=" not in receipt and len(receipt) <= 64
    assert decode_receipt(receipt, "s", "g") == (42, 3)
    for stream, group in (("s", "h"), ("t", "g"), ("s\x00g", ""), ("sg", "")):
        with pytest.raises(InvalidToken, match="another stream or group"):
            decode_receipt(receipt, stream, group)


@pytest.mark.parametrize("bad", ["", "x" * 65, "!!!!", "AAAA", "ü"])
def test_malformed_receipts_are_refused(bad: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        decode_receipt(bad, "s", "g")
    assert caught.value.fields["field"] == "receipt"


def test_a_corrupted_receipt_is_refused() -> None:
    receipt = encode_receipt("s", "g", 1, 1)
    flipped = receipt[:5] + ("A" if receipt[5] != "A" else "B") + receipt[6:]
    with pytest.raises(InvalidToken, match="corrupted|malformed"):
        decode_receipt(flipped, "s", "g")
    with pytest.raises(InvalidToken):
        decode_receipt(encode_token("s", 1), "s", "g")  # a resume token is not a receipt
