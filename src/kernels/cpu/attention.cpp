// The CPU reference causal grouped-query attention, forward and backward (ops.hpp; CUDA twin:
// src/kernels/cuda/attention.cu).
#include "kernels/cpu/ops.hpp"

#include <cmath>
#include <string>

#include "kernels/cpu/ops_common.hpp"

namespace nvfp4::cpu {

using namespace ops_detail;

// ---- attention ---------------------------------------------------------------------------

namespace {

void attention_check(const char* op, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HS, int64_t window) {
  require_nonnegative(op, {{"B", B}, {"T", T}, {"NH", NH}, {"NKV", NKV}, {"HS", HS}, {"window", window}});
  require_head_groups(op, NH, NKV);
  require(HS > 0 || NH == 0, op, "HS = 0: the score scale 1/sqrt(HS) is undefined");
}

// The first key position query t sees: t - window + 1 with a sliding window, else 0.
int64_t first_visible(int64_t t, int64_t window) { return window > 0 && t >= window ? t - window + 1 : 0; }

}  // namespace

void attention_forward(float* out, float* att, const float* q, const float* k, const float* v, int64_t B,
                       int64_t T, int64_t NH, int64_t NKV, int64_t HS, int64_t window) {
  attention_check("attention_forward", B, T, NH, NKV, HS, window);
  if (NH == 0) return;
  const int64_t group = NH / NKV;  // query heads per kv head
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  NVFP4_OMP("omp parallel for collapse(3)")
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < NH; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        const int64_t kvh = h / group;
        const float* qrow = q + ((b * T + t) * NH + h) * HS;  // (HS)
        float* arow = att + ((b * NH + h) * T + t) * T;      // (T)
        const int64_t lo = first_visible(t, window);
        // scores and their max over the visible positions lo <= t2 <= t
        float maxval = -INFINITY;
        for (int64_t t2 = lo; t2 <= t; ++t2) {
          const float* krow = k + ((b * T + t2) * NKV + kvh) * HS;
          float dot = 0.0f;
          for (int64_t i = 0; i < HS; ++i) dot += qrow[i] * krow[i];
          arow[t2] = dot * scale;
          if (arow[t2] > maxval) maxval = arow[t2];
        }
        // softmax, stable: exp(s - max) <= 1
        float sum = 0.0f;
        for (int64_t t2 = lo; t2 <= t; ++t2) {
          arow[t2] = std::exp(arow[t2] - maxval);
          sum += arow[t2];
        }
        const float inv = 1.0f / sum;
        for (int64_t t2 = 0; t2 < T; ++t2) arow[t2] = lo <= t2 && t2 <= t ? arow[t2] * inv : 0.0f;  // the mask
        // weighted sum of values
        float* orow = out + ((b * T + t) * NH + h) * HS;  // (HS)
        for (int64_t i = 0; i < HS; ++i) orow[i] = 0.0f;
        for (int64_t t2 = lo; t2 <= t; ++t2) {
          const float* vrow = v + ((b * T + t2) * NKV + kvh) * HS;
          for (int64_t i = 0; i < HS; ++i) orow[i] += arow[t2] * vrow[i];
        }
      }
    }
  }
}

void attention_backward(float* dq, float* dk, float* dv, float* datt_scratch, const float* dout, const float* q,
                        const float* k, const float* v, const float* att, int64_t B, int64_t T, int64_t NH,
                        int64_t NKV, int64_t HS, int64_t window) {
  attention_check("attention_backward", B, T, NH, NKV, HS, window);
  if (NH == 0) return;
  const int64_t group = NH / NKV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));

  // Phase 1, per query row (b, h, t): the score gradient and dq. Rows write disjoint data.
  NVFP4_OMP("omp parallel for collapse(3)")
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < NH; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        const int64_t kvh = h / group;
        const float* arow = att + ((b * NH + h) * T + t) * T;      // (T)
        float* drow = datt_scratch + ((b * NH + h) * T + t) * T;   // (T)
        const float* dorow = dout + ((b * T + t) * NH + h) * HS;   // (HS)
        const int64_t lo = first_visible(t, window);
        // datt[t2] = dout · v[t2]
        for (int64_t t2 = lo; t2 <= t; ++t2) {
          const float* vrow = v + ((b * T + t2) * NKV + kvh) * HS;
          float dot = 0.0f;
          for (int64_t i = 0; i < HS; ++i) dot += dorow[i] * vrow[i];
          drow[t2] = dot;
        }
        // softmax backward: dscore[t2] = att[t2] * (datt[t2] - sum_t3 att[t3] * datt[t3])
        float adot = 0.0f;
        for (int64_t t2 = lo; t2 <= t; ++t2) adot += arow[t2] * drow[t2];
        for (int64_t t2 = 0; t2 < T; ++t2) drow[t2] = lo <= t2 && t2 <= t ? arow[t2] * (drow[t2] - adot) : 0.0f;
        // dq += scale * sum_t2 dscore[t2] * k[t2]
        float* dqrow = dq + ((b * T + t) * NH + h) * HS;
        for (int64_t t2 = lo; t2 <= t; ++t2) {
          const float* krow = k + ((b * T + t2) * NKV + kvh) * HS;
          const float d = drow[t2] * scale;
          for (int64_t i = 0; i < HS; ++i) dqrow[i] += d * krow[i];
        }
      }
    }
  }

  // Phase 2, per key/value row (b, t2, kvh): sum over the group's query heads, then over the
  // query positions that see it (t2 <= t, and t < t2 + window with a window), in that fixed order.
  NVFP4_OMP("omp parallel for collapse(3)")
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t2 = 0; t2 < T; ++t2) {
      for (int64_t kvh = 0; kvh < NKV; ++kvh) {
        float* dkrow = dk + ((b * T + t2) * NKV + kvh) * HS;  // (HS)
        float* dvrow = dv + ((b * T + t2) * NKV + kvh) * HS;  // (HS)
        const int64_t hi = window > 0 && t2 + window < T ? t2 + window : T;  // past the last query that sees t2
        for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
          for (int64_t t = t2; t < hi; ++t) {
            const int64_t row = ((b * NH + h) * T + t) * T;
            const float d = datt_scratch[row + t2] * scale;
            const float a = att[row + t2];
            const float* qrow = q + ((b * T + t) * NH + h) * HS;
            const float* dorow = dout + ((b * T + t) * NH + h) * HS;
            for (int64_t i = 0; i < HS; ++i) {
              dkrow[i] += d * qrow[i];
              dvrow[i] += a * dorow[i];
            }
          }
        }
      }
    }
  }
}

}  // namespace nvfp4::cpu
