"""The budget of login starts per client address (`limits.login_starts_per_minute`).

Every started login makes the gateway keep a pending request (ten minutes) and write a
`login_start` record for a client nobody has authenticated yet. Past its budget a client gets
`429` with `Retry-After` and nothing is stored. The first refusal of a run is audited at once; the
later ones are written as one summary record per client and endpoint each minute and at shutdown.
"""

import subprocess

import pytest

import testbed
from flows import login, new_client


def own_gateway(bed, name, per_minute):
    """A gateway of its own, in front of the bed's app, with a budget of `per_minute`; the
    caller stops it (`g.gateway.stop()`)."""
    work = testbed.fresh_work(bed.work, name)
    port = testbed.free_port()
    admin = testbed.free_port()
    text = testbed.gateway_config(bed.work, port, bed.streamlit.port,
                                  extra=f"limits:\n  login_starts_per_minute: {per_minute}\n"
                                        f"server:\n  admin_listen: 127.0.0.1:{admin}\n")
    text = text.replace(f"file: {bed.work.resolve()}/audit.jsonl", f"file: {work}/audit.jsonl")
    g = testbed.OwnGateway()
    g.work = work
    g.metrics_url = f"http://127.0.0.1:{admin}/metrics"
    g.gateway = testbed.Gateway(bed.gateway.binary, text, work).start()
    return g


@pytest.fixture(scope="module")
def budget_of_three(bed):
    g = own_gateway(bed, "login-budget", 3)
    try:
        yield g
    finally:
        g.gateway.stop()


def start(gateway, client=None):
    return (client or new_client()).get(gateway.url + "/saml/login?return_to=/x",
                                        allow_redirects=False)


def test_a_client_past_its_budget_is_refused_and_audited_once(budget_of_three):
    g = budget_of_three
    mark = g.audit_mark()
    for _ in range(3):
        r = start(g)
        assert r.status_code == 303, r.text
        assert "saml-relay=" in r.headers["Set-Cookie"]
    refusals = [start(g) for _ in range(3)]
    # Every answer of the endpoint is charged: an unknown IdP too (it would be audited).
    refusals.append(new_client().get(g.url + "/saml/login?idp=nope", allow_redirects=False))
    for r in refusals:
        assert r.status_code == 429, r.text
        assert "rate_limited" in r.text
        assert "Location" not in r.headers and "Set-Cookie" not in r.headers
        assert 1 <= int(r.headers["Retry-After"]) <= 20, r.headers["Retry-After"]
    records = g.audit_since(mark)
    assert [r["event"] for r in records] == ["login_start"] * 3 + ["login_failure"], records
    refusal = records[-1]
    assert refusal["reason"] == "rate_limited"
    assert refusal["client_ip"] == "127.0.0.1"
    assert refusal["detail"] == "over 3 login starts per minute from this client"
    assert refusal["ref"] in refusals[0].text
    status, body = testbed.http_get(g.metrics_url)
    assert status == 200
    assert "saml_gateway_login_starts_refused_total 4\n" in body, body
    assert "saml_gateway_login_starts_untracked_total 0\n" in body
    # Four records were synced, in at most four batches.
    [syncs] = [int(line.split()[1]) for line in body.splitlines()
               if line.startswith("saml_gateway_audit_syncs_total ")]
    assert 1 <= syncs <= 4, body


def metric(g, name):
    status, body = testbed.http_get(g.metrics_url)
    assert status == 200
    [value] = [int(line.split()[1]) for line in body.splitlines() if line.startswith(name + " ")]
    return value


def test_acs_posts_that_answer_no_login_started_here_are_charged(bed):
    g = own_gateway(bed, "login-budget-acs", 3)
    try:
        mark = g.audit_mark()
        acs = g.url + "/saml/acs"
        unpaired = [
            # No RelayState at all.
            (new_client().post(acs, data={"SAMLResponse": "PHNhbWxwOlJlc3BvbnNlLz4="},
                               allow_redirects=False), "relay_state_missing"),
            # A RelayState bound to the browser that names no pending login.
            (new_client().post(acs, data={"SAMLResponse": "PHNhbWxwOlJlc3BvbnNlLz4=",
                                          "RelayState": "made-up"},
                               headers={"Cookie": "saml-relay=made-up"}, allow_redirects=False),
             "relay_state_unknown"),
            # A malformed form.
            (new_client().post(acs, data={"RelayState": "x"}, allow_redirects=False),
             "saml_response_missing"),
        ]
        for r, reason in unpaired:
            assert r.status_code == 400 and reason in r.text, (reason, r.status_code, r.text)
        refused = [new_client().post(acs, data={"SAMLResponse": "AAAA"}, allow_redirects=False)
                   for _ in range(2)]
        for r in refused:
            assert r.status_code == 429 and "rate_limited" in r.text, r.text
            assert 1 <= int(r.headers["Retry-After"]) <= 20, r.headers["Retry-After"]
        # One budget for both endpoints.
        assert start(g).status_code == 429
        records = g.audit_since(mark)
        assert [(r["event"], r["reason"], r["path"]) for r in records] == [
            ("login_failure", "relay_state_missing", "/saml/acs"),
            ("login_failure", "relay_state_unknown", "/saml/acs"),
            ("login_failure", "saml_response_missing", "/saml/acs"),
            ("login_failure", "rate_limited", "/saml/acs"),
        ], records
        assert metric(g, "saml_gateway_login_starts_refused_total") == 3
    finally:
        g.gateway.stop()


