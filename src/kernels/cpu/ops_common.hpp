// Shared by the CPU reference operators' files (one per op family, the same names as
// src/kernels/cuda/: attention.cpp, norm.cpp, rope.cpp, embedding.cpp, loss.cpp, optim.cpp,
// elementwise.cpp, gemm.cpp, and threads.cpp; ops.hpp declares them all): argument checks and
// the OpenMP pragma. Private to src/kernels/cpu/.
//
// What the ops are: the oracle, written to be read. FP32 arithmetic throughout (global_norm sums in
// double); OpenBLAS, single-threaded, for the three GEMMs; OpenMP only over loops whose iterations write
// disjoint outputs, with every reduction inside one iteration in a fixed order, so the bits
// never depend on the thread count.
// What they are not: fast. No blocking, no fusion, no vector intrinsics.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#if defined(_OPENMP)
#include <omp.h>
// NVFP4_OMP("omp parallel for") expands to the pragma with OpenMP and to nothing without it.
#define NVFP4_OMP(directive) _Pragma(directive)
#else
#define NVFP4_OMP(directive)
#endif

#include "kernels/require.hpp"
#include "nvfp4/error.hpp"

// The op files say `using namespace ops_detail;` at the top of nvfp4::cpu.
namespace nvfp4::cpu::ops_detail {

inline void require(bool ok, const char* op, const std::string& what) { kernels::require(ok, "cpu", op, what); }
inline void require_nonnegative(const char* op, std::initializer_list<std::pair<const char*, int64_t>> dims) {
  kernels::require_nonnegative("cpu", op, dims);
}
inline void require_head_groups(const char* op, int64_t NH, int64_t NKV) {
  kernels::require_head_groups("cpu", op, NH, NKV);
}

}  // namespace nvfp4::cpu::ops_detail
