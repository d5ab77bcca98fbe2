"""Test support: the real ``ce-authd`` (daemon and emulated issuer) in
private temporary directories, a JWKS-verifying HTTP API on loopback, and
deadline polling. Every process started here is killed at the end of its
test (and, failing that, when the test session ends)."""

from __future__ import annotations

import atexit
import base64
import http.server
import json
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, TypeVar

import jwt

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEADLINE = 20.0

T = TypeVar("T")


def binary(env: str, name: str) -> Optional[str]:
    """A built binary: ``$env``, else ``target/debug/name`` of this repository."""
    p = os.environ.get(env) or str(REPO / "target" / "debug" / name)
    return p if os.access(p, os.X_OK) else None


def need(path: Optional[str], name: str, env: str) -> str:
    if path is None:
        raise RuntimeError("%s not found: build it (cargo build --locked --bins) or set %s" % (name, env))
    return path


CE_AUTHD_FOUND = binary("CE_AUTHD", "ce-authd")
CE_AUTH = binary("CE_AUTH_BIN", "ce-auth")


def ce_authd() -> str:
    return need(CE_AUTHD_FOUND, "ce-authd", "CE_AUTHD")


EMAIL = "user@example.com"
PASSWORD = "user-password-1"
CLIENT_ID = "py-client"
CLIENT_SECRET = "py-secret-0123456789abcdefghijklmnop"


def wait_for(what: str, probe: Callable[[], Optional[T]], timeout: float = DEADLINE, interval: float = 0.01) -> T:
    """Polls ``probe`` until it returns something other than ``None`` (or
    raises AssertionError when ``timeout`` passes)."""
    end = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            v = probe()
        except Exception as e:  # noqa: BLE001  (keep polling; report the last one)
            v, last = None, e
        if v is not None:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out after %g s waiting for %s (last error: %r)" % (timeout, what, last))
        time.sleep(interval)


# ---- processes ---------------------------------------------------------------

_LIVE: "set[subprocess.Popen]" = set()


def _kill_all() -> None:
    for p in list(_LIVE):
        kill(p)


atexit.register(_kill_all)


def spawn(argv: List[str], **kw: Any) -> subprocess.Popen:
    p = subprocess.Popen(argv, **kw)
    _LIVE.add(p)
    return p


def kill(p: subprocess.Popen) -> None:
    """Kills ``p`` (started by these tests) and reaps it."""
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        pass
    _LIVE.discard(p)


