"""Encrypted assertions and signed AuthnRequests with the real IdP.

A second SimpleSAMLphp IdP is configured with the gateway's certificate: it requires signed
AuthnRequests (so it checks the gateway's HTTP-Redirect signature) and encrypts every assertion
to the gateway (SimpleSAMLphp 1.19 uses RSA-OAEP and AES-128-CBC, inside a signed Response).
Two gateways share that IdP: one allows AES-CBC, one does not."""

import subprocess

import pytest

import testbed
from conftest import ARTIFACTS
from flows import login, login_until_acs, new_client, post_to_acs, run_app, cookie_header


def _config(work, gw_port, st_port, allow_cbc):
    text = testbed.gateway_config(work, gw_port, st_port, sign_authn_requests=True)
    text = text.replace("  sign_authn_requests: true\n",
                        "  sign_authn_requests: true\n  encrypted_assertions: true\n")
    if allow_cbc:
        text = text.replace("idp:\n", "idp:\n  allow_cbc_encryption: true\n", 1)
    return text


@pytest.fixture(scope="module")
def encrypting(bed):
    """(gateway that allows CBC, gateway that does not, their audit logs' folder)."""
    work = ARTIFACTS / (bed.work.name + "-encryption")
    work.mkdir(parents=True, exist_ok=True)
    gateway_bin = bed.gateway.binary
    # One SP (entity ID, key) for both gateways: the key comes first, the IdP needs its cert.
    subprocess.run([gateway_bin, "keygen", "--key", work / "sp.key", "--cert", work / "sp.crt"],
                   check=True, capture_output=True)
    ports = [testbed.free_port(), testbed.free_port()]
    entity_id, acs, slo = testbed.gateway_urls(ports[0])
    idp = testbed.Idp(work, entity_id, acs, slo_url=slo,
                      sp_cert_pem=(work / "sp.crt").read_text(),
                      validate_authnrequest=True, encrypt_assertions=True).start()
    idp.save_metadata(work / "idp-metadata.xml")
    gateways = []
    try:
        for port, allow_cbc in zip(ports, (True, False)):
            sub = work / ("cbc-allowed" if allow_cbc else "cbc-refused")
            sub.mkdir(exist_ok=True)
            text = _config(work, ports[0], bed.streamlit.port, allow_cbc)
            # Both serve the first gateway's public URL and entity ID (the IdP knows one SP);
            # each has its own audit log.
            text = text.replace(f"listen: 127.0.0.1:{ports[0]}", f"listen: 127.0.0.1:{port}")
            text = text.replace(f"file: {work}/audit.jsonl", f"file: {sub}/audit.jsonl")
            gateways.append(testbed.Gateway(gateway_bin, text, sub).start())
        yield gateways[0], gateways[1], idp
    finally:
        for service in gateways + [idp]:
            service.stop()


def test_metadata_offers_the_encryption_key(encrypting):
    allowed, refused, _ = encrypting
    client = new_client()
    metadata = client.get(allowed.metadata_url).text
    assert 'use="encryption"' in metadata
    assert "xmlenc#aes128-cbc" in metadata
    assert "xmlenc#aes128-cbc" not in client.get(refused.metadata_url).text


def test_encrypted_assertion_from_the_idp_logs_in(encrypting):
    allowed, _, idp = encrypting
    client = new_client()
    form = login_until_acs(client, allowed.base_url, "alice", "alice-pass")
    import base64

    xml = base64.b64decode(form.fields["SAMLResponse"]).decode()
    # The IdP really encrypted: no claim is readable on the wire.
    assert "EncryptedAssertion" in xml and "alice@example.test" not in xml
    assert "xmlenc#aes128-cbc" in xml
    r = post_to_acs(client, form)
    assert r.status_code == 303, r.text
    page = run_app(allowed.base_url, {"Cookie": cookie_header(client)})
    assert page.headers["x-auth-email"] == ["alice@example.test"]
    assert page.headers["x-auth-groups"] == ["analytics,staff"]


def test_cbc_is_refused_when_not_allowed(encrypting):
    allowed, refused, _ = encrypting
    client = new_client()
    # Start at the refusing gateway; the IdP answers to the shared ACS URL, so post it there.
    form = login_until_acs(client, refused.base_url, "bob", "bob-pass")
    form.action = form.action.replace(str(allowed.port), str(refused.port))
    r = post_to_acs(client, form)
    assert r.status_code == 400
    assert "decryption_failed" in r.text


def test_signed_authn_requests_are_verified_by_the_idp(encrypting):
    allowed, _, idp = encrypting
    client = new_client()
    r = client.get(allowed.base_url + "/saml/login?return_to=/", allow_redirects=False)
    location = r.headers["Location"]
    assert "SigAlg=" in location and "Signature=" in location
    # Break the signature: the IdP (validate.authnrequest) must refuse the request.
    broken = location.replace("Signature=", "Signature=AAAA", 1)
    r = client.get(broken)
    assert "Unable to validate signature on query string" in r.text
    assert 'name="password"' not in r.text
    # And the untouched one is accepted: the IdP shows its login form.
    login(new_client(), allowed.base_url, "bob", "bob-pass")
