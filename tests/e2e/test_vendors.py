"""Responses shaped like Entra ID's, AD FS's, Okta's, Google Workspace's, Auth0's and
Keycloak's, signed by xmlsec1 (the XML Security Library's own tool, not the gateway's code),
posted to a running gateway configured with that vendor's `idp.preset`; the identity that
reaches the Streamlit app is checked. The shapes and where they come from: tests/vendors/.

Each vendor gets its own gateway, IdP key and IdP metadata (the vendor's entity ID, an
HTTP-Redirect SSO URL that is never contacted). A login starts at the gateway as a browser's
would (`/saml/login`, which records the AuthnRequest ID and sets the relay cookie); the
Response answers that request.
"""

import base64
import re
import shutil
import subprocess
import sys
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

import testbed
from conftest import ARTIFACTS
from flows import cookie_header, new_client, run_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vendors"))
import shapes  # noqa: E402

ENTITY_IDS = {
    "entra": "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/",
    "adfs": "http://adfs.example.com/adfs/services/trust",
    "okta": "http://www.okta.com/exk1fcia6d6EMsf331d8",
    "google": "https://accounts.google.com/o/saml2?idpid=C01abcdef",
    "auth0": "urn:example-tenant.auth0.com",
    "keycloak": "https://sso.example.com/realms/staff",
}
ENTRA_GROUP = "9a3e52a4-2f6c-4bde-9a5b-3f0c1d2e4b55"
METADATA = """<?xml version="1.0" encoding="utf-8"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{entity_id}"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.invalid/{vendor}/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>
"""
# Extra idp lines per vendor's gateway.
EXTRA_IDP = {
    "auth0": "  user_from: http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress\n",
    # Okta encrypts with AES-256-CBC (inside its signed Response).
    "okta": "  allow_cbc_encryption: true\n",
}
# The EncryptedData template xmlsec1 fills: AES-256-CBC content, RSA-OAEP (MGF1, SHA-1) key.
ENCRYPTION_TEMPLATE = (
    '<xenc:EncryptedData xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" '
    'Type="http://www.w3.org/2001/04/xmlenc#Element">'
    '<xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes256-cbc"/>'
    '<ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><xenc:EncryptedKey Id="_ek1" '
    'xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" xmlns:ds="http://www.w3.org/2000/09/xmldsig#">'
    '<xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p">'
    '<ds:DigestMethod Algorithm="http://www.w3.org/2000/09/xmldsig#sha1"/>'
    '</xenc:EncryptionMethod><xenc:CipherData><xenc:CipherValue/></xenc:CipherData>'
    '</xenc:EncryptedKey></ds:KeyInfo><xenc:CipherData><xenc:CipherValue/></xenc:CipherData>'
    '</xenc:EncryptedData>')


