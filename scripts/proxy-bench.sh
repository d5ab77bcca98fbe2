#!/usr/bin/env bash
# The local API proxy's benchmark (release build): requests/s and latency of
# keep-alive GETs through a `[[proxy]]` against the same GETs sent directly
# to the same upstream, for small responses and for one large one. Runs are
# interleaved (direct, proxy, direct, ...) and the medians reported.
#
#   scripts/proxy-bench.sh                 # 5 rounds of 5 s, 16 connections
#   BENCH_ROUNDS=3 BENCH_SECONDS=3 scripts/proxy-bench.sh
#
# Needs: jq; nginx, when installed, is run as an outside reference (one
# worker, keep-alive upstream, a fixed Authorization). Figures go to docs/BENCHMARKS.md ("Local API proxy").
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
ROUNDS=${BENCH_ROUNDS:-5}
SECS=${BENCH_SECONDS:-5}
CONNS=${BENCH_CONNS:-16}
BIG=$((256 * 1024 * 1024))

command -v jq >/dev/null || { echo "proxy-bench.sh: jq is needed" >&2; exit 1; }
if [[ -z ${BENCH_NO_BUILD:-} ]]; then
    (cd "$ROOT" && nice -n 10 cargo build --release --locked --bins --example bench)
fi
BIN=$TARGET/release
BENCH=$BIN/examples/bench
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

"$BENCH" upstream >"$WORK/upstream.out" &
PIDS+=($!)
for _ in $(seq 100); do [[ -s $WORK/upstream.out ]] && break; sleep 0.05; done
UP=$(jq -r .url "$WORK/upstream.out")
# the ceiling: a bare forwarder (hyper, no token, no checks) to the same upstream
"$BENCH" relay --upstream "$UP" >"$WORK/relay.out" &
PIDS+=($!)
RELAY_PID=$!
for _ in $(seq 100); do [[ -s $WORK/relay.out ]] && break; sleep 0.05; done
RELAY=$(jq -r .url "$WORK/relay.out")

# an outside reference, when nginx is installed (BENCH_NGINX=0 skips it):
# one worker, as the daemon's proxy runs on one thread, with keep-alive to
# the upstream, a fixed Authorization added, and bodies streamed through
# memory buffers
# a port on 127.0.0.1 that nothing listens on now
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
NGINX=""
TLS=""
if [[ ${BENCH_NGINX:-1} != 0 ]] && command -v openssl >/dev/null && command -v curl >/dev/null; then
    # a private CA and a leaf for 127.0.0.1: nginx serves the upstream over
    # https too, for the per-process calls below
    mkdir -p "$WORK/tls"
    (
        cd "$WORK/tls"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
            -subj /CN=ce-auth-bench-ca -keyout ca.key -out ca.pem 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj /CN=127.0.0.1 -keyout leaf.key -out leaf.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >leaf.ext
        openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
            -extfile leaf.ext -out leaf.pem 2>/dev/null
    ) && TLS_PORT=$(free_port)
fi
if [[ ${BENCH_NGINX:-1} != 0 ]] && NGINX_BIN=$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null); then
    NGINX_PORT=$(free_port)
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx/nginx.conf" <<NGINX
$([[ $(id -u) == 0 ]] && echo "user root;")
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    # the load generator keeps its connections for the whole run
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    upstream api { server ${UP#http://}; keepalive 64; keepalive_requests 100000000; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer fixed-token-of-the-benchmark";
            # streamed through memory buffers, never spooled to disk
            proxy_buffers 16 64k;
            proxy_max_temp_file_size 0;
            proxy_request_buffering off;
        }
    }
