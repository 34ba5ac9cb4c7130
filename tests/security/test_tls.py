"""TLS with a CA made in the test (trustme): the public listener of a real
``ipubsub serve``, certificate reload on SIGHUP without dropping open
connections, node-to-node HTTPS in a two-node cluster, and the peer link
with mutual TLS."""

from __future__ import annotations

import signal
import socket
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from ipubsub.cluster.link import Identity, LinkClient, LinkDown, LinkError, LinkServer
from ipubsub.config import Config
from ipubsub.tls import TlsContexts
from tests.cluster.link_support import Done, Echo
from tests.security.nodes import ServedNode
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(90)


def write_pair(ca: trustme.CA, tmp: Path, name: str, *hosts: str) -> tuple[str, str]:
    leaf = ca.issue_cert(*(hosts or ("127.0.0.1", "localhost")))
    cert, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return str(cert), str(key)


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def peer_serial(host: str, port: int, ca: trustme.CA) -> int:
    with socket.create_connection((host, port), timeout=5) as raw:
        with client_context(ca).wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    from cryptography import x509

    return x509.load_der_x509_certificate(der).serial_number


async def get_json(session: aiohttp.ClientSession, url: str, ctx: ssl.SSLContext) -> tuple[int, Any]:
    async with session.get(url, ssl=ctx) as resp:
        return resp.status, await resp.json()


async def wait_both_alive(session: aiohttp.ClientSession, node: ServedNode, ctx: ssl.SSLContext) -> None:
    """Wait (bounded) until ``node`` sees both members of a two-node cluster alive over HTTPS."""

    async def both_alive() -> bool:
        _, view = await get_json(session, node.url("/api/v1/cluster", "https"), ctx)
        return len([m for m in view["members"] if m["status"] == "alive"]) == 2

    await wait_until(both_alive, 20, "both members alive over HTTPS", interval=0.2)


async def stream_owned_by(session: aiohttp.ClientSession, node: ServedNode, owner: str, ctx: ssl.SSLContext) -> str:
    """A stream id that ``node`` says ``owner`` owns."""
    for i in range(200):
        _, found = await get_json(session, node.url(f"/api/v1/streams/owner?streamId=s{i}", "https"), ctx)
        if found["node"] == owner:
            return f"s{i}"
    raise AssertionError(f"no stream of s0..s199 is owned by {owner}")


