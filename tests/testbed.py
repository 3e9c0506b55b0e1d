"""Test bed: starts the real components of an end-to-end test on 127.0.0.1.

- `Idp`: a SimpleSAMLphp 1.19 IdP under `php -S`, configured from tests/testbed/idp/, with the
  test users of `USERS` (see authsources.php there).
- `Streamlit`: a Streamlit app from the venv that scripts/setup.sh creates.
- `Gateway`: the saml-gateway binary with a YAML config; `gateway_config()` writes the usual one
  (one catch-all route), `app_routes()` the routes of the two-app setup.
- `TwoApps`: an IdP, the multipage app twice (under /sales and /ops, each only for some groups)
  and a gateway in front of both; optionally demo_app.py under /status as a public route.
- `Redis`: a private redis-server without persistence (for the shared-store and outage tests).

Each service runs in its own process group, logs into its work directory and is stopped
(SIGTERM, then SIGKILL after 5 s) by `stop()` or, at the latest, when the interpreter exits.
A service that fails to start raises `StartError` with the tail of its log.

Start order: pick ports, start the IdP (it needs only the SP entity ID and ACS URL), write its
metadata to {work}/idp-metadata.xml, start Streamlit, start the gateway. `demo` does that for
the two-app setup (`TwoApps`):

    python3 tests/testbed.py demo --gateway-bin target/debug/saml-gateway

Standard library only, so any python3 can run it.
"""

import argparse
import atexit
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IDP_TEMPLATES = ROOT / "tests" / "testbed" / "idp"
SSP_WWW = Path("/usr/share/simplesamlphp/www")
VENV_BIN = ROOT / ".venv" / "bin"
NAMEID_UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"

# The IdP's test users (tests/testbed/idp/authsources.php): (user, password, groups); zoe also
# has g-000 .. g-499 and a display name outside ASCII.
USERS = [
    ("alice", "alice-pass", ["analytics", "staff"]),
    ("bob", "bob-pass", ["ops"]),
    ("carol", "carol-pass", ["admin", "analytics", "ops"]),
    ("zoe", "zoe-pass", ["analytics"] + [f"g-{i:03d}" for i in range(500)]),
]

_running = set()


class StartError(RuntimeError):
    """A service did not come up; the message ends with the tail of its log."""


_handed_out = set()


def _ephemeral_low():
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago, never handed out twice in a run.

    Taken below the kernel's ephemeral range: a port the kernel hands out for `bind(0)` is
    also one it may give an outgoing connection (to Redis, an upstream, the IdP) before the
    service that was meant to listen on it starts, which then fails with "port not available".
    """
    low = _ephemeral_low()
    for _ in range(2000):
        port = random.randint(15000, max(15001, low - 1))
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free TCP port found below the ephemeral range")


def http_get(url, timeout=2.0):
    """(status, body text) of a GET, without following redirects; (0, error) when unreachable."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (OSError, ValueError) as e:
        return 0, str(e)


def log_tail(path, lines=40):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class AuditReader:
    """Reads a gateway's audit log (JSON Lines at `self.audit_path`) from a mark on."""

    def audit_mark(self):
        """A position in the audit log; `audit_since(mark)` returns what came after it."""
        try:
            return self.audit_path.stat().st_size
        except FileNotFoundError:
            return 0

    def audit_since(self, mark):
        """The audit records written after `mark`, parsed."""
        with open(self.audit_path, "rb") as f:
            f.seek(mark)
            return [json.loads(line) for line in f.read().splitlines() if line.strip()]


class OwnGateway(AuditReader):
    """A test module's own gateway (`self.gateway`) with its work folder `self.work`, where its
    audit log is."""

    @property
    def audit_path(self):
        return self.work / "audit.jsonl"

    @property
    def url(self):
        """The gateway's base URL."""
        return self.gateway.base_url