$([[ -n ${TLS_PORT:-} ]] && cat <<TLSBLOCK
    server {
        listen 127.0.0.1:$TLS_PORT ssl;
        ssl_certificate $WORK/tls/leaf.pem;
        ssl_certificate_key $WORK/tls/leaf.key;
        location / {
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
TLSBLOCK
)
}
NGINX
    "$NGINX_BIN" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
    PIDS+=($!)
    NGINX_MASTER=$!
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$NGINX_PORT/small" 2>/dev/null && break
        sleep 0.05
    done
    NGINX_WORKER=$(pgrep -P "$NGINX_MASTER" | head -n 1)
    NGINX=http://127.0.0.1:$NGINX_PORT
    if [[ -n ${TLS_PORT:-} ]] && curl -fsS -o /dev/null --cacert "$WORK/tls/ca.pem" "https://127.0.0.1:$TLS_PORT/small"; then
        TLS=https://127.0.0.1:$TLS_PORT
    fi
    echo "nginx $("$NGINX_BIN" -v 2>&1 | sed 's/.*version: //'), worker $NGINX_WORKER, at $NGINX"
fi

mkdir -m 700 "$WORK/run"
cat >"$WORK/config.toml" <<TOML
[[proxy]]
listen = "127.0.0.1:0"
upstream = "$UP"
profile = "dev"
TOML
if [[ -n $TLS ]]; then
    cat >>"$WORK/config.toml" <<TOML

[[proxy]]
listen = "127.0.0.2:0"
upstream = "$TLS"
profile = "dev"
TOML
fi
chmod 600 "$WORK/config.toml"
SOCK=$WORK/run/agent.sock
env ${TLS:+SSL_CERT_FILE=$WORK/tls/ca.pem} "$BIN/ce-authd" --dev --foreground --config "$WORK/config.toml" --socket "$SOCK" \
    >"$WORK/daemon.out" 2>"$WORK/daemon.err" &
PIDS+=($!)
DAEMON_PID=$!
for _ in $(seq 200); do
    CE_AUTH_SOCK=$SOCK CE_AUTH_NO_AUTOSTART=1 "$BIN/ce-auth" status --json >"$WORK/status.json" 2>/dev/null && break
    sleep 0.05
done
PROXY=$(jq -r '[.proxies[] | select(.upstream | startswith("http:"))][0].url' "$WORK/status.json")
TLS_PROXY=$(jq -r '[.proxies[] | select(.upstream | startswith("https:"))][0].url // empty' "$WORK/status.json")
echo "upstream $UP, proxy $PROXY, $CONNS connections, $ROUNDS rounds of $SECS s"

run() { # label url conns [pid]
    "$BENCH" http --url "$2" --conns "$3" --duration "$SECS" --warmup 1 --label "$1" \
        ${4:+--pid "$4"} >>"$WORK/runs.jsonl"
}
for _ in $(seq "$ROUNDS"); do
    run direct-small "$UP/small" "$CONNS"
    run relay-small "$RELAY/small" "$CONNS" "$RELAY_PID"
    run proxy-small "$PROXY/small" "$CONNS" "$DAEMON_PID"
    [[ -n $NGINX ]] && run nginx-small "$NGINX/small" "$CONNS" "$NGINX_WORKER"
    run direct-api "$UP/small?ms=20" "$CONNS"
    run proxy-api "$PROXY/small?ms=20" "$CONNS"
    [[ -n $NGINX ]] && run nginx-api "$NGINX/small?ms=20" "$CONNS"
    run direct-large "$UP/bytes/$BIG" 1
    run relay-large "$RELAY/bytes/$BIG" 1 "$RELAY_PID"
    run proxy-large "$PROXY/bytes/$BIG" 1 "$DAEMON_PID"
    [[ -n $NGINX ]] && run nginx-large "$NGINX/bytes/$BIG" 1 "$NGINX_WORKER"
done
# Per-process calls: what a script, GDAL or R does, one curl (a new
# connection) per call, one at a time. Direct means https to the API with a
# TLS handshake each time, with the token in hand or fetched by `ce-auth
# token` for each call; through the proxy, plain http to it, which keeps its
# TLS connections to the API.
CALLS=${BENCH_CALLS:-200}
calls() { # label cmd...: mean µs per call over CALLS calls, as a JSON line
    local label=$1 t0 t1
    shift
    t0=$(date +%s%N)
    for ((i = 0; i < CALLS; i++)); do "$@" || { echo "proxy-bench.sh: $label failed" >&2; exit 1; }; done
    t1=$(date +%s%N)
    jq -nc --arg l "$label" --argjson us "$(((t1 - t0) / CALLS / 1000))" '{label: $l, call_us: $us}' >>"$WORK/runs.jsonl"
}
if [[ -n $TLS && -n $TLS_PROXY ]]; then
    export CE_AUTH_SOCK=$SOCK CE_AUTH_NO_AUTOSTART=1
    TOKEN=$("$BIN/ce-auth" token)
    with_token() { curl -fsS -o /dev/null --cacert "$WORK/tls/ca.pem" -H "Authorization: Bearer $TOKEN" "$TLS/small"; }
    with_ce_auth() { curl -fsS -o /dev/null --cacert "$WORK/tls/ca.pem" -H "Authorization: Bearer $("$BIN/ce-auth" token)" "$TLS/small"; }
    via_proxy() { curl -fsS -o /dev/null "$TLS_PROXY/small"; }
    echo "per-process calls: $CALLS curl runs per round, https upstream $TLS, proxy $TLS_PROXY"
    for _ in $(seq "$ROUNDS"); do
        calls call-direct-token with_token
        calls call-direct-ce-auth with_ce_auth
        calls call-proxy via_proxy
        # plain http both ways: what the extra hop costs a new connection
        calls call-direct-http curl -fsS -o /dev/null "$UP/small"
        calls call-proxy-http curl -fsS -o /dev/null "$PROXY/small"
    done
fi

median() { # label field
    jq -s --arg l "$1" --arg f "$2" \
        '[.[] | select(.label == $l) | .[$f]] | sort | .[(length - 1) / 2 | floor]' "$WORK/runs.jsonl"
}
printf '\n| run | req/s | p50 µs | p99 µs | MiB/s | forwarder CPU µs/req |\n|---|---|---|---|---|---|\n'
labels=(direct-small relay-small proxy-small direct-api proxy-api direct-large relay-large proxy-large)
[[ -n $NGINX ]] && labels+=(nginx-small nginx-api nginx-large)
for l in "${labels[@]}"; do
    printf '| %s | %.0f | %.0f | %.0f | %.0f | %s |\n' "$l" "$(median "$l" rps)" "$(median "$l" p50_us)" \
        "$(median "$l" p99_us)" "$(median "$l" mib_per_s)" "$(median "$l" cpu_us_per_req | jq 'if . == null then "—" else (. * 10 | round / 10) end' -r)"
done
ratio() { jq -n --argjson a "$1" --argjson b "$2" '$a / $b * 100 | round / 100'; }
echo
echo "proxy/direct, small responses: req/s $(ratio "$(median proxy-small rps)" "$(median direct-small rps)")×, p99 $(ratio "$(median proxy-small p99_us)" "$(median direct-small p99_us)")×"
echo "proxy/direct, responses after 20 ms (an API's pace): req/s $(ratio "$(median proxy-api rps)" "$(median direct-api rps)")×, p99 $(ratio "$(median proxy-api p99_us)" "$(median direct-api p99_us)")×"
echo "proxy/bare forwarder, small responses: req/s $(ratio "$(median proxy-small rps)" "$(median relay-small rps)")×, p99 $(ratio "$(median proxy-small p99_us)" "$(median relay-small p99_us)")×"
echo "bare forwarder/direct, small responses: req/s $(ratio "$(median relay-small rps)" "$(median direct-small rps)")× (the ceiling of any proxy here)"
echo "proxy/bare forwarder, 256 MiB response: throughput $(ratio "$(median proxy-large mib_per_s)" "$(median relay-large mib_per_s)")×"
echo "proxy/direct, 256 MiB response: throughput $(ratio "$(median proxy-large mib_per_s)" "$(median direct-large mib_per_s)")×"
if [[ -n $TLS && -n $TLS_PROXY ]]; then
    printf '\n| per-process call (curl, a new connection each) | µs per call |\n|---|---|\n'
    for l in call-direct-token call-direct-ce-auth call-proxy call-direct-http call-proxy-http; do
        printf '| %s | %s |\n' "$l" "$(median "$l" call_us)"
    done
    echo "proxy/direct per-process calls to an https API, calls/s: $(ratio "$(median call-direct-token call_us)" "$(median call-proxy call_us)")× (token in hand), $(ratio "$(median call-direct-ce-auth call_us)" "$(median call-proxy call_us)")× (ce-auth token per call)"
    echo "proxy/direct per-process calls over plain http, calls/s: $(ratio "$(median call-direct-http call_us)" "$(median call-proxy-http call_us)")×"
fi
if [[ -n $NGINX ]]; then
    echo "proxy/nginx, small responses: req/s $(ratio "$(median proxy-small rps)" "$(median nginx-small rps)")×, p99 $(ratio "$(median proxy-small p99_us)" "$(median nginx-small p99_us)")×"
    echo "nginx/direct, small responses: req/s $(ratio "$(median nginx-small rps)" "$(median direct-small rps)")×"
    echo "proxy/nginx, responses after 20 ms: req/s $(ratio "$(median proxy-api rps)" "$(median nginx-api rps)")×, p99 $(ratio "$(median proxy-api p99_us)" "$(median nginx-api p99_us)")×"
    echo "proxy/nginx, 256 MiB response: throughput $(ratio "$(median proxy-large mib_per_s)" "$(median nginx-large mib_per_s)")×"
fi
echo "daemon RSS after the runs: $(awk '/VmRSS/ {print $2, $3}' "/proc/$DAEMON_PID/status")"
