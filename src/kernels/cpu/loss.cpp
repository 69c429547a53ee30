// The CPU reference cross-entropy and its gradient (ops.hpp; CUDA twin: src/kernels/cuda/loss.cu).
#include "kernels/cpu/ops.hpp"

#include <cmath>
#include <string>

#include "kernels/cpu/ops_common.hpp"

namespace nvfp4::cpu {

using namespace ops_detail;

// ---- cross-entropy ---------------------------------------------------------------------------

namespace {

void check_targets(const char* op, const int32_t* targets, int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; ++n) {
    require(targets[n] >= 0 && targets[n] < V, op,
            "target " + std::to_string(targets[n]) + " at position " + std::to_string(n) +
                " is outside the vocabulary [0, " + std::to_string(V) + ")");
  }
}

// max and sum_v exp(x[v] - max) of one row of logits (V).
void row_max_sumexp(const float* x, int64_t V, float* maxval, float* sum) {
  float m = -INFINITY;
  for (int64_t i = 0; i < V; ++i) m = x[i] > m ? x[i] : m;
  float s = 0.0f;
  for (int64_t i = 0; i < V; ++i) s += std::exp(x[i] - m);
  *maxval = m;
  *sum = s;
}

}  // namespace

void crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int64_t N, int64_t V) {
  require_nonnegative("crossentropy_forward", {{"N", N}, {"V", V}});
  check_targets("crossentropy_forward", targets, N, V);
  NVFP4_OMP("omp parallel for")
  for (int64_t n = 0; n < N; ++n) {
    const float* x = logits + n * V;  // (V)
    float m, s;
    row_max_sumexp(x, V, &m, &s);
    // -log softmax[target] = log sum exp(x - max) - (x[target] - max)
    // NOTE: subtract the max from x[target] first: (max + log s) - x[target] would round
    // log s to the ulp of the max (6e-5 at |max| = 1000).
    losses[n] = std::log(s) - (x[targets[n]] - m);
  }
}

void crossentropy_softmax_backward(float* dlogits, const float* logits, const int32_t* targets, int64_t N,
                                   int64_t V, float dloss_scale) {
  require_nonnegative("crossentropy_softmax_backward", {{"N", N}, {"V", V}});
  check_targets("crossentropy_softmax_backward", targets, N, V);
  NVFP4_OMP("omp parallel for")
  for (int64_t n = 0; n < N; ++n) {
    const float* x = logits + n * V;  // (V)
    float* dx = dlogits + n * V;      // (V)
    float m, s;
    row_max_sumexp(x, V, &m, &s);
    const float inv = 1.0f / s;
    for (int64_t i = 0; i < V; ++i) {
      const float p = std::exp(x[i] - m) * inv;
      dx[i] += (p - (i == targets[n] ? 1.0f : 0.0f)) * dloss_scale;
    }
  }
}

}  // namespace nvfp4::cpu
