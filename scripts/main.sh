#!/usr/bin/env bash
# The main job: build, make the default corpus (the English text of Debian's python3.11-doc
# package, tokenized by `nvfp4 data`), then `nvfp4 compare`: train the same small Llama-style
# model on it under BF16, NVFP4 (the paper's recipe) and MXFP4, and print the summary table and
# where the HTML report went; then quantize the BF16 run's model (`nvfp4 quantize` under each
# method, scripts/ptq_table.sh) and print each checkpoint's perplexity and KL. A few minutes on a
# CPU; on a machine with an NVIDIA GPU it trains a larger model there instead. Progress goes to stderr: a redrawn bar on a terminal, else a
# line per recipe at the start, at each tenth of its steps and at most once a minute between.
#
#   bash scripts/main.sh [--cpu] [extra nvfp4 compare options, e.g. --recipes bf16,fp8,nvfp4]
#   --cpu: the CPU run even where a GPU is present (its numbers are the README's; see
#          scripts/check_readme.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
cpu_only=0
if [ "${1:-}" = "--cpu" ]; then
  cpu_only=1
  shift
fi
bash scripts/build.sh
bash scripts/corpus.sh

out="runs/main-$(date +%Y%m%d-%H%M%S)"  # a new folder each time: earlier runs are kept
if [ "$cpu_only" -eq 0 ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  # 8 layers x 512, 8 heads of 64, 512 tokens of context; 600 steps of 32 x 512 tokens.
  args=(--device cuda --preset small --layers 8 --d-model 512 --heads 8 --seq-len 512 --batch 32 --steps 600
        --lr 1e-3 --val-every 50)
else
  # 6 layers x 128 (1.3 M parameters), 128 tokens of context; 120 steps of 16 x 128 tokens.
  # Under nvfp4 and mxfp4 the first block and the last 2 stay in BF16 (the paper's rule).
  args=(--device cpu --preset small --layers 6 --batch 16 --steps 120 --lr 2e-3 --val-every 20)
fi
./build/nvfp4 compare --data data/python-doc --out "$out" --recipes bf16,nvfp4,mxfp4 "${args[@]}" "$@"

# Post-training quantization of the BF16 run's model (docs/ptq.md): exported as a Hugging Face
# folder, quantized by `nvfp4 quantize` under each method (calibrated on the corpus's train split),
# every checkpoint's perplexity and KL against the model on its val split.
ckpt=$(ls "$out"/bf16-seed*/ckpt_*.safetensors 2> /dev/null | tail -n 1 || true)
if [ -z "$ckpt" ]; then
  echo "(no bf16 run in $out: no post-training quantization table)"
  exit 0
fi
./build/nvfp4 export-hf "$ckpt" "$out/bf16-hf" > /dev/null
echo "== post-training quantization of $out/bf16-hf (calibration: data/python-doc train; evaluation: its val split)"
NVFP4=build/nvfp4 bash scripts/ptq_table.sh "$out/bf16-hf" data/python-doc "$out/ptq"
