// CK(expr): a benchmark's CUDA runtime call that must succeed, else print where and exit 1. And
// median_event_seconds: the benchmarks' CUDA-event timing loop.
// The check itself is the library's one (nvfp4::cuda::check); a benchmark adds the file and line.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>

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

// Median seconds of fn() on the default stream, timed with CUDA events: `warmup` untimed runs,
// then `reps` timed ones (the middle one of the sorted times); before() runs ahead of each, outside
// the timed part (e.g. a write over a buffer larger than L2, so fn() reads its data from memory).
template <class Fn, class Before>
double median_event_seconds(Fn&& fn, Before&& before, int warmup, int reps) {
  cudaEvent_t e0, e1;
  check_or_exit(cudaEventCreate(&e0), "cudaEventCreate", __FILE__, __LINE__);
  check_or_exit(cudaEventCreate(&e1), "cudaEventCreate", __FILE__, __LINE__);
  for (int i = 0; i < warmup; ++i) before(), fn();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    before();
    check_or_exit(cudaEventRecord(e0), "cudaEventRecord", __FILE__, __LINE__);
    fn();
    check_or_exit(cudaEventRecord(e1), "cudaEventRecord", __FILE__, __LINE__);
    check_or_exit(cudaEventSynchronize(e1), "cudaEventSynchronize", __FILE__, __LINE__);
    float ms = 0;
    check_or_exit(cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime", __FILE__, __LINE__);
    t.push_back(ms * 1e-3);
  }
  cudaEvent_t events[2] = {e0, e1};
  for (cudaEvent_t e : events) cudaEventDestroy(e);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

template <class Fn>
double median_event_seconds(Fn&& fn, int warmup, int reps) {
  return median_event_seconds(std::forward<Fn>(fn), [] {}, warmup, reps);
}

}  // namespace nvfp4::bench

#define CK(expr) ::nvfp4::bench::check_or_exit((expr), #expr, __FILE__, __LINE__)
