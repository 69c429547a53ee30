#!/usr/bin/env bash
# The client side of the server interop test (scripts/serve_check.sh): the official OpenAI Node
# client, pinned in tests/serve/client/package-lock.json, installed into its git-ignored
# node_modules with `npm ci`. Safe to run again: skipped while node_modules holds the pinned version.
#
#   scripts/serve_reference.sh install
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "serve_reference.sh: $*" >&2; exit 1; }
[ "${1:-}" = install ] && [ $# -eq 1 ] || die "usage: scripts/serve_reference.sh install"
dir=tests/serve/client
command -v node >/dev/null || die "node is not on PATH; install Node.js >= 18 (e.g. apt-get install nodejs npm)"
command -v npm >/dev/null || die "npm is not on PATH; install it next to node (apt-get install npm)"
want=$(node -p "require('./$dir/package-lock.json').packages['node_modules/openai'].version")
have=$(node -p "try { require('./$dir/node_modules/openai/package.json').version } catch (e) { '' }")
if [ "$want" != "$have" ]; then
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  if ! (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) > "$log" 2>&1; then
    cat "$log" >&2
    die "npm ci in $dir failed (output above); is the npm registry reachable? (npm config get registry)"
  fi
fi
echo "serve client ready: openai@$want (Node $(node --version))"
