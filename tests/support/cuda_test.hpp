// What every CUDA test suite starts from: skip cleanly (and visibly: ctest reports "Skipped")
// on a machine without a GPU, and fail a test on a CUDA error with the call and the message.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "nvfp4/cuda_check.hpp"
#include "nvfp4/cuda_runtime_info.hpp"
#include "nvfp4/error.hpp"

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
// Every CUDA call is checked: a failure throws nvfp4::Error naming the call (gtest reports it
// and fails the test), and download() first synchronizes and checks that too, so a kernel that
// faulted fails the test instead of leaving a buffer whose contents happen to compare equal.
template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t count) : n(count) {
    nvfp4::cuda::check(cudaMalloc(&ptr, std::max<size_t>(count, 1) * sizeof(T)), "cudaMalloc (DeviceBuffer)");
    poison();
  }
  explicit DeviceBuffer(const std::vector<T>& h) : DeviceBuffer(h.size()) { upload(h); }
  ~DeviceBuffer() { EXPECT_EQ(cudaFree(ptr), cudaSuccess) << "cudaFree (DeviceBuffer): an earlier CUDA error"; }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void upload(const std::vector<T>& h) {
    if (h.size() > n)
      throw nvfp4::Error("DeviceBuffer::upload: " + std::to_string(h.size()) + " elements into " + std::to_string(n));
    if (h.empty()) return;
    nvfp4::cuda::check(cudaMemcpy(ptr, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice),
                       "cudaMemcpy (DeviceBuffer::upload)");
  }
  void poison() {
    nvfp4::cuda::check(cudaMemset(ptr, 0xFF, std::max<size_t>(n, 1) * sizeof(T)), "cudaMemset (DeviceBuffer::poison)");
  }
  std::vector<T> download() const {
    std::vector<T> h(n);
    // NOTE: the synchronize reports a fault of any kernel launched before (they are asynchronous).
    nvfp4::cuda::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (DeviceBuffer::download: a kernel failed)");
    if (n) {
      nvfp4::cuda::check(cudaMemcpy(h.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost),
                         "cudaMemcpy (DeviceBuffer::download)");
    }
    return h;
  }
};

}  // namespace nvfp4::test
