#!/usr/bin/env bash
# Runs the ce-auth benchmark suite on this machine (release build) and writes
# target/bench/results.md and target/bench/results.jsonl. Method and figures:
# docs/BENCHMARKS.md.
#
#   scripts/bench.sh               # the full suite (about 3 minutes)
#   BENCH_QUICK=1 scripts/bench.sh # tiny numbers, to check that it works
#
# Needs: redis-server, redis-tools (redis-benchmark), git, curl, jq.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET/bench
if [[ -n ${BENCH_QUICK:-} ]]; then
    SECS=0.5 WARM=0.2 RUNS=20 ISSUER_SECS=4 REDIS_N=20000
else
    SECS=${BENCH_SECONDS:-5} WARM=1 RUNS=${BENCH_RUNS:-300} ISSUER_SECS=${BENCH_ISSUER_SECONDS:-12} REDIS_N=1000000
fi
GEN_THREADS=${BENCH_THREADS:-1}
SHORT_LIFETIME=6   # seconds, for the issuer-load and freshness runs
SHORT_MARGIN=2     # refresh_margin of that profile
MIN_TTL=1

for tool in jq curl git redis-server redis-benchmark; do
    command -v "$tool" >/dev/null || { echo "bench.sh: $tool is needed" >&2; exit 1; }
done

if [[ -z ${BENCH_NO_BUILD:-} ]]; then
    (cd "$ROOT" && nice -n 10 cargo build --release --locked --bins --example bench)
fi
BIN=$TARGET/release
BENCH=$BIN/examples/bench
# The client as shipped: built for musl when that target and musl-gcc are
# here (static, smallest and fastest to start; docs/BENCHMARKS.md), else the
# default glibc build. BENCH_CLIENT=glibc forces the latter.
MUSL=x86_64-unknown-linux-musl
CLIENT=$BIN/ce-auth
if [[ ${BENCH_CLIENT:-} != glibc ]] && command -v musl-gcc >/dev/null \
    && rustup target list --installed 2>/dev/null | grep -qx "$MUSL"; then
    if [[ -z ${BENCH_NO_BUILD:-} ]]; then
        (cd "$ROOT" && nice -n 10 cargo build --release --locked --target "$MUSL" --bin ce-auth)
    fi
    CLIENT=$TARGET/$MUSL/release/ce-auth
fi
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    done
    [[ -S $WORK/gcc.sock ]] && git credential-cache --socket "$WORK/gcc.sock" exit 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

record() { tee -a "$RESULTS"; }
log() { echo "bench: $*" >&2; }

# waits (bounded) until FILE has a first line
first_line() {
    for _ in $(seq 200); do
        [[ -s $1 ]] && head -n1 "$1" | grep -q '}' && { head -n1 "$1"; return; }
        sleep 0.05
    done
    echo "bench.sh: no start-up line in $1" >&2; cat "$1" >&2; return 1
}

# start_issuer NAME LIFETIME -> sets ISSUER_URL (token URL), ISSUER_BASE and
# ISSUER_KEY_HEADER (a 0600 file with the test controls' key, for `curl -H @FILE`,
# so neither the client secret nor the key is ever on a command line)
start_issuer() {
    "$BIN/ce-authd" issuer --clients-file - --token-lifetime "$2" \
        --test-controls <<<"bench-client:$SECRET" >"$WORK/$1.out" 2>"$WORK/$1.err" &
    PIDS+=($!)
    local line
    line=$(first_line "$WORK/$1.out")
    ISSUER_URL=$(jq -r .token_url <<<"$line")
    ISSUER_BASE=$(jq -r .base_url <<<"$line")
    ISSUER_KEY_HEADER=$WORK/$1.key-header
    (umask 077 && jq -r '"X-CE-Test-Key: " + .test_key' <<<"$line" >"$ISSUER_KEY_HEADER")
}

# start_daemon NAME CONFIG -> sets DAEMON_PID, SOCK
start_daemon() {
    SOCK=$WORK/$1.sock
    RUST_LOG=warn "$BIN/ce-authd" --foreground --config "$2" --socket "$SOCK" \
        --pidfile "$WORK/$1.pid" 2>"$WORK/$1.log" &
    DAEMON_PID=$!
    PIDS+=("$DAEMON_PID")
    for _ in $(seq 200); do
        [[ -S $SOCK ]] && return
        kill -0 "$DAEMON_PID" || break
        sleep 0.05
    done
    echo "bench.sh: ce-authd did not start" >&2; cat "$WORK/$1.log" >&2; return 1
}

profile() { # NAME TOKEN_URL [extra lines]
    printf '[profiles.%s]\ntoken_url = "%s"\nclient_id = "bench-client"\nclient_secret_file = "%s"\n%s\n' \
        "$1" "$2" "$WORK/secret" "${3:-}"
}

SECRET=$(head -c 32 /dev/urandom | base64 | tr -d '/+=')
(umask 077 && printf '%s' "$SECRET" >"$WORK/secret")

