"""Single Logout with the real IdP, in both directions.

A SimpleSAMLphp IdP of its own has the gateway's certificate and is configured to sign the
logout messages it sends (`sign.logout`) and to require signatures on those it receives
(`validate.logout`). SP-initiated: the gateway's sign-out sends a signed LogoutRequest; the IdP
ends its session and answers with a signed LogoutResponse. IdP-initiated: signing out at the IdP
makes it send a signed LogoutRequest to the gateway, which ends that login's sessions (and their
WebSockets) and answers with a signed LogoutResponse.
"""

import base64
import subprocess
import time
import zlib
from datetime import datetime, timezone
from urllib.parse import parse_qs, quote, urljoin, urlsplit

import pytest

import testbed
from deploy import logout, seconds_until_closed
from flows import NAVIGATE, cookie_header, forms, login, new_client, open_stream

SLO_PATH = "/saml2/idp/SingleLogoutService.php"


class SloBed(testbed.OwnGateway):
    """An IdP that speaks signed Single Logout with one gateway."""

    def __init__(self, work, streamlit_port, gateway_bin, extra_idp="", extra=""):
        self.work = work
        port, self.entity_id, self.slo_url, self.idp = testbed.keyed_idp(work, gateway_bin)
        self.idp.save_metadata(work / "idp-metadata.xml")
        text = testbed.gateway_config(work, port, streamlit_port, extra=extra)
        text = text.replace("idp:\n", "idp:\n" + extra_idp, 1)
        self.gateway = testbed.Gateway(gateway_bin, text, work).start()

    def stop(self):
        self.gateway.stop()
        self.idp.stop()


def make_bed(bed, name, extra_idp="", extra=""):
    work = testbed.fresh_work(bed.work, name)
    return SloBed(work, bed.streamlit.port, bed.gateway.binary, extra_idp, extra)


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
    old_cookie = cookie_header(alice)
    other = new_client()  # another browser, another IdP session of the same user
    login(other, slo.url, "alice", "alice-pass")
    ws = open_stream(slo.url, {"Cookie": old_cookie})
    mark = slo.audit_mark()
    try:
        # SimpleSAMLphp returns only to its own URLs.
        return_to = slo.idp.entity_id
        hops = follow(alice, f"{slo.idp.base_url}{SLO_PATH}?ReturnTo={quote(return_to, safe='')}")
        assert hops[-1] == return_to, hops
        [request_url] = [h for h in hops if h.startswith(slo.url + "/saml/slo?SAMLRequest=")]
        # Ended on the server, not only forgotten by this browser.
        replay = new_client()
        assert replay.get(slo.url + "/_stcore/health", headers={"Cookie": old_cookie}).status_code == 401
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

    # The IdP's signed request, captured and sent again, is refused and ends nothing.
    login(alice, slo.url, "alice", "alice-pass")
    mark = slo.audit_mark()
    r = new_client().get(request_url, allow_redirects=False)
    assert r.status_code == 400 and "logout_request_replayed" in r.text, r.text
    assert alive(slo.url, alice) and alive(slo.url, other)
    [record] = slo.audit_since(mark)
    assert (record["event"], record["reason"]) == ("slo", "logout_request_replayed")


def follow(client, url, limit=15):
    """GETs `url` and follows redirects by hand; returns every URL visited, in order."""
    hops = [url]
    for _ in range(limit):
        r = client.get(hops[-1], allow_redirects=False)
        if r.status_code not in (301, 302, 303, 307):
            assert r.status_code == 200, (r.status_code, hops, r.text[:500])
            return hops
        hops.append(urljoin(hops[-1], r.headers["Location"]))
    raise AssertionError(f"more than {limit} redirects: {hops}")


SIGNATURE_TEMPLATE = (
    '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo>'
    '<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>'
    '<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>'
    '<ds:Reference URI="#{id}"><ds:Transforms>'
    '<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>'
    '<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms>'
    '<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>'
    '<ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo>'
    '<ds:SignatureValue></ds:SignatureValue></ds:Signature>')


