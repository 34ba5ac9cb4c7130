"""The link's frame format: whatever way the bytes are cut by the network,
the reader yields the frames the writer wrote, and refuses malformed ones."""

from __future__ import annotations

import random

import msgspec
import pytest

from ipubsub.cluster.link.frames import CALL, PING, REPLY, FrameError, FrameReader, FrameWriter


class Head(msgspec.Struct, array_like=True, tag=1):
    n: int
    text: str


decode = msgspec.msgpack.Decoder(Head).decode


def feed(reader: FrameReader, data: bytes, cuts: list[int]) -> list[tuple[int, int, object, bytes]]:
    got: list[tuple[int, int, object, bytes]] = []

    def on_frame(kind: int, call_id: int, meta: memoryview, payload: bytes) -> None:
        got.append((kind, call_id, decode(meta) if len(meta) else None, payload))

    pos = 0
    for cut in [*cuts, len(data)]:
        while pos < cut:
            buf = reader.get_buffer()
            n = min(len(buf), cut - pos)
            buf[:n] = data[pos : pos + n]
            buf.release()
            reader.parse(n, on_frame)
            pos += n
    return got


def sample_frames() -> tuple[bytes, list[tuple[int, int, object, bytes]]]:
    writer = FrameWriter(16 * 1024 * 1024)
    expected: list[tuple[int, int, object, bytes]] = []
    rnd = random.Random(7)
    for i in range(200):
        payload = rnd.randbytes(rnd.choice([0, 1, 100, 70_000, 300_000]))
        head = Head(i, "é" * (i % 5))
        writer.add(CALL if i % 2 else REPLY, i + 1, head, payload)
        expected.append((CALL if i % 2 else REPLY, i + 1, head, payload))
    writer.add(PING, 0)
    expected.append((PING, 0, None, b""))
    return bytes(writer.take()), expected


@pytest.mark.parametrize("cutting", ["whole", "bytewise-start", "random"])
def test_frames_survive_any_cutting_of_the_stream(cutting: str) -> None:
    data, expected = sample_frames()
    if cutting == "whole":
        cuts: list[int] = []
    elif cutting == "bytewise-start":
        cuts = list(range(1, 200))  # the first frames arrive one byte at a time
    else:
        rnd = random.Random(11)
        cuts = sorted(rnd.sample(range(1, len(data)), 500))
    assert feed(FrameReader(16 * 1024 * 1024), data, cuts) == expected


def test_the_writer_refuses_a_frame_over_the_limit_and_keeps_the_others() -> None:
    writer = FrameWriter(1000)
    writer.add(CALL, 1, Head(1, "a"), b"x" * 100)
    with pytest.raises(FrameError):
        writer.add(CALL, 2, Head(2, "b"), b"x" * 1000)
    writer.add(CALL, 3, Head(3, "c"))
    got = feed(FrameReader(1000), bytes(writer.take()), [])
    assert [(k, i) for k, i, _, _ in got] == [(CALL, 1), (CALL, 3)]


@pytest.mark.parametrize(
    "data",
    [
        (2**31).to_bytes(4, "big") + bytes(20),  # announces a frame far over the limit
        (3).to_bytes(4, "big") + bytes(20),  # shorter than its own prefix
        (9 + 2).to_bytes(4, "big") + bytes([1]) + (1).to_bytes(4, "big") + (50).to_bytes(4, "big") + b"ab",
    ],
    ids=["too-large", "too-small", "header-past-end"],
)
def test_malformed_frames_are_refused(data: bytes) -> None:
    with pytest.raises(FrameError):
        feed(FrameReader(1024 * 1024), data, [])


def test_the_receive_buffer_shrinks_back_after_a_large_frame() -> None:
    writer = FrameWriter(64 * 1024 * 1024)
    writer.add(REPLY, 1, Head(1, ""), bytes(5 * 1024 * 1024))
    reader = FrameReader(64 * 1024 * 1024)
    assert len(feed(reader, bytes(writer.take()), [])) == 1
    assert len(reader.get_buffer()) <= 256 * 1024
