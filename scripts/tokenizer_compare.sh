#!/usr/bin/env bash
# Tokenizer exactness: compare `nvfp4 tokenize` with Hugging Face `tokenizers` (the reference,
# tests/tokenizer/reference/encode.mjs) on every file of a corpus.
#
#   scripts/tokenizer_compare.sh NVFP4_BIN TOKENIZER_JSON CORPUS_DIR [OUT_DIR]
#
# e.g.  scripts/tokenizer_reference.sh install
#       scripts/tokenizer_corpus.sh --small /tmp/tok-corpus
#       scripts/tokenizer_compare.sh build/nvfp4 tokenizer-data/llama3/tokenizer.json /tmp/tok-corpus
#
# Three checks per corpus file (regular files, hidden ones skipped, in sorted order):
#   encode  `--jsonl` ids of both, line by line (no special tokens);
#   decode  `--jsonl --decode` of the reference's ids by both, line by line;
#   whole   the token count of the whole file as one text: the reference's {"tokens": N} and
#           ours from `NVFP4_BIN tokenize TOKENIZER FILE --json` (a JSON object with "tokens").
# Per check it prints lines, tokens, identical yes/no and, when not, the first differing line:
# its text (escaped) and both id arrays or decoded texts (truncated). The last line is exactly
# "N passed, N failed"; the exit status is 1 when any check failed (2: bad usage or setup).
# Outputs go to OUT_DIR (kept; default a temporary folder, removed at the end) as
# NAME.{ref,ours}.{jsonl,decoded,whole}, plus NAME.ours.*.err with our stderr.
set -euo pipefail

