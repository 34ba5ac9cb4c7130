"""Typed, frozen configuration loaded from YAML and environment variables.

Every section is a frozen ``msgspec.Struct`` that rejects unknown keys, so a
misspelt key stops the node at start-up instead of being silently ignored.
Values carry their unit in their name (``*_seconds``, ``*_bytes``).  The
sections are defined in :mod:`ipubsub.config_sections` and re-exported here
(import them from this module); this module holds the whole :class:`Config`,
loading, environment overrides and error messages.

Environment overrides: ``IPUBSUB_<SECTION>_<KEY>`` sets ``section.key`` (the
dotted path upper-cased, dots as underscores: ``IPUBSUB_NODE_NAME``,
``IPUBSUB_STORAGE_POSTGRES_DSN``, ``IPUBSUB_HASH_RING_VIRTUAL_NODES``) and wins
over the file.  Lists are comma-separated (``IPUBSUB_CLUSTER_SEEDS=a:1,b:2``).
A variable that starts like a section but names no key is an error; other
``IPUBSUB_*`` variables (``IPUBSUB_URL`` of the client) are not config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec

from .config_sections import (
    CassandraConfig,
    ClusterConfig,
    HashRingConfig,
    HttpConfig,
    LeasesConfig,
    LimitsConfig,
    LogConfig,
    MatchConfig,
    MongodbConfig,
    MysqlConfig,
    NodeConfig,
    PostgresConfig,
    SqliteConfig,
    StorageBackend,
    StorageConfig,
    StreamConfig,
    _Section,
    parse_address,
)
from .security_config import AuthConfig

__all__ = [
    "ENV_PREFIX",
    "CassandraConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "HashRingConfig",
    "HttpConfig",
    "LeasesConfig",
    "LimitsConfig",
    "LogConfig",
    "MatchConfig",
    "MongodbConfig",
    "MysqlConfig",
    "NodeConfig",
    "PostgresConfig",
    "SqliteConfig",
    "StorageBackend",
    "StorageConfig",
    "StreamConfig",
    "env_settings",
    "load_config",
    "parse_address",
]


class ConfigError(Exception):
    """The configuration is invalid; the message is one line naming the key."""


class Config(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole node configuration. ``Config()`` is a working single node."""

    node: NodeConfig = msgspec.field(default_factory=NodeConfig)
    cluster: ClusterConfig = msgspec.field(default_factory=ClusterConfig)
    hash_ring: HashRingConfig = msgspec.field(default_factory=HashRingConfig)
    match: MatchConfig = msgspec.field(default_factory=MatchConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    leases: LeasesConfig = msgspec.field(default_factory=LeasesConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    stream: StreamConfig = msgspec.field(default_factory=StreamConfig)

    def __post_init__(self) -> None:
        others = [seed for seed in self.cluster.seeds if seed != self.node.advertise]
        if self.auth.enabled and others and not self.cluster.secret:
            raise ValueError(
                "auth needs cluster.secret in a cluster: owners serve calls forwarded by peers that prove it"
            )

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Config:
        """Build and validate a config from plain data (as parsed from YAML).

        Raises:
            ConfigError: an unknown key, a wrong type or an impossible value.
        """
        try:
            return msgspec.convert(data, type=cls)
        except msgspec.ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    @classmethod
    def from_yaml(cls, text: str | bytes, source: str = "config") -> Config:
        """Parse YAML text into a validated config.

        Raises:
            ConfigError: the text is not YAML, or any value is invalid.
        """
        data = _parse_yaml(text, source)  # its errors name the source already
        try:
            return cls.from_mapping(data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def _parse_yaml(text: str | bytes, source: str) -> dict[str, Any]:
    try:
        data = msgspec.yaml.decode(text)
    except msgspec.DecodeError as exc:
        detail = " ".join(re.sub(r'in "<(byte|unicode) string>", ', "", str(exc)).split())
        raise ConfigError(f"{source}: not valid YAML: {detail}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    return data


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Load the YAML file at ``path`` (the built-in defaults when ``None``)
    with the ``IPUBSUB_<SECTION>_<KEY>`` variables of ``environ`` (default:
    the process environment) applied over it.

    Raises:
        ConfigError: the file cannot be read, or a value (from the file or a
            variable, which the message then names) is invalid.
    """
    data: dict[str, Any] = {}
    source = "config"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        data = _parse_yaml(text, source)
    settings = env_settings(os.environ if environ is None else environ)
    for keys, value in settings.values():
        section = data
        for depth, key in enumerate(keys[:-1]):
            inner = section.get(key)
            if inner is not None and not isinstance(inner, dict):
                raise ConfigError(f"{source}: {'.'.join(keys[:depth + 1])}: expected a mapping of settings")
            section[key] = inner = dict(inner or {})
            section = inner
        section[keys[-1]] = value
    try:
        return Config.from_mapping(data)
    except ConfigError as exc:
        where = str(exc).split(":", 1)[0]
        named = [v for v, (keys, _) in settings.items() if f"{'.'.join(keys)}.".startswith(f"{where}.")]
        origin = f" (set by {', '.join(named)})" if named else ""
        raise ConfigError(f"{source}: {exc}{origin}") from None


# -- environment overrides ---------------------------------------------------------

ENV_PREFIX = "IPUBSUB_"
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _leaves(struct: msgspec.inspect.StructType, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    for field in struct.fields:
        keys = (*path, field.name)
        if isinstance(field.type, msgspec.inspect.StructType):
            yield from _leaves(field.type, keys)
        else:
            yield keys, field.type


def _env_table() -> dict[str, tuple[tuple[str, ...], Any]]:
    """Variable name -> (key path, msgspec type info) of every setting."""
    root = msgspec.inspect.type_info(Config)
    assert isinstance(root, msgspec.inspect.StructType)
    table: dict[str, tuple[tuple[str, ...], Any]] = {}
    for keys, kind in _leaves(root, ()):
        variable = ENV_PREFIX + "_".join(keys).upper()
        if variable in table:  # e.g. a section `a_b` beside a section `a` with a key `b_…`
            raise AssertionError(f"{variable} would name both {table[variable][0]} and {keys}")
        table[variable] = (keys, kind)
    return table


_ENV_TABLE = _env_table()
_ENV_SECTIONS = tuple(ENV_PREFIX + f.name.upper() + "_" for f in msgspec.structs.fields(Config))


def env_settings(environ: Mapping[str, str]) -> dict[str, tuple[tuple[str, ...], Any]]:
    """The settings given by ``IPUBSUB_<SECTION>_<KEY>`` variables, as
    ``{variable: (key path, value)}``; values are converted by the key's type
    (booleans: true/false/1/0/yes/no/on/off; lists: comma-separated).

    Raises:
        ConfigError: a variable starts with a section's prefix but names no
            setting, or its value does not fit the setting's type.
    """
    out: dict[str, tuple[tuple[str, ...], Any]] = {}
    for variable in sorted(environ):
        if not variable.startswith(_ENV_SECTIONS):
            continue
        entry = _ENV_TABLE.get(variable)
        if entry is None:
            raise ConfigError(
                f"{variable}: no such setting (environment overrides are {ENV_PREFIX}<SECTION>_<KEY>, "
                f"e.g. {ENV_PREFIX}NODE_NAME for node.name)"
            )
        keys, kind = entry
        out[variable] = (keys, _env_value(variable, environ[variable], kind))
    return out


def _env_value(variable: str, raw: str, kind: Any) -> Any:
    text = raw.strip()
    if isinstance(kind, msgspec.inspect.ListType):
        return [item.strip() for item in text.split(",") if item.strip()]
    if isinstance(kind, msgspec.inspect.BoolType):
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ConfigError(f"{variable}: expected true or false, got {raw!r}")
    if isinstance(kind, (msgspec.inspect.IntType, msgspec.inspect.FloatType)):
        number = int if isinstance(kind, msgspec.inspect.IntType) else float
        try:
            return number(text)
        except ValueError:
            raise ConfigError(f"{variable}: expected a number, got {raw!r}") from None
    return raw


_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>[^`]*)`(?: - at `\$\.?(?P<path>[^`]*)`)?")
_AT = re.compile(r"^(?P<msg>.*?) - at `\$\.?(?P<path>[^`]*)`$")
_KEYED = re.compile(r"^(?P<key>[a-z_]+): (?P<msg>.*)$", re.S)


def _describe(exc: msgspec.ValidationError) -> str:
    """Rewrite msgspec's message as ``key.path: what is wrong``."""
    text = str(exc)
    unknown = _UNKNOWN.fullmatch(text)
    if unknown:
        path = unknown.group("path") or ""
        key = f"{path}.{unknown.group('key')}" if path else unknown.group("key")
        return f"{_dotted(key)}: unknown key"
    located = _AT.match(text)
    if located:
        path, msg = located.group("path"), located.group("msg")
        key = _KEYED.match(msg)  # a section's own check naming its key: "listen: expected HOST:PORT ..."
        if key:
            path, msg = f"{path}.{key.group('key')}" if path else key.group("key"), key.group("msg")
        return f"{_dotted(path)}: {msg}"
    return text


def _dotted(path: str) -> str:
    return re.sub(r"\[(\d+)\]", r".\1", path) or "(top level)"
