"""The whole login path with real parts: SimpleSAMLphp signs, the gateway verifies, Streamlit
shows what arrived. Scripted HTTP clients here; the browser test is in test_browser.py."""

import re
import time
from datetime import datetime

import pytest

from flows import (NAVIGATE, cookie_header, login, login_until_acs, new_client, post_to_acs,
                   run_app)


def session_cookie(client):
    return client.cookies.get("saml-session")


def test_scripted_login_reaches_streamlit_with_identity_headers(bed):
    client = new_client()
    mark = bed.audit_mark()
    login(client, bed.url, "alice", "alice-pass")

    # The HTML page of the app is served through the gateway.
    r = client.get(bed.url + "/", headers=NAVIGATE, allow_redirects=False)
    assert r.status_code == 200
    assert "<noscript>" in r.text or "streamlit" in r.text.lower()

    page = run_app(bed.url, {"Cookie": cookie_header(client)})
    assert page.headers["x-auth-user"] == ["alice"]
    assert page.headers["x-auth-email"] == ["alice@example.test"]
    assert page.headers["x-auth-name"] == ["Alice Analyst"]
    assert page.headers["x-auth-groups"] == ["analytics,staff"]
    assert "Signed in as Alice Analyst" in page.texts

    records = bed.audit_since(mark)
    events = [(r["event"], r.get("user")) for r in records]
    assert events == [("login_start", None), ("login_success", "alice")]
    # When SimpleSAMLphp signed alice in, as its assertion said, in seconds since 1970.
    signed_in = datetime.fromisoformat(records[1]["authn_instant"].replace("Z", "+00:00"))
    assert page.headers["x-auth-time"] == [str(int(signed_in.timestamp()))]
    assert abs(signed_in.timestamp() - time.time()) < 60
    # And how: the assertion's AuthnContextClassRef.
    assert records[1]["authn_context"].startswith("urn:oasis:names:tc:SAML:2.0:ac:classes:")
    assert page.headers["x-auth-context"] == [records[1]["authn_context"]]


def test_second_user_gets_own_identity(bed):
    client = new_client()
    login(client, bed.url, "bob", "bob-pass")
    page = run_app(bed.url, {"Cookie": cookie_header(client)})
    assert page.headers["x-auth-user"] == ["bob"]
    assert page.headers["x-auth-groups"] == ["ops"]


def test_login_returns_to_the_page_first_asked_for(bed):
    client = new_client()
    login(client, bed.url, "alice", "alice-pass", path="/some/page?tab=2")


def test_trusted_user_headers_fill_st_user(bed):
    if bed.streamlit.options.get("trustedUserHeaders") is None:
        pytest.skip("this Streamlit has no server.trustedUserHeaders")
    client = new_client()
    login(client, bed.url, "alice", "alice-pass")
    page = run_app(bed.url, {"Cookie": cookie_header(client)})
    assert "st.user" in page.texts


def test_without_session_socket_and_xhr_get_401_and_pages_redirect(bed):
    client = new_client()
    r = client.get(bed.url + "/_stcore/health", allow_redirects=False)
    assert r.status_code == 401
    r = client.get(bed.url + "/_stcore/host-config", allow_redirects=False)
    assert r.status_code == 401
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
               "Sec-WebSocket-Protocol": "streamlit"}
    r = client.get(bed.url + "/_stcore/stream", headers=upgrade, allow_redirects=False)
    assert r.status_code == 401
    r = client.get(bed.url + "/", headers=NAVIGATE, allow_redirects=False)
    assert r.status_code == 303
    assert r.headers["Location"] == "/saml/login?return_to=%2F"
    # A forged or unknown session cookie is no session.
    client.cookies.set("saml-session", "A" * 43)
    r = client.get(bed.url + "/_stcore/health", allow_redirects=False)
    assert r.status_code == 401


def test_with_session_streamlit_endpoints_pass(bed):
    client = new_client()
    login(client, bed.url, "alice", "alice-pass")
    r = client.get(bed.url + "/_stcore/health")
    assert (r.status_code, r.text) == (200, "ok")
    r = client.get(bed.url + "/_stcore/host-config")
    assert r.status_code == 200 and "allowedOrigins" in r.json()


def _flip_attribute_value(saml_response_b64):
    import base64

    xml = base64.b64decode(saml_response_b64).decode()
    changed = xml.replace("alice@example.test", "mallory@example.test")
    assert changed != xml, "the test IdP's response no longer carries alice's mail attribute"
    return base64.b64encode(changed.encode()).decode()


