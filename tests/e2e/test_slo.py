"""Single Logout with the real IdP, in both directions.

A SimpleSAMLphp IdP of its own has the gateway's certificate and is configured to sign the
logout messages it sends (`sign.logout`) and to require signatures on those it receives
(`validate.logout`). SP-initiated: the gateway's sign-out sends a signed LogoutRequest; the IdP
ends its session and answers with a signed LogoutResponse. IdP-initiated: signing out at the IdP
makes it send a signed LogoutRequest to the gateway, which ends that login's sessions (and their
WebSockets) and answers with a signed LogoutResponse.
"""

import base64
import shutil
import subprocess
import time
import zlib
from datetime import datetime, timezone
from urllib.parse import parse_qs, quote, urlsplit

import pytest

import testbed
from conftest import ARTIFACTS
from deploy import logout, seconds_until_closed
from flows import NAVIGATE, cookie_header, forms, login, new_client, open_stream

SLO_PATH = "/saml2/idp/SingleLogoutService.php"


class SloBed(testbed.AuditReader):
    """An IdP that speaks signed Single Logout with one gateway."""

    def __init__(self, work, streamlit_port, gateway_bin, extra_idp=""):
        self.work = work
        subprocess.run([gateway_bin, "keygen", "--key", work / "sp.key", "--cert", work / "sp.crt"],
                       check=True, capture_output=True)
        port = testbed.free_port()
        self.entity_id, acs, self.slo_url = testbed.gateway_urls(port)
        self.idp = testbed.Idp(work, self.entity_id, acs, slo_url=self.slo_url,
                               sp_cert_pem=(work / "sp.crt").read_text()).start()
        self.idp.save_metadata(work / "idp-metadata.xml")
        text = testbed.gateway_config(work, port, streamlit_port)
        text = text.replace("idp:\n", "idp:\n" + extra_idp, 1)
        self.gateway = testbed.Gateway(gateway_bin, text, work).start()

    @property
    def audit_path(self):
        return self.work / "audit.jsonl"

    @property
    def url(self):
        return self.gateway.base_url

    def stop(self):
        self.gateway.stop()
        self.idp.stop()


def make_bed(bed, name, extra_idp=""):
    work = ARTIFACTS / (bed.work.name + "-" + name)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return SloBed(work, bed.streamlit.port, bed.gateway.binary, extra_idp)


@pytest.fixture(scope="module")
def slo(bed):
    b = make_bed(bed, "slo")
    try:
        yield b
    finally:
        b.stop()


def alive(url, client):
    return client.get(url + "/_stcore/health").status_code == 200


def idp_wants_credentials(client, slo):
    """True when starting a login makes the IdP ask for a password (no IdP session)."""
    r = client.get(slo.url + "/saml/login?return_to=/", allow_redirects=False)
    r = client.get(r.headers["Location"])
    return any("password" in f.fields for f in forms(r))


def test_metadata_offers_single_logout(slo):
    metadata = new_client().get(slo.gateway.metadata_url).text
    assert f'Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{slo.slo_url}"' in metadata
    assert f'Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{slo.slo_url}"' in metadata


def test_sp_initiated_logout_signs_out_at_the_idp_too(slo):
    client = new_client()
    login(client, slo.url, "alice", "alice-pass")
    old = cookie_header(client)
    mark = slo.audit_mark()
    r = logout(client, slo.url)
    assert r.status_code == 303
    location = r.headers["Location"]
    assert location.startswith(slo.idp.base_url + SLO_PATH), location
    query = parse_qs(urlsplit(location).query)
    assert {"SAMLRequest", "RelayState", "SigAlg", "Signature"} <= set(query)
    request = zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15).decode()
    assert "<saml:NameID" in request and ">alice</saml:NameID>" in request
    assert "<samlp:SessionIndex>" in request
    # The IdP ends its session and answers; the gateway checks the answer and signs off.
    r = client.get(location)
    assert r.status_code == 200 and r.url == slo.url + "/saml/logged-out", (r.url, r.text[:500])
    records = slo.audit_since(mark)
    assert [(a["event"], a.get("reason")) for a in records] == [
        ("logout", None), ("slo", "idp_logout_response")], records
    assert records[0]["detail"] == "logout request sent to the IdP"
    replay = new_client()
    assert replay.get(slo.url + "/_stcore/health", headers={"Cookie": old}).status_code == 401
    # Signed out at the IdP as well: the next login asks for the password again.
    assert idp_wants_credentials(client, slo)


