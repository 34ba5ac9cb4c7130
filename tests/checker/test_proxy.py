"""The checker's TCP proxy and the /proc lookup that names a connection's
owner, on real loopback sockets."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from ipubsub.checker.proxy import Mode, TcpProxy
from ipubsub.checker.sockets import connection_owners

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/net/tcp is Linux only")


async def _echo_server() -> asyncio.AbstractServer:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def _roundtrip(port: int, payload: bytes = b"ping", timeout: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), timeout)
    finally:
        writer.close()


async def test_forwards_and_retargets() -> None:
    first, second = await _echo_server(), await _echo_server()
    proxy = TcpProxy("p", ("127.0.0.1", first.sockets[0].getsockname()[1]))
    await proxy.start()
    try:
        assert await _roundtrip(proxy.port) == b"ping"
        first.close()
        await first.wait_closed()
        proxy.retarget(("127.0.0.1", second.sockets[0].getsockname()[1]))
        assert await _roundtrip(proxy.port, b"pong") == b"pong"
    finally:
        await proxy.stop()
        second.close()


async def test_cut_resets_and_heal_restores() -> None:
    server = await _echo_server()
    proxy = TcpProxy("p", ("127.0.0.1", server.sockets[0].getsockname()[1]))
    await proxy.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"a")
        assert await asyncio.wait_for(reader.readexactly(1), 2) == b"a"
        await proxy.set_mode(Mode.CUT)
        assert await asyncio.wait_for(reader.read(10), 2) == b""  # the open connection is reset
        writer.close()
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await _roundtrip(proxy.port)  # a new one too
        proxy.heal()
        assert await _roundtrip(proxy.port) == b"ping"
    finally:
        await proxy.stop()
        server.close()


async def test_blackhole_holds_bytes_until_heal() -> None:
    server = await _echo_server()
    proxy = TcpProxy("p", ("127.0.0.1", server.sockets[0].getsockname()[1]))
    await proxy.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"a")
        assert await asyncio.wait_for(reader.readexactly(1), 2) == b"a"
        await proxy.set_mode(Mode.BLACKHOLE)
        writer.write(b"held")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reader.readexactly(4), 0.3)
        proxy.heal()
        assert await asyncio.wait_for(reader.readexactly(4), 2) == b"held"
        writer.close()
    finally:
        await proxy.stop()
        server.close()


async def test_modes_per_client() -> None:
    """Only the named client's path is cut; others still pass."""
    server = await _echo_server()
    names = {"me": True}

    async def identify(pairs: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
        return {pair: "me" if names["me"] else "someone-else" for pair in pairs}

    proxy = TcpProxy("p", ("127.0.0.1", server.sockets[0].getsockname()[1]), identify=identify)
    await proxy.start()
    try:
        await proxy.set_mode(Mode.CUT, ["me"])
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await _roundtrip(proxy.port)
        names["me"] = False
        assert await _roundtrip(proxy.port) == b"ping"
        proxy.heal()
        names["me"] = True
        assert await _roundtrip(proxy.port) == b"ping"
    finally:
        await proxy.stop()
        server.close()


async def test_owner_of_a_connection_is_found() -> None:
    server = await _echo_server()
    port = server.sockets[0].getsockname()[1]
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        local_port = writer.get_extra_info("sockname")[1]
        other = port + 1 if port < 65535 else port - 1
        owners = await asyncio.to_thread(connection_owners, [(local_port, port), (local_port, other)],
                                         [os.getppid(), os.getpid()])
        assert owners == {(local_port, port): os.getpid()}
        assert connection_owners([(local_port, port)], [os.getppid()]) == {}
    finally:
        writer.close()
        server.close()
