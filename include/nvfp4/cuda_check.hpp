// The one CUDA error check of the library, its kernels, the model layer and the benchmarks:
// a failed CUDA runtime call becomes an nvfp4::Error naming the call. For CUDA code only (it
// includes the CUDA runtime header); the message has no "nvfp4: " prefix (main.cpp adds it).
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "nvfp4/error.hpp"

namespace nvfp4::cuda {

// Throws nvfp4::Error("CUDA error in <what>: <CUDA's message>") unless e is cudaSuccess.
inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
}

// After a kernel launch: a bad configuration (or an earlier asynchronous fault) as an Error.
inline void check_launch(const char* what) { check(cudaGetLastError(), what); }

}  // namespace nvfp4::cuda
