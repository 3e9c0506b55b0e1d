"""What the gateway refuses or adds beyond the SAML checks: path normalisation, its own
namespace, foreign WebSocket origins, framing; and one session per browser."""

import pytest
import websocket

from flows import NAVIGATE, cookie_header, login, new_client, open_stream


@pytest.fixture(scope="module")
def alice(bed):
    client = new_client()
    login(client, bed.url, "alice", "alice-pass")
    return client


def raw_get(bed, path, cookie):
    """(status, body) of a GET with `path` sent exactly as given (requests would normalise it)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", bed.gateway.port, timeout=5)
    try:
        conn.request("GET", path, headers={"Cookie": cookie})
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["/_stcore/../_stcore/health", "//_stcore//health",
                                  "/x/%2e%2e/_stcore/health", "/%2F_stcore/health",
                                  "/./_stcore/health", "/_stcore/health;x=1", "/%5Fstcore/health",
                                  "/x\\..\\_stcore\\health"])
def test_paths_are_normalised_and_the_upstream_gets_the_normal_form(bed, alice, path):
    # Streamlit answers `ok` only at /_stcore/health: it received the normalised path.
    assert raw_get(bed, path, cookie_header(alice)) == (200, "ok")


@pytest.mark.parametrize("path", ["/a%zz", "/a%", "/a%00b", "/a%0d%0aX-Injected:%201"])
def test_malformed_paths_are_refused(bed, alice, path):
    status, body = raw_get(bed, path, cookie_header(alice))
    assert status == 400
    assert "X-Injected" not in body


def test_unknown_gateway_paths_are_not_proxied(bed, alice):
    r = alice.get(bed.url + "/saml/artifact", allow_redirects=False)
    assert r.status_code == 404
    assert "No such page" in r.text


def test_websocket_from_another_origin_is_refused(bed, alice):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        open_stream(bed.url, {"Cookie": cookie_header(alice)}, origin="https://evil.example")
    assert refused.value.status_code == 403
    open_stream(bed.url, {"Cookie": cookie_header(alice)}).close()


def test_gateway_pages_cannot_be_framed(bed, alice):
    r = alice.get(bed.url + "/saml/logout")
    assert r.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]


def test_signing_in_again_ends_the_old_session(bed):
    client = new_client()
    login(client, bed.url, "alice", "alice-pass")
    first = client.cookies.get("saml-session")
    login_again = new_client()
    login_again.cookies.update(client.cookies)  # same browser, same cookies
    r = login_again.get(bed.url + "/saml/login?return_to=/", allow_redirects=False)
    assert r.status_code == 303
    # Finish the login at the IdP, which still knows alice: no password form this time.
    from flows import forms, post_to_acs

    idp_page = login_again.get(r.headers["Location"])
    [form] = [f for f in forms(idp_page) if "SAMLResponse" in f.fields]
    assert post_to_acs(login_again, form).status_code == 303
    second = login_again.cookies.get("saml-session")
    assert second and second != first
    stale = new_client()
    stale.cookies.set("saml-session", first)
    assert stale.get(bed.url + "/_stcore/health").status_code == 401
    assert stale.get(bed.url + "/", headers=NAVIGATE, allow_redirects=False).status_code == 303


@pytest.mark.parametrize("version", ["--http1.1", "--http2-prior-knowledge"])
def test_answers_to_head_carry_no_body(bed, version):
    """A HEAD answered by the gateway itself (here a 401 for a request without a session) has
    headers only, over HTTP/1.1 and over cleartext HTTP/2, which the listener also speaks."""
    import subprocess

    r = subprocess.run(["curl", "-sS", version, "-I", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                        bed.url + "/_stcore/health"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "401 0", r.stdout