class IdpAndGateway(OwnGateway):
    """An IdP of its own and one gateway in `work` that trusts it, the test bed's config with
    `extra_idp` (YAML lines indented by two spaces) added to its `idp:` section and `extra`
    (top-level keys) at its end.

    For a gateway reached other than by plain HTTP on its own port: `public_port` is the port
    of its public URL (a relay's, say; `listen` stays on `listen_port`, or a port of its own),
    `scheme` the URL's scheme, and `gateway_class` a `Gateway` subclass that knows how to reach
    it; `prepare(gw)` runs before it is started."""

    def __init__(self, work, streamlit_port, gateway_bin, extra_idp="", extra="",
                 listen_port=None, public_port=None, scheme="http", gateway_class=None,
                 prepare=None):
        self.work = work
        port = listen_port or free_port()
        public_port = public_port or port
        public = f"{scheme}://127.0.0.1:{public_port}"
        self.entity_id, acs, slo = (f"{public}/saml/metadata", f"{public}/saml/acs",
                                    f"{public}/saml/slo")
        self.idp = Idp(work, self.entity_id, acs, slo_url=slo).start()
        try:
            self.idp.save_metadata(work / "idp-metadata.xml")
            text = gateway_config(work, public_port, streamlit_port, extra=extra)
            text = text.replace("idp:\n", "idp:\n" + extra_idp, 1)
            text = text.replace(f"listen: 127.0.0.1:{public_port}\n", f"listen: 127.0.0.1:{port}\n")
            text = text.replace(f"http://127.0.0.1:{public_port}", public)
            self.gateway = (gateway_class or Gateway)(gateway_bin, text, work)
            self.gateway.port = public_port
            if prepare:
                prepare(self.gateway)
            self.gateway.start()
        except Exception:
            self.idp.stop()
            raise

    def stop(self):
        self.gateway.stop()
        self.idp.stop()


def keyed_idp(work, gateway_bin, **idp_options):
    """An SP key pair made by `saml-gateway keygen` in `work` (sp.key, sp.crt), a port for the
    gateway, and an IdP started in `work` that trusts that SP and has its certificate;
    returns (port, entity ID, SLO URL, IdP)."""
    subprocess.run([gateway_bin, "keygen", "--key", work / "sp.key", "--cert", work / "sp.crt"],
                   check=True, capture_output=True)
    port = free_port()
    entity_id, acs, slo_url = gateway_urls(port)
    idp = Idp(work, entity_id, acs, slo_url=slo_url, sp_cert_pem=(work / "sp.crt").read_text(),
              **idp_options).start()
    return port, entity_id, slo_url, idp


def fresh_work(bed_work, name):
    """An empty folder beside the test run's folder `bed_work`, for one module's services."""
    work = Path(bed_work).parent / (Path(bed_work).name + "-" + name)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def make_certificate(work, name):
    """A self-signed P-256 certificate for IP 127.0.0.1 made by `openssl req`, in `work`:
    (certificate path, key path), the key mode 0600."""
    cert, key = Path(work) / f"{name}.crt", Path(work) / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True)
    key.chmod(0o600)
    return cert, key


def make_ca(work, name, leaves):
    """A P-256 certificate authority `name` made by `openssl`, and for each name in `leaves` a
    certificate that it issued, in `work`: (CA certificate path, {leaf: (certificate path,
    key path)}), every key mode 0600. A leaf is a name (its certificate is for IP 127.0.0.1) or
    (name, subjectAltName value), such as ("elsewhere", "DNS:redis.internal")."""
    work = Path(work)
    ca_cert, ca_key = work / f"{name}.crt", work / f"{name}.key"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    subprocess.run(["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca_cert,
                    "-days", "2", "-subj", f"/CN={name}"], check=True, capture_output=True)
    issued = {}
    for leaf in leaves:
        leaf, san = (leaf, "IP:127.0.0.1") if isinstance(leaf, str) else leaf
        cert, key, request = (work / f"{leaf}.crt", work / f"{leaf}.key", work / f"{leaf}.csr")
        extensions = work / f"{leaf}.ext"
        extensions.write_text(f"subjectAltName={san}\n")
        subprocess.run(["openssl", "req", *ec, "-keyout", key, "-out", request,
                        "-subj", f"/CN={san.split(':', 1)[1]}"], check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", request, "-CA", ca_cert,
                        "-CAkey", ca_key, "-CAcreateserial", "-days", "2", "-out", cert,
                        "-extfile", extensions], check=True, capture_output=True)
        key.chmod(0o600)
        issued[leaf] = (cert, key)
    ca_key.chmod(0o600)
    return ca_cert, issued


def tls_client(cert):
    """A fresh browser (`requests` session) that trusts `cert` alone. (`trust_env` off:
    requests lets a `REQUESTS_CA_BUNDLE` in the environment override a session's `verify`.)"""
    import requests
    client = requests.Session()
    client.headers["User-Agent"] = "saml-gateway-e2e"
    client.verify = str(cert)
    client.trust_env = False
    return client


