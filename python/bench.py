#!/usr/bin/env python3
"""Benchmarks of the ce_auth package, in one run, against the real ce-authd
and the emulated issuer on loopback:

1. ``get_token()`` latency with the kept default client in a warm process
   (and ``Client.token()``, ``AsyncClient.token()``): median and p99 of
   single calls, timed one by one.
2. Per-request overhead of ``ce_auth.Session`` against a plain
   ``requests.Session`` with a static ``Authorization`` header, on a
   keep-alive HTTP/1.1 stdlib server in another process: rounds of
   interleaved batches, the median per-request time of each, the overhead
   as the ratio of the medians.
3. The tutorial's way, for comparison: a fresh Python process fetching a
   token from the issuer with ``requests`` (password grant), then with
   ``authlib`` (``client_secret_jwt``), against a fresh process calling
   ``ce_auth.get_token()`` and ``ce-auth token``: median wall time from
   spawn to exit.

    CE_AUTHD=target/release/ce-authd CE_AUTH_BIN=target/release/ce-auth \\
        python/.venv/bin/python python/bench.py [--quick] [--json FILE]

Needs requests and authlib in the running interpreter (``pip install
'./python[requests]' authlib``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EMAIL = "bench@example.com"
PASSWORD = "bench-password-1"
CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-secret-0123456789abcdefghijkl"

HTTP_SERVER = r"""
import http.server, sys
BODY = b'{"ok": true}'
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else delayed ACKs add 40 ms per keep-alive request
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
s.daemon_threads = True
print(s.server_address[1], flush=True)
s.serve_forever()
"""


def binary(env: str, name: str) -> str:
    p = os.environ.get(env) or str(REPO / "target" / "release" / name)
    if not os.access(p, os.X_OK):
        sys.exit("bench.py: %s not found at %s (cargo build --release --bins, or set %s)" % (name, p, env))
    return p


def private(path: Path, text: str) -> Path:
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


class World:
    """An issuer, a daemon with one profile on it, and a plain HTTP server."""

    def __init__(self, authd: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ce-auth-bench-"))
        os.chmod(str(self.dir), 0o700)
        self.procs: List[subprocess.Popen] = []
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir)}
        clients = private(self.dir / "clients.txt", "%s:%s\n" % (CLIENT_ID, CLIENT_SECRET))
        iss = self._spawn(
            [authd, "issuer", "--port", "0", "--users-file", "-", "--clients-file", str(clients)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert iss.stdin and iss.stdout
        iss.stdin.write(("%s:%s\n" % (EMAIL, PASSWORD)).encode())
        iss.stdin.close()
        ready = json.loads(iss.stdout.readline())
        self.base_url = ready["base_url"]
        self.token_url = ready["token_url"]
        secret = private(self.dir / "bench.secret", CLIENT_SECRET)
        config = private(
            self.dir / "config.toml",
            'default_profile = "bench"\n[profiles.bench]\ntoken_url = "%s"\ngrant = "client_credentials"\n'
            'auth_method = "client_secret_jwt"\nclient_id = "%s"\nclient_secret_file = "%s"\n'
            % (self.token_url, CLIENT_ID, secret),
        )
        self.socket = str(self.dir / "run" / "agent.sock")
        self._spawn(
            [authd, "--foreground", "--socket", self.socket, "--config", str(config)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        http = self._spawn([sys.executable, "-c", HTTP_SERVER], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert http.stdout
        self.http_url = "http://127.0.0.1:%d/data" % int(http.stdout.readline())
        self._wait_ready()

    def _spawn(self, argv: List[str], **kw: Any) -> subprocess.Popen:
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p

    def _wait_ready(self) -> None:
        import ce_auth

        end = time.monotonic() + 20
        while True:
            try:
                ce_auth.Client(self.socket, autostart=False).token(wait=20)
                return
            except ce_auth.CeAuthError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.02)

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        shutil.rmtree(str(self.dir), ignore_errors=True)


def percentile(xs: List[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def time_calls(fn: Callable[[], Any], n: int) -> List[float]:
    """Seconds per call, each call timed on its own."""
    clock = time.perf_counter
    out = []
    for _ in range(n):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def bench_token(world: World, n: int) -> Dict[str, Any]:
    import ce_auth

    os.environ["CE_AUTH_SOCK"] = world.socket
    os.environ["CE_AUTH_NO_AUTOSTART"] = "1"
    results: Dict[str, Any] = {}
    for _ in range(2000):  # warm: connection open, code paths hot
        ce_auth.get_token()
    xs = time_calls(ce_auth.get_token, n)
    results["get_token"] = xs
    c = ce_auth.Client(world.socket)
    for _ in range(1000):
        c.token()
    results["Client.token"] = time_calls(c.token, n)
    c.close()

    async def run_async() -> List[float]:
        ac = ce_auth.AsyncClient(world.socket)
        for _ in range(1000):
            await ac.token()
        clock = time.perf_counter
        out = []
        for _ in range(n):
            t0 = clock()
            await ac.token()
            out.append(clock() - t0)
        await ac.aclose()
        return out

    results["AsyncClient.token"] = asyncio.run(run_async())
    # the floor: a raw request/reply on the same socket with no parsing at all
    s = socket.socket(socket.AF_UNIX)
    s.connect(world.socket)
    line = b'{"op":"token"}\n'

    def raw() -> None:
        s.sendall(line)
        s.recv(65536)

    for _ in range(1000):
        raw()
    results["raw socket round trip"] = time_calls(raw, n)
    s.close()
    return {
        k: {"median_us": statistics.median(v) * 1e6, "p99_us": percentile(v, 0.99) * 1e6, "n": len(v)}
        for k, v in results.items()
    }


def bench_session(world: World, rounds: int, batch: int) -> Dict[str, Any]:
    import requests

    import ce_auth

    token = ce_auth.get_token().access_token
    plain = requests.Session()
    plain.headers["Authorization"] = "Bearer " + token
    ours = ce_auth.Session()
    url = world.http_url
    for s in (plain, ours):
        for _ in range(300):
            assert s.get(url).status_code == 200
    per: Dict[str, List[float]] = {"plain": [], "ce_auth": []}
    cpu: Dict[str, List[float]] = {"plain": [], "ce_auth": []}
    clock = time.perf_counter
    cpu_clock = time.process_time
    for r in range(rounds):
        # request by request in turn (which one first alternates by round), so
        # drifting machine load hits both alike
        xs: Dict[str, List[float]] = {"plain": [], "ce_auth": []}
        cs: Dict[str, List[float]] = {"plain": [], "ce_auth": []}
        order = [("plain", plain), ("ce_auth", ours)]
        if r % 2:
            order.reverse()
        for _ in range(batch):
            for name, s in order:
                c0 = cpu_clock()
                t0 = clock()
                s.get(url)
                xs[name].append(clock() - t0)
                cs[name].append(cpu_clock() - c0)
        for name in per:
            per[name].append(statistics.median(xs[name]))
            cpu[name].append(statistics.mean(cs[name]))
    plain_med = statistics.median(per["plain"])
    ours_med = statistics.median(per["ce_auth"])
    plain_cpu = statistics.median(cpu["plain"])
    ours_cpu = statistics.median(cpu["ce_auth"])
    return {
        "plain_cpu_us": plain_cpu * 1e6,
        "ce_auth_cpu_us": ours_cpu * 1e6,
        "cpu_overhead_pct": (ours_cpu / plain_cpu - 1) * 100,
        "plain_median_us": plain_med * 1e6,
        "ce_auth_median_us": ours_med * 1e6,
        "overhead_us": (ours_med - plain_med) * 1e6,
        "overhead_pct": (ours_med / plain_med - 1) * 100,
        "rounds": rounds,
        "requests_per_round": batch,
        "round_medians_us": {k: [round(x * 1e6, 1) for x in v] for k, v in per.items()},
    }


TUTORIAL_REQUESTS = """
import requests, sys
r = requests.post(sys.argv[1], data={"grant_type": "password", "username": sys.argv[2], "password": sys.argv[3]})
r.raise_for_status()
assert r.json()["access_token"]
"""

TUTORIAL_AUTHLIB = """
import sys
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import ClientSecretJWT
s = OAuth2Session(sys.argv[2], sys.argv[3], token_endpoint=sys.argv[1], grant_type="client_credentials",
                  token_endpoint_auth_method=ClientSecretJWT(sys.argv[1]))
