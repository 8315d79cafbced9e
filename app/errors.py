"""Typed domain errors. Each protocol boundary maps them to its wire form in exactly one table."""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "BadRequest",
    "BatchTooLarge",
    "CatalogUnavailable",
    "ChannelNotPublishable",
    "ClientGone",
    "Conflict",
    "Draining",
    "EngineUnavailable",
    "EventTooLarge",
    "IncompatibleSchema",
    "InsufficientScope",
    "InvalidBody",
    "InvalidChannel",
    "InvalidParameter",
    "InvalidReplayId",
    "MalformedBayeux",
    "MalformedJson",
    "NotFound",
    "NotReplicated",
    "Overloaded",
    "PermissionDenied",
    "QuotaExceeded",
    "RateLimited",
    "ReplaybusError",
    "RequestTimeout",
    "RequestTooLarge",
    "SchemaViolation",
    "ServiceUnavailable",
    "TenantRecentlyDeleted",
    "TenantSuspended",
    "TokenExpired",
    "TokenInvalid",
    "TokenMissing",
    "TooLarge",
    "TooManyChannels",
    "TooManySubscribers",
    "UnknownChannel",
    "UnusableSchema",
    "ValidationTooCostly",
]


class ReplaybusError(Exception):
    """Base of every error a client can cause or see. `message` is safe to show to the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def details(self) -> dict[str, object]:
        """More fields for the error body (lists of violations or problems)."""
        return {}


class BadRequest(ReplaybusError):
    """The request cannot be understood as sent."""


class MalformedJson(BadRequest):
    pass


class InvalidBody(BadRequest):
    """Well-formed JSON of the wrong shape."""


class InvalidParameter(BadRequest):
    pass


class MalformedBayeux(BadRequest):
    """A Bayeux body that is not one message or an array of them."""


class InvalidReplayId(BadRequest):
    pass


class SchemaViolation(BadRequest):
    """Payloads that do not match their channel's schema; nothing was stored. Each violation:
    `{"path": "$.amount", "message": ...}`, with `"event": index` in a batch."""

    def __init__(self, message: str, violations: list[dict[str, object]] | None = None) -> None:
        super().__init__(message)
        self.violations = violations or []

    @property
    def details(self) -> dict[str, object]:
        return {"violations": self.violations} if self.violations else {}


class ValidationTooCostly(BadRequest):
    """Validating the request's payloads against their channel's schema would take more steps
    than a request may; nothing was stored."""


class InvalidChannel(ReplaybusError):
    """A channel name that breaks the grammar, or a pattern where a channel is required."""


class UnknownChannel(ReplaybusError):
    """A valid channel name that no event can ever be published to."""


class ChannelNotPublishable(ReplaybusError):
    """A valid channel name outside the namespaces clients may publish to."""


class TooLarge(ReplaybusError):
    pass


class EventTooLarge(TooLarge):
    pass


class RequestTooLarge(TooLarge):
    pass


class BatchTooLarge(TooLarge):
    pass


class AuthenticationFailed(ReplaybusError):
    pass


class TokenMissing(AuthenticationFailed):
    pass


class TokenInvalid(AuthenticationFailed):
    pass


class TokenExpired(AuthenticationFailed):
    pass


class PermissionDenied(ReplaybusError):
    pass


class InsufficientScope(PermissionDenied):
    pass


class TenantSuspended(PermissionDenied):
    """The caller's tenant is suspended by the platform operator."""


class NotFound(ReplaybusError):
    """An administered resource (tenant, client, channel definition) that does not exist."""


class Conflict(ReplaybusError):
    """The resource already exists, or the change contradicts its current state."""


class IncompatibleSchema(Conflict):
    """A schema change that could refuse payloads the current version accepts."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []

    @property
    def details(self) -> dict[str, object]:
        return {"problems": self.problems} if self.problems else {}


class TenantRecentlyDeleted(Conflict):
    """A tenant id deleted too recently to be created again: nodes may still serve the old
    tenant from their caches. `retry_after`: seconds until it can be."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnusableSchema(Conflict):
    """The channel's stored schema cannot be applied (it refers outside itself, or uses a
    pattern the regular-expression engine cannot run); publishing waits for a new version."""


class QuotaExceeded(ReplaybusError):
    """A tenant quota refuses the request; nothing was done. `retry_after`: seconds, if
    waiting would help."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(QuotaExceeded):
    """The tenant's publish rate is used up for now."""


class TooManySubscribers(QuotaExceeded):
    """The tenant already has its maximum of concurrent subscribers."""


class TooManyChannels(QuotaExceeded):
    """A publish would open a channel beyond the tenant's channel quota."""


class ClientGone(ReplaybusError):
    """The client went away before its request was complete; nothing was done."""


class RequestTimeout(ReplaybusError):
    """The client did not send its whole request in time; nothing was done."""


class ServiceUnavailable(ReplaybusError):
    """Temporarily unable to serve; the client should retry, elsewhere if it can."""


class EngineUnavailable(ServiceUnavailable):
    """The engine could not be reached, so nothing was stored or read."""


class NotReplicated(ServiceUnavailable):
    """Events stored on the primary (with these `replay_ids`, and delivered to live listeners)
    that fewer replicas than required confirmed in time: they may be lost if the primary fails
    before they reach one. Sending the same request again with the same idempotency key stores
    nothing twice and answers the same ReplayIds once the replicas have them."""

    def __init__(self, message: str, replay_ids: list[int] | None = None) -> None:
        super().__init__(message)
        self.replay_ids = replay_ids or []

    @property
    def details(self) -> dict[str, object]:
        return {"replayIds": self.replay_ids} if self.replay_ids else {}


class CatalogUnavailable(ServiceUnavailable):
    """The control-plane database could not be reached."""


class Draining(ServiceUnavailable):
    """This node is shutting down."""


class Overloaded(ServiceUnavailable):
    """This node is already doing as much of this work as it allows at once (replays,
    handshakes); `retry_after` spreads the clients' returns."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