def kill_pid(pid: int) -> None:
    """Kills a detached ``ce-authd`` these tests caused to start (checked by
    its command line, so a reused pid is left alone)."""
    try:
        cmd = Path("/proc/%d/cmdline" % pid).read_bytes()
    except OSError:
        return
    if b"ce-authd" in cmd:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def pid_gone(pid: int) -> bool:
    try:
        stat = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def clean_env(home: Path, **extra: str) -> Dict[str, str]:
    """An environment that lets nothing of the caller's change the daemon."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    env.update(extra)
    return env


def private_file(path: Path, text: str) -> Path:
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(str(path), 0o600)
    return path


# ---- a raw protocol client, independent of the package under test ------------------


def raw_request(sock_path: str, req: Dict[str, Any], timeout: float = 5) -> Dict[str, Any]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return json.loads(buf)
    finally:
        s.close()


# ---- the emulated issuer -------------------------------------------------------------


class Issuer:
    """``ce-authd issuer`` with a user, a seeded client and test controls."""

    def __init__(self, tmp: Path, lifetime: int = 900) -> None:
        self.dir = tmp
        clients = private_file(tmp / "clients.txt", "%s:%s\n" % (CLIENT_ID, CLIENT_SECRET))
        self.log = open(str(tmp / "issuer.log"), "wb")
        self.proc = spawn(
            [
                ce_authd(),
                "issuer",
                "--port",
                "0",
                "--users-file",
                "-",
                "--clients-file",
                str(clients),
                "--test-controls",
                "--token-lifetime",
                str(lifetime),
            ],
            env=clean_env(tmp),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(("%s:%s\n" % (EMAIL, PASSWORD)).encode())
        self.proc.stdin.close()
        lines: "queue.Queue[bytes]" = queue.Queue()
        out = self.proc.stdout
        threading.Thread(target=lambda: lines.put(out.readline()), daemon=True).start()
        try:
            first = lines.get(timeout=DEADLINE)
        except queue.Empty:
            kill(self.proc)
            raise AssertionError("the issuer printed no ready line")
        if not first:
            kill(self.proc)
            raise AssertionError("the issuer exited: %s" % (tmp / "issuer.log").read_text())
        ready = json.loads(first)
        self.base_url: str = ready["base_url"]
        self.token_url: str = ready["token_url"]
        self.jwks_url: str = ready["jwks_url"]
        self.test_key: str = ready["test_key"]
        self.lifetime = lifetime
        # the signing key is made in the background: the JWKS answers once it exists
        self.jwks = wait_for("the issuer's JWKS", self._jwks)

    def _jwks(self) -> Optional[Dict[str, Any]]:
        with _opener.open(self.jwks_url, timeout=5) as r:
            return json.loads(r.read())

    def control(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("X-CE-Test-Key", self.test_key)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with _opener.open(req, timeout=10) as r:
            return json.loads(r.read())

    def counters(self) -> Dict[str, Any]:
        return self.control("GET", "/_test/counters")

    def inject(self, fault: Dict[str, Any], count: int = 1) -> None:
        self.control("POST", "/_test/faults", {"fault": fault, "count": count})

    def clear_faults(self) -> None:
        self.control("DELETE", "/_test/faults")

    def stop(self) -> None:
        kill(self.proc)
        self.log.close()


# loopback only: never through a proxy from the environment
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---- the daemon ------------------------------------------------------------------------


def profile_toml(name: str, token_url: str, client_id: str, secret_file: Path, **extra: Any) -> str:
    text = (
        "[profiles.%s]\n"
        'token_url = "%s"\n'
        'grant = "client_credentials"\n'
        'auth_method = "client_secret_jwt"\n'
        'client_id = "%s"\n'
        'client_secret_file = "%s"\n' % (name, token_url, client_id, secret_file)
    )
    for k, v in extra.items():
        text += "%s = %s\n" % (k, json.dumps(v))
    return text + "\n"


class Home:
    """A private directory for one daemon: its config, secrets and socket
    directory (``run/``, created 0700 by the daemon)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.chmod(str(path), 0o700)
        self.socket = str(path / "run" / "agent.sock")
        self.config = path / "config.toml"

    def write_config(self, issuer: Optional[Issuer], extra: str = "", daemon: str = "") -> Path:
        """One profile ``dev`` (the default) on ``issuer``, plus ``bad`` (a
        wrong secret) and ``down`` (an issuer that is not there)."""
        text = 'default_profile = "dev"\n\n'
        if daemon:
            text += "[daemon]\n" + daemon + "\n\n"
        if issuer is not None:
            good = private_file(self.path / "dev.secret", CLIENT_SECRET)
            bad = private_file(self.path / "bad.secret", CLIENT_SECRET + "-wrong")
            text += profile_toml("dev", issuer.token_url, CLIENT_ID, good)
            text += profile_toml("bad", issuer.token_url, CLIENT_ID, bad)
            text += profile_toml("down", "http://127.0.0.1:%d/api/v1/auth/jwt/token" % closed_port(), CLIENT_ID, good)
        text += extra
        tmp = self.config.with_suffix(".tmp")
        private_file(tmp, text)
        os.replace(str(tmp), str(self.config))
        return self.config