assert s.fetch_token()["access_token"]
"""

CE_AUTH_PY = "import ce_auth; assert ce_auth.get_token().access_token"


def bench_processes(world: World, runs: int, ce_auth_bin: Optional[str]) -> Dict[str, Any]:
    env = dict(os.environ, CE_AUTH_SOCK=world.socket, CE_AUTH_NO_AUTOSTART="1", NO_PROXY="*")
    cmds = {
        "python: requests, password grant (tutorial step 1)": [
            sys.executable, "-c", TUTORIAL_REQUESTS, world.token_url, EMAIL, PASSWORD,
        ],
        "python: authlib OAuth2Session, client_secret_jwt (tutorial step 4)": [
            sys.executable, "-c", TUTORIAL_AUTHLIB, world.token_url, CLIENT_ID, CLIENT_SECRET,
        ],
        "python: ce_auth.get_token()": [sys.executable, "-c", CE_AUTH_PY],
        "python: empty interpreter (python -c pass)": [sys.executable, "-c", "pass"],
    }
    if ce_auth_bin:
        cmds["ce-auth token"] = [ce_auth_bin, "token"]
    times: Dict[str, List[float]] = {k: [] for k in cmds}
    for i in range(runs + 3):
        for name, argv in cmds.items():
            t0 = time.perf_counter()
            out = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            dt = time.perf_counter() - t0
            if out.returncode != 0:
                raise RuntimeError("%s failed: %s" % (name, out.stderr.decode()[-2000:]))
            if i >= 3:  # the first rounds warm the page cache
                times[name].append(dt)
    return {k: {"median_ms": statistics.median(v) * 1e3, "runs": len(v)} for k, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small numbers, to check that it works")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    a = ap.parse_args()
    authd = binary("CE_AUTHD", "ce-authd")
    ce_auth_bin = os.environ.get("CE_AUTH_BIN") or str(REPO / "target" / "release" / "ce-auth")
    if not os.access(ce_auth_bin, os.X_OK):
        ce_auth_bin = None
    n, rounds, batch, runs = (2000, 3, 300, 5) if a.quick else (50000, 9, 3000, 30)
    world = World(authd)
    try:
        results = {
            "python": sys.version.split()[0],
            "machine": "%s, %d cores" % (os.uname().machine, os.cpu_count() or 0),
            "loadavg_before": open("/proc/loadavg").read().split()[:3],
            "token": bench_token(world, n),
            "session": bench_session(world, rounds, batch),
            "processes": bench_processes(world, runs, ce_auth_bin),
        }
    finally:
        world.close()
    print("Python %s on %s; load average before: %s" % (results["python"], results["machine"], " ".join(results["loadavg_before"])))
    print("\n1. token latency, warm process, kept connection (%d calls each)" % n)
    for k, v in results["token"].items():
        print("   %-24s median %6.1f us   p99 %6.1f us" % (k, v["median_us"], v["p99_us"]))
    s = results["session"]
    print("\n2. requests.Session per request (%d rounds x %d requests, keep-alive HTTP/1.1)" % (s["rounds"], s["requests_per_round"]))
    print("   plain, static header     median %6.1f us" % s["plain_median_us"])
    print("   ce_auth.Session          median %6.1f us" % s["ce_auth_median_us"])
    print("   overhead                 %+6.1f us  (%+.1f %%)" % (s["overhead_us"], s["overhead_pct"]))
    print(
        "   client CPU per request   plain %.1f us, ce_auth %.1f us (%+.1f %%)"
        % (s["plain_cpu_us"], s["ce_auth_cpu_us"], s["cpu_overhead_pct"])
    )
    print("\n3. a token in a fresh process (median of %d runs)" % runs)
    for k, v in results["processes"].items():
        print("   %-68s %7.1f ms" % (k, v["median_ms"]))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
