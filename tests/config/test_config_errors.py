"""Configuration errors, in process: every invalid setting is refused with
one line that names the file and the key (or the variable that set it) and
says what is wrong.  ``ipubsub serve`` prints that line and exits 2
(tests/e2e/test_serve.py runs a few through the real process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipubsub.config import Config, ConfigError, load_config

BAD_YAML: list[tuple[str, str]] = [
    # unknown keys, at any depth
    ("nodes: {}\n", "f.yaml: nodes: unknown key"),
    ("node: {name: a, bogus: 1}\n", "f.yaml: node.bogus: unknown key"),
    ("storage: {postgres: {host: x}}\n", "f.yaml: storage.postgres.host: unknown key"),
    # wrong types and out-of-range values name the key
    ("match: {receive_default_timeout_seconds: abc}\n", "f.yaml: match.receive_default_timeout_seconds: Expected `int`, got `str`"),
    ("node: {shutdown_grace_seconds: 0}\n", "f.yaml: node.shutdown_grace_seconds: Expected `float` > 0.0"),
    ("hash_ring: {virtual_nodes: 0}\n", "f.yaml: hash_ring.virtual_nodes: Expected `int` >= 1"),
    ("storage: {postgres: {pool_size: 0}}\n", "f.yaml: storage.postgres.pool_size: Expected `int` >= 1"),
    ("storage: {sqlite: {table: ''}}\n", "f.yaml: storage.sqlite.table: Expected `str` of length >= 1"),
    ("storage: {backend: oracle}\n", "f.yaml: storage.backend: Invalid enum value 'oracle'"),
    ("log: {level: loud}\n", "f.yaml: log.level: Invalid enum value 'loud'"),
    ("http: {dashboard: maybe}\n", "f.yaml: http.dashboard: Expected `bool`, got `str`"),
    ("cluster: {seeds: '127.0.0.1:1'}\n", "f.yaml: cluster.seeds: Expected `array`, got `str`"),
    # rules between keys name both
    ("cluster: {heartbeat_interval_seconds: 2, suspect_after_seconds: 1, dead_after_seconds: 3}\n",
     "f.yaml: cluster: suspect_after_seconds must exceed heartbeat_interval_seconds"),
    ("cluster: {suspect_after_seconds: 5, dead_after_seconds: 4}\n",
     "f.yaml: cluster: dead_after_seconds must be >= suspect_after_seconds"),
    ("match: {receive_default_timeout_seconds: 500}\n",
     "f.yaml: match: receive_default_timeout_seconds must be <= receive_max_timeout_seconds"),
    ("limits: {max_message_bytes: 2048, max_stream_bytes: 1024}\n",
     "f.yaml: limits: max_stream_bytes must be >= max_message_bytes"),
    ("limits: {max_stream_bytes: 2000000000, max_buffered_bytes: 1000000000}\n",
     "f.yaml: limits: max_buffered_bytes must be >= max_stream_bytes"),
    # addresses
    ("node: {listen: nohostport}\n", "f.yaml: node.listen: expected HOST:PORT, got 'nohostport'"),
    ("node: {listen: '127.0.0.1:70000'}\n", "f.yaml: node.listen: port must be 0..65535, got 70000"),
    ("node: {advertise: '127.0.0.1:0'}\n", "f.yaml: node.advertise: port must be 1..65535, got 0"),
    ("cluster: {seeds: ['127.0.0.1:1', nohost]}\n", "f.yaml: cluster: expected HOST:PORT, got 'nohost'"),
    # not a configuration at all
    ("- just\n- a list\n", "f.yaml: the top level must be a mapping of sections"),
    ("node: [\n", "f.yaml: not valid YAML: "),
]


@pytest.mark.parametrize(("text", "says"), BAD_YAML, ids=[t.split(":")[0].strip("- \n") or "?" for t, _ in BAD_YAML])
def test_a_bad_file_is_one_line_naming_file_and_key(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as from_file:
        load_config(path, {})
    message = str(from_file.value)
    assert "\n" not in message
    assert message.startswith(str(path) + ": ")
    assert message.removeprefix(str(tmp_path) + "/").startswith(says), message
    # the same text given directly reads the same (the source named once)
    with pytest.raises(ConfigError) as from_text:
        Config.from_yaml(text, "f.yaml")
    assert str(from_text.value).startswith(says), str(from_text.value)


def test_a_port_0_listener_is_valid_and_advertises_what_it_gets() -> None:
    config = Config.from_yaml("node: {listen: '127.0.0.1:0'}\n")
    assert config.node.listen == config.node.advertise == "127.0.0.1:0"


def test_an_empty_file_is_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path, {}) == load_config(None, {}) == Config()


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^cannot read config file .*nope\.yaml: No such file or directory$"):
        load_config(tmp_path / "nope.yaml", {})


@pytest.mark.parametrize(("environ", "says"), [
    ({"IPUBSUB_NODE_NAMEX": "a"}, "IPUBSUB_NODE_NAMEX: no such setting (environment overrides are "
                                  "IPUBSUB_<SECTION>_<KEY>, e.g. IPUBSUB_NODE_NAME for node.name)"),
    ({"IPUBSUB_HTTP_DASHBOARD": "maybe"}, "IPUBSUB_HTTP_DASHBOARD: expected true or false, got 'maybe'"),
    ({"IPUBSUB_NODE_SHUTDOWN_GRACE_SECONDS": "soon"}, "IPUBSUB_NODE_SHUTDOWN_GRACE_SECONDS: expected a number, got 'soon'"),
    ({"IPUBSUB_NODE_SHUTDOWN_GRACE_SECONDS": "-1"},
     "config: node.shutdown_grace_seconds: Expected `float` > 0.0 (set by IPUBSUB_NODE_SHUTDOWN_GRACE_SECONDS)"),
    ({"IPUBSUB_CLUSTER_SUSPECT_AFTER_SECONDS": "9"},
     "config: cluster: dead_after_seconds must be >= suspect_after_seconds (set by IPUBSUB_CLUSTER_SUSPECT_AFTER_SECONDS)"),
])
def test_a_bad_environment_variable_is_named(environ: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ)
    assert str(caught.value) == says


def test_a_variable_over_a_file_value_names_both(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("limits: {max_message_bytes: 1000}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {"IPUBSUB_LIMITS_MAX_STREAM_BYTES": "10"})
    assert str(caught.value) == (
        f"{path}: limits: max_stream_bytes must be >= max_message_bytes (set by IPUBSUB_LIMITS_MAX_STREAM_BYTES)"
    )
    # and a variable that fixes the file wins over it
    assert load_config(path, {"IPUBSUB_LIMITS_MAX_MESSAGE_BYTES": "64"}).limits.max_message_bytes == 64
