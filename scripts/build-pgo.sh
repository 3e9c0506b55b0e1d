#!/usr/bin/env bash
# Builds saml-gateway with profile-guided optimisation (PGO): an instrumented build runs the
# proxy benchmark's workloads (benches/proxy/pgo_train.py: logins, authenticated GETs at 32
# connections and at one, WebSocket echo, redirects to the IdP; memory and Redis store), LLVM
# merges what it counted, and the final build lays out and inlines the code by those counts.
# The proxy path then runs about a quarter fewer instructions per request (docs/performance.md,
# "Profile-guided build"). Same source, same Cargo.lock, same behaviour: only the machine code
# differs. Run as root on Debian 12 (it installs nginx, wrk, llvm-N and the test bed's
# packages); takes about 10 minutes on two cores.
#
#   scripts/build-pgo.sh        # writes target/pgo/saml-gateway
#
# llvm-profdata must come from the LLVM that rustc was built with (`rustc -vV`); Debian's
# llvm-N package of that major version is installed when Debian offers it.
set -euo pipefail
cd "$(dirname "$0")/.."

llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9][0-9]*\).*/\1/p')
if [ -z "$llvm" ]; then
  echo "build-pgo: cannot tell rustc's LLVM version from 'rustc -vV'" >&2
  exit 1
fi
benches/proxy/deps.sh "llvm-$llvm"
profdata=$(command -v "llvm-profdata-$llvm" || true)
if [ -z "$profdata" ]; then
  echo "build-pgo: llvm-profdata-$llvm (Debian's llvm-$llvm, the LLVM of this rustc) is needed" \
    "to merge the profile; the plain build is target/release/saml-gateway" >&2
  exit 1
fi

out="$PWD/target/pgo"
rm -rf "$out/profiles"
mkdir -p "$out/profiles"
# Separate target directories: the flags differ, and the plain build in target/release stays.
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$out/profiles" \
  cargo build --release --locked --bin saml-gateway --target-dir "$out/generate"
# The WebSocket echo server and client of the training run.
cargo build --release --locked -q -p gateway --example ws_echo
LLVM_PROFILE_FILE="$out/profiles/gateway-%p.profraw" \
  .venv/bin/python benches/proxy/pgo_train.py "$out/generate/release/saml-gateway"
# Only the gateway's own profiles: build scripts of the instrumented build write theirs here too.
"$profdata" merge -o "$out/gateway.profdata" "$out"/profiles/gateway-*.profraw
# Cargo rebuilds when the flags change, not when the file they name does: the profile's path
# carries its hash, so that every crate is built again with a new profile.
profile="$out/gateway-$(sha256sum "$out/gateway.profdata" | cut -c1-16).profdata"
rm -f "$out"/gateway-*.profdata
mv "$out/gateway.profdata" "$profile"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$profile" \
  cargo build --release --locked --bin saml-gateway --target-dir "$out/use"
cp "$out/use/release/saml-gateway" "$out/saml-gateway"
echo "build-pgo: $out/saml-gateway"
