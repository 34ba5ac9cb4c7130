"""The environment-override rule of the config loader: IPUBSUB_<SECTION>_<KEY>
sets section.key over the YAML file, so one ConfigMap serves every replica."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from ipubsub.config import ENV_PREFIX, Config, ConfigError, env_settings, load_config

FILE = """
node: {name: from-file, listen: "127.0.0.1:9000"}
cluster: {name: prod, seeds: ["a:1"], secret: file-secret}
storage: {backend: postgres, postgres: {dsn: "postgresql://file/db", pool_size: 4}}
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "ipubsub.yaml"
    path.write_text(FILE)
    return path


def test_variables_override_the_file_and_leave_the_rest(config_file: Path) -> None:
    env = {
        "IPUBSUB_NODE_NAME": "ipubsub-2",
        "IPUBSUB_NODE_ADVERTISE": "ipubsub-2.ipubsub-peers:8080",
        "IPUBSUB_STORAGE_POSTGRES_DSN": "postgresql://env/db",
        "IPUBSUB_HASH_RING_VIRTUAL_NODES": "64",
    }
    config = load_config(config_file, env)
    assert config.node.name == "ipubsub-2"
    assert config.node.advertise == "ipubsub-2.ipubsub-peers:8080"
    assert config.node.listen == "127.0.0.1:9000"  # from the file
    assert config.storage.postgres.dsn == "postgresql://env/db"
    assert config.storage.postgres.pool_size == 4  # sibling key of the file kept
    assert config.storage.backend == "postgres"
    assert config.hash_ring.virtual_nodes == 64
    assert config.cluster.secret == "file-secret"


def test_without_a_file_the_variables_apply_over_the_defaults() -> None:
    config = load_config(None, {"IPUBSUB_NODE_LISTEN": "0.0.0.0:8080", "IPUBSUB_STORAGE_BACKEND": "none"})
    assert config.node.listen == "0.0.0.0:8080"
    assert config.node.advertise == "0.0.0.0:8080"
    assert config.storage.backend == "none"
    assert config.node.name == Config().node.name


def test_values_are_converted_by_the_type_of_their_key() -> None:
    env = {
        "IPUBSUB_CLUSTER_SEEDS": " ipubsub-0.peers:8080, ipubsub-1.peers:8080 ,,",
        "IPUBSUB_HTTP_DASHBOARD": "false",
        "IPUBSUB_LOG_ACCESS_LOG": "Yes",
        "IPUBSUB_NODE_SHUTDOWN_GRACE_SECONDS": "25.5",
        "IPUBSUB_LIMITS_MAX_STREAM_SIZE": "1000",
        "IPUBSUB_CLUSTER_SECRET": "  keeps spaces and 'quotes' ",
    }
    config = load_config(None, env)
    assert config.cluster.seeds == ["ipubsub-0.peers:8080", "ipubsub-1.peers:8080"]
    assert config.http.dashboard is False
    assert config.log.access_log is True
    assert config.node.shutdown_grace_seconds == 25.5
    assert config.limits.max_stream_size == 1000
    assert config.cluster.secret == "  keeps spaces and 'quotes' "


def test_other_ipubsub_variables_are_not_config() -> None:
    env = {"IPUBSUB_URL": "http://x:1", "IPUBSUB_TEST_CASSANDRA": "1", "IPUBSUB_RUN_DIR": "/tmp", "PATH": "/bin"}
    assert env_settings(env) == {}
    assert load_config(None, env) == Config()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"IPUBSUB_NODE_NAM": "x"}, "IPUBSUB_NODE_NAM: no such setting"),
        ({"IPUBSUB_STORAGE_POSTGRES": "x"}, "IPUBSUB_STORAGE_POSTGRES: no such setting"),
        ({"IPUBSUB_HTTP_DASHBOARD": "maybe"}, "IPUBSUB_HTTP_DASHBOARD: expected true or false, got 'maybe'"),
        ({"IPUBSUB_HASH_RING_VIRTUAL_NODES": "many"}, "IPUBSUB_HASH_RING_VIRTUAL_NODES: expected a number"),
        ({"IPUBSUB_HASH_RING_VIRTUAL_NODES": "0"}, "hash_ring.virtual_nodes: Expected `int` >= 1 (set by "
                                                   "IPUBSUB_HASH_RING_VIRTUAL_NODES)"),
        ({"IPUBSUB_STORAGE_BACKEND": "redis"}, "storage.backend: Invalid enum value 'redis' (set by IPUBSUB_STORAGE_BACKEND)"),
        ({"IPUBSUB_NODE_LISTEN": "nowhere"}, "(set by IPUBSUB_NODE_LISTEN)"),
    ],
)
def test_bad_variables_stop_the_node_with_one_line_naming_them(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_every_setting_has_exactly_one_variable() -> None:
    """The rule is a bijection: the table names every leaf key once (an
    import-time check refuses two keys mapping to one name)."""
    from ipubsub.config import _ENV_TABLE

    leaves: list[str] = []

    def walk(struct: msgspec.inspect.StructType, path: str) -> None:
        for field in struct.fields:
            if isinstance(field.type, msgspec.inspect.StructType):
                walk(field.type, f"{path}{field.name}.")
            else:
                leaves.append(path + field.name)

    root = msgspec.inspect.type_info(Config)
    assert isinstance(root, msgspec.inspect.StructType)
    walk(root, "")
    assert sorted(".".join(keys) for keys, _ in _ENV_TABLE.values()) == sorted(leaves)
    for variable, (keys, _) in _ENV_TABLE.items():
        assert variable == ENV_PREFIX + "_".join(keys).upper()
    assert "IPUBSUB_HTTP_DASHBOARD" in _ENV_TABLE


@pytest.mark.slow
def test_ipubsub_serve_reports_a_bad_variable_in_one_line(tmp_path: Path) -> None:
    """The real command line: the message names the variable, exit code 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "ipubsub", "serve"],
        env={"PATH": "/usr/bin:/bin", "IPUBSUB_NODE_LISTN": "0.0.0.0:1"},
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "IPUBSUB_NODE_LISTN: no such setting" in proc.stderr
    assert "Traceback" not in proc.stderr
