"""Messages to an IdP over HTTP-POST, with the real IdP: when the IdP's metadata offers no
HTTP-Redirect endpoint, AuthnRequests and LogoutRequests go as a form the browser posts, with
an enveloped XML signature.

A SimpleSAMLphp IdP of its own has the gateway's certificate and requires signed AuthnRequests
(`validate.authnrequest`) and signed logout messages (`validate.logout`). The metadata the
gateway is given is the IdP's own, with its HTTP-Redirect SingleSignOnService and
SingleLogoutService published as HTTP-POST ones: the same SimpleSAMLphp endpoints take both.
"""

import base64
import re
from urllib.parse import urljoin

import pytest

import testbed
from flows import NAVIGATE, cookie_header, forms, new_client, post_to_acs

REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"


class PostBed(testbed.OwnGateway):
    """An IdP whose metadata, as the gateway has it, offers HTTP-POST endpoints only."""

    def __init__(self, work, streamlit_port, gateway_bin):
        self.work = work
        port, self.entity_id, self.slo_url, self.idp = testbed.keyed_idp(
            work, gateway_bin, validate_authnrequest=True)
        metadata = self.idp.metadata_xml()
        # SimpleSAMLphp publishes HTTP-Redirect endpoints only; its endpoints take HTTP-POST too.
        post_only = metadata.replace(REDIRECT, POST)
        assert REDIRECT not in post_only and re.search(
            r'SingleSignOnService Binding="' + POST, post_only), post_only
        (work / "idp-metadata.xml").write_text(post_only)
        text = testbed.gateway_config(work, port, streamlit_port, sign_authn_requests=True)
        self.gateway = testbed.Gateway(gateway_bin, text, work).start()

    def stop(self):
        self.gateway.stop()
        self.idp.stop()


@pytest.fixture(scope="module")
def post(bed):
    b = PostBed(testbed.fresh_work(bed.work, "post-binding"), bed.streamlit.port,
                bed.gateway.binary)
    try:
        yield b
    finally:
        b.stop()


def form_to_idp(response, idp_url):
    """The auto-posting form of a gateway page that sends a message to the IdP."""
    assert response.status_code == 200, f"HTTP {response.status_code}: {response.text[:500]}"
    csp = response.headers.get("Content-Security-Policy", "")
    assert "script-src 'sha256-" in csp and "unsafe-inline" not in csp.split("script-src")[1], csp
    found = [f for f in forms(response) if f.action == idp_url]
    assert len(found) == 1, response.text[:1500]
    return found[0]


def decoded(form, param):
    return base64.b64decode(form.fields[param]).decode()


def signed_in(post, client):
    """Logs in through the POST-binding AuthnRequest; returns the AuthnRequest's XML."""
    r = client.get(post.url + "/", headers=NAVIGATE, allow_redirects=False)
    assert r.status_code == 303, r.text[:300]
    r = client.get(urljoin(post.url, r.headers["Location"]), allow_redirects=False)
    form = form_to_idp(r, post.idp.sso_url)
    request = decoded(form, "SAMLRequest")
    r = client.post(form.action, data=form.fields)
    credentials = [f for f in forms(r) if "password" in f.fields]
    assert r.status_code == 200 and credentials, f"HTTP {r.status_code}: {r.text[:800]}"
    r = client.post(credentials[0].action,
                    data={**credentials[0].fields, "username": "alice", "password": "alice-pass"})
    to_acs = [f for f in forms(r) if "SAMLResponse" in f.fields]
    assert to_acs, f"HTTP {r.status_code}: {r.text[:800]}"
    r = post_to_acs(client, to_acs[0])
    assert r.status_code == 303 and r.headers["Location"] == "/", r.text[:500]
    return request


def alive(post, client):
    return new_client().get(post.url + "/_stcore/health",
                            headers={"Cookie": cookie_header(client)}).status_code == 200


def test_a_signed_post_authn_request_is_accepted_by_the_idp(post):
    client = new_client()
    request = signed_in(post, client)
    assert request.startswith("<?xml") or request.startswith("<samlp:AuthnRequest"), request[:200]
    assert "<ds:Signature" in request and "rsa-sha256" in request, request
    assert f'Destination="{post.idp.sso_url}"' in request, request
    assert alive(post, client)


