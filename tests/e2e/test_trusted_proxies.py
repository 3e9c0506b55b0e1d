"""The client's address behind a load balancer (`server.trusted_proxies`).

The test client connects from 127.0.0.1. For a gateway that trusts 127.0.0.1 as a proxy, the
client is the first address right of the trusted hops in `X-Forwarded-For`: the audit log
records it, the login budget counts it, and the app receives it as `X-Forwarded-For`. For the
test bed's gateway, which trusts no proxy, the same header is the client's own word and is
ignored.
"""

import pytest

import testbed
from flows import audited_client_ip, cookie_header, login, new_client, run_app


@pytest.fixture(scope="module")
def behind_balancer(bed):
    extra = ("server:\n  trusted_proxies: [127.0.0.1, 10.0.0.0/8]\n"
             "limits:\n  login_starts_per_minute: 2\n")
    g = testbed.IdpAndGateway(testbed.fresh_work(bed.work, "trusted-proxies"),
                              bed.streamlit.port, bed.gateway.binary, extra=extra)
    try:
        yield g
    finally:
        g.stop()


def start(url, forwarded_for):
    return new_client().get(url + "/saml/login?return_to=/", allow_redirects=False,
                            headers={"X-Forwarded-For": forwarded_for})


def test_the_audit_log_and_the_budget_see_the_forwarded_client(behind_balancer):
    g = behind_balancer
    mark = g.audit_mark()
    # A forged entry left of the client's own address, and a second trusted hop right of it.
    assert start(g.url, "198.51.100.66, 203.0.113.7, 10.1.1.1").status_code == 303
    assert start(g.url, "203.0.113.7").status_code == 303
    refused = start(g.url, "203.0.113.7")
    assert refused.status_code == 429, refused.text
    # Another client behind the same balancer has a budget of its own.
    assert start(g.url, "203.0.113.8").status_code == 303
    # A gateway with the list has no hint to give.
    assert "server.trusted_proxies does not list" not in g.gateway.log_path.read_text()
    records = g.audit_since(mark)
    assert [(r["event"], r["client_ip"]) for r in records] == [
        ("login_start", "203.0.113.7"),
        ("login_start", "203.0.113.7"),
        ("login_failure", "203.0.113.7"),
        ("login_start", "203.0.113.8"),
    ], records


def test_an_ipv6_site_shares_sixteen_budgets(behind_balancer):
    # A budget of 2 per client: a /48 may start 32 logins from any of its /64s, then no more.
    g = behind_balancer
    answers = [start(g.url, f"2001:db8:5:{n:x}::1").status_code for n in range(33)]
    assert answers == [303] * 32 + [429], answers
    assert start(g.url, "2001:db8:6::1").status_code == 303


def test_the_app_receives_the_forwarded_client(behind_balancer):
    g = behind_balancer
    client = new_client()
    login(client, g.url, "alice", "alice-pass")
    page = run_app(g.url, {"Cookie": cookie_header(client),
                           "X-Forwarded-For": "198.51.100.66, 2001:db8::7"})
    assert page.headers["x-forwarded-for"] == ["2001:db8::7"], page.headers


def test_without_trusted_proxies_the_header_is_ignored(bed):
    assert audited_client_ip(bed, "203.0.113.7") == "127.0.0.1"
    # The operator is told that a proxy may be missing from the list, once per run.
    def hints():
        return bed.gateway.log_path.read_text().count(
            "a login start came with X-Forwarded-For or Forwarded from a peer that "
            "server.trusted_proxies "
            "does not list")
    seen = hints()
    assert seen >= 1
    r = new_client().get(bed.url + "/saml/login?return_to=/", allow_redirects=False,
                         headers={"X-Forwarded-For": "203.0.113.8"})
    assert r.status_code == 303
    assert hints() == seen
    client = new_client()
    login(client, bed.url, "alice", "alice-pass")
    page = run_app(bed.url, {"Cookie": cookie_header(client), "X-Forwarded-For": "203.0.113.7"})
    assert page.headers["x-forwarded-for"] == ["127.0.0.1"], page.headers


def test_proxies_that_write_forwarded_are_read_by_it(bed):
    # HAProxy's `option forwarded` names the client in the RFC 7239 header instead.
    extra = "server:\n  trusted_proxies: [127.0.0.1]\n  forwarded_header: forwarded\n"
    g = testbed.IdpAndGateway(testbed.fresh_work(bed.work, "forwarded-header"),
                              bed.streamlit.port, bed.gateway.binary, extra=extra)
    try:
        mark = g.audit_mark()
        for headers in ({"Forwarded": 'for=198.51.100.66, for="[2001:db8::7]:4711";proto=https'},
                        # Only the configured header is read: this one is the client's word.
                        {"X-Forwarded-For": "203.0.113.9"}):
            r = new_client().get(g.url + "/saml/login?return_to=/", allow_redirects=False,
                                 headers=headers)
            assert r.status_code == 303, r.text
        assert [r["client_ip"] for r in g.audit_since(mark)] == ["2001:db8::7", "127.0.0.1"]
        client = new_client()
        login(client, g.url, "alice", "alice-pass")
        page = run_app(g.url, {"Cookie": cookie_header(client),
                               "Forwarded": "for=203.0.113.7"})
        assert page.headers["x-forwarded-for"] == ["203.0.113.7"], page.headers
        assert "forwarded" not in page.headers, page.headers
    finally:
        g.stop()
