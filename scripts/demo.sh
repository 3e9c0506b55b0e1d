#!/usr/bin/env bash
# The demo: a SimpleSAMLphp test IdP on 127.0.0.1:8081, a multipage Streamlit demo app under
# /sales (127.0.0.1:8501) and /ops (127.0.0.1:8502), and saml-gateway on http://127.0.0.1:8080
# in front of both, each route with its own group rule (memory sessions, SP and token keys
# generated on first start under var/demo/). Installs what is missing first. Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --locked --bin saml-gateway
exec .venv/bin/python tests/testbed.py demo --gateway-bin target/debug/saml-gateway
