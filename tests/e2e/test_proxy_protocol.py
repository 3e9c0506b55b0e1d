"""The PROXY protocol on the public listener (`server.proxy_protocol`).

A TCP load balancer (an AWS Network Load Balancer, HAProxy in TCP mode) cannot add
`X-Forwarded-For`; it writes the client's address in a PROXY header before the connection's
first byte. `Balancer` below is such a balancer: it accepts on its own port, which is the
gateway's `public_url`, connects to the gateway, writes a version 1 or version 2 header naming
the client it is told to, and relays the bytes both ways. Browsers' requests, the IdP's answer
and the app's WebSocket all go through it, as they would in production.
"""

import ipaddress
import socket
import struct
import subprocess

import pytest
import requests

import testbed
from flows import audited_client_ip, cookie_header, login, new_client, run_app

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1_header(client, port):
    family = "TCP6" if ":" in client else "TCP4"
    server = "::1" if family == "TCP6" else "127.0.0.1"
    return f"PROXY {family} {client} {server} 40000 {port}\r\n".encode()


def v2_header(client, port, command=0x21):
    ip = ipaddress.ip_address(client)
    server = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
    family = 0x21 if ip.version == 6 else 0x11
    body = ip.packed + server.packed + struct.pack("!HH", 40000, port)
    return V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", len(body)) + body


class Balancer(testbed.TcpRelay):
    """A TCP load balancer on its own port that sends a PROXY header naming `self.client`
    (`self.version` 1 or 2) before relaying each connection to `target_port`."""

    def __init__(self, target_port):
        self.client = "203.0.113.9"
        self.version = 1
        super().__init__(target_port)

    def opening(self, upstream):
        header = v1_header if self.version == 1 else v2_header
        upstream.sendall(header(self.client, self.target_port))


@pytest.fixture(scope="module")
def behind_nlb(bed):
    """An IdP and a gateway whose public URL is the balancer's port."""
    gateway_port = testbed.free_port()
    admin = testbed.free_port()
    balancer = Balancer(gateway_port)
    extra = ("server:\n  proxy_protocol: true\n  trusted_proxies: [127.0.0.1]\n"
             f"  admin_listen: 127.0.0.1:{admin}\n"
             "limits:\n  login_starts_per_minute: 2\n")
    try:
        g = testbed.IdpAndGateway(testbed.fresh_work(bed.work, "proxy-protocol"),
                                  bed.streamlit.port, bed.gateway.binary, extra=extra,
                                  listen_port=gateway_port, public_port=balancer.port)
    except Exception:
        balancer.close()
        raise
    g.balancer = balancer
    g.gateway_port = gateway_port
    g.metrics_url = f"http://127.0.0.1:{admin}/metrics"
    try:
        yield g
    finally:
        g.stop()
        balancer.close()


def start(g, client, version=1):
    g.balancer.client = client
    g.balancer.version = version
    return new_client().get(g.url + "/saml/login?return_to=/", allow_redirects=False)


def test_a_whole_login_through_the_balancer_is_the_clients(behind_nlb):
    g = behind_nlb
    g.balancer.client = "203.0.113.9"
    g.balancer.version = 1
    mark = g.audit_mark()
    client = new_client()
    login(client, g.url, "alice", "alice-pass")
    records = g.audit_since(mark)
    assert [(r["event"], r["client_ip"]) for r in records] == [
        ("login_start", "203.0.113.9"), ("login_success", "203.0.113.9")], records
    # The app gets the client the header named, not the balancer; its own word is ignored.
    page = run_app(g.url, {"Cookie": cookie_header(client), "X-Forwarded-For": "198.51.100.66"})
    assert page.headers["x-forwarded-for"] == ["203.0.113.9"], page.headers


def test_version_2_and_ipv6_and_the_budget_per_client(behind_nlb):
    g = behind_nlb
    mark = g.audit_mark()
    answers = [start(g, "2001:db8::9", version=2).status_code for _ in range(3)]
    assert answers == [303, 303, 429], answers
    # Another client behind the same balancer has a budget of its own.
    assert start(g, "198.51.100.20", version=2).status_code == 303
    records = g.audit_since(mark)
    assert [(r["event"], r["client_ip"]) for r in records] == [
        ("login_start", "2001:db8::9"), ("login_start", "2001:db8::9"),
        ("login_failure", "2001:db8::9"), ("login_start", "198.51.100.20")], records


