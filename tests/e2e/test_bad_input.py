"""Hostile or broken input at the ACS and login endpoints: each gets a 4xx page that names the
failed check without echoing the input, an audit record with the same reason, and the gateway
keeps running. The pending login is a real one (started at the gateway, answered by the IdP),
so every refusal below happens where a real attacker's message would arrive."""

import base64
from urllib.parse import quote

import pytest

from flows import login_until_acs, new_client, post_to_acs

MARKER = "<script>alert(1)</script>"


def _b64(text):
    return base64.b64encode(text.encode()).decode()


CASES = [
    # (id, SAMLResponse value, status, reason)
    ("malformed_base64", "%%%not base64" + MARKER, 400, "base64_invalid"),
    ("text_not_xml", _b64("just some text " + MARKER), 400, "xml_root"),
    ("broken_xml", _b64("<Response><a>" + MARKER + "</b></Response>"), 400, "xml_malformed"),
    ("doctype", _b64('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x "y">]><r>&x;</r>'),
     400, "xml_doctype"),
    ("not_a_response", _b64('<x:Foo xmlns:x="urn:example">' + "a" * 10 + "</x:Foo>"),
     400, "not_a_response"),
    ("over_limit", "A" * (300 * 1024), 413, "message_too_large"),
]


@pytest.mark.parametrize("value,status,reason", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_refused_saml_response(bed, value, status, reason):
    client = new_client()
    form = login_until_acs(client, bed.url, "alice", "alice-pass")
    mark = bed.audit_mark()
    r = post_to_acs(client, form, SAMLResponse=value)
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("text/html")
    assert reason in r.text
    assert MARKER not in r.text and "alert(1)" not in r.text
    [record] = bed.audit_since(mark)
    assert (record["event"], record["reason"]) == ("login_failure", reason)
    assert record["ref"] in r.text
    assert "saml-session" not in client.cookies
    assert bed.gateway_alive()


def _acs(client, bed, body, cookie=None):
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if cookie:
        client.cookies.set("saml-relay", cookie)
    return client.post(bed.url + "/saml/acs", data=body, headers=headers,
                       allow_redirects=False)


@pytest.mark.parametrize("body,cookie,reason", [
    (f"SAMLResponse={_b64('<x/>')}", None, "relay_state_missing"),
    ("RelayState=abc", "abc", "saml_response_missing"),
    (f"SAMLResponse={_b64('<x/>')}&RelayState=abc", None, "relay_state_not_bound"),
    (f"SAMLResponse={_b64('<x/>')}&RelayState={'Q' * 43}", "Q" * 43, "relay_state_unknown"),
    (f"SAMLResponse=a&SAMLResponse=b&RelayState=abc", "abc", "duplicate_parameter"),
    (f"SAMLResponse={_b64('<x/>')}&RelayState={quote(MARKER)}", MARKER,
     "relay_state_unknown"),
], ids=["no_relay_state", "no_saml_response", "relay_cookie_missing", "unknown_relay_state",
        "duplicate_field", "html_in_relay_state"])
def test_refused_acs_form(bed, body, cookie, reason):
    client = new_client()
    mark = bed.audit_mark()
    r = _acs(client, bed, body, cookie)
    assert r.status_code == 400, r.text
    assert reason in r.text
    assert MARKER not in r.text
    [record] = bed.audit_since(mark)
    assert (record["event"], record["reason"]) == ("login_failure", reason)
    assert bed.gateway_alive()


def test_non_form_body_is_refused(bed):
    client = new_client()
    mark = bed.audit_mark()
    r = client.post(bed.url + "/saml/acs", data=b"\xff\xfe\x00binary",
                    headers={"Content-Type": "application/octet-stream"},
                    allow_redirects=False)
    assert 400 <= r.status_code < 500
    [record] = bed.audit_since(mark)
    assert record["event"] == "login_failure"
    assert bed.gateway_alive()


@pytest.mark.parametrize("return_to", ["https://evil.example/", "//evil.example/x",
                                       "/\\evil.example", "javascript:alert(1)"])
def test_return_to_outside_the_site_lands_on_root(bed, return_to):
    client = new_client()
    form = login_until_acs(client, bed.url, "alice", "alice-pass",
                           login_url=f"{bed.url}/saml/login?return_to={quote(return_to)}")
    r = post_to_acs(client, form)
    assert r.status_code == 303
    assert r.headers["Location"] == "/"


def test_trickled_acs_body_times_out_and_is_audited(bed):
    import socket

    mark = bed.audit_mark()
    with socket.create_connection(("127.0.0.1", bed.gateway.port), timeout=30) as s:
        s.sendall(b"POST /saml/acs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/x-www-form-urlencoded\r\n"
                  b"Content-Length: 1000\r\n\r\nSAMLResponse=")
        answer = s.recv(4096).decode(errors="replace")  # waits for the gateway's 15 s limit
    assert answer.startswith("HTTP/1.1 408"), answer[:200]
    [record] = bed.audit_since(mark)
    assert (record["event"], record["reason"]) == ("login_failure", "request_timeout")
