"""The hot routes (publishing, Bayeux) answered without the router's scan and its wrappers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["DirectRoutes"]

Handler = Callable[[Request, Exception], Awaitable[Response]]


class DirectRoutes:
    """The innermost middleware: a request that one of `routes` matches fully is answered here,
    by that route's endpoint, as the router would (the same `route`, `endpoint` and
    `path_params` in the scope, the same `Request`); an exception the endpoint raises goes
    through the same `handlers` the app's exception middleware uses (by the exception's class,
    most specific first), and any other exception propagates to the server error middleware
    outside, as it would from the router. Everything else goes on to `app` unchanged.

    What it saves per request is the router's scan of the routes before the match, two send
    wrappers (the exception middleware's and the route's) and the coroutines around them."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[Route],
        handlers: Mapping[Any, Handler],
    ) -> None:
        self._app = app
        self._routes = tuple(routes)
        # As Starlette splits them: `Exception` belongs to the server error middleware.
        self._handlers = {cls: h for cls, h in handlers.items() if cls not in (500, Exception)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for route in self._routes:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope["route"] = route
                    scope.update(child_scope)
                    await self._answer(route, scope, receive, send)
                    return
        await self._app(scope, receive, send)

    async def _answer(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as error:
            handler = self._handler(error)
            if handler is None:
                raise
            response = await handler(request, error)
            error.__traceback__ = None  # as Starlette does: no tracebacks kept alive
        await response(scope, receive, send)

    def _handler(self, error: Exception) -> Handler | None:
        for cls in type(error).__mro__:
            handler = self._handlers.get(cls)
            if handler is not None:
                return handler
        return None
