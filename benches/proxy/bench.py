"""Proxy benchmark: saml-gateway against plain nginx in front of the same nginx upstream.

Run through benches/proxy/run.sh, which installs nginx, wrk and perf, builds the gateway and
then runs this file with the project's .venv python. Everything listens on 127.0.0.1.

Layout (two cores): the proxy under test (nginx reverse proxy, or saml-gateway with the memory
store, with the Redis store, or with the memory store and its signed identity token turned
off: the token is a header of about 550 bytes on every upstream request) is pinned to
BENCH_PROXY_CPU; wrk, the upstream nginx, the WebSocket echo server and client, and
redis-server to BENCH_LOAD_CPU. Per repetition every
target is measured in turn (the order rotates), with the same wrk connections, duration and
request bytes (nginx and the upstream get a cookie of the same length as the session cookie).
The WebSocket echo runs go direct, through nginx (which tunnels /ws to the echo server) and
through the gateway, the order rotated too.

Measured per run: wrk's requests/s, p50 and p99; the proxy's CPU time (utime + stime of every
process of the proxy, from /proc/PID/stat, before and after) per request; each core's busy
time (/proc/stat), and for WebSocket runs the load core's busy time per message; the proxy's
resident memory (VmRSS). Results go to BENCH_OUT
(results.json, results.md, logs); the markdown is also printed at the end.

Settings (environment): BENCH_DURATION (s, default 10), BENCH_REPEATS (3),
BENCH_CONNECTIONS (32), BENCH_WRK_THREADS (2), BENCH_LOW_DURATION (5, the -c1 runs),
BENCH_WS_DURATION (5), BENCH_WS_INFLIGHT (1048576: bytes of messages in flight, at least 8
messages; enough that the run measures throughput, not the round trip of one more hop), BENCH_SESSIONS (100000), BENCH_MAX_FOREIGN and BENCH_RETRIES (below),
BENCH_PERF (1: profile the gateway once with perf), BENCH_PROXY_CPU (0), BENCH_LOAD_CPU (1),
BENCH_WORKER_THREADS (1: `server.worker_threads` when the gateway knows the key; empty: leave
it out), BENCH_OUT (target/bench-proxy), GATEWAY_BIN (target/release/saml-gateway),
GATEWAY_PLAIN_BIN (unset: when set, another build of the gateway, measured with the memory store
in the HTTP runs as a row of its own: run.sh sets it to the plain build when GATEWAY_BIN is the
profile-guided one), WS_ECHO_BIN (target/release/examples/ws_echo).

Other load on the machine (a build, a test run) spoils a run on two cores. The CPU time used
during a run by processes that are not this script's (neither its descendants nor kernel
threads; utime + stime + cutime + cstime from /proc/PID/stat) is recorded per run. Before each
run the script waits (up to BENCH_QUIET_WAIT seconds, default 30) until the machine is quiet; a
run during which other processes used more than BENCH_MAX_FOREIGN percent of one core (default
10) is repeated, up to BENCH_RETRIES times (default 2), and the least disturbed attempt is kept
and marked in the per-run table.
"""

import http.client
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

import testbed  # noqa: E402
import flows  # noqa: E402


def env_int(name, default):
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


DURATION = env_int("BENCH_DURATION", 10)
REPEATS = env_int("BENCH_REPEATS", 3)
CONNECTIONS = env_int("BENCH_CONNECTIONS", 32)
WRK_THREADS = env_int("BENCH_WRK_THREADS", 2)
LOW_DURATION = env_int("BENCH_LOW_DURATION", 5)
WS_DURATION = env_int("BENCH_WS_DURATION", 5)
WS_INFLIGHT = env_int("BENCH_WS_INFLIGHT", 1024 * 1024)
MAX_FOREIGN = env_int("BENCH_MAX_FOREIGN", 10)
RETRIES = env_int("BENCH_RETRIES", 2)
QUIET_WAIT = env_int("BENCH_QUIET_WAIT", 30)
SESSIONS = env_int("BENCH_SESSIONS", 100_000)
PERF = env_int("BENCH_PERF", 1)
PROXY_CPU = str(env_int("BENCH_PROXY_CPU", 0))
LOAD_CPU = str(env_int("BENCH_LOAD_CPU", 1))
WORKER_THREADS = os.environ.get("BENCH_WORKER_THREADS", "1").strip()
OUT = Path(os.environ.get("BENCH_OUT", ROOT / "target" / "bench-proxy")).resolve()
GATEWAY_BIN = Path(os.environ.get("GATEWAY_BIN", ROOT / "target" / "release" / "saml-gateway"))
PLAIN_BIN = Path(os.environ["GATEWAY_PLAIN_BIN"]) if os.environ.get("GATEWAY_PLAIN_BIN") else None
# The config lines that turn the signed identity token off (the "identity token off" row).
NO_TOKEN_YAML = "identity_token:\n  enabled: false\n"
# The WebSocket echo server and load client (crates/gateway/examples/ws_echo.rs), compiled so
# that they, not an interpreter, keep up with the proxy between them.
WS_ECHO_BIN = Path(os.environ.get("WS_ECHO_BIN",
                                  ROOT / "target" / "release" / "examples" / "ws_echo"))
PYTHON = str(ROOT / ".venv" / "bin" / "python")
CLK_TCK = os.sysconf("SC_CLK_TCK")

BODIES = {"100 B": ("/small", 100), "64 KiB": ("/large", 64 * 1024)}
WS_SIZES = (64, 64 * 1024)
USER, PASSWORD = "alice", "alice-pass"
T0 = time.monotonic()


def say(text):
    print(f"[{time.monotonic() - T0:6.1f}s] {text}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------
# /proc readings


def proc_children(pid):
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry.name))
    return kids


def cpu_split(pids):
    """(utime, stime) of the processes (all their threads), in clock ticks."""
    user = system = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        user += int(fields[11])  # field 14 of stat(5)
        system += int(fields[12])  # field 15
    return user, system


def cpu_ticks(pids):
    """utime + stime of the processes (all their threads), in clock ticks."""
    return sum(cpu_split(pids))