def closed_port() -> int:
    """A loopback port nothing listens on (just now)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Daemon:
    """``ce-authd --foreground`` on ``home.socket`` with ``home.config``."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.socket = home.socket
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = home.path / ("daemon-%d.log" % int(time.monotonic() * 1e6))

    def start(self) -> "Daemon":
        self.log = open(str(self.log_path), "wb")
        self.proc = spawn(
            [ce_authd(), "--foreground", "--socket", self.socket, "--config", str(self.home.config)],
            env=clean_env(self.home.path, XDG_RUNTIME_DIR=str(self.home.path / "xdg")),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        wait_for("the daemon to answer hello", self._ready)
        return self

    def _ready(self) -> Optional[bool]:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError("ce-authd exited early (%s): %s" % (self.proc.returncode, self.log_path.read_text()))
        r = raw_request(self.socket, {"op": "hello", "version": 1})
        return True if r.get("ok") else None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """Asks the daemon to stop and waits until it has."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            raw_request(self.socket, {"op": "shutdown"})
        except OSError:
            pass
        try:
            self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            pass
        kill(self.proc)
        self.log.close()

    def kill(self) -> None:
        if self.proc is not None:
            kill(self.proc)
            self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


# ---- the API that checks tokens ---------------------------------------------------------------


class ApiServer:
    """A stdlib HTTP/1.1 keep-alive server on 127.0.0.1 standing in for the
    Climate Engine API: it verifies each bearer token's RS256 signature,
    audience, issuer and expiry against the issuer's JWKS and answers 401
    otherwise (or for a token it was told to reject)."""

    def __init__(self, issuer: Optional[Issuer] = None, verify: bool = True) -> None:
        self.issuer = issuer
        self.keys: Dict[str, Any] = {}
        if issuer is not None:
            for k in issuer.jwks["keys"]:
                self.keys[k["kid"]] = jwt.PyJWK.from_dict(k).key
        self.verify = verify
        self.rejected: "set[str]" = set()
        self.reject_all = False
        self.log: List[Dict[str, Any]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # head and body go out as separate writes: without this, Nagle and
            # delayed ACKs add 40 ms to every keep-alive request
            disable_nagle_algorithm = True

            def log_message(self, *a: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _answer(self) -> None:
                body = self._body()
                status, payload = server.check(self.headers.get("Authorization"))
                with server.lock:
                    server.log.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "authorization": self.headers.get("Authorization"),
                            "body": body,
                            "status": status,
                        }
                    )
                out = json.dumps(payload).encode()
                self.send_response(status)
                if status == 401:
                    self.send_header("WWW-Authenticate", "Bearer")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = _answer

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def check(self, authorization: Optional[str]) -> "tuple[int, Dict[str, Any]]":
        if not self.verify:
            return 200, {"ok": True}
        if not authorization or not authorization.startswith("Bearer "):
            return 401, {"detail": "no bearer token"}
        token = authorization[len("Bearer ") :]
        if self.reject_all or token in self.rejected:
            return 401, {"detail": "rejected"}
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self.keys[kid]
            assert self.issuer is not None
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience="fastapi-users:auth",
                issuer=self.issuer.base_url,
                leeway=0,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except Exception as e:  # noqa: BLE001
            return 401, {"detail": "invalid token: %s" % type(e).__name__}
        return 200, {"user_id": claims.get("user_id"), "exp": claims["exp"]}

    def statuses(self) -> List[int]:
        with self.lock:
            return [e["status"] for e in self.log]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def jwt_exp(token: str) -> int:
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))["exp"]


# ---- a second uid ---------------------------------------------------------------------------

OTHER_USER = "ceauth-other"


def other_ids() -> "tuple[int, int]":
    """uid and gid of a second user (created when missing); skips the test
    when not root."""
    import pwd

    import pytest

    if os.geteuid() != 0:
        pytest.skip("not root, so no process can run as a second user (%s)" % OTHER_USER)
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    try:
        pw = pwd.getpwnam(OTHER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER],
            capture_output=True,
        )
        pw = pwd.getpwnam(OTHER_USER)
    return pw.pw_uid, pw.pw_gid


def python_for(uid: int, gid: int) -> str:
    """A python3 the other user can run (not one under /root)."""
    for p in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(p) and subprocess.run(as_user(uid, gid, [p, "--version"]), capture_output=True).returncode == 0:
            return p
    raise RuntimeError("no python3 the second user can run")


def as_user(uid: int, gid: int, argv: List[str]) -> List[str]:
    return ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid, "--clear-groups"] + argv


FAKE_DAEMON = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(3)
    total = 0
    try:
        while True:
            d = c.recv(65536)
            if not d:
                break
            total += len(d)
    except Exception:
        pass
    c.close()
    print("got", total, flush=True)
"""


class FakeDaemon:
    """A listener run by another uid that reports, per connection, how many
    bytes it received (``got N``)."""

    def __init__(self, uid: int, gid: int, path: str) -> None:
        self.proc = spawn(
            as_user(uid, gid, [python_for(uid, gid), "-c", FAKE_DAEMON, path]),
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        self.lines: "queue.Queue[str]" = queue.Queue()
        out = self.proc.stdout
        assert out is not None

        def pump() -> None:
            for line in iter(out.readline, b""):
                self.lines.put(line.decode().strip())

        threading.Thread(target=pump, daemon=True).start()
        assert self.lines.get(timeout=DEADLINE) == "ready"

    def connections(self, expected: int) -> List[int]:
        """The byte counts of the connections seen, waiting (bounded) for ``expected`` of them."""
        got: List[int] = []
        end = time.monotonic() + DEADLINE
        while len(got) < expected and time.monotonic() < end:
            try:
                got.append(int(self.lines.get(timeout=0.1).split()[1]))
            except queue.Empty:
                pass
        return got

    def stop(self) -> None:
        kill(self.proc)


def shared_tmpdir() -> Path:
    """A temporary directory another uid can traverse (pytest's own are 0700
    under /tmp/pytest-of-root)."""
    d = Path(tempfile.mkdtemp(prefix="ce-auth-py-"))
    os.chmod(str(d), 0o711)
    return d


def ucred_of(sock: socket.socket) -> "tuple[int, int, int]":
    return struct.unpack("iII", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