@pytest.mark.slow
async def test_public_listener_over_tls_and_reload_on_sighup(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = write_pair(ca, tmp_path, "node")
    node = ServedNode(tmp_path, {"http": {"tls": {"cert_file": cert, "key_file": key}}})
    try:
        ctx = client_context(ca)
        first_serial = peer_serial(node.host, node.port, ca)
        connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection, reused
        async with aiohttp.ClientSession(connector=connector) as session:
            status, body = await get_json(session, node.url("/health", "https"), ctx)
            assert status == 200 and body["status"] == "ok"
            # plain HTTP on the TLS port gets no answer
            with pytest.raises(aiohttp.ClientError):
                async with aiohttp.ClientSession() as plain, plain.get(node.url("/health"), timeout=aiohttp.ClientTimeout(total=3)) as resp:
                    await resp.read()
            # a new certificate (same CA) in the same files, then SIGHUP
            new_cert, new_key = write_pair(ca, tmp_path, "next")
            Path(cert).write_bytes(Path(new_cert).read_bytes())
            Path(key).write_bytes(Path(new_key).read_bytes())
            node.signal(signal.SIGHUP)
            await wait_until(lambda: peer_serial(node.host, node.port, ca) != first_serial, 10,
                             "the new certificate served", interval=0.1)
            # the connection opened before the reload still works
            status, _ = await get_json(session, node.url("/health", "https"), ctx)
            assert status == 200
            assert connector._conns, "the keep-alive connection was dropped"
        assert "TLS certificates reloaded" in node.log()
        # a broken file keeps the old certificate and says so
        Path(key).write_text("not a key")
        node.signal(signal.SIGHUP)
        await wait_until(lambda: "TLS reload:" in node.log(), 10, "the failed reload logged", interval=0.1)
        assert peer_serial(node.host, node.port, ca) != first_serial  # still the reloaded certificate
    finally:
        node.close()


@pytest.mark.slow
async def test_two_nodes_talk_over_https(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = write_pair(ca, tmp_path, "node")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls = {"http": {"tls": {"cert_file": cert, "key_file": key}},
           "cluster": {"secret": "cluster-secret", "tls": {"ca_file": str(ca_file)}}}
    first = ServedNode(tmp_path, tls, "n1")
    try:
        second = ServedNode(tmp_path, {**tls, "cluster": {**tls["cluster"], "seeds": [first.address]}}, "n2")
        try:
            ctx = client_context(ca)
            async with aiohttp.ClientSession() as session:
                await wait_both_alive(session, second, ctx)
                # a stream owned by n1, sent through n2 (forwarded over HTTPS)
                stream = await stream_owned_by(session, second, "n1", ctx)
                async with session.post(second.url("/api/v1/streams/send", "https"), ssl=ctx,
                                        json={"streamId": stream, "message": {"over": "tls"}}) as resp:
                    assert resp.status == 200, await resp.text()
                status, got = await get_json(session, first.url(f"/api/v1/streams/receive?streamId={stream}&timeoutSeconds=1", "https"), ctx)
                assert status == 200 and got["message"] == {"over": "tls"}
        finally:
            second.close()
    finally:
        first.close()


async def test_peer_link_with_mutual_tls(tmp_path: Path) -> None:
    ca, stranger = trustme.CA(), trustme.CA()
    cert, key = write_pair(ca, tmp_path, "node")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    config = Config.from_mapping({"cluster": {"tls": {"ca_file": str(ca_file), "cert_file": cert, "key_file": key,
                                                      "require_client_cert": True}}})
    contexts = TlsContexts(config)
    assert contexts.link_server is not None and contexts.peer_client is not None

    def handle(incoming: Any) -> None:
        incoming.reply(Done(incoming.meta.n), incoming.payload)

    server = LinkServer(Identity("test", "owner", 1, b"s"), handle, Echo, ssl=contexts.link_server)
    host, port = await server.start("127.0.0.1", 0)
    try:
        good = LinkClient(f"{host}:{port}", Identity("test", "caller", 1, b"s"), Done, ssl=contexts.peer_client)
        reply = await good.call(Echo(7), b"over tls", timeout=5)
        assert reply.meta.n == 7 and reply.payload == b"over tls"
        await good.close()
        # a client without a certificate, or with one from another CA, never gets a call through
        for name, other in (("no-cert", None), ("stranger", stranger)):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ca.configure_trust(ctx)
            if other is not None:
                other.issue_cert("127.0.0.1").configure_cert(ctx)
            bad = LinkClient(f"{host}:{port}", Identity("test", name, 1, b"s"), Done, ssl=ctx)
            with pytest.raises(LinkError):
                await bad.call(Echo(1), timeout=3)
            await bad.close()
        # a server certificate from another CA is refused by the client
        rogue_cert, rogue_key = write_pair(stranger, tmp_path, "rogue")
        rogue_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        rogue_ctx.load_cert_chain(rogue_cert, rogue_key)
        rogue = LinkServer(Identity("test", "owner", 1, b"s"), handle, Echo, ssl=rogue_ctx)
        rhost, rport = await rogue.start("127.0.0.1", 0)
        try:
            victim = LinkClient(f"{rhost}:{rport}", Identity("test", "caller", 1, b"s"), Done, ssl=contexts.peer_client)
            with pytest.raises(LinkError):
                await victim.call(Echo(1), timeout=3)
            await victim.close()
        finally:
            await rogue.close()
    finally:
        await server.close()


def test_bad_certificate_paths_are_one_config_error(tmp_path: Path) -> None:
    from ipubsub.config import ConfigError

    config = Config.from_mapping({"http": {"tls": {"cert_file": str(tmp_path / "none.crt"), "key_file": str(tmp_path / "none.key")}}})
    with pytest.raises(ConfigError, match="http.tls"):
        TlsContexts(config)


@pytest.mark.slow
async def test_cluster_link_speaks_mutual_tls(tmp_path: Path) -> None:
    """With ``cluster.tls`` (mutual), the nodes' forwarded calls go over the
    peer link in TLS: a call through the non-owner is served, and the link
    listener admits neither plain TCP nor a TLS client without a certificate
    from ``cluster.tls.ca_file``."""
    ca, stranger = trustme.CA(), trustme.CA()
    cert, key = write_pair(ca, tmp_path, "node")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls = {"http": {"tls": {"cert_file": cert, "key_file": key}},
           "cluster": {"secret": "cluster-secret", "tls": {"ca_file": str(ca_file), "require_client_cert": True}}}
    first = ServedNode(tmp_path, tls, "n1")
    try:
        second = ServedNode(tmp_path, {**tls, "cluster": {**tls["cluster"], "seeds": [first.address]}}, "n2")
        try:
            ctx = client_context(ca)
            async with aiohttp.ClientSession() as session:
                await wait_both_alive(session, second, ctx)
                stream = await stream_owned_by(session, second, "n1", ctx)
                async with session.post(second.url("/api/v1/streams/send", "https"), ssl=ctx,
                                        json={"streamId": stream, "message": "via the link"}) as resp:
                    assert resp.status == 200, await resp.text()
                status, got = await get_json(
                    session, second.url(f"/api/v1/streams/receive?streamId={stream}&timeoutSeconds=2", "https"), ctx)
                assert status == 200 and got["message"] == "via the link", got
                _, health = await get_json(session, second.url("/health", "https"), ctx)
                assert health["cluster"]["link"]["peersConnected"] == 1, health["cluster"]  # forwarded over the link
            link = first.process.ready["link"]
            identity = Identity("sec", "intruder", 1, b"cluster-secret")

            async def outcome(ctx: ssl.SSLContext | None) -> type[BaseException] | None:
                client = LinkClient(link, identity, Done, ssl=ctx)
                try:
                    await client.call(Echo(1), timeout=3)
                    return None
                except LinkError as exc:
                    return type(exc)
                finally:
                    await client.close()

            # a peer's certificate from the CA and the secret open the link (the
            # unknown call is then refused or aborted by the node, not the link)
            good = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ca.configure_trust(good)
            ca.issue_cert("127.0.0.1").configure_cert(good)
            got = await outcome(good)
            assert got is None or not issubclass(got, LinkDown), got
            stranger_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ca.configure_trust(stranger_ctx)
            stranger.issue_cert("127.0.0.1").configure_cert(stranger_ctx)
            no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ca.configure_trust(no_cert)
            for name, ctx in (("plain TCP", None), ("no client certificate", no_cert), ("another CA", stranger_ctx)):
                got = await outcome(ctx)
                assert got is not None and issubclass(got, LinkDown), (name, got)

            # SIGHUP: the link listener's new handshakes get the new certificate too
            lhost, _, lport = link.rpartition(":")

            def link_serial() -> int:
                with socket.create_connection((lhost, int(lport)), timeout=5) as raw:
                    with good.wrap_socket(raw, server_hostname=lhost) as tls_sock:
                        der = tls_sock.getpeercert(binary_form=True)
                from cryptography import x509

                return x509.load_der_x509_certificate(der).serial_number

            before = link_serial()
            new_cert, new_key = write_pair(ca, tmp_path, "next")
            Path(cert).write_bytes(Path(new_cert).read_bytes())
            Path(key).write_bytes(Path(new_key).read_bytes())
            first.signal(signal.SIGHUP)
            await wait_until(lambda: link_serial() != before, 10, "the link's new certificate served", interval=0.1)
        finally:
            second.close()
    finally:
        first.close()
