"""Sessions in a Redis reached over TLS (`rediss://`), as managed Redis services and hardened
self-hosted servers require.

The server here is Debian's `redis-server` speaking TLS only, with a certificate from a private
CA, asking clients for a certificate of their own (`tls-auth-clients yes`, Redis's default),
and with one ACL user limited to the gateway's keys and channel (`~saml-gw:* &saml-gw:*`) and
no `@dangerous` command; its default user is off. The gateway checks the server's certificate
against `sessions.redis_tls.ca_file` (or the system's roots), shows `cert_file`, and signs in
as the user named in the URL.
"""

import secrets
import shutil
import signal
import subprocess
from types import SimpleNamespace

import pytest

import testbed
from deploy import Deployment, logout, statuses_until, until
from flows import login, new_client

ACL = ["~saml-gw:*", "&saml-gw:*", "+@all", "-@dangerous"]


@pytest.fixture(scope="module")
def certs(bed):
    work = testbed.fresh_work(bed.work, "redis-tls-certs")
    ca, issued = testbed.make_ca(work, "redis-ca", ["redis-server", "gateway-client",
                                                     ("elsewhere", "DNS:redis.internal")])
    other_ca, _ = testbed.make_ca(work, "other-ca", [])
    return SimpleNamespace(ca=ca, server=issued["redis-server"],
                           client=issued["gateway-client"], elsewhere=issued["elsewhere"],
                           other_ca=other_ca, work=work)


@pytest.fixture(scope="module")
def redis(bed, certs):
    tls = testbed.RedisTls(*certs.server, certs.ca, client=certs.client)
    user = ("saml-gateway", "pw-" + secrets.token_hex(12), ACL)
    server = testbed.Redis(testbed.fresh_work(bed.work, "redis-tls"), tls=tls, user=user).start()
    try:
        yield server
    finally:
        server.stop()


def tls_lines(ca=None, client=None):
    """`sessions.redis_tls` lines for a replica's config."""
    lines = "  redis_tls:\n"
    if ca:
        lines += f"    ca_file: {ca}\n"
    if client:
        lines += f"    cert_file: {client[0]}\n    key_file: {client[1]}\n"
    return lines


def health(client, replica):
    return client.get(replica.url + "/_stcore/health", allow_redirects=False).status_code


def start_fails(deployment, name, url, sessions):
    """Starts a replica that must stop at start-up; returns what it said."""
    gateway = deployment.gateway(name, url, sessions=sessions)
    with pytest.raises(testbed.StartError) as failed:
        deployment.started(gateway)
    return str(failed.value)


