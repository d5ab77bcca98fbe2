"""``python -m ce_auth token|header|status``: the token commands of ``ce-auth``,
with the same options, output and exit statuses (``src/exit.rs``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, NoReturn, Optional, Sequence

from ._client import Client
from .errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CeAuthError

EXIT_TABLE = """\
Exit status:
  0  success
  1  failure (anything not listed below)
  2  usage error
  3  ce-authd is not running (and autostart is off or failed), or may not be trusted
  4  unknown profile (or no default profile)
  5  credentials rejected by the issuer
  6  issuer unavailable, and no token with enough time left
  7  configuration error

Environment: CE_AUTH_SOCK (socket), CE_AUTH_CONFIG (config file),
CE_AUTH_NO_AUTOSTART=1 (never start ce-authd).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, "%s: error: %s\n" % (self.prog, message))


def _seconds(text: str) -> int:
    try:
        v = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a whole number of seconds" % text) from None
    if v < 0:
        raise argparse.ArgumentTypeError("%r is negative" % text)
    return v


def _common(default: Any) -> "_Parser":
    # the global options, accepted before and after the command (after it,
    # with no default of their own, so they do not undo one given before)
    common = _Parser(add_help=False)
    common.add_argument(
        "--socket", metavar="PATH", default=default, help="the daemon's socket [default: $CE_AUTH_SOCK, else as ce-auth finds it]"
    )
    common.add_argument(
        "--config", metavar="PATH", default=default, help="the config file an autostarted daemon uses [default: $CE_AUTH_CONFIG]"
    )
    common.add_argument(
        "--no-autostart",
        action="store_true",
        default=default if default is argparse.SUPPRESS else False,
        help="never start ce-authd when none answers (also CE_AUTH_NO_AUTOSTART=1)",
    )
    return common


def _parser() -> argparse.ArgumentParser:
    common = _common(argparse.SUPPRESS)

    profile = _Parser(add_help=False)
    profile.add_argument("-p", "--profile", metavar="PROFILE", help="the profile [default: the daemon's default]")

    tok = _Parser(add_help=False, parents=[profile])
    tok.add_argument("--min-ttl", type=_seconds, metavar="SECS", help="seconds the token must still be valid for [default: 60]")
    tok.add_argument(
        "--wait", type=_seconds, metavar="SECS", help="seconds to wait for a token when none held will do; 0 fails at once [default: 10]"
    )

    p = _Parser(
        prog="python -m ce_auth",
        description="Get always-fresh Climate Engine API access tokens from ce-authd.",
        epilog=EXIT_TABLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(None)],
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    t = sub.add_parser("token", parents=[common, tok], help="print an access token (and a newline)")
    t.add_argument("--json", action="store_true", help="print a JSON object with access_token, token_type, expires_at, profile")
    sub.add_parser("header", parents=[common, tok], help="print an HTTP header line: Authorization: Bearer <token>")
    s = sub.add_parser("status", parents=[common, profile], help="show the daemon's profiles and their tokens' state")
    s.add_argument("--json", action="store_true", help="print the daemon's JSON status reply")
    return p


def human_duration(secs: int) -> str:
    """A duration as ``1h 2m``, ``14m 3s`` or ``42s`` (as ``ce-auth``)."""
    h, m, s = secs // 3600, secs % 3600 // 60, secs % 60
    if h >= 24:
        return "%dd %dh" % (h // 24, h % 24)
    if h > 0:
        return "%dh %dm" % (h, m)
    if m > 0:
        return "%dm %ds" % (m, s)
    return "%ds" % s


def _until(at: Optional[int], now: int, past: str) -> str:
    if at is None:
        return "-"
    if at <= now:
        return past
    return human_duration(at - now)


def _printable(s: str) -> str:
    """Control characters escaped, so daemon or issuer text cannot drive the terminal."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in s)


def status_table(status: Dict[str, Any], now: int) -> str:
    """The table ``ce-auth status`` prints."""
    dumpable = status.get("dumpable")
    out = "%s (pid %s), up %s, protocol v%s, memory %s%s\n" % (
        _printable(str(status.get("daemon", "?"))),
        status.get("pid"),
        human_duration(int(status.get("uptime", 0))),
        status.get("version"),
        "locked" if status.get("memory_locked") else "not locked",
        ", not dumpable" if dumpable is False else (", DUMPABLE" if dumpable is True else ""),
    )
    profiles = status.get("profiles") or []
    if not profiles:
        return out + "no profiles: add one with `ce-auth add` or `ce-auth login`, or in the config file\n"
    header = ["PROFILE", "STATE", "EXPIRES IN", "NEXT REFRESH", "LAST ERROR"]
    rows: List[List[str]] = []
    default = status.get("default_profile")
    for p in profiles:
        name = str(p.get("name", ""))
        err = p.get("last_error")
        rows.append(
            [
                ("*" if name == default else " ") + _printable(name),
                _printable(str(p.get("state", ""))),
                _until(p.get("expires_at"), now, "expired"),
                _until(p.get("next_refresh"), now, "due"),
                _printable(err.replace("\n", " ").replace("\r", " ")) if isinstance(err, str) else "-",
            ]
        )
    widths = [len(h) for h in header]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r)]
    for r in [header] + rows:
        cells = [c + " " * (widths[i] - len(c) + 2) for i, c in enumerate(r[:-1])] + [r[-1]]
        out += "".join(cells).rstrip() + "\n"
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    autostart = False if args.no_autostart else None
    client = Client(args.socket or os.environ.get("CE_AUTH_SOCK") or None, autostart=autostart, config=args.config)
    try:
        if args.command == "status":
            status = client.status(args.profile)
            if args.json:
                body = {k: v for k, v in status.items() if k != "ok"}
                text = json.dumps(body, indent=2) + "\n"
            else:
                text = status_table(status, int(time.time()))
        else:
            token = client.token(args.profile, args.min_ttl, args.wait)
            if args.command == "header":
                text = "Authorization: Bearer %s\n" % token.access_token
            elif args.json:
                text = json.dumps(token.as_dict(), separators=(",", ":")) + "\n"
            else:
                text = token.access_token + "\n"
    except CeAuthError as e:
        print("ce_auth: %s" % e, file=sys.stderr)
        return e.exit_code
    finally:
        client.close()
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except (BrokenPipeError, OSError) as e:
        print("ce_auth: writing to standard output: %s" % e, file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
