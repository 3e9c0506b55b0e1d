"""Several IdPs behind one gateway: the chooser, logins through each IdP, routes bound to one
IdP, `allow.idps`, IdP-initiated logins and the admin listener.

Two SimpleSAMLphp IdPs of their own, `staff` (label "Staff") and `partners` (label "Partner
portal", with `allow_unsolicited: true`), each trust the same SP (the gateway's entity ID, ACS
and SLO URLs); their metadata is saved to two files. The gateway's config is the test bed's,
with its `idp:` block replaced by an `idps:` list of the two (the test bed's attribute mapping
on each) and three routes to the demo Streamlit app: `/` for any IdP, `/partners` bound to
`partners` (`idp: partners`) and `/staff-only` open to `staff` sessions only
(`allow: { idps: [staff] }`). A route protects an upstream, so the three share it with
`shared_upstream: true`. An admin listener serves `/health` and `/metrics`.

Cookies on 127.0.0.1 are not kept apart by port, and both IdPs use the same SimpleSAMLphp
cookie names: each client here signs in at one IdP only.
"""

import base64
import json
import os
import signal
import re
import textwrap
from html.parser import HTMLParser
from urllib.parse import parse_qs, quote, urljoin, urlsplit

import pytest

import testbed
from flows import (NAVIGATE, cookie_header, forms, login_until_acs, new_client, post_to_acs,
                   run_app)
from deploy import until
from test_slo import logout_request_xml, redirect_query

# (name, label) of the IdPs, in config order.
IDPS = (("staff", "Staff"), ("partners", "Partner portal"))
LABELS = dict(IDPS)
USER_OF = {"staff": "alice", "partners": "bob"}
IDP_COOKIE = "saml-gateway-idp"
SESSION_COOKIE = "saml-session"
# What a response from the other IdP than the pending login's may be refused with.
OTHER_IDP_REASONS = {"issuer_mismatch", "signature_invalid"}


class MultiIdp(testbed.OwnGateway):
    """Two IdPs and one gateway that trusts both."""

    def __init__(self, work, streamlit_port, gateway_bin):
        self.work = work
        self.streamlit_port = streamlit_port
        self.gateway_bin = gateway_bin
        self.port = testbed.free_port()
        self.admin_port = testbed.free_port()
        self.entity_id, acs, slo = testbed.gateway_urls(self.port)
        self.idps = {name: testbed.Idp(work / name, self.entity_id, acs, slo_url=slo)
                     for name, _ in IDPS}
        self.gateway = None

    def config_text(self):
        upstream = f"http://127.0.0.1:{self.streamlit_port}"
        routes = (f"  - path: /\n    upstream: {upstream}\n    shared_upstream: true\n"
                  f"  - path: /partners\n    idp: partners\n    upstream: {upstream}\n"
                  "    shared_upstream: true\n"
                  f"  - path: /staff-only\n    upstream: {upstream}\n"
                  "    allow: { idps: [staff] }\n    shared_upstream: true\n")
        text = testbed.gateway_config(
            self.work, self.port, self.streamlit_port, routes=routes,
            extra=f"server:\n  admin_listen: 127.0.0.1:{self.admin_port}\n")
        single = re.search(r"^idp:\n(?:  .*\n)+", text, re.M)
        assert single, f"no idp: block in the test bed's config:\n{text}"
        attributes = re.search(r"^  attributes:\n(?:    .*\n)+", single.group(0), re.M)
        assert attributes, f"no attributes in the idp: block:\n{single.group(0)}"
        items = "".join(
            f"  - name: {name}\n    label: {json.dumps(label)}\n"
            f"    metadata_file: {self.work}/{name}-metadata.xml\n"
            + textwrap.indent(attributes.group(0), "  ")
            + ("    allow_unsolicited: true\n" if name == "partners" else "")
            for name, label in IDPS)
        text = text.replace(single.group(0), "idps:\n" + items, 1)
        headers = "identity_headers: { user: X-Auth-User,"
        assert headers in text, text
        return text.replace(headers, "identity_headers: { idp: X-Auth-Idp, user: X-Auth-User,", 1)

    def start(self):
        for name, idp in self.idps.items():
            idp.start()
            idp.save_metadata(self.work / f"{name}-metadata.xml")
        self.gateway = testbed.Gateway(self.gateway_bin, self.config_text(), self.work).start()
        return self

    def admin_get(self, path):
        status, body = testbed.http_get(f"http://127.0.0.1:{self.admin_port}{path}", 5)
        assert status == 200, f"{path}: HTTP {status}: {body[:500]}"
        return body

    def stop(self):
        for service in (self.gateway, *self.idps.values()):
            if service:
                service.stop()


