#!/usr/bin/env bash
# Are two builds' training losses bit-identical? Trains the same short runs with an earlier
# `nvfp4` binary (BEFORE) and this one (AFTER) on the same data, and compares every loss, val
# loss and grad norm in their metrics.jsonl (timing fields aside). For refactors that must not
# change numerics (the plan, op-family splits, ...).
#
#   scripts/parity.sh BEFORE AFTER OUT [DEVICE] [RECIPES]     defaults: cpu, "fp32 bf16 fp8 nvfp4 mxfp4"
#
# The dataset is built by BEFORE (an older binary may read only the shard layouts it wrote), from
# this repository's docs. Prints one line per recipe and "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
before=$1 after=$2 out=$3 device=${4:-cpu} recipes=${5:-fp32 bf16 fp8 nvfp4 mxfp4}
mkdir -p "$out"
rm -rf "$out/text" "$out/data"
mkdir -p "$out/text"
cp docs/*.md README.md "$out/text/"
"$before" data "$out/text" --out "$out/data" > "$out/data.log" 2>&1 || { echo "BEFORE could not build the data"; exit 1; }
if [ "$device" = cuda ]; then
  model=(--preset small --layers 6 --d-model 256 --heads 4 --seq-len 128 --batch 16 --steps 30)
else
  model=(--preset small --layers 4 --seq-len 64 --batch 4 --steps 12)
fi
pass=0 fail=0
for r in $recipes; do
  # BF16 blocks: first 0, last 1 (quantizing most of the small model). BEFORE_BF16 spells it for
  # an earlier binary whose --bf16-layers took another grammar (e.g. first:0,last:1).
  rec_after=() rec_before=()
  if [ "$r" != fp32 ]; then
    rec_after=(--recipe "$r" --bf16-layers 0-1)
    rec_before=(--recipe "$r" --bf16-layers "${BEFORE_BF16:-0-1}")
  fi
  for side in before after; do
    bin=$before args=("${rec_before[@]}")
    [ $side = after ] && bin=$after args=("${rec_after[@]}")
    rm -rf "$out/$r-$side"
    "$bin" train --data "$out/data" --out "$out/$r-$side" --device "$device" "${model[@]}" --val-every 10 --seed 3 \
      --no-progress "${args[@]}" > "$out/$r-$side.log" 2>&1
    # step, loss, val_loss and grad_norm of every record, as printed (full precision JSON)
    python3 - "$out/$r-$side/metrics.jsonl" > "$out/$r-$side.losses" <<'PY' 2>/dev/null || true
import json, sys
for line in open(sys.argv[1]):
    j = json.loads(line)
    print(j.get("step"), repr(j.get("loss")), repr(j.get("val_loss")), repr(j.get("grad_norm")))
PY
  done
  if [ -s "$out/$r-before.losses" ] && cmp -s "$out/$r-before.losses" "$out/$r-after.losses"; then
    echo "$r: identical ($(wc -l < "$out/$r-after.losses") records, last: $(tail -n 1 "$out/$r-after.losses"))"
    pass=$((pass + 1))
  else
    echo "$r: DIFFERENT (see $out/$r-*.losses, $out/$r-*.log)"
    diff "$out/$r-before.losses" "$out/$r-after.losses" | head -5
    fail=$((fail + 1))
  fi
done
echo "parity: $pass passed, $fail failed"
[ $fail -eq 0 ]
