"""One log line per request: client, method, path (secret query parameters redacted), status,
duration, tenant (once the token is known) and route template. With JSON logs each is a key of
the line. Headers are never logged, so neither are tokens."""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AccessLogMiddleware", "redact_query"]

log = logging.getLogger("replaybus.access")
_SECRET_PARAMETERS = frozenset(
    {"access_token", "client_secret", "password", "assertion", "refresh_token", "code", "token"}
)


def redact_query(query: str) -> str:
    """The query string with the value of every secret parameter replaced, recognising names
    however they are percent-encoded (the server decodes them before use)."""
    pairs = []
    for pair in query.split("&"):
        name, separator, _ = pair.partition("=")
        if unquote_plus(name) in _SECRET_PARAMETERS:
            pair = f"{name}{separator or '='}[redacted]"
        pairs.append(pair)
    return "&".join(pairs)


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        except Exception:
            status = status or 500  # what the error middleware around this one answers
            raise
        except asyncio.CancelledError:
            status = status or 499  # the client went away first
            raise
        finally:
            query = scope.get("query_string", b"").decode("latin-1")
            # The raw (still percent-encoded) path: a decoded one could forge log lines.
            raw_path = scope.get("raw_path") or scope["path"].encode()
            path = raw_path.decode("latin-1") + ("?" + redact_query(query) if query else "")
            client = scope.get("client")
            route = scope.get("route")
            fields = {
                "client": f"{client[0]}:{client[1]}" if client else "-",
                "method": scope["method"],
                "path": path,
                "route": getattr(route, "path", None),
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "tenant": scope.get("state", {}).get("tenant"),
            }
            log.info(
                '%s "%s %s" %d %.1fms tenant=%s route=%s',
                fields["client"],
                fields["method"],
                path,
                status,
                fields["duration_ms"],
                fields["tenant"] or "-",
                fields["route"] or "-",
                extra=fields,
            )
