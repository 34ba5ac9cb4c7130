"""A real ``ipubsub serve`` process on a port of its own choosing (port 0,
address read back from ``--ready-file``), and raw-socket helpers for
requests no well-behaved client would send."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.config import deep_merge
from tests.support.procs import NodeProcess

__all__ = ["ServedNode", "raw_request", "raw_request_async", "served_node"]


class ServedNode:
    """One ``python -m ipubsub serve`` child on port 0 (see
    :class:`tests.support.procs.NodeProcess`), started at once and stopped
    by :meth:`close`."""

    def __init__(self, tmp: Path, config: dict[str, Any], name: str = "node-1") -> None:
        base = {
            "node": {"name": name, "listen": "127.0.0.1:0"},
            "cluster": {"name": "sec"},
            "storage": {"backend": "none"},
        }
        self.config = deep_merge(base, config)
        self.process = NodeProcess(self.config, tmp, name)
        try:
            self.process.start()
        except BaseException:
            self.process.kill()
            raise
        self.proc = self.process.proc
        self.address: str = self.process.address
        host, _, port = self.address.rpartition(":")
        self.host, self.port = host, int(port)

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://{self.address}{path}"

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.process.pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def signal(self, sig: int) -> None:
        self.process.signal(sig)

    def log(self) -> str:
        return self.process.log()

    def close(self) -> None:
        self.process.stop(timeout=10)


def served_node(tmp: Path, config: dict[str, Any] | None = None, name: str = "node-1") -> Iterator[ServedNode]:
    """Generator for fixtures: a node that is closed whatever the test did."""
    node = ServedNode(tmp, config or {}, name)
    try:
        yield node
    finally:
        node.close()


def raw_request(host: str, port: int, data: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    """Send ``data`` as is on a new connection; return the answer's status
    and body (read until the server closes or ``timeout``)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            head, sep, body = b"".join(chunks).partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
    answer = b"".join(chunks)
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body


async def raw_request_async(host: str, port: int, data: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    """:func:`raw_request` for tests whose server runs in the same event loop."""
    import asyncio

    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        except asyncio.IncompleteReadError:
            return 0, b""
        length = 0
        for line in head.lower().split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await asyncio.wait_for(reader.readexactly(length), timeout)
    finally:
        writer.close()
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body