def rss_bytes(pids):
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def core_times():
    """{cpu index: (busy ticks, total ticks)} from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        m = re.match(r"cpu(\d+)\s+(.*)", line)
        if m:
            v = [int(x) for x in m.group(2).split()]
            idle = v[3] + v[4]
            out[m.group(1)] = (sum(v[:8]) - idle, sum(v[:8]))
    return out


def threads(pid):
    """[(thread name, allowed CPUs)] of a process."""
    out = []
    for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
        comm = (task / "comm").read_text().strip()
        allowed = next((l.split(":", 1)[1].strip() for l in (task / "status").read_text()
                        .splitlines() if l.startswith("Cpus_allowed_list")), "?")
        out.append((comm, allowed))
    return out


def other_ticks():
    """CPU time (with reaped children's) of the processes that are not this script's: every
    process that neither descends from this one nor is a kernel thread."""
    me = os.getpid()
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                f = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (int(f[1]), int(f[11]) + int(f[12]) + int(f[13]) + int(f[14]))
    total = 0
    for pid, (ppid, ticks) in stats.items():
        if pid == 2 or ppid == 2:
            continue
        p, ours = pid, False
        for _ in range(64):
            if p == me:
                ours = True
                break
            if p not in stats or p <= 1:
                break
            p = stats[p][0]
        if not ours:
            total += ticks
    return total


class Foreign:
    """Measures the CPU time used by other processes of the machine (builds, tests) while a
    run goes on, in % of one core."""

    def __enter__(self):
        self.o, self.t = other_ticks(), time.monotonic()
        return self

    def __exit__(self, *exc):
        wall = time.monotonic() - self.t
        self.pct = max(0.0, 100.0 * (other_ticks() - self.o) / CLK_TCK / max(wall, 1e-3))


def wait_quiet(limit=QUIET_WAIT):
    """Waits until other processes use less than MAX_FOREIGN % of a core over one second."""
    deadline = time.monotonic() + limit
    while True:
        with Foreign() as f:
            time.sleep(1)
        if f.pct < MAX_FOREIGN or time.monotonic() > deadline:
            if f.pct >= MAX_FOREIGN:
                say(f"  machine still busy ({f.pct:.0f} % of a core by other processes)")
            return
        say(f"  other processes use {f.pct:.0f} % of a core; waiting")


def least_disturbed(run, what):
    """Runs `run()` (which returns a dict) until it was undisturbed, at most RETRIES + 1
    times; returns the attempt with the least foreign CPU, with `foreign_pct` set."""
    best = None
    for attempt in range(RETRIES + 1):
        wait_quiet()
        with Foreign() as f:
            res = run()
        res["foreign_pct"] = f.pct
        if best is None or f.pct < best["foreign_pct"]:
            best = res
        if f.pct < MAX_FOREIGN:
            break
        say(f"  {what}: other processes used {f.pct:.0f} % of a core during the run; "
            + ("again" if attempt < RETRIES else "keeping the least disturbed attempt"))
    return best


def pin(pid, cpu):
    subprocess.run(["taskset", "-a", "-p", "-c", cpu, str(pid)], check=True,
                   capture_output=True)


# ----------------------------------------------------------------------------------------
# Services


class Nginx(testbed.Service):
    """Debian's nginx, one worker, in the foreground, under taskset. `master_process` and
    `command_prefix` (what nginx runs under) may be changed before `start()`: instructions.py
    runs one process under callgrind."""

    def __init__(self, work, name, http_block, cpu):
        self.name = name
        super().__init__(work)
        self.http_block = http_block.replace("@PORT@", str(self.port))
        self.cpu = cpu
        self.master_process = True
        self.command_prefix = ["taskset", "-c", cpu]

    def start(self, timeout=30.0):
        tmp = self.work / "tmp"
        tmp.mkdir(exist_ok=True)
        conf = self.work / "nginx.conf"
        temp_paths = "\n".join(f"    {kind}_temp_path {tmp}/{kind};"
                               for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf.write_text(f"""\
worker_processes 1;
daemon off;
master_process {"on" if self.master_process else "off"};
pid {self.work}/nginx.pid;
error_log {self.work}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    default_type text/plain;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 1000000;
{temp_paths}
{self.http_block}
}}
""")
        self._spawn([*self.command_prefix, "nginx", "-p", self.work, "-e",
                     self.work / "error.log", "-c", conf])
        self._wait_until(lambda: testbed.http_get(self.base_url + "/small")[0] == 200,
                         "200 for /small", timeout)
        return self

    def pids(self):
        return [self.proc.pid, *proc_children(self.proc.pid)]


def upstream_nginx(work):
    www = work / "www"
    www.mkdir(parents=True, exist_ok=True)
    for path, size in BODIES.values():
        (www / path.lstrip("/")).write_bytes((b"0123456789abcdef" * (size // 16 + 1))[:size])
    return Nginx(work, "upstream", f"""\
    sendfile on;
    tcp_nopush on;
    open_file_cache max=64 inactive=60s;
    server {{
        listen 127.0.0.1:@PORT@ backlog=4096;
        root {www};
    }}""", LOAD_CPU)


def upstream_and_echo(services):
    """The upstream nginx and the WebSocket echo server, started and added to `services`."""
    upstream = upstream_nginx(OUT / "upstream").start()
    services.append(upstream)
    echo = EchoServer(OUT / "ws-echo").start()
    services.append(echo)
    return upstream, echo


def proxy_nginx(work, upstream_port, echo_port=None, tls=None):
    """nginx as the reference proxy. Buffers large enough for the 64 KiB body (no temp file);
    keep-alive to the upstream. With `echo_port`, `/ws` is tunnelled to the WebSocket echo
    server, through buffers of the gateway's size (32 KiB each way: nginx's tunnel uses
    `proxy_buffer_size` for both directions). With `tls` (port, certificate, key), the same
    server also terminates TLS on that port (TLS 1.2 and 1.3)."""
    tls_lines = (f"""
        listen 127.0.0.1:{tls[0]} ssl backlog=4096;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate {tls[1]};
        ssl_certificate_key {tls[2]};""" if tls else "")
    ws = (f"""
        location /ws {{
            proxy_pass http://127.0.0.1:{echo_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_buffer_size 32k;
            proxy_buffers 4 32k;
            proxy_read_timeout 120s;
        }}""" if echo_port else "")
    return Nginx(work, "proxy", f"""\
    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 120s;
    }}
    server {{
        listen 127.0.0.1:@PORT@ backlog=4096;{tls_lines}
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffer_size 8k;
            proxy_buffers 16 8k;
            proxy_max_temp_file_size 0;
        }}{ws}
    }}""", PROXY_CPU)


FLOOR_BIN = Path(os.environ.get("FLOOR_BIN", ROOT / "target" / "release" / "examples" /
                                "hyper_floor"))


def start_floor(upstream_port, cookie, headers, launcher):
    """crates/gateway/examples/hyper_floor.rs in front of the upstream, accepting `cookie` as
    the session (with `headers`, adding the gateway's six), run under `launcher` (taskset,
    valgrind); returns (process, port) once it listens. floor.py and instructions.py use it."""
    port = testbed.free_port()
    argv = [*launcher, FLOOR_BIN, "--port", str(port), "--upstream-port", str(upstream_port),
            "--cookie", cookie, *(["--headers"] if headers else [])]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    if not proc.stdout.readline().startswith("listening"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{FLOOR_BIN} did not start")
    return proc, port


class EchoServer(testbed.Service):
    name = "ws-echo"

    def start(self):
        self._spawn(["taskset", "-c", LOAD_CPU, WS_ECHO_BIN, "serve", "--port", self.port])
        self._wait_until(lambda: "listening" in testbed.log_tail(self.log_path), "listening")
        return self


class PinnedGateway(testbed.Gateway):
    """The gateway started under `taskset -c CPU`, so every thread it starts inherits the mask
    (tokio sizes its worker pool from std::thread::available_parallelism, which reads it)."""

    def __init__(self, binary, config_text, work, cpu):
        super().__init__(binary, config_text, work, launcher=["taskset", "-c", cpu])

    def pids(self):
        return [self.proc.pid]


def gateway_yaml(work, port, upstream_port, echo_port, redis_url=None, worker_threads=None,
                 extra_yaml=""):
    routes = (f"  - path: /ws\n    upstream: http://127.0.0.1:{echo_port}\n"
              f"  - path: /\n    upstream: http://127.0.0.1:{upstream_port}\n")
    extra = f"server:\n  worker_threads: {worker_threads}\n" if worker_threads else ""
    text = testbed.gateway_config(work, port, None, routes=routes, extra=extra)
    # The default identity headers, as in the runs before the test bed also named the two
    # optional sign-in headers (about 2 % more instructions per request with them).
    text = re.sub(r",\s*auth_time: X-Auth-Time,\s*authn_context: X-Auth-Context", "", text)
    assert "auth_time" not in text
    if redis_url:
        text = text.replace("  store: memory\n", f"  store: redis\n  redis_url: {redis_url}\n")
    return text + extra_yaml


def knows_worker_threads(work):
    """Whether this gateway build accepts `server.worker_threads` (asks check-config with the
    gateway's own config plus that key)."""
    cfg = work / "probe-worker-threads.yaml"
    cfg.write_text(gateway_yaml(work, 18080, 18081, 18082, worker_threads=1))
    r = subprocess.run([GATEWAY_BIN, "check-config", "--config", cfg], capture_output=True,
                       text=True)
    cfg.unlink()
    if r.returncode != 0 and "unknown field `server`" not in r.stderr:
        raise RuntimeError(f"check-config failed: {r.stderr.strip()}")
    return r.returncode == 0


def start_gateway(name, upstream_port, echo_port, redis_url=None, extra_yaml=""):
    """An IdP for this gateway alone, the gateway (its config plus `extra_yaml`), and one login
    as alice; returns (gateway, session cookie value, idle RSS before the login)."""
    global USE_WORKER_THREADS
    work = OUT / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    port = testbed.free_port()
    entity_id, acs, slo = testbed.gateway_urls(port)
    idp = testbed.Idp(work / "idp", entity_id, acs, slo_url=slo).start()
    try:
        idp.save_metadata(work / "idp-metadata.xml")
        if USE_WORKER_THREADS is None:
            USE_WORKER_THREADS = bool(WORKER_THREADS) and knows_worker_threads(work)
            say(f"server.worker_threads: {WORKER_THREADS if USE_WORKER_THREADS else 'not set'}")
        text = gateway_yaml(work, port, upstream_port, echo_port, redis_url,
                            WORKER_THREADS if USE_WORKER_THREADS else None, extra_yaml)
        gw = PinnedGateway(GATEWAY_BIN, text, work, PROXY_CPU).start()
        time.sleep(2)
        idle_rss = rss_bytes(gw.pids())
        client = flows.new_client()
        flows.login(client, gw.base_url, USER, PASSWORD)
        cookie = client.cookies.get("saml-session")
    finally:
        idp.stop()
    return gw, cookie, idle_rss


# ----------------------------------------------------------------------------------------
# Load


def probe(port, path, cookie, want_len):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path, headers={"Cookie": f"saml-session={cookie}"})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    if r.status != 200 or len(body) != want_len:
        raise RuntimeError(f"GET 127.0.0.1:{port}{path}: HTTP {r.status}, {len(body)} bytes "
                           f"(want 200 and {want_len} bytes): {body[:200]!r}")


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def wrk_argv(port, path, cookie, connections, threads, duration, scheme="http",
             cookie_name="saml-session"):
    return ["taskset", "-c", LOAD_CPU, "wrk", "-t", str(threads), "-c", str(connections),
            "-d", f"{duration}s", "--latency", "-H", f"Cookie: {cookie_name}={cookie}",
            f"{scheme}://127.0.0.1:{port}{path}"]


