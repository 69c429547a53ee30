// The CPU reference SwiGLU and residual add (ops.hpp; CUDA twin: src/kernels/cuda/elementwise.cu).
#include "kernels/cpu/ops.hpp"

#include <cmath>

#include "kernels/cpu/ops_common.hpp"

namespace nvfp4::cpu {

using namespace ops_detail;

namespace {

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace

// ---- SwiGLU ------------------------------------------------------------------------------

void swiglu_forward(float* out, const float* gate, const float* up, int64_t n) {
  require_nonnegative("swiglu_forward", {{"n", n}});
  NVFP4_OMP("omp parallel for")
  for (int64_t i = 0; i < n; ++i) out[i] = (gate[i] * sigmoid(gate[i])) * up[i];
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t n) {
  require_nonnegative("swiglu_backward", {{"n", n}});
  NVFP4_OMP("omp parallel for")
  for (int64_t i = 0; i < n; ++i) {
    const float s = sigmoid(gate[i]);
    // d silu / dx = s + x * s * (1 - s) = s * (1 + x * (1 - s))
    dgate[i] += dout[i] * up[i] * (s * (1.0f + gate[i] * (1.0f - s)));
    dup[i] += dout[i] * (gate[i] * s);
  }
}

// ---- residual -------------------------------------------------------------------------------

void residual_forward(float* out, const float* a, const float* b, int64_t n) {
  require_nonnegative("residual_forward", {{"n", n}});
  NVFP4_OMP("omp parallel for")
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

}  // namespace nvfp4::cpu
