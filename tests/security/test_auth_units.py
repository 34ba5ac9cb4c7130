"""Pieces of auth without a server: patterns, the JWKS verifier, token
minting from the CLI, the access log's redaction, start-up warnings."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest

from ipubsub.api.access_log import redact
from ipubsub.auth import StreamPatterns, key_digest
from ipubsub.auth.exposure import exposure_warnings
from ipubsub.auth.jwt_tokens import load_verifier
from ipubsub.auth.rate import FailureLimiter, TokenBucket
from ipubsub.config import Config, ConfigError
from ipubsub.errors import InvalidCredentials
from ipubsub.security_config import JwtConfig


def test_patterns() -> None:
    p = StreamPatterns(["audit", "user-*", "t-?-[xy]", "*-dlq"])
    assert all(s in p for s in ("audit", "user-", "user-42", "t-1-x", "orders-dlq"))
    assert not any(s in p for s in ("audit2", "use", "t-12-x", "T-1-x", "dlq"))
    assert "anything" in StreamPatterns(["*"])
    assert "x" not in StreamPatterns([])


def test_jwks_file_by_kid(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid="k1", alg="RS256", use="sig")
    (tmp_path / "keys.json").write_text(json.dumps({"keys": [jwk]}))
    verifier = load_verifier(JwtConfig(jwks_file=str(tmp_path / "keys.json")))
    assert verifier is not None and verifier.algorithms == ["RS256"]
    claims = {"receive": ["s-*"], "exp": int(time.time()) + 60, "sub": "u1"}
    principal = verifier.verify(jwt.encode(claims, private, algorithm="RS256", headers={"kid": "k1"}))
    assert "s-1" in principal.receive and "s-1" not in principal.send and principal.name == "token u1"
    with pytest.raises(InvalidCredentials, match="kid"):
        verifier.verify(jwt.encode(claims, private, algorithm="RS256", headers={"kid": "other"}))


def test_jwt_config_refuses_mixing_and_short_secrets() -> None:
    for bad in ({"secret": "short"}, {"secret": "x" * 32, "public_key_file": "k.pem"},
                {"secret": "x" * 32, "algorithms": ["RS256"]}, {"algorithms": ["none"]},
                {"public_key_file": "k.pem", "algorithms": ["HS256", "RS256"]}):
        with pytest.raises(ConfigError):
            Config.from_mapping({"auth": {"jwt": bad}})


def test_rate_and_failure_limiter() -> None:
    bucket = TokenBucket(2.0, 2, now=0.0)
    assert bucket.take(0.0) == 0.0 and bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0
    limiter = FailureLimiter(max_failures=3, window=10, block=5)
    for _ in range(3):
        limiter.failed("a", 1.0)
    assert limiter.blocked_for("a", 2.0) == pytest.approx(4.0) and limiter.blocked_for("b", 2.0) == 0.0
    assert limiter.blocked_for("a", 6.1) == 0.0
    assert limiter.tracking(20.0) is False and limiter.active is False  # old entries are dropped


def test_access_log_redacts_tokens() -> None:
    assert redact("/api/v1/streams/receive?streamId=a&access_token=eyJ.x.y&x=1") == \
        "/api/v1/streams/receive?streamId=a&access_token=REDACTED&x=1"
    assert redact("/r?access_token=abc") == "/r?access_token=REDACTED"
    assert redact("/health") == "/health"


def test_exposure_warnings() -> None:
    assert exposure_warnings(Config(), "127.0.0.1") == []
    lines = exposure_warnings(Config(), "0.0.0.0")
    assert any("WITHOUT AUTH" in line for line in lines) and any("cluster.secret" in line for line in lines)
    secured = Config.from_mapping({"auth": {"jwt": {"secret": "x" * 32}}, "cluster": {"secret": "s"}})
    assert not any("WITHOUT AUTH" in line for line in exposure_warnings(secured, "10.0.0.5"))


def test_auth_in_a_cluster_needs_the_secret() -> None:
    with pytest.raises(ConfigError, match="cluster.secret"):
        Config.from_mapping({"cluster": {"seeds": ["10.0.0.2:8080"]}, "auth": {"jwt": {"secret": "x" * 32}}})


@pytest.mark.slow
def test_cli_key_and_token(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "ipubsub", "key", "--name", "backend", "--send", "user-*"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    key = out.split("key: ")[1].split()[0]
    assert f"key_sha256: {key_digest(key)}" in out and "user-*" in out
    secret = "s" * 40
    token = subprocess.run([sys.executable, "-m", "ipubsub", "token", "--stream", "user-42", "--ttl", "2m"],
                           capture_output=True, text=True, timeout=30, check=True,
                           env={"IPUBSUB_AUTH_JWT_SECRET": secret, "PATH": "/usr/bin:/bin"}).stdout.strip()
    claims = jwt.decode(token, secret, algorithms=["HS256"])
    assert claims["receive"] == ["user-42"] and claims["exp"] - claims["iat"] == 120
    missing = subprocess.run([sys.executable, "-m", "ipubsub", "token", "--stream", "x"],
                             capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert missing.returncode == 2 and "auth.jwt.secret" in missing.stderr


def test_a_token_principal_expires_for_later_checks() -> None:
    """authorize() (what handlers call for streams named in bodies and in
    WebSocket frames) refuses a token that expired after its request came
    in; an API key's principal never expires."""
    from ipubsub.api.guard import PRINCIPAL_KEY, authorize
    from ipubsub.auth import Permission, Principal
    from ipubsub.errors import CredentialsExpired

    secret = "s" * 40
    verifier = load_verifier(JwtConfig(secret=secret, leeway_seconds=5))
    assert verifier is not None
    exp = int(time.time()) + 60
    principal = verifier.verify(jwt.encode({"receive": ["a"], "exp": exp}, secret, algorithm="HS256"))
    assert principal.expires == exp + 5
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from ipubsub.api.guard import REFUSALS_KEY
    from ipubsub.auth.refusals import Refusals

    app = web.Application()
    app[REFUSALS_KEY] = refusals = Refusals()
    request = make_mocked_request("GET", "/", app=app)
    request[PRINCIPAL_KEY] = principal
    authorize(request, Permission.RECEIVE, ["a"])
    principal.expires = time.time() - 1
    with pytest.raises(CredentialsExpired):
        authorize(request, Permission.RECEIVE, ["a"])
    assert refusals["credentials_expired"] == 1
    key = Principal("key k", StreamPatterns(["*"]), StreamPatterns(["*"]), False)
    request[PRINCIPAL_KEY] = key
    authorize(request, Permission.SEND, ["x"])
    assert key.expires == float("inf")


def test_clock_skew_leeway_is_configurable() -> None:
    from ipubsub.errors import CredentialsExpired

    secret = "s" * 40
    now = int(time.time())
    late = jwt.encode({"receive": ["a"], "exp": now - 10}, secret, algorithm="HS256")
    early = jwt.encode({"receive": ["a"], "exp": now + 60, "nbf": now + 10}, secret, algorithm="HS256")
    lenient = load_verifier(JwtConfig(secret=secret, leeway_seconds=30))
    strict = load_verifier(JwtConfig(secret=secret, leeway_seconds=0))
    assert lenient is not None and strict is not None
    lenient.verify(late)
    lenient.verify(early)
    with pytest.raises(CredentialsExpired):
        strict.verify(late)
    with pytest.raises(InvalidCredentials):
        strict.verify(early)