def test_the_idp_refuses_a_changed_post_authn_request(post):
    client = new_client()
    r = client.get(post.url + "/saml/login?return_to=%2F", allow_redirects=False)
    form = form_to_idp(r, post.idp.sso_url)
    request = decoded(form, "SAMLRequest")
    changed = request.replace('AllowCreate="true"', 'AllowCreate="false"')
    assert changed != request
    fields = {**form.fields, "SAMLRequest": base64.b64encode(changed.encode()).decode()}
    r = client.post(form.action, data=fields)
    assert not [f for f in forms(r) if "password" in f.fields or "SAMLResponse" in f.fields], (
        f"the IdP took a changed request: HTTP {r.status_code}: {r.text[:500]}")
    log = post.idp.php_log_path.read_text(errors="replace") if post.idp.php_log_path.exists() else ""
    assert r.status_code >= 400 or "signature" in (r.text + log).lower(), r.text[:800]


def test_sign_out_sends_a_signed_post_logout_request(post):
    client = new_client()
    signed_in(post, client)
    page = client.get(post.url + "/saml/logout")
    [logout] = [f for f in forms(page) if "csrf" in f.fields]
    mark = post.audit_mark()
    r = client.post(urljoin(post.url, logout.action), data=logout.fields, allow_redirects=False)
    form = form_to_idp(r, post.idp.slo_url)
    request = decoded(form, "SAMLRequest")
    assert "<samlp:LogoutRequest" in request and "<ds:Signature" in request, request
    assert ">alice<" in request and form.fields.get("RelayState"), form.fields
    assert not alive(post, client), "the local session ends first"
    # The IdP verifies the signature, ends its session and answers (signed) at /saml/slo.
    r = client.post(form.action, data=form.fields, allow_redirects=False)
    for _ in range(10):
        if r.status_code not in (301, 302, 303):
            break
        r = client.get(urljoin(r.url, r.headers["Location"]), allow_redirects=False)
    assert r.status_code == 200 and "signed out" in r.text.lower(), f"HTTP {r.status_code} at {r.url}: {r.text[:500]}"
    answers = [a for a in post.audit_since(mark) if a["event"] == "slo"]
    assert [a.get("reason") for a in answers] == ["idp_logout_response"], post.audit_since(mark)
    # Signed out at the IdP too: a new login asks for the password again.
    r = client.get(post.url + "/saml/login?return_to=%2F", allow_redirects=False)
    form = form_to_idp(r, post.idp.sso_url)
    r = client.post(form.action, data=form.fields)
    assert [f for f in forms(r) if "password" in f.fields], r.text[:500]


def test_the_answer_to_an_idp_logout_request_is_a_signed_post(post):
    client = new_client()
    signed_in(post, client)
    mark = post.audit_mark()
    # Sign-out started at the IdP: it sends its LogoutRequest (HTTP-Redirect) to /saml/slo.
    url = f"{post.idp.base_url}/saml2/idp/SingleLogoutService.php?ReturnTo={post.idp.entity_id}"
    r = client.get(url, allow_redirects=False)
    for _ in range(10):
        if r.status_code not in (301, 302, 303):
            break
        r = client.get(urljoin(r.url, r.headers["Location"]), allow_redirects=False)
    assert r.url.startswith(post.url + "/saml/slo?"), r.url
    form = form_to_idp(r, post.idp.slo_url)
    answer = decoded(form, "SAMLResponse")
    assert "<samlp:LogoutResponse" in answer and "<ds:Signature" in answer, answer
    assert "status:Success" in answer, answer
    assert not alive(post, client)
    assert [a.get("reason") for a in post.audit_since(mark) if a["event"] == "slo"] == [
        "idp_logout_request"], post.audit_since(mark)
    # Changed after signing (an attribute only the signature covers), the IdP refuses it
    # (validate.logout): an error page, not the redirect to ReturnTo...
    changed = answer.replace("<samlp:LogoutResponse ",
                             '<samlp:LogoutResponse Consent="urn:oasis:names:tc:SAML:2.0:consent:unspecified" ', 1)
    assert changed != answer
    r = client.post(form.action, allow_redirects=False, data={
        **form.fields, "SAMLResponse": base64.b64encode(changed.encode()).decode()})
    assert r.status_code >= 400 or r.headers.get("Location") != post.idp.entity_id, (
        f"the IdP took a changed LogoutResponse: HTTP {r.status_code} {r.headers}")
    # ...and takes the signed one, finishing its sign-out at the ReturnTo URL.
    r = client.post(form.action, data=form.fields, allow_redirects=False)
    for _ in range(10):
        if r.status_code not in (301, 302, 303):
            break
        r = client.get(urljoin(r.url, r.headers["Location"]), allow_redirects=False)
    assert r.status_code == 200 and r.url == post.idp.entity_id, f"HTTP {r.status_code} at {r.url}: {r.text[:500]}"
