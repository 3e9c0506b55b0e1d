"""Several gateway replicas over one Redis (`sessions.store: redis`), and Redis outages.

One deployment: one SP entity ID and public URL (that of replica A), one SP key pair, one IdP
that knows A's ACS URL. Every replica runs the same config except its `listen:` port and its
audit file, as replicas behind a load balancer would. The IdP's answer form targets A's ACS;
to deliver it to another replica a test swaps the host:port of the form's action.

The pair A/B share the Redis at REDIS_URL (default redis://127.0.0.1:6379; scripts/test.sh
makes sure one answers). The outage test starts a private redis-server of its own. The
deployment and its replicas are in deploy.py; the `deployment` and `pair` fixtures in
conftest.py.
"""

import re
import time

import pytest

import testbed
from deploy import statuses_until, until as _until
from flows import NAVIGATE, cookie_header, login, login_until_acs, new_client, post_to_acs
from flows import run_app


def health(client, replica):
    r = client.get(replica.url + "/_stcore/health", allow_redirects=False)
    return r.status_code


def test_a_session_made_on_one_replica_works_on_the_other(pair):
    a, b = pair
    client = new_client()
    login(client, a.url, "alice", "alice-pass")
    assert health(client, b) == 200
    assert health(client, a) == 200
    # Behind a load balancer both replicas serve one public URL: pages come from A's origin.
    page = run_app(b.url, {"Cookie": cookie_header(client)}, origin=a.url)
    assert page.headers["x-auth-user"] == ["alice"]
    assert page.headers["x-auth-groups"] == ["analytics,staff"]


def test_a_login_started_on_one_replica_finishes_on_the_other(pair, deployment):
    a, b = pair
    client = new_client()
    form = login_until_acs(client, b.url, "bob", "bob-pass")  # pending request made by B
    assert form.action.startswith(a.url)  # the IdP knows only the public ACS URL
    r = post_to_acs(client, form)
    assert (r.status_code, r.headers.get("Location")) == (303, "/")
    assert health(client, b) == 200


def test_a_response_used_on_one_replica_is_refused_on_the_other(pair):
    a, b = pair
    victim = new_client()
    form = login_until_acs(victim, a.url, "alice", "alice-pass")
    assert post_to_acs(victim, form).status_code == 303
    mark = b.audit_mark()

    # The same POST at B with the relay cookie put back: the pending request was used up on
    # A, and it is in the shared store, so B no longer knows the RelayState.
    attacker = new_client()
    attacker.cookies.set("saml-relay", form.fields["RelayState"])
    r = post_to_acs(attacker, b.deliver(form))
    assert r.status_code == 400
    assert "relay_state_unknown" in r.text

    # With a fresh login of its own started on B, the attacker has a live pending request and a
    # relay cookie; the old response answers another request, so InResponseTo does not match.
    # (The replay cache stands behind this: it is checked last, after InResponseTo.)
    attacker = new_client()
    r = attacker.get(b.url + "/saml/login?return_to=/", allow_redirects=False)
    assert r.status_code == 303
    relay = attacker.cookies.get("saml-relay")
    r = post_to_acs(attacker, b.deliver(form), RelayState=relay)
    assert r.status_code == 403
    assert "unknown_in_response_to" in r.text
    assert attacker.cookies.get("saml-session") is None
    assert health(attacker, b) == 401

    records = b.audit_since(mark)
    assert [(x["event"], x.get("reason")) for x in records] == [
        ("login_failure", "relay_state_unknown"),
        ("login_start", None),
        ("login_failure", "unknown_in_response_to"),
    ]


def test_logout_on_one_replica_ends_the_session_on_the_other(pair):
    a, b = pair
    client = new_client()
    login(client, a.url, "alice", "alice-pass")
    old_cookie = client.cookies.get("saml-session")
    assert health(client, b) == 200
    r = client.get(a.url + "/saml/logout")
    token = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)
    r = client.post(a.url + "/saml/logout", data={"csrf": token}, allow_redirects=False)
    assert r.status_code == 303

    replay = new_client()
    replay.cookies.set("saml-session", old_cookie)
    assert health(replay, b) == 401
    assert health(replay, a) == 401
    assert replay.get(b.url + "/", headers=NAVIGATE, allow_redirects=False).status_code == 303