class TcpRelay:
    """A TCP relay on a port of its own to `target_port` on 127.0.0.1, a thread per direction.
    Subclasses hook in: `opening(upstream)` runs once the upstream connection is made, before
    any byte is relayed; `relaying(data, state)` sees each chunk from the client on its way
    (it returns the state for the next chunk)."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def opening(self, upstream):
        """Called with each new upstream connection, before anything is relayed."""

    def relaying(self, data, state):
        """Called with each chunk from the client; returns the state for the next one."""
        return state

    def close(self):
        self.server.close()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client):
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            upstream.settimeout(None)
            self.opening(upstream)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()
        self._pipe(client, upstream, True)

    def _pipe(self, src, dst, from_client):
        state = b""
        try:
            while data := src.recv(65536):
                if from_client:
                    state = self.relaying(data, state)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


class Service:
    """One child process in its own process group, with a log file in `work`."""

    name = "service"

    def __init__(self, work, port=None):
        self.work = Path(work).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log_path = self.work / f"{self.name}.log"
        self.proc = None

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, argv, env=None, cwd=None):
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                cwd=cwd or self.work, start_new_session=True)
        except OSError as e:
            raise StartError(f"{self.name}: cannot run {argv[0]}: {e}") from e
        finally:
            log.close()
        _running.add(self)

    def _wait_until(self, ready, what, timeout=30.0):
        """Polls `ready()` until true; stops the service and raises StartError otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"exited with code {self.proc.returncode} before {what}")
            if ready():
                return
            time.sleep(0.1)
        self._fail(f"no {what} within {timeout:.0f} s")

    def _fail(self, why):
        self.stop()
        raise StartError(f"{self.name} on port {self.port} {why}; "
                         f"{self.log_path}:\n{log_tail(self.log_path)}")

    def stop(self):
        proc, self.proc = self.proc, None
        _running.discard(self)
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@atexit.register
def _stop_all():
    for service in list(_running):
        service.stop()


class Idp(Service):
    """SimpleSAMLphp IdP that trusts one SP; signs Response and Assertion with RSA-SHA256.

    NameID: the user's uid, format unspecified. Attributes (NameFormat basic): uid, mail,
    displayName, groups. With `validate_authnrequest` the IdP requires AuthnRequests signed by
    `sp_cert_pem`; with `encrypt_assertions` it encrypts assertions to that certificate, or to
    `sp_encryption_cert_pem` when given. `set_sp_certificates` changes both while it runs.
    """

    name = "idp"

    def __init__(self, work, sp_entity_id, acs_url, slo_url=None, sp_cert_pem=None,
                 validate_authnrequest=False, encrypt_assertions=False, port=None,
                 sp_encryption_cert_pem=None):
        super().__init__(work, port)
        if encrypt_assertions and not sp_cert_pem:
            raise ValueError("encrypt_assertions needs the SP's certificate")
        self.sp = {
            "entity_id": sp_entity_id, "acs_url": acs_url, "slo_url": slo_url,
            "cert_data": _pem_body(sp_cert_pem) if sp_cert_pem else None,
            # Another certificate to encrypt to (an SP key rollover); else cert_data does both.
            "encryption_cert_data": (_pem_body(sp_encryption_cert_pem)
                                     if sp_encryption_cert_pem else None),
            "validate_authnrequest": bool(validate_authnrequest),
            "encrypt_assertions": bool(encrypt_assertions),
        }
        self.config_dir = self.work / "idp-config"
        self.key_path = self.work / "idp.key"
        self.cert_path = self.work / "idp.crt"

    @property
    def entity_id(self):
        """Also the metadata URL."""
        return self.base_url + "/saml2/idp/metadata.php"

    @property
    def sso_url(self):
        return self.base_url + "/saml2/idp/SSOService.php"

    @property
    def slo_url(self):
        return self.base_url + "/saml2/idp/SingleLogoutService.php"

    @property
    def login_url(self):
        """Signs in at the IdP alone (no SP) and shows the user's attributes."""
        return self.base_url + "/module.php/core/authenticate.php?as=example-userpass"

    @property
    def cert_pem(self):
        return self.cert_path.read_text()

    def start(self):
        for sub in ("data", "tmp", "php-sessions"):
            (self.work / sub).mkdir(exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "30",
             "-subj", "/CN=saml-gateway test IdP", "-keyout", self.key_path, "-out", self.cert_path],
            check=True, capture_output=True)
        shutil.rmtree(self.config_dir, ignore_errors=True)
        shutil.copytree(IDP_TEMPLATES, self.config_dir)
        settings = {"base_url": self.base_url + "/", "entity_id": self.entity_id,
                    "work_dir": str(self.work), "secret_salt": secrets.token_hex(16), "sp": self.sp}
        (self.config_dir / "testbed.json").write_text(json.dumps(settings, indent=2))
        self._spawn(["php", "-d", f"session.save_path={self.work / 'php-sessions'}",
                     "-S", f"127.0.0.1:{self.port}", "-t", SSP_WWW],
                    env={"SIMPLESAMLPHP_CONFIG_DIR": str(self.config_dir)})
        self._wait_until(lambda: http_get(self.entity_id)[0] == 200, "metadata answer")
        return self

    def set_sp_certificates(self, sp_cert_pem, sp_encryption_cert_pem=None):
        """Gives the running IdP other SP certificates (it reads its settings at each request)."""
        self.sp["cert_data"] = _pem_body(sp_cert_pem)
        self.sp["encryption_cert_data"] = (_pem_body(sp_encryption_cert_pem)
                                           if sp_encryption_cert_pem else None)
        path = self.config_dir / "testbed.json"
        settings = json.loads(path.read_text())
        settings["sp"] = self.sp
        path.write_text(json.dumps(settings, indent=2))

    def metadata_xml(self):
        status, body = http_get(self.entity_id, timeout=10)
        if status != 200:
            raise RuntimeError(f"IdP metadata: HTTP {status}: {body[:300]}")
        return body

    def save_metadata(self, path):
        Path(path).write_text(self.metadata_xml())
        return Path(path)

    @property
    def php_log_path(self):
        """SimpleSAMLphp's own log (the `idp.log` file has php -S's request lines)."""
        return self.work / "simplesamlphp.log"


