"""The sync client against the real daemon: tokens, the kept connection,
threads, reconnecting after a restart or an idle close."""

from __future__ import annotations

import os
import select
import subprocess
import threading
import time

import pytest

import ce_auth
from support import CE_AUTH, ApiServer, Daemon, jwt_exp, raw_request, wait_for


def test_get_token_returns_a_checked_token_the_api_accepts(daemon, api):
    t = ce_auth.get_token()
    assert isinstance(t, ce_auth.Token)
    assert (t.profile, t.token_type) == ("dev", "bearer")
    assert ce_auth.is_bearer_token(t.access_token)
    assert isinstance(t.expires_at, int)
    assert t.expires_at == jwt_exp(t.access_token)
    assert 800 < t.ttl <= 901, t.ttl
    status, body = api.check("Bearer " + t.access_token)
    assert status == 200, body
    # the same token the daemon hands ce-auth, and the same one again (cached)
    assert ce_auth.get_token("dev", min_ttl=30) == t
    if CE_AUTH:
        out = subprocess.run(
            [CE_AUTH, "token"],
            env={"PATH": os.environ["PATH"], "CE_AUTH_SOCK": daemon.socket, "CE_AUTH_NO_AUTOSTART": "1"},
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == t.access_token


def test_get_token_keeps_one_connection(daemon):
    for _ in range(50):
        ce_auth.get_token()
    assert ce_auth.default_client().connections == 1


def test_a_client_with_an_explicit_socket_and_its_other_ops(daemon, monkeypatch):
    monkeypatch.setenv("CE_AUTH_SOCK", "/nonexistent/agent.sock")
    with ce_auth.Client(daemon.socket) as c:
        hello = c.hello()
        assert hello["version"] == 1 and hello["pid"] == daemon.pid and hello["daemon"].startswith("ce-authd ")
        t1 = c.token(wait=5)
        st = c.status()
        assert st["default_profile"] == "dev" and {p["name"] for p in st["profiles"]} == {"dev", "bad", "down"}
        assert [p["name"] for p in c.status("dev")["profiles"]] == ["dev"]
        me = c.whoami()
        assert me["profile"] == "dev" and me["user"]["email"] == "user@example.com"
        t2 = c.refresh()
        assert t2.access_token != t1.access_token and t2.profile == "dev"
        # the refreshed token is what token serves now
        assert c.token() == t2
        assert c.socket == daemon.socket
        assert "connected" in repr(c) and t2.access_token not in repr(c)
        assert c.connections == 1
    assert "not connected" in repr(c)


def test_many_threads_share_one_client(daemon):
    c = ce_auth.Client()
    expected = c.token().access_token
    errors = []
    seen = set()
    lock = threading.Lock()

    def worker():
        try:
            for _ in range(200):
                t = c.token()
                with lock:
                    seen.add(t.access_token)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert seen == {expected}
    assert c.connections == 1
    served = c.status("dev")["profiles"][0]["served"]
    assert served >= 16 * 200 + 1
    c.close()


def test_a_daemon_restart_under_a_kept_client(home, issuer, monkeypatch):
    home.write_config(issuer)
    first = Daemon(home).start()
    monkeypatch.setenv("CE_AUTH_SOCK", first.socket)
    c = ce_auth.Client()
    try:
        t1 = c.token()
        assert c.hello()["pid"] == first.pid
        first.stop()
        second = Daemon(home).start()
        try:
            # the kept connection is dead: one retry on a new, re-checked connection
            t2 = c.token()
            assert c.hello()["pid"] == second.pid
            assert c.connections == 2
            assert ce_auth.is_bearer_token(t2.access_token) and t2.profile == t1.profile
        finally:
            second.kill()
    finally:
        first.kill()
        c.close()


def test_a_connection_the_daemon_closed_when_idle_is_replaced(start_daemon, issuer):
    d = start_daemon(issuer, daemon="idle_timeout = 1")
    c = ce_auth.Client()
    c.token()
    conn = c._conn
    assert conn is not None

    # wait until the daemon has closed the idle connection (readable at EOF)
    def closed():
        r, _, _ = select.select([conn.sock], [], [], 0)
        return True if r else None

    wait_for("the daemon to close the idle connection", closed, timeout=10)
    t = c.token()
    assert ce_auth.is_bearer_token(t.access_token)
    assert c.connections == 2
    c.close()
    d.stop()


def test_a_stopped_daemon_is_not_running_after_the_one_retry(daemon):
    c = ce_auth.Client(autostart=False)
    c.token()
    daemon.stop()
    with pytest.raises(ce_auth.NotRunning) as e:
        c.token()
    assert daemon.socket in str(e.value) and e.value.exit_code == 3


def test_fork_gives_the_child_its_own_connection(daemon):
    c = ce_auth.Client()
    parent_token = c.token().access_token
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child)
        try:
            os.close(r)
            ok = c.token().access_token == parent_token and c.connections == 2
            os.write(w, b"ok" if ok else b"bad")
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 10)
    os.waitpid(pid, 0)
    os.close(r)
    assert got == b"ok"
    # the parent's connection was not disturbed
    assert c.token().access_token == parent_token and c.connections == 1


