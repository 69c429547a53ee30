// What every CUDA test suite starts from: skip cleanly (and visibly: ctest reports "Skipped")
// on a machine without a GPU, and fail a test on a CUDA error with the call and the message.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "nvfp4/cuda_runtime_info.hpp"

#define REQUIRE_GPU()                          \
  if (nvfp4::cuda::device_count() == 0)       \
  GTEST_SKIP() << "no CUDA device: " << nvfp4::cuda::unavailable_reason()

#define CUDA_OK(expr)                                                          \
  do {                                                                         \
    const cudaError_t err_ = (expr);                                           \
    ASSERT_EQ(err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(err_); \
  } while (0)
