"""The pure rules, checked against the Rust side's own unit-test cases:
socket path order, host directory names, the bearer-token rule, the
autostart environment, error codes and exit statuses, and the Token type."""

from __future__ import annotations

import pickle
import sys

import pytest

import ce_auth
from ce_auth import _autostart, _protocol, errors
from ce_auth._socket import host_dir_name, socket_path_from


def resolve(env, run_user=lambda uid: False, home=lambda: None, explicit=None, linux=True):
    return socket_path_from(explicit, env, 1000, run_user, home, lambda: "build-07.example.org", linux)


def test_socket_cli_and_env_win_over_everything():
    env = {"CE_AUTH_SOCK": "/a.sock", "XDG_RUNTIME_DIR": "/run/u"}
    assert resolve(env, explicit="/cli.sock") == "/cli.sock"
    assert resolve(env) == "/a.sock"


def test_socket_xdg_then_run_user_then_home_cache_per_host():
    assert resolve({"XDG_RUNTIME_DIR": "/run/u", "HOME": "/home/u"}, run_user=lambda _: True) == "/run/u/ce-auth/agent.sock"
    env = {"HOME": "/home/u", "TMPDIR": "/var/t"}
    assert resolve(env, run_user=lambda uid: uid == 1000) == "/run/user/1000/ce-auth/agent.sock"
    # not on Linux: no /run/user
    assert resolve(env, run_user=lambda uid: True, linux=False) == "/home/u/.cache/ce-auth/build-07.example.org/agent.sock"
    # no runtime directory: the home's cache, per host; never TMPDIR or /tmp
    assert resolve(env) == "/home/u/.cache/ce-auth/build-07.example.org/agent.sock"
    assert resolve({}, home=lambda: "/pw/home") == "/pw/home/.cache/ce-auth/build-07.example.org/agent.sock"
    with pytest.raises(ce_auth.CeAuthError) as e:
        resolve({})
    assert "CE_AUTH_SOCK" in str(e.value) and e.value.exit_code == 1


def test_socket_ignores_empty_and_relative_values():
    env = {"CE_AUTH_SOCK": "", "XDG_RUNTIME_DIR": "relative/dir", "HOME": "relative/home"}
    assert resolve(env, home=lambda: "/pw") == "/pw/.cache/ce-auth/build-07.example.org/agent.sock"


def test_socket_path_reads_this_process_environment(monkeypatch):
    monkeypatch.setenv("CE_AUTH_SOCK", "/x/y.sock")
    assert ce_auth.socket_path() == "/x/y.sock"
    assert ce_auth.socket_path("/explicit.sock") == "/explicit.sock"
    monkeypatch.delenv("CE_AUTH_SOCK")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/xdg")
    assert ce_auth.socket_path() == "/xdg/ce-auth/agent.sock"


def test_host_names_become_plain_directory_names():
    assert host_dir_name("node-1.cluster") == "node-1.cluster"
    assert host_dir_name("a/b c\n") == "a_b_c_"
    assert host_dir_name("..") == "localhost"
    assert host_dir_name("") == "localhost"
    assert len(host_dir_name("x" * 100)) == 64
    assert host_dir_name("héllo") == "h_llo"


@pytest.mark.parametrize("ok", ["a", "eyJ.eyJ.c2ln", "A-b_c~d+e/f==", "x=", "a" * _protocol.MAX_TOKEN_LEN])
def test_bearer_tokens_are_b64tokens(ok):
    assert ce_auth.is_bearer_token(ok)


@pytest.mark.parametrize(
    "bad", ["", "=", "a b", "tok\nX-Injected: 1", "t\x1b[31m", "a=b", "é", "a\r", "a\n", "a" * (_protocol.MAX_TOKEN_LEN + 1), None, 5]
)
def test_other_strings_are_not_bearer_tokens(bad):
    assert not ce_auth.is_bearer_token(bad)