COMMANDS = {}


def shown(argv):
    """A command line as the report shows it: quoted, paths relative to the repository."""
    text = " ".join(a if " " not in a else f"'{a}'" for a in map(str, argv))
    return text.replace(str(OUT) + "/", "$BENCH_OUT/").replace(str(ROOT) + "/", "")


def run_wrk(target, path, connections, threads, duration, label):
    """A wrk run against `target`, repeated when other processes disturbed it."""
    return least_disturbed(
        lambda: wrk_once(target, path, connections, threads, duration, label),
        f"{target['name']} {path} -c{connections}")


def wrk_once(target, path, connections, threads, duration, label):
    """One wrk run against `target` with CPU and memory readings around it."""
    argv = wrk_argv(target["port"], path, target["cookie"], connections, threads, duration,
                    target.get("scheme", "http"), target.get("cookie_name", "saml-session"))
    COMMANDS.setdefault(label, shown(argv)
                        .replace(target["cookie"], "<cookie>")
                        .replace(f":{target['port']}/", ":<port>/"))
    pids = target["pids"]()
    extra = target.get("extra_pids", lambda: [])()
    s0, e0, k0 = cpu_split(pids), cpu_ticks(extra), core_times()
    w0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True)
    wall = time.monotonic() - w0
    s1, e1, k1 = cpu_split(pids), cpu_ticks(extra), core_times()
    c0, c1 = sum(s0), sum(s1)
    out = r.stdout
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed: {r.stderr or out}")
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    requests = int(m.group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    busy = {cpu: 100.0 * (k1[cpu][0] - k0[cpu][0]) / max(1, k1[cpu][1] - k0[cpu][1])
            for cpu in (PROXY_CPU, LOAD_CPU)}
    res = {
        "rps": rps, "requests": requests,
        "p50_ms": to_ms(lat["50"]), "p99_ms": to_ms(lat["99"]),
        "cpu_us_per_req": (c1 - c0) / CLK_TCK * 1e6 / max(1, requests) if pids else None,
        "user_us_per_req": ((s1[0] - s0[0]) / CLK_TCK * 1e6 / max(1, requests)
                            if pids else None),
        "sys_us_per_req": ((s1[1] - s0[1]) / CLK_TCK * 1e6 / max(1, requests)
                           if pids else None),
        "extra_cpu_us_per_req": (e1 - e0) / CLK_TCK * 1e6 / max(1, requests) if extra else None,
        "proxy_core_busy_pct": busy[PROXY_CPU], "load_core_busy_pct": busy[LOAD_CPU],
        "proxy_core_us_per_req": ((k1[PROXY_CPU][0] - k0[PROXY_CPU][0]) / CLK_TCK * 1e6
                                  / max(1, requests)),
        "rss": rss_bytes(pids) if pids else None, "wall_s": wall,
        "non_2xx_3xx": int(bad.group(1)) if bad else 0, "socket_errors": sock.group(1) if sock else "",
    }
    if res["non_2xx_3xx"] or res["socket_errors"]:
        say(f"  warning: {target['name']} {path}: {res['non_2xx_3xx']} bad responses, "
            f"socket errors {res['socket_errors']!r}")
    return res


def ws_window(size):
    return max(8, WS_INFLIGHT // size)


def run_ws(target, size, duration):
    return least_disturbed(lambda: ws_once(target, size, duration),
                           f"ws {target['name']} {size} B")


def ws_client_argv(port, size, duration, cookie=None):
    """The WebSocket echo client's command line: `size`-byte messages to /ws on `port` for
    `duration` seconds, signed in with `cookie` when given."""
    argv = [str(WS_ECHO_BIN), "client", "--url", f"ws://127.0.0.1:{port}/ws",
            "--size", str(size), "--window", str(ws_window(size)), "--duration", str(duration)]
    if cookie:
        argv += ["--header", f"Cookie: saml-session={cookie}",
                 "--header", f"Origin: http://127.0.0.1:{port}"]
    return argv


def ws_once(target, size, duration):
    argv = ["taskset", "-c", LOAD_CPU,
            *ws_client_argv(target["port"], size, duration, target.get("cookie"))]
    label = f"ws {target['name']} {size} B"
    COMMANDS.setdefault(label, shown(argv)
                        .replace(target.get("cookie") or "\0", "<cookie>")
                        .replace(f":{target['port']}", ":<port>"))
    pids = target["pids"]()
    c0, k0 = cpu_ticks(pids), core_times()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
    c1, k1 = cpu_ticks(pids), core_times()
    if r.returncode != 0:
        raise RuntimeError(f"ws client failed: {r.stderr or r.stdout}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    messages = max(1, res["messages"])
    res["cpu_us_per_msg"] = ((c1 - c0) / CLK_TCK * 1e6 / messages / 2
                             if pids else None)  # each message crosses the proxy twice
    for cpu, key in ((PROXY_CPU, "proxy_core"), (LOAD_CPU, "load_core")):
        busy, total = (k1[cpu][0] - k0[cpu][0]), max(1, k1[cpu][1] - k0[cpu][1])
        res[f"{key}_busy_pct"] = 100.0 * busy / total
        # The whole core's busy time (client and echo server, kernel included) per message.
        res[f"{key}_us_per_msg"] = busy / CLK_TCK * 1e6 / messages
    return res


# ----------------------------------------------------------------------------------------
# Report


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rng(values):
    values = [v for v in values if v is not None]
    return (min(values), max(values)) if values else (None, None)


def f0(v):
    return "–" if v is None else f"{v:,.0f}"


def f1(v):
    return "–" if v is None else f"{v:,.1f}"


def f2(v):
    return "–" if v is None else f"{v:.2f}"


def f3(v):
    return "–" if v is None else f"{v:.3f}"


def fmb(v):
    return "–" if v is None else f"{v / 1e6:.1f} MB"


def ratio_cell(values):
    m, (lo, hi) = med(values), rng(values)
    if m is None:
        return "–"
    return f"{m:.2f}× ({lo:.2f}–{hi:.2f})" if len(values) > 1 else f"{m:.2f}×"


def foreign_cell(x):
    """Other processes' CPU during a run, in % of one core; † when above the limit."""
    pct = x.get("foreign_pct", 0.0)
    return f"{pct:.0f} %" + (" †" if pct >= MAX_FOREIGN else "")


def met(ok):
    return "**met**" if ok else "**not met**"


def report(results, meta):
    names = meta["targets"]
    labels = meta["labels"]
    runs = results["http"]
    L = []
    L.append(f"Measured {meta['date']} on {meta['cpu_model']} ({meta['nproc']} cores), "
             f"Linux {meta['kernel']}, {meta['nginx']}, wrk {meta['wrk']}; gateway "
             f"{meta['gateway']}. Proxy pinned to CPU {PROXY_CPU}, wrk (-t{WRK_THREADS}) + "
             f"upstream + Redis + WebSocket echo to CPU {LOAD_CPU}. {REPEATS} repetitions, "
             f"{DURATION} s per run at -c{CONNECTIONS}, {LOW_DURATION} s at -c1, "
             f"{WS_DURATION} s per WebSocket run. Gateway threads under load: "
             f"{meta['gateway_threads']}.")
    L.append("")
    L.append(f"### Authenticated GET, {CONNECTIONS} connections (median of {REPEATS}, "
             "range in brackets)")
    L.append("")
    L.append("| Body | Proxy | req/s | req/s ratio to nginx | proxy CPU µs/req | "
             "per-core ratio to nginx | p50 | p99 | p99 added vs direct | proxy RSS | "
             "load core busy |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for body in BODIES:
        for name in names:
            rs = [runs[(r, body, name)] for r in range(REPEATS)]
            ngx = [runs[(r, body, "nginx")] for r in range(REPEATS)]
            direct = [runs[(r, body, "direct")] for r in range(REPEATS)]
            rps_ratio = [a["rps"] / b["rps"] for a, b in zip(rs, ngx)]
            core_ratio = ([b["cpu_us_per_req"] / a["cpu_us_per_req"] for a, b in zip(rs, ngx)]
                          if rs[0]["cpu_us_per_req"] else [])
            added = [a["p99_ms"] - d["p99_ms"] for a, d in zip(rs, direct)]
            s = {"rps": med([x["rps"] for x in rs]), "rps_ratio": rps_ratio,
                 "core_ratio": core_ratio, "cpu": med([x["cpu_us_per_req"] for x in rs]),
                 "p50": med([x["p50_ms"] for x in rs]), "p99": med([x["p99_ms"] for x in rs]),
                 "added_p99": added, "rss": med([x["rss"] for x in rs]),
                 "load_busy": med([x["load_core_busy_pct"] for x in rs]),
                 "redis_cpu": med([x["extra_cpu_us_per_req"] for x in rs])}
            summary[(body, name)] = s
            cpu_cell = f1(s["cpu"])
            if s["redis_cpu"]:
                cpu_cell += f" (+{s['redis_cpu']:.1f} Redis)"
            L.append(f"| {body} | {labels[name]} | {f0(s['rps'])} | "
                     f"{ratio_cell(rps_ratio) if name != 'nginx' else '1'} | {cpu_cell} | "
                     f"{ratio_cell(core_ratio) if name not in ('nginx', 'direct') else ('1' if name == 'nginx' else '–')} | "
                     f"{f2(s['p50'])} ms | {f2(s['p99'])} ms | "
                     f"{'–' if name == 'direct' else f2(med(added)) + ' ms'} | "
                     f"{fmb(s['rss'])} | {f0(s['load_busy'])} % |")
    L.append("")
    if runs[(0, list(BODIES)[0], "nginx")].get("user_us_per_req") is not None:
        L.append("Where each proxy's CPU time per request goes (median of the repetitions; "
                 "utime and stime from /proc/PID/stat; the kernel's share is mostly the "
                 "loopback TCP path, charged to the proxy's process):")
        L.append("")
        L.append("| Body | Proxy | user µs/req | kernel µs/req | user ratio to nginx |")
        L.append("|---|---|---|---|---|")
        for body in BODIES:
            for name in names:
                if name == "direct":
                    continue
                rs = [runs[(r, body, name)] for r in range(REPEATS)]
                ngx = [runs[(r, body, "nginx")] for r in range(REPEATS)]
                user = med([x["user_us_per_req"] for x in rs])
                kernel = med([x["sys_us_per_req"] for x in rs])
                ratio = [a["user_us_per_req"] / max(1e-9, b["user_us_per_req"])
                         for a, b in zip(rs, ngx)]
                L.append(f"| {body} | {labels[name]} | {f1(user)} | {f1(kernel)} | "
                         f"{'1' if name == 'nginx' else ratio_cell(ratio)} |")
        L.append("")
    L.append("Per run (repetition, body, proxy): req/s, ratio to nginx in the same repetition, "
             "proxy CPU µs/req, whole proxy core busy µs/req (includes softirq and anything "
             "else on that core), p50, p99, busy % of proxy core / load core:")
    L.append("")
    L.append("| Rep | Body | Proxy | req/s | ratio | CPU µs/req | core µs/req | p50 | p99 | "
             "busy proxy/load core | other processes |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in range(REPEATS):
        for body in BODIES:
            for name in meta["order"][r]:
                x, n = runs[(r, body, name)], runs[(r, body, "nginx")]
                L.append(f"| {r + 1} | {body} | {labels[name]} | {f0(x['rps'])} | "
                         f"{x['rps'] / n['rps']:.2f} | {f1(x['cpu_us_per_req'])} | "
                         f"{f1(x['proxy_core_us_per_req'])} | {f2(x['p50_ms'])} ms | "
                         f"{f2(x['p99_ms'])} ms | {x['proxy_core_busy_pct']:.0f} / "
                         f"{x['load_core_busy_pct']:.0f} % | {foreign_cell(x)} |")
    L.append("")
    L.append(f"Other processes: CPU time used during the run by processes that are not the "
             f"benchmark's, in % of one core; † marks a run above {MAX_FOREIGN} % (kept after "
             f"{RETRIES + 1} attempts as the least disturbed).")
    L.append("")
    L.append(f"### Low load: one connection (wrk -t1 -c1, 100 B body, median of {REPEATS})")
    L.append("")
    L.append("| Proxy | req/s | p50 | p99 | added p50 / p99 vs direct | "
             "added p50 / p99 vs nginx | other processes (max) |")
    L.append("|---|---|---|---|---|---|---|")
    low = results["low"]

    def added(rs, base):
        p50 = med([a["p50_ms"] - b["p50_ms"] for a, b in zip(rs, base)]) * 1000
        p99 = med([a["p99_ms"] - b["p99_ms"] for a, b in zip(rs, base)]) * 1000
        return f"{p50:,.0f} / {p99:,.0f} µs"

    for name in names:
        rs = [low[(r, name)] for r in range(REPEATS)]
        d = [low[(r, "direct")] for r in range(REPEATS)]
        n = [low[(r, "nginx")] for r in range(REPEATS)]
        L.append(f"| {labels[name]} | {f0(med([x['rps'] for x in rs]))} | "
                 f"{med([x['p50_ms'] for x in rs]) * 1000:,.0f} µs | "
                 f"{med([x['p99_ms'] for x in rs]) * 1000:,.0f} µs | "
                 f"{'–' if name == 'direct' else added(rs, d)} | "
                 f"{added(rs, n) if name.startswith('gw') else '–'} | "
                 f"{foreign_cell(max(rs, key=lambda x: x['foreign_pct']))} |")
    L.append("")
    L.append("### WebSocket echo (one connection; messages in flight: "
             + ", ".join(f"{ws_window(n):,} of {n:,} B" for n in WS_SIZES)
             + f"; median of {REPEATS})")
    L.append("")
    L.append("| Message | Direct msg/s | Direct MB/s | nginx: ratio to direct (range) | "
             "Gateway msg/s | Gateway MB/s | gateway: ratio to direct (range) | "
             "CPU µs per message and direction: nginx, gateway | load core µs per message: "
             "direct, nginx, gateway | other processes (max) |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    ws = results["ws"]
    ws_ratio = {}

    def load_core(rs):
        # Runs saved before the load core was measured have no reading.
        return f3(med([x.get("load_core_us_per_msg") for x in rs]))

    for size in WS_SIZES:
        d = [ws[(r, size, "direct")] for r in range(REPEATS)]
        n = [ws[(r, size, "nginx")] for r in range(REPEATS) if (r, size, "nginx") in ws]
        g = [ws[(r, size, "gw-memory")] for r in range(REPEATS)]
        ratios = [a["messages_per_s"] / b["messages_per_s"] for a, b in zip(g, d)]
        nginx_ratios = [a["messages_per_s"] / b["messages_per_s"] for a, b in zip(n, d)]
        ws_ratio[size] = ratios
        L.append(f"| {size:,} B | {f0(med([x['messages_per_s'] for x in d]))} | "
                 f"{f1(med([x['mb_per_s'] for x in d]))} | "
                 f"{ratio_cell(nginx_ratios) if n else '–'} | "
                 f"{f0(med([x['messages_per_s'] for x in g]))} | "
                 f"{f1(med([x['mb_per_s'] for x in g]))} | {ratio_cell(ratios)} | "
                 f"{f3(med([x['cpu_us_per_msg'] for x in n])) if n else '–'}, "
                 f"{f3(med([x['cpu_us_per_msg'] for x in g]))} | "
                 f"{load_core(d)}, {load_core(n) if n else '–'}, {load_core(g)} | "
                 f"{foreign_cell(max(d + n + g, key=lambda x: x['foreign_pct']))} |")
    L.append("")
    L.append("The echo server and the client share the load core, which is busy all through "
             "every WebSocket run, so a proxy's throughput is bounded by what it makes that core "
             "spend per message; nginx's ratio is the reference for what any proxy on another "
             "core costs here.")
    L.append("")
    mem = results["memory"]
    L.append("### Resident memory (VmRSS)")
    L.append("")
    L.append("| Process | RSS |")
    L.append("|---|---|")
    L.append(f"| gateway, memory store, idle (2 s after start, no session) | "
             f"{fmb(mem['gw-memory idle'])} |")
    L.append(f"| gateway, memory store, after the login and all runs | "
             f"{fmb(mem['gw-memory end'])} |")
    L.append(f"| gateway, Redis store, idle | {fmb(mem['gw-redis idle'])} |")
    L.append(f"| gateway, Redis store, after the runs | {fmb(mem['gw-redis end'])} |")
    L.append(f"| nginx proxy (master + worker), after the runs | {fmb(mem['nginx end'])} |")
    store = mem.get("store")
    if store:
        L.append(f"| memory store alone with {store['sessions']:,} sessions (user in 50 groups), "
                 f"`memory_rss` example: growth | {fmb(store['growth'])} "
                 f"({store['growth'] / store['sessions']:,.0f} B/session) |")
        L.append(f"| estimate: idle gateway + that growth | "
                 f"{fmb(mem['gw-memory idle'] + store['growth'])} |")
    L.append("")
    L.append("### Targets")
    L.append("")
    L.append("| Target | Measured (median, range) | |")
    L.append("|---|---|---|")

    def tgt(text, values, limit, higher=True, unit="×"):
        m = med(values)
        ok = m is not None and (m >= limit if higher else m <= limit)
        lo, hi = rng(values)
        shown = (f"{m:.2f}{unit} ({lo:.2f}–{hi:.2f})" if len(values) > 1 else f"{m:.2f}{unit}")
        L.append(f"| {text} | {shown} | {met(ok)} |")

    for body in BODIES:
        tgt(f"memory store, {body}: ≥ 1.0× nginx per proxy core (nginx µs/req ÷ gateway "
            f"µs/req)", summary[(body, "gw-memory")]["core_ratio"], 1.0)
    if "gw-no-token" in names:
        for body in BODIES:
            tgt(f"(the same with the identity token off, {body})",
                summary[(body, "gw-no-token")]["core_ratio"], 1.0)
    if "gw-plain" in names:
        for body in BODIES:
            tgt(f"(the same for the plain build, no PGO, {body})",
                summary[(body, "gw-plain")]["core_ratio"], 1.0)
    for body in BODIES:
        tgt(f"Redis store, {body}: ≥ 0.9× nginx per proxy core",
            summary[(body, "gw-redis")]["core_ratio"], 0.9)
    tgt(f"p99 added latency at {CONNECTIONS} connections, memory store, 100 B "
        "(gateway p99 − direct p99): ≤ 1 ms",
        summary[("100 B", "gw-memory")]["added_p99"], 1.0, higher=False, unit=" ms")
    vs_nginx = [runs[(r, "100 B", "gw-memory")]["p99_ms"] - runs[(r, "100 B", "nginx")]["p99_ms"]
                for r in range(REPEATS)]
    tgt("(the same, against nginx's p99 in the same repetition: ≤ 1 ms)", vs_nginx, 1.0,
        higher=False, unit=" ms")
    for size in WS_SIZES:
        tgt(f"WebSocket, {size:,} B messages: ≥ 0.9× direct", ws_ratio[size], 0.9)
    tgt("RSS idle ≤ 30 MB", [mem["gw-memory idle"] / 1e6], 30, higher=False, unit=" MB")
    if store:
        tgt(f"RSS with {store['sessions']:,} sessions ≤ 150 MB (estimate above)",
            [(mem["gw-memory idle"] + store["growth"]) / 1e6], 150, higher=False, unit=" MB")
    L.append("")
    L.append("For reference, the plain req/s ratios (both proxies limited by the same load core "
             "when its busy share nears 100 %):")
    L.append("")
    for body in BODIES:
        for name in ("gw-memory", "gw-redis"):
            L.append(f"- {labels[name]}, {body}: {ratio_cell(summary[(body, name)]['rps_ratio'])}"
                     " of nginx's req/s")
    return "\n".join(L) + "\n"


# ----------------------------------------------------------------------------------------


def version(argv, pattern=r"(.*)"):
    try:
        r = subprocess.run(argv, capture_output=True, text=True)
    except OSError:
        return "?"
    m = re.search(pattern, r.stdout + r.stderr)
    return m.group(1).strip() if m else "?"


PERF_MARK = "\n# ---- by symbol ----\n"


def perf_profile(target, path, seconds):
    """perf record of the gateway under the same wrk load; returns the report excerpt."""
    data = OUT / "perf.data"
    wait_quiet()
    wrk = subprocess.Popen(wrk_argv(target["port"], path, target["cookie"], CONNECTIONS,
                                    WRK_THREADS, seconds + 2),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    argv = ["perf", "record", "-F", "999", "-p", str(target["pids"]()[0]), "-o", str(data),
            "--", "sleep", str(seconds)]
    COMMANDS["perf record"] = shown(argv).replace(str(target["pids"]()[0]), "<gateway pid>")
    subprocess.run(argv, capture_output=True)
    wrk.wait()
    by_dso = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                             "--sort", "dso", "-g", "none", "--percent-limit", "1"],
                            capture_output=True, text=True).stdout
    by_sym = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                             "--sort", "dso,symbol", "-g", "none", "--percent-limit", "0.7"],
                            capture_output=True, text=True).stdout
    COMMANDS["perf report"] = ("perf report -i perf.data --stdio --no-children "
                               "--sort dso,symbol -g none --percent-limit 0.7")
    (OUT / "perf-report.txt").write_text(by_dso + PERF_MARK + by_sym)

    return perf_excerpt(by_dso, by_sym)


def memory_rss(sessions):
    r = subprocess.run(["cargo", "run", "--release", "--locked", "-q", "-p", "session-store",
                        "--example", "memory_rss", "--", str(sessions)],
                       capture_output=True, text=True, cwd=ROOT)
    m = re.search(r"VmRSS before: (\d+) KiB, after: (\d+) KiB", r.stdout)
    if not m:
        say(f"memory_rss failed: {r.stderr[-800:]}")
        return None
    before, after = int(m.group(1)) * 1024, int(m.group(2)) * 1024
    return {"sessions": sessions, "before": before, "after": after, "growth": after - before}


USE_WORKER_THREADS = None  # decided by the first start_gateway()
SETTINGS = ("DURATION", "REPEATS", "CONNECTIONS", "WRK_THREADS", "LOW_DURATION", "WS_DURATION",
            "WS_INFLIGHT", "MAX_FOREIGN", "RETRIES", "PROXY_CPU", "LOAD_CPU")


def render(results, meta, commands, perf_text):
    md = report(results, meta)
    grouped = {}  # the same command line for several targets: one entry
    for label, text in commands.items():
        if label != "warm-up":
            grouped.setdefault(text, []).append(label)
    md += "\n### Commands\n\n```sh\n" + "\n".join(
        f"# {', '.join(labels)}\n{text}" for text, labels in grouped.items()) + "\n```\n"
    if perf_text:
        md += ("\n### perf: the gateway under wrk -c32, memory store, 100 B (5 s, 999 Hz)\n\n"
               "```text\n" + perf_text + "\n```\n")
    elif PERF:
        md += "\nperf is not installed: no profile.\n"
    return md


def perf_excerpt(text_by_dso, text_by_sym):
    def rows(text, n):
        lines = [re.sub(r"(\s+-)*\s*$", "", l) for l in text.splitlines()]
        return [l for l in lines if l.strip() and not l.startswith("#")][:n]

    return "\n".join(rows(text_by_dso, 8) + [""] + rows(text_by_sym, 30))


def rerender(path):
    """`bench.py --report results.json`: the markdown again, from a saved run."""
    saved = json.loads(Path(path).read_text())
    meta = saved["meta"]
    for k, v in meta.get("settings", {}).items():
        globals()[k] = v

    def keys(d, *types):
        return {tuple(t(x) for t, x in zip(types, k.split("|"))): v for k, v in d.items()}

    results = {"http": keys(saved["http"], int, str, str), "low": keys(saved["low"], int, str),
               "ws": keys(saved["ws"], int, int, str), "memory": saved["memory"]}
    perf_text = None
    perf_file = Path(path).parent / "perf-report.txt"
    if perf_file.exists():
        text = perf_file.read_text()
        by_dso, _, by_sym = text.partition(PERF_MARK if PERF_MARK in text else "\n\n#")
        perf_text = perf_excerpt(by_dso, by_sym)
    print(render(results, meta, saved["commands"], perf_text))


def main():
    global GATEWAY_BIN, WS_ECHO_BIN
    if not GATEWAY_BIN.exists():
        sys.exit(f"no gateway binary at {GATEWAY_BIN}; build it first (run.sh does)")
    if not WS_ECHO_BIN.exists():
        sys.exit(f"no WebSocket echo binary at {WS_ECHO_BIN}; build it first (run.sh does)")
    OUT.mkdir(parents=True, exist_ok=True)
    say(f"results in {OUT}")
    # Copies, so that a rebuild of target/ during the run changes nothing.
    shutil.copy2(GATEWAY_BIN, OUT / "saml-gateway")
    GATEWAY_BIN = OUT / "saml-gateway"
    shutil.copy2(WS_ECHO_BIN, OUT / "ws_echo")
    WS_ECHO_BIN = OUT / "ws_echo"
    plain_bin = None
    if PLAIN_BIN:
        plain_bin = OUT / "saml-gateway-plain"
        shutil.copy2(PLAIN_BIN, plain_bin)

    upstream = upstream_nginx(OUT / "upstream").start()
    echo = EchoServer(OUT / "ws-echo").start()
    nginx = proxy_nginx(OUT / "nginx-proxy", upstream.port, echo.port).start()
    redis = testbed.Redis(OUT / "redis").start()
    pin(redis.proc.pid, LOAD_CPU)

    gw_mem, cookie_mem, idle_mem = start_gateway("gw-memory", upstream.port, echo.port)
    gw_red, cookie_red, idle_red = start_gateway("gw-redis", upstream.port, echo.port,
                                                 redis_url=redis.url)
    # The same build without the signed identity token (on by default): the token is a header
    # of about 550 bytes on every request to the upstream, which plain nginx does not send.
    gw_no_token, cookie_no_token, _ = start_gateway("gw-no-token", upstream.port, echo.port,
                                                    extra_yaml=NO_TOKEN_YAML)
    gw_plain = None
    if plain_bin:
        measured, GATEWAY_BIN = GATEWAY_BIN, plain_bin
        gw_plain, cookie_plain, _ = start_gateway("gw-plain", upstream.port, echo.port)
        GATEWAY_BIN = measured
        if len(cookie_plain) != len(cookie_mem):
            raise RuntimeError("session cookies of different lengths")
    if not len(cookie_mem) == len(cookie_red) == len(cookie_no_token):
        raise RuntimeError("session cookies of different lengths")
    fake = (secrets.token_urlsafe(64))[:len(cookie_mem)]
    say(f"logged in; session cookie of {len(cookie_mem)} characters")

    targets = {
        "direct": {"name": "direct", "port": upstream.port, "cookie": fake, "pids": lambda: []},
        "nginx": {"name": "nginx", "port": nginx.port, "cookie": fake, "pids": nginx.pids},
        "gw-memory": {"name": "gw-memory", "port": gw_mem.port, "cookie": cookie_mem,
                      "pids": gw_mem.pids},
        "gw-redis": {"name": "gw-redis", "port": gw_red.port, "cookie": cookie_red,
                     "pids": gw_red.pids, "extra_pids": lambda: [redis.proc.pid]},
        "gw-no-token": {"name": "gw-no-token", "port": gw_no_token.port,
                        "cookie": cookie_no_token, "pids": gw_no_token.pids},
    }
    labels = {"direct": "direct to upstream (no proxy)", "nginx": "nginx",
              "gw-memory": "gateway, memory store", "gw-redis": "gateway, Redis store",
              "gw-no-token": "gateway, memory store, identity token off"}
    if gw_plain:
        targets["gw-plain"] = {"name": "gw-plain", "port": gw_plain.port,
                               "cookie": cookie_plain, "pids": gw_plain.pids}
        labels["gw-plain"] = "gateway, memory store, plain build (no PGO)"
    names = list(targets)
    if len({len(str(t["port"])) for t in targets.values()}) != 1:
        raise RuntimeError("ports of different lengths: the requests would differ in size")
    for t in targets.values():
        for path, size in BODIES.values():
            probe(t["port"], path, t["cookie"], size)
    say("every target answers 200 with the right body; warming up")
    for t in targets.values():
        for path, _ in BODIES.values():
            wrk_once(t, path, CONNECTIONS, WRK_THREADS, 2, "warm-up")
    gw_threads = threads(gw_mem.proc.pid)
    say(f"gateway threads: {gw_threads}")

    results = {"http": {}, "low": {}, "ws": {}, "memory": {}}
    order = []
    for r in range(REPEATS):
        o = names[r % len(names):] + names[:r % len(names)]
        order.append(o)
        for body, (path, _) in BODIES.items():
            for name in o:
                res = run_wrk(targets[name], path, CONNECTIONS, WRK_THREADS, DURATION,
                              f"c{CONNECTIONS} {name} {body}")
                results["http"][(r, body, name)] = res
                say(f"rep {r + 1} {body:6} {name:9} {res['rps']:9.0f} req/s  "
                    f"cpu {res['cpu_us_per_req'] or 0:5.1f} µs/req  p99 {res['p99_ms']:.2f} ms  "
                    f"busy {res['proxy_core_busy_pct']:.0f}/{res['load_core_busy_pct']:.0f} %  "
                    f"others {res['foreign_pct']:.0f} %")
                time.sleep(1)
        for name in o:
            res = run_wrk(targets[name], BODIES["100 B"][0], 1, 1, LOW_DURATION, f"c1 {name}")
            results["low"][(r, name)] = res
            say(f"rep {r + 1} c1     {name:9} {res['rps']:9.0f} req/s  p50 {res['p50_ms']:.3f} "
                f"p99 {res['p99_ms']:.3f} ms  others {res['foreign_pct']:.0f} %")
        ws_names = ["direct", "nginx", "gw-memory"]
        ws_order = ws_names[r % 3:] + ws_names[:r % 3]
        for size in WS_SIZES:
            for name in ws_order:
                t = dict(targets[name])
                if name == "direct":
                    t = {"name": "direct", "port": echo.port, "cookie": None, "pids": lambda: []}
                res = run_ws(t, size, WS_DURATION)
                results["ws"][(r, size, name)] = res
                say(f"rep {r + 1} ws {size:6} B {name:9} {res['messages_per_s']:9.0f} msg/s "
                    f"{res['mb_per_s']:7.1f} MB/s  others {res['foreign_pct']:.0f} %")
                time.sleep(0.5)

    for t in targets.values():  # the sessions are still good after the load
        for path, size in BODIES.values():
            probe(t["port"], path, t["cookie"], size)

    perf_text = None
    if PERF and shutil.which("perf"):
        say("perf record of the gateway (memory store, 100 B)")
        perf_text = perf_profile(targets["gw-memory"], BODIES["100 B"][0], 5)

    results["memory"] = {
        "gw-memory idle": idle_mem, "gw-redis idle": idle_red,
        "gw-memory end": rss_bytes(gw_mem.pids()), "gw-redis end": rss_bytes(gw_red.pids()),
        "nginx end": rss_bytes(nginx.pids()),
    }
    if SESSIONS:
        say(f"memory store with {SESSIONS} sessions (cargo run --example memory_rss)")
        results["memory"]["store"] = memory_rss(SESSIONS)
        COMMANDS["memory_rss"] = ("cargo run --release --locked -p session-store --example "
                                  f"memory_rss -- {SESSIONS}")

    for svc in (gw_plain, gw_no_token, gw_mem, gw_red, nginx, redis, echo, upstream):
        if svc:
            svc.stop()

    git = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "crates",
                            "Cargo.toml", "Cargo.lock"], capture_output=True, text=True).stdout
    cpu_model = next((l.split(":", 1)[1].strip() for l in
                      Path("/proc/cpuinfo").read_text().splitlines()
                      if l.startswith("model name")), "?")
    thread_names = sorted({n for n, _ in gw_threads})
    masks = sorted({m for _, m in gw_threads})
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "cpu_model": cpu_model, "nproc": os.cpu_count(), "kernel": platform.release(),
        "nginx": version(["nginx", "-v"], r"nginx version: (\S+)"),
        "wrk": version(["wrk", "-v"], r"wrk (\S+)"),
        "gateway": (("profile-guided (scripts/build-pgo.sh) " if plain_bin else "")
                    + f"release build of {git}"
                    + (" with uncommitted changes" if dirty else "")),
        "gateway_threads": (f"{len(gw_threads)} ({', '.join(thread_names)}), allowed CPUs "
                            f"{', '.join(masks)}; server.worker_threads "
                            f"{WORKER_THREADS if USE_WORKER_THREADS else 'not set'}"),
        "targets": names, "labels": labels, "order": order,
        "settings": {k: globals()[k] for k in SETTINGS},
    }
    md = render(results, meta, COMMANDS, perf_text)
    (OUT / "results.md").write_text(md)
    (OUT / "results.json").write_text(json.dumps(
        {"meta": meta, "commands": COMMANDS,
         "http": {"|".join(map(str, k)): v for k, v in results["http"].items()},
         "low": {"|".join(map(str, k)): v for k, v in results["low"].items()},
         "ws": {"|".join(map(str, k)): v for k, v in results["ws"].items()},
         "memory": results["memory"]}, indent=1))
    say(f"done; {OUT / 'results.md'}")
    print(md)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--report"]:
        rerender(sys.argv[2])
    else:
        main()
