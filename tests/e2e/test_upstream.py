"""Connections to the upstream, and shutdown: the real gateway in front of a small HTTP/1.1
upstream written here, which counts the connections it accepts and can answer slowly, close
its connections, or cut a response short.

The gateway keeps its connections to an upstream open and uses them again for later requests,
whichever client connection they come from; a connection the upstream closed is replaced
without the client noticing; a connection whose response was cut short is never used again;
on SIGTERM the gateway stops accepting, lets the request under way finish, and exits 0; and a
client connection that goes quiet for `server.client_timeout` (a request head sent a byte at a
time, an idle keep-alive connection) is closed, while a slow request or a busy connection is not.
The routes are public (no login), so that only the proxy is at work; the IdP metadata is the
test bed's.
"""

import http.server
import os
import shutil
import signal
import socket
import threading
import time

import pytest
import requests

import testbed


class Upstream:
    """A threaded HTTP/1.1 server on a free loopback port. `/n` answers `ok`; `/slow` after
    1.5 s; `/close` with `Connection: close`; `/cut` promises 100 bytes and sends 10.
    An idle keep-alive connection is closed after `idle_timeout` seconds."""

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
                if self.path == "/slow":
                    time.sleep(1.5)
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


def start_gateway(bed, name, upstream, extra=""):
    work = testbed.fresh_work(bed.work, name)
    shutil.copy(bed.work / "idp-metadata.xml", work / "idp-metadata.xml")
    port = testbed.free_port()
    routes = f"  - path: /\n    upstream: http://127.0.0.1:{upstream.port}\n    public: true\n"
    text = testbed.gateway_config(work, port, None, routes=routes, extra=extra)
    return testbed.Gateway(bed.gateway.binary, text, work).start()


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


def closed_after(sock, limit):
    """Seconds until the gateway closes `sock` (reads nothing more), at most `limit`."""
    started = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(4096):
            pass
    except (ConnectionResetError, socket.timeout):
        pass
    return time.monotonic() - started


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


def test_an_idle_keep_alive_connection_is_closed(quick_timeout):
    with socket.create_connection(("127.0.0.1", quick_timeout.port), timeout=10) as s:
        s.sendall(b"GET /n HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = s.recv(4096)
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"ok"), head
        took = closed_after(s, 8)
    assert 0.9 <= took <= 4, took


def test_a_connection_that_never_sends_is_closed(quick_timeout):
    with socket.create_connection(("127.0.0.1", quick_timeout.port), timeout=10) as s:
        took = closed_after(s, 8)
    assert 0.9 <= took <= 4, took


def test_slow_answers_and_busy_connections_are_not_cut(quick_timeout):
    with requests.Session() as client:
        # The upstream takes 1.5 s, longer than the timeout: the request is under way.
        r = client.get(quick_timeout.base_url + "/slow", timeout=10)
        assert (r.status_code, r.text) == (200, "slow")
        # A request every 0.4 s for 3 s, all on one client connection.
        for _ in range(8):
            time.sleep(0.4)
            r = client.get(quick_timeout.base_url + "/n", timeout=10)
            assert (r.status_code, r.text) == (200, "ok")

