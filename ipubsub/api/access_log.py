"""The access log (``log.access_log: true``): one line per request, with
``access_token`` values replaced by ``REDACTED`` (browser tokens travel in
the query string and must never be written to a log)."""

from __future__ import annotations

import logging
import re

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..protocol import ACCESS_TOKEN_PARAM

__all__ = ["RedactingAccessLogger", "redact"]

_TOKEN = re.compile(rf"((?:^|[?&]){ACCESS_TOKEN_PARAM}=)[^&]*")


def redact(path_qs: str) -> str:
    """``path_qs`` with every ``access_token`` value replaced."""
    return _TOKEN.sub(r"\1REDACTED", path_qs) if ACCESS_TOKEN_PARAM in path_qs else path_qs


class RedactingAccessLogger(AbstractAccessLogger):
    """``REMOTE "METHOD PATH?QUERY HTTP/x.y" STATUS BYTES SECONDS``."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d %.6f',
            request.remote, request.method, redact(request.rel_url.raw_path_qs), request.version.major,
            request.version.minor, response.status, response.body_length, time,
        )
