"""Scripted clients for the end-to-end tests: a SAML login driven by `requests`, and a
Streamlit WebSocket client that runs the app once and returns what the page shows.

The login follows exactly what a browser does:

    GET  gateway/                  -> 303 /saml/login?return_to=/
    GET  gateway/saml/login        -> 303 IdP SSO URL (SAMLRequest, RelayState), relay cookie
    GET  IdP SSO URL               -> redirects to SimpleSAMLphp's username/password form
    POST the form                  -> an auto-submitting form with SAMLResponse and RelayState
    POST gateway/saml/acs          -> 303 return_to, session cookie

`login()` does all of it; `login_until_acs()` stops before the last step and returns the form
fields, so a test can alter the SAMLResponse first.
"""

import json
import time
from html.parser import HTMLParser
from urllib.parse import urljoin

import requests
import websocket

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

NAVIGATE = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}


class Form:
    """One HTML form: its action (absolute), method and named inputs."""

    def __init__(self, action, method, fields):
        self.action = action
        self.method = method
        self.fields = fields


class _FormParser(HTMLParser):
    def __init__(self, base_url):
        super().__init__()
        self.base_url = base_url
        self.forms = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            action = urljoin(self.base_url, a.get("action") or self.base_url)
            self.forms.append(Form(action, (a.get("method") or "get").lower(), {}))
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1].fields[a["name"]] = a.get("value") or ""


def forms(response):
    """The forms of an HTML response, with actions resolved against its URL."""
    parser = _FormParser(response.url)
    parser.feed(response.text)
    return parser.forms


class LoginError(AssertionError):
    """A login step did not answer as a browser's login would."""


def _expect(response, status, what):
    if response.status_code != status:
        raise LoginError(f"{what}: expected HTTP {status}, got {response.status_code} "
                         f"from {response.url}: {response.text[:500]}")
    return response


def login_until_acs(client, gateway_url, user, password, path="/", login_url=None):
    """Runs the login up to the IdP's answer; returns the form that would be POSTed to the
    ACS (fields SAMLResponse and RelayState). `client` is a `requests.Session`. The login
    starts at `path` (a protected page), or at `login_url` when given."""
    if login_url is None:
        r = _expect(client.get(gateway_url + path, headers=NAVIGATE, allow_redirects=False),
                    303, "protected page without a session")
        login_url = urljoin(gateway_url + path, r.headers["Location"])
    r = _expect(client.get(login_url, allow_redirects=False), 303, "/saml/login")
    # Follow the IdP's own redirects to its login form (or straight to its answer, when this
    # client already has a session at the IdP).
    r = _expect(client.get(r.headers["Location"]), 200, "IdP SSO endpoint")
    to_acs = [f for f in forms(r) if "SAMLResponse" in f.fields]
    if to_acs:
        return to_acs[0]
    credentials = [f for f in forms(r) if "password" in f.fields]
    if not credentials:
        raise LoginError(f"no login form at {r.url}: {r.text[:500]}")
    form = credentials[0]
    fields = {**form.fields, "username": user, "password": password}
    r = _expect(client.post(form.action, data=fields), 200, "IdP login form")
    to_acs = [f for f in forms(r) if "SAMLResponse" in f.fields]
    if not to_acs:
        raise LoginError(f"IdP did not answer with a SAMLResponse form: {r.text[:800]}")
    return to_acs[0]


def post_to_acs(client, form, **overrides):
    """POSTs the ACS form (fields replaced by `overrides`); returns the gateway's answer."""
    return client.post(form.action, data={**form.fields, **overrides}, allow_redirects=False)


def login(client, gateway_url, user, password, path="/"):
    """A whole login; returns the ACS answer (303 to `path` with the session cookie)."""
    form = login_until_acs(client, gateway_url, user, password, path)
    r = _expect(post_to_acs(client, form), 303, "ACS")
    if r.headers.get("Location") != path:
        raise LoginError(f"ACS redirected to {r.headers.get('Location')!r}, not {path!r}")
    return r


def cookie_header(client):
    """The Cookie header a browser would send to 127.0.0.1 (cookies are not port-scoped)."""
    return "; ".join(f"{c.name}={c.value}" for c in client.cookies)


