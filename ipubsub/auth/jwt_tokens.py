"""Browser tokens: JWTs naming the streams their bearer may use.

Claims (see docs/security.md):

* ``receive`` / ``send``: stream patterns (a string or a list), as for API
  keys; a token without ``send`` may only receive;
* ``exp`` (required), ``nbf`` and ``iat`` (checked when present, with
  ``auth.jwt.leeway_seconds``), ``aud`` / ``iss`` when configured;
* ``sub``: who the bearer is (per-caller rate, logs).

The accepted algorithms are fixed by the configuration, never taken from
the token (``alg: none`` is never accepted, HMAC and public-key algorithms
are never mixed).  Verified tokens are cached until their ``exp`` so a
browser's every poll does not pay for a signature check.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt

from ..errors import CredentialsExpired, InvalidCredentials
from ..security_config import HMAC_ALGORITHMS, JwtConfig
from .access import Principal
from .patterns import StreamPatterns

__all__ = ["JwtVerifier", "load_verifier", "mint_token"]

# Verified tokens kept (each a few hundred bytes); beyond, the oldest go.
CACHE_SIZE = 10_000
_NO_STREAMS = StreamPatterns(())


class JwtVerifier:
    """Checks tokens against one key (or a key set) and one algorithm list."""

    def __init__(
        self,
        key: Any,
        algorithms: list[str],
        config: JwtConfig,
        keys_by_id: dict[str, Any] | None = None,
    ) -> None:
        self._key = key
        self._keys_by_id = keys_by_id
        self.algorithms = algorithms
        self._audience = config.audience or None
        self._issuer = config.issuer or None
        self._leeway = config.leeway_seconds
        self._max_ttl = config.max_ttl_seconds
        require = ["exp"] + (["aud"] if self._audience else []) + (["iss"] if self._issuer else [])
        if self._max_ttl:
            require.append("iat")
        self._options = {"require": require}
        self._cache: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        """The principal a token stands for.

        Raises:
            CredentialsExpired: past ``exp`` (beyond the leeway).
            InvalidCredentials: anything else wrong (signature, algorithm,
                audience, issuer, not yet valid, malformed, claims).
        """
        cached = self._cache.get(token)
        now = time.time()
        if cached is not None:
            principal, expires = cached
            if now <= expires + self._leeway:
                return principal
            del self._cache[token]
            raise CredentialsExpired("the token has expired")
        try:
            claims = jwt.decode(
                token,
                self._key_for(token),
                algorithms=self.algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options=self._options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError:
            raise CredentialsExpired("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidCredentials("the token is not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidCredentials(f"the token's algorithm is not accepted (accepted: {', '.join(self.algorithms)})") from None
        except jwt.InvalidAudienceError:
            raise InvalidCredentials("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidCredentials("the token is from another issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidCredentials(f"the token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError:
            raise InvalidCredentials("the token is malformed or its signature is wrong") from None
        principal = self._principal(claims)
        principal.expires = float(claims["exp"]) + self._leeway
        if self._max_ttl and claims["exp"] - claims["iat"] > self._max_ttl + self._leeway:
            raise InvalidCredentials(f"the token lives longer than auth.jwt.max_ttl_seconds ({self._max_ttl:g} s)")
        if len(self._cache) >= CACHE_SIZE:
            del self._cache[next(iter(self._cache))]
        self._cache[token] = (principal, float(claims["exp"]))
        return principal

    def _key_for(self, token: str) -> Any:
        if self._keys_by_id is None:
            return self._key
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise InvalidCredentials("the token is malformed") from None
        key = self._keys_by_id.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidCredentials("the token's kid names no key of auth.jwt.jwks_file")
        return key

    @staticmethod
    def _principal(claims: dict[str, Any]) -> Principal:
        def patterns(name: str) -> StreamPatterns:
            value = claims.get(name)
            if value is None:
                return _NO_STREAMS
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise InvalidCredentials(f"the token's {name!r} claim must be a stream pattern or a list of them")
            return StreamPatterns(value)

        sub = claims.get("sub")
        name = f"token {sub}" if isinstance(sub, str) and sub else "token"
        return Principal(name[:200], patterns("send"), patterns("receive"), admin=False)


def load_verifier(config: JwtConfig) -> JwtVerifier | None:
    """The verifier ``auth.jwt`` describes (``None`` when it is off).

    Raises:
        ValueError: a key file cannot be read or holds no usable key.
    """
    if config.secret:
        return JwtVerifier(config.secret, list(config.algorithms) or ["HS256"], config)
    if config.public_key_file:
        key, default = _public_key(config.public_key_file)
        return JwtVerifier(key, list(config.algorithms) or default, config)
    if config.jwks_file:
        text = _read(config.jwks_file, "jwks_file")
        try:
            keyset = jwt.PyJWKSet.from_json(text.decode())
        except (jwt.PyJWTError, ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"jwks_file {config.jwks_file}: {exc}") from None
        by_id = {k.key_id: k for k in keyset.keys if k.key_id}
        if not by_id:
            raise ValueError(f"jwks_file {config.jwks_file}: no key has a kid")
        algorithms = list(config.algorithms) or sorted({k.algorithm_name for k in by_id.values()})
        if any(alg in HMAC_ALGORITHMS for alg in algorithms):
            raise ValueError(f"jwks_file {config.jwks_file}: symmetric (oct) keys are not accepted; use auth.jwt.secret")
        return JwtVerifier(None, algorithms, config, keys_by_id=by_id)
    return None


def _public_key(path: str) -> tuple[Any, list[str]]:
    """The PEM public key at ``path`` and the algorithm it implies."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    pem = _read(path, "public_key_file")
    try:
        key = load_pem_public_key(pem)
    except ValueError as exc:
        raise ValueError(f"public_key_file {path}: not a PEM public key ({exc})") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, ["RS256"]
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key, [{256: "ES256", 384: "ES384", 521: "ES512"}.get(key.curve.key_size, "ES256")]
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key, ["EdDSA"]
    raise ValueError(f"public_key_file {path}: an RSA, EC or Ed25519 public key is needed")


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{key} {path}: {exc.strerror}") from None


def mint_token(
    secret: str,
    *,
    receive: list[str],
    send: list[str] | None = None,
    ttl_seconds: float = 3600.0,
    subject: str | None = None,
    audience: str | None = None,
    issuer: str | None = None,
    algorithm: str = "HS256",
) -> str:
    """An HMAC-signed token for ``auth.jwt.secret`` that lets its bearer
    receive from ``receive`` (and send to ``send``) for ``ttl_seconds``."""
    now = int(time.time())
    claims: dict[str, Any] = {"iat": now, "exp": now + int(ttl_seconds), "receive": list(receive)}
    if send:
        claims["send"] = list(send)
    if subject:
        claims["sub"] = subject
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm=algorithm)
