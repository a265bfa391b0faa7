#!/usr/bin/env bash
# The gateway against a direct-SQL program on the same MariaDB under wrk (issue 14's
# benchmark): starts the test servers, installs wrk if missing, builds in release mode,
# runs examples/bench_peers.rs and stops the servers again.
#
#   scripts/bench-peers.sh [people] [connections,...] [seconds]    # 10000 16,64,500 20
#
# Prints requests/s, p50/p99, statements per request (MariaDB's Com_select), CPU of each
# process, peak RSS and the ratios to the direct program. A measurement, never a test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null; then
  apt-get install -y -qq --no-install-recommends wrk >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends wrk >/dev/null; }
fi
# shellcheck source=/dev/null
source scripts/test-servers.sh
trap stop_test_servers EXIT
start_test_servers
# 500 connections need as many descriptors in wrk and the servers.
ulimit -n 65536 2>/dev/null || true
cargo build --release --quiet --bin escr --example bench_peers
target/release/examples/bench_peers "$@"