@pytest.fixture(scope="module")
def multi(bed):
    work = testbed.fresh_work(bed.work, "multi-idp")
    m = MultiIdp(work, bed.streamlit.port, bed.gateway.binary)
    try:
        yield m.start()
    finally:
        m.stop()


class Chooser(HTMLParser):
    """A chooser page: its title and, per list item, [its text, the href of its link]. The
    parser unescapes attribute values (`&amp;` in an href is `&`)."""

    def __init__(self, html):
        super().__init__()
        self.html, self.title, self.items, self._in = html, "", [], None
        self.feed(html)
        self.close()
        self.items = [(" ".join(text.split()), href) for text, href in self.items]

    def handle_starttag(self, tag, attrs):
        if tag in ("title", "li"):
            self._in = tag
            if tag == "li":
                self.items.append(["", None])
        elif tag == "a" and self._in == "li":
            self.items[-1][1] = dict(attrs).get("href")

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "title":
            self.title += data
        elif self._in == "li":
            self.items[-1][0] += data

    def href_of(self, name):
        hrefs = [h for _, h in self.items if h and link_query(h).get("idp") == [name]]
        assert len(hrefs) == 1, f"no single link for {name} on the chooser: {self.items}"
        return hrefs[0]


def link_query(href):
    return parse_qs(urlsplit(href).query)


def chooser(multi, client, return_to="/"):
    r = client.get(f"{multi.url}/saml/login?return_to={quote(return_to, safe='')}",
                   allow_redirects=False)
    assert r.status_code == 200 and "text/html" in r.headers.get("Content-Type", ""), (
        f"HTTP {r.status_code} {r.headers.get('Content-Type')} "
        f"{r.headers.get('Location')}: {r.text[:500]}")
    return Chooser(r.text)


def login_via(multi, client, name, return_to="/", user=None):
    """Picks IdP `name` on the chooser and signs in there (as `user`, by default that IdP's
    user of USER_OF); returns the ACS answer."""
    href = chooser(multi, client, return_to).href_of(name)
    user = user or USER_OF[name]
    form = login_until_acs(client, multi.url, user, f"{user}-pass",
                           login_url=urljoin(multi.url, href))
    return post_to_acs(client, form)


def signed_in(multi, name, user=None):
    client = new_client()
    r = login_via(multi, client, name, user=user)
    assert r.status_code == 303, f"login via {name}: HTTP {r.status_code}: {r.text[:500]}"
    return client


def has_session(client):
    return any(c.name == SESSION_COOKIE for c in client.cookies)


def idp_answer(client, url, user):
    """Signs in as `user` at the IdP page `url` (its SSO endpoint); returns the form the IdP
    posts to the ACS."""
    r = client.get(url)
    credentials = [f for f in forms(r) if "password" in f.fields]
    assert r.status_code == 200 and credentials, f"HTTP {r.status_code} at {r.url}: {r.text[:500]}"
    form = credentials[0]
    r = client.post(form.action, data={**form.fields, "username": user, "password": f"{user}-pass"})
    to_acs = [f for f in forms(r) if "SAMLResponse" in f.fields]
    assert to_acs, f"HTTP {r.status_code} at {r.url}, no SAMLResponse form: {r.text[:800]}"
    return to_acs[0]


def records(multi, mark, event):
    return [a for a in multi.audit_since(mark) if a["event"] == event]


