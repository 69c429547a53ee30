// What every CUDA test suite starts from: skip cleanly (and visibly: ctest reports "Skipped")
// on a machine without a GPU, and fail a test on a CUDA error with the call and the message.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "nvfp4/cuda_runtime_info.hpp"

#define REQUIRE_GPU()                          \
  if (nvfp4::cuda::device_count() == 0)       \
  GTEST_SKIP() << "no CUDA device: " << nvfp4::cuda::unavailable_reason()

#define CUDA_OK(expr)                                                          \
  do {                                                                         \
    const cudaError_t err_ = (expr);                                           \
    ASSERT_EQ(err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(err_); \
  } while (0)

namespace nvfp4::test {

// A device allocation of n T's for a test, poisoned at birth (0xFF bytes: NaN as BF16, FP32
// and FP64) so that an output a kernel forgot to write cannot pass; freed on destruction.
template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t count) : n(count) {
    if (cudaMalloc(&ptr, std::max<size_t>(count, 1) * sizeof(T)) != cudaSuccess) ptr = nullptr;
    poison();
  }
  explicit DeviceBuffer(const std::vector<T>& h) : DeviceBuffer(h.size()) { upload(h); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void upload(const std::vector<T>& h) {
    if (!h.empty()) cudaMemcpy(ptr, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
  void poison() { cudaMemset(ptr, 0xFF, std::max<size_t>(n, 1) * sizeof(T)); }
  std::vector<T> download() const {
    std::vector<T> h(n);
    cudaDeviceSynchronize();
    if (n) cudaMemcpy(h.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
  }
};

}  // namespace nvfp4::test
