"""Authenticated GETs over TLS: the gateway serving TLS itself (`server.tls`) against nginx
terminating TLS and proxying, in front of the same upstream, with the same certificate. Run by
hand, after benches/proxy/run.sh has installed nginx and wrk and built the gateway and the
WebSocket echo example:

    .venv/bin/python benches/proxy/tls.py [GATEWAY_BINARY [OTHER_GATEWAY_BINARY...]]

Further gateway binaries (another build: before a change) are measured too, each with its own
session, in the same rotation.

The certificate is a P-256 (ECDSA) one made by `openssl req` for 127.0.0.1. Both servers allow
TLS 1.2 and 1.3; wrk (Debian's, on OpenSSL) negotiates TLS 1.3 with both. Connections are kept
alive for the whole run (1,000,000 requests each), so what is measured is the proxying and the
record layer's encryption, not handshakes. As bench.py does: the proxy pinned to
BENCH_PROXY_CPU, wrk (-c32 -t2) and the upstream to BENCH_LOAD_CPU, the two targets in a
rotated order per repetition, and per target the median per-core ratio to nginx of the same
repetition (nginx's CPU time per request over the gateway's), with its range, for the 100-byte
and the 64 KiB body.

Settings (environment): REPS (5), BENCH_DURATION (bench.py's, 10 s), BENCH_OUT
(target/bench-tls).
"""

import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
os.environ.setdefault("BENCH_OUT", str(ROOT / "target" / "bench-tls"))
if len(sys.argv) > 1:
    os.environ["GATEWAY_BIN"] = str(Path(sys.argv[1]).resolve())
OTHER_GATEWAYS = [Path(a).resolve() for a in sys.argv[2:]]
sys.path.insert(0, str(HERE))
import bench  # noqa: E402
import flows  # noqa: E402
import testbed  # noqa: E402

COOKIE_NAME = "__Host-saml-session"


class TlsGateway(bench.PinnedGateway):
    """The pinned gateway, ready once its metadata answers over TLS."""

    cert = None

    def start(self):
        self.config_path.write_text(self.config_text)
        self._spawn([*self.launcher, self.binary, "serve", "--config", self.config_path],
                    env={"RUST_LOG": "warn", "NO_COLOR": "1"})
        url = f"https://127.0.0.1:{self.port}/saml/metadata"

        def ready():
            try:
                return testbed.tls_client(self.cert).get(url, timeout=2).status_code == 200
            except OSError:
                return False
        self._wait_until(ready, "200 from /saml/metadata over TLS")
        return self


def start_gateway(work, upstream_port, echo_port, cert, key):
    """The gateway serving TLS, logged in once as alice; returns (gateway, cookie)."""
    work.mkdir(parents=True, exist_ok=True)
    port = testbed.free_port()
    public = f"https://127.0.0.1:{port}"
    idp = testbed.Idp(work / "idp", f"{public}/saml/metadata", f"{public}/saml/acs",
                      slo_url=f"{public}/saml/slo").start()
    try:
        idp.save_metadata(work / "idp-metadata.xml")
        text = bench.gateway_yaml(work, port, upstream_port, echo_port, worker_threads=1,
                                  extra_yaml=f"  tls:\n    cert_file: {cert}\n"
                                             f"    key_file: {key}\n")
        text = text.replace(f"http://127.0.0.1:{port}", public)
        gw = TlsGateway(bench.GATEWAY_BIN, text, work, bench.PROXY_CPU)
        gw.cert = cert
        gw.start()
        browser = testbed.tls_client(cert)
        flows.login(browser, public, bench.USER, bench.PASSWORD)
        cookie = browser.cookies.get(COOKIE_NAME)
    finally:
        idp.stop()
    return gw, cookie


def probe(target, path, cert, want_len):
    url = f"https://127.0.0.1:{target['port']}{path}"
    r = testbed.tls_client(cert).get(url, headers={"Cookie": f"{COOKIE_NAME}={target['cookie']}"},
                         allow_redirects=False)
    if r.status_code != 200 or len(r.content) != want_len:
        raise RuntimeError(f"GET {url}: HTTP {r.status_code}, {len(r.content)} bytes")


