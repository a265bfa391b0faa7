#!/usr/bin/env bash
# Runs every test of escr-gateway: formatting and lint checks and the whole test suite.
# When tests need real servers (MariaDB, PostgreSQL, ODBC drivers), this script installs
# and starts them on loopback first and stops them afterwards, also when tests fail.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f scripts/test-servers.sh ]; then
  # shellcheck source=/dev/null
  source scripts/test-servers.sh
  trap stop_test_servers EXIT
  start_test_servers
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
