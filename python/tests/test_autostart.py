"""Autostart: with nothing on the socket, the package starts ``ce-authd
--daemon`` itself, with a minimal environment, as ``ce-auth`` does."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

import ce_auth
from support import ce_authd, kill_pid, pid_gone, wait_for


@pytest.fixture
def autostart_env(home, issuer, monkeypatch, tmp_path):
    """CE_AUTH_SOCK in a private directory with nothing there yet, a config,
    ce-authd on PATH, autostart on; yields the socket path. Any daemon
    started is killed at the end."""
    home.write_config(issuer)
    sock = str(home.path / "auto" / "agent.sock")
    monkeypatch.setenv("CE_AUTH_SOCK", sock)
    monkeypatch.setenv("CE_AUTH_CONFIG", str(home.config))
    monkeypatch.setenv("PATH", str(Path(ce_authd()).parent) + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setenv("HOME", str(home.path))
    monkeypatch.delenv("CE_AUTH_NO_AUTOSTART")
    pids = []
    yield sock, pids
    # and whatever the pidfile beside the socket names, should a test have failed early
    try:
        pids.append(int((Path(sock).parent / "ce-authd.pid").read_text().strip()))
    except (OSError, ValueError):
        pass
    for pid in pids:
        kill_pid(pid)


def environ_of(pid: int) -> dict:
    raw = Path("/proc/%d/environ" % pid).read_bytes()
    return dict(kv.split("=", 1) for kv in raw.decode().split("\0") if "=" in kv)


def test_the_package_starts_the_daemon_with_a_minimal_environment(autostart_env, monkeypatch):
    sock, pids = autostart_env
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "caller-secret-1")
    monkeypatch.setenv("CE_ACCESS_TOKEN", "caller-token-2")
    monkeypatch.setenv("CE_AUTH_EXTRA", "kept")
    monkeypatch.setenv("LC_TIME", "C")
    assert not os.path.exists(sock)
    c = ce_auth.Client()
    t = c.token()
    pid = c.hello()["pid"]
    pids.append(pid)
    assert ce_auth.is_bearer_token(t.access_token) and t.profile == "dev"
    assert os.path.exists(sock)
    st = os.stat(os.path.dirname(sock))
    assert st.st_mode & 0o777 == 0o700 and st.st_uid == os.geteuid()
    env = environ_of(pid)
    assert "AWS_SECRET_ACCESS_KEY" not in env and "CE_ACCESS_TOKEN" not in env
    assert env.get("CE_AUTH_EXTRA") == "kept" and env.get("LC_TIME") == "C"
    assert env.get("CE_AUTH_SOCK") == sock and env.get("HOME") == os.environ["HOME"]
    assert set(env) <= {
        "PATH", "HOME", "LC_TIME", "CE_AUTH_SOCK", "CE_AUTH_CONFIG", "CE_AUTH_EXTRA",
    } | set(ce_auth._autostart.AUTOSTART_ENV) | {k for k in env if k.startswith(("LC_", "CE_AUTH_"))}
    # the detached daemon was started with --config from CE_AUTH_CONFIG
    cmdline = Path("/proc/%d/cmdline" % pid).read_bytes().split(b"\0")
    assert b"--config" in cmdline and os.environ["CE_AUTH_CONFIG"].encode() in cmdline
    # and it keeps serving other clients
    assert ce_auth.Client().token() == t
    c.request({"op": "shutdown"})
    wait_for("the autostarted daemon to exit", lambda: True if pid_gone(pid) else None)


def test_status_never_starts_a_daemon(autostart_env):
    sock, _ = autostart_env
    with pytest.raises(ce_auth.NotRunning):
        ce_auth.Client().status()
    assert not os.path.exists(sock)


def test_no_autostart_env_and_argument_turn_it_off(autostart_env, monkeypatch):
    sock, _ = autostart_env
    monkeypatch.setenv("CE_AUTH_NO_AUTOSTART", "1")
    with pytest.raises(ce_auth.NotRunning) as e:
        ce_auth.get_token()
    assert not isinstance(e.value, ce_auth.AutostartFailed)
    monkeypatch.setenv("CE_AUTH_NO_AUTOSTART", "0")
    with pytest.raises(ce_auth.NotRunning):
        ce_auth.Client(autostart=False).token()
    assert not os.path.exists(sock)


def test_clients_racing_to_start_the_daemon_all_get_the_same_one(autostart_env):
    sock, pids = autostart_env
    results, errors = [], []

    def one():
        try:
            c = ce_auth.Client()
            results.append((c.token().access_token, c.hello()["pid"]))
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    pids.extend({pid for _, pid in results})
    assert not errors, errors
    assert len({tok for tok, _ in results}) == 1 and len({pid for _, pid in results}) == 1


@pytest.mark.anyio
async def test_the_async_client_autostarts_too(autostart_env):
    sock, pids = autostart_env
    async with ce_auth.AsyncClient() as c:
        t = await c.token()
        pids.append((await c.hello())["pid"])
        assert ce_auth.is_bearer_token(t.access_token)
        ts = await asyncio.gather(*(c.token() for _ in range(20)))
        assert {x.access_token for x in ts} == {t.access_token}
