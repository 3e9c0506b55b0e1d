"""Sessions in Redis behind Sentinel (`redis+sentinel://`): a master, a replica and three
sentinels, all Debian's `redis-server`, the sentinels started with `--sentinel`.

The gateway asks the sentinels where the master is, at start-up and every second after. When
the master dies, the sentinels promote the replica, and the gateway moves to it by itself:
users who signed in before stay signed in (their sessions were replicated), new logins work,
and the session cache's invalidation subscription follows.
"""

import pytest

import testbed
from deploy import logout, statuses_until, until
from flows import login_until_acs, new_client, post_to_acs


def health(client, replica):
    return client.get(replica.url + "/_stcore/health", allow_redirects=False).status_code


def log_in(replica, user):
    client = new_client()
    form = login_until_acs(client, replica.url, user, f"{user}-pass")
    assert post_to_acs(client, replica.deliver(form)).status_code == 303
    return client


@pytest.fixture
def sentinels(deployment):
    work = testbed.fresh_work(deployment.work, "sentinel")
    master = testbed.Redis(work / "master").start()
    replica = testbed.Redis(work / "replica", replicaof=master.port).start()
    watchers = [testbed.Sentinel(work / f"sentinel-{i}", master.port).start() for i in range(3)]
    servers = [master, replica, *watchers]
    try:
        # Each sentinel knows the replica and the two others before a test stops any of them.
        for w in watchers:
            until(lambda: str(replica.port) in w.cli("sentinel", "replicas", "gateway").stdout,
                  30, "the sentinels aware of the replica")
            until(lambda: w.cli("sentinel", "ckquorum", "gateway").stdout.startswith("OK 3"),
                  30, "the sentinels aware of each other")
        yield master, replica, watchers
    finally:
        for server in servers:
            server.stop()


def sentinel_url(watchers, credentials=""):
    hosts = ",".join(f"127.0.0.1:{w.port}" for w in watchers)
    return f"redis+sentinel://{credentials}{hosts}/gateway/0"


def test_the_gateway_follows_a_failover_and_keeps_the_sessions(deployment, sentinels):
    master, replica, watchers = sentinels
    # The first sentinel in the URL is down: the others are asked.
    watchers[0].stop()
    a = deployment.replica("sentinel", sentinel_url(watchers))
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

    # The master dies; the two sentinels left agree, and promote the replica.
    master.crash()
    until(lambda: watchers[1].master() == replica.port, 30, "the replica promoted")
    until(lambda: "Redis Sentinel: the master moved; connected to the new master" in log(), 20,
          "the gateway on the new master")
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
