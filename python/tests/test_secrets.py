"""No token or secret in a repr, a log line or an exception message."""

from __future__ import annotations

import logging
import traceback

import httpx
import pytest
import requests

import ce_auth
from support import CLIENT_SECRET


def test_nothing_the_package_shows_or_logs_carries_a_token(daemon, api, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    c = ce_auth.Client()
    t = c.token()
    secret_words = [t.access_token, t.access_token.split(".")[1], t.access_token.split(".")[2], CLIENT_SECRET]

    shown = [repr(t), str(t), repr(c), str(c)]
    with ce_auth.Session(client=c) as s:
        r = s.get(api.url + "/x")
        shown += [repr(s), repr(s.auth), repr(r), repr(r.request)]
        # a 401 path, logged at debug
        api.rejected.add(t.access_token)
        r = s.get(api.url + "/y")
        t2 = c.token()
        secret_words += [t2.access_token]
    auth = ce_auth.HttpxAuth(client=c)
    with httpx.Client(auth=auth) as h:
        r2 = h.get(api.url + "/z")
        shown += [repr(auth), repr(r2), repr(r2.request)]

    # errors of every kind, with their tracebacks
    for call in (
        lambda: c.token("nope"),
        lambda: c.token("bad", wait=20),
        lambda: c.token("down", wait=0),
        lambda: c.request({"op": "add", "profile": "dev", "settings": {}, "secret": CLIENT_SECRET}),
        lambda: ce_auth.Client("/nonexistent/dir/agent.sock").token(),
    ):
        with pytest.raises(ce_auth.CeAuthError) as e:
            call()
        shown += [str(e.value), repr(e.value), "".join(traceback.format_exception(e.type, e.value, e.tb))]

    # a kept connection lost and replaced: logged
    assert c._conn is not None
    c._conn.sock.close()
    c.token()
    assert any("reconnecting" in rec.getMessage() for rec in caplog.records)

    shown += [rec.getMessage() for rec in caplog.records]
    text = "\n".join(shown)
    for word in secret_words:
        assert word not in text
    c.close()


def test_the_daemon_log_never_sees_the_token_either(daemon):
    t = ce_auth.get_token()
    ce_auth.default_client().close()
    daemon.stop()
    assert t.access_token not in daemon.output() and CLIENT_SECRET not in daemon.output()


def test_requests_own_error_paths_do_not_show_the_header(daemon):
    # a connection error's message names the URL, never the request's headers
    with ce_auth.Session() as s:
        with pytest.raises(requests.ConnectionError) as e:
            s.get("http://127.0.0.1:9/x", timeout=2)
    assert ce_auth.get_token().access_token not in str(e.value)
