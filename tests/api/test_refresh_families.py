"""What single-use credentials leave in the shared engine: one entry per refresh-token family,
however often it is refreshed (not one per use), and a tenant's unexpired JWT-bearer assertions
up to REPLAYBUS_TOKEN_ASSERTIONS_PER_TENANT, beyond which that tenant gets 429 (other tenants
are unaffected: `tests/contract/test_claims.py`)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.api._support import running_node
from tests.harness.redis import RunningRedis

CLIENT, SECRET = "family-client", "family-secret-0123456789"
USER, PASSWORD = "family@example.test", "family password"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
REFRESHES = 30


@pytest.fixture
async def redis(redis_server: RunningRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def _keys(redis: aioredis.Redis, pattern: str) -> set[bytes]:
    return {key async for key in redis.scan_iter(match=pattern, count=1000)}


def _form(**fields: str) -> dict[str, str]:
    return {"client_id": CLIENT, "client_secret": SECRET, **fields}


async def _grant(http: httpx.AsyncClient, form: dict[str, str]) -> httpx.Response:
    return await http.post("/services/oauth2/token", data=form)


async def test_refreshing_keeps_one_entry_per_family_not_one_per_use(
    redis_server: RunningRedis, redis: aioredis.Redis
) -> None:
    user = f"{uuid.uuid4().hex[:8]}-{USER}"
    async with running_node(
        redis_url=redis_server.url,
        bootstrap_client_id=CLIENT,
        bootstrap_client_secret=SECRET,
        bootstrap_username=user,
        bootstrap_password=PASSWORD,
    ) as node:
        before = await _keys(redis, "rb:claim*")
        granted = await _grant(
            node.http, _form(grant_type="password", username=user, password=PASSWORD)
        )
        token = granted.json()["refresh_token"]
        statuses = []
        for _ in range(REFRESHES):
            refreshed = await _grant(
                node.http, _form(grant_type="refresh_token", refresh_token=token)
            )
            statuses.append(refreshed.status_code)
            token = refreshed.json().get("refresh_token", token)
        replayed = await _grant(node.http, _form(grant_type="refresh_token", refresh_token=token))
        again = await _grant(node.http, _form(grant_type="refresh_token", refresh_token=token))
        added = await _keys(redis, "rb:claim*") - before

    assert granted.status_code == 200, granted.text
    assert statuses == [200] * REFRESHES
    assert replayed.status_code == 200  # the latest token still works once...
    assert again.status_code == 400  # ...and only once
    assert len(added) == 1, added


def _assertion(key: ec.EllipticCurvePrivateKey, user: str) -> str:
    now = int(time.time())
    claims = {
        "iss": CLIENT,
        "sub": user,
        "aud": "https://events.example.test",
        "exp": now + 180,
        "jti": uuid.uuid4().hex,
    }
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return jwt.encode({"alg": "ES256"}, claims, ECKey.import_key(pem), algorithms=["ES256"])


async def test_a_tenant_at_its_assertion_limit_gets_429_with_retry_after(
    redis_server: RunningRedis,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    user = f"{uuid.uuid4().hex[:8]}-{USER}"
    tenant = f"t{uuid.uuid4().hex[:12]}"
    async with running_node(
        redis_url=redis_server.url,
        public_url="https://events.example.test",
        token_assertions_per_tenant=2,
        bootstrap_tenant=tenant,
        bootstrap_client_id=CLIENT,
        bootstrap_client_secret=SECRET,
        bootstrap_client_jwt_key=public.decode(),
        bootstrap_username=user,
        bootstrap_password=PASSWORD,
    ) as node:
        answers = [
            await _grant(node.http, {"grant_type": JWT_BEARER, "assertion": _assertion(key, user)})
            for _ in range(3)
        ]

    assert [a.status_code for a in answers] == [200, 200, 429], answers[-1].text
    refused = answers[-1]
    assert refused.json()["error"] == "rate_limited"
    assert "REPLAYBUS_TOKEN_ASSERTIONS_PER_TENANT" in refused.json()["error_description"]
    assert int(refused.headers["Retry-After"]) >= 1
