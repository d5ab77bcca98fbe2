"""Trust at the client's end, tried with a second real uid (``useradd`` +
``setpriv``): another user's directory, and another user's listener in a
directory that looks right. Nothing may be sent to either."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys

import pytest

import ce_auth
from support import OTHER_USER, FakeDaemon, other_ids, shared_tmpdir


@pytest.fixture
def other():
    return other_ids()


@pytest.fixture
def base():
    d = shared_tmpdir()
    yield d
    shutil.rmtree(str(d), ignore_errors=True)


def attempts(path):
    """Every way the package could send something to ``path``; each must be refused."""

    def cli():
        out = subprocess.run(
            [sys.executable, "-m", "ce_auth", "token", "--socket", path],
            capture_output=True,
            text=True,
            env=dict(os.environ, CE_AUTH_NO_AUTOSTART="1"),
        )
        assert out.returncode == 3, out.stderr
        raise ce_auth.Untrusted(out.stderr)

    return [
        lambda: ce_auth.Client(path).token(),
        lambda: ce_auth.Client(path).request({"op": "add", "profile": "p", "settings": {}, "secret": "victim-secret"}),
        lambda: ce_auth.Client(path).status(),
        lambda: asyncio.run(ce_auth.AsyncClient(path).token()),
        cli,
    ]


def test_a_directory_of_another_user_is_refused_before_connecting(other, base):
    uid, gid = other
    theirs = base / "theirs"
    theirs.mkdir()
    os.chown(str(theirs), uid, gid)
    os.chmod(str(theirs), 0o777)
    path = str(theirs / "agent.sock")
    fake = FakeDaemon(uid, gid, path)
    try:
        for attempt in attempts(path):
            with pytest.raises(ce_auth.Untrusted) as e:
                attempt()
            assert "belongs to uid %d (%s)" % (uid, OTHER_USER) in str(e.value), str(e.value)
            assert path in str(e.value)
        assert fake.connections(expected=0) == [], "the client connected"
    finally:
        fake.stop()


def test_a_listener_of_another_user_gets_nothing(other, base):
    uid, gid = other
    ours = base / "ours"
    ours.mkdir()
    # open long enough for the other user to bind its socket in it; then it looks right
    os.chmod(str(ours), 0o777)
    path = str(ours / "agent.sock")
    fake = FakeDaemon(uid, gid, path)
    os.chmod(str(ours), 0o700)
    assert os.stat(str(ours)).st_uid == os.geteuid()
    try:
        n = 0
        for attempt in attempts(path):
            with pytest.raises(ce_auth.Untrusted) as e:
                attempt()
            n += 1
            msg = str(e.value)
            assert "served by uid %d (%s)" % (uid, OTHER_USER) in msg and "nothing was sent" in msg, msg
            assert path in msg and "victim-secret" not in msg
        got = fake.connections(expected=n)
        assert got == [0] * n, "one connection per attempt, not a byte on any: %r" % got
    finally:
        fake.stop()


def test_a_listener_of_another_user_under_autostart_is_not_replaced(other, base, monkeypatch):
    """Autostart is for an absent daemon, never for an untrusted one."""
    uid, gid = other
    ours = base / "ours"
    ours.mkdir()
    os.chmod(str(ours), 0o777)
    path = str(ours / "agent.sock")
    fake = FakeDaemon(uid, gid, path)
    os.chmod(str(ours), 0o700)
    monkeypatch.delenv("CE_AUTH_NO_AUTOSTART")
    try:
        with pytest.raises(ce_auth.Untrusted):
            ce_auth.Client(path, daemon="/bin/false").token()
        assert fake.connections(expected=1) == [0]
    finally:
        fake.stop()
