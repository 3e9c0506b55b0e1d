"""Operating the shared store: the revocation command, Redis restarts, start-up before Redis.

- `saml-gateway sessions list|revoke --config FILE` works on the Redis the replicas share: a
  revoked session ends on every replica and its open WebSockets close; with the memory store
  the commands refuse, since no other process can reach a gateway's memory.
- With `appendonly yes` and `appendfsync always`, a Redis killed and started again on the same
  directory keeps every session: users stay signed in.
- With `sessions.redis_connect_retry`, a gateway started before its Redis waits for it.
- With `sessions.redis_password_file`, a password rotated on the server and in the file goes
  in force on SIGHUP, without a restart.
- With `sessions.redis_record_key_file`, session records are sealed: a record written into
  Redis without the key, or a genuine one copied under a session ID of the copier's choosing,
  signs nobody in.
"""

import hashlib
import json
import secrets
import signal
import subprocess
import threading
import time
import urllib.parse

import pytest

import testbed
from deploy import REDIS_URL, metric, seconds_until_closed, statuses_until, until
from flows import cookie_header, login, login_until_acs, new_client, open_stream, post_to_acs
from flows import run_app


def sessions_command(binary, config_path, *args):
    return subprocess.run([str(binary), "sessions", *args, "--config", str(config_path)],
                          capture_output=True, text=True, timeout=60)


def health(client, replica):
    return client.get(replica.url + "/_stcore/health", allow_redirects=False).status_code


def hang_up_after_writing(replica, path, text, logged, what):
    """Writes `text` to `path`, sends the replica SIGHUP and waits until `logged()` holds."""
    path.write_text(text)
    replica.gateway.proc.send_signal(signal.SIGHUP)
    until(logged, 20, what)


def _login_hashes(replica, mark, user):
    """The session hashes of `user`'s logins after `mark`, oldest first."""
    return [r["session"] for r in replica.audit_since(mark)
            if r["event"] == "login_success" and r["user"] == user]


def test_an_admin_lists_and_revokes_a_users_sessions_on_every_replica(pair, deployment):
    a, b = pair
    binary = deployment.binary
    alice, alice2, bob = new_client(), new_client(), new_client()
    mark = a.audit_mark()
    login(alice, a.url, "alice", "alice-pass")
    login(alice2, a.url, "alice", "alice-pass")
    login(bob, a.url, "bob", "bob-pass")
    alice_hash, alice2_hash = _login_hashes(a, mark, "alice")
    [bob_hash] = _login_hashes(a, mark, "bob")

    r = sessions_command(binary, a.gateway.config_path, "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["USER", "NAMEID", "SESSION", "CREATED", "LAST", "SEEN",
                                "EXPIRES", "IDP"]
    rows = {line.split()[2]: line.split() for line in lines[1:-1]}
    assert rows[alice_hash][:2] == ["alice", "alice"]
    assert rows[alice_hash][-1] == "default", rows[alice_hash]
    assert rows[bob_hash][:2] == ["bob", "bob"]
    assert rows[alice2_hash][:2] == ["alice", "alice"]
    for client in (alice, alice2, bob):
        assert client.cookies.get("saml-session") not in r.stdout

    ws = open_stream(b.url, {"Cookie": cookie_header(alice)}, origin=a.url)
    mark_a, mark_b = a.audit_mark(), b.audit_mark()
    try:
        r = sessions_command(binary, b.gateway.config_path, "revoke", "--user", "alice")
        assert r.returncode == 0, r.stderr
        assert "revoked on every replica" in r.stdout
        took = seconds_until_closed(ws, 5)
    finally:
        ws.close()
    for client in (alice, alice2):
        assert health(client, a) == 401 and health(client, b) == 401
    assert health(bob, b) == 200

    # The command audits each revocation in the audit file of the config it was given (B's),
    # and B audits the socket it closed.
    revoked = [r for r in b.audit_since(mark_b) if r["event"] == "session_revoked"]
    by_command = [r for r in revoked if r.get("path") is None]
    by_socket = [r for r in revoked if r.get("path") == "/_stcore/stream"]
    assert {(r["reason"], r["user"]) for r in revoked} == {("admin", "alice")}
    assert {alice_hash, alice2_hash} <= {r["session"] for r in by_command}
    assert [r["session"] for r in by_socket] == [alice_hash]
    assert a.audit_since(mark_a) == []

    r = sessions_command(binary, a.gateway.config_path, "list")
    assert r.returncode == 0, r.stderr
    listed = [line.split() for line in r.stdout.splitlines()[1:-1]]
    assert "alice" not in [row[0] for row in listed]
    assert bob_hash in [row[2] for row in listed]
    print(f"socket closed {took:.1f} s after the revocation")


