#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need when it is
# missing (OpenSSH's server, for the SSH tests), then format, lint and tests.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -x /usr/sbin/sshd ]; then
  echo "== installing openssh-server (the SSH tests start a private sshd on loopback)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
fi
# sshd refuses to start without its privilege-separation directory.
[ -d /run/sshd ] || as_root mkdir -p /run/sshd

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
echo "== runner.example.toml is a valid configuration"
cargo run --quiet -- config --check runner.example.toml
# A quick seeded run of every chaos scenario (fault injection against the
# real runner); the seed is printed first, so a failure can be replayed.
CHAOS_SEED="${CHAOS_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
echo "== chaos (quick), seed $CHAOS_SEED"
cargo run --release --example chaos -- --seed "$CHAOS_SEED" --scenario all --quick