def test_the_chooser_lists_every_idp_and_puts_the_last_used_first(multi):
    client = new_client()
    page = chooser(multi, client)
    assert page.title.strip() == "Choose how to sign in", page.html[:800]
    assert len(page.items) == len(IDPS), page.items
    for (text, href), (name, label) in zip(page.items, IDPS):
        assert label in text and "(last used)" not in text, page.items
        assert href and urlsplit(href).path == "/saml/login", page.items
        assert link_query(href) == {"idp": [name], "return_to": ["/"]}, href
        assert f'href="/saml/login?idp={name}&amp;return_to=' in page.html, page.html[:1500]

    r = login_via(multi, client, "partners")
    assert r.status_code == 303, f"HTTP {r.status_code}: {r.text[:500]}"
    page = chooser(multi, client)
    assert [link_query(h).get("idp") for _, h in page.items] == [["partners"], ["staff"]], page.items
    assert LABELS["partners"] in page.items[0][0] and "(last used)" in page.items[0][0], page.items
    assert "(last used)" not in page.items[1][0], page.items


@pytest.mark.parametrize("name", [name for name, _ in IDPS])
def test_a_login_through_each_idp(multi, name):
    client = new_client()
    mark = multi.audit_mark()
    r = login_via(multi, client, name)
    assert r.status_code == 303 and r.headers.get("Location") == "/", (
        f"HTTP {r.status_code} to {r.headers.get('Location')}: {r.text[:500]}")
    assert has_session(client), r.headers
    remembered = [(c.value, c.path) for c in client.cookies if c.name == IDP_COOKIE]
    assert remembered == [(name, "/saml")], remembered
    successes = records(multi, mark, "login_success")
    assert len(successes) == 1, multi.audit_since(mark)
    record = successes[0]
    assert record["idp"] == multi.idps[name].entity_id, record
    assert record.get("idp_name") == name and record.get("user") == USER_OF[name], record

    r = client.get(multi.url + "/", headers=NAVIGATE, allow_redirects=False)
    assert r.status_code == 200, f"HTTP {r.status_code}: {r.text[:500]}"
    # The app learns which IdP vouched for the user; a client cannot say it itself.
    page = run_app(multi.url, {"Cookie": cookie_header(client), "X-Auth-Idp": "forged"})
    assert page.headers["x-auth-user"] == [USER_OF[name]], page.headers
    assert page.headers["x-auth-idp"] == [name], page.headers


def test_a_response_from_the_other_idp_is_refused(multi):
    staff_idp, partners_idp = multi.idps["staff"], multi.idps["partners"]
    # A login started at staff, whose AuthnRequest is taken to the partners IdP instead: it
    # answers that very request (InResponseTo and RelayState are the staff login's), signed
    # with its own key and under its own entity ID.
    client = new_client()
    r = client.get(f"{multi.url}/saml/login?idp=staff&return_to=%2F", allow_redirects=False)
    location = r.headers.get("Location", "")
    assert r.status_code == 303 and location.startswith(staff_idp.sso_url + "?"), (
        f"HTTP {r.status_code} to {location}: {r.text[:500]}")
    relay_state = parse_qs(urlsplit(location).query)["RelayState"][0]
    form = idp_answer(client, partners_idp.sso_url + location[len(staff_idp.sso_url):],
                      USER_OF["partners"])
    assert form.fields.get("RelayState") == relay_state, form.fields
    mark = multi.audit_mark()
    r = post_to_acs(client, form)
    assert 400 <= r.status_code < 500, f"HTTP {r.status_code}: {r.text[:500]}"
    assert not has_session(client), r.headers
    failures = records(multi, mark, "login_failure")
    assert len(failures) == 1 and failures[0].get("reason") in OTHER_IDP_REASONS, failures
    assert failures[0]["reason"] in r.text, r.text[:800]

    # A response the partners IdP gave to a login started there (another browser), posted
    # with a pending staff login's RelayState: refused too.
    staff = new_client()
    r = staff.get(f"{multi.url}/saml/login?idp=staff&return_to=%2F", allow_redirects=False)
    assert r.status_code == 303, f"HTTP {r.status_code}: {r.text[:500]}"
    staff_relay = parse_qs(urlsplit(r.headers["Location"]).query)["RelayState"][0]
    partners = new_client()
    user = USER_OF["partners"]
    form = login_until_acs(partners, multi.url, user, f"{user}-pass",
                           login_url=f"{multi.url}/saml/login?idp=partners&return_to=%2F")
    mark = multi.audit_mark()
    r = post_to_acs(staff, form, RelayState=staff_relay)
    assert 400 <= r.status_code < 500, f"HTTP {r.status_code}: {r.text[:500]}"
    assert not has_session(staff), r.headers
    failures = records(multi, mark, "login_failure")
    # That response also answers another AuthnRequest than the staff login's.
    allowed = OTHER_IDP_REASONS | {"unknown_in_response_to"}
    assert len(failures) == 1 and failures[0].get("reason") in allowed, failures

    # The same response, posted to its own pending login, is good.
    r = post_to_acs(partners, form)
    assert r.status_code == 303 and r.headers.get("Location") == "/", (
        f"HTTP {r.status_code}: {r.text[:500]}")
    assert has_session(partners), r.headers


