"""The node's TLS contexts, built once from ``http.tls`` and
``cluster.tls`` and re-read in place on SIGHUP.

* ``http_server``: the public listener (API, dashboard, gossip).
* ``link_server``: the peer-link listener; ``cluster.tls`` certificate (or
  ``http.tls``'s), and with ``require_client_cert`` only peers presenting a
  certificate signed by ``cluster.tls.ca_file`` get in (mutual TLS).
* ``peer_client``: this node calling its peers (HTTP and the link):
  verifies them against ``cluster.tls.ca_file`` (the system's CAs when only
  ``http.tls`` is set), host name included, and presents this node's
  certificate when it has one.

Reload: :meth:`TlsContexts.reload` calls ``load_cert_chain`` on the *live*
contexts, so new handshakes get the new certificate while connections
already open keep theirs (nothing is dropped).  A file that fails to load
leaves the old certificate in place and is reported.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from .config import Config, ConfigError

__all__ = ["TlsContexts"]


@dataclass(frozen=True)
class _Chain:
    context: ssl.SSLContext
    cert_file: str
    key_file: str
    where: str


def _load_chain(ctx: ssl.SSLContext, cert: str, key: str, where: str) -> None:
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{where}: cannot load certificate {cert} / key {key}: {exc}") from None


def _load_ca(ctx: ssl.SSLContext, ca_file: str) -> None:
    try:
        ctx.load_verify_locations(ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cluster.tls.ca_file: cannot load {ca_file}: {exc}") from None


class TlsContexts:
    """Built from the configuration (``None`` where TLS is off).

    Raises (from the constructor):
        ConfigError: a certificate, key or CA file cannot be loaded.
    """

    def __init__(self, config: Config) -> None:
        http, cluster = config.http.tls, config.cluster.tls
        self._chains: list[_Chain] = []
        self.http_server: ssl.SSLContext | None = None
        self.link_server: ssl.SSLContext | None = None
        self.peer_client: ssl.SSLContext | None = None
        if http.enabled:
            self.http_server = self._server(http.cert_file, http.key_file, "http.tls")
        node_cert, node_key, where = (
            (cluster.cert_file, cluster.key_file, "cluster.tls") if cluster.cert_file
            else (http.cert_file, http.key_file, "http.tls")
        )
        if cluster.enabled:
            if node_cert:
                self.link_server = self._server(node_cert, node_key, where)
                if cluster.require_client_cert:
                    _load_ca(self.link_server, cluster.ca_file)
                    self.link_server.verify_mode = ssl.CERT_REQUIRED
            # only the cluster's CA is trusted between nodes (no system CAs)
            client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            client.minimum_version = ssl.TLSVersion.TLSv1_2
            _load_ca(client, cluster.ca_file)
            if node_cert:
                self._add(client, node_cert, node_key, where)
            self.peer_client = client
        elif http.enabled:
            self.peer_client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)

    def _server(self, cert: str, key: str, where: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self._add(ctx, cert, key, where)
        return ctx

    def _add(self, ctx: ssl.SSLContext, cert: str, key: str, where: str) -> None:
        _load_chain(ctx, cert, key, where)
        self._chains.append(_Chain(ctx, cert, key, where))

    @property
    def enabled(self) -> bool:
        return bool(self._chains) or self.peer_client is not None

    def reload(self) -> list[str]:
        """Re-read every certificate and key; return one line per file that
        failed (those contexts keep their previous certificate)."""
        errors = []
        for chain in self._chains:
            try:
                _load_chain(chain.context, chain.cert_file, chain.key_file, chain.where)
            except ConfigError as exc:
                errors.append(str(exc))
        return errors
