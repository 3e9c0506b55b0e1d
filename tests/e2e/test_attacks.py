"""Attacks on a running gateway's /saml/acs, built from real responses that SimpleSAMLphp
signed for bob, a legitimate user who tries to become alice (group `analytics`).

The IdP signs both the Response and the Assertion, so bob holds a genuine signature he can move,
strip or wrap; each case below rewrites his response as an attacker would and checks that the
gateway refuses it with the expected reason, audits it, and creates no session. The same
classes are tested exhaustively against the library in crates/saml-sp/tests."""

import base64
import re

import pytest

from flows import login_until_acs, new_client, post_to_acs

SIGNATURE = re.compile(r"<ds:Signature\b.*?</ds:Signature>", re.S)
ASSERTION = re.compile(r"<saml:Assertion\b.*?</saml:Assertion>", re.S)


def decode(form):
    return base64.b64decode(form.fields["SAMLResponse"]).decode()


def encode(xml):
    return base64.b64encode(xml.encode()).decode()


def strip_response_signature(xml):
    """Removes the Response's own signature (the first one, before the Assertion)."""
    first = SIGNATURE.search(xml)
    assert first.start() < ASSERTION.search(xml).start(), "layout of the IdP's response changed"
    return xml[:first.start()] + xml[first.end():]


def evil_assertion(xml):
    """Bob's assertion made into alice's: new ID, no signature, alice's name and groups."""
    original = ASSERTION.search(xml).group(0)
    evil = SIGNATURE.sub("", original, count=1)
    evil = re.sub(r'ID="[^"]+"', 'ID="_evil0123456789"', evil, count=1)
    evil = evil.replace(">bob</saml:NameID>", ">alice</saml:NameID>")
    evil = evil.replace(">bob</saml:AttributeValue>", ">alice</saml:AttributeValue>")
    evil = evil.replace(">ops</saml:AttributeValue>", ">analytics</saml:AttributeValue>")
    assert evil.count("alice") >= 2, "layout of the IdP's assertion changed"
    return evil


def name_id_to_alice(xml):
    changed = xml.replace(">bob</saml:NameID>", ">alice</saml:NameID>")
    assert changed != xml
    return changed


def strip_all_signatures(xml):
    return SIGNATURE.sub("", xml)


def evil_before_signed(xml):
    """XSW: an unsigned evil Assertion placed before the signed one."""
    xml = strip_response_signature(xml)
    signed = ASSERTION.search(xml)
    return xml[:signed.start()] + evil_assertion(xml) + xml[signed.start():]


def signed_into_extensions(xml):
    """XSW: the signed Assertion hidden in Extensions, the evil one where it stood."""
    xml = strip_response_signature(xml)
    signed = ASSERTION.search(xml)
    evil = evil_assertion(xml)
    body = xml[:signed.start()] + evil + xml[signed.end():]
    extensions = f"<samlp:Extensions>{signed.group(0)}</samlp:Extensions>"
    return body.replace("<samlp:Status>", extensions + "<samlp:Status>", 1)


def signed_inside_evil_advice(xml):
    """XSW: the evil Assertion carries the signed one in its Advice."""
    xml = strip_response_signature(xml)
    signed = ASSERTION.search(xml)
    evil = evil_assertion(xml)
    advice = f"<saml:Advice>{signed.group(0)}</saml:Advice>"
    evil = evil.replace("<saml:AttributeStatement>", advice + "<saml:AttributeStatement>", 1)
    return xml[:signed.start()] + evil + xml[signed.end():]


def destination_edited_without_response_signature(xml):
    """Only the Assertion stays signed; the unsigned Response now names another ACS."""
    xml = strip_response_signature(xml)
    changed = re.sub(r'Destination="[^"]+"', 'Destination="https://evil.example/acs"', xml,
                     count=1)
    assert changed != xml
    return changed


def dtd_declares_id(xml):
    """The DTD-ID trick: a DOCTYPE that makes another attribute an ID for the verifier."""
    return ('<!DOCTYPE samlp:Response [<!ATTLIST saml:Assertion ID ID #IMPLIED>]>' + xml)


CASES = [
    (name_id_to_alice, 403, "signature_invalid"),
    (strip_all_signatures, 403, "signature_missing"),
    (evil_before_signed, 400, "multiple_assertions"),
    (signed_into_extensions, 400, "multiple_assertions"),
    (signed_inside_evil_advice, 400, "multiple_assertions"),
    (destination_edited_without_response_signature, 403, "destination_mismatch"),
    (dtd_declares_id, 400, "xml_doctype"),
]


def assert_refused(bed, client, response, status, reason, mark):
    assert response.status_code == status, response.text
    assert reason in response.text
    assert "alice" not in response.text
    [record] = bed.audit_since(mark)
    assert (record["event"], record["reason"]) == ("login_failure", reason)
    assert "saml-session" not in client.cookies
    assert client.get(bed.url + "/_stcore/health").status_code == 401
    assert bed.gateway_alive()


@pytest.mark.parametrize("attack,status,reason", CASES, ids=[c[0].__name__ for c in CASES])
def test_rewritten_response_is_refused(bed, attack, status, reason):
    client = new_client()
    form = login_until_acs(client, bed.url, "bob", "bob-pass")
    mark = bed.audit_mark()
    r = post_to_acs(client, form, SAMLResponse=encode(attack(decode(form))))
    assert_refused(bed, client, r, status, reason, mark)


def test_assertion_signed_only_is_accepted_as_control(bed):
    """The control for the cases above: without the Response signature, bob's untouched
    response is still valid (the Assertion's signature covers it), so the refusals above are
    caused by the attacks, not by the stripping."""
    client = new_client()
    form = login_until_acs(client, bed.url, "bob", "bob-pass")
    r = post_to_acs(client, form, SAMLResponse=encode(strip_response_signature(decode(form))))
    assert r.status_code == 303
    assert client.get(bed.url + "/_stcore/health").status_code == 200


def test_response_for_an_earlier_login_is_refused(bed):
    """A signed response answering one login, posted with another login's RelayState."""
    client = new_client()
    first = login_until_acs(client, bed.url, "bob", "bob-pass")
    second = login_until_acs(client, bed.url, "bob", "bob-pass")
    mark = bed.audit_mark()
    r = post_to_acs(client, second, SAMLResponse=first.fields["SAMLResponse"])
    assert_refused(bed, client, r, 403, "unknown_in_response_to", mark)
