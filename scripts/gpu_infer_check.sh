#!/usr/bin/env bash
# On a machine with a CUDA GPU (and python3 with torch and transformers): the inference checks of
# docs/inference.md and the speed table of docs/perf.md. Reads binaries from an existing build
# (scripts/build.sh, or a build copied from a machine without a GPU); logs to OUT; summary last.
#
#   scripts/gpu_infer_check.sh [BUILD] [OUT]        defaults: build, gpu-infer-<time>
#
#  1. the CUDA inference tests (ops, engine);
#  2. tests/hf/check_hf_models.py: random transformers models of every architecture, CPU and CUDA,
#     plus four `export-hf` folders of models trained here on the CPU for a few steps: plain
#     Llama (GQA), Qwen2 (biases), Qwen3 features (head_dim, q/k norms, biases, tied head, llama3
#     RoPE scaling) and Mistral ones (MQA, sliding window, linear RoPE scaling) — skipped when
#     python3 has no transformers;
#  3. `nvfp4 generate` (a batch of 2) and `eval --reference bf16` on CUDA for four exports, one per
#     architecture (Llama, Qwen2, Qwen3, Mistral), one precision each (bf16, w4a16, w4a4, fp8);
#  4. bench_infer at the Llama-3.2-1B and Llama-3.1-8B shapes (writes ~2.5 and ~16 GB of random
#     weights under OUT), then `generate` and `eval --reference bf16 --per-layer` on the 1B folder
#     with TOKENIZER (a tokenizer.json; default: tokenizer-data/llama3/tokenizer.json when present).
#
# Environment: SPEED=0 skips step 4; PRECISIONS=bf16,w4a16 (a bench_infer --precisions list)
# narrows it; PROFILE=1 also runs Nsight Compute over a short 1B generation (per-kernel times of
# the prefill and the replayed decode steps).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=$(cd "${1:-build}" && pwd)
out=${2:-gpu-infer-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
nv="$build/nvfp4"
tokenizer=${TOKENIZER:-$root/tokenizer-data/llama3/tokenizer.json}
summary=()
failed=0
note() { summary+=("$1"); }

for t in test_cuda_ops test_cuda_engine; do
  filter=()
  [ $t = test_cuda_ops ] && filter=(--gtest_filter='*KvCache*:*QuantizeRows*:*Rope*:*FusedRows*:*RmsNorm*:*Swiglu*:*Residual*:*Gemv*:*Matmul*:*Elementwise*')
  "$build/tests/$t" "${filter[@]}" --gtest_brief=1 > "$out/$t.log" 2>&1
  rc=$?
  note "$t: rc $rc $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/$t.log" | tr '\n' ' ')"
  [ $rc -eq 0 ] || { failed=1; grep -E 'Failure|FAILED' -A4 "$out/$t.log" | head -20; }
done

