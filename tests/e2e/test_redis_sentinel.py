"""Sessions in Redis behind Sentinel (`redis+sentinel://`): a master, a replica and three
sentinels, all Debian's `redis-server`, the sentinels started with `--sentinel`; then the same
over TLS (`rediss+sentinel://`) with client certificates, an ACL user on the servers and a
password on the sentinels.

The gateway asks the sentinels where the master is, at start-up and every second after. When
the master dies, the sentinels promote the replica, and the gateway moves to it by itself:
users who signed in before stay signed in (their sessions were replicated), new logins work,
and the session cache's invalidation subscription follows.
"""

import contextlib
import secrets
import signal
import time

import pytest

import testbed
from deploy import logout, metric, statuses_until, until
from flows import login_until_acs, new_client, post_to_acs


def health(client, replica):
    return client.get(replica.url + "/_stcore/health", allow_redirects=False).status_code


def log_in(replica, user):
    client = new_client()
    form = login_until_acs(client, replica.url, user, f"{user}-pass")
    assert post_to_acs(client, replica.deliver(form)).status_code == 303
    return client


@contextlib.contextmanager
def redis_set(work, tls=None, user=None, sentinel_password=None):
    """A master, its replica and three sentinels, yielded once every sentinel knows the replica
    and the two others. With `user`, it is the servers' one user, the replica's and the
    sentinels' way in, and its password the sentinels' own unless `sentinel_password` is
    given."""
    servers = []
    try:
        master = testbed.Redis(work / "master", tls=tls, user=user).start()
        servers.append(master)
        replica = testbed.Redis(work / "replica", tls=tls, user=user,
                                replicaof=master.port).start()
        servers.append(replica)
        for i in range(3):
            servers.append(testbed.Sentinel(
                work / f"sentinel-{i}", master.port, tls=tls,
                password=sentinel_password or (user and user[1]),
                master_user=user and user[:2]).start())
        watchers = servers[2:]
        for w in watchers:
            until(lambda: str(replica.port) in w.cli("sentinel", "replicas", "gateway").stdout,
                  30, "the sentinels aware of the replica")
            until(lambda: w.cli("sentinel", "ckquorum", "gateway").stdout.startswith("OK 3"),
                  30, "the sentinels aware of each other")
        yield master, replica, watchers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def sentinels(deployment):
    with redis_set(testbed.fresh_work(deployment.work, "sentinel")) as servers:
        yield servers


def sentinel_url(watchers, credentials=""):
    hosts = ",".join(f"127.0.0.1:{w.port}" for w in watchers)
    return f"redis+sentinel://{credentials}{hosts}/gateway/0"


