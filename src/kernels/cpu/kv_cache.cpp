// The CPU reference KV cache ops of inference: appending rows to the cache and attention of query
// rows against it (ops.hpp, section "inference"; CUDA twin: src/kernels/cuda/kv_cache.cu).
#include "kernels/cpu/ops.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cpu/ops_common.hpp"

namespace nvfp4::cpu {

using namespace ops_detail;

namespace {

// Every row's (slot, pos) inside the cache (slots, max_ctx, ...), or an Error naming the row.
void check_rows(const char* op, const int32_t* slot, const int32_t* pos, int64_t N, int64_t slots, int64_t max_ctx) {
  for (int64_t n = 0; n < N; ++n) {
    require(slot[n] >= 0 && slot[n] < slots, op,
            "row " + std::to_string(n) + ": slot " + std::to_string(slot[n]) + " is outside the cache's slots [0, " +
                std::to_string(slots) + ")");
    require(pos[n] >= 0 && pos[n] < max_ctx, op,
            "row " + std::to_string(n) + ": position " + std::to_string(pos[n]) + " is outside the cache's [0, " +
                std::to_string(max_ctx) + ")" + (pos[n] >= max_ctx ? "; the sequence is longer than max_ctx" : ""));
  }
}

// Offset of cache row (s, j, kvh) in a (slots, max_ctx, NKV, HS) cache.
int64_t cache_row(int64_t s, int64_t j, int64_t kvh, int64_t NKV, int64_t HS, int64_t max_ctx) {
  return ((s * max_ctx + j) * NKV + kvh) * HS;
}

}  // namespace

// ---- append ------------------------------------------------------------------------------------------

void kv_append(float* k_cache, float* v_cache, const float* k, const float* v, const int32_t* slot,
               const int32_t* pos, int64_t N, int64_t NKV, int64_t HS, int64_t slots, int64_t max_ctx) {
  constexpr const char* op = "kv_append";
  require_nonnegative(op, {{"N", N}, {"NKV", NKV}, {"HS", HS}, {"slots", slots}, {"max_ctx", max_ctx}});
  check_rows(op, slot, pos, N, slots, max_ctx);
  // Two rows writing one cache row would make the result depend on their order: refused.
  std::vector<std::pair<int64_t, int64_t>> keys(static_cast<size_t>(N));  // (slot * max_ctx + pos, row)
  for (int64_t n = 0; n < N; ++n) keys[n] = {int64_t{slot[n]} * max_ctx + pos[n], n};
  std::sort(keys.begin(), keys.end());
  for (size_t i = 1; i < keys.size(); ++i) {
    require(keys[i].first != keys[i - 1].first, op,
            "rows " + std::to_string(keys[i - 1].second) + " and " + std::to_string(keys[i].second) +
                " both write slot " + std::to_string(slot[keys[i].second]) + ", position " +
                std::to_string(pos[keys[i].second]));
  }
  const size_t bytes = sizeof(float) * static_cast<size_t>(NKV * HS);
  NVFP4_OMP("omp parallel for")
  for (int64_t n = 0; n < N; ++n) {
    const int64_t at = cache_row(slot[n], pos[n], 0, NKV, HS, max_ctx);
    std::memcpy(k_cache + at, k + n * NKV * HS, bytes);
    std::memcpy(v_cache + at, v + n * NKV * HS, bytes);
  }
}

// ---- attention against the cache ----------------------------------------------------------------------

void attention_cache(float* out, const float* q, const float* k_cache, const float* v_cache, const int32_t* slot,
                     const int32_t* pos, int64_t N, int64_t NH, int64_t NKV, int64_t HS, int64_t slots,
                     int64_t max_ctx, int64_t window, float scale) {
  constexpr const char* op = "attention_cache";
  require_nonnegative(op, {{"N", N}, {"NH", NH}, {"NKV", NKV}, {"HS", HS}, {"slots", slots}, {"max_ctx", max_ctx},
                           {"window", window}});
  require_head_groups(op, NH, NKV);
  check_rows(op, slot, pos, N, slots, max_ctx);
  if (NH == 0) return;
  const int64_t group = NH / NKV;
  // The same FP32 operations in the same order as attention_forward (ops.hpp says so), over the
  // visible positions [first, pos] of the row's slot.
  NVFP4_OMP("omp parallel")
  {
    std::vector<float> arow(static_cast<size_t>(max_ctx));  // this thread's scores / weights
    NVFP4_OMP("omp for collapse(2)")
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t h = 0; h < NH; ++h) {
        const int64_t kvh = h / group, s = slot[n], last = pos[n];
        const int64_t first = window > 0 ? std::max<int64_t>(0, last - window + 1) : 0;
        const float* qrow = q + (n * NH + h) * HS;  // (HS)
        float maxval = -INFINITY;
        for (int64_t j = first; j <= last; ++j) {
          const float* krow = k_cache + cache_row(s, j, kvh, NKV, HS, max_ctx);
          float dot = 0.0f;
          for (int64_t i = 0; i < HS; ++i) dot += qrow[i] * krow[i];
          arow[j] = dot * scale;
          if (arow[j] > maxval) maxval = arow[j];
        }
        float sum = 0.0f;
        for (int64_t j = first; j <= last; ++j) {
          arow[j] = std::exp(arow[j] - maxval);
          sum += arow[j];
        }
        const float inv = 1.0f / sum;
        for (int64_t j = first; j <= last; ++j) arow[j] *= inv;
        float* orow = out + (n * NH + h) * HS;  // (HS)
        for (int64_t i = 0; i < HS; ++i) orow[i] = 0.0f;
        for (int64_t j = first; j <= last; ++j) {
          const float* vrow = v_cache + cache_row(s, j, kvh, NKV, HS, max_ctx);
          for (int64_t i = 0; i < HS; ++i) orow[i] += arow[j] * vrow[i];
        }
      }
    }
  }
}

}  // namespace nvfp4::cpu
