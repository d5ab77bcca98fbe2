"""Fixtures: the emulated issuer, a daemon per test (own socket directory,
own config), the token-checking API, and an environment that can never reach
a daemon outside the test."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

import ce_auth
import ce_auth._client
from support import ApiServer, Daemon, Home, Issuer


@pytest.fixture(scope="session")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issuer]:
    """One issuer for the tests that do not change its state (15-minute tokens)."""
    iss = Issuer(tmp_path_factory.mktemp("issuer"))
    yield iss
    iss.stop()


@pytest.fixture
def own_issuer(tmp_path: Path) -> Iterator[Issuer]:
    """An issuer of this test's own (for faults and counters)."""
    d = tmp_path / "issuer"
    d.mkdir()
    iss = Issuer(d)
    yield iss
    iss.stop()


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test reaches the user's own daemon, or starts one, unless it says so."""
    for k in list(os.environ):
        # and loopback HTTP never goes through a proxy from the environment
        if k.startswith("CE_AUTH_") or k in ("XDG_RUNTIME_DIR", "XDG_CONFIG_HOME") or k.lower().endswith("_proxy"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("CE_AUTH_NO_AUTOSTART", "1")
    monkeypatch.setenv("CE_AUTH_SOCK", str(tmp_path / "nowhere" / "agent.sock"))
    ce_auth._client._reset_default_client()
    yield
    ce_auth._client._reset_default_client()


@pytest.fixture
def home(tmp_path: Path) -> Home:
    d = tmp_path / "home"
    d.mkdir()
    return Home(d)


@pytest.fixture
def daemon(home: Home, issuer: Issuer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    """A running ce-authd on this test's socket, profiles ``dev`` (default),
    ``bad`` and ``down``; ``CE_AUTH_SOCK`` points at it."""
    home.write_config(issuer)
    d = Daemon(home).start()
    monkeypatch.setenv("CE_AUTH_SOCK", d.socket)
    yield d
    d.kill()


@pytest.fixture
def start_daemon(home: Home, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Daemon]]:
    """Starts a daemon in this test's home on the given issuer (config
    written first, with ``extra`` profiles and ``[daemon]`` settings); all of
    them are killed at the end of the test."""
    started: List[Daemon] = []

    def start(issuer: Optional[Issuer], extra: str = "", daemon: str = "") -> Daemon:
        home.write_config(issuer, extra=extra, daemon=daemon)
        d = Daemon(home).start()
        started.append(d)
        monkeypatch.setenv("CE_AUTH_SOCK", d.socket)
        return d

    yield start
    for d in started:
        d.kill()


@pytest.fixture
def api(issuer: Issuer) -> Iterator[ApiServer]:
    s = ApiServer(issuer)
    yield s
    s.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