def test_the_commands_refuse_the_memory_store(bed):
    for args in (["list"], ["revoke", "--user", "alice"]):
        r = sessions_command(bed.gateway.binary, bed.gateway.config_path, *args)
        assert r.returncode != 0
        assert "sessions.store: is `memory`" in r.stderr
        assert "no other process can list or end them" in r.stderr


def test_sessions_survive_a_redis_crash_with_appendonly_always(deployment):
    work = deployment.work / "redis-aof"
    redis = testbed.Redis(work, appendonly=True, appendfsync="always").start()
    again = None
    try:
        c = deployment.replica("aof", redis.url)
        client = new_client()
        form = login_until_acs(client, c.url, "alice", "alice-pass")
        assert post_to_acs(client, c.deliver(form)).status_code == 303
        assert health(client, c) == 200

        redis.crash()
        # The session cache may serve a record read within its TTL (2 s) until the replica's
        # invalidation subscription sees the connection drop; from then on Redis is asked.
        down = statuses_until(lambda: health(client, c), 503, 3, "no 503 while Redis was down")
        assert set(down) <= {200, 503}, f"answers while Redis was down: {down}"
        again = testbed.Redis(work, port=redis.port, appendonly=True,
                              appendfsync="always").start()
        seen = statuses_until(lambda: health(client, c), 200, 15, "no 200 after Redis came back")
        assert 401 not in seen, f"the session was lost: {seen}"
        page = run_app(c.url, {"Cookie": cookie_header(client)}, origin=deployment.public_url)
        assert page.headers["x-auth-user"] == ["alice"]
    finally:
        for server in (redis, again):
            if server is not None:
                server.stop()


def test_start_up_waits_for_redis_within_redis_connect_retry(deployment):
    redis = testbed.Redis(deployment.work / "redis-late")
    gateway = deployment.gateway("late", redis.url, sessions="  redis_connect_retry: 10s\n")
    timer = threading.Timer(2.0, redis.start)
    started = time.monotonic()
    timer.start()
    try:
        replica = deployment.started(gateway)
        waited = time.monotonic() - started
        assert waited >= 2
        assert "Redis is not reachable yet" in gateway.log_path.read_text()
        client = new_client()
        form = login_until_acs(client, replica.url, "bob", "bob-pass")
        assert post_to_acs(client, replica.deliver(form)).status_code == 303
        assert health(client, replica) == 200
    finally:
        timer.join()
        redis.stop()


def test_start_up_gives_up_when_redis_connect_retry_has_passed(deployment):
    port = testbed.free_port()  # nothing listens there
    gateway = deployment.gateway("never", f"redis://127.0.0.1:{port}/0",
                                 sessions="  redis_connect_retry: 2s\n")
    started = time.monotonic()
    with pytest.raises(testbed.StartError):
        deployment.started(gateway)
    assert 2 <= time.monotonic() - started < 20
    log = gateway.log_path.read_text()
    assert f"sessions.redis_url: cannot connect to Redis at 127.0.0.1:{port}" in log
    assert "redis_connect_retry: 2s" in log


