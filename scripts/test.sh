#!/usr/bin/env bash
# The whole test suite: installs what is missing (scripts/setup.sh), runs the crates' unit and
# integration tests, then the end-to-end tests in tests/e2e against a real SimpleSAMLphp IdP,
# a real Streamlit app and headless Chromium. Artifacts (logs, screenshots) go to target/e2e/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --locked --workspace --all-targets
cargo test --locked --workspace
SAML_GATEWAY_BIN="$PWD/target/debug/saml-gateway" \
  .venv/bin/python -m pytest -p no:cacheprovider -q tests/e2e
