#!/usr/bin/env bash
# The main job: build, make the default corpus (the English text of Debian's python3.11-doc
# package, tokenized by `nvfp4 data`), then pretrain a small Llama-style model on it and print
# the loss table and where the metrics and checkpoint went. A few minutes on a CPU; on a
# machine with an NVIDIA GPU it trains a larger model there instead.
#
#   bash scripts/main.sh [extra nvfp4 train options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
bash scripts/corpus.sh

out="runs/main-$(date +%Y%m%d-%H%M%S)"  # a new folder each time: earlier runs are kept
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  # 8 layers x 512, 8 heads of 64, 512 tokens of context; 600 steps of 32 x 512 tokens.
  args=(--device cuda --preset small --layers 8 --d-model 512 --heads 8 --seq-len 512 --batch 32 --steps 600
        --lr 1e-3 --val-every 100)
else
  # 4 layers x 128 (0.9 M parameters), 128 tokens of context; 300 steps of 16 x 128 tokens.
  args=(--device cpu --preset small --batch 16 --steps 300 --lr 2e-3 --val-every 50)
fi
./build/nvfp4 train --data data/python-doc --out "$out" "${args[@]}" "$@"
