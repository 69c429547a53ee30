// Device memory for the CUDA model's sources (model_cuda.cu, quantized_linear_cuda.cu) and the
// inference engine (src/infer/engine_cuda.cu): an
// array from cudaMalloc, freed on destruction, that can be reallocated or grown; every CUDA
// error becomes an nvfp4::Error naming the call.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "nvfp4/cuda_check.hpp"

namespace nvfp4::model {

using cuda::check;

template <typename T>
struct DeviceArray {
  T* p = nullptr;
  size_t n = 0;
  DeviceArray() = default;
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr, o.n = 0; }
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    if (this != &o) {
      cudaFree(p);
      p = o.p, n = o.n;
      o.p = nullptr, o.n = 0;
    }
    return *this;
  }
  ~DeviceArray() { cudaFree(p); }

  // (Re)allocates `count` elements (at least one), adding the bytes to `total`.
  void alloc(size_t count, int64_t& total) {
    reset(std::max<size_t>(count, 1));
    total += static_cast<int64_t>(n * sizeof(T));
  }
  // At least `count` elements: reallocates (contents lost) only when it must grow.
  T* need(size_t count) {
    if (std::max<size_t>(count, 1) > n || !p) reset(std::max<size_t>(count, 1));
    return p;
  }
  void zero() { check(cudaMemset(p, 0, std::max<size_t>(n, 1) * sizeof(T)), "cudaMemset"); }
  int64_t bytes() const { return p ? static_cast<int64_t>(n * sizeof(T)) : 0; }

 private:
  void reset(size_t count) {
    cudaFree(p);
    p = nullptr;
    n = 0;
    check(cudaMalloc(&p, count * sizeof(T)), "cudaMalloc");
    n = count;
  }
};

}  // namespace nvfp4::model
