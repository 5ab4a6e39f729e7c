#!/usr/bin/env bash
# Conformance run: plays docs/openapi.yaml against the reference control
# plane with a schema-driven fuzzer (schemathesis, pinned, every check on),
# so that what the document allows and what the server accepts stay the
# same. Installs schemathesis into a virtual environment under target/ when
# missing, checks every example of the document against its schema, starts
# `rdrunner-harness serve` on a free loopback port, seeds a runner, nodes
# and executions (scripts/conformance/seed.py), then fuzzes the runner API
# and the admin API in turn. Any finding fails the run; the known exceptions
# are in scripts/conformance/schemathesis.toml with their reasons, each held
# to its error code by scripts/conformance/hooks.py.
#
# Environment: CONFORMANCE_SEED (fuzzer seed; random and printed when not
# set), CONFORMANCE_MAX_EXAMPLES (per operation and phase; default in the
# config), PYTHON (the interpreter for the virtual environment),
# CONFORMANCE_HARNESS_BIN (a harness binary already built; built otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
target_dir="${CARGO_TARGET_DIR:-target}"
work="$target_dir/conformance"
venv="$work/venv"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"

if [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
  echo "== installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  rm -rf "$venv"
  if ! "$python" -m venv "$venv"; then
    # Debian's python3 makes virtual environments only with python3-venv.
    echo "== installing python3-venv (Debian) for the virtual environment"
    sudo_if() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
    sudo_if apt-get update -qq
    sudo_if env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    rm -rf "$venv"
    "$python" -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

echo "== openapi examples against their schemas"
"$venv/bin/python" scripts/conformance/check_examples.py docs/openapi.yaml

if [ -n "${CONFORMANCE_HARNESS_BIN:-}" ]; then
  harness_bin="$CONFORMANCE_HARNESS_BIN"
else
  echo "== building rdrunner-harness"
  cargo build --quiet -p rdrunner-harness --bin rdrunner-harness
  harness_bin="$target_dir/debug/rdrunner-harness"
fi
[ -x "$harness_bin" ] || {
  echo "no harness binary at $harness_bin; leave CONFORMANCE_HARNESS_BIN unset to build one" >&2
  exit 1
}

mkdir -p "$work"
CONFORMANCE_WORK="$(cd "$work" && pwd)"
export CONFORMANCE_WORK
# Hypothesis (under schemathesis) caches Unicode tables in .hypothesis/ of the
# current directory unless told otherwise: keep the work tree clean.
export HYPOTHESIS_STORAGE_DIRECTORY="$CONFORMANCE_WORK/hypothesis"
log="$work/harness.log"
# A fresh admin token per run, passed through the environment (not argv).
RDRUNNER_HARNESS_ADMIN_TOKEN="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export RDRUNNER_HARNESS_ADMIN_TOKEN
harness_pid=""
cleanup() {
  if [ -n "$harness_pid" ] && kill -0 "$harness_pid" 2>/dev/null; then
    kill -TERM "$harness_pid" 2>/dev/null || true
    # Bounded: SIGKILL if it has not stopped within 5 s.
    for _ in $(seq 50); do kill -0 "$harness_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$harness_pid" 2>/dev/null || true
    wait "$harness_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Port 0: the kernel picks a free loopback port; the harness prints its URL.
# A long poll is capped at 50 ms so that fuzzed waitMs values cannot hold
# the run up, and a lease lasts 200 ms so that the seeded unclaimed operation
# is offered again and again (for the check-in -> claim link).
: >"$log"
"$harness_bin" serve --listen 127.0.0.1:0 --max-wait-ms 50 --lease-ms 200 >"$log" 2>&1 &
harness_pid=$!
base=""
for _ in $(seq 100); do
  base="$(sed -n 's/^rdrunner-harness listening on \(http:\/\/127\.0\.0\.1:[0-9]*\)$/\1/p' "$log")"
  [ -n "$base" ] && break
  kill -0 "$harness_pid" 2>/dev/null || { cat "$log" >&2; echo "the harness exited before listening" >&2; exit 1; }
  sleep 0.1
done
[ -n "$base" ] || { cat "$log" >&2; echo "the harness did not print its URL within 10 s" >&2; exit 1; }
echo "== harness at $base"

# An assignment, not `eval "$(...)"`, so that a failed seeding stops the run.
seeded="$("$venv/bin/python" scripts/conformance/seed.py "$base" "$RDRUNNER_HARNESS_ADMIN_TOKEN")"
eval "$seeded"
export CONFORMANCE_RUNNER_ID CONFORMANCE_RUNNER_TOKEN CONFORMANCE_REPLICA_ID CONFORMANCE_OP_ID \
  CONFORMANCE_EXECUTION_ID CONFORMANCE_OFFERED_EXECUTION_ID

seed="${CONFORMANCE_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
echo "== schemathesis seed $seed (replay with CONFORMANCE_SEED=$seed)"
fuzz() {
  local what="$1"
  shift
  echo "== schemathesis: $what"
  # NO_COLOR and a fixed width keep the CI log readable.
  NO_COLOR=1 COLUMNS=120 "$venv/bin/schemathesis" --config-file scripts/conformance/schemathesis.toml \
    run docs/openapi.yaml --url "$base" --checks all --seed "$seed" --workers 1 \
    ${CONFORMANCE_MAX_EXAMPLES:+--max-examples "$CONFORMANCE_MAX_EXAMPLES"} \
    --report junit --report-dir "$work/report" "$@"
}
# The runner API first: the admin run regenerates the seeded runner's token
# and changes fault rules, which would refuse or disturb runner calls.
fuzz "runner API" --include-path-regex '^/api/runner/v1/' --report-junit-path "$work/report/runner-api.xml"
fuzz "admin API" --include-path-regex '^/api/v1/' --report-junit-path "$work/report/admin-api.xml"
echo "== conformance: no finding"