def test_a_rotated_redis_password_goes_in_force_on_sighup(deployment):
    """The password kept in a file (a mounted secret, a secrets agent's file), rotated as Redis
    ACLs allow: the user gets a second password, the file gets it and the gateway a SIGHUP,
    then the old password is removed and every connection made with it is closed. Users stay
    signed in. A file the server refuses, or one that fails the checks, changes nothing."""
    work = testbed.fresh_work(deployment.work, "redis-password")
    old, new = "old-" + secrets.token_hex(12), "new-" + secrets.token_hex(12)
    wrong = "wrong-" + secrets.token_hex(12)
    # The user may set its own passwords here (no `-@dangerous`), so the test can rotate them.
    redis = testbed.Redis(work / "redis", user=("saml-gateway", old, ["~*", "&*", "+@all"]))
    redis.start()
    password_file = work / "redis-password"
    password_file.write_text(old + "\n")
    password_file.chmod(0o600)
    url = f"redis://saml-gateway@127.0.0.1:{redis.port}/0"
    sessions = f"  redis_password_file: {password_file}\n"
    try:
        admin = testbed.free_port()
        c = deployment.replica("password", url, sessions=sessions,
                               extra=f"server:\n  admin_listen: 127.0.0.1:{admin}\n")
        log = lambda: c.gateway.log_path.read_text()
        alice = new_client()
        form = login_until_acs(alice, c.url, "alice", "alice-pass")
        assert post_to_acs(alice, c.deliver(form)).status_code == 303
        assert health(alice, c) == 200
        channels = lambda: redis.cli("pubsub", "channels", "saml-gw:*").stdout.split()
        until(channels, 10, "the invalidation subscription")
        [channel] = channels()

        # Rotation: the server takes both passwords; the file gets the new one; SIGHUP.
        assert redis.cli("acl", "setuser", "saml-gateway", f">{new}").stdout.strip() == "OK"
        hang_up_after_writing(c, password_file, new + "\n", lambda: "reconnected to Redis with "
                              "the new password (sessions.redis_password_file)" in log(),
                              "the reconnection")
        until(lambda: "subscribing again on the connection now in force" in log(), 20,
              "the subscription renewed")
        assert metric(admin, "saml_gateway_redis_renewals_total") == 1
        # The old password goes; every connection still signed in with it is closed.
        redis.user = ("saml-gateway", new, redis.user[2])
        assert redis.cli("acl", "setuser", "saml-gateway", f"<{old}").stdout.strip() == "OK"
        redis.cli("client", "kill", "user", "saml-gateway")
        seen = statuses_until(lambda: health(alice, c), 200, 15, "alice's session after the kill")
        assert 401 not in seen, f"the session was lost: {seen}"
        bob = new_client()
        form = login_until_acs(bob, c.url, "bob", "bob-pass")
        assert post_to_acs(bob, c.deliver(form)).status_code == 303
        assert health(bob, c) == 200
        subscribed = lambda: redis.cli("pubsub", "numsub", channel).stdout.split() == [channel, "1"]
        until(subscribed, 15, "the invalidation subscription, with the new password")

        # A password the server refuses: the connection in force stays.
        hang_up_after_writing(c, password_file, wrong + "\n", lambda: "Redis reload refused: "
                              "no connection with the new password" in log(), "the refusal")
        assert health(alice, c) == 200
        # A file that fails the checks: the same.
        hang_up_after_writing(c, password_file, new + "\nsecond line\n", lambda: "Redis reload "
                              "refused; the connection in force stays" in log(),
                              "the refusal by the checks")
        assert metric(admin, "saml_gateway_redis_renewals_total") == 1, "refusals do not count"
        assert "sessions.redis_password_file: holds more than one line" in log()
        assert health(bob, c) == 200
        carol = new_client()
        form = login_until_acs(carol, c.url, "carol", "carol-pass")
        assert post_to_acs(carol, c.deliver(form)).status_code == 303

        # No password in any output.
        c.gateway.stop()
        shown = log() + c.audit_path.read_text()
        for password in (old, new, wrong):
            assert password not in shown

        # At start-up, a password the server refuses stops the gateway, named but not shown.
        password_file.write_text(wrong + "\n")
        refused = deployment.gateway("refused", url, sessions=sessions)
        with pytest.raises(testbed.StartError) as failed:
            deployment.started(refused)
        said = str(failed.value)
        assert "sessions.redis_url: cannot connect to Redis at 127.0.0.1" in said, said
        assert f"signed in with the password in sessions.redis_password_file: {password_file}" \
            in said, said
        assert wrong not in said
    finally:
        redis.stop()