def stamp(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class Vendor:
    """A gateway trusting one vendor-shaped IdP whose key signs here."""

    def __init__(self, vendor, work, gateway_bin, streamlit_port):
        self.vendor = vendor
        self.work = work
        self.key, self.cert = work / "idp.key", work / "idp.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
                        "-days", "30", "-subj", f"/CN={vendor} signing", "-keyout", self.key,
                        "-out", self.cert], check=True, capture_output=True)
        body = "".join(l for l in self.cert.read_text().splitlines() if "-----" not in l)
        (work / "idp-metadata.xml").write_text(
            METADATA.format(entity_id=ENTITY_IDS[vendor], cert=body, vendor=vendor))
        port = testbed.free_port()
        routes = None
        if vendor == "entra":
            routes = (f"  - path: /\n    upstream: http://127.0.0.1:{streamlit_port}\n"
                      f"    allow_groups: ['{ENTRA_GROUP}']\n")
        text = testbed.gateway_config(work, port, streamlit_port, routes=routes)
        if vendor == "okta":
            text = text.replace("  sign_authn_requests: false\n",
                                "  sign_authn_requests: false\n  encrypted_assertions: true\n")
        # The vendor's preset instead of the test bed's attribute Names.
        text = text.replace("  attributes:\n    email: mail\n    display_name: displayName\n"
                            "    groups: groups\n",
                            f"  preset: {vendor}\n{EXTRA_IDP.get(vendor, '')}")
        assert f"preset: {vendor}" in text
        text = text.replace("groups: X-Auth-Groups,",
                            "groups: X-Auth-Groups, given_name: X-Auth-Given-Name, "
                            "surname: X-Auth-Surname,", 1)
        assert "X-Auth-Surname" in text
        if vendor == "entra":
            text += f"debug:\n  trace_logins: {work}/trace.jsonl\n"
        self.gateway = testbed.Gateway(gateway_bin, text, work).start()
        self.url = self.gateway.base_url
        self.entity_id = testbed.gateway_urls(port)[0]

    def start_login(self):
        """(client, AuthnRequest ID, RelayState) of a login started at the gateway."""
        client = new_client()
        r = client.get(self.url + "/saml/login?return_to=/", allow_redirects=False)
        assert r.status_code == 303, r.text
        query = parse_qs(urlsplit(r.headers["Location"]).query)
        request = zlib.decompress(base64.b64decode(query["SAMLRequest"][0]), -15).decode()
        assert "RequestedAuthnContext" not in request and "Format=" not in request, request
        request_id = request.split(' ID="', 1)[1].split('"', 1)[0]
        return client, request_id, query["RelayState"][0]

    def response(self, request_id, sign=True, encrypt=False, **overrides):
        now = datetime.now(timezone.utc).replace(microsecond=0)
        fields = {
            "now": stamp(now), "not_before": stamp(now), "minus5": stamp(now - timedelta(minutes=5)),
            "plus5": stamp(now + timedelta(minutes=5)), "plus60": stamp(now + timedelta(minutes=60)),
            "plus70": stamp(now + timedelta(minutes=70)), "irt": request_id,
            "acs": self.url + "/saml/acs", "audience": self.entity_id,
            "issuer": ENTITY_IDS[self.vendor], "name_id": "alex@example.com",
            "email": "alex@example.com", "display_name": "Alex Example",
        }
        fields.update(overrides)
        rid = "a" + base64.b32encode(request_id.encode()[-10:]).decode().rstrip("=").lower()
        aid = rid + "x"
        xml = shapes.render(self.vendor, rid, aid, **fields)
        if not sign:
            # No signature at all, as an IdP sends when signing is switched off.
            return re.sub(r"<ds:Signature .*?</ds:Signature>", "", xml).encode()
        return self.sign(xml, encrypt)

    def sign(self, xml, encrypt=False):
        """Completes each Signature template with xmlsec1, the Assertion's first; with
        `encrypt`, encrypts the signed Assertion to the gateway's certificate (xmlsec1 again)
        and lays the result out as Okta does, before the Response is signed."""
        path = self.work / "response.xml"
        path.write_text(xml)
        xpaths = {
            "assertion": "//*[local-name()='Assertion']/*[local-name()='Signature']",
            "response": "/*/*[local-name()='Signature']",
        }
        for element in shapes.SIGNED[self.vendor]:
            if element == "response" and encrypt:
                self.encrypt_assertion(path)
            out = subprocess.run(
                ["xmlsec1", "--sign", "--privkey-pem", f"{self.key},{self.cert}",
                 "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:protocol:Response",
                 "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
                 "--node-xpath", xpaths[element], path],
                capture_output=True)
            assert out.returncode == 0, out.stderr.decode()
            path.write_bytes(out.stdout)
        return path.read_bytes()

    def encrypt_assertion(self, path):
        """Replaces the Assertion in `path` with an EncryptedAssertion: EncryptedData and,
        beside it, the EncryptedKey it points to with a RetrievalMethod (Okta's layout)."""
        template = self.work / "encryption-template.xml"
        template.write_text(ENCRYPTION_TEMPLATE)
        out = subprocess.run(
            ["xmlsec1", "--encrypt", "--pubkey-cert-pem", self.work / "sp.crt",
             "--session-key", "aes-256", "--xml-data", path,
             "--node-xpath", "//*[local-name()='Assertion']", template],
            capture_output=True)
        assert out.returncode == 0, out.stderr.decode()
        text = out.stdout.decode()
        key = re.search(r"<xenc:EncryptedKey.*?</xenc:EncryptedKey>", text, re.S).group(0)
        text = text.replace(key, '<ds:RetrievalMethod Type="http://www.w3.org/2001/04/xmlenc#'
                                 'EncryptedKey" URI="#_ek1"/>', 1)
        data = re.search(r"<xenc:EncryptedData.*?</xenc:EncryptedData>", text, re.S).group(0)
        text = text.replace(data, '<saml2:EncryptedAssertion xmlns:saml2="urn:oasis:names:tc:'
                                  f'SAML:2.0:assertion">{data}{key}</saml2:EncryptedAssertion>', 1)
        path.write_text(text)

    def post(self, client, relay_state, response):
        return client.post(self.url + "/saml/acs", allow_redirects=False,
                           data={"SAMLResponse": base64.b64encode(response).decode(),
                                 "RelayState": relay_state})

    def login(self, **overrides):
        client, request_id, relay = self.start_login()
        r = self.post(client, relay, self.response(request_id, **overrides))
        return client, r


