"""``ipubsub token`` mints a browser token; ``ipubsub key`` makes an API
key and the configuration entry that admits it."""

from __future__ import annotations

import argparse
import re
import secrets
import sys

from ..config import ConfigError, load_config

__all__ = ["add_token_commands", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h``, ``7d`` in seconds.

    Raises:
        argparse.ArgumentTypeError: anything else, or not positive.
    """
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration like 90s, 15m, 1h or 7d, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def add_token_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = commands.add_parser(
        "token",
        help="mint a browser token (JWT) for auth.jwt.secret",
        description="Print a JWT signed with auth.jwt.secret (from --config and IPUBSUB_AUTH_JWT_SECRET) that "
        "lets its bearer receive from the given streams until it expires.",
        epilog="example: ipubsub token --stream user-42 --ttl 1h --config node.yaml",
    )
    token.add_argument("--stream", action="append", required=True, metavar="PATTERN",
                       help="a stream (or pattern: user-*) the bearer may receive from; repeatable")
    token.add_argument("--send", action="append", default=[], metavar="PATTERN",
                       help="a stream (or pattern) the bearer may also send to; repeatable")
    token.add_argument("--ttl", type=parse_duration, default=3600.0, metavar="DURATION",
                       help="lifetime: 90s, 15m, 1h, 7d (default 1h)")
    token.add_argument("--subject", metavar="SUB", help="who the bearer is (the sub claim)")
    token.add_argument("--config", metavar="FILE", help="the node's YAML configuration (for auth.jwt)")
    token.set_defaults(func=_token)
    key = commands.add_parser(
        "key",
        help="make an API key and its auth.api_keys entry",
        description="Print a new random API key (give it to the backend) and the YAML entry holding only "
        "its SHA-256 (put it in auth.api_keys on every node).",
    )
    key.add_argument("--name", required=True, help="the key's name (in logs and errors)")
    key.add_argument("--send", action="append", default=[], metavar="PATTERN")
    key.add_argument("--receive", action="append", default=[], metavar="PATTERN")
    key.add_argument("--admin", action="store_true", help="may use /metrics and the dashboard")
    key.set_defaults(func=_key)


def _token(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"ipubsub: config error: {exc}", file=sys.stderr)
        return 2
    jwt_config = config.auth.jwt
    if not jwt_config.secret:
        print("ipubsub: auth.jwt.secret is not set (in --config or IPUBSUB_AUTH_JWT_SECRET); tokens for a public "
              "key are minted by whoever holds the private key", file=sys.stderr)
        return 2
    from ..auth.jwt_tokens import mint_token

    algorithm = jwt_config.algorithms[0] if jwt_config.algorithms else "HS256"
    print(mint_token(jwt_config.secret, receive=args.stream, send=args.send or None, ttl_seconds=args.ttl,
                     subject=args.subject, audience=jwt_config.audience or None, issuer=jwt_config.issuer or None,
                     algorithm=algorithm))
    return 0


def _key(args: argparse.Namespace) -> int:
    from ..auth.authenticator import key_digest

    key = "ipk_" + secrets.token_urlsafe(32)
    print(f"key: {key}")
    print("# add to auth.api_keys on every node:")
    print(f"- name: {args.name}")
    print(f"  key_sha256: {key_digest(key)}")
    print("  allow:")
    print(f"    send: {args.send!r}".replace("'", '"'))
    print(f"    receive: {args.receive!r}".replace("'", '"'))
    print(f"    admin: {'true' if args.admin else 'false'}")
    return 0
