#!/usr/bin/env bash
# Encoding speed, one thread, ours and the reference (Hugging Face tokenizers' Node binding) in
# the same run on the same text: English prose (the corpus's prose_en.txt, ~5 MB, encoded as one
# text), for each of the three real tokenizers. Median of three runs after a warm-up on both
# sides; loading the tokenizer is not timed. Prints MB/s and the ratio (docs/perf.md).
#
#   scripts/tokenizer_bench.sh [NVFP4_BIN]       default: build/nvfp4
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/nvfp4}
[ -d tests/tokenizer/reference/node_modules ] && [ -f tokenizer-data/gptoss/tokenizer.json ] ||
  bash scripts/tokenizer_reference.sh install
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
bash scripts/tokenizer_corpus.sh "$dir" > /dev/null
text="$dir/prose_en.txt"
bytes=$(stat -c %s "$text")
printf '%-8s %12s %14s %14s %8s\n' tokenizer "bytes" "ours MB/s" "ref MB/s" ratio
for t in llama3 llama2 gptoss; do
  json="tokenizer-data/$t/tokenizer.json"
  ours=$("$bin" tokenize "$json" "$text" --json --bench | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')
  ref=$(node tests/tokenizer/reference/encode.mjs "$json" "$text" --bench | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["seconds"])')
  python3 - "$t" "$bytes" "$ours" "$ref" <<'PY'
import sys
t, n, ours, ref = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
print(f"{t:<8} {n:>12,} {n / ours / 1e6:>14.1f} {n / ref / 1e6:>14.2f} {ref / ours:>7.1f}x")
PY
done