def main():
    reps = int(os.environ.get("REPS", "5"))
    for binary in (bench.GATEWAY_BIN, bench.WS_ECHO_BIN):
        if not binary.exists():
            sys.exit(f"no {binary}; see this file's docstring")
    bench.OUT.mkdir(parents=True, exist_ok=True)
    cert, key = testbed.make_certificate(bench.OUT, "tls")
    services = []
    try:
        upstream, echo = bench.upstream_and_echo(services)
        tls_port = testbed.free_port()
        nginx = bench.proxy_nginx(bench.OUT / "nginx-proxy", upstream.port,
                                  tls=(tls_port, cert, key)).start()
        services.append(nginx)
        gateway, cookie = start_gateway(bench.OUT / "gw-tls", upstream.port, echo.port,
                                        cert, key)
        services.append(gateway)
        # The gateway's server.worker_threads is 1 (the config line above): its whole
        # process is one thread, as in bench.py.
        common = {"cookie": cookie, "scheme": "https", "cookie_name": COOKIE_NAME}
        targets = [
            {"name": "nginx (TLS)", "port": tls_port, "pids": nginx.pids, **common},
            {"name": "gateway (TLS)", "port": gateway.port, "pids": gateway.pids, **common},
        ]
        main_binary = bench.GATEWAY_BIN
        for i, binary in enumerate(OTHER_GATEWAYS, start=2):
            bench.GATEWAY_BIN = binary
            other, other_cookie = start_gateway(bench.OUT / f"gw-tls-{i}", upstream.port,
                                                echo.port, cert, key)
            services.append(other)
            targets.append({"name": f"gateway {i}", "port": other.port, "pids": other.pids,
                            **common, "cookie": other_cookie})
            bench.say(f"gateway {i}: {binary}")
        bench.GATEWAY_BIN = main_binary
        runs = {}
        for body, (path, size) in bench.BODIES.items():
            for t in targets:
                probe(t, path, cert, size)
                bench.wrk_once(t, path, bench.CONNECTIONS, bench.WRK_THREADS, 2, "warm-up")
            for r in range(reps):
                for t in targets[r % len(targets):] + targets[:r % len(targets)]:
                    res = bench.run_wrk(t, path, bench.CONNECTIONS, bench.WRK_THREADS,
                                        bench.DURATION, f"{t['name']} {body}")
                    runs.setdefault((body, t["name"]), []).append(res)
                    bench.say(f"rep {r + 1} {body:6} {t['name']:14} {res['rps']:8.0f} req/s  "
                              f"cpu {res['cpu_us_per_req']:6.2f} µs/req "
                              f"(user {res['user_us_per_req']:5.2f})  p99 {res['p99_ms']:.2f} ms"
                              f"  others {res['foreign_pct']:.0f} %")
    finally:
        for service in reversed(services):
            service.stop()
    print(f"\n| Body | Proxy ({reps} repetitions, -c{bench.CONNECTIONS}) | req/s | per-core "
          "ratio to nginx | CPU µs/req | user µs/req | p99 ms |\n|---|---|---|---|---|---|---|")
    for (body, name), results in runs.items():
        base = runs[(body, "nginx (TLS)")]
        ratios = [base[i]["cpu_us_per_req"] / res["cpu_us_per_req"]
                  for i, res in enumerate(results)]
        med = statistics.median
        print(f"| {body} | {name} | {med(r['rps'] for r in results):.0f} | "
              f"{med(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) | "
              f"{med(r['cpu_us_per_req'] for r in results):.1f} | "
              f"{med(r['user_us_per_req'] for r in results):.2f} | "
              f"{med(r['p99_ms'] for r in results):.2f} |")


if __name__ == "__main__":
    T0 = time.monotonic()
    main()
    print(f"\n{time.monotonic() - T0:.0f} s in all")
