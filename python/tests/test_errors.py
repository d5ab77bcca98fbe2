"""Every exception class, each raised by a real situation: the daemon's
errors with its own message and code, and this side's own."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

import ce_auth


def test_not_running_names_the_socket(tmp_path):
    path = str(tmp_path / "run" / "agent.sock")
    with pytest.raises(ce_auth.NotRunning) as e:
        ce_auth.Client(path).token()
    assert e.value.code == "not_running" and e.value.exit_code == 3
    assert path in str(e.value) and "ce-authd --daemon" in str(e.value)
    assert e.value.absent
    # a directory but no socket in it: also absent
    (tmp_path / "run").mkdir(mode=0o700)
    with pytest.raises(ce_auth.NotRunning) as e:
        ce_auth.Client(path).token()
    assert e.value.absent


def test_a_socket_nobody_listens_on_is_not_running(tmp_path):
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(d / "agent.sock"))
    s.close()  # a stale socket file
    with pytest.raises(ce_auth.NotRunning) as e:
        ce_auth.Client(str(d / "agent.sock")).token()
    assert e.value.absent and "refused" in str(e.value).lower()


def test_unknown_profile(daemon):
    with pytest.raises(ce_auth.UnknownProfile) as e:
        ce_auth.get_token("prod")
    assert e.value.code == "unknown_profile" and e.value.exit_code == 4
    assert '"prod"' in str(e.value) and "dev" in str(e.value)


def test_credentials_rejected(daemon):
    with pytest.raises(ce_auth.CredentialsRejected) as e:
        ce_auth.get_token("bad", wait=20)
    assert e.value.code == "credentials_rejected" and e.value.exit_code == 5
    assert "bad" in str(e.value)


def test_issuer_unavailable(daemon):
    with pytest.raises(ce_auth.IssuerUnavailable) as e:
        ce_auth.get_token("down", wait=0)
    assert e.value.code == "issuer_unavailable" and e.value.exit_code == 6


def test_issuer_unavailable_within_the_wait(own_issuer, start_daemon):
    start_daemon(own_issuer)
    own_issuer.inject({"kind": "status", "status": 503}, count=1000)
    with pytest.raises(ce_auth.IssuerUnavailable) as e:
        ce_auth.get_token(wait=1)
    assert "503" in str(e.value) or "unavailable" in str(e.value)
    own_issuer.clear_faults()
    # once the issuer is back, a token within the wait
    assert ce_auth.is_bearer_token(ce_auth.get_token(wait=20).access_token)


def test_config_error(daemon, home):
    home.config.write_text("this is [not toml\n")
    with pytest.raises(ce_auth.ConfigError) as e:
        ce_auth.default_client().request({"op": "reload"})
    assert e.value.code == "config_error" and e.value.exit_code == 7
    assert str(home.config) in str(e.value) and "unchanged" in str(e.value)


def test_other_daemon_errors_are_daemon_errors(daemon):
    c = ce_auth.Client()
    with pytest.raises(ce_auth.DaemonError) as e:
        c.request({"op": "no_such_op"})
    assert e.value.code == "bad_request" and e.value.exit_code == 1
    # the connection stays usable after a bad request
    assert ce_auth.is_bearer_token(c.token().access_token)
    with pytest.raises(ce_auth.DaemonError) as e:
        c.request({"op": "add", "profile": "dev", "settings": {"client_id": "x"}, "secret": "the-secret-value-xyz"})
    assert e.value.code == "profile_exists"
    assert "the-secret-value-xyz" not in str(e.value) + repr(e.value) and c.connections == 1


class FakeDaemon:
    """A same-uid listener speaking whatever lines it is given: the first
    to ``hello``, the rest to each request after it."""

    def __init__(self, tmp: Path, replies):
        self.dir = tmp / "fake"
        self.dir.mkdir(mode=0o700)
        self.path = str(self.dir / "agent.sock")
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(self.path)
        self.sock.listen(4)
        self.replies = list(replies)
        self.received = b""
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        conn, _ = self.sock.accept()
        with conn:
            try:
                f = conn.makefile("rb")
                for reply in self.replies:
                    line = f.readline()
                    if not line:
                        return
                    self.received += line
                    if reply is None:
                        return  # close without answering
                    conn.sendall(reply)
                # then wait for the client to go
                f.read()
            except OSError:
                pass  # the client went first (it refused what it got)


HELLO = b'{"ok":true,"version":1,"daemon":"fake 0","pid":1}\n'


@pytest.mark.parametrize(
    "reply,why",
    [
        (b"not json\n", "not valid JSON"),
        (b'{"ok":true,"access_token":"tok\\nX-Injected: 1","token_type":"bearer","expires_at":1,"profile":"p"}\n', "RFC 6750"),
        (b'{"ok":true,"access_token":"' + b"a" * 16385 + b'","token_type":"bearer","expires_at":1,"profile":"p"}\n', "RFC 6750"),
        (b'{"ok":true,"token_type":"bearer","expires_at":1,"profile":"p"}\n', "expected shape"),
        (b"x" * (70 * 1024) + b"\n", "longer than 65536"),
    ],
)
def test_protocol_errors_for_replies_the_protocol_does_not_allow(tmp_path, reply, why):
    fake = FakeDaemon(tmp_path, [HELLO, reply])
    with pytest.raises(ce_auth.ProtocolError) as e:
        ce_auth.Client(fake.path).token()
    assert why in str(e.value) and e.value.code == "protocol_error" and e.value.exit_code == 1
    assert "X-Injected" not in str(e.value)


@pytest.mark.parametrize("size,ok", [(64 * 1024, True), (64 * 1024 + 1, False)])
def test_the_line_limit_is_64_kib_including_the_newline(tmp_path, size, ok):
    """Both clients take a reply of exactly 64 KiB and refuse one byte more."""
    import asyncio

    pad = b'{"ok":true,"pad":"'
    tail = b'","access_token":"abc","token_type":"bearer","expires_at":1,"profile":"p"}\n'
    reply = pad + b"x" * (size - len(pad) - len(tail)) + tail
    assert len(reply) == size
    for kind in ("sync", "async"):
        fake = FakeDaemon(tmp_path / kind, [HELLO, reply]) if (tmp_path / kind).mkdir() is None else None
        if kind == "sync":
            call = lambda: ce_auth.Client(fake.path).token()  # noqa: E731
        else:
            call = lambda: asyncio.run(ce_auth.AsyncClient(fake.path).token())  # noqa: E731
        if ok:
            assert call().access_token == "abc"
        else:
            with pytest.raises(ce_auth.ProtocolError) as e:
                call()
            assert "longer than 65536" in str(e.value)


def test_another_protocol_version_is_a_protocol_error(tmp_path):
    fake = FakeDaemon(tmp_path, [b'{"ok":true,"version":2,"daemon":"ce-authd 9.0","pid":1}\n', b'{"ok":true}\n'])
    with pytest.raises(ce_auth.ProtocolError) as e:
        ce_auth.Client(fake.path).token()
    assert "version 2" in str(e.value)


def test_connection_lost_when_the_daemon_hangs_up_mid_request(tmp_path):
    fake = FakeDaemon(tmp_path, [HELLO, None])
    with pytest.raises(ce_auth.ConnectionLost) as e:
        ce_auth.Client(fake.path).token()
    assert e.value.code == "connection_lost" and e.value.exit_code == 1
    assert fake.path in str(e.value)


def test_connection_lost_when_no_reply_comes_in_time(tmp_path):
    d = tmp_path / "slow"
    d.mkdir(mode=0o700)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(d / "agent.sock"))
    srv.listen(1)  # accepts (the kernel does) but never answers
    with pytest.raises(ce_auth.ConnectionLost) as e:
        ce_auth.Client(str(d / "agent.sock"), timeout=0.3).token()
    assert "in time" in str(e.value) or "within" in str(e.value)
    import asyncio

    with pytest.raises(ce_auth.ConnectionLost) as e:
        asyncio.run(ce_auth.AsyncClient(str(d / "agent.sock"), timeout=0.3).token())
    assert "in time" in str(e.value) or "within" in str(e.value)
    srv.close()


def test_autostart_failed_says_what_the_daemon_said(tmp_path, monkeypatch):
    fake = tmp_path / "ce-authd"
    fake.write_text("#!/bin/sh\necho 'config is broken: line 3' >&2\nexit 7\n")
    fake.chmod(0o755)
    monkeypatch.delenv("CE_AUTH_NO_AUTOSTART")
    path = str(tmp_path / "run" / "agent.sock")
    with pytest.raises(ce_auth.AutostartFailed) as e:
        ce_auth.Client(path, daemon=str(fake)).token()
    msg = str(e.value)
    assert "exit status: 7" in msg and "config is broken: line 3" in msg and path in msg
    assert isinstance(e.value, ce_auth.NotRunning) and e.value.exit_code == 3


def test_autostart_without_a_daemon_on_path(tmp_path, monkeypatch):
    monkeypatch.delenv("CE_AUTH_NO_AUTOSTART")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ce_auth.AutostartFailed) as e:
        ce_auth.Client(str(tmp_path / "run" / "agent.sock")).token()
    assert "not found on PATH" in str(e.value)


def test_untrusted_directory_mode_and_symlink(tmp_path):
    d = tmp_path / "open"
    d.mkdir()
    os.chmod(str(d), 0o755)
    with pytest.raises(ce_auth.Untrusted) as e:
        ce_auth.Client(str(d / "agent.sock")).token()
    assert "mode 755" in str(e.value) and "chmod 700" in str(e.value) and e.value.exit_code == 3
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(ce_auth.Untrusted) as e:
        ce_auth.Client(str(link / "agent.sock")).token()
    assert "symbolic link" in str(e.value) and e.value.code == "untrusted"
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(ce_auth.Untrusted) as e:
        ce_auth.Client(str(f / "agent.sock")).token()
    assert "not a directory" in str(e.value)
