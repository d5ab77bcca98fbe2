"""The synchronous client: one kept connection to ce-authd, shared by threads.

A :class:`Client` connects on first use (checking the socket's directory and
listener first, and starting ``ce-authd`` when nothing answers and autostart
is on), sends ``hello`` in the same write as the first request, and then
keeps the connection for every later request. A lock makes one request and
its reply a unit, so threads can share one client. When a kept connection
fails (the daemon closed an idle connection, or was restarted), the request
is sent once more on a new connection, checked again from scratch.
"""

from __future__ import annotations

import errno
import os
import threading
import time
import weakref
TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing at run time

from . import _autostart
from ._protocol import (
    DEFAULT_TIMEOUT,
    MAX_LINE,
    Token,
    encode,
    hello_request,
    join_status_page,
    parse_hello,
    parse_reply,
    parse_token_line,
    reply_timeout,
    token_request,
)
from ._socket import connect_trusted, set_timeouts, socket_path
from .errors import CeAuthError, ConnectionLost, NotRunning, ProtocolError

__all__ = ["Client", "get_token", "default_client"]

if TYPE_CHECKING:  # pragma: no cover  (typing is not imported at run time: a fresh process starts sooner)
    from typing import Any, Dict, Optional, Tuple, Union

    PathLike = Union[str, os.PathLike[str]]


def _debug(msg: str, *args: object) -> None:
    """Logs to the ``ce_auth`` logger (imported only when something is logged)."""
    import logging

    logging.getLogger("ce_auth").debug(msg, *args)

# the ops that may be sent again on a new connection when a kept one fails
_RETRYABLE = frozenset(["hello", "token", "refresh", "status", "whoami"])
# the ops that start a daemon when none answers (`ce-auth status` never does)
_AUTOSTARTING = frozenset(["hello", "token", "refresh", "whoami"])

_HELLO_LINE = encode(hello_request())

# a bounded cache of encoded request lines, keyed by their arguments
_MAX_CACHED_LINES = 256


class _Eof(Exception):
    """The daemon closed the connection before a complete reply."""


class _Timeout(Exception):
    """No reply within the timeout."""


