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

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise InsufficientScope(f"this token lacks the '{scope}' scope")
