#!/usr/bin/env bash
# Installs what the end-to-end test bed needs on a Debian 12 machine (run as root):
# the Debian packages below, then a Python venv at .venv with tests/requirements.txt.
# Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(pkg-config libclang-dev libxml2-dev libxmlsec1-dev xmlsec1 openssl
  simplesamlphp php-cli php-xml php-mbstring chromium chromium-driver redis-server curl
  logrotate tinyproxy)
need=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
# Debian's python3 can create a venv with pip only when python3-venv is installed.
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The package starts a proxy of its own on port 8888; the tests start theirs. Only one this
  # script has just installed is stopped.
  if [[ " ${need[*]} " == *" tinyproxy "* ]] && command -v systemctl >/dev/null; then
    systemctl disable --now tinyproxy >/dev/null 2>&1 || true
  fi
else
  echo "setup: Debian packages present"
fi

req=tests/requirements.txt
stamp=.venv/.requirements.sha256
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "setup: .venv up to date"
else
  [ -x .venv/bin/python ] || { echo "setup: creating .venv"; python3 -m venv .venv; }
  echo "setup: pip install -r $req"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
fi
echo "setup: done"