def test_attribute_changed_after_signing_is_refused_and_audited(bed):
    client = new_client()
    form = login_until_acs(client, bed.url, "alice", "alice-pass")
    mark = bed.audit_mark()
    r = post_to_acs(client, form, SAMLResponse=_flip_attribute_value(form.fields["SAMLResponse"]))
    assert r.status_code == 403
    assert "signature_invalid" in r.text
    assert "mallory" not in r.text
    assert session_cookie(client) is None
    [record] = bed.audit_since(mark)
    assert record["event"] == "login_failure"
    assert record["reason"] == "signature_invalid"
    assert record["ref"] in r.text
    # The session was not made: the app is still closed to this client.
    assert client.get(bed.url + "/_stcore/health").status_code == 401


def test_replayed_response_is_refused(bed):
    client = new_client()
    form = login_until_acs(client, bed.url, "alice", "alice-pass")
    assert post_to_acs(client, form).status_code == 303
    mark = bed.audit_mark()
    # The same POST again, with the relay cookie put back as an attacker would.
    client.cookies.set("saml-relay", form.fields["RelayState"])
    r = post_to_acs(client, form)
    assert r.status_code == 400
    [record] = bed.audit_since(mark)
    assert (record["event"], record["reason"]) == ("login_failure", "relay_state_unknown")


def test_response_for_another_browser_is_refused(bed):
    victim, attacker = new_client(), new_client()
    form = login_until_acs(victim, bed.url, "alice", "alice-pass")
    mark = bed.audit_mark()
    r = post_to_acs(attacker, form)  # no relay cookie in the attacker's browser
    assert r.status_code == 400
    [record] = bed.audit_since(mark)
    assert record["reason"] == "relay_state_not_bound"
    # The victim's own login still works: the refused attempt did not consume it.
    assert post_to_acs(victim, form).status_code == 303


def test_logout_ends_the_session(bed):
    client = new_client()
    login(client, bed.url, "alice", "alice-pass")
    old_cookie = session_cookie(client)
    r = client.get(bed.url + "/saml/logout")
    assert r.status_code == 200
    token = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)

    # A POST without the session's CSRF token does not sign out, and is audited.
    mark = bed.audit_mark()
    r = client.post(bed.url + "/saml/logout", data={"csrf": "x" * len(token)},
                    allow_redirects=False)
    assert r.status_code == 403
    [refused] = bed.audit_since(mark)
    assert (refused["event"], refused["reason"], refused["user"]) == (
        "logout_refused", "csrf_token_invalid", "alice")
    assert refused["ref"] in r.text and refused["session"]
    assert client.get(bed.url + "/_stcore/health").status_code == 200

    mark = bed.audit_mark()
    r = client.post(bed.url + "/saml/logout", data={"csrf": token}, allow_redirects=False)
    assert r.status_code == 303
    assert session_cookie(client) is None
    [record] = bed.audit_since(mark)
    assert (record["event"], record["user"]) == ("logout", "alice")
    # The old session ID is dead on the server, not only forgotten by the browser.
    replay = new_client()
    replay.cookies.set("saml-session", old_cookie)
    assert replay.get(bed.url + "/_stcore/health").status_code == 401
    assert replay.get(bed.url + "/", headers=NAVIGATE, allow_redirects=False).status_code == 303


def test_client_sent_identity_headers_never_reach_streamlit(bed):
    client = new_client()
    mark = bed.audit_mark()
    login(client, bed.url, "bob", "bob-pass")
    # The browser holds the IdP's cookies too (same host, other port), and one of Streamlit's.
    assert any(c.name.startswith("SimpleSAML") for c in client.cookies)
    client.cookies.set("_streamlit_xsrf", "2|abc|def|1")
    forged = {"X-Auth-User": "admin", "x-auth-email": "admin@example.test",
              "X-AUTH-GROUPS": "analytics,admins", "X-Auth-Name": "Admin",
              "X-Auth-Time": "4102444800", "X-Auth-Context": "urn:example:forged",
              "X-Forwarded-For": "10.9.9.9"}
    page = run_app(bed.url, {"Cookie": cookie_header(client), **forged})
    assert page.headers["x-auth-user"] == ["bob"]
    assert page.headers["x-auth-email"] == ["bob@example.test"]
    assert page.headers["x-auth-name"] == ["Bob Builder"]
    assert page.headers["x-auth-groups"] == ["ops"]
    [success] = [r for r in bed.audit_since(mark) if r["event"] == "login_success"]
    signed_in = datetime.fromisoformat(success["authn_instant"].replace("Z", "+00:00"))
    assert page.headers["x-auth-time"] == [str(int(signed_in.timestamp()))]
    assert page.headers["x-auth-context"] == [success["authn_context"]]
    assert page.headers["x-forwarded-for"] == ["127.0.0.1"]
    # Streamlit's own cookie passes; neither the gateway's cookies nor the IdP's do.
    assert page.cookies == ["_streamlit_xsrf"]
