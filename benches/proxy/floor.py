"""How close to plain nginx a proxy built from the gateway's own parts gets: the gateway, and
crates/gateway/examples/hyper_floor.rs (the same runtime, hyper server and hyper client, and a
cookie looked up in a hash set, nothing else) bare and with the six headers the gateway adds,
each against plain nginx in front of the same upstream. It tells how much of the gap to nginx
is the gateway's own work and how much is its parts'. Run by hand, after benches/proxy/run.sh
has installed nginx and wrk and built the echo example:

    cargo build --release --locked -p gateway --example hyper_floor
    .venv/bin/python benches/proxy/floor.py [GATEWAY_BINARY [OTHER_GATEWAY_BINARY...]]

The gateway is measured twice: as configured by default, and with its signed identity token
turned off (`identity_token.enabled: false`). Further gateway binaries (another build of the
same code: with PGO, or before a change) are measured too, each with its own session, in the
same rotation; FLOOR=0 leaves the two floor proxies out.

Authenticated GETs of the 100-byte body at 32 connections, as bench.py runs them (the proxy
pinned to BENCH_PROXY_CPU, wrk and the upstream to BENCH_LOAD_CPU), the targets in a rotated
order per repetition. Printed per target: the median per-core ratio to nginx of the same
repetition (nginx's CPU time per request over the target's), with its range, and the median
CPU and user time per request.

Settings (environment): REPS (5), FLOOR (1), BENCH_DURATION (bench.py's, 10 s), BENCH_OUT
(target/bench-floor), FLOOR_BIN (bench.py's: target/release/examples/hyper_floor).
"""

import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
os.environ.setdefault("BENCH_OUT", str(ROOT / "target" / "bench-floor"))
if len(sys.argv) > 1:
    os.environ["GATEWAY_BIN"] = str(Path(sys.argv[1]).resolve())
OTHER_GATEWAYS = [Path(a).resolve() for a in sys.argv[2:]]
sys.path.insert(0, str(HERE))
import bench  # noqa: E402

def main():
    reps = int(os.environ.get("REPS", "5"))
    floor = os.environ.get("FLOOR", "1") != "0"
    for binary in (bench.GATEWAY_BIN, bench.WS_ECHO_BIN, *([bench.FLOOR_BIN] if floor else []),
                   *OTHER_GATEWAYS):
        if not binary.exists():
            sys.exit(f"no {binary}; see this file's docstring")
    bench.OUT.mkdir(parents=True, exist_ok=True)
    path = bench.BODIES["100 B"][0]
    services, floors = [], []
    try:
        upstream, echo = bench.upstream_and_echo(services)
        nginx = bench.proxy_nginx(bench.OUT / "nginx-proxy", upstream.port).start()
        services.append(nginx)
        gateway, cookie, _ = bench.start_gateway("gw-memory", upstream.port, echo.port)
        services.append(gateway)
        # Session cookies of one length everywhere (nginx and the floors get the first
        # gateway's), so that every request has the same bytes.
        targets = [
            {"name": "nginx", "port": nginx.port, "cookie": cookie, "pids": nginx.pids},
            {"name": "gateway", "port": gateway.port, "cookie": cookie, "pids": gateway.pids},
        ]
        # The same gateway without its signed identity token (on by default; a header of about
        # 550 bytes on every upstream request), nearer to the floor's six short headers.
        no_token, no_token_cookie, _ = bench.start_gateway(
            "gw-no-token", upstream.port, echo.port, extra_yaml=bench.NO_TOKEN_YAML)
        services.append(no_token)
        if len(no_token_cookie) != len(cookie):
            raise RuntimeError("session cookies of different lengths")
        targets.append({"name": "gateway, token off", "port": no_token.port,
                        "cookie": no_token_cookie, "pids": no_token.pids})
        main_binary = bench.GATEWAY_BIN
        for i, binary in enumerate(OTHER_GATEWAYS, start=2):
            bench.GATEWAY_BIN = binary
            other, other_cookie, _ = bench.start_gateway(f"gw-memory-{i}", upstream.port,
                                                         echo.port)
            services.append(other)
            targets.append({"name": f"gateway {i} ({binary.name})", "port": other.port,
                            "cookie": other_cookie, "pids": other.pids})
        bench.GATEWAY_BIN = main_binary
        for name, headers in (("floor, bare", False), ("floor, 6 headers", True))[:2 * floor]:
            proc, port = bench.start_floor(upstream.port, cookie, headers,
                                           ["taskset", "-c", bench.PROXY_CPU])
            floors.append(proc)
            targets.append({"name": name, "port": port, "cookie": cookie,
                            "pids": lambda pid=proc.pid: [pid]})
        for t in targets:
            bench.probe(t["port"], path, t["cookie"], bench.BODIES["100 B"][1])
            bench.wrk_once(t, path, bench.CONNECTIONS, bench.WRK_THREADS, 2, "warm-up")
        runs = {t["name"]: [] for t in targets}
        for r in range(reps):
            for t in targets[r % len(targets):] + targets[:r % len(targets)]:
                res = bench.run_wrk(t, path, bench.CONNECTIONS, bench.WRK_THREADS,
                                    bench.DURATION, t["name"])
                runs[t["name"]].append(res)
                bench.say(f"rep {r + 1} {t['name']:17} {res['rps']:8.0f} req/s  "
                          f"cpu {res['cpu_us_per_req']:5.2f} µs/req "
                          f"(user {res['user_us_per_req']:5.2f})  others {res['foreign_pct']:.0f} %")
    finally:
        for proc in floors:
            proc.kill()
            proc.wait()
        for service in reversed(services):
            service.stop()
    print(f"\n| Proxy ({reps} repetitions, -c{bench.CONNECTIONS}, 100 B) | per-core ratio to "
          "nginx | CPU µs/req | user µs/req |\n|---|---|---|---|")
    for name, results in runs.items():
        ratios = [runs["nginx"][i]["cpu_us_per_req"] / res["cpu_us_per_req"]
                  for i, res in enumerate(results)]
        cpu = statistics.median(r["cpu_us_per_req"] for r in results)
        user = statistics.median(r["user_us_per_req"] for r in results)
        print(f"| {name} | {statistics.median(ratios):.2f}× ({min(ratios):.2f}–"
              f"{max(ratios):.2f}) | {cpu:.1f} | {user:.2f} |")


if __name__ == "__main__":
    main()
