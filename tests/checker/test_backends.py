"""Each backend's generated ``storage`` section sends the node to its own
database proxy, and is a valid ipubsub config."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipubsub.checker.backends import BACKENDS, Backend
from ipubsub.checker.proxy import TcpProxy
from ipubsub.config import Config


@pytest.mark.parametrize("name", BACKENDS)
def test_storage_config_goes_through_the_proxy(name: str, tmp_path: Path) -> None:
    backend = Backend.parse(name)
    proxy = TcpProxy("db", backend.target, listen_port=40001) if backend.target else None
    section = backend.storage_config("n1", proxy, tmp_path)
    config = Config.from_mapping({"storage": section})  # raises on a bad section
    assert config.storage.backend == name
    text = repr(section)
    if name in ("postgres", "mysql", "mongodb"):
        assert "127.0.0.1:40001" in text and ":5432" not in text and ":3306" not in text and ":27017" not in text
    elif name == "cassandra":
        assert config.storage.cassandra.port == 40001
    elif name == "sqlite":
        assert config.storage.sqlite.path == str(tmp_path / "n1.db")


def test_credentials_and_database_survive_the_rewrite() -> None:
    backend = Backend.parse("postgres", "postgresql://app:secret@db.example:6543/events?sslmode=disable")
    assert backend.target == ("db.example", 6543)
    dsn = backend.storage_config("n1", TcpProxy("db", backend.target, listen_port=40002), Path("."))["postgres"]["dsn"]
    assert dsn == "postgresql://app:secret@127.0.0.1:40002/events?sslmode=disable"


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        Backend.parse("redis")


def test_without_a_proxy_the_node_goes_straight_to_the_database(tmp_path: Path) -> None:
    section = Backend.parse("postgres").storage_config("n1", None, tmp_path)
    assert section["postgres"]["dsn"] == "postgresql://postgres@127.0.0.1:5432/test"
