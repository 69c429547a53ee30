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

// Where position j of slot s lives: its row in the (slots * max_ctx) rows of a contiguous cache, or
// in the (blocks * block_size) rows of a paged one (-1: the table gives it no block).
struct CacheRows {
  int64_t max_ctx;
  KvPages pages;
  int64_t per_seq() const { return (max_ctx + pages.block_size - 1) / pages.block_size; }
  int64_t row(int64_t s, int64_t j) const {
    if (!pages.table) return s * max_ctx + j;
    const int32_t b = pages.table[s * per_seq() + j / pages.block_size];
    return b >= 0 && b < pages.blocks ? int64_t{b} * pages.block_size + j % pages.block_size : -1;
  }
};

CacheRows cache_rows(const char* op, int64_t max_ctx, const KvPages& pages) {
  if (pages.table) {
    require(pages.block_size > 0 && pages.blocks >= 0, op,
            "a paged cache needs block_size > 0 (got " + std::to_string(pages.block_size) + ") and blocks >= 0");
  }
  return {max_ctx, pages};
}

// Every position in [first, last] of row n's slot has a block (paged), or an Error naming the row.
void check_blocks(const char* op, const CacheRows& c, int64_t n, int64_t s, int64_t first, int64_t last) {
  if (!c.pages.table) return;
  for (int64_t j = first; j <= last; j += c.pages.block_size - (j % c.pages.block_size)) {
    require(c.row(s, j) >= 0, op,
            "row " + std::to_string(n) + ": slot " + std::to_string(s) + ", position " + std::to_string(j) +
                " has no cache block (table entry " +
                std::to_string(c.pages.table[s * c.per_seq() + j / c.pages.block_size]) + ", blocks [0, " +
                std::to_string(c.pages.blocks) + "))");
  }
}

}  // namespace

// ---- append ------------------------------------------------------------------------------------------

void kv_append(float* k_cache, float* v_cache, const float* k, const float* v, const int32_t* slot,
               const int32_t* pos, int64_t N, int64_t NKV, int64_t HS, int64_t slots, int64_t max_ctx,
               const KvPages& pages) {
  constexpr const char* op = "kv_append";
  require_nonnegative(op, {{"N", N}, {"NKV", NKV}, {"HS", HS}, {"slots", slots}, {"max_ctx", max_ctx}});
  check_rows(op, slot, pos, N, slots, max_ctx);
  const CacheRows c = cache_rows(op, max_ctx, pages);
  for (int64_t n = 0; n < N; ++n) check_blocks(op, c, n, slot[n], pos[n], pos[n]);
  // Two rows writing one cache row would make the result depend on their order: refused (the same
  // slot and position, or, paged, a table that gives two positions one block).
  std::vector<std::pair<int64_t, int64_t>> keys(static_cast<size_t>(N));  // (cache row, row)
  for (int64_t n = 0; n < N; ++n) keys[n] = {c.row(slot[n], pos[n]), n};
  std::sort(keys.begin(), keys.end());
  for (size_t i = 1; i < keys.size(); ++i) {
    if (keys[i].first != keys[i - 1].first) continue;
    const int64_t a = keys[i - 1].second, b = keys[i].second;
    const auto at = [&](int64_t n) { return "slot " + std::to_string(slot[n]) + ", position " + std::to_string(pos[n]); };
    require(slot[a] != slot[b] || pos[a] != pos[b], op,
            "rows " + std::to_string(a) + " and " + std::to_string(b) + " both write " + at(b));
    require(false, op,
            "rows " + std::to_string(a) + " and " + std::to_string(b) + " (" + at(a) + "; " + at(b) +
                ") share one cache row: the block table gives two positions the same block");
  }
  const size_t bytes = sizeof(float) * static_cast<size_t>(NKV * HS);
  NVFP4_OMP("omp parallel for")
  for (int64_t n = 0; n < N; ++n) {
    const int64_t at = c.row(slot[n], pos[n]) * NKV * HS;
    std::memcpy(k_cache + at, k + n * NKV * HS, bytes);
    std::memcpy(v_cache + at, v + n * NKV * HS, bytes);
  }
}

// ---- attention against the cache ----------------------------------------------------------------------

void attention_cache(float* out, const float* q, const float* k_cache, const float* v_cache, const int32_t* slot,
                     const int32_t* pos, int64_t N, int64_t NH, int64_t NKV, int64_t HS, int64_t slots,
                     int64_t max_ctx, int64_t window, float scale, const KvPages& pages) {
  constexpr const char* op = "attention_cache";
  require_nonnegative(op, {{"N", N}, {"NH", NH}, {"NKV", NKV}, {"HS", HS}, {"slots", slots}, {"max_ctx", max_ctx},
                           {"window", window}});
  require_head_groups(op, NH, NKV);
  check_rows(op, slot, pos, N, slots, max_ctx);
  const CacheRows c = cache_rows(op, max_ctx, pages);
  for (int64_t n = 0; n < N; ++n) {
    check_blocks(op, c, n, slot[n], window > 0 ? std::max<int64_t>(0, pos[n] - window + 1) : 0, pos[n]);
  }
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
          const float* krow = k_cache + (c.row(s, j) * NKV + kvh) * HS;
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
          const float* vrow = v_cache + (c.row(s, j) * NKV + kvh) * HS;
          for (int64_t i = 0; i < HS; ++i) orow[i] += arow[j] * vrow[i];
        }
      }
    }
  }
}

}  // namespace nvfp4::cpu