def _pem_body(pem):
    """The base64 body of a PEM certificate, as SimpleSAMLphp's X509Certificate wants it."""
    return "".join(l for l in pem.strip().splitlines() if not l.startswith("-----"))


class Streamlit(Service):
    """`streamlit run APP` from .venv; `options` are extra `--server.*` options by short name,
    e.g. {"baseUrlPath": "app"}; `trusted_user_headers` maps header names to st.user keys;
    `env` adds environment variables for the app."""

    name = "streamlit"

    def __init__(self, work, app, options=None, trusted_user_headers=None, port=None, env=None):
        super().__init__(work, port)
        self.app = Path(app).resolve()
        self.options = dict(options or {})
        self.env = dict(env or {})
        if trusted_user_headers:
            self.options["trustedUserHeaders"] = json.dumps(trusted_user_headers)

    @property
    def base_path(self):
        """The app's URL prefix ("/sales"), "" without `baseUrlPath`."""
        path = self.options.get("baseUrlPath", "").strip("/")
        return "/" + path if path else ""

    def start(self):
        argv = [VENV_BIN / "streamlit", "run", self.app, "--server.address", "127.0.0.1",
                "--server.port", self.port, "--server.headless", "true",
                "--browser.gatherUsageStats", "false"]
        for key, value in self.options.items():
            if isinstance(value, bool):
                value = str(value).lower()
            argv += [f"--server.{key}", value]
        self._spawn(argv, env={"PYTHONUNBUFFERED": "1", **self.env})
        health = f"{self.base_url}{self.base_path}/_stcore/health"
        self._wait_until(lambda: http_get(health) == (200, "ok"), "ok from /_stcore/health", 60)
        return self


# How the demo app's Streamlit maps the gateway's identity headers to `st.user` fields.
TRUSTED_USER_HEADERS = {"X-Auth-User": "user", "X-Auth-Email": "email", "X-Auth-Name": "name"}


def demo_streamlit(work, port=None):
    """The demo app, with `st.user` filled from the identity headers where Streamlit can."""
    trusted = TRUSTED_USER_HEADERS if streamlit_has_option("server.trustedUserHeaders") else None
    return Streamlit(work, ROOT / "tests" / "apps" / "demo_app.py", port=port,
                     trusted_user_headers=trusted)


