"""Python client for replaybus: publish with retries and idempotency keys, subscribe over SSE or
Bayeux and resume from the last processed ReplayId after any interruption."""

from replaybus_client.auth import ClientCredentials, StaticToken, TokenSource
from replaybus_client.checkpoints import CheckpointStore, FileCheckpoints, MemoryCheckpoints
from replaybus_client.errors import Gap, GapError, ReplaybusClientError, RequestFailed
from replaybus_client.publisher import Ack, Publisher
from replaybus_client.subscriber import ALL_RETAINED, NEW_ONLY, Event, Subscriber
from replaybus_client.sync import SyncPublisher

__all__ = [
    "ALL_RETAINED",
    "NEW_ONLY",
    "Ack",
    "CheckpointStore",
    "ClientCredentials",
    "Event",
    "FileCheckpoints",
    "Gap",
    "GapError",
    "MemoryCheckpoints",
    "Publisher",
    "ReplaybusClientError",
    "RequestFailed",
    "StaticToken",
    "Subscriber",
    "SyncPublisher",
    "TokenSource",
]
