"""WebSocket echo through several gateway builds side by side, against direct: the comparison
behind the WebSocket tables of docs/performance.md. Run by hand, after benches/proxy/run.sh
has installed what it needs and built the echo pair:

    .venv/bin/python benches/proxy/ws_compare.py OLD_BINARY NEW_BINARY [...]

One echo server (crates/gateway/examples/ws_echo.rs), and one gateway per binary, each with its
own IdP and one login, all set up as bench.py does (gateways pinned to BENCH_PROXY_CPU, the echo
server and client to BENCH_LOAD_CPU). Per repetition, for each message size, the echo client
runs against direct and every gateway in turn, the order rotated. Printed per size and
binary: the median ratio of MB/s to the direct run of the same repetition, and the gateway's
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
    gateways = []
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
        echo.stop()

    for size in sizes:
        directs = runs[(size, "direct")]
        print(f"{size} B messages: direct {statistics.median(d['mb_per_s'] for d in directs):.0f}"
              " MB/s (median)")
        for g in gateways:
            mine = runs[(size, g["name"])]
            ratios = [m["mb_per_s"] / d["mb_per_s"] for m, d in zip(mine, directs)]
            cpu = [m["cpu_us_per_msg"] for m in mine]
            print(f"  {g['name']}: {statistics.median(ratios):.2f}x of direct "
                  f"({min(ratios):.2f}-{max(ratios):.2f}); CPU per message and direction "
                  f"{statistics.median(cpu):.2f} us ({min(cpu):.2f}-{max(cpu):.2f})")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
