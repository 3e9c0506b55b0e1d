#!/usr/bin/env bash
# Installs what the proxy benchmark and the PGO training run need beyond the test bed (run as
# root on Debian 12): Debian's nginx (the upstream and the reference proxy) and wrk, plus the
# packages named as arguments (run.sh adds linux-perf, build-pgo.sh llvm-N); then the test
# bed's packages and .venv through scripts/setup.sh. A package Debian does not offer is
# skipped with a message; callers check for what they cannot do without.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
for p in nginx wrk "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "bench: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Keep the nginx package from starting a system-wide nginx on port 80.
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  for p in "${need[@]}"; do
    if ! apt-cache show "$p" >/dev/null 2>&1; then
      echo "bench: Debian offers no $p here; going on without it"
      continue
    fi
    apt-get install -y -qq --no-install-recommends "$p" >/dev/null
  done
  [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
fi

# SimpleSAMLphp, Redis and the .venv (requests, websocket-client) of the test bed.
scripts/setup.sh
