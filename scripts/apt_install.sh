#!/usr/bin/env bash
# Installs the Debian packages named that are not installed yet (sudo when not root), quietly;
# on failure prints apt's output and exits 1. The scripts' one way to get a package.
#
#   scripts/apt_install.sh PACKAGE...
set -uo pipefail
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "== installing: ${missing[*]}"
sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq \
       --no-install-recommends "${missing[@]}"; } > "$log" 2>&1; then
  cat "$log" >&2
  echo "apt_install.sh: apt-get could not install ${missing[*]} (output above); check the Debian mirror or install them by hand" >&2
  exit 1
fi
