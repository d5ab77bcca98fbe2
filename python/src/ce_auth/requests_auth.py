"""``requests`` integration: :class:`CeAuth` (an ``AuthBase``) and
:class:`Session` (a ``requests.Session`` that uses it).

Every request asks the daemon for a token (tens of microseconds on the kept
connection; the daemon caches and refreshes), so nothing is cached here past
``min_ttl``. A 401 answer makes the daemon ``refresh`` once and the request is
sent once more with the new token, when its body can be sent again (none,
``bytes`` or ``str``; not a generator or a file).

Import ``requests`` is done here only, and this module is imported only when
``ce_auth.Session`` or ``ce_auth.CeAuth`` is first used.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

import requests
from requests.auth import AuthBase
from requests.cookies import extract_cookies_to_jar

from ._client import Client, default_client

__all__ = ["CeAuth", "Session"]

# marks the second attempt of a request, so a second 401 is returned as is
_RETRIED = "_ce_auth_retried"
# a prepared request whose token Session.send is to take from a sent-ahead request
_TICKET = "_ce_auth_ticket"


def _replayable(body: object) -> bool:
    return body is None or isinstance(body, (bytes, str))


class CeAuth(AuthBase):
    """Sets ``Authorization: Bearer <token>`` from ce-authd on each request.

    ``profile``, ``min_ttl``, ``wait``: as for :func:`ce_auth.get_token`.
    ``client``: the :class:`ce_auth.Client` to use (default: the process-wide one).
    """

    def __init__(
        self,
        profile: Optional[str] = None,
        min_ttl: Optional[int] = None,
        wait: Optional[int] = None,
        client: Optional[Client] = None,
    ) -> None:
        self.profile = profile
        self.min_ttl = min_ttl
        self.wait = wait
        self._client = client
        # a token request Session.request sent ahead for this thread's current request
        self._ahead = threading.local()

    @property
    def client(self) -> Client:
        """The client tokens come from."""
        return self._client if self._client is not None else default_client()

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        ticket = getattr(self._ahead, "ticket", None)
        if ticket is not None:
            # Session.send takes the token just before the request goes out
            self._ahead.ticket = None
            setattr(r, _TICKET, ticket)
        else:
            token = self.client.token(self.profile, self.min_ttl, self.wait)
            r.headers["Authorization"] = "Bearer " + token.access_token
        if _replayable(r.body):
            r.register_hook("response", self._handle_401)
        return r

    def _handle_401(self, r: requests.Response, **kwargs: Any) -> requests.Response:
        """On a 401: one ``refresh``, then the request once more."""
        if r.status_code != 401 or getattr(r.request, _RETRIED, False):
            return r
        if "Authorization" not in r.request.headers:
            # requests dropped it on a redirect to another host: that host gets no token
            return r
        token = self.client.refresh(self.profile, self.wait)
        # let the connection go back to the pool before reusing it
        r.content  # noqa: B018
        r.close()
        prep = r.request.copy()
        setattr(prep, _RETRIED, True)
        # as requests' own HTTPDigestAuth: cookies the 401 set go with the retry
        jar = getattr(prep, "_cookies", None)
        if jar is not None:
            extract_cookies_to_jar(jar, r.request, r.raw)
            prep.prepare_cookies(jar)
        prep.headers["Authorization"] = "Bearer " + token.access_token
        adapter: Any = getattr(r, "connection")
        retried: requests.Response = adapter.send(prep, **kwargs)
        retried.history.append(r)
        retried.request = prep
        return retried

    def __repr__(self) -> str:
        return "CeAuth(profile=%r, min_ttl=%r, wait=%r)" % (self.profile, self.min_ttl, self.wait)


class Session(requests.Session):
    """A ``requests.Session`` whose requests carry a token from ce-authd.

    ``Session(profile="dev")`` is ``requests.Session()`` with ``auth =
    CeAuth(profile="dev")``: each request gets a token with at least
    ``min_ttl`` seconds left, and a 401 gets one refresh and one retry (for
    replayable bodies). A request's own ``auth=`` still wins, as in
    requests; a redirect to another host drops the header, as in requests.
    """

    def __init__(
        self,
        profile: Optional[str] = None,
        min_ttl: Optional[int] = None,
        wait: Optional[int] = None,
        client: Optional[Client] = None,
    ) -> None:
        super().__init__()
        self.auth = CeAuth(profile, min_ttl, wait, client)

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        """As ``requests.Session.request``. The token is asked for as the
        request starts and taken just before it is sent, so the daemon
        answers while requests prepares the request (``ce_auth.Session``
        costs about one token request per request, not more)."""
        auth = self.auth
        # positional arguments after url: params, data, headers, cookies, files, auth
        own_auth = kwargs.get("auth") if len(args) < 6 else args[5]
        if not isinstance(auth, CeAuth) or own_auth is not None:
            return super().request(method, url, *args, **kwargs)
        ticket = auth.client.token_ahead(auth.profile, auth.min_ttl, auth.wait)
        auth._ahead.ticket = ticket
        try:
            return super().request(method, url, *args, **kwargs)
        finally:
            # normally taken by send(); not if preparing the request failed first
            auth._ahead.ticket = None
            ticket.close()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        """As ``requests.Session.send``, setting the token of a request
        :meth:`request` asked for ahead."""
        ticket = getattr(request, _TICKET, None)
        if ticket is not None:
            delattr(request, _TICKET)
            request.headers["Authorization"] = "Bearer " + ticket.result().access_token
        return super().send(request, **kwargs)

    def __repr__(self) -> str:
        return "<ce_auth.Session %r>" % (self.auth,)