@pytest.fixture(scope="module")
def vendors(bed):
    started = {}

    def get(vendor):
        if vendor not in started:
            work = ARTIFACTS / (bed.work.name + f"-vendor-{vendor}")
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            started[vendor] = Vendor(vendor, work, bed.gateway.binary, bed.streamlit.port)
        return started[vendor]

    try:
        yield get
    finally:
        for v in started.values():
            v.gateway.stop()


def identity(v, client):
    page = run_app(v.url, {"Cookie": cookie_header(client)})
    return {k: unquote(page.headers[k][0]) for k in
            ("x-auth-user", "x-auth-email", "x-auth-name", "x-auth-groups", "x-auth-given-name",
             "x-auth-surname") if k in page.headers}


EXPECTED = {
    "entra": ({"name_id": "alex.wilber@contoso.com", "email": "alex.wilber@contoso.com",
               "display_name": "Alex Wilber"},
              {"x-auth-user": "alex.wilber@contoso.com", "x-auth-email": "alex.wilber@contoso.com",
               "x-auth-name": "Alex Wilber",
               "x-auth-groups": f"{ENTRA_GROUP},c0ffee00-1111-4222-8333-444455556666",
               "x-auth-given-name": "Alex", "x-auth-surname": "Wilber"}),
    "adfs": ({"display_name": "Alex Wilber"},
             {"x-auth-user": "alex@example.com", "x-auth-email": "alex@example.com",
              "x-auth-name": "Alex Wilber", "x-auth-groups": "Domain Users,Sales Analysts",
              "x-auth-given-name": "Alex", "x-auth-surname": "Wilber"}),
    "okta": ({},
             {"x-auth-user": "alex@example.com", "x-auth-email": "alex@example.com",
              "x-auth-name": "Alex Example", "x-auth-groups": "Everyone,dashboards-sales",
              "x-auth-given-name": "Alex", "x-auth-surname": "Example"}),
    # The NameID is the email; no display name is mapped; an empty attribute is ignored.
    "google": ({},
               {"x-auth-user": "alex@example.com", "x-auth-email": "alex@example.com",
                "x-auth-groups": "dashboards@example.com",
                "x-auth-given-name": "Alex", "x-auth-surname": "Example"}),
    # NameID auth0|...; the gateway keys users on the email claim (idp.user_from).
    "auth0": ({"name_id": "auth0|5f7c8ec7c33c6c004bbafe82"},
              {"x-auth-user": "alex@example.com", "x-auth-email": "alex@example.com",
               "x-auth-name": "Alex Example", "x-auth-groups": "analytics",
               "x-auth-given-name": "Alex", "x-auth-surname": "Example"}),
    # Repeated Role attributes merge; the empty one is dropped.
    "keycloak": ({"name_id": "alex"},
                 {"x-auth-user": "alex", "x-auth-email": "alex@example.com",
                  "x-auth-groups": "dashboard-viewer,offline_access",
                  "x-auth-given-name": "Alex", "x-auth-surname": "Example"}),
}


@pytest.mark.parametrize("vendor", list(EXPECTED))
def test_a_vendor_shaped_response_signs_in_with_the_preset(vendors, vendor):
    v = vendors(vendor)
    overrides, expected = EXPECTED[vendor]
    client, r = v.login(**overrides)
    assert r.status_code == 303 and r.headers["Location"] == "/", r.text
    assert identity(v, client) == expected


