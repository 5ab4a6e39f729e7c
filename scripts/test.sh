#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the build and the tests
# need when it is missing (OpenSSL's headers and pkg-config, which libssh2 is
# built against; OpenSSH's server, for the SSH tests; Prometheus, whose
# promtool checks contrib/prometheus; chromium and its WebDriver, for the
# Runner Management page's browser test), then format, lint, tests, the OpenAPI
# conformance run, the Prometheus rules, a smoke run of the benchmark and a
# quick seeded chaos run.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v pkg-config >/dev/null || missing+=(pkg-config)
[ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
command -v promtool >/dev/null || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]} (the SSH tests start a private sshd on loopback; promtool checks the alert rules; the page's test drives headless chromium)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# sshd refuses to start without its privilege-separation directory.
[ -d /run/sshd ] || as_root mkdir -p /run/sshd

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
echo "== cargo test: through fail points: supervision escalation (exit 5), a claim killed before it was recorded"
cargo test -p rdrunner --features failpoints --test daemon_escalation --test daemon_claim_journal
# docs/openapi.yaml against the reference control plane, with a pinned
# schema-driven fuzzer (installed under target/ when missing); fails on any
# finding. Its seed is printed, so a failure can be replayed.
# The harness binary is the one `cargo test --workspace` built above: built
# alone, the crates whose features differ across the workspace would be
# built a second time.
echo "== conformance: docs/openapi.yaml against rdrunner-harness"
CONFORMANCE_HARNESS_BIN="${CARGO_TARGET_DIR:-target}/debug/rdrunner-harness" scripts/conformance.sh
# The binaries below are the ones `cargo test --workspace` built above: a
# `cargo run` of one package resolves other features than the whole
# workspace and would build rdrunner and a dozen crates a second time
# (three minutes on two cores).
bin="${CARGO_TARGET_DIR:-target}/debug"
echo "== contrib/prometheus: the scrape configuration and the alert rules (promtool)"
promtool check config contrib/prometheus/prometheus.yml
promtool test rules contrib/prometheus/rdrunner.rules.test.yml
echo "== runner.example.toml is a valid configuration"
"$bin/rdrunner" config --check runner.example.toml
# Every benchmark at a tiny size (well under a minute), so that a change that
# breaks the benchmark fails here rather than on the next real run. Its
# figures mean nothing in this build and it writes no file.
echo "== benchmark smoke run"
# The bench example has unit tests of its own (`test = true`), so `cargo
# test` builds it as a test harness only: build the program itself (the
# crates it links are the ones built above; this compiles the examples).
cargo build --workspace --examples
"$bin/examples/bench" --smoke
# A quick seeded run of every chaos scenario (fault injection against the
# real runner); the seed is printed first, so a failure can be replayed.
CHAOS_SEED="${CHAOS_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
echo "== chaos (quick), seed $CHAOS_SEED"
"$bin/examples/chaos" --seed "$CHAOS_SEED" --scenario all --quick
