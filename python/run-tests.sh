#!/usr/bin/env bash
# Runs the ce_auth test suite against the real ce-authd:
#   python/run-tests.sh [PYTEST ARGS...]
# Creates a virtualenv in ${CE_AUTH_VENV:-python/.venv}, installs
# ./python[test,requests,httpx] into it (a real install, not the source
# tree), and runs pytest. The binaries come from $CE_AUTHD / $CE_AUTH_BIN,
# else target/debug/ (built with cargo when missing and cargo is there).
# Exits with pytest's status; prints its wall time.
set -euo pipefail
start_ns=$(date +%s%N)
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="${CE_AUTH_VENV:-$here/.venv}"
python="${PYTHON:-python3}"

finish() {
  local status=$? ms
  ms=$((($(date +%s%N) - start_ns) / 1000000))
  printf 'run-tests.sh: wall time %d.%01d s (exit status %d)\n' $((ms / 1000)) $((ms % 1000 / 100)) "$status" >&2
}
trap finish EXIT

if [ -z "${CE_AUTHD:-}" ] && [ ! -x "$repo/target/debug/ce-authd" ]; then
  if command -v cargo >/dev/null 2>&1; then
    echo "run-tests.sh: building ce-authd and ce-auth (cargo build --locked --bins)" >&2
    (cd "$repo" && cargo build --locked --bins)
  else
    echo "run-tests.sh: no ce-authd: set CE_AUTHD, or build it (cargo build --locked --bins)" >&2
    exit 1
  fi
fi

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
# a fresh install of the package each run: the tests see what users get
"$venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$here"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "$here[test,requests,httpx]"

cd "$here"
# the installed package, never the source tree, is what is imported
"$venv/bin/python" -m pytest -p no:cacheprovider "$@" tests