def test_the_gateway_follows_a_failover_and_keeps_the_sessions(deployment, sentinels):
    master, replica, watchers = sentinels
    # The first sentinel in the URL is down: the others are asked.
    watchers[0].stop()
    admin = testbed.free_port()
    a = deployment.replica("sentinel", sentinel_url(watchers),
                           extra=f"server:\n  admin_listen: 127.0.0.1:{admin}\n")
    changes = lambda: metric(admin, "saml_gateway_redis_master_changes_total")
    assert changes() == 0
    log = lambda: a.gateway.log_path.read_text()
    assert f"master gateway of the sentinels 127.0.0.1:{watchers[0].port}" in log()
    alice = log_in(a, "alice")
    assert health(alice, a) == 200
    # The session is on the master, and the replica has it before the master goes.
    keys = lambda server: server.cli("--scan", "--pattern", "saml-gw:*:session:*").stdout.split()
    assert len(keys(master)) == 1
    assert master.cli("wait", "1", "5000").stdout.strip() == "1"
    assert keys(replica) == keys(master)
    channels = lambda: master.cli("pubsub", "channels", "saml-gw:*").stdout.split()
    until(channels, 10, "the invalidation subscription")
    [channel] = channels()

    # The gateway looks every second, on the connection kept from its last look: in 3.5 s the
    # sentinel accepts the connection of the second `INFO` below (and at most one more, should
    # another sentinel connect again); without keeping it, three or four more.
    accepted = lambda: int(watchers[1].cli("info", "stats").stdout
                           .split("total_connections_received:")[1].split()[0])
    before = accepted()
    time.sleep(3.5)
    assert accepted() - before <= 2

    moved = "Redis Sentinel: the master moved; connected to the new master"
    assert moved not in log()

    # The master dies; the two sentinels left agree, and promote the replica.
    master.crash()
    until(lambda: watchers[1].master() == replica.port, 60, "the replica promoted")
    until(lambda: moved in log(), 20, "the gateway on the new master")
    seen = statuses_until(lambda: health(alice, a), 200, 15, "alice's session on the new master")
    assert 401 not in seen, f"the session was lost: {seen}"
    bob = log_in(a, "bob")
    assert health(bob, a) == 200
    assert len(keys(replica)) == 2
    subscribed = lambda: replica.cli("pubsub", "numsub", channel).stdout.split() == [channel, "1"]
    until(subscribed, 15, "the invalidation subscription on the new master")
    # Sign-outs reach the new master too.
    logout(bob, a.url)
    assert health(bob, a) == 401
    assert health(alice, a) == 200
    # One move, not one per look at the sentinels.
    assert log().count(moved) == 1
    assert changes() == 1


def test_over_tls_with_an_acl_user_and_sentinels_that_ask_for_a_password(deployment):
    work = testbed.fresh_work(deployment.work, "sentinel-tls")
    ca, issued = testbed.make_ca(work, "sentinel-ca", ["redis-server", "gateway-client"])
    client = issued["gateway-client"]
    tls = testbed.RedisTls(*issued["redis-server"], ca, client=client)
    # One user for the gateway, the replica and the sentinels on the servers (default user off);
    # the sentinels ask for the same password (`requirepass`) and have no such user.
    user = ("saml-gateway", "pw-" + secrets.token_hex(12), ["~*", "&*", "+@all"])
    with redis_set(work, tls=tls, user=user) as (master, replica, watchers):
        # The sentinels answer nobody who has not signed in.
        refused = watchers[0].cli("sentinel", "get-master-addr-by-name", "gateway",
                                  signed_in=False)
        assert "NOAUTH" in refused.stdout + refused.stderr, refused
        password_file = work / "redis-password"
        password_file.write_text(user[1] + "\n")
        password_file.chmod(0o600)
        hosts = ",".join(f"127.0.0.1:{w.port}" for w in watchers)
        # Database 2: the sentinels, which have none, are never asked to select it.
        url = f"rediss+sentinel://saml-gateway@{hosts}/gateway/2"
        sessions = (f"  redis_password_file: {password_file}\n  redis_tls:\n"
                    f"    ca_file: {ca}\n    cert_file: {client[0]}\n    key_file: {client[1]}\n")
        a = deployment.replica("sentinel-tls", url, sessions=sessions)
        log = lambda: a.gateway.log_path.read_text()
        alice = log_in(a, "alice")
        assert health(alice, a) == 200
        assert master.cli("wait", "1", "5000").stdout.strip() == "1"

        master.crash()
        until(lambda: watchers[0].master() == replica.port, 60, "the replica promoted")
        until(lambda: "Redis Sentinel: the master moved" in log(), 20,
              "the gateway on the new master")
        seen = statuses_until(lambda: health(alice, a), 200, 15, "alice's session")
        assert 401 not in seen, f"the session was lost: {seen}"
        bob = log_in(a, "bob")
        assert health(bob, a) == 200
        assert user[1] not in log() + a.audit_path.read_text()


