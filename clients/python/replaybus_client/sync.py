"""Publishing from code that is not async: the async Publisher on a private event loop thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from replaybus_client.auth import ClientCredentials, TokenSource
from replaybus_client.publisher import Ack, Publisher

__all__ = ["SyncPublisher"]

T = TypeVar("T")


class SyncPublisher:
    """`with SyncPublisher(url, client_id, client_secret) as publisher: publisher.publish(...)`.
    Safe to call from several threads; each call blocks until the event is stored (or fails
    with the same errors as `Publisher`)."""

    def __init__(
        self,
        base_url: str,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        tokens: TokenSource | None = None,
        max_attempts: int = 8,
    ) -> None:
        if tokens is None:
            if client_id is None or client_secret is None:
                raise ValueError("pass client_id and client_secret, or tokens")
            tokens = ClientCredentials(base_url, client_id, client_secret)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="replaybus-publisher", daemon=True
        )
        self._thread.start()
        self._publisher = self._run(self._make(base_url, tokens, max_attempts))

    @staticmethod
    async def _make(base_url: str, tokens: TokenSource, max_attempts: int) -> Publisher:
        return Publisher(base_url, tokens, max_attempts=max_attempts)

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def publish(
        self, channel: str, payload: dict[str, Any], *, idempotency_key: str | None = None
    ) -> Ack:
        return self._run(self._publisher.publish(channel, payload, idempotency_key=idempotency_key))

    def publish_batch(
        self,
        channel: str,
        payloads: Sequence[dict[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> list[Ack]:
        return self._run(
            self._publisher.publish_batch(channel, payloads, idempotency_key=idempotency_key)
        )

    def close(self) -> None:
        if not self._loop.is_running():
            return
        self._run(self._publisher.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