def multipage_streamlit(work, base_path, gateway_url, port=None):
    """The multipage app under `base_path` ("sales"), verifying identity tokens issued by the
    gateway at `gateway_url` for the route of the same name."""
    return _routed_streamlit(work, ROOT / "tests" / "apps" / "multipage_app.py", base_path,
                             port, {"GATEWAY_URL": gateway_url, "APP_ROUTE": base_path})


def routed_demo_streamlit(work, base_path, port=None):
    """demo_app.py under `base_path`, for a route of that name."""
    return _routed_streamlit(work, ROOT / "tests" / "apps" / "demo_app.py", base_path, port)


def _routed_streamlit(work, app, base_path, port, env=None):
    trusted = TRUSTED_USER_HEADERS if streamlit_has_option("server.trustedUserHeaders") else None
    return Streamlit(work, app, options={"baseUrlPath": base_path}, port=port, env=env,
                     trusted_user_headers=trusted)


def streamlit_has_option(name):
    """Whether the installed Streamlit knows a config option such as server.trustedUserHeaders."""
    code = "import sys, streamlit.config as c; sys.exit(sys.argv[1] not in c.get_config_options())"
    return subprocess.run([VENV_BIN / "python", "-c", code, name]).returncode == 0


class Redis(Service):
    """A private `redis-server` on 127.0.0.1, by default without persistence: stopping it loses
    every key, as an outage with a fresh restart would. Start it again on the same port with a
    new `Redis(work, port=old.port)`. `replicaof` (a port on 127.0.0.1) starts it as a replica
    of that server, over TLS and as `user` when it has them.

    `appendonly=True` keeps an append-only file in `work` (`appendfsync`: `always`, `everysec`
    or `no`); a new `Redis` on the same `work` and port with the same options reads it back, as a
    restarted server would. `crash()` ends the server with SIGKILL (no shutdown save)."""

    name = "redis"

    def __init__(self, work, port=None, appendonly=False, appendfsync="everysec", tls=None,
                 user=None, replicaof=None):
        super().__init__(work, port)
        self.replicaof = replicaof
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.tls = tls
        self.user = user

    @property
    def url(self):
        """The server's URL, with the user's name and password when it has one."""
        scheme = "rediss" if self.tls else "redis"
        credentials = f"{self.user[0]}:{self.user[1]}@" if self.user else ""
        return f"{scheme}://{credentials}127.0.0.1:{self.port}/0"

    def start(self):
        """Starts the server. With `tls` (a `RedisTls`), it speaks TLS only; with `user`
        (name, password, [ACL rules]), that user is the only one and the default user is off."""
        persistence = ["--appendonly", "no"]
        if self.appendonly:
            persistence = ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        ports = ["--port", self.port]
        if self.tls:
            ports = ["--port", "0", "--tls-port", self.port,
                     "--tls-cert-file", self.tls.cert, "--tls-key-file", self.tls.key,
                     "--tls-ca-cert-file", self.tls.ca,
                     "--tls-auth-clients", "yes" if self.tls.client else "no"]
        users = []
        if self.user:
            name, password, rules = self.user
            users = ["--user", "default", "off", "--user", name, "on", f">{password}", *rules]
        replica = []
        if self.replicaof:
            replica = ["--replicaof", "127.0.0.1", self.replicaof]
            if self.tls:
                replica += ["--tls-replication", "yes"]
            if self.user:
                replica += ["--masteruser", self.user[0], "--masterauth", self.user[1]]
        self._spawn(["redis-server", "--bind", "127.0.0.1", *ports, "--save", "",
                     *persistence, *users, *replica, "--daemonize", "no", "--dir", self.work])
        self._wait_until(self.ping, "PONG from redis-cli ping", 10)
        return self

    def cli(self, *args):
        """`redis-cli` against this server, as its user, over TLS when it speaks TLS."""
        argv = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port)]
        if self.tls:
            argv += ["--tls", "--cacert", str(self.tls.ca)]
            if self.tls.client:
                argv += ["--cert", str(self.tls.client[0]), "--key", str(self.tls.client[1])]
        if self.user:
            argv += ["--user", self.user[0], "--pass", self.user[1], "--no-auth-warning"]
        return subprocess.run([*argv, *args], capture_output=True, text=True)

    def crash(self):
        """Kills the server at once, as a power cut or the OOM killer would."""
        proc, self.proc = self.proc, None
        _running.discard(self)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def ping(self):
        return self.cli("ping").stdout.strip() == "PONG"