def test_sentinels_with_a_password_of_their_own_never_see_the_masters(deployment):
    work = testbed.fresh_work(deployment.work, "sentinel-own-password")
    user = ("saml-gateway", "pw-" + secrets.token_hex(12), ["~*", "&*", "+@all"])
    sentinel_password = "sentinel-" + secrets.token_hex(12)
    with redis_set(work, user=user, sentinel_password=sentinel_password) as (master, _, watchers):
        password_file = work / "redis-password"
        sentinel_file = work / "sentinel-password"
        for f in (password_file, sentinel_file):
            f.touch(mode=0o600)
        password_file.write_text(user[1] + "\n")
        hosts = ",".join(f"127.0.0.1:{w.port}" for w in watchers)
        url = f"redis+sentinel://saml-gateway@{hosts}/gateway/0"
        files = f"  redis_password_file: {password_file}\n"
        with_sentinel_file = files + f"  redis_sentinel_password_file: {sentinel_file}\n"

        def refused_at_start(name, sessions):
            with pytest.raises(testbed.StartError) as failed:
                deployment.started(deployment.gateway(name, url, sessions=sessions))
            said = str(failed.value)
            assert "no sentinel named the master" in said, said
            assert user[1] not in said and sentinel_password not in said, said
            return said

        # Without the sentinels' password, the master's does not open them.
        said = refused_at_start("sentinel-without-its-password", files)
        assert "it asks for a password; with the master's" in said, said
        # A wrong one is named as theirs, with its file.
        sentinel_file.write_text("not-" + sentinel_password + "\n")
        said = refused_at_start("sentinel-wrong-password", with_sentinel_file)
        assert "with the sentinels' own password" in said, said
        assert f"sessions.redis_sentinel_password_file: {sentinel_file}" in said, said
        # Theirs opens them; the master's opens the master.
        sentinel_file.write_text(sentinel_password + "\n")
        a = deployment.replica("sentinel-own-password", url, sessions=with_sentinel_file)
        alice = log_in(a, "alice")
        assert health(alice, a) == 200
        assert len(master.cli("--scan", "--pattern", "saml-gw:*:session:*").stdout.split()) == 1
        log = lambda: a.gateway.log_path.read_text()

        # Rotation: the sentinels take both passwords; the file gets the new one; SIGHUP.
        new_password = "sentinel-" + secrets.token_hex(12)
        for w in watchers:
            assert w.cli("acl", "setuser", "default", f">{new_password}").stdout.strip() == "OK"
        sentinel_file.write_text(new_password + "\n")
        a.gateway.proc.send_signal(signal.SIGHUP)
        until(lambda: "reconnected to Redis with the sentinels' new password "
              "(sessions.redis_sentinel_password_file)" in log(), 20, "the renewal")
        # The old one goes, and every connection to the sentinels is cut: the next looks sign
        # in with the new one, without a word in the log.
        for w in watchers:
            w.password = new_password
            assert w.cli("acl", "setuser", "default", f"<{sentinel_password}").stdout.strip() \
                == "OK"
            w.cli("client", "kill", "type", "normal")
        problems = "Redis Sentinel"
        before = log().count(problems)
        time.sleep(3)
        assert log().count(problems) == before, log()
        assert health(alice, a) == 200
        said = log() + a.audit_path.read_text()
        for secret in (user[1], sentinel_password, new_password):
            assert secret not in said


def test_start_up_names_the_sentinels_that_did_not_answer(deployment, sentinels):
    _, _, watchers = sentinels
    for watcher in watchers:
        watcher.stop()
    gateway = deployment.gateway("no-sentinel", sentinel_url(watchers, ":pw-s3cret@"))
    with pytest.raises(testbed.StartError) as failed:
        deployment.started(gateway)
    said = str(failed.value)
    assert "sessions.redis_url: cannot connect to Redis at master gateway of the sentinels" in said
    assert "no sentinel named the master" in said
    for watcher in watchers:
        assert f"127.0.0.1:{watcher.port}: " in said
    assert "pw-s3cret" not in said
