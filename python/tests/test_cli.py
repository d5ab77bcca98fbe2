"""``python -m ce_auth token|header|status``: output and exit statuses as ``ce-auth``'s."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import ce_auth
from support import CE_AUTH


def run(args, socket, **env):
    e = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/"),
        "CE_AUTH_SOCK": socket,
        "CE_AUTH_NO_AUTOSTART": "1",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }
    e.update(env)
    return subprocess.run([sys.executable, "-m", "ce_auth"] + args, capture_output=True, text=True, env=e, timeout=60)


def ce_auth_bin(args, socket):
    return subprocess.run(
        [CE_AUTH] + args,
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "CE_AUTH_SOCK": socket, "CE_AUTH_NO_AUTOSTART": "1"},
        timeout=60,
    )


def test_token_header_json(daemon):
    token = ce_auth.get_token()
    out = run(["token"], daemon.socket)
    assert out.returncode == 0 and out.stdout == token.access_token + "\n" and out.stderr == ""
    out = run(["header", "-p", "dev", "--min-ttl", "30", "--wait", "5"], daemon.socket)
    assert out.returncode == 0 and out.stdout == "Authorization: Bearer %s\n" % token.access_token
    out = run(["token", "--json"], daemon.socket)
    assert json.loads(out.stdout) == token.as_dict()
    # the global options go before or after the command
    out = run(["--socket", daemon.socket, "token"], "/nonexistent/agent.sock")
    assert out.returncode == 0, out.stderr
    out = run(["token", "--socket", daemon.socket], "/nonexistent/agent.sock")
    assert out.returncode == 0, out.stderr


def test_status_table_and_json(daemon):
    ce_auth.get_token()
    out = run(["status"], daemon.socket)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("ce-authd ") and "(pid %d)" % daemon.pid in lines[0] and "protocol v1" in lines[0]
    assert lines[1].split() == ["PROFILE", "STATE", "EXPIRES", "IN", "NEXT", "REFRESH", "LAST", "ERROR"]
    assert any(line.startswith("*dev ") and " fresh " in line for line in lines), out.stdout
    out = run(["status", "--json", "-p", "dev"], daemon.socket)
    st = json.loads(out.stdout)
    assert st["pid"] == daemon.pid and [p["name"] for p in st["profiles"]] == ["dev"] and "ok" not in st
    if CE_AUTH:
        theirs = ce_auth_bin(["status"], daemon.socket)
        # the same table, but for the uptime and counting seconds
        assert [line.split()[0] for line in theirs.stdout.splitlines()[1:]] == [
            line.split()[0] for line in out_lines(run(["status"], daemon.socket))[1:]
        ]


def out_lines(out):
    return out.stdout.splitlines()


@pytest.mark.parametrize(
    "args,status",
    [
        (["token", "-p", "nope"], 4),
        (["token", "-p", "bad", "--wait", "20"], 5),
        (["header", "-p", "down", "--wait", "0"], 6),
        (["status", "-p", "nope"], 4),
        (["token", "--min-ttl", "-5"], 2),
        (["token", "--bogus"], 2),
        (["frobnicate"], 2),
        ([], 2),
    ],
)
def test_exit_statuses_match_ce_auth(daemon, args, status):
    out = run(args, daemon.socket)
    assert out.returncode == status, out.stderr
    assert out.stdout == ""
    if status != 2:
        assert out.stderr.startswith("ce_auth: ")
    if CE_AUTH and args and args[0] in ("token", "header", "status") and status != 2:
        assert ce_auth_bin(args, daemon.socket).returncode == status


def test_not_running_is_3_like_ce_auth(tmp_path):
    sock = str(tmp_path / "none" / "agent.sock")
    out = run(["token"], sock)
    assert out.returncode == 3 and sock in out.stderr
    out = run(["status"], sock, CE_AUTH_NO_AUTOSTART="0")
    assert out.returncode == 3, "status never starts a daemon"
    if CE_AUTH:
        assert ce_auth_bin(["token"], sock).returncode == 3


def test_help_lists_the_exit_statuses():
    out = subprocess.run([sys.executable, "-m", "ce_auth", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for line in ["  3  ce-authd is not running", "  7  configuration error", "CE_AUTH_NO_AUTOSTART"]:
        assert line in out.stdout