def test_redis_outage_answers_503_fails_logins_closed_and_recovers(deployment):
    redis = testbed.Redis(deployment.work / "redis-outage").start()
    c = deployment.replica("outage", redis.url)
    client = new_client()
    form = login_until_acs(client, c.url, "alice", "alice-pass")
    assert post_to_acs(client, c.deliver(form)).status_code == 303
    assert health(client, c) == 200
    # A login in progress when Redis goes away.
    late = new_client()
    late_form = login_until_acs(late, c.url, "bob", "bob-pass")

    redis.stop()
    mark = c.audit_mark()
    started = time.monotonic()
    # The session cache may serve a record read within its TTL (2 s) until the replica's
    # invalidation subscription sees the connection drop; from then on Redis is asked.
    down = statuses_until(lambda: health(client, c), 503, 3, "no 503 while Redis was down")
    assert set(down) <= {200, 503}, f"answers while Redis was down: {down}"
    r = client.get(c.url + "/_stcore/health", allow_redirects=False)
    assert r.status_code == 503
    assert "store_unavailable" in r.text
    r = client.get(c.url + "/", headers=NAVIGATE, allow_redirects=False)
    assert r.status_code == 503 and "store_unavailable" in r.text
    # Logins fail closed, and each refusal is audited.
    r = new_client().get(c.url + "/saml/login?return_to=/", allow_redirects=False)
    assert r.status_code == 503 and "store_unavailable" in r.text
    r = post_to_acs(late, c.deliver(late_form))
    assert r.status_code == 503 and "store_unavailable" in r.text
    assert late.cookies.get("saml-session") is None
    assert time.monotonic() - started < 15, "requests during the outage must not hang"
    records = c.audit_since(mark)
    assert [(x["event"], x["reason"], x["path"]) for x in records] == [
        ("login_failure", "store_unavailable", "/saml/login"),
        ("login_failure", "store_unavailable", "/saml/acs"),
    ]

    # Redis back on the same port (empty: it keeps nothing on disk). The same gateway process
    # serves again: old sessions are gone, new logins work.
    pid = c.gateway.proc.pid
    testbed.Redis(deployment.work / "redis-outage", port=redis.port).start()
    _until(lambda: new_client().get(c.url + "/saml/login", allow_redirects=False)
           .status_code == 303, 15, "no login page after Redis came back")
    assert health(client, c) == 401
    again = new_client()
    form = login_until_acs(again, c.url, "bob", "bob-pass")
    assert post_to_acs(again, c.deliver(form)).status_code == 303
    assert health(again, c) == 200
    assert c.gateway.proc.pid == pid and c.gateway.proc.poll() is None


def test_start_up_stops_on_unreachable_redis_without_showing_the_password(deployment):
    port = testbed.free_port()  # nothing listens there
    env = {"SAML_GATEWAY_TEST_REDIS_URL": f"redis://:hunter2-pw@127.0.0.1:{port}/0"}
    with pytest.raises(testbed.StartError) as failed:
        deployment.replica("no-redis", "${SAML_GATEWAY_TEST_REDIS_URL}", env=env)
    log = (deployment.work / "no-redis" / "gateway.log").read_text()
    assert f"gateway.yaml: sessions.redis_url: cannot connect to Redis at 127.0.0.1:{port}" in log
    assert "hunter2" not in log
    assert "hunter2" not in str(failed.value)

    with pytest.raises(testbed.StartError):
        deployment.replica("bad-url", "http://:hunter2-pw@127.0.0.1/")
    log = (deployment.work / "bad-url" / "gateway.log").read_text()
    assert "gateway.yaml: sessions.redis_url: not a Redis URL" in log
    assert "hunter2" not in log


def test_acs_posts_during_an_outage_are_charged_to_the_login_budget(deployment):
    # A post whose RelayState matches its own relay cookie (anyone can send one) while Redis is
    # down: the store cannot say whether a login was started, so the post is charged, and a
    # flood of them is refused before it reaches the store or the audit log.
    redis = testbed.Redis(deployment.work / "redis-outage-budget").start()
    gateway = deployment.gateway("outage-budget", redis.url)
    gateway.config_text += "limits:\n  login_starts_per_minute: 2\n"
    c = deployment.started(gateway)
    redis.stop()
    mark = c.audit_mark()

    def post():
        return new_client().post(c.url + "/saml/acs",
                                 data={"SAMLResponse": "AAAA", "RelayState": "made-up"},
                                 headers={"Cookie": "saml-relay=made-up"},
                                 allow_redirects=False)
    answers = [post() for _ in range(3)]
    assert [r.status_code for r in answers] == [503, 503, 429], [r.text for r in answers]
    assert [(x["reason"], x["path"]) for x in c.audit_since(mark)] == [
        ("store_unavailable", "/saml/acs"), ("store_unavailable", "/saml/acs"),
        ("rate_limited", "/saml/acs")]
