"""Connections to the upstream, and shutdown: the real gateway in front of a small HTTP/1.1
upstream written here, which counts the connections it accepts and can answer slowly, close
its connections, cut a response short, or echo the bytes of an upgraded connection.

The gateway keeps its connections to an upstream open and uses them again for later requests,
whichever client connection they come from; a connection the upstream closed is replaced
without the client noticing; a connection whose response was cut short is never used again;
on SIGTERM the gateway stops accepting, lets the request under way finish, and exits 0; an
upgraded connection carries every byte both ways, in order, and passes each side's end on; the
soft limit on open files is raised to the hard limit; a
client connection that goes quiet for `server.client_timeout` (a request head sent a byte at a
time, an idle keep-alive connection, a client that stops reading, HTTP/2 PINGs alone, an HTTP/2
request given up) is closed, while a slow request or a busy connection is not.
The routes are public (no login), so that only the proxy is at work; the IdP metadata is the
test bed's.
"""

import http.client
import http.server
import os
import re
import resource
import shutil
import signal
import socket
import threading
import time

import pytest
import requests

import testbed


BIG = 64 * 1024 * 1024
UPSTREAM_HELLO = b"upstream-first-bytes"


class Upstream:
    """A threaded HTTP/1.1 server on a free loopback port. `/n` answers `ok`; `/slow` after
    1.5 s; `/hang` after 20 s; `/big` with 64 MiB; `/close` with `Connection: close`; `/cut`
    promises 100 bytes and sends 10; `/ws` switches protocols, sends UPSTREAM_HELLO in the
    same write as its `101` head, then echoes every byte it gets until the client finishes.
    A POST is read to the end of its body and answered `got N` (N bytes). An idle keep-alive
    connection is closed after `idle_timeout` seconds."""

    def __init__(self, idle_timeout=None):
        self.connections = 0
        self.lock = threading.Lock()
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = idle_timeout

            def setup(self):
                with upstream.lock:
                    upstream.connections += 1
                super().setup()

            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == "/ws":
                    self.echo_after_upgrade()
                    return
                if self.path == "/slow":
                    time.sleep(1.5)
                if self.path == "/hang":
                    time.sleep(20)
                if self.path == "/big":
                    self.send_response(200)
                    self.send_header("Content-Length", str(BIG))
                    self.end_headers()
                    try:
                        self.wfile.write(b"x" * BIG)
                    except OSError:
                        self.close_connection = True
                    return
                body = b"slow" if self.path == "/slow" else b"ok"
                if self.path == "/cut":
                    self.send_response(200)
                    self.send_header("Content-Length", "100")
                    self.end_headers()
                    self.wfile.write(b"0123456789")
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                if self.path == "/close":
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                try:
                    got = len(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                    body = f"got {got}".encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    # The gateway gave the request up (a body that stopped coming).
                    self.close_connection = True

            def echo_after_upgrade(self):
                self.close_connection = True
                self.connection.sendall(b"HTTP/1.1 101 Switching Protocols\r\n"
                                        b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                                        + UPSTREAM_HELLO)
                # rfile may hold bytes the client sent right behind its request head.
                while chunk := self.rfile.read1(65536):
                    self.connection.sendall(chunk)
                self.connection.shutdown(socket.SHUT_WR)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", testbed.free_port()), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self):
        with self.lock:
            return self.connections

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def start_gateway(bed, name, upstream, extra="", launcher=()):
    work = testbed.fresh_work(bed.work, name)
    shutil.copy(bed.work / "idp-metadata.xml", work / "idp-metadata.xml")
    port = testbed.free_port()
    routes = f"  - path: /\n    upstream: http://127.0.0.1:{upstream.port}\n    public: true\n"
    text = testbed.gateway_config(work, port, None, routes=routes, extra=extra)
    return testbed.Gateway(bed.gateway.binary, text, work, launcher=launcher).start()


@pytest.fixture
def upstream():
    u = Upstream()
    try:
        yield u
    finally:
        u.stop()


@pytest.fixture
def gateway(bed, upstream, request):
    gw = start_gateway(bed, request.node.name, upstream)
    try:
        yield gw
    finally:
        gw.stop()


def test_requests_share_upstream_connections(gateway, upstream):
    with requests.Session() as client:
        for _ in range(20):
            r = client.get(gateway.base_url + "/n", timeout=10)
            assert (r.status_code, r.text) == (200, "ok")
    # Each of these on a new client connection: the upstream connection is pooled, not tied
    # to the client's.
    for _ in range(20):
        r = requests.get(gateway.base_url + "/n", headers={"Connection": "close"}, timeout=10)
        assert (r.status_code, r.text) == (200, "ok")
    assert upstream.count() == 1


def test_connections_the_upstream_closes_are_replaced(bed):
    upstream = Upstream(idle_timeout=0.3)
    gw = start_gateway(bed, "upstream-idle-close", upstream)
    try:
        with requests.Session() as client:
            for path in ("/n", "/close", "/n", "/n"):
                r = client.get(gw.base_url + path, timeout=10)
                assert (r.status_code, r.text) == (200, "ok"), path
            # The upstream closes the idle connection the gateway keeps.
            time.sleep(1.0)
            r = client.get(gw.base_url + "/n", timeout=10)
            assert (r.status_code, r.text) == (200, "ok")
        # One for the first requests, one after /close, one after the idle close.
        assert upstream.count() == 3
    finally:
        gw.stop()
        upstream.stop()


def test_a_connection_whose_response_was_cut_is_not_used_again(gateway, upstream):
    r = requests.get(gateway.base_url + "/n", timeout=10)
    assert r.status_code == 200 and upstream.count() == 1
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(gateway.base_url + "/cut", timeout=10).content
    r = requests.get(gateway.base_url + "/n", timeout=10)
    assert (r.status_code, r.text) == (200, "ok")
    assert upstream.count() == 2


def test_connect_is_refused(gateway, upstream):
    # A tunnel is nothing an app serves; over HTTP/2 it would be a WebSocket without an
    # Upgrade header, past the origin check.
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(f"CONNECT 127.0.0.1:{upstream.port} HTTP/1.1\r\n"
                  f"Host: 127.0.0.1:{upstream.port}\r\n\r\n".encode())
        head = s.recv(4096).decode("latin-1")
    assert head.startswith("HTTP/1.1 405 "), head
    assert upstream.count() == 0


def test_sigterm_lets_the_request_under_way_finish(bed, upstream):
    gw = start_gateway(bed, "upstream-shutdown", upstream)
    answers = []
    request = threading.Thread(
        target=lambda: answers.append(requests.get(gw.base_url + "/slow", timeout=10)))
    try:
        request.start()
        time.sleep(0.5)
        os.kill(gw.proc.pid, signal.SIGTERM)
        time.sleep(0.3)
        # No longer accepting...
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(gw.base_url + "/n", timeout=5)
        # ...but the request under way is answered in full, and then the gateway exits.
        request.join(10)
        assert [(r.status_code, r.text) for r in answers] == [(200, "slow")]
        assert gw.proc.wait(10) == 0
    finally:
        request.join(10)
        gw.stop()


def test_sigterm_closes_an_idle_keep_alive_connection_at_once(bed, upstream):
    """An idle keep-alive connection does not hold the shutdown up for the drain time (30 s):
    it is woken, closed, and the gateway exits."""
    gw = start_gateway(bed, "upstream-shutdown-idle", upstream)
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
            s.sendall(f"GET /n HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\n\r\n".encode())
            answer = read_until(s, b"ok")
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            started = time.monotonic()
            os.kill(gw.proc.pid, signal.SIGTERM)
            took, rest = read_to_close(s, 10)
            assert rest == b""
            assert took < 5, f"the idle connection stayed open {took:.1f} s"
            assert gw.proc.wait(10) == 0
            assert time.monotonic() - started < 5
    finally:
        gw.stop()


def pipes_of(pid):
    """How many pipes process `pid` holds open."""
    fds = f"/proc/{pid}/fd"
    count = 0
    for fd in os.listdir(fds):
        try:
            count += os.readlink(f"{fds}/{fd}").startswith("pipe:")
        except FileNotFoundError:
            pass
    return count


def test_websocket_bytes_pass_through_whole_and_in_order(gateway, upstream):
    """The join of an upgraded connection: bytes each side sent in the same write as its
    upgrade head come first, 16 MiB each way arrive unchanged, the client's end of sending
    reaches the upstream, and the upstream's close reaches the client. Small messages are
    copied; large ones from the upstream go through a pipe (splice), which the gateway makes
    only then and closes with the socket."""
    before = pipes_of(gateway.proc.pid)
    client_hello = b"client-first-bytes"
    data = os.urandom(16 << 20)
    first, rest = data[:4 << 20], data[4 << 20:]
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=20)

    def receive(count, got=b""):
        chunks, have = [got], len(got)
        while have < count:
            chunk = sock.recv(min(1 << 20, count - have))
            assert chunk, f"closed after {have} of {count} bytes"
            chunks.append(chunk)
            have += len(chunk)
        return b"".join(chunks)

    try:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n" + client_hello)
        got = b""
        while b"\r\n\r\n" not in got:
            got += sock.recv(4096)
        head, got = got.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        hello = UPSTREAM_HELLO + client_hello
        assert receive(len(hello), got) == hello
        assert pipes_of(gateway.proc.pid) == before, "a pipe for small messages"

        sender = threading.Thread(target=lambda: sock.sendall(first))
        sender.start()
        assert receive(len(first)) == first
        sender.join(20)
        assert pipes_of(gateway.proc.pid) == before + 2, "no pipe for 4 MiB"

        def send_rest():
            sock.sendall(rest)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send_rest)
        sender.start()
        chunks = []
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
        sender.join(20)
        assert b"".join(chunks) == rest
    finally:
        sock.close()
    deadline = time.monotonic() + 5
    while pipes_of(gateway.proc.pid) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pipes_of(gateway.proc.pid) == before


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
def test_the_soft_open_file_limit_is_raised_to_the_hard_limit(bed, upstream):
    """Each open WebSocket holds four descriptors; a gateway started with the common soft limit
    would run out long before its hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    # Only the soft limit is lowered; the gateway inherits this process's hard limit.
    gw = start_gateway(bed, "open-file-limit", upstream, launcher=["prlimit", "--nofile=256:"])
    try:
        limits = open(f"/proc/{gw.proc.pid}/limits").read()
        assert re.search(rf"^Max open files\s+{hard}\s+{hard}\s", limits, re.M), limits
        assert f"raised the open-file limit from=256 to={hard}" in gw.log_path.read_text()
    finally:
        gw.stop()


def closed_after(sock, limit):
    """Seconds until the gateway closes `sock` (reads nothing more), at most `limit`."""
    return read_to_close(sock, limit)[0]


def read_to_close(sock, limit):
    """(seconds until the gateway closes `sock`, at most `limit`; the bytes read until then)."""
    started = time.monotonic()
    sock.settimeout(limit)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    return time.monotonic() - started, received


def read_until(sock, ending):
    """What `sock` sends up to and with `ending` (the end of an answer); fails if it closes."""
    answer = b""
    while not answer.endswith(ending):
        chunk = sock.recv(4096)
        assert chunk, answer
        answer += chunk
    return answer


@pytest.fixture
def quick_timeout(bed, upstream, request):
    gw = start_gateway(bed, request.node.name, upstream, extra="server:\n  client_timeout: 1s\n")
    try:
        yield gw
    finally:
        gw.stop()


def test_a_request_head_sent_a_byte_at_a_time_is_cut_off(quick_timeout, upstream):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", quick_timeout.port), timeout=10) as s:
        s.sendall(b"GET /n HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        closed = False
        while time.monotonic() - started < 8:
            try:
                s.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            s.settimeout(0.25)
            try:
                if s.recv(4096) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed = True
                break
    took = time.monotonic() - started
    assert closed, "the slow request head was still being read after 8 s"
    # Not before the timeout of 1 s; within it and a check or two after.
    assert 0.9 <= took <= 4, took
    assert upstream.count() == 0


def test_a_request_body_that_stops_coming_is_cut_off(quick_timeout, upstream):
    with socket.create_connection(("127.0.0.1", quick_timeout.port), timeout=10) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n"
                  + b"x" * 10)
        took, answer = read_to_close(s, 8)
    # Closed, not answered: not before the timeout of 1 s; within it and a check or two after.
    assert answer == b"", answer
    assert 0.9 <= took <= 4, took


def test_a_slow_upload_that_keeps_coming_is_not_cut(quick_timeout):
    with socket.create_connection(("127.0.0.1", quick_timeout.port), timeout=10) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 8\r\n\r\n")
        # A byte every 0.25 s for 2 s: twice the timeout, never 1 s without a piece.
        for _ in range(8):
            time.sleep(0.25)
            s.sendall(b"x")
        answer = read_until(s, b"got 8")
    assert answer.startswith(b"HTTP/1.1 200 "), answer


def test_an_idle_keep_alive_connection_is_closed(quick_timeout):
    with socket.create_connection(("127.0.0.1", quick_timeout.port), timeout=10) as s:
        s.sendall(b"GET /n HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = read_until(s, b"\r\n\r\nok")
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        took = closed_after(s, 8)
    assert 0.9 <= took <= 4, took


def test_a_connection_that_never_sends_is_closed(quick_timeout):
    with socket.create_connection(("127.0.0.1", quick_timeout.port), timeout=10) as s:
        took = closed_after(s, 8)
    assert 0.9 <= took <= 4, took


def test_slow_answers_and_busy_connections_are_not_cut(quick_timeout):
    conn = http.client.HTTPConnection("127.0.0.1", quick_timeout.port, timeout=10)
    try:
        # The upstream takes 1.5 s, longer than the timeout: the request is under way.
        conn.request("GET", "/slow")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"slow")
        sock = conn.sock
        # A request every 0.5 s for 4 s, each on the same client connection: none is ever
        # more than 1 s away from the last.
        for _ in range(8):
            time.sleep(0.5)
            conn.request("GET", "/n")
            r = conn.getresponse()
            assert (r.status, r.read()) == (200, b"ok")
            assert conn.sock is sock, "the client connection was replaced"
    finally:
        conn.close()


def test_a_client_that_stops_reading_is_cut_off(quick_timeout):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    try:
        s.connect(("127.0.0.1", quick_timeout.port))
        s.sendall(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = len(s.recv(4096))
        # Stop reading: the response cannot go out, for longer than the timeout.
        time.sleep(3)
        s.settimeout(5)
        try:
            while chunk := s.recv(1 << 20):
                received += len(chunk)
        except (ConnectionResetError, socket.timeout):
            pass
    finally:
        s.close()
    assert 0 < received < BIG / 2, received


# HTTP/2 with prior knowledge, frame by frame (RFC 9113): a client that never completes a
# request but keeps the server writing (PING answers), and one that gives up its request.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") \
        + payload


def recv_exactly(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        assert chunk, data
        data += chunk
    return data


def h2_open(port):
    """A connection that has said its preface and settings and acknowledged the server's."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(PREFACE + h2_frame(4, 0, 0))
    head = recv_exactly(s, 9)
    assert head[3] == 4, head  # the server's SETTINGS
    recv_exactly(s, int.from_bytes(head[:3], "big"))
    s.sendall(h2_frame(4, 1, 0))  # SETTINGS ACK
    return s


