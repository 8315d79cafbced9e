"""Publishing with retries that never store an event twice: every event gets an idempotency
key before its first attempt, and every retry repeats it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from replaybus_client.auth import TokenSource
from replaybus_client.errors import RequestFailed
from replaybus_client.retry import backoff, retry_after

__all__ = ["Ack", "Publisher"]

_RETRIED_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Ack:
    """The server's acknowledgement: the event is stored under `replay_id`. `duplicate`: an
    earlier attempt had already stored it."""

    channel: str
    replay_id: int
    uuid: str
    created_date: str
    duplicate: bool


def _ack(body: dict[str, Any]) -> Ack:
    return Ack(
        channel=str(body["channel"]),
        replay_id=int(body["replayId"]),
        uuid=str(body["uuid"]),
        created_date=str(body["createdDate"]),
        duplicate=bool(body.get("duplicate", False)),
    )


def _channel_path(channel: str) -> str:
    if not channel.startswith("/"):
        raise ValueError(f"channel {channel!r} must start with '/', like /event/Order_Placed__e")
    return "/v1/events" + channel


class Publisher:
    """`async with Publisher(url, ClientCredentials(url, id, secret)) as publisher:`

    Retries 429 and 5xx answers and lost connections with exponential backoff and jitter,
    waiting at least what `Retry-After` asks; refreshes the token once on a 401. Other refusals
    (a schema violation, a missing scope, ...) raise RequestFailed at once.
    """

    def __init__(
        self,
        base_url: str,
        tokens: TokenSource,
        *,
        max_attempts: int = 8,
        timeout: float = 30.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._tokens = tokens
        self._max_attempts = max_attempts
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def publish(
        self, channel: str, payload: dict[str, Any], *, idempotency_key: str | None = None
    ) -> Ack:
        """Store one event; its key is generated unless given (pass your own to make retries
        across restarts of your program safe too)."""
        body = await self._post(_channel_path(channel), payload, idempotency_key)
        return _ack(body)

    async def publish_batch(
        self,
        channel: str,
        payloads: Sequence[dict[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> list[Ack]:
        """Store events atomically and in order (all or none)."""
        body = await self._post(_channel_path(channel), list(payloads), idempotency_key)
        return [_ack(item) for item in body]

    async def _post(self, path: str, content: Any, idempotency_key: str | None) -> Any:
        key = idempotency_key or uuid.uuid4().hex
        refreshed = False
        last_failure = "no attempt made"
        for attempt in range(1, self._max_attempts + 1):
            try:
                token = await self._tokens.token(self._http)
                headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
                response = await self._http.post(
                    self._base_url + path, json=content, headers=headers
                )
            except RequestFailed as error:  # from the token endpoint
                if error.status not in _RETRIED_STATUSES:
                    raise
                last_failure = f"token endpoint: HTTP {error.status}"
                await asyncio.sleep(backoff(attempt))
                continue
            except httpx.TransportError as error:
                last_failure = f"{type(error).__name__}: {error}"
                await asyncio.sleep(backoff(attempt))
                continue
            if response.status_code == 201:
                return response.json()
            if response.status_code == 401 and not refreshed:
                refreshed = True
                self._tokens.invalidate()
                continue
            if response.status_code not in _RETRIED_STATUSES:
                raise RequestFailed.of(response)
            last_failure = f"HTTP {response.status_code}"
            wait = backoff(attempt)
            asked = retry_after(response.headers.get("retry-after"))
            await asyncio.sleep(max(wait, asked or 0.0))
        raise RequestFailed(
            0,
            "retries_exhausted",
            f"gave up after {self._max_attempts} attempts",
            {"lastFailure": last_failure},
        )
