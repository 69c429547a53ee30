// CUDA KV cache ops (src/kernels/cuda/kv_cache.cu) against the CPU ops: kv_append bit for bit,
// attention_cache within the BF16 tolerance rule (decode at position 3000, chunked prefill, ragged
// batches, GQA 1:1 to 10:1, HS 6 to 256, window on and off, the scalar path), deterministic and
// batch-invariant; bad slots and positions set the status bit. Harness: test_ops_cuda_support.hpp.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cuda/test_ops_cuda_support.hpp"
#include "kernels/cpu/ops.hpp"
#include "nvfp4/cuda_ops.hpp"
#include "support/cuda_test.hpp"

namespace {

using namespace cuda_ops_test;

constexpr uint16_t kNaNBits = 0xFFFF;  // what a cache holds where nothing was appended

TEST(CudaOpsKvCache, AppendMatchesCpuAndFlagsBadRows) {
  REQUIRE_GPU();
  struct Shape {
    int64_t NKV, HS, offset;
  };
  uint64_t seed = 700;
  for (const auto& s : {Shape{8, 128, 0}, Shape{3, 10, 0}, Shape{2, 64, 1}}) {
    SCOPED_TRACE("NKV=" + std::to_string(s.NKV) + " HS=" + std::to_string(s.HS) +
                 " offset=" + std::to_string(s.offset));
    const int64_t slots = 3, max_ctx = 20, width = s.NKV * s.HS, off = s.offset;
    const std::vector<int32_t> slot = {2, 0, 1, 2, 0}, pos = {19, 0, 7, 3, 12};
    const int64_t N = static_cast<int64_t>(slot.size());
    const auto cache0 = randn_bf16(slots * max_ctx * width + off, ++seed);
    const auto k = randn_bf16(N * width + off, ++seed), v = randn_bf16(N * width + off, ++seed);
    std::vector<float> kc = cache0, vc = cache0;
    cpu::kv_append(kc.data() + off, vc.data() + off, k.data() + off, v.data() + off, slot.data(), pos.data(), N, s.NKV,
                   s.HS, slots, max_ctx);
    DeviceBuffer<uint16_t> d_kc(to_bits(cache0)), d_vc(to_bits(cache0)), d_k(to_bits(k)), d_v(to_bits(v));
    DeviceBuffer<int32_t> d_slot(slot), d_pos(pos);
    DeviceBuffer<uint32_t> status(std::vector<uint32_t>{0});
    cu::kv_append(d_kc.ptr + off, d_vc.ptr + off, d_k.ptr + off, d_v.ptr + off, d_slot.ptr, d_pos.ptr, N, s.NKV, s.HS,
                  slots, max_ctx, status.ptr, nullptr);
    EXPECT_EQ(first_diff(to_bits(kc), d_kc.download()), -1) << "k cache";
    EXPECT_EQ(first_diff(to_bits(vc), d_vc.download()), -1) << "v cache";
    EXPECT_EQ(status.download()[0], 0u);
    // rows 1 and 3 out of range: skipped, flagged; the others written
    d_kc.upload(to_bits(cache0));
    d_slot.upload({2, 3, 1, 2, 0});
    d_pos.upload({19, 0, 7, 20, 12});
    cu::kv_append(d_kc.ptr + off, d_vc.ptr + off, d_k.ptr + off, d_v.ptr + off, d_slot.ptr, d_pos.ptr, N, s.NKV, s.HS,
                  slots, max_ctx, status.ptr, nullptr);
    std::vector<float> want_k = cache0, want_v = cache0, good_k;
    const std::vector<int32_t> good_slot = {2, 1, 0}, good_pos = {19, 7, 12};
    for (const int64_t n : {0, 2, 4})
      good_k.insert(good_k.end(), k.begin() + off + n * width, k.begin() + off + (n + 1) * width);
    cpu::kv_append(want_k.data() + off, want_v.data() + off, good_k.data(), good_k.data(), good_slot.data(),
                   good_pos.data(), 3, s.NKV, s.HS, slots, max_ctx);
    EXPECT_EQ(first_diff(to_bits(want_k), d_kc.download()), -1) << "k cache with bad rows";
    EXPECT_EQ(status.download()[0], cu::kStatusBadPosition);
  }
}

// One attention case: `seqs` sequences in slots 1.. (slot 0 stays NaN), each appended in full;
// the query rows are (slot, position) pairs.
struct AttCase {
  const char* name;
  int64_t NH, NKV, HS, window, offset;  // offset: BF16 elements before the caches (1: scalar path)
  std::vector<int64_t> lens;          // sequence lengths, slot s + 1 holds sequence s
  std::vector<std::pair<int, int>> rows;  // (sequence, position)
};

std::vector<std::pair<int, int>> positions(int seq, int from, int to) {
  std::vector<std::pair<int, int>> r;
  for (int t = from; t < to; ++t) r.push_back({seq, t});
  return r;
}

AttCase with_rows(AttCase c, std::vector<std::pair<int, int>> more) {
  c.rows.insert(c.rows.end(), more.begin(), more.end());
  return c;
}

std::vector<AttCase> att_cases() {
  std::vector<AttCase> c;
  c.push_back({"decode N=1 pos 3000, GQA 4:1, HS 128", 32, 8, 128, 0, 0, {3001}, {{0, 3000}}});
  c.push_back({"decode N=1 pos 3000, window 1000", 32, 8, 128, 1000, 0, {3001}, {{0, 3000}}});
  c.push_back({"decode batch, ragged, HS 64 MHA", 8, 8, 64, 0, 0, {1, 77, 300, 33},
               {{2, 299}, {0, 0}, {1, 76}, {3, 32}}});
  c.push_back(with_rows({"chunked prefill, MQA 8:1, HS 128", 8, 1, 128, 0, 0, {356, 40}, {}}, positions(0, 100, 356)));
  // a prefill chunk of sequence 0, a decode step of sequence 1, all of sequence 2
  AttCase mixed{"ragged prefill + decode, HS 80, GQA 4:1, window 37", 12, 3, 80, 37, 0, {130, 9, 64},
                positions(0, 60, 130)};
  mixed.rows.push_back({1, 8});
  c.push_back(with_rows(mixed, positions(2, 0, 64)));
  c.push_back({"HS 256, GQA 2:1", 4, 2, 256, 0, 0, {70}, positions(0, 0, 70)});
  c.push_back({"HS 6, group 3, window 5", 6, 2, 6, 5, 0, {45}, positions(0, 30, 45)});
  c.push_back({"group 10 (two CTAs per kv head), HS 64", 20, 2, 64, 0, 0, {129}, {{0, 128}, {0, 5}}});
  c.push_back({"misaligned caches (scalar path), HS 64, GQA 2:1", 4, 2, 64, 0, 1, {100, 3},
               {{0, 99}, {1, 2}, {0, 31}}});
  return c;
}

TEST(CudaOpsKvCache, AttentionMatchesCpu) {
  REQUIRE_GPU();
  uint64_t seed = 800;
  for (const AttCase& c : att_cases()) {
    SCOPED_TRACE(c.name);
    const int64_t NH = c.NH, NKV = c.NKV, HS = c.HS, G = NH / NKV, off = c.offset;
    const int64_t slots = static_cast<int64_t>(c.lens.size()) + 1;
    const int64_t max_ctx = *std::max_element(c.lens.begin(), c.lens.end()) + 3;
    const int64_t width = NKV * HS, cache_n = slots * max_ctx * width;
    // Append every sequence, on both sides (the CUDA caches through cu::kv_append).
    std::vector<float> kc(cache_n, NAN), vc(cache_n, NAN);
    DeviceBuffer<uint16_t> d_kc(std::vector<uint16_t>(cache_n + off, kNaNBits)),
        d_vc(std::vector<uint16_t>(cache_n + off, kNaNBits));
    DeviceBuffer<uint32_t> status(std::vector<uint32_t>{0});
    for (size_t s = 0; s < c.lens.size(); ++s) {
      const int64_t L = c.lens[s];
      const auto k = randn_bf16(L * width, ++seed), v = randn_bf16(L * width, ++seed);
      std::vector<int32_t> slot(L, static_cast<int32_t>(s + 1)), pos(L);
      for (int64_t t = 0; t < L; ++t) pos[t] = static_cast<int32_t>(t);
      cpu::kv_append(kc.data(), vc.data(), k.data(), v.data(), slot.data(), pos.data(), L, NKV, HS, slots, max_ctx);
      DeviceBuffer<uint16_t> d_k(to_bits(k)), d_v(to_bits(v));
      DeviceBuffer<int32_t> d_slot(slot), d_pos(pos);
      cu::kv_append(d_kc.ptr + off, d_vc.ptr + off, d_k.ptr, d_v.ptr, d_slot.ptr, d_pos.ptr, L, NKV, HS, slots, max_ctx,
                    status.ptr, nullptr);
      CUDA_OK(cudaDeviceSynchronize());
    }
    const int64_t N = static_cast<int64_t>(c.rows.size());
    std::vector<int32_t> slot(N), pos(N);
    for (int64_t n = 0; n < N; ++n) slot[n] = c.rows[n].first + 1, pos[n] = c.rows[n].second;
    const auto q = randn_bf16(N * NH * HS, ++seed);
    const auto qbits = to_bits(q);
    const float scale = 1.0f / std::sqrt(float(HS));
    std::vector<float> want(N * NH * HS);
    cpu::attention_cache(want.data(), q.data(), kc.data(), vc.data(), slot.data(), pos.data(), N, NH, NKV, HS, slots,
                         max_ctx, c.window, scale);

    DeviceBuffer<uint16_t> d_q(qbits), d_out(N * NH * HS), d_out2(N * NH * HS), d_one(NH * HS);
    DeviceBuffer<int32_t> d_slot(slot), d_pos(pos);
    cu::attention_cache(d_out.ptr, d_q.ptr, d_kc.ptr + off, d_vc.ptr + off, d_slot.ptr, d_pos.ptr, N, NH, NKV, HS,
                        slots, max_ctx, c.window, scale, status.ptr, nullptr);
    cu::attention_cache(d_out2.ptr, d_q.ptr, d_kc.ptr + off, d_vc.ptr + off, d_slot.ptr, d_pos.ptr, N, NH, NKV, HS,
                        slots, max_ctx, c.window, scale, status.ptr, nullptr);
    const auto got = d_out.download();
    EXPECT_EQ(status.download()[0], 0u);
    EXPECT_EQ(first_diff(got, d_out2.download()), -1) << "second run";

    // Tolerance (test_ops_cuda_support.hpp): the output's BF16 rounding, plus (keys + HS) FP32
    // re-associations of mag_i = sum_j p_j |v_j[i]|, p from the scores in double.
    std::vector<double> mag(N * NH * HS, 0.0);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t h = 0; h < NH; ++h) {
        const int64_t kvh = h / G, last = pos[n];
        const int64_t first = c.window > 0 ? std::max<int64_t>(0, last - c.window + 1) : 0;
        std::vector<double> p(last - first + 1);
        double mx = -INFINITY, sum = 0.0;
        for (int64_t j = first; j <= last; ++j) {
          const float* kr = &kc[((slot[n] * max_ctx + j) * NKV + kvh) * HS];
          double dot = 0.0;
          for (int64_t i = 0; i < HS; ++i) dot += double(q[(n * NH + h) * HS + i]) * kr[i];
          p[j - first] = dot * scale;
          mx = std::max(mx, p[j - first]);
        }
        for (auto& x : p) sum += (x = std::exp(x - mx));
        for (int64_t j = first; j <= last; ++j) {
          const float* vr = &vc[((slot[n] * max_ctx + j) * NKV + kvh) * HS];
          for (int64_t i = 0; i < HS; ++i) mag[(n * NH + h) * HS + i] += p[j - first] / sum * std::fabs(vr[i]);
        }
      }
    const int64_t keys = c.window > 0 ? c.window : max_ctx;
    EXPECT_TRUE(close("out", from_bits(got), want, 1, reassoc(double(keys + HS), mag)));

    // Batch invariance: each row alone gives its bits in the batch (checked for up to 4 rows).
    for (int64_t n = 0; n < std::min<int64_t>(N, 4); ++n) {
      const int64_t r = n * (N - 1) / std::max<int64_t>(1, std::min<int64_t>(N, 4) - 1);
      const auto row_bits = [&](const std::vector<uint16_t>& x) {
        return std::vector<uint16_t>(x.begin() + r * NH * HS, x.begin() + (r + 1) * NH * HS);
      };
      DeviceBuffer<uint16_t> d_q1(row_bits(qbits));
      DeviceBuffer<int32_t> d_s1(std::vector<int32_t>{slot[r]}), d_p1(std::vector<int32_t>{pos[r]});
      cu::attention_cache(d_one.ptr, d_q1.ptr, d_kc.ptr + off, d_vc.ptr + off, d_s1.ptr, d_p1.ptr, 1, NH, NKV, HS,
                          slots, max_ctx, c.window, scale, status.ptr, nullptr);
      EXPECT_EQ(first_diff(d_one.download(), row_bits(got)), -1) << "row " << r << " alone";
    }
  }
}

