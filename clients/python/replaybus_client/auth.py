"""Access tokens from the OAuth token endpoint (client credentials), refreshed before expiry."""

from __future__ import annotations

import asyncio
import time

import httpx

from replaybus_client.errors import RequestFailed

__all__ = ["ClientCredentials", "StaticToken", "TokenSource"]

_MARGIN_S = 30.0  # refresh this long before the token expires


class TokenSource:
    """Something that hands out a current access token."""

    async def token(self, http: httpx.AsyncClient) -> str:
        raise NotImplementedError

    def invalidate(self) -> None:
        """The server refused the last token (401): the next `token()` must be new."""


class StaticToken(TokenSource):
    """A token obtained elsewhere (it cannot be refreshed)."""

    def __init__(self, access_token: str) -> None:
        self._access_token = access_token

    async def token(self, http: httpx.AsyncClient) -> str:
        return self._access_token


class ClientCredentials(TokenSource):
    """The client-credentials grant at `{base_url}/v1/oauth/token`; one request at a time."""

    def __init__(self, base_url: str, client_id: str, client_secret: str) -> None:
        self._url = base_url.rstrip("/") + "/v1/oauth/token"
        self._form = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
        }
        self._access_token: str | None = None
        self._fresh_until = 0.0
        self._lock = asyncio.Lock()

    async def token(self, http: httpx.AsyncClient) -> str:
        async with self._lock:
            if self._access_token is None or time.monotonic() >= self._fresh_until:
                response = await http.post(self._url, data=self._form)
                body = response.json() if response.content else {}
                if response.status_code != 200:
                    raise RequestFailed(
                        response.status_code,
                        str(body.get("error", "token_refused")),
                        str(body.get("error_description", response.text)),
                        body,
                    )
                self._access_token = str(body["access_token"])
                lifetime = float(body.get("expires_in", 3600))
                self._fresh_until = time.monotonic() + max(1.0, lifetime - _MARGIN_S)
            return self._access_token

    def invalidate(self) -> None:
        self._access_token = None
