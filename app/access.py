"""Who is calling, and what they may do."""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import InsufficientScope

__all__ = ["SCOPES", "Principal"]

SCOPES = ("publish", "subscribe", "admin")


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified identity behind an access token. The tenant comes only from the token."""

    tenant: str
    client_id: str
    scopes: frozenset[str]
    expires_at: float
    user: str | None = None

    @property
    def subject(self) -> str:
        """Who acts: the user for user grants, else the client itself."""
        return self.user or self.client_id

    @property
    def identity(self) -> str:
        """What a Bayeux session belongs to: the user for user grants (through any of the
        tenant's clients, as a Salesforce session belongs to its user), else the client."""
        return f"user:{self.user}" if self.user else f"client:{self.client_id}"

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise InsufficientScope(f"this token lacks the '{scope}' scope")