class Sentinel(Service):
    """A Redis Sentinel (`redis-server --sentinel`) on 127.0.0.1 that monitors the master at
    `master_port` under `name`, with `quorum` votes to call it down after `down_after_ms`.

    With `tls` (a `RedisTls`), it speaks TLS only, to its clients and to the servers and the
    other sentinels. With `password`, it asks its clients for it (`requirepass`) and shows it
    to the other sentinels; with `master_user` (name, password), it signs in to the servers."""

    name = "sentinel"

    def __init__(self, work, master_port, name="gateway", quorum=2, down_after_ms=1000,
                 tls=None, password=None, master_user=None):
        super().__init__(work)
        self.master_port = master_port
        self.master_name = name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.tls = tls
        self.password = password
        self.master_user = master_user

    def start(self):
        # Sentinel rewrites its config file (what it learns about replicas and peers).
        name = self.master_name
        lines = [f"bind 127.0.0.1", f"dir {self.work}"]
        if self.tls:
            lines += [f"port 0", f"tls-port {self.port}", f"tls-cert-file {self.tls.cert}",
                      f"tls-key-file {self.tls.key}", f"tls-ca-cert-file {self.tls.ca}",
                      f"tls-auth-clients {'yes' if self.tls.client else 'no'}",
                      "tls-replication yes"]
        else:
            lines += [f"port {self.port}"]
        if self.password:
            lines += [f"requirepass {self.password}", f"sentinel sentinel-pass {self.password}"]
        lines += [f"sentinel monitor {name} 127.0.0.1 {self.master_port} {self.quorum}",
                  f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
                  f"sentinel failover-timeout {name} 3000"]
        if self.master_user:
            lines += [f"sentinel auth-user {name} {self.master_user[0]}",
                      f"sentinel auth-pass {name} {self.master_user[1]}"]
        conf = self.work / "sentinel.conf"
        conf.write_text("\n".join(lines) + "\n")
        self._spawn(["redis-server", conf, "--sentinel"])
        self._wait_until(lambda: self.master() is not None, "an answer about the master", 10)
        return self

    def cli(self, *args, signed_in=True):
        """`redis-cli` against this sentinel, with its password unless `signed_in` is false."""
        argv = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port)]
        if self.tls:
            argv += ["--tls", "--cacert", str(self.tls.ca)]
            if self.tls.client:
                argv += ["--cert", str(self.tls.client[0]), "--key", str(self.tls.client[1])]
        if self.password and signed_in:
            argv += ["--pass", self.password, "--no-auth-warning"]
        return subprocess.run([*argv, *args], capture_output=True, text=True)

    def master(self):
        """The port of the master this sentinel names now, or None."""
        answer = self.cli("sentinel", "get-master-addr-by-name", self.master_name).stdout.split()
        return int(answer[1]) if len(answer) == 2 else None


