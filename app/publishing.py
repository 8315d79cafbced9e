"""Publishing: validate, encode each payload once, store through the engine."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from app.access import Principal
from app.channels import publishable_name
from app.engine import Engine
from app.errors import BatchTooLarge, EventTooLarge, InvalidBody, InvalidParameter
from app.model import ChannelKey, EventDraft, Published, Retention
from app.settings import Settings

__all__ = ["MAX_IDEMPOTENCY_KEY_LENGTH", "Prepared", "PublishService"]

MAX_IDEMPOTENCY_KEY_LENGTH = 200
_IDEMPOTENCY_KEY = re.compile(rf"[\x21-\x7e]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}")


@dataclass(frozen=True, slots=True)
class Prepared:
    """Validated, encoded events of one channel, not yet stored."""

    key: ChannelKey
    drafts: tuple[EventDraft, ...]


class PublishService:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        new_uuid: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._engine = engine
        self._max_event_size = settings.max_event_size
        self._max_batch = settings.max_batch_events
        self._retention = Retention(
            max_age_us=int(settings.retention_max_age * 1_000_000),
            max_count=settings.retention_max_count,
        )
        self._new_uuid = new_uuid

    async def publish(
        self,
        principal: Principal,
        channel: str,
        payloads: Sequence[object],
        idempotency_key: str | None = None,
    ) -> list[Published]:
        """Store `payloads` (decoded JSON objects) on `channel` atomically, in order.

        With an `idempotency_key`, a retried request returns the original acknowledgements and
        stores nothing new; a batch's events are keyed `<key> <index>`.
        """
        principal.require("publish")
        name = publishable_name(channel)
        if not payloads:
            raise InvalidBody("a batch must hold at least one event")
        if len(payloads) > self._max_batch:
            raise BatchTooLarge(
                f"a batch holds at most {self._max_batch} events, got {len(payloads)}"
            )
        if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
            raise InvalidParameter(
                f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters"
            )
        drafts = [
            self._draft(principal, payload, index, idempotency_key, batch=len(payloads) > 1)
            for index, payload in enumerate(payloads)
        ]
        return await self.store(Prepared(ChannelKey(principal.tenant, name), tuple(drafts)))

    def prepare(self, principal: Principal, channel: str, payload: object) -> Prepared:
        """Validate and encode one event without storing it (for all-or-nothing requests)."""
        principal.require("publish")
        name = publishable_name(channel)
        draft = self._draft(principal, payload, 0, None, batch=False)
        return Prepared(ChannelKey(principal.tenant, name), (draft,))

    async def store(self, prepared: Prepared) -> list[Published]:
        """Store prepared events of one channel as one atomic engine publish."""
        return await self._engine.publish(prepared.key, prepared.drafts, self._retention)

    def _draft(
        self,
        principal: Principal,
        payload: object,
        index: int,
        idempotency_key: str | None,
        *,
        batch: bool,
    ) -> EventDraft:
        where = f"event {index}: " if batch else ""
        if not isinstance(payload, dict):
            raise InvalidBody(f"{where}an event payload must be a JSON object")
        encoded = orjson.dumps(payload)
        if len(encoded) > self._max_event_size:
            raise EventTooLarge(
                f"{where}the event is {len(encoded)} bytes encoded; the limit is "
                f"{self._max_event_size} bytes"
            )
        key = None
        if idempotency_key is not None:
            # A space cannot occur in a key, so "<key> <index>" never collides with a real key.
            key = f"{idempotency_key} {index}" if batch else idempotency_key
        return EventDraft(
            uuid=self._new_uuid(),
            payload=encoded,
            created_by=principal.subject,
            idempotency_key=key,
        )
