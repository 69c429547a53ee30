#!/usr/bin/env bash
# On a machine with a CUDA GPU: every CUDA test suite, then the training speed of each precision
# recipe (docs/perf.md) and, when Nsight Compute is installed, where one fp8 training step
# spends its time kernel by kernel. Reads binaries from an existing build (scripts/build.sh, or
# a build copied from a machine without a GPU), writes logs to OUT, prints a summary last.
#
#   scripts/gpu_check.sh [BUILD] [OUT]        defaults: build, gpu-check-<time>
#
# Environment: RECIPES (default bf16,fp8,fp8-block,nvfp4,mxfp4); PROFILE: the recipes to profile
# one step of (default fp8; 0 skips ncu), each into ncu_<recipe>_by_kernel.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-gpu-check-$(date +%Y%m%d-%H%M%S)}
recipes=${RECIPES:-bf16,fp8,fp8-block,nvfp4,mxfp4}
mkdir -p "$out"
summary=()
failed=0

for t in test_cuda_format test_cuda_quantize test_cuda_ops test_cuda_quantized_linear test_cuda_model test_cuda_engine; do
  bin="$build/tests/$t"
  if [ ! -x "$bin" ]; then
    summary+=("$t: not built")
    failed=1
    continue
  fi
  "$bin" --gtest_brief=1 > "$out/$t.log" 2>&1
  rc=$?
  line=$(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/$t.log" | tr '\n' ' ')
  summary+=("$t: rc $rc $line")
  if [ $rc -ne 0 ]; then
    failed=1
    grep -E 'Failure|FAILED' "$out/$t.log" | head -20
  fi
done

bench="$build/bench/bench_train_cuda"
if [ -x "$bench" ]; then
  "$bench" --batch 16 --steps 10 --recipes "$recipes" > "$out/bench_train.txt" 2>&1 || failed=1
  profile=${PROFILE:-fp8}
  if [ "$profile" != 0 ] && command -v ncu > /dev/null; then
    for r in ${profile//,/ }; do
      # One training step, each kernel's duration (no clock or cache control: as the step runs).
      ncu --profile-from-start off --clock-control none --cache-control none --metrics gpu__time_duration.sum \
        --csv --page raw "$bench" --batch 16 --steps 1 --recipes "$r" --profile-step 1 > "$out/ncu_$r.csv" 2> "$out/ncu_$r.err"
      # Sum by kernel name. The program's own output comes first; the CSV starts at its header,
      # and its second row holds the units.
      awk -F'","' '!k && /Kernel Name/ { for (i = 1; i <= NF; i++) { if ($i ~ /Kernel Name/) k = i; if ($i ~ /gpu__time_duration.sum/) d = i } next }
                   !k { next }
                   !unit { unit = $d; next }
                   { name = $k; sub(/\(.*/, "", name); v = $d; gsub(/[",]/, "", v); ms = v / (unit ~ /^n/ ? 1e6 : unit ~ /^u/ ? 1e3 : 1);
                     sum[name] += ms; n[name]++; total += ms; count++ }
                   END { printf "%d kernels, %.2f ms summed\n", count, total
                         for (x in sum) printf "%8.3f ms %6d  %s\n", sum[x], n[x], substr(x, 1, 90) }' "$out/ncu_$r.csv" |
        sort -rn > "$out/ncu_${r}_by_kernel.txt"
    done
  fi
else
  summary+=("bench_train_cuda: not built")
  failed=1
fi

echo
for s in "${summary[@]}"; do echo "$s"; done
for f in "$out"/ncu_*_by_kernel.txt; do [ -f "$f" ] && { echo "$f"; head -25 "$f"; }; done
[ -f "$out/bench_train.txt" ] && tail -n 9 "$out/bench_train.txt"
echo "logs: $out"
exit $failed
