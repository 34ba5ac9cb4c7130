"""The start-up warning of a node open to its network without auth."""

from __future__ import annotations

import ipaddress
import logging

from ..config import Config

__all__ = ["exposure_warnings"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume reachable


def exposure_warnings(config: Config, host: str) -> list[str]:
    """Lines to log (at WARNING) for a node listening on ``host``: none on a
    loopback address."""
    if _is_loopback(host):
        return []
    lines = []
    if not config.auth.enabled:
        lines.append(
            f"!!! listening on {host} WITHOUT AUTH: anyone who reaches this port may send to and read from "
            "every stream. Configure auth.api_keys and/or auth.jwt (README, Security). !!!"
        )
    if not config.cluster.secret:
        lines.append(f"!!! listening on {host} without cluster.secret: anyone may call the internal endpoints. !!!")
    if not config.http.tls.enabled:
        lines.append(f"listening on {host} without TLS (http.tls): traffic, keys and tokens travel in clear text")
    return lines


def log_exposure(config: Config, host: str, log: logging.Logger) -> None:
    for line in exposure_warnings(config, host):
        log.warning("%s", line)
