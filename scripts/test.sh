#!/usr/bin/env bash
# Runs the whole test suite: the crates' unit and integration tests (the saml-sp integration
# tests sign responses with the xmlsec1 command-line tool).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v xmlsec1 >/dev/null 2>&1 || need+=(xmlsec1)
dpkg -s libxmlsec1-dev >/dev/null 2>&1 || need+=(libxmlsec1-dev libxml2-dev pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
cargo test --locked --workspace
