"""Instructions per proxied request: the gateway under valgrind's callgrind, for a fixed number
of authenticated GETs of the 100-byte body (memory store), one connection.

Run by hand, never part of the test suite, after benches/proxy/run.sh has installed nginx (it
uses bench.py's upstream and gateway set-up):

    .venv/bin/python benches/proxy/instructions.py target/release/saml-gateway [REQUESTS]

Callgrind counts instructions, not time, so the figure repeats for the same binary and
requests whatever else the machine does: use it to compare two builds of the hot path. The
counters are zeroed after a warm-up of 200 requests and dumped after REQUESTS more (default
2000); the profile goes to BENCH_OUT/callgrind (default target/bench-instructions). Kernel
time (the socket system calls) is not counted.
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


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = Path(sys.argv[1]).resolve()
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    shutil.rmtree(PROFILES, ignore_errors=True)
    PROFILES.mkdir(parents=True)
    # The gateway started by bench.py, under callgrind: a wrapper in its place.
    wrapper = PROFILES / "saml-gateway"
    wrapper.write_text("#!/bin/sh\nexec valgrind --tool=callgrind "
                       f"--callgrind-out-file={PROFILES}/callgrind.%p.out {binary} \"$@\"\n")
    wrapper.chmod(0o755)
    os.environ["GATEWAY_BIN"] = str(wrapper)
    os.environ["BENCH_WORKER_THREADS"] = "1"
    sys.path.insert(0, str(HERE))
    import bench  # noqa: E402  (reads the environment set above)

    bench.OUT.mkdir(parents=True, exist_ok=True)
    upstream = bench.upstream_nginx(bench.OUT / "upstream").start()
    echo = bench.EchoServer(bench.OUT / "ws-echo").start()
    gateway, cookie, _ = bench.start_gateway("gw-memory", upstream.port, echo.port)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60)

        def get():
            conn.request("GET", "/small", headers={"Cookie": f"saml-session={cookie}"})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status} from the gateway")

        for _ in range(200):
            get()
        pid = str(gateway.proc.pid)
        subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
        for _ in range(requests):
            get()
        subprocess.run(["callgrind_control", "--dump=load", pid], check=True,
                       capture_output=True)
    finally:
        for service in (gateway, echo, upstream):
            service.stop()
    [dump] = glob.glob(str(PROFILES / f"callgrind.{pid}.out.1"))
    report = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", dump],
                            capture_output=True, text=True, check=True).stdout
    total = next(int(line.split()[0].replace(",", "")) for line in report.splitlines()
                 if "PROGRAM TOTALS" in line)
    (OUT / "callgrind-report.txt").write_text(report)
    print(f"{total / requests:,.0f} instructions per request ({requests} requests); "
          f"profile: {dump}; report: {OUT / 'callgrind-report.txt'}")


if __name__ == "__main__":
    main()
