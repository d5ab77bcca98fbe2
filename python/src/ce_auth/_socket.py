"""Where the daemon's socket is, and whether the one found may be trusted.

The same rules as ``ce-auth`` (``src/paths.rs``, ``src/client/transport.rs``):

* the path: an explicit one, else ``$CE_AUTH_SOCK``, else
  ``$XDG_RUNTIME_DIR/ce-auth/agent.sock`` (an absolute value only), else on
  Linux ``/run/user/<uid>/ce-auth/agent.sock`` when ``/run/user/<uid>`` is a
  real directory owned by the uid, else
  ``<home>/.cache/ce-auth/<hostname>/agent.sock``;
* before a byte is sent on a connection: the socket's directory is opened
  without following a symlink and must be a directory owned by our effective
  uid with mode exactly 0700, the connection is made through the open
  directory (``/proc/self/fd/N/agent.sock`` on Linux), and the listening
  process must run as our effective uid or as root (``SO_PEERCRED``).
"""

from __future__ import annotations

import errno
import os
import pwd
import socket
import stat
import struct
import sys
TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing at run time

from .errors import CeAuthError, NotRunning, Untrusted

if TYPE_CHECKING:  # pragma: no cover
    from typing import Callable, Mapping, Optional, Tuple

__all__ = [
    "socket_path",
    "socket_path_from",
    "host_dir_name",
    "connect_trusted",
    "open_trusted_dir",
    "peer_uid",
    "is_absent",
]

_SOCKET_NAME_HINT = "choose another socket with --socket or CE_AUTH_SOCK"


def _non_empty(v: Optional[str]) -> Optional[str]:
    return v if v else None


def _absolute(v: Optional[str]) -> Optional[str]:
    v = _non_empty(v)
    return v if v is not None and os.path.isabs(v) else None


def host_dir_name(host: str) -> str:
    """A host name as a directory name: characters outside ``[A-Za-z0-9._-]``
    as ``_``, at most 64 of them, never empty or a dot name."""
    out = []
    for c in host[:64]:
        if c.isascii() and (c.isalnum() or c in "._-"):
            out.append(c)
        else:
            out.append("_")
    name = "".join(out)
    if not name or set(name) == {"."}:
        name = "localhost"
    return name


def _run_user_dir_is_ours(uid: int) -> bool:
    try:
        st = os.lstat("/run/user/%d" % uid)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == uid


def _passwd_home() -> Optional[str]:
    try:
        return pwd.getpwuid(os.geteuid()).pw_dir or None
    except KeyError:
        return None


def socket_path_from(
    explicit: Optional[str],
    env: Mapping[str, str],
    uid: int,
    run_user: Callable[[int], bool],
    passwd_home: Callable[[], Optional[str]],
    hostname: Callable[[], str],
    linux: bool,
) -> str:
    """:func:`socket_path` with every input passed in (for tests)."""
    if explicit:
        return os.fspath(explicit)
    p = _non_empty(env.get("CE_AUTH_SOCK"))
    if p is not None:
        return p
    xdg = _absolute(env.get("XDG_RUNTIME_DIR"))
    if xdg is not None:
        return os.path.join(xdg, "ce-auth", "agent.sock")
    if linux and run_user(uid):
        return "/run/user/%d/ce-auth/agent.sock" % uid
    home = _absolute(env.get("HOME"))
    if home is None:
        h = passwd_home()
        home = h if h and os.path.isabs(h) else None
    if home is None:
        raise CeAuthError(
            "no place for the socket: XDG_RUNTIME_DIR is unset, /run/user/%d does not exist "
            "and there is no home directory; set CE_AUTH_SOCK (or XDG_RUNTIME_DIR) to a path "
            "in a directory of yours" % uid,
            code="no_socket_path",
        )
    return os.path.join(home, ".cache", "ce-auth", host_dir_name(hostname()), "agent.sock")


def socket_path(explicit: "Optional[str | os.PathLike[str]]" = None) -> str:
    """The daemon's socket path, found exactly as ``ce-auth`` finds it."""
    return socket_path_from(
        os.fspath(explicit) if explicit is not None else None,
        os.environ,
        os.geteuid(),
        _run_user_dir_is_ours,
        _passwd_home,
        lambda: os.uname().nodename,
        sys.platform.startswith("linux"),
    )


