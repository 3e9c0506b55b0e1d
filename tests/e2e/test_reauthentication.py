"""`routes[N].max_authn_age`: an app that wants a recent sign-in at the IdP.

The gateway asks the IdP for a new sign-in (`ForceAuthn="true"`) on every login for such a
route, keeps the assertion's AuthnInstant in the session, and once that is older than the
route allows, treats the session as none on that route: a page load goes to sign in again, other
requests get 401, and an open WebSocket is closed (`access_denied`, `reauthentication_required`).
SimpleSAMLphp honours ForceAuthn: it shows its password form again although the browser still
has a session there, which without ForceAuthn it answers at once.
"""

import base64
import time
import zlib
from urllib.parse import parse_qs, urljoin, urlparse

import pytest

import testbed
from deploy import seconds_until_closed
from flows import NAVIGATE, cookie_header, forms, login, new_client, open_stream, post_to_acs

MAX_AGE = 8


@pytest.fixture(scope="module")
def fresh_only(bed):
    def recent_sign_in(gateway):
        route = f"  - path: /\n    upstream: http://127.0.0.1:{bed.streamlit.port}\n"
        assert route in gateway.config_text
        gateway.config_text = gateway.config_text.replace(
            route, route + f"    max_authn_age: {MAX_AGE}s\n")

    # The IdP runs on this host's clock: no skew, so that the sign-in ages by MAX_AGE alone.
    g = testbed.IdpAndGateway(testbed.fresh_work(bed.work, "reauthentication"),
                              bed.streamlit.port, bed.gateway.binary, "  clock_skew: 0s\n",
                              prepare=recent_sign_in)
    try:
        yield g
    finally:
        g.stop()


def authn_request(login_answer):
    """The AuthnRequest XML of `/saml/login`'s redirect to the IdP."""
    [value] = parse_qs(urlparse(login_answer.headers["Location"]).query)["SAMLRequest"]
    return zlib.decompress(base64.b64decode(value), -15).decode()


def health(client, g):
    return client.get(g.url + "/_stcore/health", allow_redirects=False).status_code


def test_an_old_sign_in_is_sent_to_the_idp_again_which_asks_for_the_password(fresh_only):
    g = fresh_only
    alice = new_client()
    signed_in = time.monotonic()
    mark = g.audit_mark()
    login(alice, g.url, "alice", "alice-pass")
    [first_instant] = [r["authn_instant"] for r in g.audit_since(mark)
                       if r["event"] == "login_success"]
    assert health(alice, g) == 200
    ws = open_stream(g.url, {"Cookie": cookie_header(alice)})
    mark = g.audit_mark()
    try:
        # The open socket is closed once the sign-in is older than the route allows.
        seconds_until_closed(ws, MAX_AGE + 15)
    finally:
        ws.close()
    assert time.monotonic() - signed_in > MAX_AGE
    [closed] = [r for r in g.audit_since(mark) if r["event"] == "access_denied"]
    assert closed["reason"] == "reauthentication_required", closed
    assert closed["user"] == "alice" and closed["route"] == "root", closed

    # The session still lives, but not for this route: requests get 401, a page load goes to
    # sign in again.
    assert health(alice, g) == 401
    r = alice.get(g.url + "/", headers=NAVIGATE, allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == "/saml/login?return_to=%2F", \
        r.headers
    r = alice.get(urljoin(g.url, r.headers["Location"]), allow_redirects=False)
    assert r.status_code == 303, r.text
    assert 'ForceAuthn="true"' in authn_request(r)
    # The IdP has this browser's session, yet asks for the password again.
    page = alice.get(r.headers["Location"])
    assert page.status_code == 200
    assert not [f for f in forms(page) if "SAMLResponse" in f.fields], page.text[:500]
    [credentials] = [f for f in forms(page) if "password" in f.fields]
    answer = alice.post(credentials.action,
                        data={**credentials.fields, "username": "alice",
                              "password": "alice-pass"})
    [to_acs] = [f for f in forms(answer) if "SAMLResponse" in f.fields]
    mark = g.audit_mark()
    r = post_to_acs(alice, to_acs)
    assert r.status_code == 303 and r.headers["Location"] == "/", r.text
    [success] = g.audit_since(mark)
    assert success["event"] == "login_success"
    # The IdP signed her in again, after the first sign-in and before this record (both
    # times UTC in one format; the record's own has milliseconds).
    assert first_instant < success["authn_instant"], (first_instant, success)
    assert success["authn_instant"][:19] <= success["ts"][:19], success
    assert health(alice, g) == 200


def test_every_login_for_the_route_asks_for_a_new_sign_in(fresh_only):
    r = new_client().get(fresh_only.url + "/saml/login?return_to=/", allow_redirects=False)
    assert r.status_code == 303
    assert 'ForceAuthn="true"' in authn_request(r)


def test_a_route_without_max_authn_age_does_not_force_a_sign_in(bed):
    r = new_client().get(bed.gateway.base_url + "/saml/login?return_to=/",
                         allow_redirects=False)
    assert r.status_code == 303
    assert "ForceAuthn" not in authn_request(r)
