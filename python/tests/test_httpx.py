"""``ce_auth.HttpxAuth`` (sync and async) and ``ce_auth.AsyncClient``."""

from __future__ import annotations

import asyncio

import httpx
import pytest

import ce_auth
from support import Daemon


class CountingClient(ce_auth.Client):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.refreshes = 0

    def refresh(self, *a, **kw):
        self.refreshes += 1
        return super().refresh(*a, **kw)


class CountingAsyncClient(ce_auth.AsyncClient):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.refreshes = 0

    async def refresh(self, *a, **kw):
        self.refreshes += 1
        return await super().refresh(*a, **kw)


def test_httpx_sync_sets_the_token(daemon, api):
    with httpx.Client(auth=ce_auth.HttpxAuth()) as h:
        for _ in range(3):
            assert h.get(api.url + "/x").status_code == 200
    assert {e["authorization"] for e in api.log} == {"Bearer " + ce_auth.get_token().access_token}


def test_httpx_sync_401_one_refresh_one_retry(daemon, api):
    c = CountingClient()
    auth = ce_auth.HttpxAuth(client=c)
    with httpx.Client(auth=auth) as h:
        old = h.get(api.url + "/a").request.headers["Authorization"]
        api.rejected.add(old.split()[1])
        r = h.post(api.url + "/b", json={"k": "v"})
        assert r.status_code == 200 and c.refreshes == 1
        assert [x.status_code for x in r.history] == [401]
        assert r.request.headers["Authorization"] != old
        assert api.log[-1]["body"] == api.log[-2]["body"] and b'"k"' in api.log[-1]["body"]
        api.reject_all = True
        r = h.post(api.url + "/c", content=b"bytes")
        assert r.status_code == 401 and c.refreshes == 2
        # a generator body streams once: no retry
        r = h.post(api.url + "/d", content=(x for x in [b"a", b"b"]))
        assert r.status_code == 401 and c.refreshes == 2
    assert api.statuses() == [200, 401, 200, 401, 401, 401]


@pytest.mark.anyio
async def test_httpx_async_sets_the_token_and_retries_once(daemon, api):
    ac = CountingAsyncClient()
    auth = ce_auth.HttpxAuth(async_client=ac)
    async with httpx.AsyncClient(auth=auth) as h:
        r = await h.get(api.url + "/a")
        assert r.status_code == 200
        old = r.request.headers["Authorization"]
        api.rejected.add(old.split()[1])
        r = await h.post(api.url + "/b", content=b"x")
        assert r.status_code == 200 and ac.refreshes == 1
        assert r.request.headers["Authorization"] != old

        async def chunks():
            yield b"a"

        api.reject_all = True
        r = await h.post(api.url + "/c", content=chunks())
        assert r.status_code == 401 and ac.refreshes == 1
    await ac.aclose()


@pytest.mark.anyio
async def test_httpx_async_many_concurrent_requests(daemon, api):
    auth = ce_auth.HttpxAuth()
    async with httpx.AsyncClient(auth=auth, limits=httpx.Limits(max_connections=10)) as h:
        rs = await asyncio.gather(*(h.get(api.url + "/n/%d" % i) for i in range(100)))
    assert [r.status_code for r in rs] == [200] * 100
    assert auth.async_client.connections == 1
    assert len({e["authorization"] for e in api.log}) == 1


@pytest.mark.anyio
async def test_async_client_concurrency_one_connection(daemon):
    async with ce_auth.AsyncClient() as c:
        ts = await asyncio.gather(*(c.token() for _ in range(200)))
        assert len({t.access_token for t in ts}) == 1
        assert c.connections == 1
        st = await c.status("dev")
        assert st["profiles"][0]["served"] >= 200
        assert (await c.whoami())["user"]["email"] == "user@example.com"
        t2 = await c.refresh()
        assert t2.access_token != ts[0].access_token
        assert (await c.token()) == t2


@pytest.mark.anyio
async def test_async_client_errors(daemon, tmp_path):
    async with ce_auth.AsyncClient() as c:
        with pytest.raises(ce_auth.UnknownProfile):
            await c.token("nope")
        with pytest.raises(ce_auth.IssuerUnavailable):
            await c.token("down", wait=0)
        with pytest.raises(ce_auth.DaemonError):
            await c.request({"op": "bogus"})
        # still one usable connection
        assert ce_auth.is_bearer_token((await c.token()).access_token) and c.connections == 1
    with pytest.raises(ce_auth.NotRunning):
        await ce_auth.AsyncClient(str(tmp_path / "none" / "agent.sock")).token()


@pytest.mark.anyio
async def test_async_client_reconnects_after_a_daemon_restart(home, issuer, monkeypatch):
    home.write_config(issuer)
    first = Daemon(home).start()
    monkeypatch.setenv("CE_AUTH_SOCK", first.socket)
    c = ce_auth.AsyncClient()
    try:
        await c.token()
        first.stop()
        second = Daemon(home).start()
        try:
            t = await c.token()
            assert ce_auth.is_bearer_token(t.access_token)
            assert (await c.hello())["pid"] == second.pid and c.connections == 2
        finally:
            second.kill()
    finally:
        first.kill()
        await c.aclose()


def test_an_async_client_moves_to_a_new_event_loop(daemon):
    c = ce_auth.AsyncClient()
    t1 = asyncio.run(c.token())
    t2 = asyncio.run(c.token())
    assert t1 == t2 and c.connections == 2


@pytest.mark.anyio
async def test_a_cancelled_request_leaves_no_stale_reply_behind(own_issuer, start_daemon):
    start_daemon(own_issuer)
    async with ce_auth.AsyncClient() as c:
        await c.token()
        before = own_issuer.counters()["token_requests"]
        own_issuer.inject({"kind": "delay", "ms": 1500})
        task = asyncio.ensure_future(c.refresh(wait=10))
        # cancel once the refresh has reached the issuer (so the daemon will answer it late)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while (await loop.run_in_executor(None, own_issuer.counters))["token_requests"] == before:
            assert loop.time() < deadline, "the refresh never reached the issuer"
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the refresh's late reply must not be taken as this token's
        t = await c.token()
        assert ce_auth.is_bearer_token(t.access_token) and c.connections == 2
