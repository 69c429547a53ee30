#!/usr/bin/env bash
# On a machine with a CUDA GPU: the fused NVFP4 kernels' check (issue 17, docs/kernels.md) — their
# tests, compute-sanitizer memcheck and racecheck on them, bench_gemm_nvfp4 (every kernel against
# cuBLAS BF16 in the same run, each result checked first), the engine's tests and the 8B decode
# end to end (bench_infer), the fused W4A4 training test and the training step under each W4A4
# kernel (bench_train_cuda). Reads binaries from an existing build (scripts/build.sh, or one copied
# from a machine without a GPU), writes logs to OUT, prints a summary and the tables last.
#
#   scripts/gpu_kernels_check.sh [BUILD] [OUT]        defaults: build, gpu-kernels-<time>
#
# Environment: M (bench_gemm_nvfp4's token counts, default 1,8,16,32,64,256,1024,4096); SANITIZE=0
# skips the sanitizers; INFER=0 skips bench_infer (it writes a 16 GB model folder to /tmp/m8b);
# TRAIN=0 skips the training step with each W4A4 kernel (bench_train_cuda, GPT-2-small shape);
# NCU=1 adds Nsight Compute on the warp-specialized GEMMs at 70B q/o x 4096 tokens (ncu_ws.log:
# throughput, memory, warp-state and scheduler sections of two launches of each ws kernel).
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-gpu-kernels-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
summary=()
failed=0
run() {  # name, command...: its log in OUT/name.log, a summary line with its gtest or sanitizer verdict
  local name=$1
  shift
  local start=$SECONDS
  "$@" > "$out/$name.log" 2>&1
  local rc=$?
  [ $rc -ne 0 ] && failed=1
  summary+=("$name: rc $rc, $((SECONDS - start)) s $(grep -E '^\[  (PASSED|FAILED)|ERROR SUMMARY|RACECHECK SUMMARY' "$out/$name.log" | tr '\n' ' ')")
}
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader > "$out/gpu.txt" 2>&1
run nvfp4_tests "$build/tests/test_cuda_ops" --gtest_filter='CudaNvfp4*'
run fused_linear_tests "$build/tests/test_cuda_quantized_linear" --gtest_filter='*FusedNvfp4*'
run engine_tests "$build/tests/test_cuda_engine"
if [ "${SANITIZE:-1}" != 0 ] && command -v compute-sanitizer > /dev/null; then
  run memcheck compute-sanitizer --tool memcheck --error-exitcode 1 "$build/tests/test_cuda_ops" \
    --gtest_filter='CudaNvfp4Gemm.*:CudaNvfp4Gemv.Matches*:CudaNvfp4Gemv.EveryConfiguration*'
  run racecheck compute-sanitizer --tool racecheck --error-exitcode 1 "$build/tests/test_cuda_ops" \
    --gtest_filter='CudaNvfp4Gemm.*'
fi
run bench_gemm "$build/bench/bench_gemm_nvfp4" --reps 30 --warmup 5 --m "${M:-1,8,16,32,64,256,1024,4096}"
if [ "${INFER:-1}" != 0 ]; then
  run bench_infer "$build/bench/bench_infer" --config llama-3.1-8b --dir /tmp/m8b --precisions bf16,w4a16,w4a16-head,w4a16-prefill,w4a4 \
    --prompt 1024 --decode 64
fi
if [ "${TRAIN:-1}" != 0 ]; then
  run bench_train "$build/bench/bench_train_cuda" --batch 16 --steps 5 --recipes bf16,nvfp4,nvfp4+fused,nvfp4+fused-ws
fi
if [ "${NCU:-0}" = 1 ] && command -v ncu > /dev/null; then
  run ncu_ws ncu --kernel-name regex:'_ws_kernel' --launch-skip 3 --launch-count 4 --section SpeedOfLight \
    --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
    "$build/bench/bench_gemm_nvfp4" --layer "70B q/o" --m 4096 --reps 2 --warmup 1
fi
echo "== $(cat "$out/gpu.txt")"
printf '%s\n' "${summary[@]}"
[ -f "$out/bench_infer.log" ] && tail -4 "$out/bench_infer.log"
[ -f "$out/bench_train.log" ] && tail -6 "$out/bench_train.log"
grep -v '^#' "$out/bench_gemm.log"
exit $failed
