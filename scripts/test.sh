#!/usr/bin/env bash
# The whole test suite: installs what is missing (scripts/setup.sh), runs the crates' unit and
# integration tests, checks that the API docs build without a warning, then runs the end-to-end
# tests in tests/e2e against a real SimpleSAMLphp IdP, a real Streamlit app, real redis-servers
# and headless Chromium. Artifacts (logs, screenshots)
# go to target/e2e/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

# The Redis store's tests (crates/session-store/tests/redis.rs, tests/e2e/test_replicas.py) need
# a redis-server: REDIS_URL when set, else the one answering on 6379, else one started here on a
# free port (no persistence) and stopped when this script exits.
redis_dir=""
stop_redis() {
  if [ -n "$redis_dir" ] && [ -f "$redis_dir/redis.pid" ]; then
    kill "$(cat "$redis_dir/redis.pid")" 2>/dev/null || true
  fi
}
trap stop_redis EXIT
if [ -z "${REDIS_URL:-}" ]; then
  if [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; then
    export REDIS_URL="redis://127.0.0.1:6379"
  else
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    redis_dir="$PWD/target/test-redis"
    mkdir -p "$redis_dir"
    rm -f "$redis_dir/redis.pid"
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes \
      --pidfile "$redis_dir/redis.pid" --logfile "$redis_dir/redis.log" --dir "$redis_dir"
    for _ in $(seq 50); do
      [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = "PONG" ] && break
      sleep 0.1
    done
    export REDIS_URL="redis://127.0.0.1:$port"
    echo "test: started redis-server on 127.0.0.1:$port for the tests"
  fi
fi
echo "test: REDIS_URL=$(printf %s "$REDIS_URL" | sed -E 's#//[^@/]*@#//***@#')"

cargo build --locked --workspace --all-targets
cargo test --locked --workspace
# The API docs build without a warning (broken or private intra-doc links included).
RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps --quiet
SAML_GATEWAY_BIN="$PWD/target/debug/saml-gateway" \
  .venv/bin/python -m pytest -p no:cacheprovider -q tests/e2e
