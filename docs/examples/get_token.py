#!/usr/bin/env python3
"""Get a Climate Engine access token from ce-authd with only the standard library.

    python3 get_token.py [-p PROFILE] [--min-ttl SECS] [--socket PATH]

Prints the bare token. Exit status as for `ce-auth token`: 3 no daemon,
4 unknown profile, 5 credentials rejected, 6 issuer unavailable, 7 config, 1 other.

As a library:

    from get_token import get_token
    token = get_token(profile="dev")["access_token"]
"""

import argparse
import json
import os
import pwd
import re
import socket
import stat
import struct
import sys

PROTOCOL_VERSION = 1
MAX_LINE = 64 * 1024
EXIT_FOR_CODE = {
    "unknown_profile": 4,
    "credentials_rejected": 5,
    "issuer_unavailable": 6,
    "config_error": 7,
    "permission_denied": 3,
}


class CeAuthError(Exception):
    """ce-authd answered with an error (or could not be reached: code "not_running")."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def socket_path():
    """Where ce-auth looks: $CE_AUTH_SOCK, $XDG_RUNTIME_DIR/ce-auth/agent.sock,
    /run/user/<uid>/ce-auth/agent.sock, ~/.cache/ce-auth/<host>/agent.sock."""
    if os.environ.get("CE_AUTH_SOCK"):
        return os.environ["CE_AUTH_SOCK"]
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(xdg):
        return os.path.join(xdg, "ce-auth", "agent.sock")
    run = "/run/user/%d" % os.getuid()
    try:
        st = os.lstat(run)
        if sys.platform.startswith("linux") and stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
            return os.path.join(run, "ce-auth", "agent.sock")
    except OSError:
        pass
    home = os.environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
    host = re.sub(r"[^A-Za-z0-9._-]", "_", os.uname().nodename)[:64].strip(".") or "localhost"
    return os.path.join(home, ".cache", "ce-auth", host, "agent.sock")


def check_directory(path):
    """The socket's directory must be a real directory of ours, mode 0700."""
    d = os.path.dirname(path) or "."
    try:
        st = os.lstat(d)
    except FileNotFoundError:
        raise CeAuthError("not_running", "no ce-authd answers on %s (no %s)" % (path, d))
    if not stat.S_ISDIR(st.st_mode):
        raise CeAuthError("permission_denied", "refusing %s: %s is not a real directory" % (path, d))
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != 0o700:
        raise CeAuthError(
            "permission_denied",
            "refusing %s: %s belongs to uid %d with mode %03o; it must be yours, mode 0700"
            % (path, d, st.st_uid, stat.S_IMODE(st.st_mode)),
        )


def check_listener(sock, path):
    """The process listening must run as us or as root (Linux: SO_PEERCRED)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    if uid not in (os.geteuid(), 0):
        raise CeAuthError(
            "permission_denied",
            "refusing %s: it is served by uid %d, not by you; nothing was sent" % (path, uid),
        )


class Connection:
    """One connection to ce-authd; requests are answered in order, one JSON line each."""

    def __init__(self, path=None, timeout=120):
        path = path or socket_path()
        check_directory(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
            check_listener(self.sock, path)
        except OSError as e:
            self.sock.close()
            raise CeAuthError("not_running", "no ce-authd answers on %s: %s" % (path, e))
        except CeAuthError:
            self.sock.close()
            raise
        self.file = self.sock.makefile("rwb")
        hello = self.request({"op": "hello", "version": PROTOCOL_VERSION, "client": "get_token.py"})
        if hello.get("version") != PROTOCOL_VERSION:
            raise CeAuthError("unsupported_version", "ce-authd speaks protocol %r" % hello.get("version"))

    def request(self, obj):
        self.file.write(json.dumps(obj).encode("utf-8") + b"\n")
        self.file.flush()
        line = self.file.readline(MAX_LINE + 1)
        if not line.endswith(b"\n"):
            raise CeAuthError("internal", "ce-authd closed the connection or sent an over-long line")
        reply = json.loads(line)
        if not reply.get("ok"):
            err = reply.get("error") or {}
            raise CeAuthError(err.get("code", "internal"), err.get("message", "unknown error"))
        return reply

    def close(self):
        self.file.close()
        self.sock.close()


def get_token(profile=None, min_ttl=None, path=None):
    """A dict with access_token, token_type, expires_at and profile."""
    conn = Connection(path)
    try:
        req = {"op": "token"}
        if profile:
            req["profile"] = profile
        if min_ttl is not None:
            req["min_ttl"] = min_ttl
        return conn.request(req)
    finally:
        conn.close()


def main():
    parser = argparse.ArgumentParser(description="Print an access token from ce-authd.")
    parser.add_argument("-p", "--profile")
    parser.add_argument("--min-ttl", type=int)
    parser.add_argument("--socket")
    args = parser.parse_args()
    try:
        reply = get_token(args.profile, args.min_ttl, args.socket)
    except CeAuthError as e:
        print("get_token.py: %s" % e, file=sys.stderr)
        return 3 if e.code == "not_running" else EXIT_FOR_CODE.get(e.code, 1)
    token = reply["access_token"]
    # an RFC 6750 bearer token only: a newline would let a daemon inject output
    if not re.fullmatch(r"[A-Za-z0-9\-._~+/]+=*", token) or len(token) > 16384:
        print("get_token.py: the daemon sent a malformed token", file=sys.stderr)
        return 1
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
