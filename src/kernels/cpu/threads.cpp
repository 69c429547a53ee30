// The OpenMP thread count of the CPU reference ops (ops.hpp).
#include "kernels/cpu/ops.hpp"

#include "kernels/cpu/ops_common.hpp"

namespace nvfp4::cpu {

using namespace ops_detail;

// ---- threads -------------------------------------------------------------------------

void set_num_threads(int n) {
  require(n >= 1, "set_num_threads", "n = " + std::to_string(n) + " must be at least 1");
#if defined(_OPENMP)
  omp_set_num_threads(n);
#endif
}

}  // namespace nvfp4::cpu