class TinyProxy(Service):
    """Debian's tinyproxy on 127.0.0.1: an HTTP proxy that opens CONNECT tunnels to
    `connect_ports` only, for clients that send `user` (name, password) as Basic credentials.
    `log()` is what it wrote of each connection."""

    name = "tinyproxy"

    def __init__(self, work, connect_ports, user, port=None):
        super().__init__(work, port)
        self.connect_ports = connect_ports
        self.user = user

    def start(self):
        conf = self.work / "tinyproxy.conf"
        lines = [f"Port {self.port}", "Listen 127.0.0.1", "Allow 127.0.0.1", "Timeout 30",
                 f"LogFile \"{self.work}/tinyproxy-connections.log\"", "LogLevel Connect",
                 f"BasicAuth {self.user[0]} {self.user[1]}", "MaxClients 20"]
        lines += [f"ConnectPort {p}" for p in self.connect_ports]
        conf.write_text("\n".join(lines) + "\n")
        self._spawn(["tinyproxy", "-d", "-c", conf])
        self._wait_until(self._listening, "a listening socket", 10)
        return self

    def _listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def log(self):
        try:
            return (self.work / "tinyproxy-connections.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""


class RedisTls:
    """A `Redis` server's TLS files: its certificate and key, the CA it trusts for clients,
    and, when it asks clients for a certificate, the (certificate, key) a client shows."""

    def __init__(self, cert, key, ca, client=None):
        self.cert, self.key, self.ca, self.client = cert, key, ca, client


class Gateway(Service):
    """`saml-gateway serve --config FILE` with `config_text` written to {work}/gateway.yaml.
    The port comes from the config's `listen:` line; `env` adds environment variables (for
    `${NAME}` in the config); `launcher` is a command the gateway's is run under (`taskset -c 0`,
    `prlimit ...`), which must exec it so that `proc` is the gateway."""

    name = "gateway"
    # Seconds to wait for the metadata endpoint (longer under valgrind).
    start_timeout = 30.0

    def __init__(self, binary, config_text, work, env=None, launcher=()):
        m = re.search(r"^listen:\s*[\w.\[\]:]*:(\d+)\s*$", config_text, re.M)
        if not m:
            raise ValueError("gateway config has no 'listen: HOST:PORT' line")
        super().__init__(work, int(m.group(1)))
        self.binary = Path(binary).resolve()
        self.config_text = config_text
        self.config_path = self.work / "gateway.yaml"
        self.env = dict(env or {})
        self.launcher = list(launcher)

    @property
    def metadata_url(self):
        return self.base_url + "/saml/metadata"

    def start(self):
        self.config_path.write_text(self.config_text)
        self._spawn([*self.launcher, self.binary, "serve", "--config", self.config_path],
                    env={"RUST_LOG": os.environ.get("RUST_LOG", "info"), "NO_COLOR": "1",
                         **self.env})
        self._wait_until(lambda: http_get(self.metadata_url)[0] == 200, "200 from /saml/metadata",
                         self.start_timeout)
        return self


def gateway_config(work, gw_port, st_port, sign_authn_requests=False, extra="", routes=None):
    """The test bed's gateway YAML; `extra` is appended as more top-level keys. `routes`, the
    items of the `routes:` list as YAML text (see `app_routes`), replaces the one catch-all
    route to Streamlit on `st_port`."""
    work = Path(work).resolve()
    if routes is None:
        routes = f"  - path: /\n    upstream: http://127.0.0.1:{st_port}\n"
    text = f"""\
listen: 127.0.0.1:{gw_port}
public_url: http://127.0.0.1:{gw_port}
sp:
  entity_id: http://127.0.0.1:{gw_port}/saml/metadata
  key_file: {work}/sp.key
  cert_file: {work}/sp.crt
  sign_authn_requests: {str(sign_authn_requests).lower()}
idp:
  metadata_file: {work}/idp-metadata.xml
  attributes:
    email: mail
    display_name: displayName
    groups: groups
sessions:
  store: memory
  idle_timeout: 30m
  max_lifetime: 8h
routes:
{routes.rstrip()}
identity_headers: {{ user: X-Auth-User, email: X-Auth-Email, name: X-Auth-Name, groups: X-Auth-Groups, auth_time: X-Auth-Time,
                   authn_context: X-Auth-Context }}
audit:
  file: {work}/audit.jsonl
"""
    return text + extra


def app_routes(sales_port, ops_port, ops_groups=("ops", "admin"), status_port=None,
               public_health=False):
    """The `routes:` items of the two-app setup: /sales for groups analytics and admin (the
    groups header and token carry only those), /ops for `ops_groups`; with `status_port` a
    public /status, with `public_health` the sales app's /sales/_stcore/health public too.
    No catch-all: `/` lists a user's apps. A public path of the sales app shares its upstream,
    which both routes must then say (`shared_upstream`)."""
    shared = "    shared_upstream: true\n" if public_health else ""
    text = f"""\
  - name: sales
    path: /sales
    upstream: http://127.0.0.1:{sales_port}
    allow: {{ groups: [analytics, admin] }}
    groups_header: rule
{shared}  - name: ops
    path: /ops
    upstream: http://127.0.0.1:{ops_port}
    allow: {{ groups: [{", ".join(ops_groups)}] }}
"""
    if status_port:
        text += f"""\
  - name: status
    path: /status
    upstream: http://127.0.0.1:{status_port}
    public: true
"""
    if public_health:
        text += f"""\
  - name: sales-health
    path: /sales/_stcore/health
    upstream: http://127.0.0.1:{sales_port}
    public: true
{shared}"""
    return text


def gateway_urls(gw_port):
    """(entity ID / metadata URL, ACS URL, SLO URL) of a gateway on `gw_port`."""
    public = f"http://127.0.0.1:{gw_port}"
    return f"{public}/saml/metadata", f"{public}/saml/acs", f"{public}/saml/slo"


class TwoApps(AuditReader):
    """Two apps behind one gateway, as a company would run them: an IdP, the multipage app as
    "sales" (/sales, groups analytics and admin) and as "ops" (/ops, groups ops and admin), and
    the gateway, all with work files under `work`. With `status_app`, demo_app.py also runs
    under /status as a public route, and /sales/_stcore/health is public.

    Ports are picked at construction; `upstream_ports` (route name -> port) says where the
    gateway sends each route and may be changed before `start()`, e.g. to put a recording relay
    in front of an app. Identity tokens live `token_lifetime`."""

    def __init__(self, work, gateway_bin, gw_port=None, idp_port=None, app_ports=(None, None),
                 status_app=False, token_lifetime="2m"):
        self.work = Path(work).resolve()
        self.gateway_bin = gateway_bin
        self.gw_port = gw_port or free_port()
        self.token_lifetime = token_lifetime
        entity_id, acs, slo = gateway_urls(self.gw_port)
        self.idp = Idp(self.work / "idp", entity_id, acs, slo_url=slo, port=idp_port)
        self.sales = multipage_streamlit(self.work / "sales", "sales", self.url, app_ports[0])
        self.ops = multipage_streamlit(self.work / "ops", "ops", self.url, app_ports[1])
        self.status = routed_demo_streamlit(self.work / "status", "status") if status_app else None
        self.upstream_ports = {"sales": self.sales.port, "ops": self.ops.port}
        if self.status:
            self.upstream_ports["status"] = self.status.port
        self.gateway = None

    @property
    def url(self):
        """The gateway's public URL."""
        return f"http://127.0.0.1:{self.gw_port}"

    @property
    def audit_path(self):
        return self.work / "audit.jsonl"

    @property
    def apps(self):
        """The Streamlit services that run."""
        return [s for s in (self.sales, self.ops, self.status) if s]

    def config_text(self, ops_groups=("ops", "admin")):
        """The gateway's YAML; `ops_groups` are the groups /ops lets in."""
        ports = self.upstream_ports
        routes = app_routes(ports["sales"], ports["ops"], ops_groups, ports.get("status"),
                            public_health=self.status is not None)
        token = f"identity_token:\n  lifetime: {self.token_lifetime}\n"
        return gateway_config(self.work, self.gw_port, None, extra=token, routes=routes)

    def start(self):
        """Starts the IdP, the apps, then the gateway; raises StartError (and stops all)."""
        try:
            self.idp.start()
            self.idp.save_metadata(self.work / "idp-metadata.xml")
            for app in self.apps:
                app.start()
            self.gateway = Gateway(self.gateway_bin, self.config_text(), self.work).start()
        except BaseException:
            self.stop()
            raise
        return self

    def alive(self):
        """True while every service still runs."""
        services = [self.idp, *self.apps, self.gateway]
        return all(s and s.proc and s.proc.poll() is None for s in services)

    def stop(self):
        for service in (self.gateway, *self.apps, self.idp):
            if service:
                service.stop()


def demo(gateway_bin):
    """The two-app setup on fixed ports until Ctrl-C: IdP :8081, apps :8501 (/sales) and :8502
    (/ops), gateway :8080."""
    work = ROOT / "var" / "demo"
    bed = TwoApps(work, gateway_bin, gw_port=8080, idp_port=8081, app_ports=(8501, 8502))
    bed.start()
    print(f"Open {bed.url}/ (the apps you may use), {bed.url}/sales/ or {bed.url}/ops/.")
    print("Sign in as one of (user / password: groups):")
    for user, password, groups in USERS:
        shown = ", ".join(groups[:3]) + (f" and {len(groups) - 3} more" if len(groups) > 3 else "")
        print(f"  {user} / {password}: {shown}")
    print("/sales is for analytics and admin, /ops for ops and admin; carol (admin) also sees the")
    print(f"apps' Admin page. IdP {bed.idp.base_url}; logs in {work}. Ctrl-C stops.")
    try:
        while bed.alive():
            time.sleep(0.5)
        print("a service exited; see the logs", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        bed.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="IdP :8081, apps :8501 (/sales) and :8502 (/ops), "
                                    "gateway :8080 until Ctrl-C")
    p.add_argument("--gateway-bin", default=str(ROOT / "target" / "debug" / "saml-gateway"))
    args = parser.parse_args(argv)
    # Ctrl-C, or SIGINT/SIGTERM even when started in the background, stops the services.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return demo(args.gateway_bin)
    except StartError as e:
        print(e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
