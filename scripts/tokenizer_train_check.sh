#!/usr/bin/env bash
# `nvfp4 tokenizer train` against Hugging Face `tokenizers` (docs/tokenizer_training.md):
#
#   scripts/tokenizer_train_check.sh NVFP4_BIN [WORK_DIR]     # WORK_DIR default: a temporary folder
#
# 1. corpora: scripts/tokenizer_corpus.sh WORK_DIR/corpus (10 MB) and --small WORK_DIR/small;
#    the training text WORK_DIR/train is the last tenth of each 10 MB file, from its first line
#    start (about 1 MB, the same kinds: prose, code, ja/zh/ru, white space, emoji, invalid UTF-8).
# 2. trains: NVFP4_BIN tokenizer train WORK_DIR/train --vocab 4096 --special '<|endoftext|>'
#    --out WORK_DIR/tok/ --json
# 3. encoding: scripts/tokenizer_compare.sh on the small corpus with the trained file (the
#    reference must load it and give our ids, decodings and counts);
# 4. segmentation: the reference's token count of every training file, summed, equals the
#    trainer's own count of the training text ("tokens"): encoding reproduces what training saw;
# 5. merges: the valid-UTF-8 training files without blank lines (where reading line by line, as
#    the reference trainer does, cuts no word), trained by both with vocab 30000 and
#    min-frequency 1 (the reference's defaults; tests/tokenizer/reference/train.mjs) — our merges
#    must equal the reference's first ones, in order (it makes more: its alphabet holds only the
#    characters seen, ours all 256 bytes).
# Prints one line per check and "N passed, N failed"; exit status 1 when any failed.
# Needs scripts/tokenizer_reference.sh install, node and python3.
set -euo pipefail

die() { echo "tokenizer_train_check.sh: $*" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: scripts/tokenizer_train_check.sh NVFP4_BIN [WORK_DIR]"
nvfp4=$1
root=$(cd "$(dirname "$0")/.." && pwd)
ref=$root/tests/tokenizer/reference
[ -x "$nvfp4" ] || die "$nvfp4 is not an executable; build it first (bash scripts/build.sh)"
[ -d "$ref/node_modules/tokenizers" ] || die "the reference is not installed; run scripts/tokenizer_reference.sh install"
if [ $# -eq 2 ]; then
  work=$2
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi

passed=0 failed=0
check() {  # check NAME OK(0/1) DETAIL
  if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "$1: ok  $3"; else failed=$((failed + 1)); echo "$1: FAILED  $3"; fi
}

bash "$root/scripts/tokenizer_corpus.sh" "$work/corpus" 10 >/dev/null
bash "$root/scripts/tokenizer_corpus.sh" --small "$work/small" >/dev/null
python3 - "$work/corpus" "$work/train" "$work/lines.txt" <<'PY'
import os, sys
src, train, lines = sys.argv[1:4]
os.makedirs(train, exist_ok=True)
with open(lines, "wb") as out:
    for name in sorted(os.listdir(src)):
        data = open(os.path.join(src, name), "rb").read()
        tail = data[len(data) - len(data) // 10:]
        tail = tail[tail.find(b"\n") + 1:]
        open(os.path.join(train, name), "wb").write(tail)
        try:
            tail.decode("utf-8")
        except UnicodeDecodeError:
            continue  # the reference trainer reads only valid UTF-8
        for line in tail.split(b"\n"):
            if line.strip():
                out.write(line + b"\n")
PY

echo "== $nvfp4 tokenizer train $work/train --vocab 4096 --special '<|endoftext|>' --out $work/tok/ --json"
"$nvfp4" tokenizer train "$work/train" --vocab 4096 --special '<|endoftext|>' --out "$work/tok/" --json \
  >"$work/train.json" 2>"$work/train.log" || { cat "$work/train.log" >&2; die "training failed"; }
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("   text %d bytes, vocab %d, merges %d, %d tokens, %.1f s + %.1f s" % (j["text_bytes"], j["vocab_size"], j["merges"], j["tokens"], j["count_seconds"], j["merge_seconds"]))' "$work/train.json"

echo "== encoding: scripts/tokenizer_compare.sh on $work/small"
rc=0
bash "$root/scripts/tokenizer_compare.sh" "$nvfp4" "$work/tok/tokenizer.json" "$work/small" >"$work/compare.log" 2>&1 || rc=$?
sed 's/^/   /' "$work/compare.log" | tail -n 30
check encoding $rc "$(tail -n 1 "$work/compare.log")"

echo "== segmentation: the reference's token count of the training text"
want=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tokens"])' "$work/train.json")
got=0
for f in "$work"/train/*; do
  n=$(node "$ref/encode.mjs" "$work/tok/tokenizer.json" "$f" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"])')
  got=$((got + n))
done
check segmentation $([ "$got" -eq "$want" ] && echo 0 || echo 1) "reference $got tokens, trainer $want"

echo "== merges: both trainers on $work/lines.txt, vocab 30000, min-frequency 1"
"$nvfp4" tokenizer train "$work/lines.txt" --vocab 30000 --min-frequency 1 --out "$work/ours-30k.json" --no-config \
  >/dev/null 2>&1 || die "training on $work/lines.txt failed"
node "$ref/train.mjs" "$work/ours-30k.json" "$work/lines.txt" "$work/ref-30k.json" >/dev/null 2>&1 \
  || die "the reference trainer failed: node $ref/train.mjs $work/ours-30k.json $work/lines.txt $work/ref-30k.json"
rc=0
detail=$(python3 - "$work/ours-30k.json" "$work/ref-30k.json" <<'PY'
import json, sys
def merges(path):
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in json.load(open(path))["model"]["merges"]]
ours, ref = merges(sys.argv[1]), merges(sys.argv[2])
n = min(len(ours), len(ref))
first = next((i for i in range(n) if ours[i] != ref[i]), None)
if first is None and len(ours) <= len(ref):
    print(f"our {len(ours)} merges are the reference's first {len(ours)} (it made {len(ref)})")
    sys.exit(0)
at = first if first is not None else n
print(f"merge {at} differs: ours {ours[at] if at < len(ours) else None}, reference {ref[at] if at < len(ref) else None}")
sys.exit(1)
PY
) || rc=$?
check merges $rc "$detail"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
