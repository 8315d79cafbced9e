"""Readiness that tells the truth: a canary event published through the engine must come back
through this node's live fan-out. A ping says Redis answers; this says the node can publish
and deliver, which is what a load balancer needs to know before sending it subscribers."""

from __future__ import annotations

import asyncio
import time
import uuid

from app.engine import Engine
from app.errors import NotReplicated, ServiceUnavailable
from app.hub import EventsLost, Hub, Mailbox, SubscriberOverflow
from app.model import ChannelKey, EventDraft, Retention, Topic

__all__ = ["CANARY_TENANT", "ReadinessProbe"]

#: A tenant id no one can create (the admin API refuses it): the canary's events live there.
CANARY_TENANT = "_replaybus"
_CHANNEL = "/event/Readiness_Canary__e"
_RETENTION = Retention(max_age_us=60_000_000, max_count=100)
_REUSE_S = 1.0  # probes within this long of the last one share its answer
_MAILBOX_BYTES = 64 * 1024  # canaries are `{}`


class ReadinessProbe:
    def __init__(self, engine: Engine, hub: Hub, timeout: float) -> None:
        self._engine = engine
        self._hub = hub
        self._timeout = timeout
        self._key = ChannelKey(CANARY_TENANT, _CHANNEL)
        self._lock = asyncio.Lock()
        self._checked_at = -_REUSE_S
        self._failure: str | None = None

    async def check(self) -> None:
        """Raise ServiceUnavailable saying why, unless a canary made the round trip. Callers
        arriving together (or within a second) share one canary, so probes cannot load the
        engine."""
        async with self._lock:
            if time.monotonic() - self._checked_at >= _REUSE_S:
                self._failure = await self._round_trip()
                self._checked_at = time.monotonic()
            failure = self._failure
        if failure is not None:
            raise ServiceUnavailable(failure)

    async def _round_trip(self) -> str | None:
        canary = EventDraft(uuid=str(uuid.uuid4()), payload=b"{}", created_by="readiness")
        try:
            async with asyncio.timeout(self._timeout):
                topic = Topic(CANARY_TENANT, _CHANNEL)
                async with self._hub.subscribe(topic, Mailbox(64, _MAILBOX_BYTES)) as mailbox:
                    try:
                        await self._engine.publish(self._key, [canary], _RETENTION)
                    except NotReplicated:
                        pass  # stored and announced: the node serves; only publishes wait
                    except ServiceUnavailable as error:
                        return f"the canary could not be published: {error.message}"
                    while True:
                        deliveries = await mailbox.take(None)
                        if any(d.event.uuid == canary.uuid for d in deliveries):
                            return None
        except TimeoutError:
            return (
                f"a canary event did not come back through the live fan-out within "
                f"{self._timeout:g} s"
            )
        except SubscriberOverflow:
            return "the canary's subscription overflowed"
        except EventsLost:
            return "live events were lost on their way to this node"
        except ServiceUnavailable as error:  # from subscribing: the live feed is down
            return f"the canary could not be received: {error.message}"