def test_a_route_bound_to_an_idp_signs_in_there_without_the_chooser(multi):
    client = new_client()
    r = client.get(multi.url + "/partners", headers=NAVIGATE, allow_redirects=False)
    location = r.headers.get("Location", "")
    assert r.status_code == 303 and location.startswith("/saml/login?"), (
        f"HTTP {r.status_code} to {location}: {r.text[:300]}")
    r = client.get(urljoin(multi.url + "/partners", location), allow_redirects=False)
    assert r.status_code == 303, f"HTTP {r.status_code} (no chooser expected): {r.text[:500]}"
    assert r.headers["Location"].startswith(multi.idps["partners"].sso_url + "?"), r.headers["Location"]

    # A partners session passes the route.
    user = USER_OF["partners"]
    form = login_until_acs(client, multi.url, user, f"{user}-pass", path="/partners")
    r = post_to_acs(client, form)
    assert r.status_code == 303 and r.headers.get("Location") == "/partners", (
        f"HTTP {r.status_code} to {r.headers.get('Location')}: {r.text[:500]}")
    r = client.get(multi.url + "/partners", headers=NAVIGATE, allow_redirects=False)
    assert r.status_code != 403 and "idp_not_allowed" not in r.text, f"HTTP {r.status_code}: {r.text[:500]}"

    # A staff session does not.
    staff = signed_in(multi, "staff")
    mark = multi.audit_mark()
    r = staff.get(multi.url + "/partners", headers=NAVIGATE, allow_redirects=False)
    assert r.status_code == 403, f"HTTP {r.status_code}: {r.text[:500]}"
    assert LABELS["partners"] in r.text, r.text[:800]
    denied = records(multi, mark, "access_denied")
    assert "idp_not_allowed" in r.text or any(
        a.get("reason") == "idp_not_allowed" for a in denied), (r.text[:800], denied)


def test_allow_idps_lets_in_only_sessions_of_those_idps(multi):
    r = signed_in(multi, "partners").get(multi.url + "/staff-only", headers=NAVIGATE,
                                         allow_redirects=False)
    assert r.status_code == 403, f"partners session: HTTP {r.status_code}: {r.text[:500]}"
    r = signed_in(multi, "staff").get(multi.url + "/staff-only", headers=NAVIGATE,
                                      allow_redirects=False)
    assert r.status_code != 403, f"staff session: HTTP {r.status_code}: {r.text[:500]}"


def test_an_unknown_idp_is_refused(multi):
    client = new_client()
    mark = multi.audit_mark()
    r = client.get(f"{multi.url}/saml/login?idp=nope&return_to=%2F", allow_redirects=False)
    assert r.status_code == 400 and "unknown_idp" in r.text, f"HTTP {r.status_code}: {r.text[:500]}"
    assert IDP_COOKIE not in r.headers.get("Set-Cookie", ""), r.headers
    failures = records(multi, mark, "login_failure")
    assert [a.get("reason") for a in failures] == ["unknown_idp"], multi.audit_since(mark)


