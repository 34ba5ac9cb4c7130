"""CORS for browser clients (``http.cors.allowed_origins``).

* Every answer to a request from an allowed ``Origin`` carries
  ``Access-Control-Allow-Origin`` (the origin itself, or ``*`` when any
  origin is allowed), ``Vary: Origin`` and the headers a page may read.
* A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) on a
  known path is answered 204 without credentials, as browsers send none.
* ``Access-Control-Allow-Credentials`` is never sent: credentials are
  bearer tokens in ``Authorization`` or ``access_token``, not cookies, so a
  page cannot make the browser attach them on its own.
* Requests from other origins get no CORS headers (the browser then hides
  the answer); a preflight from one is a 403.
"""

from __future__ import annotations

from aiohttp import web

from ..errors import Forbidden
from ..protocol import AUTHORIZATION_HEADER, REQUEST_ID_HEADER, RETRY_AFTER_HEADER, WWW_AUTHENTICATE_HEADER
from ..security_config import CorsConfig

__all__ = ["Cors"]

ALLOWED_HEADERS = ", ".join((AUTHORIZATION_HEADER, "Content-Type", REQUEST_ID_HEADER, "Last-Event-ID"))
EXPOSED_HEADERS = ", ".join((REQUEST_ID_HEADER, RETRY_AFTER_HEADER, WWW_AUTHENTICATE_HEADER))


class Cors:
    def __init__(self, config: CorsConfig) -> None:
        self._any = "*" in config.origins
        self._origins = frozenset(config.origins)
        self._max_age = str(config.max_age_seconds)

    def allows(self, origin: str) -> bool:
        return self._any or origin in self._origins

    async def on_response_prepare(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        """aiohttp signal: the CORS headers of an actual (not preflight) answer."""
        origin = request.headers.get("Origin")
        if origin is None or not self.allows(origin):
            return
        headers = response.headers
        if "Access-Control-Allow-Origin" in headers:  # a preflight answer
            return
        headers["Access-Control-Allow-Origin"] = "*" if self._any else origin
        headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        if not self._any:
            headers.add("Vary", "Origin")

    def preflight(self, request: web.Request, allowed_methods: list[str]) -> web.Response:
        """The answer to a preflight on a path that takes ``allowed_methods``.

        Raises:
            Forbidden: the origin is not allowed.
        """
        origin = request.headers.get("Origin", "")
        if not self.allows(origin):
            raise Forbidden(f"origin {origin[:200]!r} is not in http.cors.allowed_origins")
        headers = {
            "Access-Control-Allow-Origin": "*" if self._any else origin,
            "Access-Control-Allow-Methods": ", ".join(sorted(set(allowed_methods) | {"OPTIONS"})),
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": self._max_age,
        }
        if not self._any:
            headers["Vary"] = "Origin"
        return web.Response(status=204, headers=headers)