TEST(CudaOpsKvCache, AttentionFlagsBadRowsWithZeros) {
  REQUIRE_GPU();
  const int64_t NH = 4, NKV = 2, HS = 64, slots = 2, max_ctx = 16;
  const int64_t cache_n = slots * max_ctx * NKV * HS;
  DeviceBuffer<uint16_t> d_kc(to_bits(randn_bf16(cache_n, 900))), d_vc(to_bits(randn_bf16(cache_n, 901)));
  DeviceBuffer<uint16_t> d_q(to_bits(randn_bf16(3 * NH * HS, 902))), d_out(3 * NH * HS);
  DeviceBuffer<int32_t> d_slot(std::vector<int32_t>{0, 2, 1}), d_pos(std::vector<int32_t>{3, 0, 16});
  DeviceBuffer<uint32_t> status(std::vector<uint32_t>{0});
  cu::attention_cache(d_out.ptr, d_q.ptr, d_kc.ptr, d_vc.ptr, d_slot.ptr, d_pos.ptr, 3, NH, NKV, HS, slots, max_ctx, 0,
                      0.125f, status.ptr, nullptr);
  const auto out = d_out.download();
  EXPECT_EQ(status.download()[0], cu::kStatusBadPosition);
  for (int64_t i = NH * HS; i < 3 * NH * HS; ++i) ASSERT_EQ(out[i], 0u) << "bad rows 1 and 2 are zeros, at " << i;
  for (int64_t i = 0; i < NH * HS; ++i) ASSERT_TRUE(std::isfinite(bf16_decode(out[i]))) << "row 0 at " << i;
  EXPECT_THROW(cu::attention_cache(d_out.ptr, d_q.ptr, d_kc.ptr, d_vc.ptr, d_slot.ptr, d_pos.ptr, 1, NH, NKV, 258,
                                   slots, max_ctx, 0, 0.1f, nullptr, nullptr),
               nvfp4::Error);  // HS > 256
}

