"""WebSocket echo through several gateway builds side by side, against direct: the comparison
behind the WebSocket tables of docs/performance.md. Run by hand, after benches/proxy/run.sh
has installed what it needs and built the echo pair:

    .venv/bin/python benches/proxy/ws_compare.py OLD_BINARY NEW_BINARY [...]

One echo server (crates/gateway/examples/ws_echo.rs), nginx tunnelling to it (bench.py's
reference proxy, one worker), and one gateway per binary, each with its own IdP and one login,
all set up as bench.py does (proxies pinned to BENCH_PROXY_CPU, the echo server and client to
BENCH_LOAD_CPU). Per repetition, for each message size, the echo client runs against direct,
nginx and every gateway in turn, the order rotated. Printed per size, for nginx and each
binary: the median ratio of MB/s to the direct run of the same repetition, and the proxy's
CPU time per message and direction (utime + stime from /proc), with ranges.

Settings (environment): REPS (8), SIZES (65536,64), SECONDS (4 per run), BENCH_WS_INFLIGHT
(bench.py's), BENCH_OUT (target/bench-ws-compare), WS_ECHO_BIN (bench.py's default).
"""

import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("BENCH_OUT", str(HERE.parent.parent / "target" / "bench-ws-compare"))
sys.path.insert(0, str(HERE))
import bench  # noqa: E402


def main(binaries):
    reps = int(os.environ.get("REPS", "8"))
    sizes = [int(s) for s in os.environ.get("SIZES", "65536,64").split(",")]
    seconds = int(os.environ.get("SECONDS", "4"))
    bench.OUT.mkdir(parents=True, exist_ok=True)
    if not bench.WS_ECHO_BIN.exists():
        sys.exit(f"no WebSocket echo binary at {bench.WS_ECHO_BIN}; run benches/proxy/run.sh")
    echo = bench.EchoServer(bench.OUT / "ws-echo").start()
    # nginx tunnels /ws to the same echo server: a proxy's cost, for reference. It needs an
    # upstream for its start-up check.
    upstream = bench.upstream_nginx(bench.OUT / "upstream").start()
    nginx = bench.proxy_nginx(bench.OUT / "nginx-proxy", upstream.port, echo.port).start()
    gateways = [{"name": "nginx", "port": nginx.port, "cookie": None, "pids": nginx.pids,
                 "service": nginx}]
    try:
        for i, binary in enumerate(binaries):
            bench.GATEWAY_BIN = Path(binary).resolve()
            gw, cookie, _ = bench.start_gateway(f"gw-{i}", 1, echo.port)
            gateways.append({"name": binary, "port": gw.port, "cookie": cookie,
                             "pids": gw.pids, "service": gw})
        direct = {"name": "direct", "port": echo.port, "cookie": None, "pids": lambda: []}
        runs = {}
        for r in range(reps):
            for size in sizes:
                order = [direct] + gateways
                order = order[r % len(order):] + order[:r % len(order)]
                for target in order:
                    res = bench.ws_once(target, size, seconds)
                    runs.setdefault((size, target["name"]), []).append(res)
                    bench.say(f"rep {r + 1} {size:6} B {target['name']}: "
                              f"{res['mb_per_s']:.0f} MB/s")
                    time.sleep(0.3)
    finally:
        for g in gateways:
            g["service"].stop()
        upstream.stop()
        echo.stop()

    for size in sizes:
        directs = runs[(size, "direct")]
        print(f"{size} B messages: direct {statistics.median(d['mb_per_s'] for d in directs):.0f}"
              f" MB/s (median); {cores(directs)}")
        for g in gateways:
            mine = runs[(size, g["name"])]
            ratios = [m["mb_per_s"] / d["mb_per_s"] for m, d in zip(mine, directs)]
            cpu = [m["cpu_us_per_msg"] for m in mine]
            print(f"  {g['name']}: {statistics.median(ratios):.2f}x of direct "
                  f"({min(ratios):.2f}-{max(ratios):.2f}); CPU per message and direction "
                  f"{statistics.median(cpu):.3f} us ({min(cpu):.3f}-{max(cpu):.3f}); "
                  f"{cores(mine)}")


def cores(runs):
    """Both cores' busy share and the load core's busy time per message, as medians: the load
    core runs the echo server and client, so its time per message bounds the rate."""
    def m(key):
        return statistics.median(r[key] for r in runs)
    return (f"proxy core {m('proxy_core_busy_pct'):.0f} % busy, load core "
            f"{m('load_core_busy_pct'):.0f} % busy, {m('load_core_us_per_msg'):.3f} us per message")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
