"""ce_auth: Climate Engine access tokens from ce-authd, for Python.

    import ce_auth
    token = ce_auth.get_token()                 # a Token; token.access_token is the JWT
    session = ce_auth.Session()                 # requests, with the token on every request
    httpx.Client(auth=ce_auth.HttpxAuth())      # httpx, sync or async

The core uses only the standard library; ``Session``/``CeAuth`` import
``requests`` and ``HttpxAuth`` imports ``httpx`` when first used.
"""

from __future__ import annotations

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing at run time

from ._client import Client, default_client, get_token
from ._protocol import MAX_TOKEN_LEN, PROTOCOL_VERSION, Token, is_bearer_token
from ._socket import socket_path
from ._version import __version__
from .errors import (
    AutostartFailed,
    CeAuthError,
    ConfigError,
    ConnectionLost,
    CredentialsRejected,
    DaemonError,
    IssuerUnavailable,
    NotRunning,
    ProtocolError,
    UnknownProfile,
    Untrusted,
)

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, List

    from ._async import AsyncClient
    from .httpx_auth import HttpxAuth
    from .requests_auth import CeAuth, Session

__all__ = [
    "__version__",
    "get_token",
    "Token",
    "Client",
    "AsyncClient",
    "default_client",
    "socket_path",
    "is_bearer_token",
    "PROTOCOL_VERSION",
    "MAX_TOKEN_LEN",
    "Session",
    "CeAuth",
    "HttpxAuth",
    "CeAuthError",
    "NotRunning",
    "AutostartFailed",
    "Untrusted",
    "UnknownProfile",
    "CredentialsRejected",
    "IssuerUnavailable",
    "ConfigError",
    "ProtocolError",
    "ConnectionLost",
    "DaemonError",
]

# the integrations, imported on first use so `import ce_auth` needs neither library
_LAZY = {
    # asyncio alone takes longer to import than the rest of the package
    "AsyncClient": "._async",
    "Session": ".requests_auth",
    "CeAuth": ".requests_auth",
    "HttpxAuth": ".httpx_auth",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError("module 'ce_auth' has no attribute %r" % name)
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))