class _Conn:
    """One checked connection and its read buffer."""

    __slots__ = ("sock", "buf", "pid", "hello", "timeout", "path")

    def __init__(self, sock: Any, path: str, timeout: float) -> None:
        self.sock = sock
        self.buf = b""
        self.pid = os.getpid()
        self.hello: Dict[str, Any] = {}
        self.timeout = timeout
        self.path = path

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except BlockingIOError:
            raise _Timeout() from None

    def read_line(self) -> bytes:
        """The next reply line (with its ``\\n``)."""
        buf = self.buf
        while True:
            i = buf.find(b"\n", 0, MAX_LINE)
            if i >= 0:
                line, buf = buf[: i + 1], buf[i + 1 :]
                if line.strip():
                    self.buf = buf
                    return line
                continue
            if len(buf) >= MAX_LINE:
                self.buf = b""
                raise ProtocolError(
                    "ce-authd sent an invalid reply: the daemon's reply is longer than %d bytes" % MAX_LINE
                )
            try:
                chunk = self.sock.recv(MAX_LINE)
            except BlockingIOError:
                raise _Timeout() from None
            if not chunk:
                raise _Eof()
            # the common case: one whole reply in one read, nothing to join
            buf = buf + chunk if buf else chunk

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# every live client, so a forked child drops its copy of the parent's connection
_CLIENTS: "weakref.WeakSet[Client]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for c in list(_CLIENTS):
        c._forget_after_fork()
    global _default_lock
    _default_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Client:
    """A kept, thread-safe connection to ce-authd.

    ``socket``: the socket path (default: found as ``ce-auth`` finds it, at
    each connection). ``autostart``: start ``ce-authd --daemon`` when nothing
    answers (default: on unless ``CE_AUTH_NO_AUTOSTART`` says otherwise).
    ``daemon``: the ``ce-authd`` to start (default: the one on ``PATH``).
    ``config``: the config file to start it with (default:
    ``$CE_AUTH_CONFIG`` when set). ``timeout``: seconds to wait for a reply
    (longer when a request's ``wait`` needs it).

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        socket: Optional[PathLike] = None,
        *,
        autostart: Optional[bool] = None,
        daemon: Optional[PathLike] = None,
        config: Optional[PathLike] = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._explicit = os.fspath(socket) if socket is not None else None
        self._autostart = autostart
        self._daemon = os.fspath(daemon) if daemon is not None else None
        self._config = os.fspath(config) if config is not None else None
        self._timeout = float(timeout)
        # reentrant: a thread holding a sent-ahead token request (see
        # token_ahead) that makes another request first collects that reply
        self._lock = threading.RLock()
        self._pending: Optional[TokenTicket] = None
        self._conn: Optional[_Conn] = None
        self._lines: Dict[Tuple[Any, ...], bytes] = {}
        #: connections made so far (each one checked before use)
        self.connections = 0
        _CLIENTS.add(self)

    # ---- public API ---------------------------------------------------------

    @property
    def socket(self) -> str:
        """The socket path this client uses (or would use now)."""
        conn = self._conn
        return conn.path if conn is not None else socket_path(self._explicit)

    def token(self, profile: Optional[str] = None, min_ttl: Optional[int] = None, wait: Optional[int] = None) -> Token:
        """A token for ``profile`` (the daemon's default when ``None``) with at
        least ``min_ttl`` seconds left (default 60); the daemon waits at most
        ``wait`` seconds for one (default 10, 0 answers at once)."""
        key = ("token", profile, min_ttl, wait)
        line = self._lines.get(key)
        if line is None:
            req = token_request("token", profile, min_ttl, wait)
            line = self._remember(key, req)
        else:
            req = None
        return parse_token_line(self._call(line, "token", self._reply_timeout(req, wait), retry=True, autostart=True))

    def token_ahead(
        self, profile: Optional[str] = None, min_ttl: Optional[int] = None, wait: Optional[int] = None
    ) -> "TokenTicket":
        """Sends a ``token`` request now and returns a ticket whose
        :meth:`TokenTicket.result` reads the reply: the daemon answers while
        the caller does other work (``ce_auth.Session`` asks for the token as
        a request starts and takes it just before it is sent).

        Until the ticket is done, this thread holds the client's lock: other
        threads' requests wait, and a request of this thread first collects
        the ticket's reply. Always finish a ticket (``result()`` or
        ``close()``, or use it as a context manager).
        """
        key = ("token", profile, min_ttl, wait)
        line = self._lines.get(key)
        if line is None:
            line = self._remember(key, token_request("token", profile, min_ttl, wait))
        timeout = self._reply_timeout(None, wait)
        self._lock.acquire()
        try:
            self._resolve_pending()
            ticket = TokenTicket(self, line, timeout)
            conn = self._conn
            if conn is not None and conn.pid != os.getpid():
                self._conn = conn = None
            if conn is None:
                # a new connection: hello and the request go together, and are answered now
                ticket._finish(self._open(line, "token", True))
                self._lock.release()
                return ticket
            try:
                if timeout != conn.timeout:
                    set_timeouts(conn.sock, timeout)
                conn.send(line)
            except (_Eof, OSError, _Timeout) as e:
                ticket._failed = e
            ticket._conn = conn
            ticket._locked = True
            self._pending = ticket
            return ticket
        except BaseException:
            self._lock.release()
            raise

    def _resolve_pending(self) -> None:
        """Collects the reply of this thread's sent-ahead request, if any (lock held)."""
        t = self._pending
        if t is not None:
            self._pending = None
            t._collect()

    def refresh(self, profile: Optional[str] = None, wait: Optional[int] = None) -> Token:
        """A new token obtained now, even if the held one is fresh."""
        req = token_request("refresh", profile, None, wait)
        line = self._call(encode(req), "refresh", reply_timeout(req, self._timeout), retry=True, autostart=True)
        return parse_token_line(line, "refresh")

    def status(self, profile: Optional[str] = None) -> Dict[str, Any]:
        """The daemon's ``status`` reply (a dict), with every profile: a
        daemon with more than fit one reply line is asked for each page
        (``next_after``). Never starts a daemon."""
        req: Dict[str, Any] = {"op": "status"}
        if profile is not None:
            req["profile"] = profile
        reply = parse_reply(self._call(encode(req), "status", self._timeout, retry=True, autostart=False), "status")
        while reply.get("next_after") is not None:
            page_req = {"op": "status", "after": reply.pop("next_after")}
            page = parse_reply(
                self._call(encode(page_req), "status", self._timeout, retry=True, autostart=False), "status"
            )
            join_status_page(reply, page, page_req["after"])
        return reply

    def whoami(self, profile: Optional[str] = None) -> Dict[str, Any]:
        """The issuer's ``users/me`` for a profile's token (the ``whoami`` reply)."""
        req: Dict[str, Any] = {"op": "whoami"}
        if profile is not None:
            req["profile"] = profile
        return parse_reply(self._call(encode(req), "whoami", self._timeout, retry=True, autostart=True), "whoami")

    def hello(self) -> Dict[str, Any]:
        """The daemon's answer to this connection's ``hello``: ``version``,
        ``daemon`` (name and version), ``pid``. Connects if needed."""
        with self._lock:
            self._resolve_pending()
            if self._conn is None or self._conn.pid != os.getpid():
                self._conn = None
                self._open(None, "hello", True)
            assert self._conn is not None
            return dict(self._conn.hello)

    def request(self, request: Dict[str, Any], *, retry: bool = False, autostart: bool = False) -> Dict[str, Any]:
        """Sends any request object and returns its successful reply (a dict),
        or raises the daemon's error. For ops without a method here (``add``,
        ``remove``, ``reload``, ``login``, ``shutdown``). ``retry``: send it
        again on a new connection if the kept one fails (only for requests
        that may safely be repeated)."""
        op = request.get("op")
        if not isinstance(op, str):
            raise ValueError("a request needs an op")
        line = self._call(encode(request), op, reply_timeout(request, self._timeout), retry=retry, autostart=autostart)
        return parse_reply(line, op)

    def close(self) -> None:
        """Closes the connection (a later request opens a new one)."""
        with self._lock:
            self._resolve_pending()
            self._drop()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        conn = self._conn
        if conn is not None:
            return "<ce_auth.Client socket=%r connected pid=%s>" % (conn.path, conn.hello.get("pid"))
        return "<ce_auth.Client socket=%r not connected>" % (self._explicit or "(default)")

    def __del__(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None and conn.pid == os.getpid():
            conn.close()

    # ---- internals ----------------------------------------------------------

    def _remember(self, key: Tuple[Any, ...], req: Dict[str, Any]) -> bytes:
        line = encode(req)
        if len(self._lines) >= _MAX_CACHED_LINES:
            self._lines.clear()
        self._lines[key] = line
        return line

    def _reply_timeout(self, req: Optional[Dict[str, Any]], wait: Optional[int]) -> float:
        if wait is None:
            return self._timeout
        return reply_timeout({"op": "token", "wait": wait}, self._timeout)

    def _autostart_on(self) -> bool:
        if self._autostart is not None:
            return self._autostart
        return not _autostart.autostart_disabled()

    def _forget_after_fork(self) -> None:
        self._lock = threading.RLock()
        self._pending = None
        conn, self._conn = self._conn, None
        if conn is not None:
            # our copy of the parent's descriptor; the parent's connection lives on
            conn.close()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _call(self, line: bytes, op: str, timeout: float, retry: bool, autostart: bool) -> bytes:
        """Sends ``line`` and returns the reply line (not parsed: the caller
        knows what it should be)."""
        with self._lock:
            self._resolve_pending()
            conn = self._conn
            if conn is not None and conn.pid != os.getpid():
                self._conn = conn = None
            if conn is None:
                return self._open(line, op, autostart)
            try:
                return self._exchange(conn, line, op, timeout)
            except (_Eof, OSError) as e:
                self._drop()
                if not retry:
                    raise self._lost(conn.path, e, op) from None
                _debug("ce-authd connection on %s lost (%s); reconnecting once", conn.path, _why(e))
                return self._open(line, op, autostart)

    def _exchange(self, conn: _Conn, line: bytes, op: str, timeout: float) -> bytes:
        if timeout != conn.timeout:
            set_timeouts(conn.sock, timeout)
        try:
            conn.send(line)
            reply_line = conn.read_line()
        except _Timeout:
            self._drop()
            raise ConnectionLost(
                "no reply from ce-authd on %s within %g s (to `%s`)" % (conn.path, timeout, op)
            ) from None
        except ProtocolError:
            self._drop()
            raise
        finally:
            if timeout != conn.timeout and self._conn is conn:
                set_timeouts(conn.sock, conn.timeout)
        return reply_line

    def _open(self, line: Optional[bytes], op: str, autostart: bool) -> bytes:
        """Connects (starting the daemon if allowed), sends ``hello`` and
        ``line`` in one write, checks the handshake and returns ``line``'s reply."""
        path = socket_path(self._explicit)
        try:
            sock = connect_trusted(path, self._timeout)
        except NotRunning as e:
            if not (e.absent and autostart and self._autostart_on()):
                raise
            sock = self._start_daemon(path)
        conn = _Conn(sock, path, self._timeout)
        self.connections += 1
        try:
            conn.send(_HELLO_LINE + line if line is not None else _HELLO_LINE)
            # on a version mismatch the daemon still answers the request; it is left unread
            conn.hello = parse_hello(parse_reply(conn.read_line(), "hello"))
            if line is None:
                self._conn = conn
                return b""
            reply_line = conn.read_line()
        except (_Eof, OSError, _Timeout) as e:
            conn.close()
            raise self._lost(path, e, op) from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return reply_line

    def _start_daemon(self, path: str) -> Any:
        config = self._config or os.environ.get("CE_AUTH_CONFIG") or None
        _debug("nothing answers on %s; starting ce-authd", path)
        starter = _autostart.Starter(path, self._daemon, config)
        while True:
            try:
                sock = connect_trusted(path, self._timeout)
            except NotRunning as e:
                last = str(e)
            except CeAuthError:
                starter.done()
                raise
            else:
                starter.done()
                return sock
            if starter.give_up():
                raise starter.failure(last)
            time.sleep(_autostart.POLL_INTERVAL)

    @staticmethod
    def _lost(path: str, e: BaseException, op: str) -> ConnectionLost:
        if isinstance(e, _Timeout):
            return ConnectionLost("no reply from ce-authd on %s (to `%s`) in time" % (path, op))
        return ConnectionLost("talking to ce-authd on %s (`%s`): %s" % (path, op, _why(e)))


class TokenTicket:
    """A ``token`` request sent ahead by :meth:`Client.token_ahead`."""

    __slots__ = ("_client", "_line", "_timeout", "_conn", "_failed", "_reply", "_error", "_done", "_locked")

    def __init__(self, client: Client, line: bytes, timeout: float) -> None:
        self._client = client
        self._line = line
        self._timeout = timeout
        self._conn: Optional[_Conn] = None
        self._failed: Optional[BaseException] = None
        self._reply: Optional[bytes] = None
        self._error: Optional[BaseException] = None
        self._done = False
        # whether this ticket holds the client's lock (from token_ahead until result/close)
        self._locked = False

    def _finish(self, reply: bytes) -> None:
        self._reply = reply
        self._done = True

    def _collect(self) -> None:
        """Reads the reply (the client's lock is held, by this thread)."""
        c = self._client
        conn = self._conn
        try:
            if conn is None or c._conn is not conn:
                raise _Eof()
            if self._failed is not None:
                raise self._failed
            try:
                self._reply = conn.read_line()
            except _Timeout:
                c._drop()
                raise ConnectionLost(
                    "no reply from ce-authd on %s within %g s (to `token`)" % (conn.path, self._timeout)
                ) from None
            except ProtocolError:
                c._drop()
                raise
            finally:
                if c._conn is conn and self._timeout != conn.timeout:
                    set_timeouts(conn.sock, conn.timeout)
        except (_Eof, OSError) as e:
            # the kept connection failed: once more on a new one, as for token()
            c._drop()
            path = conn.path if conn is not None else "?"
            _debug("ce-authd connection on %s lost (%s); reconnecting once", path, _why(e))
            try:
                self._reply = c._open(self._line, "token", True)
            except BaseException as e2:  # noqa: BLE001  (given to the caller by result())
                self._error = e2
        except BaseException as e:  # noqa: BLE001
            self._error = e
        finally:
            self._done = True

    def _release(self) -> None:
        """Collects the reply if no later request of this thread has, and lets the lock go."""
        if self._locked:
            self._locked = False
            c = self._client
            try:
                if c._pending is self:
                    c._pending = None
                    self._collect()
            finally:
                c._lock.release()

    def result(self) -> Token:
        """The token (or the error the request ended with)."""
        self._release()
        if self._error is not None:
            raise self._error
        assert self._reply is not None
        return parse_token_line(self._reply)

    def close(self) -> None:
        """Finishes the ticket without taking its token (the reply is read and dropped)."""
        self._release()

    def __enter__(self) -> "TokenTicket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<ce_auth.TokenTicket %s>" % ("done" if self._done else "pending")


def _why(e: BaseException) -> str:
    if isinstance(e, _Eof):
        return "the daemon closed the connection without a complete reply"
    if isinstance(e, OSError):
        return e.strerror or errno.errorcode.get(e.errno or 0, str(e))
    return str(e)


# ---- the process-wide default client --------------------------------------------

_default: Optional[Client] = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """The process-wide :class:`Client` that :func:`get_token` and the HTTP
    integrations use unless given one (created on first use)."""
    global _default
    c = _default
    if c is None:
        with _default_lock:
            c = _default
            if c is None:
                c = _default = Client()
    return c


def _reset_default_client() -> None:
    """Forgets the default client (closing its connection); for tests and for
    programs that change ``CE_AUTH_SOCK`` while running."""
    global _default
    with _default_lock:
        c, _default = _default, None
    if c is not None:
        c.close()


def get_token(profile: Optional[str] = None, min_ttl: Optional[int] = None, wait: Optional[int] = None) -> Token:
    """A token for ``profile`` with at least ``min_ttl`` seconds left, from
    the process-wide default client (one kept connection). See
    :meth:`Client.token`."""
    return default_client().token(profile, min_ttl, wait)
