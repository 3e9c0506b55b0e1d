"""Demo and test app behind the gateway: shows who is signed in, from the identity headers.

`st.context.headers` holds the headers of the WebSocket handshake, so this shows what the
gateway sent on the upgrade request. The page's only code block (`data-testid="stCode"`) is a
JSON dump `{"headers": {Name: [values]}, "cookies": [names]}` of everything received, so tests
can check that client-sent identity headers and IdP or gateway cookies never arrive.
"""

import json

import streamlit as st

headers = {name: st.context.headers.get_all(name) for name in st.context.headers}
first = {name.lower(): values[0] for name, values in headers.items()}
user = first.get("x-auth-user")
name = first.get("x-auth-name") or user
email = first.get("x-auth-email", "")
groups = [g.strip() for g in first.get("x-auth-groups", "").split(",") if g.strip()]

st.title("saml-gateway demo")
if name:
    st.header(f"Signed in as {name}")
    st.write(f"Email: {email or '(none)'}")
    st.write(f"Groups: {', '.join(groups) or '(none)'}")
else:
    st.header("No identity headers received")

st.subheader("X-Auth-* headers")
rows = [{"header": k, "value": ", ".join(v)} for k, v in sorted(headers.items())
        if k.lower().startswith("x-auth-")]
st.table(rows or [{"header": "(none)", "value": ""}])

# Filled only when Streamlit runs with server.trustedUserHeaders.
user_info = st.user.to_dict()
if any(key != "is_logged_in" for key in user_info):
    st.subheader("st.user")
    st.json(user_info)

st.caption("Request headers and cookie names")
dump = {"headers": dict(sorted(headers.items())), "cookies": sorted(st.context.cookies)}
st.code(json.dumps(dump, indent=2), language="json")
