"""The socket protocol, v1 (``docs/PROTOCOL.md``): request lines, reply
checks, the :class:`Token` type and the bearer-token rule.

No I/O here: :mod:`ce_auth._client` and :mod:`ce_auth._async` move the bytes.
"""

from __future__ import annotations

import json
import re
import time
TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing at run time

from ._version import __version__
from .errors import ProtocolError, error_from_reply

if TYPE_CHECKING:  # pragma: no cover
    import datetime as _dt
    from typing import Any, Dict, Optional

__all__ = [
    "PROTOCOL_VERSION",
    "MAX_LINE",
    "MAX_TOKEN_LEN",
    "DEFAULT_MIN_TTL",
    "DEFAULT_WAIT",
    "MAX_WAIT",
    "DEFAULT_TIMEOUT",
    "WAIT_MARGIN",
    "CLIENT_NAME",
    "Token",
    "is_bearer_token",
    "encode",
    "hello_request",
    "token_request",
    "reply_timeout",
    "parse_reply",
    "join_status_page",
    "parse_token",
    "parse_token_line",
    "parse_hello",
]

#: The protocol version this package speaks.
PROTOCOL_VERSION = 1
#: The longest line either side may send, in bytes including the ``\n``.
MAX_LINE = 64 * 1024
#: The longest access token accepted, in bytes.
MAX_TOKEN_LEN = 16 * 1024
#: The ``min_ttl`` the daemon uses when a request names none, in seconds.
DEFAULT_MIN_TTL = 60
#: The ``wait`` the daemon uses when a token request names none, in seconds.
DEFAULT_WAIT = 10
#: The longest ``wait`` the daemon honours, in seconds.
MAX_WAIT = 300
#: How long a request may wait for its reply, in seconds (as ``ce-auth``).
DEFAULT_TIMEOUT = 120.0
#: How much longer than a request's ``wait`` the client waits for its reply.
WAIT_MARGIN = 15.0

#: What this package calls itself in ``hello``.
CLIENT_NAME = "ce_auth (python) " + __version__

# RFC 6750 b64token, as protocol::is_bearer_token
_BEARER = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def is_bearer_token(t: object) -> bool:
    """Whether ``t`` is an RFC 6750 ``b64token`` (``[A-Za-z0-9-._~+/]+=*``) of
    at most :data:`MAX_TOKEN_LEN` bytes: safe in an HTTP header, the
    environment and on a terminal. The same rule as the daemon's."""
    return isinstance(t, str) and len(t) <= MAX_TOKEN_LEN and _BEARER.fullmatch(t) is not None


class Token:
    """An access token from ce-authd.

    ``access_token`` (str) is the token itself; ``token_type`` is always
    ``"bearer"``; ``expires_at`` is an ``int``, seconds since the Unix epoch
    (:attr:`expires` gives it as an aware UTC :class:`datetime.datetime`);
    ``profile`` is the profile it belongs to (resolved when none was named).

    ``repr()`` and ``str()`` never show the token; use ``access_token`` or
    :attr:`authorization` where it is meant to go.
    """

    __slots__ = ("access_token", "token_type", "expires_at", "profile")

    def __init__(self, access_token: str, token_type: str, expires_at: int, profile: str) -> None:
        self.access_token = access_token
        self.token_type = token_type
        self.expires_at = expires_at
        self.profile = profile

    @property
    def expires(self) -> _dt.datetime:
        """``expires_at`` as an aware UTC datetime."""
        import datetime as _dt

        return _dt.datetime.fromtimestamp(self.expires_at, tz=_dt.timezone.utc)

    @property
    def ttl(self) -> float:
        """Seconds left until expiry (negative once expired)."""
        return self.expires_at - time.time()

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value: ``Bearer <token>``."""
        return "Bearer " + self.access_token

    def as_dict(self) -> Dict[str, Any]:
        """The token reply's fields, as ``ce-auth token --json`` prints them."""
        return {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_at": self.expires_at,
            "profile": self.profile,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Token):
            return NotImplemented
        return (self.access_token, self.expires_at, self.profile) == (
            other.access_token,
            other.expires_at,
            other.profile,
        )

    def __hash__(self) -> int:
        return hash((self.access_token, self.expires_at, self.profile))

    def __repr__(self) -> str:
        return "Token(profile=%r, token_type=%r, expires_at=%d, access_token=<%d characters>)" % (
            self.profile,
            self.token_type,
            self.expires_at,
            len(self.access_token),
        )

    __str__ = __repr__

    def __reduce__(self) -> Any:
        # a token is not meant to be written anywhere by accident
        raise TypeError("ce_auth.Token is not picklable; store token.access_token explicitly")


_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


def encode(request: Dict[str, Any]) -> bytes:
    """One request line (JSON and ``\\n``)."""
    line = _dumps(request).encode("utf-8") + b"\n"
    if len(line) > MAX_LINE:
        raise ProtocolError("the request is longer than %d bytes" % MAX_LINE)
    return line


def hello_request() -> Dict[str, Any]:
    """The handshake every connection starts with."""
    return {"op": "hello", "version": PROTOCOL_VERSION, "client": CLIENT_NAME}


def _int_arg(name: str, v: Optional[int]) -> Optional[int]:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError("%s must be a whole number of seconds, at least 0" % name)
    return v


