"""The exceptions of ``ce_auth``: one base class, one subclass per kind of failure.

Every exception carries ``code`` (the daemon's stable error code, or one of
this package's own: ``not_running``, ``autostart_failed``, ``untrusted``,
``protocol_error``, ``connection_lost``, ``no_socket_path``) and
``exit_code`` (the status ``ce-auth`` exits with for it, ``src/exit.rs``).
Messages are the daemon's own, or say what went wrong on this side; none
contains a token or a secret.
"""

from __future__ import annotations

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing at run time

if TYPE_CHECKING:  # pragma: no cover
    from typing import Dict, Optional, Type

__all__ = [
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
    "error_from_reply",
    "EXIT_OK",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "EXIT_NOT_RUNNING",
    "EXIT_UNKNOWN_PROFILE",
    "EXIT_CREDENTIALS_REJECTED",
    "EXIT_ISSUER_UNAVAILABLE",
    "EXIT_CONFIG",
]

# exit statuses of ce-auth (src/exit.rs, module `client`)
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_UNKNOWN_PROFILE = 4
EXIT_CREDENTIALS_REJECTED = 5
EXIT_ISSUER_UNAVAILABLE = 6
EXIT_CONFIG = 7

# protocol::ErrorCode::exit_code
_EXIT_FOR_CODE: Dict[str, int] = {
    "unknown_profile": EXIT_UNKNOWN_PROFILE,
    "credentials_rejected": EXIT_CREDENTIALS_REJECTED,
    "issuer_unavailable": EXIT_ISSUER_UNAVAILABLE,
    "config_error": EXIT_CONFIG,
    "permission_denied": EXIT_NOT_RUNNING,
}


class CeAuthError(Exception):
    """Base class: ce-authd answered with an error, or could not be used.

    ``str(e)`` is the message; ``e.code`` the error code; ``e.exit_code``
    what ``ce-auth`` would exit with.
    """

    #: the code this class stands for (a daemon error code or one of ours)
    default_code = "internal"

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code

    @property
    def exit_code(self) -> int:
        """The exit status of ``ce-auth`` for this error."""
        return _EXIT_FOR_CODE.get(self.code, EXIT_FAILURE)

    def __repr__(self) -> str:
        return "%s(%r, code=%r)" % (type(self).__name__, self.message, self.code)


class NotRunning(CeAuthError):
    """No ce-authd answers on the socket (and autostart is off, or did not
    apply). ``absent`` is true when nothing is there at all (no directory, no
    socket, or nobody listening), the case autostart handles."""

    default_code = "not_running"

    def __init__(
        self, message: str, socket: Optional[str] = None, absent: bool = False, code: Optional[str] = None
    ) -> None:
        super().__init__(message, code)
        self.socket = socket
        self.absent = absent

    @property
    def exit_code(self) -> int:
        return EXIT_NOT_RUNNING


class AutostartFailed(NotRunning):
    """Starting ``ce-authd --daemon`` failed, or it did not answer in time."""

    default_code = "autostart_failed"


class Untrusted(CeAuthError):
    """The socket's directory or the process listening on it is not ours (or
    root's): nothing was sent. ``socket`` is the path, ``owner`` the uid that
    owns the directory or serves the socket, when known."""

    default_code = "untrusted"

    def __init__(self, message: str, socket: Optional[str] = None, owner: Optional[int] = None) -> None:
        super().__init__(message)
        self.socket = socket
        self.owner = owner

    @property
    def exit_code(self) -> int:
        return EXIT_NOT_RUNNING


class UnknownProfile(CeAuthError):
    """No profile of that name, or no default profile (``unknown_profile``)."""

    default_code = "unknown_profile"


class CredentialsRejected(CeAuthError):
    """The issuer refused the profile's credentials (``credentials_rejected``)."""

    default_code = "credentials_rejected"


class IssuerUnavailable(CeAuthError):
    """The issuer could not be reached within the wait, and no token with
    enough time left is held (``issuer_unavailable``)."""

    default_code = "issuer_unavailable"


class ConfigError(CeAuthError):
    """The configuration file or the settings sent are invalid (``config_error``)."""

    default_code = "config_error"


class ProtocolError(CeAuthError):
    """The daemon's reply was not what the protocol says (bad JSON, wrong
    shape, a token that is not an RFC 6750 bearer token, another protocol
    version)."""

    default_code = "protocol_error"


class ConnectionLost(CeAuthError):
    """The connection failed in the middle of a request (closed, reset, timed
    out), and the one retry on a new connection did not help."""

    default_code = "connection_lost"


class DaemonError(CeAuthError):
    """Any other error the daemon answered with: ``bad_request``,
    ``line_too_long``, ``unsupported_version``, ``profile_exists``,
    ``permission_denied``, ``busy``, ``shutting_down``, ``internal``, or a
    code added later."""

    default_code = "internal"


_CLASS_FOR_CODE: Dict[str, Type[CeAuthError]] = {
    "unknown_profile": UnknownProfile,
    "credentials_rejected": CredentialsRejected,
    "issuer_unavailable": IssuerUnavailable,
    "config_error": ConfigError,
}


def error_from_reply(error: object) -> CeAuthError:
    """The exception for a reply's ``error`` object."""
    if not isinstance(error, dict):
        return ProtocolError("ce-authd sent an invalid reply: an error without an error object")
    code = error.get("code")
    message = error.get("message")
    if not isinstance(code, str) or not isinstance(message, str):
        return ProtocolError("ce-authd sent an invalid reply: an error object without code or message")
    return _CLASS_FOR_CODE.get(code, DaemonError)(message, code)
