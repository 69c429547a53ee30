// CK(expr): a benchmark's CUDA runtime call that must succeed, else print where and exit 1.
// The check itself is the library's one (nvfp4::cuda::check); a benchmark adds the file and line.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "nvfp4/cuda_check.hpp"

namespace nvfp4::bench {

inline void check_or_exit(cudaError_t e, const char* what, const char* file, int line) {
  try {
    cuda::check(e, what);
  } catch (const Error& err) {
    std::fprintf(stderr, "%s:%d %s\n", file, line, err.what());
    std::exit(1);
  }
}

}  // namespace nvfp4::bench

#define CK(expr) ::nvfp4::bench::check_or_exit((expr), #expr, __FILE__, __LINE__)
