#!/usr/bin/env bash
# Runs every test of escr-gateway: installs (apt, only what is missing) and starts on
# loopback the real servers the tests talk to, runs formatting and lint checks and the
# whole test suite, and stops the servers afterwards, also when tests fail.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/test-servers.sh
source scripts/test-servers.sh
trap stop_test_servers EXIT
start_test_servers

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
