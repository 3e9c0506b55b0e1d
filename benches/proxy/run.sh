#!/usr/bin/env bash
# Proxy benchmark: saml-gateway (memory and Redis store) against plain nginx as a reverse proxy,
# in front of the same nginx upstream, on loopback. Run by hand, as root, on a 2-core Debian 12
# machine; never part of the test suite. See "Proxy benchmark" in docs/performance.md.
#
#   benches/proxy/run.sh                      # about 9 minutes with the defaults
#   BENCH_DURATION=5 BENCH_REPEATS=1 benches/proxy/run.sh   # a quick look
#
# Settings (environment): BENCH_DURATION (10 s per run), BENCH_REPEATS (3),
# BENCH_CONNECTIONS (32), BENCH_WRK_THREADS (2), BENCH_LOW_DURATION (5), BENCH_WS_DURATION (5),
# BENCH_WS_INFLIGHT (1048576 bytes), BENCH_SESSIONS (100000), BENCH_PERF (1), BENCH_PROXY_CPU (0),
# BENCH_LOAD_CPU (1), BENCH_WORKER_THREADS (1), BENCH_MAX_FOREIGN (10 % of a core),
# BENCH_RETRIES (2), BENCH_QUIET_WAIT (30 s), BENCH_OUT (target/bench-proxy),
# GATEWAY_BIN (default: build target/release/saml-gateway), WS_ECHO_BIN (default: build
# target/release/examples/ws_echo). bench.py's docstring explains them.
#
# Installs what is missing (Debian's nginx, wrk, linux-perf; the test bed's packages and .venv
# through scripts/setup.sh), builds the gateway, then runs benches/proxy/bench.py, which prints
# a markdown table and writes it to $BENCH_OUT/results.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
for p in nginx wrk; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
command -v perf >/dev/null 2>&1 || need+=(linux-perf)
if [ ${#need[@]} -gt 0 ]; then
  echo "bench: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Keep the nginx package from starting a system-wide nginx on port 80.
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  for p in "${need[@]}"; do
    if [ "$p" = linux-perf ] && ! apt-cache show linux-perf >/dev/null 2>&1; then
      echo "bench: linux-perf is not available; no profile"
      continue
    fi
    apt-get install -y -qq --no-install-recommends "$p" >/dev/null
  done
  [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
fi

# SimpleSAMLphp, Redis and the .venv (requests, websocket-client) of the test bed.
scripts/setup.sh

if [ -z "${GATEWAY_BIN:-}" ]; then
  cargo build --release --locked --bin saml-gateway
  export GATEWAY_BIN="$PWD/target/release/saml-gateway"
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