def test_an_okta_encrypted_assertion_signs_in(vendors):
    """Okta's encrypted form: the signed Assertion encrypted (AES-256-CBC, RSA-OAEP) to the
    gateway's certificate, the EncryptedKey beside the EncryptedData, the Response signed."""
    v = vendors("okta")
    client, request_id, relay = v.start_login()
    response = v.response(request_id, encrypt=True)
    assert b"<saml2:EncryptedAssertion" in response and b"alex@example.com" not in response
    assert b"RetrievalMethod" in response
    r = v.post(client, relay, response)
    assert r.status_code == 303, r.text
    assert identity(v, client) == EXPECTED["okta"][1]


def test_entra_guests_get_the_email_claim(vendors):
    v = vendors("entra")
    guest = "alex_fabrikam.com#EXT#@contoso.onmicrosoft.com"
    client, r = v.login(name_id=guest, email="alex@fabrikam.com")
    assert r.status_code == 303, r.text
    seen = identity(v, client)
    assert seen["x-auth-user"] == guest and seen["x-auth-email"] == "alex@fabrikam.com"


@pytest.mark.parametrize("case, reason", [
    ("groups_link", "groups_overage"),
    ("groups_left_out", "groups_overage"),
    ("unsigned", "signature_missing"),
    ("wrong_audience", "audience_mismatch"),
    ("not_yet_valid", "assertion_not_yet_valid"),
    ("expired", "assertion_expired"),
])
def test_entra_failures_say_why(vendors, case, reason):
    v = vendors("entra")
    now = datetime.now(timezone.utc)
    overrides = {
        "groups_link": {"groups": shapes.ENTRA_GROUPS_LINK},
        "groups_left_out": {"groups": ""},
        "unsigned": {"sign": False},
        "wrong_audience": {"audience": "https://other.example/saml/metadata"},
        "not_yet_valid": {"not_before": stamp(now + timedelta(minutes=10))},
        "expired": {"plus70": stamp(now - timedelta(minutes=10))},
    }[case]
    mark = AuditOf(v).mark()
    client, r = v.login(**overrides)
    assert r.status_code in (400, 403) and reason in r.text, r.text
    [record] = [a for a in AuditOf(v).since(mark) if a["event"] == "login_failure"]
    assert record["reason"] == reason
    if reason == "groups_overage":
        assert "assigned to this application" in r.text


class AuditOf(testbed.AuditReader):
    def __init__(self, v):
        self.audit_path = v.work / "audit.jsonl"

    def mark(self):
        return self.audit_mark()

    def since(self, mark):
        return self.audit_since(mark)


def test_the_login_trace_explains_a_passing_and_a_failing_login(vendors):
    import json
    v = vendors("entra")
    trace = v.work / "trace.jsonl"
    start = trace.stat().st_size if trace.exists() else 0
    client, ok = v.login(name_id="alex.wilber@contoso.com")
    assert ok.status_code == 303
    _, refused = v.login(audience="https://other.example/saml/metadata")
    assert refused.status_code == 403
    with open(trace, "rb") as f:
        f.seek(start)
        lines = [json.loads(l) for l in f.read().splitlines()]
    assert [l["event"] for l in lines] == ["authn_request", "response"] * 2, lines
    request, passed, _, failed = lines
    assert "<samlp:AuthnRequest" in request["xml"] and request["request_id"] == passed["request_id"]
    assert (passed["verdict"], passed["user"]) == ("accepted", "alex.wilber@contoso.com")
    assert (failed["verdict"], failed["reason"]) == ("refused", "audience_mismatch")
    # The reference on the error page is the trace's and the audit record's.
    assert failed["reference"] in refused.text
    checks = failed["checks"]
    assert checks["audience"] == {"expected": v.entity_id,
                                  "received": "https://other.example/saml/metadata", "ok": False}
    assert checks["issuer"]["ok"] and checks["destination"]["ok"] and checks["in_response_to"]["ok"]
    assert abs(checks["clock"]["age_seconds"]) < 30
    [signature] = checks["signatures"]
    assert signature["on"] == "Assertion" and signature["key_info_certificate_trusted"] is True
    assert signature["key_info_certificate"] in checks["trusted_certificates"]
    # Signature values, certificates and attribute values are not in the file.
    for line in (passed, failed):
        assert "<ds:SignatureValue>[redacted]</ds:SignatureValue>" in line["xml"]
        assert "<ds:X509Certificate>[certificate]</ds:X509Certificate>" in line["xml"]
        assert "Alex Wilber" not in line["xml"] and "[value]" in line["xml"]
    assert oct(trace.stat().st_mode & 0o777) == "0o600"