def test_refused_logout_messages_are_charged(bed):
    g = own_gateway(bed, "login-budget-slo", 2)
    try:
        mark = g.audit_mark()
        slo = g.url + "/saml/slo"
        first = new_client().get(slo + "?SAMLRequest=junk", allow_redirects=False)
        second = new_client().post(slo, data={"SAMLResponse": "junk"}, allow_redirects=False)
        assert [first.status_code, second.status_code] == [400, 400], (first.text, second.text)
        refused = [new_client().get(slo + "?SAMLRequest=junk", allow_redirects=False),
                   new_client().post(slo, data={"SAMLRequest": "junk"}, allow_redirects=False)]
        for r in refused:
            assert r.status_code == 429 and "rate_limited" in r.text, r.text
        records = g.audit_since(mark)
        assert [(r["event"], r["path"]) for r in records] == [
            ("slo", "/saml/slo"), ("slo", "/saml/slo"), ("slo", "/saml/slo")], records
        assert records[-1]["reason"] == "rate_limited"
        assert metric(g, "saml_gateway_login_starts_refused_total") == 2
    finally:
        g.gateway.stop()


def test_refusals_after_the_first_are_written_as_summaries_at_the_latest_at_shutdown(bed):
    g = own_gateway(bed, "login-budget-summary", 2)
    stopped = False
    try:
        mark = g.audit_mark()
        assert [start(g).status_code for _ in range(2)] == [303, 303]
        refused = [start(g) for _ in range(3)]
        refused += [new_client().post(g.url + "/saml/acs", data={"SAMLResponse": "AAAA"},
                                      allow_redirects=False) for _ in range(2)]
        refused.append(new_client().get(g.url + "/saml/slo?SAMLRequest=junk",
                                        allow_redirects=False))
        assert [r.status_code for r in refused] == [429] * 6
        assert metric(g, "saml_gateway_login_starts_refused_total") == 6
        # Only the first refusal is written while the gateway runs (summaries come each minute).
        records = g.audit_since(mark)
        assert [(r["event"], r.get("reason")) for r in records] == [
            ("login_start", None), ("login_start", None), ("login_failure", "rate_limited")]
        g.gateway.stop()
        stopped = True
        summaries = g.audit_since(mark)[3:]
        assert sorted((r["event"], r["reason"], r["path"], r["count"], r["client_ip"])
                      for r in summaries) == [
            ("login_failure", "rate_limited", "/saml/acs", 2, "127.0.0.1"),
            ("login_failure", "rate_limited", "/saml/login", 2, "127.0.0.1"),
            ("slo", "rate_limited", "/saml/slo", 1, "127.0.0.1"),
        ], summaries
        # Every refusal is accounted for: one record of its own, the rest in summaries.
        assert 1 + sum(r["count"] for r in summaries) == 6
        for r in summaries:
            assert r["detail"].startswith(
                f"{r['count']} more refused over 2 login starts per minute from this client, "
                "from "), r
            first, last = r["detail"].split(", from ")[1].split(" to ")
            assert records[2]["ts"] <= first <= last <= r["ts"], r
    finally:
        if not stopped:
            g.gateway.stop()


def test_the_response_to_a_login_started_here_is_not_charged_again(bed):
    # With a budget of 2, two whole logins pass only if their ACS posts are free.
    g = testbed.IdpAndGateway(testbed.fresh_work(bed.work, "login-budget-paired"),
                              bed.streamlit.port, bed.gateway.binary,
                              extra="limits:\n  login_starts_per_minute: 2\n")
    try:
        for _ in range(2):
            login(new_client(), g.url, "alice", "alice-pass")
        r = new_client().post(g.url + "/saml/acs", data={"SAMLResponse": "AAAA"},
                              allow_redirects=False)
        assert r.status_code == 429, r.text
    finally:
        g.stop()


def test_an_unknown_key_or_a_value_out_of_range_stops_start_up(bed, tmp_path):
    port = testbed.free_port()
    for value, message in [("-1", "limits.login_starts_per_minute"),
                           ("60001", "must be between 0 (no budget) and 60000")]:
        text = testbed.gateway_config(bed.work, port, bed.streamlit.port,
                                      extra=f"limits:\n  login_starts_per_minute: {value}\n")
        (tmp_path / "gateway.yaml").write_text(text)
        run = subprocess.run(
            [bed.gateway.binary, "check-config", "--config", tmp_path / "gateway.yaml"],
            capture_output=True, text=True)
        assert run.returncode != 0
        assert "gateway.yaml" in run.stderr and message in run.stderr, run.stderr


def test_an_https_url_without_trusted_proxies_is_warned_of(bed, tmp_path):
    port = testbed.free_port()
    base = testbed.gateway_config(bed.work, port, bed.streamlit.port)
    base = base.replace(f"public_url: http://127.0.0.1:{port}", "public_url: https://dash.example.com")
    warning = "server.trusted_proxies is empty"
    for extra, warned in [("", True), ("server:\n  trusted_proxies: [127.0.0.1]\n", False)]:
        (tmp_path / "gateway.yaml").write_text(base + extra)
        run = subprocess.run(
            [bed.gateway.binary, "check-config", "--config", tmp_path / "gateway.yaml"],
            capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert (warning in run.stderr) == warned, run.stderr