def _split(path: str) -> Tuple[str, str]:
    """The socket's directory and file name (as Rust's ``Path::parent`` and
    ``file_name`` see them: trailing slashes and ``.`` components do not count)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or parts[-1] == "..":
        raise NotRunning("%s names no socket" % path, socket=path, absent=False)
    name = parts[-1]
    head = "/".join(parts[:-1])
    if path.startswith("/"):
        head = "/" + head
    return (head or "."), name


def _untrusted_kind(path: str, d: str) -> Untrusted:
    try:
        st = os.lstat(d)
        what = "is a symbolic link" if stat.S_ISLNK(st.st_mode) else "is not a directory"
    except OSError:
        what = "cannot be used"
    return Untrusted(
        "refusing to use the socket %s: %s %s; the socket's directory must be a real "
        "directory of yours (mode 0700). Remove it, or %s" % (path, d, what, _SOCKET_NAME_HINT),
        socket=path,
    )


def open_trusted_dir(path: str) -> Tuple[int, str]:
    """Opens the directory of the socket ``path`` without following a symlink
    and checks it (ours, mode 0700). Returns the open descriptor (the caller
    closes it once connected) and the path to connect to, through it.

    Raises :class:`NotRunning` (absent) when the directory does not exist and
    :class:`Untrusted` when it fails the check.
    """
    d, name = _split(path)
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(d, flags)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise NotRunning(
                _not_running_message(path, "%s does not exist" % d), socket=path, absent=True
            ) from None
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _untrusted_kind(path, d) from None
        raise NotRunning(
            _not_running_message(path, "cannot open directory %s: %s" % (d, e.strerror)),
            socket=path,
            absent=False,
        ) from None
    try:
        st = os.fstat(fd)
        own = os.geteuid()
        if st.st_uid != own:
            raise Untrusted(
                "refusing to use the socket %s: directory %s belongs to uid %d%s, not to you "
                "(uid %d); remove it or %s"
                % (path, d, st.st_uid, _user_suffix(st.st_uid), own, _SOCKET_NAME_HINT),
                socket=path,
                owner=st.st_uid,
            )
        mode = stat.S_IMODE(st.st_mode) & 0o777
        if mode != 0o700:
            raise Untrusted(
                "refusing to use the socket %s: directory %s has mode %03o; it must be 0700 "
                "(private to you): run `chmod 700 %s`" % (path, d, mode, d),
                socket=path,
                owner=st.st_uid,
            )
    except BaseException:
        os.close(fd)
        raise
    via = "/proc/self/fd/%d" % fd
    if sys.platform.startswith("linux") and os.path.isdir(via):
        return fd, via + "/" + name
    return fd, os.path.join(d, name)


def _user_suffix(uid: int) -> str:
    """`` (name)`` for a uid with a user name (control characters escaped)."""
    try:
        name = pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return ""
    safe = name.encode("unicode_escape").decode("ascii")
    return " (%s)" % safe


# struct ucred (Linux): pid_t pid; uid_t uid; gid_t gid
_UCRED = struct.Struct("iII")
# struct xucred (macOS, FreeBSD): u_int cr_version; uid_t cr_uid; ... (first 8 bytes)
_XUCRED_HEAD = struct.Struct("II")


def peer_uid(sock: socket.socket) -> Optional[int]:
    """The uid of the process at the other end of a connected Unix socket, or
    ``None`` when the system does not say."""
    if hasattr(socket, "SO_PEERCRED"):
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        _pid, uid, _gid = _UCRED.unpack(raw[: _UCRED.size])
        return int(uid)
    if sys.platform == "darwin" or sys.platform.startswith("freebsd"):
        sol_local = getattr(socket, "SOL_LOCAL", 0)
        local_peercred = getattr(socket, "LOCAL_PEERCRED", 1)
        raw = sock.getsockopt(sol_local, local_peercred, 256)
        _version, uid = _XUCRED_HEAD.unpack(raw[: _XUCRED_HEAD.size])
        return int(uid)
    return None


def check_listener(sock: socket.socket, path: str) -> None:
    """The listener must run as our effective uid, or as root."""
    own = os.geteuid()
    try:
        uid = peer_uid(sock)
    except OSError as e:
        raise Untrusted(
            "refusing to use the socket %s: cannot read who is listening on it (%s)"
            % (path, e.strerror or e),
            socket=path,
        ) from None
    if uid is None:
        raise Untrusted(
            "refusing to use the socket %s: the system does not say who is listening on it"
            % path,
            socket=path,
        )
    if uid != own and uid != 0:
        raise Untrusted(
            "refusing to use the socket %s: it is served by uid %d%s, not by you (uid %d); "
            "nothing was sent. Another user may be impersonating ce-authd: remove the "
            "socket's directory if it is yours, or %s"
            % (path, uid, _user_suffix(uid), own, _SOCKET_NAME_HINT),
            socket=path,
            owner=uid,
        )


def is_absent(e: OSError) -> bool:
    """Whether a connect error means no daemon is there (so starting one may help)."""
    return e.errno in (errno.ENOENT, errno.ECONNREFUSED)


def _not_running_message(path: str, error: str) -> str:
    return (
        "no ce-authd answers on %s (%s); start one with "
        '`eval "$(ce-authd --daemon --socket %s)"`, or let ce_auth start it '
        "(autostart on, CE_AUTH_NO_AUTOSTART unset)" % (path, error, path)
    )


def connect_trusted(path: str, timeout: Optional[float]) -> socket.socket:
    """A connected socket to the daemon at ``path``, after both checks; nothing
    has been sent on it. ``timeout`` bounds each later send and receive
    (``SO_SNDTIMEO``/``SO_RCVTIMEO``; the socket stays in blocking mode).

    Raises :class:`NotRunning` (``absent`` when nothing is there at all) or
    :class:`Untrusted`.
    """
    fd, via = open_trusted_dir(path)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if timeout is not None:
                # also bounds connect(): a full listen backlog blocks it
                set_timeouts(sock, timeout)
            sock.connect(via)
        except OSError as e:
            sock.close()
            raise NotRunning(
                _not_running_message(path, e.strerror or str(e)),
                socket=path,
                absent=is_absent(e),
            ) from None
    finally:
        # the connection is made: the directory handle has done its job
        os.close(fd)
    try:
        check_listener(sock, path)
    except BaseException:
        sock.close()
        raise
    return sock


def set_timeouts(sock: socket.socket, timeout: float) -> None:
    """Bounds each blocking send and receive on ``sock`` by ``timeout`` seconds
    (kernel timeouts: no extra ``poll`` per call, unlike ``settimeout``)."""
    secs = int(timeout)
    usecs = int((timeout - secs) * 1_000_000)
    tv = struct.pack("ll", secs, usecs)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