def h2_get(path, port):
    """A HEADERS block for GET `path` (HPACK literals, no Huffman), ending the stream."""
    authority = f"127.0.0.1:{port}".encode()
    block = (b"\x82\x86" + b"\x04" + bytes([len(path)]) + path.encode()
             + b"\x01" + bytes([len(authority)]) + authority)
    return h2_frame(1, 0x5, 1, block)


def closed_while(s, send, limit):
    """Seconds until the gateway closes `s`, calling `send` every 0.25 s meanwhile; None when
    still open after `limit` seconds."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        try:
            send()
            # Whatever the server says for 0.25 s (PING answers), until it closes.
            pause = time.monotonic() + 0.25
            while (left := pause - time.monotonic()) > 0:
                s.settimeout(left)
                if s.recv(65536) == b"":
                    return time.monotonic() - started
        except socket.timeout:
            pass
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
    return None


def test_http2_pings_do_not_keep_a_connection_open(quick_timeout):
    with h2_open(quick_timeout.port) as s:
        took = closed_while(s, lambda: s.sendall(h2_frame(6, 0, 0, bytes(8))), 8)
    assert took is not None, "PINGs kept the connection open"
    assert took <= 4, took


def test_an_http2_request_given_up_does_not_keep_a_connection_open(quick_timeout, upstream):
    with h2_open(quick_timeout.port) as s:
        # The upstream would answer in 20 s; the client resets the stream at once.
        s.sendall(h2_get("/hang", quick_timeout.port))
        time.sleep(0.3)
        s.sendall(h2_frame(3, 0, 1, (8).to_bytes(4, "big")))  # RST_STREAM, CANCEL
        took = closed_while(s, lambda: None, 8)
    assert took is not None, "the reset request kept the connection open"
    assert took <= 4, took
    assert upstream.count() == 1
