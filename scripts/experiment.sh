#!/usr/bin/env bash
# The precision-recipe experiment of docs/results.md, on one CUDA GPU: a 57M-parameter
# Llama-style byte-level model (8 blocks, d_model 768, 12 heads, sequence 1024) trained on
# 1600 x 64 x 1024 = 104.9M tokens of the text installed with the machine's Python (the torch
# and transformers packages and the standard library: code, docstrings, headers, docs) under
# each recipe given, one `nvfp4 compare` per recipe so that a time-limited machine can run the
# list in parts; `nvfp4 report` then draws them into one report.
#
#   scripts/experiment.sh OUT RECIPE...     e.g. scripts/experiment.sh runs/exp bf16 fp8 nvfp4
#
# Environment: NVFP4 (the binary, default build/nvfp4), DATA (the corpus folder, built on first
# use, default /tmp/nvfp4-python-corpus), STEPS (default 1600).
set -euo pipefail
out=${1:?usage: scripts/experiment.sh OUT RECIPE...}
shift
nvfp4=${NVFP4:-build/nvfp4}
data=${DATA:-/tmp/nvfp4-python-corpus}
steps=${STEPS:-1600}

if [ ! -f "$data/manifest.json" ]; then
  site=$(python3 -c 'import site; print(site.getsitepackages()[0])')
  stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
  inputs=("$stdlib")
  for pkg in torch transformers; do
    [ -d "$site/$pkg" ] && inputs+=("$site/$pkg")
  done
  echo "corpus: ${inputs[*]}"
  "$nvfp4" data "${inputs[@]}" --out "$data" --val-fraction 0.005
fi

mkdir -p "$out"
for r in "$@"; do
  dir="$out/$(echo "$r" | tr ':=' '__')"
  "$nvfp4" compare --recipes "$r" --data "$data" --out "$dir" --device cuda \
    --layers 8 --d-model 768 --heads 12 --kv-heads 12 --seq-len 1024 --batch 64 --steps "$steps" \
    --lr 1e-3 --warmup 100 --schedule cosine --val-every 100 --val-batches 8 --ckpt-every 1000000 \
    --keep-checkpoints 1 --seed 1 --no-progress
done
