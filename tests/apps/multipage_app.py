"""Multipage demo and test app behind one gateway route: pages Home and Admin (`st.navigation`).

Who the user is comes from what the gateway sends on the WebSocket handshake:

- the user key from `st.user` (filled from X-Auth-User by `server.trustedUserHeaders`, where
  Streamlit has it), else from the identity token's `sub`;
- the signed identity token (X-Auth-Jwt), verified with PyJWT against the gateway's keys at
  `$GATEWAY_URL/.well-known/jwks.json`: ES256, issuer `$GATEWAY_URL`, audience `$APP_ROUTE`
  (by default the app's `server.baseUrlPath`, which the test bed makes equal to the route name);
- groups and display name from the verified token; from the raw headers only when no token was
  sent at all. A token that fails verification gives no groups, so a page never trusts a header
  that the token contradicts.

The Admin page is listed, and can be opened, only by members of the `admin` group. Every page
ends with one code block: a JSON dump `{"headers": {Name: [values]}, "cookies": [names],
"jwt": {"claims": {...}} or {"error": "..."} or null, "user", "name", "groups", "pages"}`.
"""

import json
import os
from urllib.parse import unquote

import jwt
import streamlit as st

ADMIN_GROUP = "admin"


@st.cache_resource
def jwks_client(url):
    """One PyJWKClient per JWKS URL for the server's lifetime; it caches the keys it fetched."""
    return jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5)


def gateway_url():
    """The gateway's public URL: the tokens' issuer and where its JWKS is."""
    return os.environ.get("GATEWAY_URL", "").rstrip("/")


def audience():
    """The route name the tokens for this app carry as `aud`."""
    return os.environ.get("APP_ROUTE") or st.get_option("server.baseUrlPath").strip("/") or "root"


def verify_token(token):
    """{"claims": ...} for a token the gateway signed for this app, else {"error": why}."""
    if not gateway_url():
        return {"error": "GATEWAY_URL is not set: cannot verify the identity token"}
    try:
        key = jwks_client(gateway_url() + "/.well-known/jwks.json").get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key.key, algorithms=["ES256"], audience=audience(),
                            issuer=gateway_url(), options={"require": ["exp", "iat", "sub"]})
    except jwt.PyJWTError as e:
        return {"error": f"{type(e).__name__}: {e}"}
    return {"claims": claims}


def received_headers():
    """{header name: [values]} of the WebSocket handshake."""
    return {name: st.context.headers.get_all(name) for name in st.context.headers}


def identity(headers, token):
    """(user, display name, groups) from st.user, the verified token, or the raw headers."""
    first = {name.lower(): values[0] for name, values in headers.items()}
    claims = (token or {}).get("claims")
    user = st.user.get("user") or (claims or {}).get("sub")
    if token is not None:
        name = (claims or {}).get("name")
        groups = list((claims or {}).get("groups") or [])
    else:
        name = unquote(st.user.get("name") or first.get("x-auth-name", "")) or None
        groups = [unquote(g).strip() for g in first.get("x-auth-groups", "").split(",")
                  if g.strip()]
    return user, name or user, groups


def home(user, name, groups):
    """The landing page: who is signed in, as the app sees it."""
    st.title("saml-gateway multipage demo")
    if user:
        st.header(f"Signed in as {name}")
        st.write(f"Groups: {', '.join(groups) or '(none)'}")
    else:
        st.header("No identity received")


def admin(user, name, groups):
    """A page for the admin group only (st.navigation lists it only for them)."""
    st.title("Admin area")
    st.write(f"Welcome, {name}. Only members of `{ADMIN_GROUP}` see this page.")


def verified_once(raw_token):
    """The verdict on this connection's token, checked at its first run and kept: the token
    comes with the WebSocket handshake and stays the same while the page is open, so checking
    it again after it expires would sign the user out of a page they are using. A new
    connection (a reload) brings a fresh token, which is checked anew."""
    cached = st.session_state.get("identity_token")
    if cached is None or cached[0] != raw_token:
        cached = (raw_token, verify_token(raw_token) if raw_token else None)
        st.session_state["identity_token"] = cached
    return cached[1]


def main():
    headers = received_headers()
    first = {name.lower(): values[0] for name, values in headers.items()}
    token = verified_once(first.get("x-auth-jwt"))
    user, name, groups = identity(headers, token)
    pages = [st.Page(lambda: home(user, name, groups), title="Home", url_path="home",
                     default=True)]
    if ADMIN_GROUP in groups:
        pages.append(st.Page(lambda: admin(user, name, groups), title="Admin", url_path="admin"))
    st.navigation(pages).run()
    if token and "error" in token:
        st.error(f"The identity token was refused: {token['error']}")
    st.caption("Request headers, cookie names and the verified identity token")
    dump = {"headers": dict(sorted(headers.items())), "cookies": sorted(st.context.cookies),
            "jwt": token, "user": user, "name": name, "groups": groups,
            "pages": [p.title for p in pages]}
    st.code(json.dumps(dump, indent=2, ensure_ascii=False), language="json")


main()
