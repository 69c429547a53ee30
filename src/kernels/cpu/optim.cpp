// The CPU reference AdamW step and global gradient norm (ops.hpp; CUDA twin: src/kernels/cuda/optim.cu).
#include "kernels/cpu/ops.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/ops_common.hpp"

namespace nvfp4::cpu {

using namespace ops_detail;

// ---- optimizer --------------------------------------------------------------------------------

void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int64_t step) {
  require_nonnegative("adamw_update", {{"n", n}});
  require(step >= 1, "adamw_update", "step = " + std::to_string(step) + "; steps count from 1 (bias correction)");
  const float correction1 = 1.0f - std::pow(beta1, static_cast<float>(step));
  const float correction2 = 1.0f - std::pow(beta2, static_cast<float>(step));
  NVFP4_OMP("omp parallel for")
  for (int64_t i = 0; i < n; ++i) {
    const float g = grads[i];
    m[i] = beta1 * m[i] + (1.0f - beta1) * g;
    v[i] = beta2 * v[i] + (1.0f - beta2) * (g * g);
    const float mhat = m[i] / correction1;
    const float vhat = v[i] / correction2;
    // NOTE: decoupled weight decay: wd * p is added to the Adam direction, not to the gradient.
    params[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + weight_decay * params[i]);
  }
}

double global_norm(const float* grads, int64_t n) {
  require_nonnegative("global_norm", {{"n", n}});
  constexpr int64_t kChunk = 4096;  // fixed, NOT derived from the thread count
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
  NVFP4_OMP("omp parallel for")
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t end = std::min(n, (ch + 1) * kChunk);
    double acc = 0.0;
    for (int64_t i = ch * kChunk; i < end; ++i) acc += static_cast<double>(grads[i]) * grads[i];
    partial[static_cast<size_t>(ch)] = acc;
  }
  double total = 0.0;
  for (const double p : partial) total += p;
  return std::sqrt(total);
}

}  // namespace nvfp4::cpu
