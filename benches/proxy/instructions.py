"""Instructions per proxied request: the gateway under valgrind's callgrind, for a fixed number
of authenticated GETs of the 100-byte body (memory store), one connection; and plain nginx as
the reverse proxy in front of the same upstream, counted the same way in the same run, as the
baseline (nginx with `master_process off`, so that its one process is the one counted).

Run by hand, never part of the test suite, after benches/proxy/run.sh has installed nginx (it
uses bench.py's upstream and gateway set-up):

    .venv/bin/python benches/proxy/instructions.py target/release/saml-gateway [REQUESTS]

Callgrind counts instructions, not time, so the figure repeats for the same binary and
requests whatever else the machine does: use it to compare two builds of the hot path. The
counters are zeroed after a warm-up of 200 requests and dumped after REQUESTS more (default
2000); the profile goes to BENCH_OUT/callgrind (default target/bench-instructions). Kernel
time (the socket system calls) is not counted. BENCH_NGINX=0 skips the nginx baseline;
BENCH_STORE=redis counts the gateway with the Redis store (its own redis-server) instead of
the memory store. BENCH_CACHE_SIM=1 also simulates the caches (callgrind's --cache-sim=yes, the
host's cache sizes) and prints the first-level instruction and data cache misses per request:
a hot path whose code does not fit the 32 KiB instruction cache runs at fewer instructions per
cycle, which the instruction count alone does not show. BENCH_FLOOR=1 also counts
crates/gateway/examples/hyper_floor.rs with the gateway's six added headers (benches/proxy/
floor.py explains it; build it first with `cargo build --release -p gateway --example
hyper_floor`), after the gateway.
"""

import glob
import http.client
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
os.environ.setdefault("BENCH_OUT", str(ROOT / "target" / "bench-instructions"))
OUT = Path(os.environ["BENCH_OUT"])
PROFILES = OUT / "callgrind"
CACHE_SIM = os.environ.get("BENCH_CACHE_SIM", "0") == "1"
VALGRIND = ["valgrind", "--tool=callgrind", *(["--cache-sim=yes"] if CACHE_SIM else [])]


def count(pid, port, cookie, requests):
    """Zeroes the callgrind counters of `pid`, sends 200 + `requests` GETs, dumps; returns every
    event per request (`Ir`, the instructions; with BENCH_CACHE_SIM also the cache misses), the
    dump's path and callgrind_annotate's report."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get():
        conn.request("GET", "/small", headers={"Cookie": f"saml-session={cookie}"})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status} from port {port}")

    for _ in range(200):
        get()
    subprocess.run(["callgrind_control", "--zero", str(pid)], check=True, capture_output=True)
    for _ in range(requests):
        get()
    subprocess.run(["callgrind_control", "--dump=load", str(pid)], check=True,
                   capture_output=True)
    [dump] = glob.glob(str(PROFILES / f"callgrind.{pid}.out.1"))
    report = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", dump],
                            capture_output=True, text=True, check=True).stdout
    events = next(line for line in report.splitlines() if line.startswith("Events shown:"))
    names = events.split(":", 1)[1].split()
    totals = next(line for line in report.splitlines() if "PROGRAM TOTALS" in line)
    values = [int(v.replace(",", "")) for v in totals.split() if v.replace(",", "").isdigit()]
    per_request = {name: value / requests for name, value in zip(names, values)}
    return per_request, dump, report


def shown(count):
    """A count as printed: instructions, and with BENCH_CACHE_SIM the cache misses."""
    if not CACHE_SIM:
        return f"{count['Ir']:,.0f} instructions"
    return (f"{count['Ir']:,.0f} instructions, {count['I1mr']:,.0f} first-level instruction "
            f"cache misses, {count['D1mr'] + count['D1mw']:,.0f} data cache misses")


def count_floor(upstream_port, cookie, requests):
    """hyper_floor (with `--headers`) under the same valgrind, counted as the gateway is."""
    import bench  # noqa: E402  (imported by main() with the environment it needs)
    proc, port = bench.start_floor(
        upstream_port, cookie, True,
        [*VALGRIND, f"--callgrind-out-file={PROFILES}/callgrind.%p.out"])
    try:
        return count(proc.pid, port, cookie, requests)[0]
    finally:
        proc.kill()
        proc.wait()


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = Path(sys.argv[1]).resolve()
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    shutil.rmtree(PROFILES, ignore_errors=True)
    PROFILES.mkdir(parents=True)
    # The gateway started by bench.py, under callgrind: a wrapper in its place.
    wrapper = PROFILES / "saml-gateway"
    wrapper.write_text(f"#!/bin/sh\nexec {' '.join(VALGRIND)} "
                       f"--callgrind-out-file={PROFILES}/callgrind.%p.out {binary} \"$@\"\n")
    wrapper.chmod(0o755)
    os.environ["GATEWAY_BIN"] = str(wrapper)
    os.environ["BENCH_WORKER_THREADS"] = "1"
    sys.path.insert(0, str(HERE))
    import bench  # noqa: E402  (reads the environment set above)

    bench.OUT.mkdir(parents=True, exist_ok=True)
    # Under valgrind, the gateway's start (a key generated) takes several times as long.
    bench.PinnedGateway.start_timeout = 180.0
    upstream = bench.upstream_nginx(bench.OUT / "upstream").start()
    echo = bench.EchoServer(bench.OUT / "ws-echo").start()
    services = [upstream, echo]
    try:
        nginx_count = None
        if os.environ.get("BENCH_NGINX", "1") != "0":
            # bench.py's nginx proxy, as one process under callgrind.
            nginx = bench.proxy_nginx(bench.OUT / "nginx-callgrind", upstream.port)
            nginx.master_process = False
            nginx.command_prefix = [*VALGRIND,
                                    f"--callgrind-out-file={PROFILES}/callgrind.%p.out"]
            services.append(nginx.start(timeout=60.0))
            # A cookie of the session cookie's length, as in bench.py.
            nginx_count, _, _ = count(nginx.proc.pid, nginx.port, "x" * 43, requests)
            nginx.stop()
        redis_url = None
        if os.environ.get("BENCH_STORE", "memory") == "redis":
            # The Redis store: its own redis-server, as bench.py starts it.
            redis = bench.testbed.Redis(bench.OUT / "redis").start()
            services.append(redis)
            redis_url = redis.url
        gateway, cookie, _ = bench.start_gateway("gw-" + ("redis" if redis_url else "memory"),
                                                 upstream.port, echo.port, redis_url=redis_url)
        services.append(gateway)
        per_request, dump, report = count(gateway.proc.pid, gateway.port, cookie, requests)
        floor_count = None
        if os.environ.get("BENCH_FLOOR", "0") == "1":
            floor_count = count_floor(upstream.port, cookie, requests)
    finally:
        for service in reversed(services):
            service.stop()
    (OUT / "callgrind-report.txt").write_text(report)
    print(f"{shown(per_request)} per request ({requests} requests); "
          f"profile: {dump}; report: {OUT / 'callgrind-report.txt'}")
    if nginx_count:
        print(f"nginx as the proxy: {shown(nginx_count)} per request; "
              f"gateway / nginx instructions: {per_request['Ir'] / nginx_count['Ir']:.2f}x")
    if floor_count:
        print(f"hyper_floor with six headers: {shown(floor_count)} per request")


if __name__ == "__main__":
    main()
