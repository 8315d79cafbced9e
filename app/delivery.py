"""An event on its way to subscribers, with its wire encodings computed at most once per node."""

from __future__ import annotations

from app.bayeux.codec import encode_event
from app.envelope import encode_envelope
from app.model import Event
from app.sse import event_frame

__all__ = ["Delivery"]


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