# ---- daemon A: one profile, 15-minute tokens ----------------------------------
start_issuer issuer-a 900
{ echo 'default_profile = "bench"'; profile bench "$ISSUER_URL"; } >"$WORK/a.toml"
start_daemon a "$WORK/a.toml"
A_PID=$DAEMON_PID A_SOCK=$SOCK
export CE_AUTH_SOCK=$A_SOCK CE_AUTH_NO_AUTOSTART=1
"$BIN/ce-auth" token >/dev/null   # warm the cache
sleep 0.5                          # let the first request's allocations settle
log "memory"
"$BENCH" rss --pid "$A_PID" --label "idle (1 profile, token cached)" | record
"$BENCH" hold --socket "$A_SOCK" --pid "$A_PID" --conns 1000 --label "1,000 open connections" | record

# ---- 1. socket round trip --------------------------------------------------
log "socket round trip (${SECS} s per run)"
for c in 1 64 1000; do
    "$BENCH" load --socket "$A_SOCK" --pid "$A_PID" --conns "$c" --threads "$GEN_THREADS" \
        --warmup "$WARM" --duration "$SECS" --label "ce-authd, $c persistent" | record
done
for c in 1 64; do
    "$BENCH" load --socket "$A_SOCK" --pid "$A_PID" --conns "$c" --threads "$GEN_THREADS" --new-conn \
        --warmup "$WARM" --duration "$SECS" --label "ce-authd, $c, new connection per request" | record
done
for c in 1 64 1000; do
    "$BENCH" echo --like "$A_SOCK" --conns "$c" --threads "$GEN_THREADS" \
        --warmup "$WARM" --duration "$SECS" --label "echo server, $c persistent" | record
done
"$BENCH" echo --like "$A_SOCK" --conns 64 --threads "$GEN_THREADS" --new-conn \
    --warmup "$WARM" --duration "$SECS" --label "echo server, 64, new connection per request" | record

log "redis"
redis-server --port 0 --unixsocket "$WORK/redis.sock" --unixsocketperm 700 --save '' \
    --appendonly no --daemonize no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 200); do [[ -S $WORK/redis.sock ]] && break; sleep 0.05; done
redis-benchmark -s "$WORK/redis.sock" -n 1000 -t set -q >/dev/null   # the key GET reads
redis-benchmark -s "$WORK/redis.sock" -c 64 -n "$REDIS_N" -t get -q 2>/dev/null | tr '\r' '\n' |
    grep 'GET:' | tail -n1 |
    sed -E 's/.*GET: ([0-9.]+) requests per second, p50=([0-9.]+) msec.*/{"kind":"redis","label":"redis GET, 64 connections","rps":\1,"p50_us":\2}/' |
    jq -c '.p50_us *= 1000' | record

# ---- 2. client cost ---------------------------------------------------------
log "client cost ($RUNS runs each)"
printf 'protocol=https\nhost=bench.example\nusername=u\npassword=p\n\n' >"$WORK/gcc-store.txt"
printf 'protocol=https\nhost=bench.example\n\n' >"$WORK/gcc-get.txt"
git credential-cache --socket "$WORK/gcc.sock" --timeout 3600 store <"$WORK/gcc-store.txt"
git credential-cache --socket "$WORK/gcc.sock" get <"$WORK/gcc-get.txt" | grep -q password=p
"$BENCH" spawn --runs "$RUNS" --warmup 20 \
    --cmd "ce-auth token=$CLIENT token" \
    --cmd "/bin/echo hi=/bin/echo hi" \
    --cmd "git credential-cache get=git credential-cache --socket $WORK/gcc.sock get <$WORK/gcc-get.txt" \
    --cmd "ce-auth token (default glibc build)=$BIN/ce-auth token" | record
jq -nc --arg s "$(stat -c %s "$CLIENT")" --arg d "$(stat -c %s "$BIN/ce-authd")" \
    --arg g "$(stat -c %s "$BIN/ce-auth")" --arg c "$CLIENT" \
    '{kind:"size", client:$c, client_bytes:($s|tonumber), glibc_client_bytes:($g|tonumber), daemon_bytes:($d|tonumber)}' | record
( ldd "$CLIENT" 2>&1 || true ) | tr '\n' ' ' | jq -Rc '{kind:"ldd", text:.}' | record

# ---- 3. memory with 100 profiles ----------------------------------------------
log "100 profiles"
{
    echo 'default_profile = "p1"'
    for i in $(seq 100); do profile "p$i" "$ISSUER_URL"; done
} >"$WORK/c.toml"
start_daemon c "$WORK/c.toml"
for i in $(seq 100); do "$BIN/ce-auth" --socket "$SOCK" token -p "p$i" >/dev/null; done
sleep 0.5
"$BENCH" rss --pid "$DAEMON_PID" --label "100 profiles, each with a token" | record

