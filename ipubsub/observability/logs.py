"""Logging set-up: plain text or one JSON object per line."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

from ..config import LogConfig

__all__ = ["REQUEST_ID", "setup_logging"]

# The id of the request being served, when it carried or was given one.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class _JsonFormatter(logging.Formatter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self._node = node

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": self._node,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["requestId"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def __init__(self, node: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s [{node}] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = REQUEST_ID.get()
        return f"{text} (request {request_id})" if request_id is not None else text


def setup_logging(config: LogConfig, node: str) -> None:
    """Send log records to stderr in the configured format and level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter(node) if config.format == "json" else _TextFormatter(node))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level.upper())
    # aiohttp logs every client disconnect at debug level; keep info useful.
    logging.getLogger("aiohttp.access").setLevel(logging.INFO)