def token_request(
    op: str, profile: Optional[str], min_ttl: Optional[int], wait: Optional[int]
) -> Dict[str, Any]:
    """A ``token`` (or ``refresh``) request; absent fields are left out, so
    the daemon's defaults apply."""
    req: Dict[str, Any] = {"op": op}
    if profile is not None:
        if not isinstance(profile, str):
            raise TypeError("profile must be a str")
        req["profile"] = profile
    if min_ttl is not None:
        req["min_ttl"] = _int_arg("min_ttl", min_ttl)
    if wait is not None:
        req["wait"] = _int_arg("wait", wait)
    return req


def reply_timeout(request: Dict[str, Any], timeout: float) -> float:
    """How long to wait for the reply to ``request``: ``timeout``, or longer
    when the request lets the daemon wait longer than that (as ``ce-auth``)."""
    wait = request.get("wait")
    if request.get("op") in ("token", "refresh") and isinstance(wait, int):
        needed = min(wait, MAX_WAIT) + WAIT_MARGIN
        if needed > timeout:
            return needed
    return timeout


def parse_reply(line: bytes, op: str) -> Dict[str, Any]:
    """The reply object of a successful reply line; raises the daemon's error
    as its exception, or :class:`ProtocolError` for anything malformed."""
    try:
        reply = json.loads(line)
    except ValueError:
        reply = None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ProtocolError("ce-authd sent an invalid reply: the reply to `%s` is not valid JSON of the expected shape" % op)
    if not reply["ok"]:
        raise error_from_reply(reply.get("error"))
    return reply


def join_status_page(reply: Dict[str, Any], page: Dict[str, Any], after: str) -> None:
    """Adds the profiles of a ``status`` page (asked for with ``after``) to
    ``reply``; the next page's ``next_after`` moves along with them. A page
    that does not move past ``after`` is a :class:`ProtocolError`, so a
    confused daemon cannot keep the caller asking forever."""
    profiles = page.get("profiles")
    nxt = page.get("next_after")
    if (
        not isinstance(profiles, list)
        or not isinstance(reply.get("profiles"), list)
        or (nxt is not None and (not isinstance(nxt, str) or nxt <= after or not profiles))
        or any(not isinstance(p, dict) or not isinstance(p.get("name"), str) or p["name"] <= after for p in profiles)
    ):
        raise ProtocolError("ce-authd sent an invalid reply: the daemon's status pages do not move on")
    reply["profiles"].extend(profiles)
    if "proxies" in page:
        reply["proxies"] = page["proxies"]
    if nxt is not None:
        reply["next_after"] = nxt


def _shape_error(op: str) -> ProtocolError:
    return ProtocolError(
        "ce-authd sent an invalid reply: the reply to `%s` is not valid JSON of the expected shape" % op
    )


def parse_token(reply: Dict[str, Any], op: str = "token") -> Token:
    """A :class:`Token` from a ``token``/``refresh`` reply, checked: a token
    that is not an RFC 6750 bearer token is refused (never shown)."""
    tok = reply.get("access_token")
    ttype = reply.get("token_type")
    exp = reply.get("expires_at")
    profile = reply.get("profile")
    if (
        not isinstance(tok, str)
        or not isinstance(ttype, str)
        or not isinstance(exp, int)
        or isinstance(exp, bool)
        or not isinstance(profile, str)
    ):
        raise _shape_error(op)
    if not is_bearer_token(tok):
        raise ProtocolError(
            "ce-authd sent an invalid reply: the daemon sent an access token that is not an "
            "RFC 6750 bearer token; refusing to print or pass it on"
        )
    return Token(tok, ttype, exp, profile)


# The daemon's token reply as serde writes it (fields in this order, no
# spaces, no escapes in the profile name): parsed without json, and the token
# checked by the same pattern. Any other line takes the json path.
_FAST_TOKEN = re.compile(
    rb'\{"ok":true,"access_token":"([A-Za-z0-9\-._~+/]+=*)","token_type":"([a-z]+)",'
    rb'"expires_at":(-?[0-9]{1,18}),"profile":"([^"\\\x00-\x1f]*)"\}\r?\n'
)


def parse_token_line(line: bytes, op: str = "token") -> Token:
    """:func:`parse_token` of :func:`parse_reply` of a reply line, with a fast
    path for the daemon's usual shape (the same result, without ``json``)."""
    m = _FAST_TOKEN.fullmatch(line)
    if m is not None and len(m.group(1)) <= MAX_TOKEN_LEN:
        tok, ttype, exp, profile = m.groups()
        try:
            return Token(tok.decode("ascii"), ttype.decode("ascii"), int(exp), profile.decode("utf-8"))
        except UnicodeDecodeError:
            pass  # the json path says what is wrong
    return parse_token(parse_reply(line, op), op)


def parse_hello(reply: Dict[str, Any]) -> Dict[str, Any]:
    """The ``hello`` reply, checked for our protocol version."""
    version = reply.get("version")
    if not isinstance(version, int) or not isinstance(reply.get("daemon"), str) or not isinstance(
        reply.get("pid"), int
    ):
        raise _shape_error("hello")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            "ce-authd speaks protocol version %d, this ce_auth speaks %d; restart the daemon "
            "(`ce-auth stop`) so both come from the same release" % (version, PROTOCOL_VERSION)
        )
    return reply