@pytest.mark.parametrize("name", [name for name, _ in IDPS])
def test_idp_initiated_logins_only_from_an_idp_that_allows_them(multi, name):
    # How SimpleSAMLphp starts an IdP-initiated login: see test_unsolicited.py.
    idp = multi.idps[name]
    url = (f"{idp.sso_url}?spentityid={quote(multi.entity_id, safe='')}"
           f"&RelayState={quote('/', safe='')}")
    client = new_client()
    form = idp_answer(client, url, USER_OF[name])
    mark = multi.audit_mark()
    r = post_to_acs(client, form)
    if name == "partners":  # allow_unsolicited: true
        assert r.status_code == 303 and r.headers.get("Location") == "/", (
            f"HTTP {r.status_code} to {r.headers.get('Location')}: {r.text[:500]}")
        assert has_session(client), r.headers
        successes = records(multi, mark, "login_success")
        assert len(successes) == 1, multi.audit_since(mark)
        record = successes[0]
        assert record.get("detail") == "unsolicited", record
        assert record["idp"] == idp.entity_id and record.get("idp_name") == name, record
    else:
        assert r.status_code in (400, 403), f"HTTP {r.status_code}: {r.text[:500]}"
        assert not has_session(client), r.headers
        failures = records(multi, mark, "login_failure")
        assert len(failures) == 1 and failures[0].get("reason") in {
            "relay_state_not_bound", "unsolicited_response", "issuer_mismatch"}, failures


def test_health_and_metrics_show_every_idp(multi):
    health = json.loads(multi.admin_get("/health"))
    names = [(i.get("name"), i.get("entity_id")) for i in health.get("idps", [])]
    assert names == [(n, multi.idps[n].entity_id) for n, _ in IDPS], health
    assert health["idp"]["entity_id"] == multi.idps["staff"].entity_id, health
    assert health["status"] == "ok", health
    metrics = multi.admin_get("/metrics")
    idp_lines = [l for l in metrics.splitlines() if l.startswith("saml_gateway_idp_")]
    for name, _ in IDPS:
        labelled = re.compile(r'^saml_gateway_idp_\w+\{idp="' + name + r'"[,}]')
        assert any(labelled.match(l) for l in idp_lines), idp_lines
    # The idp label comes first on every IdP metric.
    unlabelled = [l for l in idp_lines if not re.match(r'^saml_gateway_idp_\w+\{idp="', l)]
    assert not unlabelled, unlabelled


def logout_request(multi, issuer, name_id, request_id):
    return logout_request_xml(f"{multi.url}/saml/slo", issuer, name_id, request_id)


def alive(multi, client):
    r = new_client().get(multi.url + "/_stcore/health", headers={"Cookie": cookie_header(client)})
    return r.status_code == 200