def test_the_idp_refuses_an_unsigned_or_tampered_logout_request(slo):
    client = new_client()
    login(client, slo.url, "bob", "bob-pass")
    location = logout(client, slo.url).headers["Location"]
    unsigned = location.split("&SigAlg=")[0]
    r = client.get(unsigned)
    assert "no signature found" in r.text, r.text[:800]
    tampered = location.replace("Signature=", "Signature=AAAA", 1)
    r = client.get(tampered)
    assert r.url != slo.url + "/saml/logged-out"
    assert "logged-out" not in r.url
    # The IdP session is still there: the login goes through without a password.
    assert not idp_wants_credentials(client, slo)


def test_idp_initiated_logout_ends_that_login_and_its_websocket(slo):
    alice = new_client()
    login(alice, slo.url, "alice", "alice-pass")
    other = new_client()  # another browser, another IdP session of the same user
    login(other, slo.url, "alice", "alice-pass")
    ws = open_stream(slo.url, {"Cookie": cookie_header(alice)})
    mark = slo.audit_mark()
    try:
        # SimpleSAMLphp returns only to its own URLs.
        return_to = slo.idp.entity_id
        r = alice.get(f"{slo.idp.base_url}{SLO_PATH}?ReturnTo={quote(return_to, safe='')}")
        assert r.status_code == 200 and r.url == return_to, (r.url, r.text[:500])
        assert not alive(slo.url, alice)
        assert alive(slo.url, other), "only the IdP session that signed out ends"
        assert seconds_until_closed(ws, 10) < 10
    finally:
        ws.close()
    records = [a for a in slo.audit_since(mark) if a["event"] == "slo"]
    assert len(records) == 1, records
    assert records[0]["reason"] == "idp_logout_request" and records[0]["user"] == "alice"
    assert records[0]["session"]
    revoked = [a for a in slo.audit_since(mark) if a["event"] == "session_revoked"]
    assert revoked and revoked[0]["reason"] == "slo", revoked


def redirect_query(xml, key_pem=None, param="SAMLRequest"):
    """An HTTP-Redirect binding query for `xml`, signed RSA-SHA256 with `key_pem` if given."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    encoded = base64.b64encode(deflate.compress(xml.encode()) + deflate.flush()).decode()
    query = f"{param}={quote(encoded, safe='')}"
    if key_pem:
        query += "&SigAlg=" + quote("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256", safe="")
        key = serialization.load_pem_private_key(key_pem, password=None)
        signature = key.sign(query.encode(), padding.PKCS1v15(), hashes.SHA256())
        query += "&Signature=" + quote(base64.b64encode(signature).decode(), safe="")
    return query


def forged_request(slo, name_id):
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (f'<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
            f'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_forged1" Version="2.0" '
            f'IssueInstant="{now}" Destination="{slo.slo_url}">'
            f"<saml:Issuer>{slo.idp.entity_id}</saml:Issuer>"
            f"<saml:NameID>{name_id}</saml:NameID></samlp:LogoutRequest>")


def test_a_forged_logout_request_ends_nothing(slo):
    victim = new_client()
    login(victim, slo.url, "carol", "carol-pass")
    attacker_key = subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        check=True, capture_output=True).stdout
    for key, reason in ((None, "signature_missing"), (attacker_key, "signature_invalid")):
        mark = slo.audit_mark()
        query = redirect_query(forged_request(slo, "carol"), key)
        r = new_client().get(f"{slo.url}/saml/slo?{query}", allow_redirects=False)
        assert r.status_code == 400 and reason in r.text, r.text
        assert "carol" not in r.text
        [record] = slo.audit_since(mark)
        assert (record["event"], record["reason"]) == ("slo", reason)
        assert alive(slo.url, victim)
    # A response to a request nobody sent is refused too.
    r = new_client().get(f"{slo.url}/saml/slo?{redirect_query('<x/>', None, 'SAMLResponse')}"
                         "&RelayState=abc", allow_redirects=False)
    assert r.status_code == 400 and "relay_state_not_bound" in r.text
    r = new_client().get(f"{slo.url}/saml/slo", allow_redirects=False)
    assert r.status_code == 400 and "saml_message_missing" in r.text


def test_local_logout_only_when_switched_off(bed):
    local = make_bed(bed, "slo-off", "  single_logout: false\n")
    try:
        client = new_client()
        login(client, local.url, "alice", "alice-pass")
        r = logout(client, local.url)
        assert r.status_code == 303 and r.headers["Location"] == "/saml/logged-out"
        assert not alive(local.url, client)
        # Still signed in at the IdP: the next login needs no password.
        assert not idp_wants_credentials(client, local)
        assert "SingleLogoutService" not in new_client().get(local.gateway.metadata_url).text
    finally:
        local.stop()