def test_raw_requests_for_the_other_ops(daemon, home):
    c = ce_auth.Client()
    r = c.request({"op": "reload"})
    assert sorted(r["unchanged"]) == ["bad", "dev", "down"]
    with pytest.raises(ce_auth.UnknownProfile):
        c.request({"op": "remove", "profile": "nope"})
    assert c.request({"op": "remove", "profile": "bad"}) == {"ok": True, "profile": "bad"}


def test_the_api_server_refuses_expired_and_forged_tokens(tmp_path, start_daemon, api):
    from support import Issuer

    d = tmp_path / "short"
    d.mkdir()
    short = Issuer(d, lifetime=2)
    try:
        start_daemon(short)
        server = ApiServer(short)
        try:
            t = ce_auth.get_token(min_ttl=0)
            assert server.check("Bearer " + t.access_token)[0] == 200
            head, payload, sig = t.access_token.split(".")
            assert server.check("Bearer %s.%s.%s" % (head, payload, sig[::-1]))[0] == 401
            assert server.check("Bearer " + t.access_token + "x")[0] == 401
            assert server.check(None)[0] == 401
            # another issuer's token (same claims shape, other key)
            assert api.check("Bearer " + t.access_token)[0] == 401
            wait_for("the token to expire", lambda: True if time.time() > t.expires_at + 0.5 else None)
            assert server.check("Bearer " + t.access_token)[0] == 401
        finally:
            server.stop()
    finally:
        short.stop()


def test_raw_socket_helper_sees_the_daemon(daemon):
    assert raw_request(daemon.socket, {"op": "hello", "version": 1})["ok"] is True


def test_token_ahead_tickets(daemon):
    c = ce_auth.Client()
    expected = c.token()
    # the plain case: send now, read later
    ticket = c.token_ahead()
    assert "pending" in repr(ticket) and expected.access_token not in repr(ticket)
    assert ticket.result() == expected
    # a later request of the same thread collects the ticket's reply first
    ticket = c.token_ahead("dev", min_ttl=30)
    assert c.status("dev")["profiles"][0]["name"] == "dev"
    assert ticket.result() == expected
    # closed without taking the token: the connection stays in step
    with c.token_ahead():
        pass
    assert c.token() == expected
    # errors come out of result()
    ticket = c.token_ahead("nope")
    with pytest.raises(ce_auth.UnknownProfile):
        ticket.result()
    # another thread waits for the ticket to finish, then gets its own reply
    ticket = c.token_ahead()
    got = []
    t = threading.Thread(target=lambda: got.append(c.token()))
    t.start()
    t.join(0.2)
    assert t.is_alive() and got == [], "the other thread must wait for the ticket"
    assert ticket.result() == expected
    t.join(10)
    assert got == [expected] and c.connections == 1


def test_token_ahead_survives_a_daemon_restart(home, issuer, monkeypatch):
    home.write_config(issuer)
    first = Daemon(home).start()
    monkeypatch.setenv("CE_AUTH_SOCK", first.socket)
    c = ce_auth.Client()
    try:
        c.token()
        first.stop()
        second = Daemon(home).start()
        try:
            t = c.token_ahead().result()
            assert ce_auth.is_bearer_token(t.access_token) and c.connections == 2
        finally:
            second.kill()
    finally:
        first.kill()


def test_status_of_a_thousand_profiles_is_joined_from_its_pages(start_daemon, issuer, home):
    """More profiles than fit one 64 KiB reply line: the daemon answers in
    pages (``next_after``) and both clients ask for each and join them."""
    import asyncio

    from support import CLIENT_ID, private_file, profile_toml

    secret = private_file(home.path / "many.secret", "unused")
    names = ["p%04d" % i for i in range(997)]
    d = start_daemon(issuer, extra="".join(profile_toml(n, issuer.token_url, CLIENT_ID, secret) for n in names))
    first = raw_request(d.socket, {"op": "status"})
    assert first["ok"] and first["next_after"] == first["profiles"][-1]["name"], sorted(first)
    expected = sorted(names + ["dev", "bad", "down"])
    with ce_auth.Client(d.socket) as c:
        st = c.status()
    assert [p["name"] for p in st["profiles"]] == expected
    assert "next_after" not in st

    async def via_async():
        async with ce_auth.AsyncClient(d.socket) as c:
            return await c.status()

    assert [p["name"] for p in asyncio.run(via_async())["profiles"]] == expected


def test_status_pages_that_do_not_move_on_are_refused():
    from ce_auth._protocol import join_status_page

    reply = {"profiles": [{"name": "a"}], "next_after": "a"}
    for page in (
        {"profiles": [{"name": "a"}]},
        {"profiles": [], "next_after": "b"},
        {"profiles": [{"name": "b"}], "next_after": "a"},
        {"profiles": "b"},
    ):
        with pytest.raises(ce_auth.ProtocolError, match="do not move on"):
            join_status_page(dict(reply, profiles=list(reply["profiles"])), page, "a")
    ok = {"profiles": [{"name": "a"}]}
    join_status_page(ok, {"profiles": [{"name": "b"}], "next_after": "b"}, "a")
    assert ok == {"profiles": [{"name": "a"}, {"name": "b"}], "next_after": "b"}