def test_sessions_live_in_redis_over_tls_with_a_client_certificate_and_an_acl_user(
        deployment, redis, certs):
    settings = tls_lines(certs.ca, certs.client)
    a = deployment.replica("a", redis.url, sessions=settings)
    b = deployment.replica("b", redis.url, sessions=settings)
    alice = new_client()
    mark = a.audit_mark()
    login(alice, a.url, "alice", "alice-pass")
    assert [r["event"] for r in a.audit_since(mark)][-1] == "login_success"
    # The session is in that server, under the deployment's prefix, and nowhere else.
    keys = redis.cli("--scan", "--pattern", "saml-gw:*:session:*").stdout.split()
    assert len(keys) == 1, keys
    # The other replica reads it over its own TLS connection (and caches it).
    assert health(alice, b) == 200
    # Both replicas follow the invalidation channel (their session caches rely on it),
    # subscribed over TLS as the ACL user.
    [channel] = redis.cli("pubsub", "channels", "saml-gw:*").stdout.split()
    assert channel.endswith(":invalidate"), channel
    assert redis.cli("pubsub", "numsub", channel).stdout.split() == [channel, "2"]
    for replica in (a, b):
        log = replica.gateway.log_path.read_text()
        assert "no invalidation subscription" not in log, log
    logout(alice, a.url)
    statuses_until(lambda: health(alice, b), 401, 5, "B refuses the signed-out session")
    # The session commands reach the same server the same way.
    login(alice, a.url, "alice", "alice-pass")
    listed = subprocess.run([str(deployment.binary), "sessions", "list", "--config",
                             str(a.gateway.config_path)], capture_output=True, text=True,
                            timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "alice" in listed.stdout
    assert redis.user[1] not in listed.stdout + listed.stderr


def test_a_server_certificate_from_another_ca_stops_start_up(deployment, redis, certs):
    said = start_fails(deployment, "other-ca", redis.url,
                       tls_lines(certs.other_ca, certs.client))
    assert "sessions.redis_url: cannot connect to Redis at 127.0.0.1:" in said, said
    assert "invalid peer certificate: UnknownIssuer" in said, said
    assert redis.user[1] not in said
    # Without a CA file, the system's roots are trusted, and they do not know this CA either.
    said = start_fails(deployment, "system-roots", redis.url, tls_lines(None, certs.client))
    assert "sessions.redis_url: cannot connect to Redis" in said, said
    assert "invalid peer certificate: UnknownIssuer" in said, said


def test_a_server_certificate_for_another_name_stops_start_up(deployment, certs):
    # From the trusted CA, but for redis.internal, while the gateway connects to 127.0.0.1.
    tls = testbed.RedisTls(*certs.elsewhere, certs.ca)
    server = testbed.Redis(certs.work / "elsewhere-redis", tls=tls)
    server.ping = lambda: server.cli("--sni", "redis.internal", "--insecure", "ping"
                                     ).stdout.strip() == "PONG"
    server.work.mkdir(exist_ok=True)
    server.start()
    try:
        said = start_fails(deployment, "other-name", server.url, tls_lines(certs.ca))
        assert "sessions.redis_url: cannot connect to Redis at 127.0.0.1:" in said, said
        assert 'certificate not valid for name "127.0.0.1"' in said, said
    finally:
        server.stop()


def test_a_server_that_asks_for_a_client_certificate_is_refused_without_one(
        deployment, redis, certs):
    said = start_fails(deployment, "no-client-cert", redis.url, tls_lines(certs.ca))
    assert "sessions.redis_url: cannot connect to Redis at 127.0.0.1:" in said, said
    assert "CertificateRequired" in said, said


def test_a_wrong_password_stops_start_up_without_showing_it(deployment, redis, certs):
    url = redis.url.replace(f":{redis.user[1]}@", ":wrong-pw-7f3a@")
    said = start_fails(deployment, "wrong-password", url, tls_lines(certs.ca, certs.client))
    assert "sessions.redis_url: cannot connect to Redis at 127.0.0.1:" in said, said
    assert "AuthenticationFailed" in said, said
    assert "wrong-pw-7f3a" not in said and redis.user[1] not in said


def check_config(deployment, name, url, sessions):
    gateway = deployment.gateway(name, url, sessions=sessions)
    gateway.work.mkdir(parents=True, exist_ok=True)
    gateway.config_path.write_text(gateway.config_text)
    return subprocess.run([str(deployment.binary), "check-config", "--config",
                           str(gateway.config_path)], capture_output=True, text=True, timeout=60)


def test_bad_tls_settings_are_named_by_check_config(deployment, redis, certs):
    # Certificate checks turned off in the URL are refused.
    r = check_config(deployment, "insecure", redis.url + "#insecure", tls_lines(certs.ca))
    assert r.returncode != 0
    assert "sessions.redis_url: " in r.stderr and "#insecure" in r.stderr, r.stderr
    assert redis.user[1] not in r.stderr
    # TLS settings with a plain redis:// URL.
    plain = redis.url.replace("rediss://", "redis://")
    r = check_config(deployment, "plain", plain, tls_lines(certs.ca))
    assert r.returncode != 0
    assert "sessions.redis_tls: applies only to a rediss:// or rediss+sentinel:// " \
        "sessions.redis_url" in r.stderr, \
        r.stderr
    # A key that is not the client certificate's.
    r = check_config(deployment, "mismatch", redis.url,
                     tls_lines(certs.ca, (certs.client[0], certs.server[1])))
    assert r.returncode != 0
    assert ("sessions.redis_tls.key_file: is not the key of the certificate in "
            "sessions.redis_tls.cert_file: " + str(certs.server[1])) in r.stderr, r.stderr
    assert "PRIVATE KEY" not in r.stderr
    # A CA file that holds no certificate.
    r = check_config(deployment, "no-ca", redis.url, tls_lines(certs.client[1], certs.client))
    assert r.returncode != 0
    assert "sessions.redis_tls.ca_file: holds no PEM certificate" in r.stderr, r.stderr
    # A certificate without its key.
    r = check_config(deployment, "half", redis.url,
                     f"  redis_tls:\n    cert_file: {certs.client[0]}\n")
    assert r.returncode != 0
    assert "sessions.redis_tls.key_file: is required with sessions.redis_tls.cert_file" \
        in r.stderr, r.stderr
    # And the good settings pass.
    r = check_config(deployment, "good", redis.url, tls_lines(certs.ca, certs.client))
    assert r.returncode == 0, r.stderr


def log_until(replica, line, timeout=20):
    """Waits for `line` in the replica's log."""
    until(lambda: line in replica.gateway.log_path.read_text(), timeout, f"'{line}' in the log")


def test_sighup_renews_the_client_certificate_without_a_restart(bed, certs):
    """A client certificate from a new CA (short-lived certificates, a CA rotation): the server
    then refuses the old one, and the gateway, given the new files and a SIGHUP, reconnects with
    them. Files that fail the checks change nothing."""
    work = testbed.fresh_work(bed.work, "redis-tls-renewal")
    new_ca, issued = testbed.make_ca(work, "redis-ca-2", ["redis-server-2", "gateway-client-2",
                                                          "gateway-client-3"])
    # The gateway trusts both CAs for the server, which moves to the new one with its clients.
    both = work / "both-cas.crt"
    both.write_text(certs.ca.read_text() + new_ca.read_text())
    cert, key = work / "client.crt", work / "client.key"
    shutil.copy(certs.client[0], cert)
    shutil.copy(certs.client[1], key)
    server = testbed.Redis(work / "redis", tls=testbed.RedisTls(*certs.server, certs.ca,
                                                                client=certs.client)).start()
    # A deployment of its own: its first replica answers the IdP's ACS URL.
    deployment = Deployment(work / "deployment", bed.gateway.binary, bed.streamlit.port)
    try:
        a = deployment.replica("a", server.url, sessions=tls_lines(both, (cert, key)))
        alice = new_client()
        login(alice, a.url, "alice", "alice-pass")
        assert health(alice, a) == 200
        # The server moves to the new CA, and takes client certificates from it only.
        port = server.port
        server.stop()
        server = testbed.Redis(work / "redis", port=port, tls=testbed.RedisTls(
            *issued["redis-server-2"], new_ca, client=issued["gateway-client-2"])).start()
        starts = lambda: new_client().get(a.url + "/saml/login?return_to=/",
                                          allow_redirects=False).status_code
        statuses_until(starts, 503, 30, "logins refused while the old certificate is shown")

        # New files and a SIGHUP: the gateway reconnects with them.
        shutil.copy(issued["gateway-client-2"][0], cert)
        shutil.copy(issued["gateway-client-2"][1], key)
        a.gateway.proc.send_signal(signal.SIGHUP)
        log_until(a, "reconnected to Redis with the renewed TLS files")
        bob = new_client()
        login(bob, a.url, "bob", "bob-pass")
        assert health(bob, a) == 200

        # Renewed again while every connection is up: the invalidation subscription moves to
        # the new certificate too, instead of showing the old one for as long as it lasts.
        until(lambda: server.cli("pubsub", "channels", "saml-gw:*").stdout.split(), 20,
              "the subscription back on the renewed connection")
        [channel] = server.cli("pubsub", "channels", "saml-gw:*").stdout.split()
        subscribed = lambda: server.cli("pubsub", "numsub", channel).stdout.split() == [channel, "1"]
        until(subscribed, 10, "one subscription")
        mark = len(a.gateway.log_path.read_text())
        shutil.copy(issued["gateway-client-3"][0], cert)
        shutil.copy(issued["gateway-client-3"][1], key)
        a.gateway.proc.send_signal(signal.SIGHUP)
        since = lambda: a.gateway.log_path.read_text()[mark:]
        until(lambda: "subscribing again on the connection now in force" in since(), 20,
              "the subscription renewed")
        until(subscribed, 10, "one subscription again")
        assert "reconnected to Redis with the renewed TLS files" in since()

        # Files that pass the checks but that the server refuses (the old CA's): the connection
        # in force stays.
        shutil.copy(certs.client[0], cert)
        shutil.copy(certs.client[1], key)
        a.gateway.proc.send_signal(signal.SIGHUP)
        log_until(a, "Redis reload refused: no connection with the renewed TLS files")
        assert health(bob, a) == 200
        login(new_client(), a.url, "carol", "carol-pass")

        # A key that is not the certificate's: refused, and the connection in force stays.
        shutil.copy(issued["gateway-client-3"][0], cert)
        a.gateway.proc.send_signal(signal.SIGHUP)
        log_until(a, "Redis reload refused; the connection in force stays")
        assert "sessions.redis_tls.key_file: is not the key" in a.gateway.log_path.read_text()
        assert health(bob, a) == 200
        login(new_client(), a.url, "alice", "alice-pass")
        assert "PRIVATE KEY" not in a.gateway.log_path.read_text()
    finally:
        deployment.stop()
        server.stop()
