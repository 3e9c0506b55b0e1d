"""The training run of the profile-guided build (scripts/build-pgo.sh): an instrumented gateway
under the proxy benchmark's workloads, so that the profile it writes at exit says which code is
hot. Run by scripts/build-pgo.sh, which sets LLVM_PROFILE_FILE; by hand:

    LLVM_PROFILE_FILE=target/pgo/profiles/gw-%p.profraw \\
        .venv/bin/python benches/proxy/pgo_train.py target/pgo/generate/release/saml-gateway

For each store (memory, then Redis on its own redis-server) it starts the gateway with bench.py's
set-up (an IdP, the nginx upstream, the WebSocket echo server, one login), then sends:
authenticated GETs of the 100-byte and the 64 KiB body at 32 connections and at one, WebSocket
echo at 64 B and 64 KiB, and unauthenticated GETs (each a redirect to the IdP with a new
AuthnRequest). The gateway is stopped with SIGTERM, so that it exits normally and writes its
profile. Nothing is pinned or measured: only the mix of work matters.
"""

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
os.environ.setdefault("BENCH_OUT", str(ROOT / "target" / "pgo" / "train"))
if len(sys.argv) != 2:
    sys.exit(__doc__)
os.environ["GATEWAY_BIN"] = str(Path(sys.argv[1]).resolve())
sys.path.insert(0, str(HERE))
import bench  # noqa: E402  (reads the environment set above)


def wrk(port, path, cookie, connections, seconds):
    """wrk against the gateway on `port`; fails when no request was answered."""
    argv = bench.wrk_argv(port, path, cookie, connections, 1, seconds)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    bench.say(f"{path} -c{connections}: " + next(
        (line.strip() for line in out.splitlines() if line.startswith("Requests/sec")), "?"))


def websocket(port, cookie, size, seconds):
    """WebSocket echo of `size`-byte messages through the gateway on `port`."""
    subprocess.run(bench.ws_client_argv(port, size, seconds, cookie), check=True,
                   capture_output=True)
    bench.say(f"WebSocket {size} B: done")


def main():
    for binary in (bench.GATEWAY_BIN, bench.WS_ECHO_BIN):
        if not binary.exists():
            sys.exit(f"no {binary}; scripts/build-pgo.sh builds it")
    bench.OUT.mkdir(parents=True, exist_ok=True)
    services = []
    try:
        upstream, echo = bench.upstream_and_echo(services)
        redis = bench.testbed.Redis(bench.OUT / "redis").start()
        services.append(redis)
        for store, redis_url in (("memory", None), ("redis", redis.url)):
            gateway, cookie, _ = bench.start_gateway(f"gw-{store}", upstream.port, echo.port,
                                                     redis_url=redis_url)
            services.append(gateway)
            bench.say(f"{store} store: logged in")
            for path in ("/small", "/large"):
                wrk(gateway.port, path, cookie, 32, 6)
                wrk(gateway.port, path, cookie, 1, 2)
            for size in (64, 65536):
                websocket(gateway.port, cookie, size, 3)
            wrk(gateway.port, "/small", "not-a-session", 4, 1)
            gateway.stop()
            services.remove(gateway)
    finally:
        for service in reversed(services):
            service.stop()


if __name__ == "__main__":
    main()