def test_autostart_keeps_only_what_the_daemon_needs():
    env = {
        "PATH": "/bin",
        "HOME": "/h",
        "LC_TIME": "C",
        "CE_AUTH_SECRET": "s",
        "HTTPS_PROXY": "http://p:1",
        "AWS_SECRET_ACCESS_KEY": "x",
        "GITHUB_TOKEN": "y",
        "CE_ACCESS_TOKEN": "z",
        "LD_PRELOAD": "/evil.so",
        "PYTHONPATH": "/p",
    }
    assert sorted(_autostart.autostart_env(env)) == sorted(["PATH", "HOME", "LC_TIME", "CE_AUTH_SECRET", "HTTPS_PROXY"])


@pytest.mark.parametrize("value,off", [("1", True), ("true", True), ("YES", True), ("anything", True), ("", False), ("0", False), ("false", False), ("No", False)])
def test_no_autostart_values_parse_as_ce_auth_does(value, off):
    assert _autostart.autostart_disabled({"CE_AUTH_NO_AUTOSTART": value}) is off
    assert _autostart.autostart_disabled({}) is False


def test_error_codes_map_to_classes_and_exit_statuses():
    cases = {
        "unknown_profile": (ce_auth.UnknownProfile, 4),
        "credentials_rejected": (ce_auth.CredentialsRejected, 5),
        "issuer_unavailable": (ce_auth.IssuerUnavailable, 6),
        "config_error": (ce_auth.ConfigError, 7),
        "permission_denied": (ce_auth.DaemonError, 3),
        "bad_request": (ce_auth.DaemonError, 1),
        "busy": (ce_auth.DaemonError, 1),
        "internal": (ce_auth.DaemonError, 1),
        "a_code_from_the_future": (ce_auth.DaemonError, 1),
    }
    for code, (cls, status) in cases.items():
        e = errors.error_from_reply({"code": code, "message": "the daemon's words"})
        assert type(e) is cls and isinstance(e, ce_auth.CeAuthError)
        assert e.code == code and str(e) == "the daemon's words" and e.exit_code == status
    assert ce_auth.NotRunning("x").exit_code == 3
    assert ce_auth.AutostartFailed("x").exit_code == 3 and isinstance(ce_auth.AutostartFailed("x"), ce_auth.NotRunning)
    assert ce_auth.Untrusted("x").exit_code == 3
    assert ce_auth.ProtocolError("x").exit_code == 1
    assert ce_auth.ConnectionLost("x").exit_code == 1
    assert isinstance(errors.error_from_reply("nonsense"), ce_auth.ProtocolError)
    assert isinstance(errors.error_from_reply({"code": 5}), ce_auth.ProtocolError)


def test_exit_statuses_match_src_exit_rs():
    from support import REPO

    text = (REPO / "src" / "exit.rs").read_text()
    for name, value in [
        ("OK", errors.EXIT_OK),
        ("FAILURE", errors.EXIT_FAILURE),
        ("USAGE", errors.EXIT_USAGE),
        ("NOT_RUNNING", errors.EXIT_NOT_RUNNING),
        ("UNKNOWN_PROFILE", errors.EXIT_UNKNOWN_PROFILE),
        ("CREDENTIALS_REJECTED", errors.EXIT_CREDENTIALS_REJECTED),
        ("ISSUER_UNAVAILABLE", errors.EXIT_ISSUER_UNAVAILABLE),
        ("CONFIG", errors.EXIT_CONFIG),
    ]:
        assert "pub const %s: i32 = %d;" % (name, value) in text, name


def test_autostart_env_list_matches_conn_rs():
    from support import REPO

    text = (REPO / "src" / "client" / "conn.rs").read_text()
    block = text.split("pub(crate) const AUTOSTART_ENV: &[&str] = &[", 1)[1].split("];", 1)[0]
    names = {line.strip().strip(",").strip('"') for line in block.splitlines() if line.strip()}
    assert names == set(_autostart.AUTOSTART_ENV)


