"""``httpx`` integration: :class:`HttpxAuth`, an ``httpx.Auth`` for both
``httpx.Client`` and ``httpx.AsyncClient``.

The sync flow asks a :class:`ce_auth.Client` for the token, the async flow
an :class:`ce_auth.AsyncClient` (socket I/O in each, no thread hopping). A
401 answer makes the daemon ``refresh`` once and the request is sent once
more with the new token, when its body can be sent again (no body, or one
given as bytes/str/form/JSON; not a generator, an async iterator or a file).

This module (and ``httpx``) is imported only when ``ce_auth.HttpxAuth`` is
first used.
"""

from __future__ import annotations

import threading
from typing import AsyncGenerator, Generator, Optional

import httpx

from ._async import AsyncClient
from ._client import Client, default_client

__all__ = ["HttpxAuth"]


def _replayable(request: httpx.Request) -> bool:
    # httpx keeps bytes, str, form and JSON bodies as a ByteStream it can send
    # again; generators, iterators and files stream once
    return isinstance(request.stream, httpx.ByteStream)


class HttpxAuth(httpx.Auth):
    """Sets ``Authorization: Bearer <token>`` from ce-authd on each request.

    ``profile``, ``min_ttl``, ``wait``: as for :func:`ce_auth.get_token`.
    ``client``: the :class:`ce_auth.Client` for sync requests (default: the
    process-wide one); ``async_client``: the :class:`ce_auth.AsyncClient`
    for async ones (default: one made on first use and kept by this object).
    """

    requires_request_body = False
    requires_response_body = False

    def __init__(
        self,
        profile: Optional[str] = None,
        min_ttl: Optional[int] = None,
        wait: Optional[int] = None,
        client: Optional[Client] = None,
        async_client: Optional[AsyncClient] = None,
    ) -> None:
        self.profile = profile
        self.min_ttl = min_ttl
        self.wait = wait
        self._client = client
        self._async_client = async_client
        self._async_lock = threading.Lock()

    @property
    def client(self) -> Client:
        """The sync client tokens come from."""
        return self._client if self._client is not None else default_client()

    @property
    def async_client(self) -> AsyncClient:
        """The async client tokens come from."""
        c = self._async_client
        if c is None:
            with self._async_lock:
                c = self._async_client
                if c is None:
                    c = self._async_client = AsyncClient()
        return c

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        client = self.client
        token = client.token(self.profile, self.min_ttl, self.wait)
        request.headers["Authorization"] = "Bearer " + token.access_token
        response = yield request
        if response.status_code == 401 and _replayable(request):
            token = client.refresh(self.profile, self.wait)
            request.headers["Authorization"] = "Bearer " + token.access_token
            yield request

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        client = self.async_client
        token = await client.token(self.profile, self.min_ttl, self.wait)
        request.headers["Authorization"] = "Bearer " + token.access_token
        response = yield request
        if response.status_code == 401 and _replayable(request):
            token = await client.refresh(self.profile, self.wait)
            request.headers["Authorization"] = "Bearer " + token.access_token
            yield request

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # httpx calls sync_auth_flow/async_auth_flow; this is for other callers
        return self.sync_auth_flow(request)

    def __repr__(self) -> str:
        return "HttpxAuth(profile=%r, min_ttl=%r, wait=%r)" % (self.profile, self.min_ttl, self.wait)
