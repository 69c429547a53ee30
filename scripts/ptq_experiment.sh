#!/usr/bin/env bash
# The post-training quantization experiment of docs/ptq.md (issue 16's results), on one CUDA GPU:
# a byte-level BPE tokenizer (16,384 tokens) learned from the Python sources of the standard
# library, torch and transformers (what the machine's Python has), a ~110M-parameter Llama-style
# model (12 blocks, d_model 768, 12 heads, 1,024 tokens of context) trained on them with BF16 by
# `nvfp4 train`, exported as a Hugging Face folder, then scripts/ptq_table.sh: every quantization
# method's checkpoint against the model on the held-out split (perplexity, KL, top-1, quantize time).
#
#   scripts/ptq_experiment.sh OUT
#
# Environment: NVFP4 (the binary, default build/nvfp4), STEPS (training steps of 32 x 1024 tokens,
# default 1000), and ptq_table.sh's CALIB_TOKENS, EVAL_TOKENS, HOLDOUT_TOKENS, SENS_TOKENS, ROWS.
# Results (2026-12-07, H100): docs/ptq.md, "Results".
set -euo pipefail
out=${1:?usage: scripts/ptq_experiment.sh OUT}
nvfp4=${NVFP4:-build/nvfp4}
steps=${STEPS:-1000}
mkdir -p "$out"
out=$(cd "$out" && pwd)

if [ ! -f "$out/data/manifest.json" ]; then
  stdlib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
  site=$(python3 -c 'import site; print(site.getsitepackages()[0])')
  # One file of Python sources in a fixed order (nvfp4 data cuts it into ~64 KB documents).
  { find "$stdlib" -name '*.py' -not -path '*site-packages*' -not -path '*dist-packages*' | sort
    for p in torch transformers; do
      if [ -d "$site/$p" ]; then find "$site/$p" -name '*.py' | sort; fi
    done; } | xargs cat > "$out/corpus.txt"
  echo "corpus: $(wc -c < "$out/corpus.txt") bytes of Python"
  "$nvfp4" tokenizer train "$out/corpus.txt" --vocab 16384 --special '<|endoftext|>' --out "$out/tokenizer/"
  "$nvfp4" data "$out/corpus.txt" --tokenizer "$out/tokenizer/tokenizer.json" --out "$out/data" --val-fraction 0.01
fi
if [ ! -d "$out/model" ]; then
  "$nvfp4" train --data "$out/data" --out "$out/train" --device cuda --layers 12 --d-model 768 --heads 12 --kv-heads 12 \
    --seq-len 1024 --batch 32 --steps "$steps" --lr 1e-3 --warmup 100 --val-every 250 --val-batches 8 --no-progress
  "$nvfp4" export-hf "$(ls "$out"/train/ckpt_*.safetensors | tail -n 1)" "$out/model"
fi
CTX=1024 DEVICE=cuda NVFP4=$nvfp4 bash "$(dirname "$0")/ptq_table.sh" "$out/model" "$out/data" "$out/ptq"
