"""The asyncio client: :class:`AsyncClient`, the same protocol and the same
checks as :class:`ce_auth.Client` over ``asyncio.open_unix_connection``.

One kept connection per client, an :class:`asyncio.Lock` around each
request and its reply, one retry on a new (re-checked) connection when a
kept one fails. A client used from another event loop than the one its
connection was made on (``asyncio.run`` twice, say) opens a new one there.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Dict, Optional, Union

from . import _autostart
from ._client import _HELLO_LINE, _Eof, _why
from ._protocol import (
    DEFAULT_TIMEOUT,
    MAX_LINE,
    Token,
    encode,
    join_status_page,
    parse_hello,
    parse_reply,
    parse_token_line,
    reply_timeout,
    token_request,
)
from ._socket import _not_running_message, check_listener, is_absent, open_trusted_dir, socket_path
from .errors import CeAuthError, ConnectionLost, NotRunning, ProtocolError

__all__ = ["AsyncClient"]

log = logging.getLogger("ce_auth")

PathLike = Union[str, "os.PathLike[str]"]


if hasattr(asyncio, "timeout"):  # Python 3.11+: no task per bounded await
    _deadline = asyncio.timeout
else:  # pragma: no cover  (3.9, 3.10)

    class _deadline:  # type: ignore[no-redef]
        """``asyncio.timeout`` for Pythons without it: cancels the current
        task when the time is up, and turns that into ``TimeoutError``."""

        def __init__(self, delay: float) -> None:
            self._delay = delay
            self._expired = False

        async def __aenter__(self) -> None:
            loop = asyncio.get_running_loop()
            task = asyncio.current_task()
            assert task is not None
            self._handle = loop.call_later(self._delay, self._expire, task)

        def _expire(self, task: "asyncio.Task[Any]") -> None:
            self._expired = True
            task.cancel()

        async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
            self._handle.cancel()
            if self._expired and exc_type is asyncio.CancelledError:
                raise asyncio.TimeoutError()


class _AConn:
    __slots__ = ("reader", "writer", "loop", "hello", "path", "pid")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> None:
        self.reader = reader
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.hello: Dict[str, Any] = {}
        self.path = path
        self.pid = os.getpid()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        # a request line fits the socket buffer: wait only when it did not
        if self.writer.transport.get_write_buffer_size():
            await self.writer.drain()

    async def read_line(self) -> bytes:
        while True:
            try:
                line = await self.reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                raise _Eof() from None
            except asyncio.LimitOverrunError:
                raise ProtocolError(
                    "ce-authd sent an invalid reply: the daemon's reply is longer than %d bytes" % MAX_LINE
                ) from None
            if line.strip():
                return line

    def close(self) -> None:
        try:
            self.writer.close()
        except (OSError, RuntimeError):
            # RuntimeError: the loop it was made on is closed
            pass


async def _connect_trusted(path: str, timeout: float) -> _AConn:
    """An async connection to ``path`` after the directory and listener checks."""
    fd, via = open_trusted_dir(path)
    try:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(via, limit=MAX_LINE - 1), timeout
            )
        except asyncio.TimeoutError:
            raise NotRunning(_not_running_message(path, "connect timed out"), socket=path) from None
        except OSError as e:
            raise NotRunning(
                _not_running_message(path, e.strerror or str(e)), socket=path, absent=is_absent(e)
            ) from None
    finally:
        os.close(fd)
    try:
        check_listener(writer.get_extra_info("socket"), path)
    except BaseException:
        writer.close()
        raise
    return _AConn(reader, writer, path)


class AsyncClient:
    """A kept connection to ce-authd for asyncio programs; the same
    arguments as :class:`ce_auth.Client`. Safe to share between tasks of
    one event loop. Use ``async with``, or ``await client.aclose()``."""

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
        self._conn: Optional[_AConn] = None
        self._lock: Optional[asyncio.Lock] = None
        self._lock_loop: Optional[asyncio.AbstractEventLoop] = None
        #: connections made so far (each one checked before use)
        self.connections = 0

    # ---- public API ---------------------------------------------------------

    async def token(
        self, profile: Optional[str] = None, min_ttl: Optional[int] = None, wait: Optional[int] = None
    ) -> Token:
        """As :meth:`ce_auth.Client.token`."""
        req = token_request("token", profile, min_ttl, wait)
        return parse_token_line(await self._call(req, retry=True, autostart=True))

    async def refresh(self, profile: Optional[str] = None, wait: Optional[int] = None) -> Token:
        """As :meth:`ce_auth.Client.refresh`."""
        req = token_request("refresh", profile, None, wait)
        return parse_token_line(await self._call(req, retry=True, autostart=True), "refresh")

    async def status(self, profile: Optional[str] = None) -> Dict[str, Any]:
        """As :meth:`ce_auth.Client.status` (never starts a daemon)."""
        req: Dict[str, Any] = {"op": "status"}
        if profile is not None:
            req["profile"] = profile
        reply = parse_reply(await self._call(req, retry=True, autostart=False), "status")
        while reply.get("next_after") is not None:
            after = reply.pop("next_after")
            page = parse_reply(await self._call({"op": "status", "after": after}, retry=True, autostart=False), "status")
            join_status_page(reply, page, after)
        return reply

    async def whoami(self, profile: Optional[str] = None) -> Dict[str, Any]:
        """As :meth:`ce_auth.Client.whoami`."""
        req: Dict[str, Any] = {"op": "whoami"}
        if profile is not None:
            req["profile"] = profile
        return parse_reply(await self._call(req, retry=True, autostart=True), "whoami")

    async def hello(self) -> Dict[str, Any]:
        """As :meth:`ce_auth.Client.hello`."""
        async with self._get_lock():
            conn = self._usable()
            if conn is None:
                await self._open(None, "hello", True)
                conn = self._conn
            assert conn is not None
            return dict(conn.hello)

    async def request(
        self, request: Dict[str, Any], *, retry: bool = False, autostart: bool = False
    ) -> Dict[str, Any]:
        """As :meth:`ce_auth.Client.request`."""
        if not isinstance(request.get("op"), str):
            raise ValueError("a request needs an op")
        return parse_reply(await self._call(request, retry=retry, autostart=autostart), request["op"])

    async def aclose(self) -> None:
        """Closes the connection (a later request opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            if conn.loop is asyncio.get_running_loop():
                try:
                    await conn.writer.wait_closed()
                except (OSError, ConnectionError):
                    pass

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        conn = self._conn
        if conn is not None:
            return "<ce_auth.AsyncClient socket=%r connected pid=%s>" % (conn.path, conn.hello.get("pid"))
        return "<ce_auth.AsyncClient socket=%r not connected>" % (self._explicit or "(default)")

    # ---- internals ----------------------------------------------------------

    def _get_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            # Python 3.9's Lock binds to the loop it is made on
            self._lock = asyncio.Lock()
            self._lock_loop = loop
        return self._lock

    def _usable(self) -> Optional[_AConn]:
        conn = self._conn
        if conn is not None and (conn.loop is not asyncio.get_running_loop() or conn.pid != os.getpid()):
            # made on another event loop (or inherited through fork): not usable here
            self._conn = None
            if conn.pid == os.getpid():
                conn.close()
            conn = None
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _autostart_on(self) -> bool:
        if self._autostart is not None:
            return self._autostart
        return not _autostart.autostart_disabled()

    async def _call(self, req: Dict[str, Any], retry: bool, autostart: bool) -> bytes:
        op = req["op"]
        line = encode(req)
        timeout = reply_timeout(req, self._timeout)
        async with self._get_lock():
            conn = self._usable()
            if conn is None:
                return await self._open(line, op, autostart, timeout)
            try:
                return await self._exchange(conn, line, op, timeout)
            except (_Eof, OSError) as e:
                self._drop()
                if not retry:
                    raise ConnectionLost("talking to ce-authd on %s (`%s`): %s" % (conn.path, op, _why(e))) from None
                log.debug("ce-authd connection on %s lost (%s); reconnecting once", conn.path, _why(e))
                return await self._open(line, op, autostart, timeout)

    async def _exchange(self, conn: _AConn, line: bytes, op: str, timeout: float) -> bytes:
        try:
            async with _deadline(timeout):
                await conn.send(line)
                reply_line = await conn.read_line()
        except asyncio.TimeoutError:
            self._drop()
            raise ConnectionLost(
                "no reply from ce-authd on %s within %g s (to `%s`)" % (conn.path, timeout, op)
            ) from None
        except ProtocolError:
            self._drop()
            raise
        except asyncio.CancelledError:
            # a reply may still come: this connection is out of step now
            self._drop()
            raise
        return reply_line

    async def _open(
        self, line: Optional[bytes], op: str, autostart: bool, timeout: Optional[float] = None
    ) -> bytes:
        path = socket_path(self._explicit)
        timeout = timeout or self._timeout
        try:
            conn = await _connect_trusted(path, self._timeout)
        except NotRunning as e:
            if not (e.absent and autostart and self._autostart_on()):
                raise
            conn = await self._start_daemon(path)
        self.connections += 1
        try:
            await asyncio.wait_for(conn.send(_HELLO_LINE + line if line is not None else _HELLO_LINE), self._timeout)
            conn.hello = parse_hello(parse_reply(await asyncio.wait_for(conn.read_line(), self._timeout), "hello"))
            if line is None:
                self._conn = conn
                return b""
            reply_line = await asyncio.wait_for(conn.read_line(), timeout)
        except asyncio.TimeoutError:
            conn.close()
            raise ConnectionLost("no reply from ce-authd on %s (to `%s`) in time" % (path, op)) from None
        except (_Eof, OSError) as e:
            conn.close()
            raise ConnectionLost("talking to ce-authd on %s (`%s`): %s" % (path, op, _why(e))) from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return reply_line

    async def _start_daemon(self, path: str) -> _AConn:
        config = self._config or os.environ.get("CE_AUTH_CONFIG") or None
        log.debug("nothing answers on %s; starting ce-authd", path)
        loop = asyncio.get_running_loop()
        # fork and exec off the event loop
        starter = await loop.run_in_executor(None, _autostart.Starter, path, self._daemon, config)
        while True:
            try:
                conn = await _connect_trusted(path, self._timeout)
            except NotRunning as e:
                last = str(e)
            except CeAuthError:
                starter.done()
                raise
            else:
                starter.done()
                return conn
            if starter.give_up():
                raise starter.failure(last)
            await asyncio.sleep(_autostart.POLL_INTERVAL)
