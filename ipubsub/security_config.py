"""Configuration sections of who may do what and how the node protects
itself: ``auth`` (API keys, browser JWTs, request rates), ``http.cors``,
``http.tls`` and ``cluster.tls``.

Kept apart from :mod:`ipubsub.config` (which embeds these sections) so that
the security settings read as one piece.  Every value is validated at load
time; a missing key or certificate file stops the node with one line.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

__all__ = [
    "ApiKeyAllow",
    "ApiKeyConfig",
    "AuthConfig",
    "ClusterTlsConfig",
    "CorsConfig",
    "HttpTlsConfig",
    "JwtConfig",
    "RateConfig",
]

NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class ApiKeyAllow(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What one key may do.  Patterns are stream ids: exact (``audit``), a
    prefix (``user-*``) or a glob (``tenant-?-*``, ``[ab]-*``); ``*`` is
    every stream."""

    send: list[str] = msgspec.field(default_factory=list)
    receive: list[str] = msgspec.field(default_factory=list)
    admin: bool = False


class ApiKeyConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One backend's key.  Only its SHA-256 (lower-case hex) is configured,
    never the key: ``printf %s "$KEY" | sha256sum``."""

    name: NonEmptyStr
    key_sha256: str
    allow: ApiKeyAllow = msgspec.field(default_factory=ApiKeyAllow)
    # this key's own request rate (0: auth.rate's)
    requests_per_second: NonNegativeFloat = 0.0
    burst: Annotated[int, msgspec.Meta(ge=0)] = 0

    def __post_init__(self) -> None:
        digest = self.key_sha256.strip().lower()
        if not _SHA256_HEX.fullmatch(digest):
            raise ValueError(f"key_sha256 of key {self.name!r} must be 64 hex digits (the SHA-256 of the key)")
        msgspec.structs.force_setattr(self, "key_sha256", digest)


class JwtConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Browser tokens.  Exactly one way to check signatures: ``secret``
    (HMAC), ``public_key_file`` (one PEM public key) or ``jwks_file`` (a
    JSON Web Key Set; each key's ``kid``).  ``algorithms`` defaults to HS256
    for a secret and to the key's own algorithm otherwise; HMAC and public
    key algorithms are never mixed."""

    secret: str = ""
    public_key_file: str = ""
    jwks_file: str = ""
    algorithms: list[str] = msgspec.field(default_factory=list)
    audience: str = ""
    issuer: str = ""
    leeway_seconds: NonNegativeFloat = 30.0
    # longest lifetime accepted (exp - iat), 0: any
    max_ttl_seconds: NonNegativeFloat = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.secret or self.public_key_file or self.jwks_file)

    def __post_init__(self) -> None:
        given = [k for k in ("secret", "public_key_file", "jwks_file") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"set only one of secret, public_key_file, jwks_file (got {', '.join(given)})")
        if self.secret and len(self.secret.encode()) < 32:
            raise ValueError("secret must be at least 32 bytes (HS256 keys shorter than the hash are guessable)")
        for alg in self.algorithms:
            if alg not in HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS:
                raise ValueError(f"algorithms: unsupported algorithm {alg!r} (none is never accepted)")
        families = {alg in HMAC_ALGORITHMS for alg in self.algorithms}
        if len(families) > 1:
            raise ValueError("algorithms: do not mix HMAC (HS*) and public-key algorithms")
        if self.algorithms and self.secret and families != {True}:
            raise ValueError("algorithms: a secret verifies HS256/HS384/HS512 only")
        if self.algorithms and (self.public_key_file or self.jwks_file) and families != {False}:
            raise ValueError("algorithms: a public key verifies RS*/PS*/ES*/EdDSA only")


class RateConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Per-caller request rate (a token bucket per API key or token
    subject).  0 requests per second: no limit."""

    requests_per_second: NonNegativeFloat = 0.0
    burst: Annotated[int, msgspec.Meta(ge=0)] = 0


class FailedAuthConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Failed credentials (a wrong API key, a bad token, a wrong cluster
    secret) per remote address: after ``max_failures`` within
    ``window_seconds`` the address is answered 429 for ``block_seconds``
    without looking at what it sends."""

    max_failures: PositiveInt = 20
    window_seconds: PositiveFloat = 10.0
    block_seconds: PositiveFloat = 10.0


class AuthConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Who may do what.  Off (everyone may do everything) unless at least
    one API key or a JWT verifier is configured."""

    api_keys: list[ApiKeyConfig] = msgspec.field(default_factory=list)
    jwt: JwtConfig = msgspec.field(default_factory=JwtConfig)
    rate: RateConfig = msgspec.field(default_factory=RateConfig)
    failed_attempts: FailedAuthConfig = msgspec.field(default_factory=FailedAuthConfig)

    @property
    def enabled(self) -> bool:
        return bool(self.api_keys) or self.jwt.enabled

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for key in self.api_keys:
            if key.name in seen:
                raise ValueError(f"api_keys: two keys are named {key.name!r}")
            seen.add(key.name)
        digests = [key.key_sha256 for key in self.api_keys]
        if len(set(digests)) != len(digests):
            raise ValueError("api_keys: two keys have the same key_sha256")


class CorsConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Browsers on these origins may call the API (``*``: any origin).
    Empty: no CORS headers at all (browsers then refuse cross-origin
    calls).  Credentials are tokens in ``Authorization`` or
    ``access_token``, never cookies, so ``Allow-Credentials`` is never sent."""

    allowed_origins: list[str] | str = msgspec.field(default_factory=list)
    max_age_seconds: Annotated[int, msgspec.Meta(ge=0)] = 600

    def __post_init__(self) -> None:
        value = self.allowed_origins
        origins = [o.strip() for o in value.split(",")] if isinstance(value, str) else [o.strip() for o in value]
        origins = [o.rstrip("/") for o in origins if o]
        for origin in origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"allowed_origins: {origin!r} is not an origin (scheme://host[:port]) or *")
        msgspec.structs.force_setattr(self, "allowed_origins", origins)

    @property
    def origins(self) -> list[str]:
        assert isinstance(self.allowed_origins, list)
        return self.allowed_origins


class HttpTlsConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """TLS on the public listener (API, dashboard, gossip).  Both files or
    neither; re-read on SIGHUP."""

    cert_file: str = ""
    key_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together")


class ClusterTlsConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """TLS between nodes: peers' certificates are verified against
    ``ca_file``.  ``cert_file``/``key_file`` are this node's certificate on
    the peer link and its client certificate (default: ``http.tls``'s);
    with ``require_client_cert`` a node only talks to peers presenting a
    certificate signed by ``ca_file`` (mutual TLS)."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    require_client_cert: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.ca_file)

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together")
        if self.require_client_cert and not self.ca_file:
            raise ValueError("require_client_cert needs ca_file")