# Two small models with the architectures' features, trained on the CPU and exported.
text="$out/text"
rm -rf "$text" && mkdir -p "$text" && cp docs/*.md README.md "$text/"
"$nv" data "$text" --out "$out/data" > "$out/data.log" 2>&1 || { note "data: FAILED (see data.log)"; failed=1; }
cat > "$out/qwen3.json" <<'EOF'
{"n_layer": 2, "d_model": 64, "n_head": 4, "n_kv_head": 2, "vocab": 257, "seq_len": 64, "head_dim": 32,
 "qk_norm": true, "attention_bias": true, "tie_embeddings": true,
 "rope_scaling": {"type": "llama3", "factor": 8, "low_freq_factor": 1, "high_freq_factor": 4, "original_max_position": 16}}
EOF
cat > "$out/mistral.json" <<'EOF'
{"n_layer": 2, "d_model": 64, "n_head": 4, "n_kv_head": 1, "vocab": 257, "seq_len": 64, "sliding_window": 8,
 "rope_scaling": {"type": "linear", "factor": 2}}
EOF
cat > "$out/qwen2.json" <<'EOF'
{"n_layer": 2, "d_model": 64, "n_head": 4, "n_kv_head": 2, "vocab": 257, "seq_len": 64, "attention_bias": true}
EOF
cat > "$out/llama.json" <<'EOF'
{"n_layer": 2, "d_model": 64, "n_head": 4, "n_kv_head": 2, "vocab": 257, "seq_len": 64}
EOF
exports=()
declare -A precision=([llama]=bf16 [qwen2]=w4a16 [qwen3]=w4a4 [mistral]=fp8)
for a in llama qwen2 qwen3 mistral; do
  rm -rf "$out/train-$a" "$out/export-$a"
  if "$nv" train --data "$out/data" --out "$out/train-$a" --config "$out/$a.json" --device cpu --steps 40 --batch 4 \
       --no-progress > "$out/train-$a.log" 2>&1 &&
     "$nv" export-hf "$(ls "$out/train-$a"/ckpt_*.safetensors | tail -n 1)" "$out/export-$a" > "$out/export-$a.log" 2>&1; then
    exports+=(--export "$out/export-$a")
    # Every architecture through both commands on CUDA, one precision each.
    p=${precision[$a]}
    "$nv" generate "$out/export-$a" --prompt "The model" --max-tokens 24 --device cuda --precision $p --batch 2 --json \
      > "$out/generate-$a.json" 2> "$out/generate-$a.err"
    rc=$?
    "$nv" eval "$out/export-$a" --text README.md --ctx 64 --device cuda --precision $p --reference bf16 --json \
      > "$out/eval-$a.json" 2> "$out/eval-$a.err"
    rc2=$?
    note "export-$a ($(grep -o '"model_type": *"[a-z0-9]*"' "$out/export-$a/config.json")): generate (cuda, $p, batch 2) rc $rc, eval (cuda, $p vs bf16) rc $rc2"
    [ $rc -eq 0 ] && [ $rc2 -eq 0 ] || failed=1
  else
    note "train/export $a: FAILED (see train-$a.log, export-$a.log)"
    failed=1
  fi
done

if python3 -c "import torch, transformers" 2> /dev/null; then
  python3 tests/hf/check_hf_models.py --nvfp4 "$nv" --out "$out/hf" --json "$out/hf.json" "${exports[@]}" \
    > "$out/hf.log" 2>&1
  rc=$?
  note "check_hf_models: rc $rc ($(grep -E 'checks passed|FAILED' "$out/hf.log" | head -n 1))"
  [ $rc -eq 0 ] || failed=1
  rm -rf "$out/hf"
else
  note "check_hf_models: skipped (python3 has no torch/transformers)"
fi

if [ "${SPEED:-1}" != 0 ]; then
  # The speed table first (both shapes), then the commands on the 1B folder.
  for cfg in llama-3.2-1b llama-3.1-8b; do
    dir="$out/model-$cfg"
    precisions=${PRECISIONS:-bf16,bf16-serial,bf16-apart,w4a16,w4a4,fp8}
    decode=128
    [ $cfg = llama-3.2-1b ] && decode=64
    "$build/bench/bench_infer" --config $cfg --dir "$dir" --decode $decode --precisions $precisions \
      --json "$out/bench-$cfg.json" > "$out/bench-$cfg.txt" 2>&1
    rc=$?
    note "bench_infer $cfg: rc $rc"
    [ $rc -eq 0 ] || failed=1
    [ $cfg = llama-3.1-8b ] && rm -rf "$dir"
  done
  dir="$out/model-llama-3.2-1b"
  if [ -f "$tokenizer" ] && [ -d "$dir" ]; then
    cp "$tokenizer" "$dir/tokenizer.json"
    "$nv" generate "$dir" --prompt "The capital of France is" --max-tokens 64 --device cuda --precision bf16 --json \
      > "$out/generate-1b.json" 2> "$out/generate-1b.err"
    note "generate 1b (cuda, bf16): rc $?"
    "$nv" eval "$dir" --text README.md --ctx 512 --device cuda --precision w4a4 --reference bf16 --per-layer \
      --per-layer-tokens 64 --json > "$out/eval-1b.json" 2> "$out/eval-1b.err"
    rc=$?
    note "eval 1b (cuda, w4a4 against bf16, per layer): rc $rc"
    [ $rc -eq 0 ] || failed=1
    if [ "${PROFILE:-0}" = 1 ] && command -v ncu > /dev/null; then
      ncu --graph-profiling node --metrics gpu__time_duration.sum --print-summary per-kernel "$nv" generate "$dir" \
        --prompt "The capital of France is" --max-tokens 3 --device cuda --precision bf16 > "$out/ncu-1b.txt" 2>&1
      note "ncu 1b: rc $? (ncu-1b.txt)"
    fi
  fi
  rm -rf "$dir"
fi

echo
echo "==== $out"
[ -f "$out/hf.log" ] && grep -E 'PASS|FAIL' "$out/hf.log" | tail -n 14
for f in "$out"/bench-*.txt; do [ -f "$f" ] && tail -n 9 "$f"; done
printf '%s\n' "${summary[@]}"
[ $failed -eq 0 ]
