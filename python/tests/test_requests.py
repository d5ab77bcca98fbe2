"""``ce_auth.Session`` and ``ce_auth.CeAuth`` against the token-checking API."""

from __future__ import annotations

import io

import pytest
import requests

import ce_auth


class CountingClient(ce_auth.Client):
    """A client that counts the ``refresh`` requests it sends."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.refreshes = 0
        self.tokens = 0

    def token(self, *a, **kw):
        self.tokens += 1
        return super().token(*a, **kw)

    def token_ahead(self, *a, **kw):
        self.tokens += 1
        return super().token_ahead(*a, **kw)

    def refresh(self, *a, **kw):
        self.refreshes += 1
        return super().refresh(*a, **kw)


def refreshed_count(client) -> int:
    return client.status("dev")["profiles"][0]["refreshed"]


def test_session_sets_the_token_on_every_request(daemon, api):
    with ce_auth.Session() as s:
        for _ in range(5):
            r = s.get(api.url + "/api/v1/data")
            assert r.status_code == 200, r.text
        r = s.post(api.url + "/api/v1/jobs", json={"x": 1})
        assert r.status_code == 200
    token = ce_auth.get_token().access_token
    assert [e["authorization"] for e in api.log] == ["Bearer " + token] * 6
    assert api.log[-1]["body"] == b'{"x": 1}'
    assert "Bearer" not in repr(s) and token not in repr(s)


def test_ce_auth_on_a_plain_requests_call(daemon, api):
    r = requests.get(api.url + "/x", auth=ce_auth.CeAuth(profile="dev", min_ttl=120))
    assert r.status_code == 200
    assert r.json()["user_id"]
    assert token_not_in(repr(ce_auth.CeAuth()), ce_auth.get_token().access_token)


def token_not_in(text, token):
    return token not in text


def test_a_401_makes_one_refresh_and_one_retry(daemon, api):
    c = CountingClient()
    with ce_auth.Session(client=c) as s:
        first = s.get(api.url + "/a")
        assert first.status_code == 200
        old = first.request.headers["Authorization"]
        before = refreshed_count(c)
        api.rejected.add(old[len("Bearer ") :])
        r = s.post(api.url + "/b", data=b"payload")
        assert r.status_code == 200
        assert c.refreshes == 1 and refreshed_count(c) == before + 1
        assert [h.status_code for h in r.history] == [401]
        new = r.request.headers["Authorization"]
        assert new != old
        assert api.log[-1]["body"] == b"payload" and api.log[-2]["body"] == b"payload"
        assert api.statuses() == [200, 401, 200]
        # later requests carry the new token, with no further refresh
        assert s.get(api.url + "/c").request.headers["Authorization"] == new
        assert c.refreshes == 1


def test_str_and_empty_bodies_are_replayed_too(daemon, api):
    c = CountingClient()
    with ce_auth.Session(client=c) as s:
        api.reject_all = True
        r = s.put(api.url + "/str", data="text body")
        assert r.status_code == 401
        assert c.refreshes == 1, "exactly one refresh even when the retry fails too"
        assert api.statuses() == [401, 401]
        r = s.get(api.url + "/none")
        assert r.status_code == 401 and c.refreshes == 2
        assert api.statuses() == [401, 401, 401, 401]


@pytest.mark.parametrize("body", ["generator", "file"])
def test_a_body_that_cannot_be_sent_twice_is_not_retried(daemon, api, body):
    c = CountingClient()
    api.reject_all = True
    data = (x for x in [b"a", b"b"]) if body == "generator" else io.BytesIO(b"file body")
    with ce_auth.Session(client=c) as s:
        r = s.post(api.url + "/stream", data=data)
    assert r.status_code == 401
    assert c.refreshes == 0 and api.statuses() == [401]


def test_no_token_is_cached_past_the_request(daemon, api):
    c = CountingClient()
    with ce_auth.Session(client=c) as s:
        for _ in range(10):
            s.get(api.url + "/x")
    assert c.tokens == 10


def test_a_redirect_to_another_host_does_not_carry_the_token(daemon, api, issuer):
    # requests drops Authorization on a redirect to another host; the session must not re-add it
    import http.server
    import threading

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", api.url.replace("127.0.0.1", "localhost") + "/landed")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with ce_auth.Session() as s:
            r = s.get("http://127.0.0.1:%d/start" % srv.server_address[1])
        assert r.status_code == 401
        # not on the redirected request, and no refresh-and-retry that would add it back
        assert [e["authorization"] for e in api.log] == [None]
    finally:
        srv.shutdown()
        srv.server_close()


def test_session_errors_are_ce_auth_errors(daemon, api):
    with ce_auth.Session(profile="nope") as s:
        with pytest.raises(ce_auth.UnknownProfile):
            s.get(api.url + "/x")
    assert api.log == []


def test_the_tutorial_flow_with_ce_auth(daemon, issuer):
    """The tutorial's steps, each done by the daemon: log in with e-mail and
    password and create an API client (`login`), hold its secret (`add`),
    then call the API with a Session; the issuer's own users/me checks the token."""
    from support import EMAIL, PASSWORD

    c = ce_auth.Client()
    created = c.request({"op": "login", "token_url": issuer.token_url, "email": EMAIL, "password": PASSWORD})
    assert created["client_id"] and created["client_secret"]
    settings = {
        "token_url": issuer.token_url,
        "grant": "client_credentials",
        "auth_method": "client_secret_jwt",
        "client_id": created["client_id"],
    }
    c.request({"op": "add", "profile": "tutorial", "settings": settings, "secret": created["client_secret"]})

    me = ce_auth.Session(profile="tutorial").get(issuer.base_url + "/api/v1/users/me")
    assert me.status_code == 200, me.text
    assert me.json()["email"] == EMAIL and me.json()["id"] == created["user_id"]


def test_a_request_that_fails_to_prepare_leaves_the_client_usable(daemon, api):
    c = CountingClient()
    with ce_auth.Session(client=c) as s:
        with pytest.raises(requests.exceptions.MissingSchema):
            s.get("no-scheme.example/x")
        with pytest.raises(requests.exceptions.InvalidURL):
            s.get("http://")
        # the token asked for ahead was read and dropped; the lock is free for other threads
        import threading

        got = []
        t = threading.Thread(target=lambda: got.append(c.token()))
        t.start()
        t.join(10)
        assert got and s.get(api.url + "/ok").status_code == 200
    assert c.connections == 1


def test_a_request_with_its_own_auth_asks_no_token(daemon, api):
    c = CountingClient()
    with ce_auth.Session(client=c) as s:
        r = s.get(api.url + "/x", auth=("user", "pw"))
    assert r.status_code == 401 and c.tokens == 0
    assert api.log[-1]["authorization"].startswith("Basic ")