class StreamlitPage:
    """What one run of the demo app showed: its texts and the JSON dump in its code block;
    for a multipage app also the URL paths of the pages its navigation listed (the default
    page's is "") and whether the page asked for was not found."""

    def __init__(self, texts, dump, pages=None, page_not_found=False):
        self.texts = texts
        self.dump = dump
        self.pages = pages or []
        self.page_not_found = page_not_found

    @property
    def headers(self):
        """{lower-case header name: [values]} the app received on the WebSocket handshake."""
        return {k.lower(): v for k, v in self.dump["headers"].items()}

    @property
    def cookies(self):
        """Names of the cookies the app received."""
        return self.dump["cookies"]


def open_stream(gateway_url, headers=None, timeout=15, origin=None, base_path="", ca_file=None):
    """Opens Streamlit's WebSocket `/_stcore/stream` through the gateway, as the browser does
    (from a page of the gateway's own origin unless `origin` says otherwise). `base_path` is
    the app's `server.baseUrlPath` as the gateway routes it, such as "/sales". An `https://`
    gateway is reached over `wss://`, trusting the certificates in `ca_file`."""
    prefix = "/" + base_path.strip("/") if base_path.strip("/") else ""
    scheme, rest = gateway_url.split("://", 1)
    ws_url = {"http": "ws", "https": "wss"}[scheme] + "://" + rest + prefix + "/_stcore/stream"
    lines = [f"{k}: {v}" for k, v in (headers or {}).items()]
    return websocket.create_connection(
        ws_url, header=lines, subprotocols=["streamlit"], origin=origin or gateway_url,
        timeout=timeout, sslopt={"ca_certs": ca_file} if ca_file else None)


def run_app(gateway_url, headers=None, timeout=30, origin=None, base_path="", page_name="",
            ca_file=None):
    """Connects to the app through the gateway, asks for one script run and collects what it
    renders. `headers` go on the WebSocket handshake (a Cookie header among them); `origin` is
    the page's origin, the gateway's own by default; `base_path` and `ca_file` as for
    `open_stream`; `page_name` asks a multipage app for one page by its URL path (its default
    page when "")."""
    ws = open_stream(gateway_url, headers, origin=origin, base_path=base_path, ca_file=ca_file)
    try:
        state = ClientState(query_string="", page_name=page_name)
        ws.send_binary(BackMsg(rerun_script=state).SerializeToString())
        texts, dump, pages, page_not_found = [], None, [], False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = ws.recv()
            if not isinstance(frame, bytes):
                continue
            msg = ForwardMsg()
            msg.ParseFromString(frame)
            kind = msg.WhichOneof("type")
            if kind == "script_finished":
                break
            if kind == "navigation":
                pages = [p.url_pathname for p in msg.navigation.app_pages]
            elif kind == "page_not_found":
                page_not_found = True
            if kind != "delta" or msg.delta.WhichOneof("type") != "new_element":
                continue
            element = msg.delta.new_element
            which = element.WhichOneof("type")
            if which == "code":
                dump = json.loads(element.code.code_text)
            elif which == "heading":
                texts.append(element.heading.body)
            elif which == "markdown":
                texts.append(element.markdown.body)
        else:
            raise TimeoutError("the app did not finish its run in time")
    finally:
        ws.close()
    if dump is None:
        raise AssertionError(f"the app showed no header dump; texts: {texts}")
    return StreamlitPage(texts, dump, pages, page_not_found)


def audited_client_ip(gateway, forwarded_for):
    """Starts a login at `gateway` (a test bed or gateway with `url` and the audit readers)
    with `X-Forwarded-For: forwarded_for`; returns the `client_ip` of its one audit record."""
    mark = gateway.audit_mark()
    r = new_client().get(gateway.url + "/saml/login?return_to=/", allow_redirects=False,
                         headers={"X-Forwarded-For": forwarded_for})
    assert r.status_code == 303, r.text
    [record] = gateway.audit_since(mark)
    return record["client_ip"]


def new_client():
    """A `requests` session that behaves like a fresh browser profile."""
    client = requests.Session()
    client.headers["User-Agent"] = "saml-gateway-e2e"
    return client
