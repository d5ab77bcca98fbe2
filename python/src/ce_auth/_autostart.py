"""Starting ``ce-authd --daemon`` when nothing answers on the socket, as
``ce-auth`` does (``src/client/conn.rs``).

The daemon gets a minimal environment, not the caller's (a CI step's tokens
and keys stay with the step): :data:`AUTOSTART_ENV`, every ``LC_*`` and every
``CE_AUTH_*``. ``CE_AUTH_NO_AUTOSTART`` set to anything but empty, ``0``,
``false`` or ``no`` turns autostart off.
"""

from __future__ import annotations

import os
import threading
import time
TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing at run time

from .errors import AutostartFailed

if TYPE_CHECKING:  # pragma: no cover
    from typing import Dict, List, Mapping, Optional

__all__ = [
    "AUTOSTART_ENV",
    "NO_AUTOSTART_ENV",
    "AUTOSTART_DEADLINE",
    "POLL_INTERVAL",
    "autostart_disabled",
    "autostart_env",
    "find_daemon",
    "Starter",
]

#: The variable that turns autostart off.
NO_AUTOSTART_ENV = "CE_AUTH_NO_AUTOSTART"

#: How long autostart waits for a freshly started daemon to answer, in seconds.
AUTOSTART_DEADLINE = 15.0

#: How long to keep trying after ``ce-authd --daemon`` has exited.
EXITED_GRACE = 2.0

#: Pause between two connection attempts while the daemon starts.
POLL_INTERVAL = 0.02

#: The variables an autostarted daemon keeps (conn.rs ``AUTOSTART_ENV``).
AUTOSTART_ENV = frozenset(
    [
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "XDG_RUNTIME_DIR",
        "XDG_CONFIG_HOME",
        "XDG_CACHE_HOME",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "RUST_LOG",
        "SYSTEMROOT",
        "WINDIR",
        "APPDATA",
        "LOCALAPPDATA",
        "USERPROFILE",
        "TEMP",
        "TMP",
        "USERNAME",
    ]
)

# the daemon's stderr kept for a failure message, at most
_MAX_STDERR = 64 * 1024


def autostart_disabled(env: Optional[Mapping[str, str]] = None) -> bool:
    """Whether the environment turns autostart off (``CE_AUTH_NO_AUTOSTART=1``)."""
    v = (os.environ if env is None else env).get(NO_AUTOSTART_ENV)
    if v is None:
        return False
    return v.lower() not in ("", "0", "false", "no")


def autostart_env(environ: Mapping[str, str]) -> Dict[str, str]:
    """The part of ``environ`` an autostarted daemon gets."""
    return {
        k: v
        for k, v in environ.items()
        if k in AUTOSTART_ENV or k.startswith("LC_") or k.startswith("CE_AUTH_")
    }


def find_daemon() -> Optional[str]:
    """The ``ce-authd`` on ``PATH``, if any."""
    import shutil

    return shutil.which("ce-authd")


class Starter:
    """One ``ce-authd --daemon --socket PATH [--config FILE]`` being started.

    The caller polls the socket (sync or async) and asks :meth:`give_up`
    between attempts; :meth:`done` reaps the process on the side once it is
    over, so a long-lived caller keeps no zombie.
    """

    def __init__(self, socket: str, program: Optional[str], config: Optional[str]) -> None:
        self.socket = socket
        prog = program or find_daemon()
        if not prog:
            raise AutostartFailed(
                "could not start ce-authd for %s: ce-authd was not found on PATH; install it "
                "or start it yourself" % socket,
                socket=socket,
            )
        self.program = prog
        import subprocess

        argv = [prog, "--daemon", "--socket", socket]
        if config:
            argv += ["--config", config]
        try:
            self._proc = subprocess.Popen(
                argv,
                env=autostart_env(os.environ),
                stdin=subprocess.DEVNULL,
                # the daemon's `CE_AUTH_SOCK=...` line is not ours to print
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                close_fds=True,
            )
        except OSError as e:
            raise AutostartFailed(
                "could not start ce-authd for %s: cannot run %s: %s" % (socket, prog, e.strerror or e),
                socket=socket,
            ) from None
        self._stderr: List[bytes] = []
        # the detached daemon may keep the pipe open: read it on the side
        self._reader = threading.Thread(target=self._read_stderr, name="ce-authd-stderr", daemon=True)
        self._reader.start()
        self._started = time.monotonic()
        self._exited_at: Optional[float] = None

    def _read_stderr(self) -> None:
        pipe = self._proc.stderr
        if pipe is None:
            return
        size = 0
        try:
            for chunk in iter(lambda: pipe.read1(4096), b""):  # type: ignore[attr-defined]
                if size < _MAX_STDERR:
                    self._stderr.append(chunk)
                    size += len(chunk)
        except (OSError, ValueError):
            pass

    def give_up(self) -> bool:
        """Whether to stop polling: ``--daemon`` exited a while ago (it
        returns only once the socket is ready, or another daemon won a start
        race), or the deadline passed."""
        now = time.monotonic()
        if self._exited_at is None and self._proc.poll() is not None:
            self._exited_at = now
        if self._exited_at is not None:
            return now - self._exited_at > EXITED_GRACE
        return now - self._started > AUTOSTART_DEADLINE

    def done(self) -> None:
        """Reaps ``--daemon`` on the side."""
        threading.Thread(target=self._proc.wait, name="ce-authd-reap", daemon=True).start()

    def failure(self, last_error: str) -> AutostartFailed:
        """The error to raise after giving up, with what the daemon said."""
        rc = self._proc.poll()
        if rc is not None and rc != 0:
            what = "%s --daemon failed (exit status: %d)" % (self.program, rc)
        elif rc is not None:
            what = "%s --daemon exited but nothing answers on the socket" % self.program
        else:
            what = "%s did not become ready within %d s" % (self.program, AUTOSTART_DEADLINE)
        self._reader.join(0.5)
        stderr = b"".join(self._stderr).decode("utf-8", "replace").strip()
        message = "could not start ce-authd for %s: %s (last connect error: %s)" % (
            self.socket,
            what,
            last_error,
        )
        if stderr:
            message += ":\n" + stderr
        self.done()
        return AutostartFailed(message, socket=self.socket)
