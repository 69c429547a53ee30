#!/usr/bin/env bash
# Install what the build needs (Debian packages), then configure and build into ./build.
# Safe to run again: packages already present are not reinstalled, the build is incremental.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/apt_install.sh cmake ninja-build g++ googletest libgtest-dev libbenchmark-dev nlohmann-json3-dev \
  libcli11-dev libcpp-httplib-dev pkgconf libopenblas-dev zlib1g-dev libpcre2-dev libicu-dev

# CUDA: nvcc ships with this machine kind under /usr/local/cuda; it compiles the kernels here
# (they run on a GPU machine). Without it the CPU parts still build (-DNVFP4_CUDA=OFF).
cuda_flag=()
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
if ! command -v nvcc >/dev/null 2>&1; then
  echo "== nvcc not found: building without the CUDA kernels (GPU tests will not be built)"
  cuda_flag=(-DNVFP4_CUDA=OFF)
fi

jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "${cuda_flag[@]}" >/dev/null
cmake --build build -j "$jobs"
