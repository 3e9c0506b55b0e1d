"""IdP-initiated (unsolicited) login with the real IdP: refused by default; with
`idp.allow_unsolicited: true`, accepted once, while young, landing only on allowed paths.

SimpleSAMLphp starts an IdP-initiated login at `SSOService.php?spentityid=SP&RelayState=...`
(what an Okta tile or Entra's My Apps does): the user signs in at the IdP, which posts a
Response without InResponseTo to the ACS.
"""

import time
from urllib.parse import quote

import pytest

import testbed
from flows import (cookie_header, forms, login, login_until_acs, new_client, post_to_acs,
                   run_app)

MAX_AGE_SECS = 3


def idp_initiated(client, idp, sp_entity_id, relay_state, user="alice", password="alice-pass"):
    """Signs in at the IdP for `sp_entity_id`; returns the form the IdP posts to the ACS."""
    url = (f"{idp.base_url}/saml2/idp/SSOService.php?spentityid={quote(sp_entity_id, safe='')}"
           f"&RelayState={quote(relay_state, safe='')}")
    r = client.get(url)
    assert r.status_code == 200, r.text[:500]
    credentials = [f for f in forms(r) if "password" in f.fields]
    if credentials:
        form = credentials[0]
        r = client.post(form.action, data={**form.fields, "username": user, "password": password})
    to_acs = [f for f in forms(r) if "SAMLResponse" in f.fields]
    assert to_acs, r.text[:800]
    return to_acs[0]


@pytest.fixture(scope="module")
def unsolicited(bed):
    work = testbed.fresh_work(bed.work, "unsolicited")
    # An IdP and a gateway that accepts IdP-initiated logins.
    u = testbed.IdpAndGateway(
        work, bed.streamlit.port, bed.gateway.binary,
        "  allow_unsolicited: true\n"
        f"  unsolicited_max_age: {MAX_AGE_SECS}s\n  clock_skew: 1s\n"
        "  unsolicited_relay_state: [/allowed]\n")
    try:
        yield u
    finally:
        u.stop()


def test_refused_when_not_switched_on(bed):
    entity_id = testbed.gateway_urls(bed.gateway.port)[0]
    client = new_client()
    form = idp_initiated(client, bed.idp, entity_id, "/")
    mark = bed.audit_mark()
    r = post_to_acs(client, form)
    assert r.status_code == 400 and "relay_state_not_bound" in r.text
    assert "saml-session=" not in r.headers.get("Set-Cookie", "")
    [record] = [a for a in bed.audit_since(mark) if a["event"] == "login_failure"]
    assert record["reason"] == "relay_state_not_bound"


def test_accepted_when_switched_on_and_lands_on_an_allowed_path(unsolicited):
    client = new_client()
    form = idp_initiated(client, unsolicited.idp, unsolicited.entity_id, "/allowed/page?tab=2")
    mark = unsolicited.audit_mark()
    r = post_to_acs(client, form)
    assert r.status_code == 303, r.text
    assert r.headers["Location"] == "/allowed/page?tab=2"
    page = run_app(unsolicited.url, {"Cookie": cookie_header(client)})
    assert page.headers["x-auth-user"] == ["alice"]
    [record] = [a for a in unsolicited.audit_since(mark) if a["event"] == "login_success"]
    assert record["detail"] == "unsolicited" and record["user"] == "alice"
    assert "request_id" not in record


@pytest.mark.parametrize("relay_state", [
    "https://evil.example/allowed", "//evil.example/allowed", "/allowedx", "/elsewhere",
    "/allowed/../admin", "opaque-idp-token"])
def test_other_relay_states_land_on_the_root(unsolicited, relay_state):
    client = new_client()
    form = idp_initiated(client, unsolicited.idp, unsolicited.entity_id, relay_state)
    r = post_to_acs(client, form)
    assert r.status_code == 303, r.text
    assert r.headers["Location"] == "/"


def test_an_unsolicited_response_is_accepted_once(unsolicited):
    client = new_client()
    form = idp_initiated(client, unsolicited.idp, unsolicited.entity_id, "/allowed")
    assert post_to_acs(client, form).status_code == 303
    mark = unsolicited.audit_mark()
    r = post_to_acs(new_client(), form)
    assert r.status_code == 403 and "assertion_replayed" in r.text, r.text
    [record] = unsolicited.audit_since(mark)
    assert record["event"] == "login_failure" and record["reason"] == "assertion_replayed"
    assert record["detail"].startswith("unsolicited"), record


def test_an_old_unsolicited_response_is_refused(unsolicited):
    client = new_client()
    form = idp_initiated(client, unsolicited.idp, unsolicited.entity_id, "/allowed")
    time.sleep(MAX_AGE_SECS + 1 + 1.5)  # max age, clock skew, and a margin
    r = post_to_acs(client, form)
    assert r.status_code in (400, 403) and "issue_instant_invalid" in r.text, r.text


def test_a_response_to_a_request_of_another_browser_is_refused(unsolicited):
    """A response that answers an AuthnRequest (it has InResponseTo) is never taken as
    unsolicited: posted from a browser without that login's cookie, it is refused."""
    form = login_until_acs(new_client(), unsolicited.url, "bob", "bob-pass")
    r = post_to_acs(new_client(), form)
    assert "unknown_in_response_to" in r.text and r.status_code in (400, 403), r.text


def test_solicited_logins_still_work(unsolicited):
    client = new_client()
    login(client, unsolicited.url, "bob", "bob-pass")
    page = run_app(unsolicited.url, {"Cookie": cookie_header(client)})
    assert page.headers["x-auth-user"] == ["bob"]


def test_idp_initiated_responses_are_charged_to_the_login_budget(bed):
    # No login was started here for them, so each costs a start (and a signature check).
    g = testbed.IdpAndGateway(
        testbed.fresh_work(bed.work, "unsolicited-budget"), bed.streamlit.port,
        bed.gateway.binary, "  allow_unsolicited: true\n",
        extra="limits:\n  login_starts_per_minute: 2\n")
    try:
        client = new_client()
        forms_to_post = [idp_initiated(client, g.idp, g.entity_id, "/") for _ in range(3)]
        mark = g.audit_mark()
        answers = [post_to_acs(new_client(), form) for form in forms_to_post]
        assert [r.status_code for r in answers] == [303, 303, 429], [r.text for r in answers]
        assert "rate_limited" in answers[2].text
        records = g.audit_since(mark)
        assert [(r["event"], r.get("reason")) for r in records] == [
            ("login_success", None), ("login_success", None),
            ("login_failure", "rate_limited")], records
        assert records[2]["path"] == "/saml/acs"
    finally:
        g.stop()