# ---- 4 and 5. issuer load and freshness ----------------------------------------
log "issuer load (${ISSUER_SECS} s per run, ${SHORT_LIFETIME} s tokens)"
start_issuer issuer-b "$SHORT_LIFETIME"
B_BASE=$ISSUER_BASE B_KEY_HEADER=$ISSUER_KEY_HEADER
{ echo 'default_profile = "short"'; profile short "$ISSUER_URL" "refresh_margin = $SHORT_MARGIN"; } >"$WORK/b.toml"
start_daemon b "$WORK/b.toml"
"$BIN/ce-auth" --socket "$SOCK" token --min-ttl "$MIN_TTL" >/dev/null
for n in 1 100 1000; do
    before=$(curl -sf -H @"$B_KEY_HEADER" "$B_BASE/_test/counters" | jq .token_requests)
    run=$("$BENCH" load --socket "$SOCK" --conns "$n" --threads "$GEN_THREADS" --warmup 0 \
        --duration "$ISSUER_SECS" --min-ttl "$MIN_TTL" --check-fresh --label "$n clients")
    after=$(curl -sf -H @"$B_KEY_HEADER" "$B_BASE/_test/counters" | jq .token_requests)
    jq -c --argjson r "$((after - before))" --argjson t "$ISSUER_SECS" \
        --argjson lo "$(( (SHORT_LIFETIME + 1) / 2 ))" \
        '. + {kind:"issuer", issuer_requests:$r, bound:(($t / $lo) | ceil)}' <<<"$run" | record
done

# ---- results.md -----------------------------------------------------------------
log "writing $OUT/results.md"
{
    echo "# ce-auth benchmark results"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg);"
    echo "generator threads: $GEN_THREADS; ${SECS} s measured after ${WARM} s warm-up per row."
    echo
    echo "## 1. Socket round trip (\`token\`, warm cache)"
    echo
    echo "| run | req/s | p50 µs | p99 µs | p99.9 µs | max µs | errors | generator CPU (cores) | generator µs/req | server CPU (cores) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    jq -r 'select(.kind=="load" or .kind=="echo") |
        "| \(.label) | \(.rps) | \(.p50_us) | \(.p99_us) | \(.p999_us) | \(.max_us) | \(.errors + .conn_failures) | \(.gen_cpu_cores) | \(.gen_cpu_us_per_req) | \(.daemon_cpu_cores // .server_cpu_cores) |"' "$RESULTS"
    jq -r 'select(.kind=="redis") | "| \(.label) (redis-benchmark) | \(.rps) | \(.p50_us) | | | | | | | |"' "$RESULTS"
    echo
    echo "## 2. Client cost (whole process, interleaved runs)"
    echo
    echo "| command | runs | median µs | p10 µs | p90 µs | failures |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    jq -r 'select(.kind=="spawn") | .rows[] | "| \(.label) | \(.runs) | \(.median_us) | \(.p10_us) | \(.p90_us) | \(.failures) |"' "$RESULTS"
    jq -r 'select(.kind=="spawn") | .rows as $r |
        "\n`ce-auth token` / `/bin/echo hi` = \(($r[0].median_us / $r[1].median_us * 100 | round) / 100); `ce-auth token` / `git credential-cache get` = \(($r[0].median_us / $r[2].median_us * 100 | round) / 100)"' "$RESULTS"
    echo
    echo "## 3. Memory and size"
    echo
    echo "| what | value |"
    echo "| --- | ---: |"
    jq -r 'select(.kind=="rss") | "| daemon RSS, \(.label) | \(.rss_kib / 1024 * 100 | round / 100) MiB |"' "$RESULTS"
    jq -r 'select(.kind=="hold") | "| daemon RSS, \(.label) (\(.served) served) | \(.rss_kib / 1024 * 100 | round / 100) MiB |"' "$RESULTS"
    jq -r 'select(.kind=="size") | "| client binary (release, as measured: `\(.client | split("/") | .[-4:] | join("/"))`) | \(.client_bytes / 1048576 * 100 | round / 100) MiB (\(.client_bytes) bytes) |\n| client binary, default glibc build | \(.glibc_client_bytes / 1048576 * 100 | round / 100) MiB |\n| daemon binary (release) | \(.daemon_bytes / 1048576 * 100 | round / 100) MiB |"' "$RESULTS"
    jq -r 'select(.kind=="ldd") | "\nClient libraries: `\(.text)`"' "$RESULTS"
    echo
    echo "## 4 and 5. Issuer load and freshness (${SHORT_LIFETIME} s tokens, refresh_margin ${SHORT_MARGIN}, min_ttl ${MIN_TTL}, ${ISSUER_SECS} s per run)"
    echo
    echo "| clients | token requests served | req/s | issuer token requests | ⌈T / refresh interval⌉ | served with < min_ttl left | least time left (s) |"
    echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    jq -r 'select(.kind=="issuer") | "| \(.conns) | \(.checked) | \(.rps) | \(.issuer_requests) | \(.bound) | \(.stale) | \(.min_margin_s) |"' "$RESULTS"
} >"$OUT/results.md"
cat "$OUT/results.md"
