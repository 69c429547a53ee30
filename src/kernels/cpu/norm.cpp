// The CPU reference RMSNorm, forward and backward (ops.hpp; CUDA twin: src/kernels/cuda/norm.cu).
#include "kernels/cpu/ops.hpp"

#include <cmath>

#include "kernels/cpu/ops_common.hpp"

namespace nvfp4::cpu {

using namespace ops_detail;

// ---- RMSNorm --------------------------------------------------------------------------

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N, int64_t C,
                     float eps) {
  require_nonnegative("rmsnorm_forward", {{"N", N}, {"C", C}});
  require(C > 0 || N == 0, "rmsnorm_forward", "C = 0: a row without channels has no RMS");
  NVFP4_OMP("omp parallel for")
  for (int64_t n = 0; n < N; ++n) {
    const float* x = inp + n * C;  // (C)
    float* o = out + n * C;        // (C)
    float ss = 0.0f;
    for (int64_t c = 0; c < C; ++c) ss += x[c] * x[c];
    const float r = 1.0f / std::sqrt(ss / static_cast<float>(C) + eps);
    for (int64_t c = 0; c < C; ++c) o[c] = (x[c] * r) * weight[c];
    rstd[n] = r;
  }
}

void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int64_t N, int64_t C) {
  require_nonnegative("rmsnorm_backward", {{"N", N}, {"C", C}});
  // dinp: rows are independent.
  NVFP4_OMP("omp parallel for")
  for (int64_t n = 0; n < N; ++n) {
    const float* x = inp + n * C;    // (C)
    const float* dy = dout + n * C;  // (C)
    float* dx = dinp + n * C;        // (C)
    const float r = rstd[n];
    // mean_c(g * xhat) with g = dy * w, xhat = x * r
    float dot = 0.0f;
    for (int64_t c = 0; c < C; ++c) dot += (dy[c] * weight[c]) * (x[c] * r);
    const float mean = dot / static_cast<float>(C);
    for (int64_t c = 0; c < C; ++c) dx[c] += r * ((dy[c] * weight[c]) - (x[c] * r) * mean);
  }
  // dweight: a sum over rows, so split over channels instead; each channel sums n = 0..N-1.
  NVFP4_OMP("omp parallel for")
  for (int64_t c = 0; c < C; ++c) {
    float acc = 0.0f;
    for (int64_t n = 0; n < N; ++n) acc += dout[n * C + c] * (inp[n * C + c] * rstd[n]);
    dweight[c] += acc;
  }
}

}  // namespace nvfp4::cpu
