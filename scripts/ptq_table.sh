#!/usr/bin/env bash
# The post-training quantization table of docs/ptq.md: MODEL (a Hugging Face folder, e.g. an
# `nvfp4 export-hf` of a trained checkpoint) quantized by `nvfp4 quantize` under each method,
# calibrated on DATA's train split, every checkpoint evaluated on DATA's val split against MODEL
# itself (`eval --reference-model`): perplexity, its change, KL of the next-token distributions,
# top-1 agreement, the quantize time, and for W4A4 the share of activation blocks above their
# layer's calibrated amax on held-out tokens (the last HOLDOUT_TOKENS of the val split, which
# eval, scoring the split from its start, does not reach while the split holds both; also the
# fallback rows' sensitivity tokens). FP8 (per-tensor, current scaling) is the engine's own
# precision on MODEL. Prints a markdown table (also OUT/table.md; the eval JSONs under OUT).
#
#   scripts/ptq_table.sh MODEL DATA OUT
#
# Environment: NVFP4 (the binary, default build/nvfp4), DEVICE (cpu | cuda | auto, default auto:
# calibration, the sensitivity pass and the evaluations), CALIB_TOKENS (16384), EVAL_TOKENS
# (32768 scored), HOLDOUT_TOKENS (8192), SENS_TOKENS (256: the per-layer pass), CTX (eval window, default
# the model's context up to 1024), ROWS (a space-separated subset of the row names below).
set -euo pipefail
model=${1:?usage: scripts/ptq_table.sh MODEL DATA OUT}
data=${2:?usage: scripts/ptq_table.sh MODEL DATA OUT}
out=${3:?usage: scripts/ptq_table.sh MODEL DATA OUT}
nvfp4=${NVFP4:-build/nvfp4}
device=${DEVICE:-auto}
calib_tokens=${CALIB_TOKENS:-16384}
eval_tokens=${EVAL_TOKENS:-32768}
sens_tokens=${SENS_TOKENS:-256}
holdout_tokens=${HOLDOUT_TOKENS:-8192}
mkdir -p "$out"

ctx_args=()
[ -n "${CTX:-}" ] && ctx_args=(--ctx "$CTX")

# name | nvfp4 quantize options ("-" for the engine's FP8 on MODEL)
rows=(
  "fp8|-"
  "w4a16-max|--scheme w4a16 --scales max"
  "w4a16-gptq|--scheme w4a16 --scales max --gptq"
  "w4a4-max|--scheme w4a4 --scales max"
  "w4a4-mse|--scheme w4a4 --scales mse"
  "w4a4-4over6|--scheme w4a4 --scales 4over6"
  "w4a4-gptq|--scheme w4a4 --scales max --gptq"
  "w4a4-mse-gptq|--scheme w4a4 --scales mse --gptq"
  "w4a4-p99.99|--scheme w4a4 --scales max --act-scale percentile:99.99"
  "w4a4-gptq-auto-fallback|--scheme w4a4 --scales max --gptq --auto-fallback 0.0002"
  "w4a4-gptq-budget-fallback|--scheme w4a4 --scales max --gptq --bf16-budget 0.1"
)

# A number from the JSON nvfp4 printed (its keys are unique and one per line).
field() { grep -o "\"$2\": *[-0-9.eE+]*" "$1" | head -n 1 | sed 's/.*: *//'; }

eval_args=(--data "$data" --max-tokens "$eval_tokens" --device "$device" --json "${ctx_args[@]}")
"$nvfp4" eval "$model" "${eval_args[@]}" > "$out/unquantized.json"
base_ppl=$(field "$out/unquantized.json" ppl)

table="$out/table.md"
{
  echo "| method | perplexity | vs unquantized | KL (nats/token) | top-1 agreement | quantize s | held-out blocks saturated |"
  echo "|---|---|---|---|---|---|---|"
  printf '| unquantized | %.4f | | | | | |\n' "$base_ppl"
} > "$table"
for row in "${rows[@]}"; do
  name=${row%%|*}
  opts=${row#*|}
  if [ -n "${ROWS:-}" ] && [[ " $ROWS " != *" $name "* ]]; then continue; fi
  json="$out/$name.json"
  seconds=""
  saturated=""
  if [ "$opts" = "-" ]; then
    "$nvfp4" eval "$model" "${eval_args[@]}" --precision fp8 --reference-model "$model" > "$json"
  else
    rm -rf "$out/$name"
    start=$(date +%s%N)
    # shellcheck disable=SC2086  # opts is a list of options
    "$nvfp4" quantize "$model" "$out/$name" --calib-data "$data" --calib-tokens "$calib_tokens" \
      --holdout "$data" --holdout-tokens "$holdout_tokens" --sensitivity-tokens "$sens_tokens" --device "$device" \
      $opts --json > "$out/$name.quantize.json"
    seconds=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    share=$(field "$out/$name.quantize.json" holdout_saturated_share || true)
    [ -n "$share" ] && saturated=$(awk -v s="$share" 'BEGIN { printf "%.4f %%", s * 100 }')
    "$nvfp4" eval "$out/$name" "${eval_args[@]}" --reference-model "$model" > "$json"
  fi
  awk -v n="$name" -v p="$(field "$json" ppl)" -v b="$base_ppl" -v kl="$(field "$json" kl_mean)" \
    -v t="$(field "$json" top1_agree)" -v s="$seconds" -v sat="$saturated" \
    'BEGIN { printf "| %s | %.4f | %+.2f %% | %.4g | %.2f %% | %s | %s |\n", n, p, (p / b - 1) * 100, kl, t * 100, s, sat }' >> "$table"
done
cat "$table"
