"""Each auth rule of issue 14 against a real node app: API keys, JWTs,
admin-only endpoints, the query token, rates and failed-attempt limits."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient

from ipubsub.auth import key_digest
from ipubsub.auth.jwt_tokens import mint_token
from tests.conftest import MakeClient

pytestmark = pytest.mark.timeout(60)

SEND = "/api/v1/streams/send"
RECEIVE = "/api/v1/streams/receive"
BACKEND_KEY = "ipk_backend_0123456789abcdef"
ADMIN_KEY = "ipk_admin_0123456789abcdef"
READER_KEY = "ipk_reader_0123456789abcdef"
SECRET = "a-jwt-secret-of-at-least-32-bytes!!"


def auth_config(**extra: Any) -> dict[str, Any]:
    auth: dict[str, Any] = {
        "api_keys": [
            {"name": "backend", "key_sha256": key_digest(BACKEND_KEY),
             "allow": {"send": ["user-*", "audit", "t-?-[xy]"], "receive": ["audit"]}},
            {"name": "ops", "key_sha256": key_digest(ADMIN_KEY), "allow": {"send": ["*"], "receive": ["*"], "admin": True}},
            {"name": "reader", "key_sha256": key_digest(READER_KEY), "allow": {"receive": ["user-*"]}},
        ],
        "jwt": {"secret": SECRET, "audience": "ipubsub-test"},
    }
    auth.update(extra)
    return {"auth": auth}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def send(client: TestClient, stream: str, key: str | None, status: int, code: str | None = None) -> None:
    resp = await client.post(SEND, json={"streamId": stream, "message": 1}, headers=bearer(key) if key else None)
    body = await resp.json()
    assert resp.status == status, body
    if code is not None:
        assert body["code"] == code, body


async def receive(client: TestClient, stream: str, status: int, code: str | None = None, *,
                  key: str | None = None, token: str | None = None) -> dict[str, Any]:
    params = {"streamId": stream, "timeoutSeconds": "0"}
    if token is not None:
        params["access_token"] = token
    resp = await client.get(RECEIVE, params=params, headers=bearer(key) if key else None)
    body = await resp.json()
    assert resp.status == status, body
    if code is not None:
        assert body["code"] == code, body
    return body


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient:
    return await make_client(auth_config())


async def test_auth_is_off_by_default(make_client: MakeClient) -> None:
    plain = await make_client()
    await send(plain, "anything", None, 200)
    assert (await plain.get("/api/v1/cluster")).status == 200


async def test_no_key_is_401_and_public_endpoints_stay_open(client: TestClient) -> None:
    resp = await client.post(SEND, json={"streamId": "user-1", "message": 1})
    body = await resp.json()
    assert resp.status == 401 and body["code"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    await receive(client, "user-1", 401, "unauthorized")
    for path in ("/health", "/", "/api/v1/openapi.json"):
        assert (await client.get(path)).status == 200, path
    resp = await client.post(SEND, json={"streamId": "user-1", "message": 1}, headers={"Authorization": "Basic eDp5"})
    assert resp.status == 401


async def test_wrong_key_is_401(client: TestClient) -> None:
    await send(client, "user-1", "ipk_wrong", 401, "invalid_credentials")
    await receive(client, "audit", 401, "invalid_credentials", key="ipk_wrong")


async def test_key_without_the_stream_is_403_and_nothing_happens(client: TestClient) -> None:
    await send(client, "other", BACKEND_KEY, 403, "stream_forbidden")
    await receive(client, "user-1", 403, "stream_forbidden", key=BACKEND_KEY)  # backend may only send there
    await send(client, "audit", READER_KEY, 403, "stream_forbidden")
    assert client.node.engine.stream_count == 0  # type: ignore[attr-defined]
    # refused in the guard (a query stream) and by the handler (body streams): all counted
    assert client.node.refusals["stream_forbidden"] == 3  # type: ignore[attr-defined]


async def test_prefix_glob_and_exact_patterns(client: TestClient) -> None:
    for stream in ("user-1", "user-", "audit", "t-1-x", "t-z-y"):
        await send(client, stream, BACKEND_KEY, 200)
    for stream in ("use", "audit2", "t-12-x", "t-1-z", "xuser-1"):
        await send(client, stream, BACKEND_KEY, 403, "stream_forbidden")
    got = await receive(client, "user-1", 200, key=READER_KEY)
    assert got["message"] == 1


async def test_admin_only_endpoints(client: TestClient) -> None:
    for path in ("/metrics", "/dashboard/", "/dashboard/api/overview"):
        resp = await client.get(path, headers=bearer(BACKEND_KEY))
        assert resp.status == 403 and (await resp.json())["code"] == "admin_required", path
        assert (await client.get(path)).status == 401, path
        assert (await client.get(path, headers=bearer(ADMIN_KEY))).status == 200, path
    # the owner lookup and the member list (clients route by them) need any valid credentials
    assert (await client.get("/api/v1/streams/owner", params={"streamId": "x"})).status == 401
    assert (await client.get("/api/v1/streams/owner", params={"streamId": "x"}, headers=bearer(READER_KEY))).status == 200
    assert (await client.get("/api/v1/cluster")).status == 401
    assert (await client.get("/api/v1/cluster", headers=bearer(READER_KEY))).status == 200


def token(**claims: Any) -> str:
    now = int(time.time())
    base = {"receive": ["user-42"], "exp": now + 60, "iat": now, "aud": "ipubsub-test", "sub": "u42"}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, SECRET, algorithm="HS256")


async def test_jwt_receive_by_header_and_by_query(client: TestClient) -> None:
    await send(client, "user-42", ADMIN_KEY, 200)
    await send(client, "user-42", ADMIN_KEY, 200)
    await receive(client, "user-42", 200, key=token())
    await receive(client, "user-42", 200, token=token())
    await receive(client, "user-43", 403, "stream_forbidden", token=token())
    # the token does not allow sending
    await send(client, "user-42", token(), 403, "stream_forbidden")
    await send(client, "user-42", token(send="user-*"), 200)


async def test_query_token_only_where_allowed(client: TestClient) -> None:
    resp = await client.post(SEND, params={"access_token": token(send="*")}, json={"streamId": "user-42", "message": 1})
    body = await resp.json()
    assert resp.status == 400 and body["field"] == "access_token", body
    # an API key is never accepted from a URL
    await receive(client, "user-1", 401, "invalid_credentials", token=READER_KEY)
    resp = await client.get("/api/v1/cluster", params={"access_token": token()})
    assert resp.status == 400


@pytest.mark.parametrize(
    "bad, code",
    [
        (lambda: token(exp=int(time.time()) - 120), "credentials_expired"),
        (lambda: token(nbf=int(time.time()) + 600), "invalid_credentials"),
        (lambda: token(aud="someone-else"), "invalid_credentials"),
        (lambda: token(aud=None), "invalid_credentials"),
        (lambda: token(exp=None), "invalid_credentials"),
        (lambda: jwt.encode({"receive": ["user-42"], "exp": int(time.time()) + 60, "aud": "ipubsub-test"},
                            SECRET, algorithm="HS512"), "invalid_credentials"),
        (lambda: jwt.encode({"receive": ["user-42"], "exp": int(time.time()) + 60, "aud": "ipubsub-test"},
                            None, algorithm="none"), "invalid_credentials"),
        (lambda: token()[:-3] + "abc", "invalid_credentials"),
        (lambda: token(receive=42), "invalid_credentials"),
        (lambda: "a.b.c", "invalid_credentials"),
    ],
    ids=["expired", "not-yet-valid", "wrong-audience", "no-audience", "no-exp", "wrong-algorithm",
         "alg-none", "bad-signature", "bad-claim", "garbage"],
)
async def test_bad_tokens_are_401(client: TestClient, bad: Any, code: str) -> None:
    await send(client, "user-42", ADMIN_KEY, 200)
    await receive(client, "user-42", 401, code, key=bad())
    await receive(client, "user-42", 401, code, token=bad())


async def test_rs256_token_against_a_secret_is_refused_and_public_key_works(make_client: MakeClient, tmp_path: Any) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "pub.pem").write_bytes(pem)
    client = await make_client({"auth": {"jwt": {"public_key_file": str(tmp_path / "pub.pem")}}})
    good = jwt.encode({"receive": ["s"], "exp": int(time.time()) + 60}, private, algorithm="ES256")
    await receive(client, "s", 424, "receive_timeout", key=good)
    # the public key's PEM as an HMAC secret (key confusion) is refused
    confused = jwt.encode({"receive": ["s"], "exp": int(time.time()) + 60}, "x" * 40, algorithm="HS256")
    await receive(client, "s", 401, "invalid_credentials", key=confused)


async def test_minted_token_works(client: TestClient) -> None:
    minted = mint_token(SECRET, receive=["user-7"], ttl_seconds=60, audience="ipubsub-test")
    await receive(client, "user-7", 424, "receive_timeout", token=minted)


async def test_per_key_rate_limit(make_client: MakeClient) -> None:
    client = await make_client(auth_config(rate={"requests_per_second": 1, "burst": 3}))
    for _ in range(3):
        await send(client, "user-1", BACKEND_KEY, 200)
    resp = await client.post(SEND, json={"streamId": "user-1", "message": 1}, headers=bearer(BACKEND_KEY))
    body = await resp.json()
    assert resp.status == 429 and body["code"] == "rate_limited", body
    assert int(resp.headers["Retry-After"]) >= 1
    # another key has its own bucket
    await send(client, "user-1", ADMIN_KEY, 200)
    assert client.node.refusals["rate_limited"] == 1  # type: ignore[attr-defined]
    metrics = await (await client.get("/metrics", headers=bearer(ADMIN_KEY))).text()
    assert 'ipubsub_refused_total{reason="rate_limited"} 1.0' in metrics
    # the bucket refills at 1/s: the key gets through again
    deadline = time.monotonic() + 5
    while (await client.post(SEND, json={"streamId": "user-1", "message": 1}, headers=bearer(BACKEND_KEY))).status != 200:
        assert time.monotonic() < deadline, "the rate limit did not recover within 5 s"
        await asyncio.sleep(0.1)


async def test_failed_credentials_are_rate_limited(make_client: MakeClient) -> None:
    client = await make_client(auth_config(failed_attempts={"max_failures": 5, "window_seconds": 60, "block_seconds": 60}))
    for i in range(5):
        await send(client, "user-1", f"ipk_guess_{i}", 401, "invalid_credentials")
    # blocked: even the right key is not looked at
    await send(client, "user-1", BACKEND_KEY, 429, "too_many_auth_failures")


async def test_cluster_secret_brute_force_is_rate_limited(make_client: MakeClient) -> None:
    client = await make_client({"cluster": {"secret": "the-cluster-secret"},
                                "auth": {"failed_attempts": {"max_failures": 4, "window_seconds": 60, "block_seconds": 60}}})
    for i in range(4):
        resp = await client.post("/internal/v1/gossip", data=b"{}", headers={"X-IPubSub-Secret": f"guess-{i}"})
        assert resp.status == 401
    resp = await client.post("/internal/v1/gossip", data=b"{}", headers={"X-IPubSub-Secret": "the-cluster-secret"})
    body = await resp.json()
    assert resp.status == 429 and body["code"] == "too_many_auth_failures", body
    # the secret is never taken from a query string
    resp = await client.post("/internal/v1/leave", params={"secret": "the-cluster-secret"}, data=b"{}")
    assert resp.status == 429


async def test_batch_send_checks_every_item(client: TestClient) -> None:
    """sendBatch: each item's stream is checked; a forbidden item fails
    alone with stream_forbidden and creates nothing, the others are sent."""
    batch = {"messages": [{"streamId": "user-1", "message": 1}, {"streamId": "other", "message": 2},
                          {"streamId": "audit", "message": 3}]}
    resp = await client.post("/api/v1/streams/sendBatch", json=batch, headers=bearer(BACKEND_KEY))
    body = await resp.json()
    assert resp.status == 200, body
    results = body["results"]
    assert "messageUuid" in results[0] and "messageUuid" in results[2], results
    assert results[1]["status"] == 403 and results[1]["code"] == "stream_forbidden", results
    assert client.node.engine.stream_count == 2  # type: ignore[attr-defined]
    resp = await client.post("/api/v1/streams/sendBatch", json=batch)
    assert resp.status == 401
    # a token with a send claim pattern, the same way
    resp = await client.post("/api/v1/streams/sendBatch", json=batch, headers=bearer(token(send=["user-*", "audit"])))
    results = (await resp.json())["results"]
    assert [r.get("code") for r in results] == [None, "stream_forbidden", None], results