die() { echo "tokenizer_compare.sh: $*" >&2; exit 2; }
[ $# -ge 3 ] && [ $# -le 4 ] || die "usage: scripts/tokenizer_compare.sh NVFP4_BIN TOKENIZER_JSON CORPUS_DIR [OUT_DIR]"
nvfp4=$1 tok=$2 corpus=$3
root=$(cd "$(dirname "$0")/.." && pwd)
encode="$root/tests/tokenizer/reference/encode.mjs"

[ -x "$nvfp4" ] || command -v "$nvfp4" >/dev/null || die "$nvfp4 is not an executable; build it first (bash scripts/build.sh)"
[ -f "$tok" ] || die "$tok: no such tokenizer.json; scripts/tokenizer_reference.sh install writes tokenizer-data/{llama3,llama2,gptoss}/tokenizer.json"
[ -d "$corpus" ] || die "$corpus: no such folder; make one with scripts/tokenizer_corpus.sh $corpus"
[ -d "$root/tests/tokenizer/reference/node_modules/tokenizers" ] || die "the reference is not installed; run scripts/tokenizer_reference.sh install"
command -v node >/dev/null || die "node is not on PATH"
command -v python3 >/dev/null || die "python3 is not on PATH"

if [ $# -eq 4 ]; then
  out=$4
  mkdir -p "$out"
  cleanup() { :; }
else
  out=$(mktemp -d)
  cleanup() { rm -rf "$out"; }
fi
checker=$(mktemp)
trap 'cleanup; rm -f "$checker"' EXIT

# The line-by-line comparison and its report: checker MODE NAME SOURCE REF OURS [SECONDS...]
cat >"$checker" <<'PY'
import json, sys

mode, name, source, ref_path, ours_path = sys.argv[1:6]
timing = " ".join(sys.argv[6:])
LIMIT = 160  # characters shown of a differing line, id array or decoded text


def escape(raw):
    """Bytes as readable text: valid UTF-8 kept, controls and invalid bytes escaped."""
    s = json.dumps(raw.decode("utf-8", errors="surrogateescape"), ensure_ascii=False)[1:-1]
    s = "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in s)
    return s if len(s) <= LIMIT else s[:LIMIT] + f"... ({len(raw)} bytes)"


def lines_of(path):
    data = open(path, "rb").read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def show_ids(raw):
    s = raw.decode("utf-8", errors="replace")
    return s if len(s) <= LIMIT else s[:LIMIT] + f"... ({s.count(',') + 1} ids)"


label = f"{name:<22} {mode:<6}"
when = f"  [{timing}]" if timing else ""


def head(lines, tokens):
    return f"{label} {lines:>15} {tokens:>17}  identical:"


if mode == "whole":
    ref = json.loads(open(ref_path).read())["tokens"]
    try:
        ours = json.loads(open(ours_path).read())["tokens"]
    except (ValueError, KeyError, TypeError) as e:
        print(f"{head('1 text', f'{ref} tokens')} no  (our output is not a JSON object with \"tokens\": {e!r})")
        sys.exit(1)
    same = ref == ours
    print(f"{head('1 text', f'{ref} tokens')} " + ("yes" if same else f"no  (ours {ours}, {ours - ref:+d})") + when)
    sys.exit(0 if same else 1)

ref, ours = lines_of(ref_path), lines_of(ours_path)
tokens = f"{sum(len(json.loads(l)) for l in ref)} tokens" if mode == "encode" else ""
n_diff = sum(1 for a, b in zip(ref, ours) if a != b) + abs(len(ref) - len(ours))
if n_diff == 0:
    print(f"{head(f'{len(ref)} lines', tokens)} yes{when}")
    sys.exit(0)
first = next((i for i, (a, b) in enumerate(zip(ref, ours)) if a != b), min(len(ref), len(ours)))
count = "" if len(ref) == len(ours) else f"; ours has {len(ours)} lines"
print(f"{head(f'{len(ref)} lines', tokens)} no  ({n_diff} lines differ{count}; first at line {first + 1})")
src = lines_of(source)
if first < len(src):
    print(f"    text: \"{escape(src[first])}\"")
show = show_ids if mode == "encode" else (lambda raw: '"' + escape(raw) + '"')
print(f"    ref : {show(ref[first]) if first < len(ref) else '(no line)'}")
print(f"    ours: {show(ours[first]) if first < len(ours) else '(no line)'}")
sys.exit(1)
PY

passed=0 failed=0
record() { if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

# Runs one side; on failure prints why and returns 1. side NAME TAG OUTFILE ERRFILE CMD...
run_side() {
  local name=$1 tag=$2 outfile=$3 errfile=$4
  shift 4
  local rc=0
  "$@" >"$outfile" 2>"$errfile" || rc=$?
  if [ "$rc" -ne 0 ]; then
    printf '%-22s %-6s %s failed (exit %s): %s\n' "$name" "$tag" "$(basename "$1")" "$rc" "$(tail -c 300 "$errfile" | tr '\n' ' ')"
    return 1
  fi
}

echo "== $(basename "$nvfp4") vs Hugging Face tokenizers on $tok, corpus $corpus"
found=0
while IFS= read -r -d '' file; do
  found=1
  name=$(basename "$file")
  o="$out/$name"

  # encode
  t0=$(now)
  run_side "$name" encode "$o.ref.jsonl" "$o.ref.encode.err" node "$encode" "$tok" "$file" --jsonl || { failed=$((failed + 3)); continue; }
  t1=$(now)
  if run_side "$name" encode "$o.ours.jsonl" "$o.ours.encode.err" "$nvfp4" tokenize "$tok" "$file" --jsonl; then
    t2=$(now)
    record python3 "$checker" encode "$name" "$file" "$o.ref.jsonl" "$o.ours.jsonl" "ref $(secs "$t0" "$t1") s, ours $(secs "$t1" "$t2") s"
  else
    failed=$((failed + 1))
  fi

  # decode of the reference's ids, by both
  if run_side "$name" decode "$o.ref.decoded" "$o.ref.decode.err" node "$encode" "$tok" "$o.ref.jsonl" --jsonl --decode \
    && run_side "$name" decode "$o.ours.decoded" "$o.ours.decode.err" "$nvfp4" tokenize "$tok" "$o.ref.jsonl" --jsonl --decode; then
    record python3 "$checker" decode "$name" "$file" "$o.ref.decoded" "$o.ours.decoded"
  else
    failed=$((failed + 1))
  fi

  # whole file as one text: token counts
  t0=$(now)
  if run_side "$name" whole "$o.ref.whole" "$o.ref.whole.err" node "$encode" "$tok" "$file" \
    && t1=$(now) && run_side "$name" whole "$o.ours.whole" "$o.ours.whole.err" "$nvfp4" tokenize "$tok" "$file" --json; then
    t2=$(now)
    record python3 "$checker" whole "$name" "$file" "$o.ref.whole" "$o.ours.whole" "ref $(secs "$t0" "$t1") s, ours $(secs "$t1" "$t2") s"
  else
    failed=$((failed + 1))
  fi
done < <(find "$corpus" -maxdepth 1 -type f ! -name '.*' -print0 | LC_ALL=C sort -z)
[ "$found" -eq 1 ] || die "$corpus holds no files"
[ $# -eq 4 ] && echo "== outputs kept in $out"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
