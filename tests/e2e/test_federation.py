"""IdP metadata from a URL: start-up, background refresh, key rollover, failures, signatures.

A SimpleSAMLphp IdP of its own signs the logins; a small HTTP server on 127.0.0.1 (started
here, in this process) serves the IdP's metadata as the test composes it: the IdP's own
document with the signing certificates the step needs, or a failure (HTTP 500, garbage, a
document for another IdP, an expired one, no server at all). The IdP's key is rolled by
replacing its key files, which SimpleSAMLphp reads at each login. The gateway refreshes every
second and shows what it did on its admin listener (`/health`, `/metrics`).
Signed metadata is signed by xmlsec1 (the command-line tool of the XML Security Library).
"""

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import testbed
from flows import login, login_until_acs, new_client, post_to_acs, run_app, cookie_header

MD = "urn:oasis:names:tc:SAML:2.0:metadata"


class MetadataServer:
    """Serves `self.body` with `self.status` at any path, until stopped; can start again on
    the same port."""

    def __init__(self, tls=None):
        self.port = testbed.free_port()
        self.body = b""
        self.status = 200
        self.requests = 0
        self.tls = tls  # (cert file, key file) to serve https
        self._server = None

    @property
    def url(self):
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/idp/metadata.xml"

    def start(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                body = outer.body
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/samlmetadata+xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.tls:
            import ssl
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def serve(self, text, status=200):
        self.body = text.encode() if isinstance(text, str) else text
        self.status = status


def new_key(path_stem):
    """A fresh RSA key pair for the IdP: (key path, cert path, cert PEM)."""
    key, cert = path_stem.with_suffix(".key"), path_stem.with_suffix(".crt")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "30",
         "-subj", f"/CN={path_stem.name}", "-keyout", key, "-out", cert],
        check=True, capture_output=True)
    return key, cert, cert.read_text()


def pem_body(pem):
    return "".join(l for l in pem.strip().splitlines() if not l.startswith("-----"))


def compose(idp_xml, cert_pems, entity_id=None, root_attrs=""):
    """The IdP's metadata with exactly `cert_pems` as its signing certificates."""
    text = re.sub(r"<\?xml[^>]*\?>\s*", "", idp_xml)
    text = re.sub(r"\s*<md:KeyDescriptor.*?</md:KeyDescriptor>", "", text, flags=re.S)
    keys = "".join(
        '<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>'
        f"{pem_body(p)}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"
        for p in cert_pems)
    text = re.sub(r"(<md:IDPSSODescriptor[^>]*>)", lambda m: m.group(1) + keys, text, count=1)
    if entity_id:
        text = re.sub(r'entityID="[^"]*"', f'entityID="{entity_id}"', text, count=1)
    if root_attrs:
        text = text.replace("<md:EntityDescriptor ", f"<md:EntityDescriptor {root_attrs} ", 1)
    return text


SIGNATURE_TEMPLATE = (
    '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo>'
    '<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>'
    '<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>'
    '<ds:Reference URI="#metadata"><ds:Transforms>'
    '<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>'
    '<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms>'
    '<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>'
    '<ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo>'
    '<ds:SignatureValue></ds:SignatureValue></ds:Signature>')


def xmlsec_sign(text, key, cert, work):
    """`text` (an EntityDescriptor) signed on its root by xmlsec1 with `key`."""
    text = text.replace("<md:EntityDescriptor ", '<md:EntityDescriptor ID="metadata" ', 1)
    text = re.sub(r"(<md:EntityDescriptor[^>]*>)", lambda m: m.group(1) + SIGNATURE_TEMPLATE,
                  text, count=1)
    template = work / "metadata-template.xml"
    template.write_text(text)
    out = subprocess.run(
        ["xmlsec1", "--sign", "--privkey-pem", f"{key},{cert}",
         "--id-attr:ID", f"{MD}:EntityDescriptor", template],
        check=True, capture_output=True)
    return out.stdout.decode()