def raw_exchange(port, prefix, request=b"GET /saml/metadata HTTP/1.1\r\nHost: x\r\n"
                                     b"Connection: close\r\n\r\n"):
    """Sends `prefix` and `request` straight to the gateway; returns all it answered before
    it closed the connection (a close with unread bytes is a reset)."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(prefix + request)
        try:
            while data := s.recv(65536):
                answer += data
        except ConnectionResetError:
            pass
    return answer


def login_start(port, prefix, forwarded_for):
    """A login start sent straight to the gateway after `prefix`, with `X-Forwarded-For`."""
    answer = raw_exchange(port, prefix, (
        "GET /saml/login?return_to=/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"X-Forwarded-For: {forwarded_for}\r\nConnection: close\r\n\r\n").encode())
    assert answer.startswith(b"HTTP/1.1 303 "), answer[:200]


def test_whose_x_forwarded_for_is_believed(behind_nlb):
    g = behind_nlb
    mark = g.audit_mark()
    # A header that names no client: the balancer passed on someone's bytes, whose own
    # X-Forwarded-For is not believed; the client is the balancer.
    login_start(g.gateway_port, b"PROXY UNKNOWN\r\n", "198.51.100.66")
    # A header that names a trusted proxy (an HTTP proxy behind the balancer): its
    # X-Forwarded-For names the client.
    login_start(g.gateway_port, v1_header("127.0.0.1", g.gateway_port), "203.0.113.50")
    # A header that names an untrusted client: that client's X-Forwarded-For is its own word.
    login_start(g.gateway_port, v1_header("203.0.113.51", g.gateway_port), "198.51.100.67")
    assert [r["client_ip"] for r in g.audit_since(mark)] == [
        "127.0.0.1", "203.0.113.50", "203.0.113.51"]


def test_a_header_from_a_peer_not_listed_is_not_believed(bed):
    # The balancer (127.0.0.1) is not among the trusted proxies: what it names is ignored.
    gateway_port = testbed.free_port()
    balancer = Balancer(gateway_port)
    balancer.version = 2
    balancer.client = "203.0.113.77"
    try:
        g = testbed.IdpAndGateway(testbed.fresh_work(bed.work, "proxy-protocol-unlisted"),
                                  bed.streamlit.port, bed.gateway.binary,
                                  extra="server:\n  proxy_protocol: true\n"
                                        "  trusted_proxies: [10.0.0.0/8]\n",
                                  listen_port=gateway_port, public_port=balancer.port)
        try:
            assert audited_client_ip(g, "198.51.100.68") == "127.0.0.1"
        finally:
            g.stop()
    finally:
        balancer.close()


def refused_total(g):
    status, body = testbed.http_get(g.metrics_url)
    assert status == 200
    [value] = [int(line.split()[1]) for line in body.splitlines()
               if line.startswith("saml_gateway_proxy_protocol_refused_total ")]
    return value


def test_a_connection_without_a_good_header_is_closed(behind_nlb):
    g = behind_nlb
    before = refused_total(g)
    direct = f"http://127.0.0.1:{g.gateway_port}/saml/metadata"
    with pytest.raises(requests.ConnectionError):
        requests.get(direct, timeout=15)
    assert raw_exchange(g.gateway_port, b"PROXY TCP4 203.0.113.9 nonsense\r\n") == b""
    assert refused_total(g) == before + 2
    # The balancer's health check: a LOCAL header, no client named.
    local = v2_header("127.0.0.1", g.gateway_port, command=0x20)
    assert raw_exchange(g.gateway_port, local).startswith(b"HTTP/1.1 200 ")
    assert refused_total(g) == before + 2


def test_start_up_refuses_the_protocol_without_trusted_proxies(bed, tmp_path):
    text = testbed.gateway_config(bed.work, testbed.free_port(), bed.streamlit.port,
                                  extra="server:\n  proxy_protocol: true\n")
    (tmp_path / "gateway.yaml").write_text(text)
    run = subprocess.run(
        [bed.gateway.binary, "check-config", "--config", tmp_path / "gateway.yaml"],
        capture_output=True, text=True)
    assert run.returncode != 0
    assert "server.proxy_protocol" in run.stderr and "trusted_proxies" in run.stderr, run.stderr
