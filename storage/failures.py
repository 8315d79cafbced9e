"""How driver failures are described in the log. Their text names the servers' addresses, so it
goes to the log only; what clients see is the domain error's own message."""

from __future__ import annotations

__all__ = ["describe"]


def describe(error: BaseException) -> str:
    """The error's class and text, for the log (a timeout's text may be empty)."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
