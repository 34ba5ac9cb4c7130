"""Node configurations for tests."""

from __future__ import annotations

from typing import Any

__all__ = ["deep_merge", "node_config"]


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged over it, mappings merged key by key."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def node_config(name: str = "node-1", **sections: dict[str, Any]) -> dict[str, Any]:
    """A single-node config listening on 127.0.0.1:0 (the node reports the
    port it got), without seeds and without storage unless ``sections`` (merged
    over it) say otherwise."""
    base: dict[str, Any] = {
        "node": {"name": name, "listen": "127.0.0.1:0"},
        "cluster": {"name": "test"},
        "storage": {"backend": "none"},
        "log": {"level": "info"},
    }
    return deep_merge(base, sections)