def test_sealed_session_records_sign_nobody_in_when_forged_or_copied(deployment):
    """Someone with write access to Redis but not the key: alice's genuine record copied under
    a session ID they chose, and the same record without its seal, are both refused; a
    pending login they rewrite cannot send the user off the site."""
    keys = deployment.work / "record-keys"
    keys.write_text(secrets.token_urlsafe(32) + "\n" + secrets.token_urlsafe(32) + "\n")
    keys.chmod(0o600)
    admin = testbed.free_port()
    sealed = deployment.replica("sealed", REDIS_URL,
                                sessions=f"  redis_record_key_file: {keys}\n",
                                extra=f"server:\n  admin_listen: 127.0.0.1:{admin}\n")
    refused = lambda: metric(admin, "saml_gateway_session_records_refused_total")
    assert refused() == 0
    log = lambda: sealed.gateway.log_path.read_text()
    assert "session records in Redis are not sealed" not in log()
    alice = new_client()
    form = login_until_acs(alice, sealed.url, "alice", "alice-pass")
    assert post_to_acs(alice, sealed.deliver(form)).status_code == 303
    assert health(alice, sealed) == 200
    [hash] = _login_hashes(sealed, 0, "alice")[-1:]
    redis = lambda *args: subprocess.run(["redis-cli", "-u", REDIS_URL, *args],
                                         capture_output=True, text=True).stdout
    keys_found = [k for k in redis("--scan", "--pattern", "saml-gw:*:session:*").split()
                  if hash[:24] in k]
    [key] = keys_found
    stored = redis("get", key).rstrip("\n")
    assert stored.startswith("m1:"), stored[:40]
    namespace = key.split(":session:")[0]

    def forged_cookie(value):
        """A session ID of the forger's choosing, with `value` stored under it."""
        chosen = secrets.token_urlsafe(32)
        digest = hashlib.sha256(chosen.encode()).hexdigest()
        assert redis("set", f"{namespace}:session:{digest}", value, "ex", "600").strip() == "OK"
        client = new_client()
        client.cookies.set("saml-session", chosen, domain="127.0.0.1")
        return client

    # alice's record copied under another ID, and her record without the seal.
    copied = forged_cookie(stored)
    assert health(copied, sealed) == 401
    plain = forged_cookie(stored.split("\n", 1)[1])
    assert health(plain, sealed) == 401
    # Each refusal is counted; the log warns of the first only (at most once a minute).
    assert log().count("is not sealed with a key of sessions.redis_record_key_file") == 1
    assert refused() == 2
    # The audit log has each, with the client and the hash of the ID it sent, and nothing
    # taken from the record (not even its user). More requests of the same cookie are
    # counted, for a summary (each minute, and at shutdown, below), not written one by one.
    assert health(copied, sealed) == 401
    assert health(copied, sealed) == 401
    assert refused() == 4
    forged = [r for r in sealed.audit_since(0) if r["event"] == "session_refused"]
    assert [r["reason"] for r in forged] == ["record_not_sealed"] * 2, forged
    for r, client in zip(forged, [copied, plain]):
        cookie = client.cookies.get("saml-session")
        assert r["session"] == hashlib.sha256(cookie.encode()).hexdigest()[:24], r
        assert r["client_ip"] == "127.0.0.1" and r["path"] == "/_stcore/health", r
        assert "user" not in r and "idp" not in r, r
    # alice herself is still signed in; a replica without the key warns at start-up, and
    # reads both records (so what was refused above was the seal, not the records).
    assert health(alice, sealed) == 200
    unsealed = deployment.replica("unsealed", REDIS_URL)
    assert "session records in Redis are not sealed" in unsealed.gateway.log_path.read_text()
    assert health(copied, unsealed) == 200
    assert health(plain, unsealed) == 200

    # A pending login rewritten in Redis to land elsewhere lands on the site's root.
    bob = new_client()
    form = login_until_acs(bob, sealed.url, "bob", "bob-pass")
    pending = redis("--scan", "--pattern", f"{namespace}:pending:*").split()
    assert pending
    for key in pending:
        entry = json.loads(redis("get", key))
        entry["request"]["return_to"] = "https://evil.example/"
        assert redis("set", key, json.dumps(entry), "keepttl").strip() == "OK"
    landed = post_to_acs(bob, sealed.deliver(form))
    assert landed.status_code == 303
    assert urllib.parse.urlsplit(landed.headers["Location"]).path == "/"
    assert "evil" not in landed.headers["Location"]

    # New keys on SIGHUP, without a restart: a new key first and the old one second (both
    # open), then the old one removed (what it sealed reads as signed out).
    reloaded = "reloaded the session record keys (sessions.redis_record_key_file)"
    new_key = secrets.token_urlsafe(32)
    old_keys = keys.read_text().split()
    hang_up_after_writing(sealed, keys, new_key + "\n" + keys.read_text(),
                          lambda: log().count(reloaded) == 1, "the keys reloaded")
    assert health(alice, sealed) == 200
    carol = new_client()
    form = login_until_acs(carol, sealed.url, "carol", "carol-pass")
    assert post_to_acs(carol, sealed.deliver(form)).status_code == 303
    hang_up_after_writing(sealed, keys, "short\n", lambda: "session record keys reload "
                          "refused; the keys in force stay" in log(), "a bad key file refused")
    assert health(alice, sealed) == 200
    # alice's app is open: its WebSocket is watched, and closes with the old key removed.
    stream = open_stream(sealed.url, {"Cookie": cookie_header(alice)},
                         origin=deployment.public_url)
    mark = sealed.audit_mark()
    hang_up_after_writing(sealed, keys, new_key + "\n", lambda: log().count(reloaded) == 2,
                          "the old key removed")
    assert health(carol, sealed) == 200
    # alice's record (sealed with the old key; younger than a refresh interval) no longer
    # opens, once her entry in the session cache (2 s) is gone.
    statuses_until(lambda: health(alice, sealed), 401, 10, "alice signed out with the old key")
    seconds_until_closed(stream, 10)
    ends = [(r["event"], r["reason"]) for r in sealed.audit_since(mark)
            if r.get("session") == hash]
    assert ("session_revoked", "session_refused") in ends, ends
    assert ("session_refused", "record_not_sealed") in ends, ends
    for key in [new_key, *old_keys]:
        assert key not in log()

    # By shutdown at the latest (a minute's summary may have come first), the summary of the
    # copied cookie's later requests.
    sealed.gateway.stop()
    copied_hash = hashlib.sha256(copied.cookies.get("saml-session").encode()).hexdigest()[:24]
    summaries = [r for r in sealed.audit_since(0) if r["event"] == "session_refused"
                 and r.get("session") == copied_hash and "count" in r]
    assert sum(r["count"] for r in summaries) == 2, summaries
    assert {r["client_ip"] for r in summaries} == {"127.0.0.1"}, summaries
