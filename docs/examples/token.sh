#!/bin/sh
# Three ways to get a token from ce-authd in a shell script. The socket is
# $CE_AUTH_SOCK (set by `eval "$(ce-authd --daemon)"`); PROFILE defaults to the
# daemon's default profile.
set -eu
SOCK=${CE_AUTH_SOCK:?set CE_AUTH_SOCK, e.g. eval "\$(ce-authd --daemon)"}
PROFILE=${1:-}
need() { [ -n "$TOKEN" ] || { echo "token.sh: no token from $1" >&2; exit 1; }; }

# 1. The companion client (exit status tells what went wrong; see docs/CLIENT.md).
TOKEN=$(ce-auth token ${PROFILE:+-p "$PROFILE"})
need ce-auth

# 2. curl speaking HTTP on the same socket (a JSON body like the `token` op's reply).
TOKEN=$(curl -sf --unix-socket "$SOCK" "http://localhost/v1/token${PROFILE:+?profile=$PROFILE}" |
    sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
need curl

# 3. The JSON line protocol itself, with socat (or `nc -U` / `ncat -U`).
if command -v socat >/dev/null 2>&1; then
    REQ='{"op":"token"'${PROFILE:+',"profile":"'$PROFILE'"'}'}'
    TOKEN=$(printf '%s\n' "$REQ" | socat - "UNIX-CONNECT:$SOCK" |
        sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
    need socat
fi

# Use it without putting it in argv (visible in `ps`): curl reads the header
# from standard input. API_URL is whatever endpoint you call.
if [ -n "${API_URL:-}" ]; then
    printf 'Authorization: Bearer %s\n' "$TOKEN" | curl -sf -H @- "$API_URL"
else
    echo "got a token of ${#TOKEN} characters; set API_URL to call an endpoint with it" >&2
fi
