"""From credentials to a :class:`~ipubsub.auth.access.Principal`: API keys
(looked up by their SHA-256, so the configuration never holds a key and the
lookup leaks nothing useful about it), then JWTs; per-caller request rates
and the per-address limit on failed attempts."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import InvalidCredentials, RateLimited, TooManyAuthFailures, Unauthorized
from ..security_config import AuthConfig
from .access import Principal
from .patterns import StreamPatterns
from .rate import FailureLimiter, TokenBucket

if TYPE_CHECKING:
    from .jwt_tokens import JwtVerifier

__all__ = ["Authenticator", "key_digest"]

# Token subjects with a rate bucket at once; beyond, the oldest go.
MAX_SUBJECT_BUCKETS = 65536


def key_digest(key: str) -> str:
    """What ``auth.api_keys[].key_sha256`` holds for ``key``."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


class Authenticator:
    """Checks credentials for the request guard.

    Raises from :meth:`authenticate` and :meth:`check_rate` are the
    domain errors the API maps to 401 / 429.
    """

    def __init__(self, config: AuthConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        now = clock()
        default = config.rate
        self._keys: dict[str, Principal] = {}
        for key in config.api_keys:
            rate = key.requests_per_second or default.requests_per_second
            burst = key.burst or (default.burst if not key.requests_per_second else 0)
            self._keys[key.key_sha256] = Principal(
                f"key {key.name}",
                StreamPatterns(key.allow.send),
                StreamPatterns(key.allow.receive),
                key.allow.admin,
                TokenBucket(rate, burst, now) if rate else None,
            )
        self.jwt: JwtVerifier | None = None
        if config.jwt.enabled:  # PyJWT (and cryptography) only imported when tokens are configured
            from .jwt_tokens import load_verifier

            self.jwt = load_verifier(config.jwt)
        self._subject_rate = default.requests_per_second
        self._subject_burst = default.burst
        self._subject_buckets: dict[str, TokenBucket] = {}
        # keys seen valid, by the text presented: at most one entry per
        # configured key, so repeated calls skip the SHA-256 (a wrong key is
        # never cached)
        self._known: dict[str, Principal] = {}
        limits = config.failed_attempts
        self.failures = FailureLimiter(limits.max_failures, limits.window_seconds, limits.block_seconds)

    def authenticate(
        self, credentials: str | None, remote_of: Callable[[], str], *, token_only: bool = False
    ) -> Principal:
        """The caller behind ``credentials`` (the bearer value of
        ``Authorization`` or, with ``token_only`` (API keys never travel in
        URLs), the ``access_token`` parameter); ``remote_of()`` gives the
        caller's address, asked only when failures must be counted.

        Raises:
            TooManyAuthFailures: the caller's address failed too often lately.
            Unauthorized: no credentials.
            InvalidCredentials, CredentialsExpired: wrong ones.
        """
        if not self.failures.active and credentials is not None and not token_only:
            principal = self._known.get(credentials)
            if principal is not None:
                return principal
        now = self._clock()
        remote = remote_of() if self.failures.tracking(now) else ""
        blocked = self.failures.blocked_for(remote, now) if remote else 0.0
        if blocked:
            raise TooManyAuthFailures(
                "too many failed credentials from this address; retry later", retry_after=max(1, round(blocked))
            )
        if not credentials:
            raise Unauthorized("credentials required: Authorization: Bearer <API key or token>")
        if not token_only:
            principal = self._keys.get(key_digest(credentials))
            if principal is not None:
                self._known[credentials] = principal
                return principal
        try:
            if self.jwt is None or credentials.count(".") != 2:
                raise InvalidCredentials("not a token" if token_only else "unknown API key")
            return self.jwt.verify(credentials)
        except Unauthorized:
            self.failures.failed(remote or remote_of(), now)
            raise

    @property
    def rates(self) -> bool:
        """Whether any caller has a request rate (else :meth:`check_rate` is a no-op)."""
        return bool(self._subject_rate) or any(p.bucket is not None for p in self._keys.values())

    def check_rate(self, principal: Principal) -> None:
        """Take one request from the caller's bucket.

        Raises:
            RateLimited: over the rate; ``retry_after`` says when to come back.
        """
        bucket = principal.bucket
        if bucket is None:
            if not self._subject_rate or principal.name.startswith("key "):
                return
            bucket = self._subject_buckets.get(principal.name)
            if bucket is None:
                if len(self._subject_buckets) >= MAX_SUBJECT_BUCKETS:
                    del self._subject_buckets[next(iter(self._subject_buckets))]
                bucket = self._subject_buckets[principal.name] = TokenBucket(
                    self._subject_rate, self._subject_burst, self._clock()
                )
        wait = bucket.take(self._clock())
        if wait:
            raise RateLimited(
                f"{principal.name} is over its request rate ({bucket.rate:g}/s)", retry_after=max(1, round(wait + 0.5))
            )
