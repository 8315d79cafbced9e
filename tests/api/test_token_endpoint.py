"""The token endpoint's cost is bounded: scrypt runs are counted at `app.credentials._derive`
(the one place a secret is hashed), never timed.

Unknown clients and users are refused without a hash; a proven secret is not hashed again
within the cache TTL (and is after it, and after a rotation); at most
REPLAYBUS_TOKEN_HASH_CONCURRENCY hashes run at once, and one more is answered 503 at once;
requests per client address and secret checks per client id are limited (429 + Retry-After);
the HTTPS check looks at the connection, never at the Host header."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

import app.credentials
from tests.api._support import Node, running_node
from tests.fakes import FakeClock
from tests.harness.redis import RunningRedis

REMOTE = "203.0.113.7"
SECRET_CACHE_TTL = 60.0


class Scrypt:
    """Counts secret hashes; with `hold`, each waits in its thread until `release` is set."""

    def __init__(self, real: Callable[..., bytes]) -> None:
        self.real = real
        self.calls = 0
        self.hold = False
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def __call__(self, *args: Any) -> bytes:
        self.calls += 1
        self.entered.release()
        if self.hold:
            self.release.wait(timeout=30)
        return self.real(*args)


@pytest.fixture
def scrypt(monkeypatch: pytest.MonkeyPatch) -> Iterator[Scrypt]:
    counting = Scrypt(app.credentials._derive)
    monkeypatch.setattr(app.credentials, "_derive", counting)
    yield counting
    counting.release.set()


def token_node(
    clock: FakeClock | None = None, **overrides: Any
) -> AbstractAsyncContextManager[Node]:
    """A node on a test clock whose proven secrets are remembered SECRET_CACHE_TTL."""
    return running_node(clock or FakeClock(), token_secret_cache_ttl=SECRET_CACHE_TTL, **overrides)


def _form(client_id: str, secret: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}


async def _client(node: Node, client_id: str) -> str:
    await node.create_tenant("acme")
    issued = await node.create_client("acme", ["publish"], client_id=client_id)
    return str(issued["clientSecret"])


def _metric(node: Node, name: str, **labels: str) -> float:
    value = node.app.state.services.metrics.registry.get_sample_value(name, labels)
    return float(value or 0)


async def test_unknown_clients_are_refused_without_running_scrypt(scrypt: Scrypt) -> None:
    async with token_node() as node:
        secret = await _client(node, "svc")
        assert (await node.token_response("svc", secret)).status_code == 200  # one real hash
        before = scrypt.calls

        answers = await asyncio.gather(
            *(node.token_response(f"nobody-{n}", "guess") for n in range(50))
        )

        assert [a.status_code for a in answers] == [400] * 50
        assert {a.json()["error"] for a in answers} == {"invalid_client"}
        assert scrypt.calls == before
        assert _metric(node, "replaybus_credential_checks_total", result="unknown") == 50


async def test_unknown_users_are_refused_without_running_scrypt(scrypt: Scrypt) -> None:
    async with token_node() as node:
        secret = await _client(node, "svc")
        assert (await node.token_response("svc", secret)).status_code == 200
        before = scrypt.calls

        answers = [
            await node.http.post(
                "/services/oauth2/token",
                data={
                    **_form("svc", secret),
                    "grant_type": "password",
                    "username": f"ghost-{n}@example.test",
                    "password": "guess",
                },
            )
            for n in range(5)
        ]

        assert [a.status_code for a in answers] == [400] * 5
        assert scrypt.calls == before  # the client's secret came from the cache


async def test_a_proven_secret_is_not_hashed_again_until_the_ttl_or_a_rotation(
    scrypt: Scrypt,
) -> None:
    clock = FakeClock()
    async with token_node(clock) as node:
        secret = await _client(node, "svc")
        start = scrypt.calls

        granted = [await node.token_response("svc", secret) for _ in range(3)]
        after_three = scrypt.calls - start
        clock.advance(SECRET_CACHE_TTL + 1)
        expired = await node.token_response("svc", secret)
        after_ttl = scrypt.calls - start
        rotated = await node.admin("POST", "/tenants/acme/clients/svc/rotate")
        new_secret = rotated.json()["clientSecret"]
        before_rotation_checks = scrypt.calls
        old_after_rotation = await node.token_response("svc", secret)
        new_twice = [await node.token_response("svc", new_secret) for _ in range(2)]

    assert [g.status_code for g in granted] == [200] * 3
    assert after_three == 1
    assert expired.status_code == 200
    assert after_ttl == 2
    assert old_after_rotation.status_code == 400
    assert old_after_rotation.json()["error"] == "invalid_client"
    assert [g.status_code for g in new_twice] == [200, 200]
    # The old secret is checked against the new hash (1), the new secret once (1).
    assert scrypt.calls - before_rotation_checks == 2


async def test_a_revoked_client_stays_refused_with_a_proven_secret(scrypt: Scrypt) -> None:
    async with token_node() as node:
        secret = await _client(node, "svc")
        assert (await node.token_response("svc", secret)).status_code == 200

        revoked = await node.admin("POST", "/tenants/acme/clients/svc/revoke")
        refused = [await node.token_response("svc", secret) for _ in range(2)]

    assert revoked.status_code == 200
    assert [r.status_code for r in refused] == [400, 400]
    assert {r.json()["error"] for r in refused} == {"invalid_client"}


async def test_hash_checks_beyond_the_limit_are_answered_503_at_once(scrypt: Scrypt) -> None:
    async with token_node(token_hash_concurrency=1) as node:
        first = await _client(node, "first")
        issued = await node.create_client("acme", ["publish"], client_id="second")
        second = issued["clientSecret"]
        scrypt.entered = threading.Semaphore(0)  # count only from here: creating hashed too
        before = scrypt.calls
        scrypt.hold = True
        held = asyncio.create_task(node.token_response("first", first))
        await asyncio.to_thread(scrypt.entered.acquire)  # its hash is running

        async with asyncio.timeout(10):  # never queued: answered while the first still hashes
            busy = await node.token_response("second", second)
        calls_while_busy = scrypt.calls - before
        scrypt.hold = False
        scrypt.release.set()
        granted = await held
        later = await node.token_response("second", second)

    assert busy.status_code == 503, busy.text
    assert busy.json()["error"] == "temporarily_unavailable"
    assert int(busy.headers["Retry-After"]) >= 1
    assert calls_while_busy == 1  # the refused request never hashed
    assert granted.status_code == 200
    assert later.status_code == 200
    assert _metric(node, "replaybus_token_requests_refused_total", reason="busy") == 1


async def test_by_default_each_worker_process_hashes_its_share_of_the_cores(
    scrypt: Scrypt, monkeypatch: pytest.MonkeyPatch, redis_server: RunningRedis
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    # Two workers (which need Redis): this process may run 4 // 2 = 2 hashes at once.
    async with token_node(
        workers=2,
        redis_url=redis_server.url,
        bootstrap_client_id="boot",
        bootstrap_client_secret="boot-secret",
    ) as node:
        scrypt.entered = threading.Semaphore(0)  # count only from here: bootstrap hashed too
        scrypt.hold = True
        held = [asyncio.create_task(node.token_response("boot", f"guess-{n}")) for n in range(2)]
        for _ in held:
            await asyncio.to_thread(scrypt.entered.acquire)  # both hashes are running

        async with asyncio.timeout(10):  # answered while the two still hash
            busy = await node.token_response("boot", "guess-3")
        scrypt.hold = False
        scrypt.release.set()
        refused = await asyncio.gather(*held)

    assert busy.status_code == 503, busy.text
    assert busy.json()["error"] == "temporarily_unavailable"
    assert [r.status_code for r in refused] == [400, 400]


async def test_many_workers_of_one_client_starting_at_once_cost_one_hash(scrypt: Scrypt) -> None:
    async with token_node(token_hash_concurrency=1, token_burst_per_client=1) as node:
        secret = await _client(node, "svc")
        before = scrypt.calls

        answers = await asyncio.gather(*(node.token_response("svc", secret) for _ in range(11)))

    assert [a.status_code for a in answers] == [200] * 11
    assert scrypt.calls - before == 1


async def test_requests_per_address_are_limited_with_429_and_retry_after() -> None:
    async with (
        token_node(token_burst_per_address=3, token_rate_per_address=1) as node,
        node.caller("198.51.100.1") as caller,
        node.caller("198.51.100.2") as other,
    ):
        answers = [
            await caller.post("/services/oauth2/token", data=_form(f"x{n}", "y")) for n in range(3)
        ]
        limited = await caller.post("/services/oauth2/token", data=_form("x9", "y"))
        revoke = await caller.post("/services/oauth2/revoke", data={"token": "t"})
        elsewhere = await other.post("/services/oauth2/token", data=_form("x9", "y"))

    assert [a.status_code for a in answers] == [400] * 3
    for refused in (limited, revoke):
        assert refused.status_code == 429, refused.text
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["error"] == "rate_limited"
        assert "this address" in refused.json()["error_description"]
    assert elsewhere.status_code == 400


async def test_ipv6_clients_are_limited_per_64_block() -> None:
    async with (
        token_node(token_burst_per_address=1, token_rate_per_address=1) as node,
        node.caller("2001:db8::1") as one,
        node.caller("2001:db8::2") as neighbour,
    ):
        first = await one.post("/services/oauth2/token", data=_form("x", "y"))
        same_block = await neighbour.post("/services/oauth2/token", data=_form("x", "y"))

    assert first.status_code == 400
    assert same_block.status_code == 429


async def test_secret_checks_per_client_are_limited_but_a_proven_secret_still_works(
    scrypt: Scrypt,
) -> None:
    async with token_node(token_burst_per_client=3, token_rate_per_client=1) as node:
        secret = await _client(node, "svc")
        assert (await node.token_response("svc", secret)).status_code == 200
        wrong = [await node.token_response("svc", f"guess-{n}") for n in range(2)]
        hashes = scrypt.calls

        limited = await node.token_response("svc", "guess-3")
        proven = await node.token_response("svc", secret)

    assert [w.status_code for w in wrong] == [400, 400]
    assert limited.status_code == 429, limited.text
    assert limited.json()["error"] == "rate_limited"
    assert limited.headers["Retry-After"] == "1"
    assert scrypt.calls == hashes  # refused before hashing
    assert proven.status_code == 200


async def test_plain_http_from_afar_is_refused_whatever_the_host_header() -> None:
    async with token_node() as node:
        secret = await _client(node, "svc")
        async with node.caller(REMOTE) as remote:
            refused = await remote.post(
                "/services/oauth2/token", data=_form("svc", secret), headers={"host": "localhost"}
            )
        loopback_any_host = await node.http.post(
            "/services/oauth2/token", data=_form("svc", secret), headers={"host": "example.com"}
        )

    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "insecure_transport"
    assert loopback_any_host.status_code == 200, loopback_any_host.text


async def test_a_forged_loopback_address_from_afar_is_still_plain_http() -> None:
    # Every peer trusted as a proxy (the chart's former default): the forged entry is the
    # client's own, and the TCP peer is not on loopback anyway.
    async with token_node(forwarded_allow_ips="*") as node:
        secret = await _client(node, "svc")
        async with node.caller(REMOTE) as remote:
            forged = await remote.post(
                "/services/oauth2/token",
                data=_form("svc", secret),
                headers={"X-Forwarded-For": "127.0.0.1"},
            )

    assert forged.status_code == 400, forged.text
    assert forged.json()["error"] == "insecure_transport"


@pytest.mark.parametrize(
    ("trusted", "forwarded_for", "status"),
    [
        ("127.0.0.1", "127.0.0.1", 200),  # a trusted proxy on this host, for a local client
        ("127.0.0.1", f"127.0.0.1, {REMOTE}", 400),  # ... for a client from afar
        ("10.0.0.1", "127.0.0.1", 400),  # an untrusted one: it relays callers from anywhere
    ],
)
async def test_a_proxy_on_this_host_is_loopback_only_when_trusted_and_relaying_a_local_client(
    trusted: str, forwarded_for: str, status: int
) -> None:
    async with token_node(forwarded_allow_ips=trusted) as node:
        secret = await _client(node, "svc")
        relayed = await node.http.post(
            "/services/oauth2/token",
            data=_form("svc", secret),
            headers={"X-Forwarded-For": forwarded_for, "X-Forwarded-Proto": "http"},
        )

    assert relayed.status_code == status, relayed.text


async def test_rotating_the_leftmost_forwarded_address_does_not_escape_the_address_limit() -> None:
    async with (
        token_node(
            forwarded_allow_ips="*", token_burst_per_address=2, token_rate_per_address=1
        ) as node,
        node.caller("10.0.0.5") as proxy,
    ):
        answers = [
            await proxy.post(
                "/services/oauth2/token",
                data=_form("x", "y"),
                headers={"X-Forwarded-For": f"192.0.2.{n}, {REMOTE}"},
            )
            for n in range(5)
        ]
        # Naming another caller's address on the left does not spend that caller's bucket.
        other = await proxy.post(
            "/services/oauth2/token",
            data=_form("x", "y"),
            headers={"X-Forwarded-For": f"{REMOTE}, 198.51.100.9"},
        )

    assert [a.status_code for a in answers] == [400, 400, 429, 429, 429]
    assert other.status_code == 400, other.text


async def test_an_https_public_url_says_clients_arrive_over_tls() -> None:
    async with token_node(public_url="https://events.example.com") as node:
        secret = await _client(node, "svc")
        async with node.caller(REMOTE) as remote:
            granted = await remote.post("/services/oauth2/token", data=_form("svc", secret))

    assert granted.status_code == 200, granted.text
    assert granted.json()["instance_url"] == "https://events.example.com"


async def test_overlong_client_ids_are_refused_without_a_lookup(scrypt: Scrypt) -> None:
    async with token_node() as node:
        before = scrypt.calls
        refused = await node.token_response("x" * 10_000, "guess")

    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_client"
    assert scrypt.calls == before
