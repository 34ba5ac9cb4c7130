"""The durable backend of a checked cluster: its nodes' ``storage`` config,
rewritten so that each node reaches the database through its own proxy."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .proxy import TcpProxy

__all__ = ["BACKENDS", "Backend"]

BACKENDS = ("none", "sqlite", "postgres", "mysql", "cassandra", "mongodb")

_DEFAULT_URLS = {
    "postgres": "postgresql://postgres@127.0.0.1:5432/test",
    "mysql": "mysql://root@127.0.0.1:3306/test",
    "cassandra": "127.0.0.1:9042",
    "mongodb": "mongodb://127.0.0.1:27017",
}

#: the checker's own table/collection, so its rows never mix with an application's
TABLE = "ipubsub_check"


@dataclass(frozen=True)
class Backend:
    """``name`` is a ``storage.backend`` value; ``url`` the real server's
    DSN, URL or ``host:port`` (for cassandra); ``target`` where a node's
    database proxy forwards (``None``: no network path to break)."""

    name: str
    url: str = ""

    @classmethod
    def parse(cls, name: str, url: str | None = None) -> Backend:
        """Raises: ValueError: unknown backend."""
        if name not in BACKENDS:
            raise ValueError(f"unknown backend {name!r} (one of {', '.join(BACKENDS)})")
        return cls(name, url or _DEFAULT_URLS.get(name, ""))

    @property
    def durable(self) -> bool:
        return self.name != "none"

    @property
    def target(self) -> tuple[str, int] | None:
        if self.name in ("none", "sqlite"):
            return None
        if self.name == "cassandra":
            host, port = self.url.rsplit(":", 1)
            return host, int(port)
        parts = urlsplit(self.url)
        default_port = {"postgres": 5432, "mysql": 3306, "mongodb": 27017}[self.name]
        return parts.hostname or "127.0.0.1", parts.port or default_port

    def storage_config(self, node: str, proxy: TcpProxy | None, workdir: Path) -> dict[str, Any]:
        """The ``storage`` section of node ``node``'s config (through
        ``proxy`` when given, else straight to the database)."""
        config: dict[str, Any] = {"backend": self.name}
        if self.name == "sqlite":
            config["sqlite"] = {"path": str(workdir / f"{node}.db"), "table": TABLE}
        elif self.name in ("postgres", "mysql"):
            config[self.name] = {"dsn": _via(self.url, proxy.port) if proxy else self.url, "table": TABLE}
        elif self.name == "mongodb":
            url = _via(self.url, proxy.port) if proxy else self.url
            url += ("&" if "?" in url else "?") + "directConnection=true"
            config["mongodb"] = {"url": url, "collection": TABLE}
        elif self.name == "cassandra":
            host, port = self.target or ("127.0.0.1", 9042)
            config["cassandra"] = {"hosts": ["127.0.0.1" if proxy else host], "port": proxy.port if proxy else port,
                                   "table": TABLE.replace("ipubsub_", "")}
        return config

    async def reachable(self, timeout: float = 3.0) -> str | None:
        """``None`` if the database accepts a TCP connection, else why not."""
        if self.target is None:
            return None
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(*self.target), timeout)
        except (TimeoutError, OSError) as exc:
            return f"{self.name} at {self.target[0]}:{self.target[1]} is not reachable ({exc or 'timeout'})"
        writer.close()
        return None


def _via(url: str, port: int) -> str:
    """``url`` with its host and port replaced by ``127.0.0.1:port``."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
