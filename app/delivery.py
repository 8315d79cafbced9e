"""An event on its way to subscribers, with its wire encodings computed at most once per node."""

from __future__ import annotations

from collections import OrderedDict

from app.bayeux.codec import encode_event
from app.envelope import encode_envelope
from app.model import ChannelKey, Event
from app.sse import event_frame

__all__ = ["CACHED_DELIVERIES", "Delivery", "DeliveryCache"]

#: Most deliveries a node's cache keeps (REPLAYBUS_BAYEUX_CACHE_SIZE bounds their bytes).
CACHED_DELIVERIES = 10_000

#: What a cached Delivery is charged beyond twice its payload (the event and one encoding of
#: it): the objects and the encoding's other fields.
_ENTRY_OVERHEAD = 512


class Delivery:
    """Wraps one Event for every local subscriber of its channel. The envelope JSON and the SSE
    frame are encoded on first use and then shared, so fan-out costs no encoding per subscriber."""

    __slots__ = ("_bayeux", "_envelope", "_sse", "event")

    def __init__(self, event: Event) -> None:
        self.event = event
        self._envelope: bytes | None = None
        self._sse: bytes | None = None
        self._bayeux: dict[bool, bytes] | None = None

    @property
    def replay_id(self) -> int:
        return self.event.replay_id

    @property
    def envelope(self) -> bytes:
        if self._envelope is None:
            self._envelope = encode_envelope(self.event)
        return self._envelope

    def sse_frame(self) -> bytes:
        """`id: <replayId>` and the envelope as `data:`, with no `event:` so `onmessage` fires."""
        if self._sse is None:
            self._sse = event_frame(self.envelope, event_id=str(self.event.replay_id))
        return self._sse

    def bayeux_message(self, *, with_uuid: bool) -> bytes:
        """The Salesforce-shaped Bayeux message (with `EventUuid` for API 52.0 and later)."""
        if self._bayeux is None:
            self._bayeux = {}
        encoded = self._bayeux.get(with_uuid)
        if encoded is None:
            encoded = self._bayeux[with_uuid] = encode_event(self.event, with_uuid=with_uuid)
        return encoded


class DeliveryCache:
    """The most recently used Deliveries, so an event is encoded once per node however it
    reaches subscribers: live through several topics (a channel and the patterns matching it),
    or read from the store by streams catching up and by Bayeux connects. Bounded in entries
    and in bytes (each charged twice its payload, for the event and an encoding, plus a fixed
    overhead); the least recently used go first."""

    __slots__ = ("_bytes", "_entries", "_max_bytes", "_max_entries")

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._entries: OrderedDict[tuple[ChannelKey, int], Delivery] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """Bytes charged for what is cached now."""
        return self._bytes

    def get(self, event: Event) -> Delivery:
        """The cached Delivery of `event`, or a new one (cached if it fits at all)."""
        key = (event.key, event.replay_id)
        delivery = self._entries.get(key)
        if delivery is not None:
            self._entries.move_to_end(key)
            return delivery
        delivery = Delivery(event)
        cost = _cost(event)
        if cost > self._max_bytes or self._max_entries < 1:
            return delivery
        self._entries[key] = delivery
        self._bytes += cost
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= _cost(evicted.event)
        return delivery


def _cost(event: Event) -> int:
    return 2 * event.size + _ENTRY_OVERHEAD
