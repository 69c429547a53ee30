// The CPU reference SwiGLU, residual add and bias gradient, and the inference row ops
// scale_rows_bias and gather_rows (ops.hpp; CUDA twin: src/kernels/cuda/elementwise.cu).
#include "kernels/cpu/ops.hpp"

#include <cmath>
#include <cstring>
#include <string>

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

// ---- bias ----------------------------------------------------------------------------------------

void bias_backward(float* dbias, const float* dout, int64_t N, int64_t OC) {
  require_nonnegative("bias_backward", {{"N", N}, {"OC", OC}});
  NVFP4_OMP("omp parallel for")
  for (int64_t j = 0; j < OC; ++j) {
    float sum = 0.0f;
    for (int64_t n = 0; n < N; ++n) sum += dout[n * OC + j];
    dbias[j] += sum;
  }
}

// ---- inference row ops ------------------------------------------------------------------------

void scale_rows_bias(float* out, const float* in, const float* row_factor, const float* bias, int64_t N, int64_t OC) {
  require_nonnegative("scale_rows_bias", {{"N", N}, {"OC", OC}});
  NVFP4_OMP("omp parallel for")
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t o = 0; o < OC; ++o) {
      float y = in[n * OC + o];
      if (row_factor) y = y * row_factor[n];  // rounded here: the build contracts no multiply-add
      if (bias) y = y + bias[o];
      out[n * OC + o] = y;
    }
  }
}

void gather_rows(float* out, const float* in, const int32_t* rows, int64_t n, int64_t n_in, int64_t C) {
  require_nonnegative("gather_rows", {{"n", n}, {"n_in", n_in}, {"C", C}});
  for (int64_t i = 0; i < n; ++i) {
    require(rows[i] >= 0 && rows[i] < n_in, "gather_rows",
            "rows[" + std::to_string(i) + "] = " + std::to_string(rows[i]) + " is outside the input's rows [0, " +
                std::to_string(n_in) + ")");
  }
  NVFP4_OMP("omp parallel for")
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(out + i * C, in + static_cast<int64_t>(rows[i]) * C, sizeof(float) * static_cast<size_t>(C));
}

}  // namespace nvfp4::cpu