// The paged cache (a shuffled block pool, blocks of 5 and of 16 positions, through kv_append's and
// attention_cache's KvPages) gives the contiguous cache's bits on every case above; a visible
// position without a block reads as zeros and sets kStatusBadPosition, and kv_append skips it.
TEST(CudaOpsKvCache, PagedLayoutGivesTheContiguousBits) {
  REQUIRE_GPU();
  uint64_t seed = 1700;
  for (const AttCase& c : att_cases()) {
    for (const int64_t bs : {int64_t{5}, int64_t{16}}) {
      SCOPED_TRACE(std::string(c.name) + ", block size " + std::to_string(bs));
      const int64_t NH = c.NH, NKV = c.NKV, HS = c.HS, off = c.offset, width = NKV * HS;
      const int64_t slots = static_cast<int64_t>(c.lens.size()) + 1;
      const int64_t max_ctx = *std::max_element(c.lens.begin(), c.lens.end()) + 3;
      const int64_t per_seq = (max_ctx + bs - 1) / bs, blocks = slots * per_seq + 3;
      std::vector<int32_t> order(blocks);
      for (int64_t b = 0; b < blocks; ++b) order[b] = static_cast<int32_t>(b);
      std::shuffle(order.begin(), order.end(), std::mt19937(static_cast<uint32_t>(seed)));
      std::vector<int32_t> table(order.begin(), order.begin() + slots * per_seq);
      DeviceBuffer<int32_t> d_table(table);
      const nvfp4::KvPages pages{d_table.ptr, bs, blocks};
      DeviceBuffer<uint16_t> flat_k(std::vector<uint16_t>(slots * max_ctx * width + off, kNaNBits)),
          flat_v(std::vector<uint16_t>(slots * max_ctx * width + off, kNaNBits)),
          pool_k(std::vector<uint16_t>(blocks * bs * width + off, kNaNBits)),
          pool_v(std::vector<uint16_t>(blocks * bs * width + off, kNaNBits));
      DeviceBuffer<uint32_t> status(std::vector<uint32_t>{0});
      for (size_t s = 0; s < c.lens.size(); ++s) {
        const int64_t L = c.lens[s];
        DeviceBuffer<uint16_t> d_k(to_bits(randn_bf16(L * width, ++seed))), d_v(to_bits(randn_bf16(L * width, ++seed)));
        std::vector<int32_t> slot(L, static_cast<int32_t>(s + 1)), pos(L);
        for (int64_t t = 0; t < L; ++t) pos[t] = static_cast<int32_t>(t);
        DeviceBuffer<int32_t> d_slot(slot), d_pos(pos);
        cu::kv_append(flat_k.ptr + off, flat_v.ptr + off, d_k.ptr, d_v.ptr, d_slot.ptr, d_pos.ptr, L, NKV, HS, slots,
                      max_ctx, status.ptr, nullptr);
        cu::kv_append(pool_k.ptr + off, pool_v.ptr + off, d_k.ptr, d_v.ptr, d_slot.ptr, d_pos.ptr, L, NKV, HS, slots,
                      max_ctx, status.ptr, nullptr, pages);
      }
      const int64_t N = static_cast<int64_t>(c.rows.size());
      std::vector<int32_t> slot(N), pos(N);
      for (int64_t n = 0; n < N; ++n) slot[n] = c.rows[n].first + 1, pos[n] = c.rows[n].second;
      DeviceBuffer<uint16_t> d_q(to_bits(randn_bf16(N * NH * HS, ++seed))), d_flat(N * NH * HS), d_paged(N * NH * HS);
      DeviceBuffer<int32_t> d_slot(slot), d_pos(pos);
      const float scale = 1.0f / std::sqrt(float(HS));
      cu::attention_cache(d_flat.ptr, d_q.ptr, flat_k.ptr + off, flat_v.ptr + off, d_slot.ptr, d_pos.ptr, N, NH, NKV,
                          HS, slots, max_ctx, c.window, scale, status.ptr, nullptr);
      cu::attention_cache(d_paged.ptr, d_q.ptr, pool_k.ptr + off, pool_v.ptr + off, d_slot.ptr, d_pos.ptr, N, NH, NKV,
                          HS, slots, max_ctx, c.window, scale, status.ptr, nullptr, pages);
      EXPECT_EQ(status.download()[0], 0u);
      EXPECT_EQ(first_diff(d_paged.download(), d_flat.download()), -1);
      // Unused blocks untouched.
      const auto pk = pool_k.download();
      for (int64_t e = slots * per_seq; e < blocks; ++e)
        for (int64_t i = 0; i < bs * width; ++i) ASSERT_EQ(pk[off + order[e] * bs * width + i], kNaNBits);
    }
  }
  // Slot 0 of 2 has its second block missing: attention over position 6 flags it; the append of
  // position 5 is skipped.
  const int64_t NH = 2, NKV = 1, HS = 64, bs = 4, blocks = 2;
  DeviceBuffer<int32_t> d_table(std::vector<int32_t>{1, -1, 0, -1});
  const nvfp4::KvPages pages{d_table.ptr, bs, blocks};
  DeviceBuffer<uint16_t> d_kc(to_bits(randn_bf16(blocks * bs * HS, 1750))), d_vc(to_bits(randn_bf16(blocks * bs * HS, 1751)));
  const auto before = d_kc.download();
  DeviceBuffer<uint16_t> d_row(to_bits(randn_bf16(HS, 1752))), d_q(to_bits(randn_bf16(NH * HS, 1753))), d_out(NH * HS);
  DeviceBuffer<int32_t> d_s(std::vector<int32_t>{0}), d_p5(std::vector<int32_t>{5}), d_p6(std::vector<int32_t>{6});
  DeviceBuffer<uint32_t> status(std::vector<uint32_t>{0});
  cu::kv_append(d_kc.ptr, d_vc.ptr, d_row.ptr, d_row.ptr, d_s.ptr, d_p5.ptr, 1, NKV, HS, 2, 8, status.ptr, nullptr, pages);
  EXPECT_EQ(status.download()[0], cu::kStatusBadPosition);
  EXPECT_EQ(first_diff(d_kc.download(), before), -1) << "the append without a block wrote";
  DeviceBuffer<uint32_t> status2(std::vector<uint32_t>{0});
  cu::attention_cache(d_out.ptr, d_q.ptr, d_kc.ptr, d_vc.ptr, d_s.ptr, d_p6.ptr, 1, NH, NKV, HS, 2, 8, 0, 0.125f,
                      status2.ptr, nullptr, pages);
  EXPECT_EQ(status2.download()[0], cu::kStatusBadPosition);
  for (uint16_t b : d_out.download()) ASSERT_TRUE(std::isfinite(bf16_decode(b)));
}

}  // namespace
