"""One deployment of several gateway replicas for the end-to-end tests, and helpers that tests
of sessions across replicas share.

One deployment: one SP entity ID and public URL (that of replica A), one SP key pair, one IdP
that knows A's ACS URL. Every replica runs the same config except its `listen:` port, its
audit file and its store, as replicas behind a load balancer would. The IdP's answer form
targets A's ACS; to deliver it to another replica a test swaps the host:port of the form's
action (`Replica.deliver`).
"""

import os
import re
import subprocess
import time

import websocket

import testbed
from flows import Form, forms

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")


class Replica(testbed.AuditReader):
    """One running gateway of the deployment, with its own audit log."""

    def __init__(self, gateway):
        self.gateway = gateway

    @property
    def url(self):
        return self.gateway.base_url

    @property
    def port(self):
        return self.gateway.port

    @property
    def audit_path(self):
        return self.gateway.work / "audit.jsonl"

    def deliver(self, form):
        """The IdP's answer form, addressed to this replica's ACS instead of A's."""
        action = re.sub(r"^http://127\.0\.0\.1:\d+/", f"http://127.0.0.1:{self.port}/",
                        form.action)
        return Form(action, form.method, dict(form.fields))


class Deployment:
    """The IdP and the shared config; `replica()` starts one more gateway of it."""

    def __init__(self, work, binary, streamlit_port, idle_timeout="30m"):
        self.work = work
        self.binary = binary
        self.idle_timeout = idle_timeout
        self.public_port = testbed.free_port()
        entity_id, acs, slo = testbed.gateway_urls(self.public_port)
        self.idp = testbed.Idp(work / "idp", entity_id, acs, slo_url=slo).start()
        self.idp.save_metadata(work / "idp-metadata.xml")
        self.base_config = testbed.gateway_config(work, self.public_port, streamlit_port)
        self.replicas = []

    @property
    def public_url(self):
        """The URL users see (replica A's); WebSockets are opened from pages of this origin."""
        return f"http://127.0.0.1:{self.public_port}"

    def config(self, port, audit_dir, redis_url, sessions="", extra=""):
        """A replica's config: `redis_url` None keeps the memory store; `sessions` adds lines
        under `sessions:` (such as `  redis_connect_retry: 10s\n`), `extra` top-level sections
        at the end (such as `server:`)."""
        text = self.base_config.replace(
            f"listen: 127.0.0.1:{self.public_port}\n", f"listen: 127.0.0.1:{port}\n")
        text = text.replace(f"file: {self.work}/audit.jsonl", f"file: {audit_dir}/audit.jsonl")
        text = text.replace("  idle_timeout: 30m\n", f"  idle_timeout: {self.idle_timeout}\n")
        text = text.replace("  max_lifetime: 8h\n", f"  max_lifetime: 8h\n{sessions}")
        if redis_url is not None:
            text = text.replace("  store: memory\n",
                                f"  store: redis\n  redis_url: {redis_url}\n")
        return text + extra

    def gateway(self, name, redis_url, port=None, env=None, sessions="", extra=""):
        """A replica's gateway, not started yet (the first one takes the public port)."""
        port = port or (self.public_port if not self.replicas else testbed.free_port())
        work = self.work / name
        config = self.config(port, work, redis_url, sessions, extra)
        return testbed.Gateway(self.binary, config, work, env=env)

    def replica(self, name, redis_url, port=None, env=None, sessions="", extra=""):
        """Starts a replica (the first one takes the public port); raises StartError."""
        return self.started(self.gateway(name, redis_url, port, env, sessions, extra))

    def started(self, gateway):
        """Starts `gateway` (from `gateway()`) as one more replica; raises StartError."""
        gateway.start()
        replica = Replica(gateway)
        self.replicas.append(replica)
        return replica

    def stop(self):
        for r in self.replicas:
            r.gateway.stop()
        self.idp.stop()


def metric(admin_port, name):
    """The value of the metric `name` on the admin listener at `admin_port`."""
    status, text = testbed.http_get(f"http://127.0.0.1:{admin_port}/metrics")
    assert status == 200, text
    [value] = [line.split()[1] for line in text.splitlines() if line.startswith(name + " ")]
    return int(value)


def redis_answers(url):
    r = subprocess.run(["redis-cli", "-u", url, "ping"], capture_output=True, text=True)
    return r.stdout.strip() == "PONG"


def until(check, timeout, what):
    """Polls `check()` every 0.2 s until true; AssertionError("{what} within N s") otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout} s")


def statuses_until(get, want, timeout, what):
    """Calls `get()` (an HTTP status) every 0.2 s until it answers `want`; returns every answer
    seen, or raises AssertionError("{what} within N s: [answers seen]")."""
    seen = []

    def answered():
        seen.append(get())
        return seen[-1] == want

    try:
        until(answered, timeout, what)
    except AssertionError as e:
        raise AssertionError(f"{e}: {seen}") from None
    return seen


def logout(client, url):
    """Signs out through the sign-out page's form (with its CSRF token); returns the answer."""
    page = client.get(url + "/saml/logout")
    [form] = [f for f in forms(page) if "csrf" in f.fields]
    return client.post(url + "/saml/logout", data=form.fields, allow_redirects=False)


def seconds_until_closed(ws, timeout):
    """Reads from a WebSocket until the other end closes it; returns the seconds that took.
    AssertionError when it is still open after `timeout` seconds."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the WebSocket is still open after {timeout} s")
        ws.settimeout(left)
        try:
            opcode, _ = ws.recv_data(control_frame=True)
        except websocket.WebSocketTimeoutException:
            continue
        except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
            return time.monotonic() - started
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return time.monotonic() - started