def test_token_never_shows_itself():
    t = ce_auth.Token("eyJhbGciOiJSUzI1NiJ9.c2VjcmV0.c2ln", "bearer", 1665080017, "dev")
    for text in (repr(t), str(t), "%s" % t, "{}".format(t), repr([t]), repr({"t": t})):
        assert "eyJ" not in text and "c2Vj" not in text, text
    assert "dev" in repr(t) and "1665080017" in repr(t)
    assert t.expires.year == 2022 and t.expires.tzinfo is not None
    assert t.authorization == "Bearer " + t.access_token
    assert t.as_dict() == {"access_token": t.access_token, "token_type": "bearer", "expires_at": 1665080017, "profile": "dev"}
    with pytest.raises(TypeError):
        pickle.dumps(t)


def test_replies_of_the_wrong_shape_are_protocol_errors():
    with pytest.raises(ce_auth.ProtocolError):
        _protocol.parse_reply(b"not json\n", "token")
    with pytest.raises(ce_auth.ProtocolError):
        _protocol.parse_reply(b"[1]\n", "token")
    with pytest.raises(ce_auth.ProtocolError):
        _protocol.parse_token({"ok": True, "access_token": "a", "token_type": "bearer", "expires_at": "soon", "profile": "p"})
    with pytest.raises(ce_auth.ProtocolError) as e:
        _protocol.parse_token({"ok": True, "access_token": "tok\nX-Evil: 1", "token_type": "bearer", "expires_at": 1, "profile": "p"})
    assert "X-Evil" not in str(e.value)
    with pytest.raises(ce_auth.ProtocolError) as e:
        _protocol.parse_hello({"ok": True, "version": 2, "daemon": "ce-authd 9", "pid": 1})
    assert "version 2" in str(e.value)


def test_requests_are_what_the_protocol_says():
    assert _protocol.encode(_protocol.token_request("token", None, None, None)) == b'{"op":"token"}\n'
    assert _protocol.encode(_protocol.token_request("token", "dev", 300, 0)) == b'{"op":"token","profile":"dev","min_ttl":300,"wait":0}\n'
    with pytest.raises(ValueError):
        _protocol.token_request("token", None, -1, None)
    with pytest.raises(ValueError):
        _protocol.token_request("token", None, True, None)
    # a request's wait lengthens the reply timeout, as ce-auth does
    assert _protocol.reply_timeout({"op": "token", "wait": 200}, 120) == 215
    assert _protocol.reply_timeout({"op": "token", "wait": 1000}, 120) == 315
    assert _protocol.reply_timeout({"op": "token", "wait": 10}, 120) == 120


def test_importing_the_package_imports_neither_http_library():
    import subprocess

    code = "import sys, ce_auth; print('requests' in sys.modules, 'httpx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    code = "import sys, ce_auth; ce_auth.Session; print('requests' in sys.modules, 'httpx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


@pytest.mark.parametrize(
    "line",
    [
        b'{"ok":true,"access_token":"eyJ.eyJ.c2ln","token_type":"bearer","expires_at":1665080017,"profile":"dev"}\n',
        b'{"ok":true,"access_token":"a==","token_type":"bearer","expires_at":-5,"profile":"pr\xc3\xa9"}\r\n',
        b'{"ok":true,"access_token":"a","token_type":"bearer","expires_at":1,"profile":"p\\u00e9"}\n',
        b'{"ok": true, "access_token": "a", "token_type": "bearer", "expires_at": 1, "profile": "p", "new": 1}\n',
        b'{"ok":true,"access_token":"a b","token_type":"bearer","expires_at":1,"profile":"p"}\n',
        b'{"ok":true,"access_token":"' + b"a" * 16385 + b'","token_type":"bearer","expires_at":1,"profile":"p"}\n',
        b'{"ok":true,"access_token":"a","token_type":"bearer","expires_at":1,"profile":"\xff"}\n',
        b'{"ok":false,"error":{"code":"unknown_profile","message":"no"}}\n',
    ],
)
def test_the_fast_token_parse_agrees_with_json(line):
    def slow():
        return _protocol.parse_token(_protocol.parse_reply(line, "token"))

    try:
        expected = slow()
    except ce_auth.CeAuthError as e:
        with pytest.raises(type(e)):
            _protocol.parse_token_line(line)
    else:
        got = _protocol.parse_token_line(line)
        assert got.as_dict() == expected.as_dict()
