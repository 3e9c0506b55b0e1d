#!/usr/bin/env bash
# Proxy benchmark: saml-gateway (memory and Redis store) against plain nginx as a reverse proxy,
# in front of the same nginx upstream, on loopback. Run by hand, as root, on a 2-core Debian 12
# machine; never part of the test suite. See "Proxy benchmark" in docs/performance.md.
#
#   benches/proxy/run.sh                      # about 27 minutes with the defaults
#   BENCH_DURATION=5 BENCH_REPEATS=1 benches/proxy/run.sh   # a quick look
#
# Settings (environment): BENCH_DURATION (10 s per run), BENCH_REPEATS (3),
# BENCH_CONNECTIONS (32), BENCH_WRK_THREADS (2), BENCH_LOW_DURATION (5), BENCH_WS_DURATION (5),
# BENCH_WS_INFLIGHT (1048576 bytes), BENCH_SESSIONS (100000), BENCH_PERF (1), BENCH_PROXY_CPU (0),
# BENCH_LOAD_CPU (1), BENCH_WORKER_THREADS (1), BENCH_MAX_FOREIGN (10 % of a core),
# BENCH_RETRIES (2), BENCH_QUIET_WAIT (30 s), BENCH_OUT (target/bench-proxy), BENCH_PGO (1),
# GATEWAY_BIN (default: built here, see below), GATEWAY_PLAIN_BIN, WS_ECHO_BIN (default: build
# target/release/examples/ws_echo). bench.py's docstring explains them.
#
# Installs what is missing (Debian's nginx, wrk, linux-perf; the test bed's packages and .venv
# through scripts/setup.sh), builds the gateway, then runs benches/proxy/bench.py, which prints
# a markdown table and writes it to $BENCH_OUT/results.md. The gateway measured is the
# profile-guided build of scripts/build-pgo.sh (about 10 minutes more), with the plain
# `cargo build --release` binary as a row of its own; BENCH_PGO=0 measures the plain build alone.
set -euo pipefail
cd "$(dirname "$0")/../.."

# nginx, wrk, linux-perf (for the profile), the test bed's packages and .venv.
benches/proxy/deps.sh linux-perf
command -v perf >/dev/null 2>&1 || echo "bench: no perf; no profile"

if [ -z "${GATEWAY_BIN:-}" ]; then
  cargo build --release --locked --bin saml-gateway
  if [ "${BENCH_PGO:-1}" = 1 ]; then
    # The profile-guided build is the one measured; the plain build gets a row of its own.
    scripts/build-pgo.sh
    export GATEWAY_BIN="$PWD/target/pgo/saml-gateway"
    export GATEWAY_PLAIN_BIN="$PWD/target/release/saml-gateway"
  else
    export GATEWAY_BIN="$PWD/target/release/saml-gateway"
  fi
fi
if [ -z "${WS_ECHO_BIN:-}" ]; then
  # The WebSocket echo server and client (crates/gateway/examples/ws_echo.rs).
  cargo build --release --locked -q -p gateway --example ws_echo
fi
if [ "${BENCH_SESSIONS:-100000}" != 0 ]; then
  # The memory_rss example (session store alone); built now so that the build is not timed.
  cargo build --release --locked -q -p session-store --example memory_rss
fi

exec .venv/bin/python benches/proxy/bench.py
