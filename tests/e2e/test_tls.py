"""TLS on the gateway's own listener (`server.tls`): no reverse proxy in front.

The certificate is made by Debian's `openssl req` for 127.0.0.1, and every client here
trusts exactly that certificate: `requests` (the login through the SimpleSAMLphp IdP, whose
form posts to the https ACS), websocket-client (the app's WebSocket over `wss://`), Python's
`ssl` module and curl (HTTP/2 by ALPN).
"""

import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

import testbed
from flows import cookie_header, login, new_client, run_app


def served_certificate(port):
    """The DER certificate the gateway presents now, on a new connection."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            return tls.getpeercert(binary_form=True)


def pem_to_der(path):
    return ssl.PEM_cert_to_DER_cert(path.read_text())


class TlsGateway(testbed.Gateway):
    """The gateway served over https; ready once its metadata answers over TLS."""

    ca_file = None

    @property
    def base_url(self):
        return f"https://127.0.0.1:{self.port}"

    def start(self):
        self.config_path.write_text(self.config_text)
        self._spawn([self.binary, "serve", "--config", self.config_path],
                    env={"RUST_LOG": "info", "NO_COLOR": "1"})

        def ready():
            client = testbed.tls_client(self.ca_file)
            try:
                return client.get(self.metadata_url, timeout=2).status_code == 200
            except OSError:
                return False
        self._wait_until(ready, "200 from /saml/metadata over https", self.start_timeout)
        return self


def start_tls_gateway(bed, name):
    """An IdP and a gateway serving TLS with a certificate of its own (`g.cert`, `g.key`),
    and plain-http requests redirected on `g.redirect_port`."""
    work = testbed.fresh_work(bed.work, name)
    cert, key = testbed.make_certificate(work, "tls")
    redirect_port = testbed.free_port()

    def trust(gateway):
        gateway.ca_file = cert
    g = testbed.IdpAndGateway(work, bed.streamlit.port, bed.gateway.binary,
                              extra=f"server:\n  tls:\n    cert_file: {cert}\n"
                                    f"    key_file: {key}\n"
                                    f"  redirect_http_listen: 127.0.0.1:{redirect_port}\n",
                              scheme="https", gateway_class=TlsGateway, prepare=trust)
    g.cert, g.key = cert, key
    g.redirect_port = redirect_port
    return g


@pytest.fixture(scope="module")
def tls_gateway(bed):
    g = start_tls_gateway(bed, "tls")
    try:
        yield g
    finally:
        g.stop()


def test_a_whole_login_and_the_apps_websocket_over_tls(tls_gateway):
    g = tls_gateway
    mark = g.audit_mark()
    client = testbed.tls_client(g.cert)
    login(client, g.url, "alice", "alice-pass")
    # https: the session cookie is the Secure, host-only kind.
    assert [c.name for c in client.cookies if c.secure] == ["__Host-saml-session"]
    assert [r["event"] for r in g.audit_since(mark)] == ["login_start", "login_success"]
    page = run_app(g.url, {"Cookie": cookie_header(client)}, ca_file=str(g.cert))
    assert page.headers["x-auth-user"] == ["alice"], page.headers
    # No proxy in front: no start-up warning about a TLS terminator nobody listed.
    assert "server.trusted_proxies is empty" not in g.gateway.log_path.read_text()


def test_the_gateways_answers_carry_hsts_under_https_only(tls_gateway, bed):
    r = testbed.tls_client(tls_gateway.cert).get(tls_gateway.url + "/saml/login?return_to=/",
                                                 allow_redirects=False)
    assert r.status_code == 303
    assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
    # The test bed's gateway has a plain-http public URL: no HSTS.
    r = new_client().get(bed.url + "/saml/metadata")
    assert r.status_code == 200 and "Strict-Transport-Security" not in r.headers


def test_plain_http_is_redirected_to_the_public_url(tls_gateway):
    g = tls_gateway
    plain = f"http://127.0.0.1:{g.redirect_port}"
    for target, location in [("/sales/x?a=1", "/sales/x?a=1"), ("/", "/"),
                             ("//evil.example/x", "/evil.example/x")]:
        r = new_client().get(plain + target, allow_redirects=False,
                             headers={"Host": "evil.example"})
        assert r.status_code == 308, r.text
        assert r.headers["Location"] == g.url + location, r.headers
        assert r.content == b""
    # Request targets that requests would not send: absolute form, bytes outside ASCII.
    for target, location in [(b"http://evil.example/x?y", "/x?y"),
                             (b"/caf\xc3\xa9", "/caf%C3%A9")]:
        with socket.create_connection(("127.0.0.1", g.redirect_port), timeout=15) as s:
            s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: evil.example\r\n\r\n")
            answer = s.recv(65536).decode("latin-1")
        assert answer.startswith("HTTP/1.1 308 "), answer
        assert f"\r\nlocation: {g.url}{location}\r\n" in answer, answer


def test_the_redirect_listener_closes_a_connection_that_sends_nothing(tls_gateway):
    # Its request head must come within 10 s; the socket's own timeout (20 s) fails the test.
    with socket.create_connection(("127.0.0.1", tls_gateway.redirect_port), timeout=20) as s:
        assert s.recv(65536) == b""


def test_http2_is_offered_by_alpn(tls_gateway):
    g = tls_gateway
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    out = subprocess.run(
        ["curl", "-sS", "--http2", "--cacert", g.cert, "-o", "/dev/null",
         "-w", "%{http_version} %{http_code}", g.url + "/saml/metadata"],
        capture_output=True, text=True, timeout=30)
    assert out.stdout == "2 200", (out.stdout, out.stderr)


def test_plain_http_on_the_tls_port_gets_no_http_answer(tls_gateway):
    g = tls_gateway
    with socket.create_connection(("127.0.0.1", g.gateway.port), timeout=15) as s:
        s.sendall(b"GET /saml/metadata HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        try:
            while data := s.recv(65536):
                answer += data
        except ConnectionResetError:
            pass
    assert b"HTTP/1.1" not in answer and b"EntityDescriptor" not in answer, answer
    client = testbed.tls_client(g.cert)
    assert client.get(g.url + "/saml/metadata").status_code == 200


def test_sighup_puts_a_renewed_certificate_in_force_and_refuses_a_bad_one(tls_gateway):
    g = tls_gateway
    port = g.gateway.port
    assert served_certificate(port) == pem_to_der(g.cert)
    new_cert, new_key = testbed.make_certificate(g.work, "renewed")
    shutil.copy(new_key, g.key)
    shutil.copy(new_cert, g.cert)
    g.gateway.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while served_certificate(port) != pem_to_der(new_cert):
        assert time.monotonic() < deadline, "the renewed certificate was not served"
        time.sleep(0.1)
    # A certificate without its key: refused, the renewed one stays in force.
    other_cert, _ = testbed.make_certificate(g.work, "other")
    shutil.copy(other_cert, g.cert)
    g.gateway.proc.send_signal(signal.SIGHUP)
    refusal = "TLS reload refused; the certificate in force stays error=server.tls.key_file: " \
              "is not the key of the certificate"
    deadline = time.monotonic() + 10
    while refusal not in g.gateway.log_path.read_text():
        assert time.monotonic() < deadline, "the bad certificate was not refused"
        time.sleep(0.1)
    assert served_certificate(port) == pem_to_der(new_cert)
    # The routes, reloaded by the same signal (in a task of their own), do not depend on the
    # TLS files.
    deadline = time.monotonic() + 10
    while g.gateway.log_path.read_text().count(
            "reloaded routes and paths from the config file") < 2:
        assert time.monotonic() < deadline, g.gateway.log_path.read_text()[-3000:]
        time.sleep(0.1)
    assert "reload refused; the routes in force stay" not in g.gateway.log_path.read_text()


def test_check_config_names_a_key_that_is_not_the_certificates(tls_gateway, tmp_path):
    g = tls_gateway
    cert, _ = testbed.make_certificate(tmp_path, "a")
    _, other_key = testbed.make_certificate(tmp_path, "b")
    text = g.gateway.config_path.read_text()
    text = text.replace(f"cert_file: {g.cert}", f"cert_file: {cert}")
    text = text.replace(f"key_file: {g.key}", f"key_file: {other_key}")
    (tmp_path / "gateway.yaml").write_text(text)
    run = subprocess.run([g.gateway.binary, "check-config", "--config", tmp_path / "gateway.yaml"],
                         capture_output=True, text=True)
    assert run.returncode != 0
    assert f"gateway.yaml: server.tls.key_file: is not the key of the certificate in " \
           f"server.tls.cert_file: {other_key}" in run.stderr, run.stderr
    assert "PRIVATE KEY" not in run.stderr


def test_shutdown_does_not_wait_for_a_handshake_that_never_comes(bed):
    g = start_tls_gateway(bed, "tls-shutdown")
    try:
        with socket.create_connection(("127.0.0.1", g.gateway.port), timeout=15) as s:
            # Half a ClientHello: the gateway has accepted the connection and waits for the rest.
            s.sendall(b"\x16\x03\x01\x02\x00")
            time.sleep(0.5)
            g.gateway.proc.send_signal(signal.SIGTERM)
            # The handshake deadline is 10 s; shutdown does not wait for it.
            assert g.gateway.proc.wait(timeout=8) == 0
    finally:
        g.stop()
