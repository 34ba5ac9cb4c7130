"""Unit tests of the message value, its timestamp format, the uuid source and
the clocks."""

from __future__ import annotations

import os
import re
import time

import pytest

from ipubsub.engine import ManualClock, Message, SystemClock, format_timestamp, new_uuid, parse_timestamp
from ipubsub.engine.message import _UuidSource

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_message_size_counts_payload_and_uuid() -> None:
    assert Message("abc", b"12345", 7).size == 8
    assert Message("", b"", 0).size == 0


def test_message_equality_is_by_uuid_payload_and_timestamp() -> None:
    m = Message("u", b"p", 1)
    assert m == Message("u", b"p", 1)
    assert m != Message("v", b"p", 1)
    assert m != Message("u", b"q", 1)
    assert m != Message("u", b"p", 2)
    assert (m == "u") is False
    with pytest.raises(TypeError):
        hash(m)


def test_message_starts_untaken_and_repr_shows_the_fields() -> None:
    m = Message("u1", b'{"a":1}', 42)
    assert m.taken == 0
    assert repr(m) == "Message('u1', b'{\"a\":1}', 42)"
    assert repr(Message("u", b"x" * 100, 1)).count("x") == 40


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "1970-01-01T00:00:00.000000Z"),
        (1_790_000_000_123_456, "2026-09-21T14:13:20.123456Z"),
        (1_790_000_000_000_001, "2026-09-21T14:13:20.000001Z"),
        (1_790_000_001_999_999, "2026-09-21T14:13:21.999999Z"),
        (951_782_400_000_000, "2000-02-29T00:00:00.000000Z"),
    ],
)
def test_timestamps_format_and_parse_back(micros: int, text: str) -> None:
    assert format_timestamp(micros) == text
    assert parse_timestamp(text) == micros


def test_consecutive_timestamps_in_different_seconds_are_not_mixed_up() -> None:
    # The formatter caches the text of the current second.
    assert format_timestamp(1_000_000_000_500_000) == "2001-09-09T01:46:40.500000Z"
    assert format_timestamp(1_000_000_001_500_000) == "2001-09-09T01:46:41.500000Z"
    assert format_timestamp(1_000_000_000_000_007) == "2001-09-09T01:46:40.000007Z"


def test_parse_timestamp_refuses_other_formats() -> None:
    for bad in ("2026-09-21 13:33:20.123456Z", "2026-09-21T14:13:20Z", "yesterday", ""):
        with pytest.raises(ValueError):
            parse_timestamp(bad)


def test_uuids_are_random_version_4_and_distinct() -> None:
    ids = [new_uuid() for _ in range(1000)]  # spans several pooled blocks of entropy
    assert all(UUID4.match(u) for u in ids), ids[:3]
    assert len(set(ids)) == len(ids)


def test_uuid_source_draws_one_block_of_entropy_per_256_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.urandom

    def counting(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(os, "urandom", counting)
    source = _UuidSource()
    ids = [source() for _ in range(257)]
    assert calls == [4096, 4096]
    assert len(set(ids)) == 257
    source.reset()  # as in a forked child: the pooled entropy is forgotten
    source()
    assert calls == [4096, 4096, 4096]


def test_system_clock_reads_the_real_clocks() -> None:
    clock = SystemClock()
    assert abs(clock.time_us() - time.time() * 1_000_000) < 5_000_000
    assert abs(clock.monotonic() - time.monotonic()) < 5


def test_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(start=10.0, wall_us=5_000_000)
    assert (clock.monotonic(), clock.time_us()) == (10.0, 5_000_000)
    clock.advance(1.5)
    assert (clock.monotonic(), clock.time_us()) == (11.5, 6_500_000)
    default = ManualClock()
    assert (default.monotonic(), default.time_us()) == (1000.0, 1_790_000_000_000_000)


def test_uuid_source_uses_every_byte_of_entropy_once_and_keeps_122_random_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = os.urandom
    monkeypatch.setattr(os, "urandom", lambda n: calls.append(n) or real(n))
    source = _UuidSource()
    ids = [source() for _ in range(256)]
    assert calls == [4096]  # 256 ids of 16 bytes from one block
    assert all(UUID4.match(u) for u in ids)
    raw = [bytes.fromhex(u.replace("-", "")) for u in ids]
    # The version and variant bits are set without copying neighbouring bytes
    # and without fixing any of the random bits around them.
    assert sum((r[6] & 0x0F) == (r[7] & 0x0F) for r in raw) < 64
    assert sum((r[8] & 0x3F) == (r[9] & 0x3F) for r in raw) < 64
    assert {r[6] & 1 for r in raw} == {0, 1}
    assert {r[8] & 1 for r in raw} == {0, 1}


def test_system_clock_gives_whole_microseconds() -> None:
    assert type(SystemClock().time_us()) is int