def test_an_idp_logout_request_ends_only_that_idps_sessions(multi):
    """The same user signed in through both IdPs: a LogoutRequest signed by the partners IdP
    ends the partners session only; one that names staff as its Issuer but is signed with the
    partners key is refused and ends nothing."""
    staff_idp, partners_idp = multi.idps["staff"], multi.idps["partners"]
    at_staff = signed_in(multi, "staff", user="carol")
    at_partners = signed_in(multi, "partners", user="carol")
    assert alive(multi, at_staff) and alive(multi, at_partners)
    partners_key = partners_idp.key_path.read_bytes()

    mark = multi.audit_mark()
    forged = logout_request(multi, staff_idp.entity_id, "carol", "_cross1")
    r = new_client().get(f"{multi.url}/saml/slo?{redirect_query(forged, partners_key)}",
                         allow_redirects=False)
    assert r.status_code == 400 and "signature_invalid" in r.text, f"HTTP {r.status_code}: {r.text[:500]}"
    [record] = multi.audit_since(mark)
    assert (record["event"], record["reason"], record.get("idp_name")) == (
        "slo", "signature_invalid", "staff"), record
    assert alive(multi, at_staff) and alive(multi, at_partners)

    mark = multi.audit_mark()
    genuine = logout_request(multi, partners_idp.entity_id, "carol", "_cross2")
    r = new_client().get(f"{multi.url}/saml/slo?{redirect_query(genuine, partners_key)}",
                         allow_redirects=False)
    assert r.status_code in (200, 303), f"HTTP {r.status_code}: {r.text[:500]}"
    ended = [a for a in multi.audit_since(mark) if a["event"] == "slo"]
    assert len(ended) == 1 and ended[0].get("idp_name") == "partners" and ended[0].get("session"), ended
    assert not alive(multi, at_partners)
    assert alive(multi, at_staff), "a partners logout request ended a staff session"

    # An Issuer no IdP here has: refused before any key is tried.
    unknown = logout_request(multi, "https://elsewhere.example/idp", "carol", "_cross3")
    r = new_client().get(f"{multi.url}/saml/slo?{redirect_query(unknown, partners_key)}",
                         allow_redirects=False)
    assert r.status_code == 400 and "issuer_mismatch" in r.text, f"HTTP {r.status_code}: {r.text[:500]}"
    assert alive(multi, at_staff)


def test_an_idp_initiated_response_under_another_idps_name_is_refused(multi):
    """A staff-signed IdP-initiated response with its Issuers rewritten to the partners IdP
    (which accepts IdP-initiated logins): the Issuer picks partners, whose key alone is tried."""
    staff_idp, partners_idp = multi.idps["staff"], multi.idps["partners"]
    url = (f"{staff_idp.sso_url}?spentityid={quote(multi.entity_id, safe='')}"
           f"&RelayState={quote('/', safe='')}")
    client = new_client()
    form = idp_answer(client, url, USER_OF["staff"])
    xml = base64.b64decode(form.fields["SAMLResponse"]).decode()
    assert xml.count(staff_idp.entity_id) >= 2, xml[:800]
    renamed = xml.replace(staff_idp.entity_id, partners_idp.entity_id)
    mark = multi.audit_mark()
    r = post_to_acs(client, form, SAMLResponse=base64.b64encode(renamed.encode()).decode())
    assert r.status_code == 403 and "signature_invalid" in r.text, f"HTTP {r.status_code}: {r.text[:500]}"
    assert not has_session(client), r.headers
    [failure] = records(multi, mark, "login_failure")
    assert (failure.get("reason"), failure.get("idp_name")) == ("signature_invalid", "partners"), failure


def test_a_reload_that_changes_the_idps_is_refused(multi):
    """The IdPs are fixed at start-up: a SIGHUP with another list (partners removed, and the
    route that required staff opened to all) changes nothing."""
    gateway = multi.gateway
    original = gateway.config_path.read_text()
    changed = original.replace("    allow: { idps: [staff] }\n", "")
    start = changed.index("  - name: partners\n")
    end = changed.index("sessions:\n")
    changed = changed[:start] + changed[end:]
    changed = changed.replace("  - path: /partners\n    idp: partners\n", "  - path: /partners\n")
    assert "partners" not in changed.split("routes:")[0], changed
    partners = signed_in(multi, "partners")
    mark = multi.audit_mark()
    log = gateway.log_path
    before = log.read_text(errors="replace").count("reload refused")
    try:
        gateway.config_path.write_text(changed)
        os.kill(gateway.proc.pid, signal.SIGHUP)
        until(lambda: log.read_text(errors="replace").count("reload refused") > before, 10,
              "'reload refused' in the gateway log")
        [refused] = [a for a in multi.audit_since(mark) if a["event"] == "routes_reloaded"]
        assert refused.get("reason") == "config_invalid" and refused.get("detail", "").endswith(": idps"), refused
        r = partners.get(multi.url + "/staff-only", headers=NAVIGATE, allow_redirects=False)
        assert r.status_code == 403, f"HTTP {r.status_code}: the old rule must stay: {r.text[:300]}"
    finally:
        gateway.config_path.write_text(original)
