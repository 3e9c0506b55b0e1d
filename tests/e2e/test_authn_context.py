"""`idp.authn_context` with the real IdP: the gateway asks for the sign-in methods it lists and
then checks the method the signed assertion names, since the AuthnRequest travels through the
browser (unsigned by default, so a user can drop the `RequestedAuthnContext`) and an IdP may
treat it as a hint.

SimpleSAMLphp's example IdP signs users in with a password form over plain HTTP and says so:
`urn:oasis:names:tc:SAML:2.0:ac:classes:Password`. It does not refuse a request for another
method; the gateway does.
"""

import base64
import re
import zlib
from urllib.parse import parse_qs, urlparse

import pytest

import testbed
from flows import cookie_header, login_until_acs, new_client, post_to_acs, run_app

PASSWORD = "urn:oasis:names:tc:SAML:2.0:ac:classes:Password"
X509 = "urn:oasis:names:tc:SAML:2.0:ac:classes:X509"


def serving(bed, name, contexts):
    """Yields an IdP and a gateway whose `idp.authn_context` is `contexts`, in their own
    folder `name`, stopped afterwards."""
    listed = "".join(f"    - {c}\n" for c in contexts)
    g = testbed.IdpAndGateway(testbed.fresh_work(bed.work, name), bed.streamlit.port,
                              bed.gateway.binary, f"  authn_context:\n{listed}")
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="module")
def wants_x509(bed):
    yield from serving(bed, "authn-context-x509", [X509])


@pytest.fixture(scope="module")
def wants_password(bed):
    yield from serving(bed, "authn-context-password", [X509, PASSWORD])


def requested_contexts(client, gateway_url):
    """The AuthnContextClassRefs of the AuthnRequest the gateway sends this browser to the IdP
    with (HTTP-Redirect binding)."""
    r = client.get(gateway_url + "/saml/login", allow_redirects=False)
    assert r.status_code in (302, 303), r.status_code
    [value] = parse_qs(urlparse(r.headers["Location"]).query)["SAMLRequest"]
    xml = zlib.decompress(base64.b64decode(value), -15).decode()
    return re.findall(r"<saml:AuthnContextClassRef>([^<]*)<", xml)


def test_a_method_other_than_the_listed_ones_is_refused_and_audited(wants_x509):
    client = new_client()
    assert requested_contexts(new_client(), wants_x509.url) == [X509]
    form = login_until_acs(client, wants_x509.url, "alice", "alice-pass")
    mark = wants_x509.audit_mark()
    r = post_to_acs(client, form)
    assert r.status_code == 403, r.text
    assert "authn_context_mismatch" in r.text
    assert "does not accept" in r.text
    assert "saml-session=" not in r.headers.get("Set-Cookie", "")
    [record] = [a for a in wants_x509.audit_since(mark) if a["event"] == "login_failure"]
    assert record["reason"] == "authn_context_mismatch"
    assert record["detail"] == f"authn context {PASSWORD}", record
    # No session: the app is still closed to this browser.
    r = client.get(wants_x509.url + "/_stcore/health", allow_redirects=False)
    assert r.status_code == 401


def test_a_listed_method_signs_in_and_is_audited(wants_password):
    client = new_client()
    assert requested_contexts(new_client(), wants_password.url) == [X509, PASSWORD]
    form = login_until_acs(client, wants_password.url, "alice", "alice-pass")
    mark = wants_password.audit_mark()
    r = post_to_acs(client, form)
    assert r.status_code == 303, r.text
    [record] = [a for a in wants_password.audit_since(mark) if a["event"] == "login_success"]
    assert record["user"] == "alice" and record["authn_context"] == PASSWORD, record
    page = run_app(wants_password.url, {"Cookie": cookie_header(client)})
    assert page.headers["x-auth-user"] == ["alice"]