def test_a_logout_request_over_http_post_signed_by_the_idp_key(slo):
    """The HTTP-POST binding: a LogoutRequest with an enveloped signature, made by xmlsec1
    with the IdP's own key (SimpleSAMLphp sends Redirect-binding requests only)."""
    carol = new_client()
    login(carol, slo.url, "carol", "carol-pass")
    cookie = cookie_header(carol)
    form, tampered = signed_post_form(slo, "carol", "_post1")
    # Tampered after signing: refused, nothing ends.
    r = new_client().post(slo.url + "/saml/slo", data={**form, "SAMLRequest": tampered},
                          allow_redirects=False)
    assert r.status_code == 400 and "signature_invalid" in r.text, r.text
    assert alive(slo.url, carol)
    r = new_client().post(slo.url + "/saml/slo", data=form, allow_redirects=False)
    assert r.status_code == 303, r.text
    location = r.headers["Location"]
    assert location.startswith(slo.idp.base_url + SLO_PATH) and "SAMLResponse=" in location
    assert "RelayState=state-1" in location and "Signature=" in location
    answer = zlib.decompress(base64.b64decode(parse_qs(urlsplit(location).query)["SAMLResponse"][0]), -15).decode()
    assert 'InResponseTo="_post1"' in answer and "status:Success" in answer
    assert new_client().get(slo.url + "/_stcore/health", headers={"Cookie": cookie}).status_code == 401


def signed_post_form(slo, name_id, request_id):
    """An HTTP-POST LogoutRequest for `name_id` signed by xmlsec1 with the IdP's own key (the
    form, with RelayState `state-1`), and the same message tampered after signing (alice for
    carol: the base64 SAMLRequest value)."""
    xml = forged_request(slo, name_id, request_id=request_id)
    signed_part = xml.replace("</saml:Issuer>",
                              "</saml:Issuer>" + SIGNATURE_TEMPLATE.format(id=request_id), 1)
    template = slo.work / f"logout-template{request_id}.xml"
    template.write_text(signed_part)
    signed = subprocess.run(
        ["xmlsec1", "--sign", "--privkey-pem", f"{slo.idp.key_path},{slo.idp.cert_path}",
         "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:protocol:LogoutRequest", template],
        check=True, capture_output=True).stdout
    form = {"SAMLRequest": base64.b64encode(signed).decode(), "RelayState": "state-1"}
    return form, base64.b64encode(signed.replace(b">carol<", b">alice<")).decode()


def test_junk_is_charged_to_the_budget_but_a_signed_logout_never_is(bed):
    # A budget of 2: carol's login start takes one, a junk message the other. Past it, junk
    # gets 429, but a LogoutRequest the IdP signed still ends her session.
    b = make_bed(bed, "slo-budget", extra="limits:\n  login_starts_per_minute: 2\n")
    try:
        carol = new_client()
        login(carol, b.url, "carol", "carol-pass")
        cookie = cookie_header(carol)
        form, tampered = signed_post_form(b, "carol", "_budget1")
        answers = [new_client().post(b.url + "/saml/slo", data={**form, "SAMLRequest": tampered},
                                     allow_redirects=False).status_code for _ in range(2)]
        assert answers == [400, 429], answers
        r = new_client().post(b.url + "/saml/slo", data=form, allow_redirects=False)
        assert r.status_code == 303, r.text
        assert new_client().get(b.url + "/_stcore/health",
                                headers={"Cookie": cookie}).status_code == 401
    finally:
        b.stop()


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


def logout_request_xml(destination, issuer, name_id, request_id):
    """A LogoutRequest issued now, unsigned."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (f'<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
            f'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{request_id}" Version="2.0" '
            f'IssueInstant="{now}" Destination="{destination}">'
            f"<saml:Issuer>{issuer}</saml:Issuer>"
            f"<saml:NameID>{name_id}</saml:NameID></samlp:LogoutRequest>")


def forged_request(slo, name_id, request_id="_forged1"):
    return logout_request_xml(slo.slo_url, slo.idp.entity_id, name_id, request_id)


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
        # Nor is any logout message taken from the IdP.
        r = new_client().get(local.url + "/saml/slo?SAMLRequest=x", allow_redirects=False)
        assert r.status_code == 400 and "single_logout_off" in r.text
    finally:
        local.stop()
