#!/usr/bin/env bash
# Are our token ids the reference's? Runs scripts/tokenizer_compare.sh for the three real
# tokenizers (Llama-3, Llama-2-style byte-fallback BPE, gpt-oss) on a corpus and sums the checks.
#
#   scripts/tokenizer_check.sh [NVFP4_BIN] [--small | --full [MB]]     defaults: build/nvfp4, --small
#
# --small: the ~320 KB sample corpus (the ctest Tokenizers.IdenticalToTheReference runs this);
# --full: the 10 MB corpus (docs/tokenizers.md records its result). Installs the reference
# (scripts/tokenizer_reference.sh install) when it is missing. Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/nvfp4}
mode=${2:---small}
mb=${3:-10}
[ -x "$bin" ] || { echo "tokenizer_check.sh: $bin is not an executable; build first (scripts/build.sh)" >&2; exit 1; }
if [ ! -d tests/tokenizer/reference/node_modules ] || [ ! -f tokenizer-data/gptoss/tokenizer.json ]; then
  bash scripts/tokenizer_reference.sh install || exit 1
fi
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
if [ "$mode" = --full ]; then
  bash scripts/tokenizer_corpus.sh "$corpus" "$mb" > /dev/null || exit 1
else
  bash scripts/tokenizer_corpus.sh --small "$corpus" > /dev/null || exit 1
fi
pass=0 fail=0
for t in llama3 llama2 gptoss; do
  log="$corpus/compare-$t.log"
  bash scripts/tokenizer_compare.sh "$bin" "tokenizer-data/$t/tokenizer.json" "$corpus" "$corpus/out-$t" > "$log" 2>&1
  rc=$?
  last=$(tail -1 "$log")
  echo "$t: $last"
  if [[ "$last" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
    pass=$((pass + BASH_REMATCH[1]))
    fail=$((fail + BASH_REMATCH[2]))
  else
    fail=$((fail + 1))
  fi
  if [ $rc -ne 0 ]; then
    grep -v "identical: yes" "$log" | head -30
  fi
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