class Federation(testbed.OwnGateway):
    """An IdP, a metadata server and a gateway that follows the server's document."""

    def __init__(self, work, streamlit_port, gateway_bin, signer=None):
        self.work = work
        self.gw_port = testbed.free_port()
        self.admin_port = testbed.free_port()
        entity_id, acs, slo = testbed.gateway_urls(self.gw_port)
        self.idp = testbed.Idp(work / "idp", entity_id, acs, slo_url=slo).start()
        self.idp_xml = self.idp.metadata_xml()
        self.key_a = (self.idp.key_path, self.idp.cert_path, self.idp.cert_pem)
        self.key_b = new_key(work / "idp-key-b")
        # Copies, so that putting a key in place never loses one.
        for name, (key, cert, _) in (("a", self.key_a), ("b", self.key_b)):
            shutil.copy(key, work / f"saved-{name}.key")
            shutil.copy(cert, work / f"saved-{name}.crt")
        self.signer = signer
        self.server = MetadataServer().start()
        self.serve_certs([self.key_a[2]])
        self.streamlit_port = streamlit_port
        self.gateway_bin = gateway_bin
        self.gateway = None

    def document(self, cert_pems, **kw):
        text = compose(self.idp_xml, cert_pems, **kw)
        if self.signer:
            key, cert, _ = self.signer
            text = xmlsec_sign(text, key, cert, self.work)
        return text

    def serve_certs(self, cert_pems, **kw):
        self.server.serve(self.document(cert_pems, **kw))

    def idp_signs_with(self, name):
        """Puts the saved key pair `a` or `b` in the IdP's key files."""
        shutil.copy(self.work / f"saved-{name}.key", self.idp.key_path)
        shutil.copy(self.work / f"saved-{name}.crt", self.idp.cert_path)

    def config_text(self, extra_idp=""):
        text = testbed.gateway_config(self.work, self.gw_port, self.streamlit_port)
        text = text.replace(
            f"  metadata_file: {self.work}/idp-metadata.xml\n",
            f"  metadata_url: {self.server.url}\n  refresh_interval: 1s\n"
            f"  metadata_file: {self.work}/idp-metadata.xml\n{extra_idp}")
        return text + f"server:\n  admin_listen: 127.0.0.1:{self.admin_port}\n"

    def start_gateway(self, extra_idp=""):
        self.gateway = testbed.Gateway(self.gateway_bin, self.config_text(extra_idp),
                                       self.work).start()
        return self

    def health(self):
        status, body = testbed.http_get(f"http://127.0.0.1:{self.admin_port}/health", 5)
        assert status == 200, body
        return json.loads(body)

    def metrics(self):
        status, body = testbed.http_get(f"http://127.0.0.1:{self.admin_port}/metrics", 5)
        assert status == 200, body
        return body

    def wait_for(self, what, check, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if check(health):
                return health
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s; /health: {health}")
            time.sleep(0.2)

    def wait_for_certs(self, cert_pems):
        want = sorted(fingerprint(p) for p in cert_pems)
        return self.wait_for(f"trust in {want}", lambda h: sorted(
            c["fingerprint"] for c in h["idp"]["certificates"]) == want)

    def wait_for_failures(self, more_than):
        return self.wait_for(f"a failed refresh after {more_than}",
                             lambda h: h["idp"]["refresh"]["failures_total"] > more_than)

    def stop(self):
        for service in (self.gateway, self.idp):
            if service:
                service.stop()
        self.server.stop()


def key_descriptor(pem):
    """A signing KeyDescriptor for `pem`."""
    return re.search(r"<md:KeyDescriptor.*?</md:KeyDescriptor>", compose("<md:IDPSSODescriptor>", [pem]),
                     re.S).group(0)


def fingerprint(pem):
    import hashlib
    der = base64.b64decode(pem_body(pem))
    return ":".join(f"{b:02x}" for b in hashlib.sha256(der).digest())


def logs_in(fed, user="alice", password="alice-pass"):
    """True when a whole login through `fed`'s gateway ends in a session that reaches the app;
    False when the ACS refuses the IdP's answer, with the reason code checked by the caller."""
    client = new_client()
    form = login_until_acs(client, fed.url, user, password)
    r = post_to_acs(client, form)
    if r.status_code != 303:
        return False, r
    page = run_app(fed.url, {"Cookie": cookie_header(client)})
    assert page.headers["x-auth-user"] == [user]
    return True, r


@pytest.fixture(scope="module")
def fed(bed):
    work = testbed.fresh_work(bed.work, "federation")
    f = Federation(work, bed.streamlit.port, bed.gateway.binary)
    try:
        yield f.start_gateway()
    finally:
        f.stop()


def test_start_up_fetches_the_url_and_keeps_a_copy(fed):
    health = fed.health()
    assert health["status"] == "ok", health
    assert health["idp"]["origin"] == "url"
    assert health["idp"]["refresh"]["successes_total"] >= 1
    backing = (fed.work / "idp-metadata.xml").read_text()
    assert fed.idp.entity_id in backing and pem_body(fed.key_a[2]) in backing
    ok, r = logs_in(fed)
    assert ok, r.text
    metrics = fed.metrics()
    assert 'saml_gateway_idp_metadata_refresh_total{idp="default",result="success"}' in metrics
    assert f'saml_gateway_idp_certificate_expiry_timestamp_seconds{{idp="default",fingerprint="{fingerprint(fed.key_a[2])}"}}' in metrics
    assert 'saml_gateway_audit_records_total{event="login_success",reason=""}' in metrics


def test_idp_key_rollover_is_followed_without_a_restart(fed):
    a, b = fed.key_a[2], fed.key_b[2]
    mark = fed.audit_mark()
    try:
        # The IdP signs with its new key before the metadata publishes it: refused.
        fed.idp_signs_with("b")
        ok, r = logs_in(fed)
        assert not ok and r.status_code == 403 and "signature_invalid" in r.text
        # The metadata publishes both keys; after the next refresh, the new key verifies.
        fed.serve_certs([a, b])
        fed.wait_for_certs([a, b])
        ok, r = logs_in(fed, "bob", "bob-pass")
        assert ok, r.text
        # The old key is removed from the metadata: a response it signs is refused.
        fed.serve_certs([b])
        fed.wait_for_certs([b])
        fed.idp_signs_with("a")
        ok, r = logs_in(fed)
        assert not ok and "signature_invalid" in r.text
        fed.idp_signs_with("b")
        ok, r = logs_in(fed)
        assert ok, r.text
        assert fed.gateway.proc.poll() is None
        changes = [r for r in fed.audit_since(mark) if r["event"] == "idp_trust_changed"]
        assert [c["detail"].split(":")[0] for c in changes] == [
            "signing certificates added", "signing certificates removed"], changes
        assert fingerprint(b) in changes[0]["detail"] and fingerprint(a) in changes[1]["detail"]
        failures = [r for r in fed.audit_since(mark) if r["event"] == "login_failure"]
        assert {f["reason"] for f in failures} == {"signature_invalid"}
    finally:
        fed.idp_signs_with("a")
        fed.serve_certs([a])
        fed.wait_for_certs([a])


@pytest.mark.parametrize("failure", [
    "http_500", "garbage", "not_metadata", "other_idp", "expired", "no_certificate", "server_gone",
    "rolled_back"])
def test_a_failed_refresh_keeps_the_last_good_trust(fed, failure):
    a = fed.key_a[2]
    before = fed.health()["idp"]["refresh"]["failures_total"]
    good = fed.document([a])
    if failure == "http_500":
        fed.server.serve("<html>oops</html>", status=500)
    elif failure == "garbage":
        fed.server.serve(b"\x00\xffnot xml at all")
    elif failure == "not_metadata":
        fed.server.serve("<html><body>Sign in to continue</body></html>")
    elif failure == "other_idp":
        fed.serve_certs([fed.key_b[2]], entity_id="https://evil.example/idp")
    elif failure == "expired":
        fed.serve_certs([fed.key_b[2]], root_attrs='validUntil="2020-01-01T00:00:00Z"')
    elif failure == "no_certificate":
        fed.serve_certs([])
    elif failure == "server_gone":
        fed.server.stop()
    elif failure == "rolled_back":
        # A document valid until 2099 is in force; one valid until 2098 is an older one.
        fed.serve_certs([a], root_attrs='validUntil="2099-01-01T00:00:00Z"')
        fed.wait_for("the 2099 document", lambda h: h["idp"]["valid_until"] == 4070908800)
        before = fed.health()["idp"]["refresh"]["failures_total"]
        fed.serve_certs([fed.key_b[2]], root_attrs='validUntil="2098-01-01T00:00:00Z"')
    try:
        health = fed.wait_for_failures(before)
        assert health["status"] == "degraded", health
        error = health["idp"]["refresh"]["last_error"]
        expected = {
            "http_500": "HTTP 500", "garbage": "not UTF-8", "not_metadata": "no identity provider",
            "other_idp": "is for https://evil.example/idp", "expired": "expired",
            "no_certificate": "no signing certificate", "server_gone": "cannot fetch",
            "rolled_back": "earlier than that of the metadata in force",
        }[failure]
        assert expected in error, health
        # The trust in force is the last good one: key A still verifies, B does not.
        assert [c["fingerprint"] for c in health["idp"]["certificates"]] == [fingerprint(a)]
        ok, r = logs_in(fed)
        assert ok, r.text
        assert pem_body(a) in (fed.work / "idp-metadata.xml").read_text()
    finally:
        if failure == "server_gone":
            fed.server.start()
        fed.server.serve(good)
    health = fed.wait_for("a good refresh", lambda h: h["idp"]["refresh"]["consecutive_failures"] == 0)
    assert health["status"] == "ok"


def test_start_up_without_the_url_uses_the_backing_copy(fed):
    """A second gateway, started while the metadata server is down, runs on the copy the first
    one wrote; without a copy it refuses to start and says why."""
    work = fed.work / "second"
    work.mkdir(exist_ok=True)
    shutil.copy(fed.work / "idp-metadata.xml", work / "idp-metadata.xml")
    for name in ("sp.key", "sp.crt"):
        shutil.copy(fed.work / name, work / name)
    text = fed.config_text().replace(str(fed.work), str(work))
    text = text.replace(f"127.0.0.1:{fed.gw_port}", f"127.0.0.1:{testbed.free_port()}")
    text = text.replace(f"127.0.0.1:{fed.admin_port}", f"127.0.0.1:{testbed.free_port()}")
    # Same public URL and entity ID as the first gateway (the IdP knows one SP).
    text = re.sub(r"^public_url: .*$", f"public_url: {fed.url}", text, flags=re.M)
    text = re.sub(r"^  entity_id: .*$", f"  entity_id: {fed.url}/saml/metadata", text, flags=re.M)
    fed.server.stop()
    try:
        (work / "gateway.yaml").write_text(text)
        out = subprocess.run([fed.gateway.binary, "check-config", "--config", work / "gateway.yaml"],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "the URL gave no good document" in out.stdout, out.stdout
        second = testbed.Gateway(fed.gateway.binary, text, work).start()
        try:
            log = second.log_path.read_text()
            assert "starting with the last good copy" in log, log
        finally:
            second.stop()
        (work / "idp-metadata.xml").unlink()
        out = subprocess.run([fed.gateway.binary, "check-config", "--config", work / "gateway.yaml"],
                             capture_output=True, text=True)
        assert out.returncode != 0
        assert "idp.metadata_url" in out.stderr and "no usable copy" in out.stderr, out.stderr
        assert "cannot fetch" in out.stderr, out.stderr
    finally:
        fed.server.start()
    out = subprocess.run([fed.gateway.binary, "check-config", "--config", fed.gateway.config_path],
                         capture_output=True, text=True)
    assert out.returncode == 0 and f"from {fed.server.url}" in out.stdout, out


@pytest.fixture(scope="module")
def signed_fed(bed):
    work = testbed.fresh_work(bed.work, "federation-signed")
    signer = new_key(work / "metadata-signer")
    f = Federation(work, bed.streamlit.port, bed.gateway.binary, signer=signer)
    f.other_signer = new_key(work / "other-signer")
    try:
        yield f.start_gateway(f"  metadata_signing_cert: {signer[1]}\n")
    finally:
        f.stop()


def test_signed_metadata_is_used_only_when_its_signature_verifies(signed_fed):
    fed = signed_fed
    a, b = fed.key_a[2], fed.key_b[2]
    assert "<ds:SignatureValue>" in fed.server.body.decode()
    ok, r = logs_in(fed)
    assert ok, r.text
    good = fed.server.body
    try:
        cases = {
            "unsigned": compose(fed.idp_xml, [b]),
            "signed by another key": xmlsec_sign(compose(fed.idp_xml, [b]), *fed.other_signer[:2],
                                                 fed.work),
            # Signed, then a certificate added: the digest no longer matches.
            "tampered": good.decode().replace(
                "<md:KeyDescriptor", key_descriptor(b) + "<md:KeyDescriptor", 1),
        }
        for name, document in cases.items():
            before = fed.health()["idp"]["refresh"]["failures_total"]
            fed.server.serve(document)
            health = fed.wait_for_failures(before)
            error = health["idp"]["refresh"]["last_error"]
            assert ("not signed" if name == "unsigned" else "signature") in error, (name, health)
            assert [c["fingerprint"] for c in health["idp"]["certificates"]] == [fingerprint(a)], name
        ok, r = logs_in(fed)
        assert ok, r.text
        # A well-signed document with both keys is followed.
        fed.serve_certs([a, b])
        fed.wait_for_certs([a, b])
    finally:
        fed.server.serve(good)


def https_metadata_server(fed, name):
    """A metadata server over https, in a folder `name` of its own, serving `fed`'s document;
    its certificate, for 127.0.0.1, is trusted by nothing yet. Returns (server, certificate
    file, folder)."""
    work = fed.work / name
    work.mkdir(exist_ok=True)
    cert, key = work / "server.crt", work / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", key, "-out", cert], check=True, capture_output=True)
    server = MetadataServer(tls=(cert, key)).start()
    server.serve(fed.document([fed.key_a[2]]))
    return server, cert, work


def check_config(fed, work, url, trusted, extra_idp=""):
    """`check-config` of `fed`'s gateway fetching `url` instead, with `trusted` as the system's
    CA file and `extra_idp` added to its `idp` section."""
    text = fed.config_text(extra_idp).replace(fed.server.url, url).replace(
        f"{fed.work}/idp-metadata.xml", f"{work}/idp-metadata.xml")
    config = work / "gateway.yaml"
    config.write_text(text)
    return subprocess.run([fed.gateway.binary, "check-config", "--config", config],
                          capture_output=True, text=True,
                          env={**os.environ, "SSL_CERT_FILE": str(trusted)})


def test_https_metadata_is_fetched_with_the_trusted_cas_only(fed):
    """An https metadata URL whose server certificate the system trusts (here: SSL_CERT_FILE)
    is fetched; the same server is refused when its certificate is not trusted."""
    server, cert, work = https_metadata_server(fed, "https")
    try:
        trusted = check_config(fed, work, server.url, cert)
        assert trusted.returncode == 0, trusted.stderr
        assert f"from {server.url}" in trusted.stdout, trusted.stdout
        untrusted = check_config(fed, work, server.url, "/dev/null")
        assert untrusted.returncode != 0
        assert "certificate verify failed" in untrusted.stderr, untrusted.stderr
        assert server.requests == 1
    finally:
        server.stop()


def test_metadata_is_fetched_through_the_configured_proxy(fed):
    """`idp.metadata_proxy`: the fetch asks Debian's tinyproxy for a tunnel (CONNECT, with
    Basic credentials) and checks the server's certificate through it. A wrong password and a
    port the proxy does not open are each named, and the password is never shown."""
    server, cert, work = https_metadata_server(fed, "proxied")
    proxy = testbed.TinyProxy(work / "proxy", [server.port], ("gw", "tunnel-pass")).start()
    via = lambda password: f"  metadata_proxy: http://gw:{password}@127.0.0.1:{proxy.port}\n"
    try:
        through = check_config(fed, work, server.url, cert, via("tunnel-pass"))
        assert through.returncode == 0, through.stderr
        shown = f"from {server.url} (through the proxy http://127.0.0.1:{proxy.port}/)"
        assert shown in through.stdout, through.stdout
        assert server.requests == 1
        assert f"CONNECT 127.0.0.1:{server.port}" in proxy.log(), proxy.log()
        # Behind the tunnel the certificate is checked all the same.
        untrusted = check_config(fed, work, server.url, "/dev/null", via("tunnel-pass"))
        assert "certificate verify failed" in untrusted.stderr, untrusted.stderr
        for run in (through, untrusted):
            assert "tunnel-pass" not in run.stdout + run.stderr

        # tinyproxy answers a wrong password with 401, none with 407.
        wrong = check_config(fed, work, server.url, cert, via("not-the-pass"))
        assert wrong.returncode != 0
        said = (f"the proxy http://127.0.0.1:{proxy.port}/ refused to open a tunnel to "
                f"127.0.0.1:{server.port}: 401 Unauthorized; it refused the user and password")
        assert said in wrong.stderr, wrong.stderr
        assert "not-the-pass" not in wrong.stderr + wrong.stdout
        anonymous = check_config(fed, work, server.url, cert,
                                 f"  metadata_proxy: http://127.0.0.1:{proxy.port}\n")
        assert "407 Proxy Authentication Required; it asks for credentials" in anonymous.stderr, \
            anonymous.stderr
        # A port the proxy opens no tunnels to.
        closed = testbed.free_port()
        elsewhere = server.url.replace(f":{server.port}/", f":{closed}/")
        refused = check_config(fed, work, elsewhere, cert, via("tunnel-pass"))
        assert refused.returncode != 0
        said = (f"refused to open a tunnel to 127.0.0.1:{closed}: 403 Access violation; it must "
                "allow CONNECT to that host and port")
        assert said in refused.stderr, refused.stderr
        assert "tunnel-pass" not in refused.stderr + refused.stdout
        assert server.requests == 1
    finally:
        proxy.stop()
        server.stop()


def test_extra_signing_certs_are_trusted_beside_the_metadata(bed):
    """An IdP that publishes only its active certificate (Okta, Auth0, Google): the next one,
    configured as idp.extra_signing_certs, verifies logins before any metadata carries it."""
    work = testbed.fresh_work(bed.work, "federation-extra")
    f = Federation(work, bed.streamlit.port, bed.gateway.binary)
    try:
        f.start_gateway(f"  extra_signing_certs: {f.key_b[1]}\n")
        prints = sorted(c["fingerprint"] for c in f.health()["idp"]["certificates"])
        assert prints == sorted([fingerprint(f.key_a[2]), fingerprint(f.key_b[2])])
        f.idp_signs_with("b")
        ok, r = logs_in(f)
        assert ok, r.text
        # A refresh keeps the extra certificate.
        before = f.health()["idp"]["refresh"]["successes_total"]
        f.wait_for("a refresh", lambda h: h["idp"]["refresh"]["successes_total"] > before)
        ok, r = logs_in(f, "bob", "bob-pass")
        assert ok, r.text
    finally:
        f.stop()
