#!/usr/bin/env bash
# Packs what scripts/gpu_kernels_check.sh runs — the CUDA test and benchmark binaries of a build
# made on a machine without a GPU — stripped, into one xz tarball (the GPU machine has no zstd), to
# carry to a GPU machine and check there:
#
#   scripts/gpu_pack.sh [BUILD] [TARBALL]      defaults: build, gpu-carry/kernels.tar.xz (git-ignored)
#   # on the GPU machine, from the repository root:
#   mkdir -p /tmp/g && tar xJf gpu-carry/kernels.tar.xz -C /tmp/g && scripts/gpu_kernels_check.sh /tmp/g OUT
#
# Refuses to pack a build that lacks one of them (nothing is written then).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
tarball=${2:-gpu-carry/kernels.tar.xz}
binaries=(tests/test_cuda_ops tests/test_cuda_engine tests/test_cuda_quantized_linear bench/bench_gemm_nvfp4
  bench/bench_infer bench/bench_train_cuda bench/bench_attention_decode bench/bench_attention_train)
for b in "${binaries[@]}"; do
  if [ ! -x "$build/$b" ]; then
    echo "gpu_pack: $build/$b is missing: build first (bash scripts/build.sh)" >&2
    exit 1
  fi
done
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
for b in "${binaries[@]}"; do
  mkdir -p "$stage/$(dirname "$b")"
  strip -o "$stage/$b" "$build/$b"
done
mkdir -p "$(dirname "$tarball")"
tar cf - -C "$stage" . | xz -6 -T2 > "$tarball.partial"
mv "$tarball.partial" "$tarball"
echo "gpu_pack: $tarball ($(du -h "$tarball" | cut -f1))"
