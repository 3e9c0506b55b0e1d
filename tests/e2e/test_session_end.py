"""A WebSocket lives no longer than its session.

The gateway checks the session of every open WebSocket every two seconds or so (a look that
counts as use only when the user sent a message over the socket since the last one; pongs do
not count) and closes the socket within 5 s of the session's end: a logout, an
administrator's revocation (test_redis_ops.py) or a timeout, on any replica sharing the store.
Each closed socket is audited as `session_revoked` (reason `logout`, `admin`, ...) or
`session_expired` (reason `idle_timeout`, `lifetime_ended`); a plain request that finds its
session expired writes one `session_expired` too, and only the first such request does.

The idle-timeout tests run a deployment of their own with `idle_timeout: 6s` and two gateways:
one with the memory store, one with the Redis at REDIS_URL.
"""

import time

import pytest
import websocket
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState

import deploy
from deploy import logout, seconds_until_closed
from flows import cookie_header, login, login_until_acs, new_client, open_stream, post_to_acs

IDLE = 6
# The longest a socket may stay open after its session ended.
CUT_OFF = 5


def _events(records, *names):
    return [r for r in records if r["event"] in names]


def _still_open(ws, seconds):
    try:
        seconds_until_closed(ws, seconds)
    except AssertionError:
        return True
    return False


def test_logout_closes_the_sockets_of_that_session_only(bed):
    alice, bob = new_client(), new_client()
    login(alice, bed.url, "alice", "alice-pass")
    login(bob, bed.url, "bob", "bob-pass")
    alice_ws = open_stream(bed.url, {"Cookie": cookie_header(alice)})
    bob_ws = open_stream(bed.url, {"Cookie": cookie_header(bob)})
    try:
        mark = bed.audit_mark()
        assert logout(alice, bed.url).status_code == 303
        took = seconds_until_closed(alice_ws, CUT_OFF)
        # Long enough for bob's socket to have been checked at least once.
        assert _still_open(bob_ws, 3)
    finally:
        alice_ws.close()
        bob_ws.close()
    records = bed.audit_since(mark)
    [ended] = _events(records, "logout")
    [closed] = _events(records, "session_revoked")
    assert (closed["reason"], closed["user"], closed["path"]) == (
        "logout", "alice", "/_stcore/stream")
    assert closed["session"] == ended["session"]
    assert "session_expired" not in [r["event"] for r in records]
    print(f"socket closed {took:.1f} s after the logout")


@pytest.fixture(scope="module")
def short_idle(bed):
    """Gateways with idle_timeout 6s: "memory" (memory store) and "redis" (REDIS_URL)."""
    if not deploy.redis_answers(deploy.REDIS_URL):
        pytest.fail(f"no Redis answers at REDIS_URL={deploy.REDIS_URL}", pytrace=False)
    d = deploy.Deployment(bed.work / "short-idle", bed.gateway.binary, bed.streamlit.port,
                          idle_timeout=f"{IDLE}s")
    try:
        replicas = {"memory": d.replica("memory", None), "redis": d.replica("redis",
                                                                             deploy.REDIS_URL)}
        yield d, replicas
    finally:
        d.stop()


def _login(client, replica, user="alice"):
    form = login_until_acs(client, replica.url, user, f"{user}-pass")
    assert post_to_acs(client, replica.deliver(form)).status_code == 303


def _health(client, replica):
    return client.get(replica.url + "/_stcore/health", allow_redirects=False).status_code


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_an_idle_session_closes_its_socket(short_idle, store):
    d, replicas = short_idle
    gw = replicas[store]
    client = new_client()
    _login(client, gw)
    ws = open_stream(gw.url, {"Cookie": cookie_header(client)}, origin=d.public_url)
    mark = gw.audit_mark()
    try:
        # The socket is kept idle: nothing is sent, and the watcher's looks do not count as use.
        took = seconds_until_closed(ws, IDLE + CUT_OFF)
    finally:
        ws.close()
    assert took >= IDLE - 2, f"closed after {took:.1f} s, before the idle timeout"
    records = gw.audit_since(mark)
    assert [(r["event"], r["reason"], r["user"], r["path"]) for r in records] == [
        ("session_expired", "idle_timeout", "alice", "/_stcore/stream")]
    # The watcher reported the expiry; a request now is refused without a second record.
    assert _health(client, gw) == 401
    assert gw.audit_since(mark) == records
    print(f"{store}: socket closed {took:.1f} s after it opened (idle timeout {IDLE} s)")


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_request_with_an_expired_session_is_audited_once(short_idle, store):
    _, replicas = short_idle
    gw = replicas[store]
    client = new_client()
    _login(client, gw, "bob")
    assert _health(client, gw) == 200
    time.sleep(IDLE + 1.5)
    mark = gw.audit_mark()
    assert _health(client, gw) == 401
    assert _health(client, gw) == 401
    records = gw.audit_since(mark)
    assert [(r["event"], r["reason"], r["user"], r["path"]) for r in records] == [
        ("session_expired", "idle_timeout", "bob", "/_stcore/health")]


def test_a_used_session_stays_open_past_the_idle_timeout(short_idle):
    _, replicas = short_idle
    gw = replicas["redis"]
    client = new_client()
    _login(client, gw)
    for _ in range(4):
        time.sleep(IDLE / 2)
        assert _health(client, gw) == 200


def _drain(ws):
    ws.settimeout(0.2)
    try:
        while True:
            ws.recv_data(control_frame=True)
    except websocket.WebSocketTimeoutException:
        pass


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_messages_over_the_socket_count_as_use_and_pongs_do_not(short_idle, store):
    d, replicas = short_idle
    gw = replicas[store]
    client = new_client()
    _login(client, gw)
    ws = open_stream(gw.url, {"Cookie": cookie_header(client)}, origin=d.public_url)
    rerun = BackMsg(rerun_script=ClientState(query_string="")).SerializeToString()
    try:
        # A user working in the page: a message every second, for twice the idle timeout.
        started = time.monotonic()
        while time.monotonic() - started < 2 * IDLE:
            ws.send_binary(rerun)
            _drain(ws)
            time.sleep(1)
        assert _health(client, gw) == 200
        # An open tab that only answers pings: pongs keep nothing alive.
        mark = gw.audit_mark()
        started = time.monotonic()
        while time.monotonic() - started < IDLE + CUT_OFF:
            try:
                ws.pong(b"keep")
                _drain(ws)
            except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
                break
            time.sleep(0.5)
        else:
            pytest.fail("a socket that only sent pongs outlived the idle timeout")
    finally:
        ws.close()
    assert [r["event"] for r in gw.audit_since(mark)] == ["session_expired"]


def test_logout_on_one_replica_closes_the_socket_on_the_other(pair):
    a, b = pair
    client = new_client()
    login(client, a.url, "alice", "alice-pass")
    # Behind a load balancer both replicas serve one public URL: pages come from A's origin.
    ws = open_stream(b.url, {"Cookie": cookie_header(client)}, origin=a.url)
    mark = b.audit_mark()
    try:
        assert logout(client, a.url).status_code == 303
        took = seconds_until_closed(ws, CUT_OFF)
    finally:
        ws.close()
    records = b.audit_since(mark)
    assert [(r["event"], r["reason"], r["user"], r["path"]) for r in records] == [
        ("session_revoked", "logout", "alice", "/_stcore/stream")]
    print(f"socket on B closed {took:.1f} s after the logout on A")
