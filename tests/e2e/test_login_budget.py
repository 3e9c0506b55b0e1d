"""The budget of login starts per client address (`limits.login_starts_per_minute`).

Every started login makes the gateway keep a pending request (ten minutes) and write a
`login_start` record for a client nobody has authenticated yet. Past its budget a client gets
`429` with `Retry-After`, nothing is stored, and only the first refusal of the run is audited.
"""

import subprocess

import pytest

import testbed
from flows import new_client


@pytest.fixture(scope="module")
def budget_of_three(bed):
    work = testbed.fresh_work(bed.work, "login-budget")
    port = testbed.free_port()
    admin = testbed.free_port()
    text = testbed.gateway_config(bed.work, port, bed.streamlit.port,
                                  extra="limits:\n  login_starts_per_minute: 3\n"
                                        f"server:\n  admin_listen: 127.0.0.1:{admin}\n")
    text = text.replace(f"file: {bed.work.resolve()}/audit.jsonl", f"file: {work}/audit.jsonl")
    g = testbed.OwnGateway()
    g.work = work
    g.metrics_url = f"http://127.0.0.1:{admin}/metrics"
    g.gateway = testbed.Gateway(bed.gateway.binary, text, work).start()
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
