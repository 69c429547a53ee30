// CPU reference KV cache ops (src/kernels/cpu/kv_cache.cpp): kv_append writes exactly its rows;
// attention_cache equals attention_forward on a whole sequence, a brute-force double loop with a
// window, and on a ragged batch each row equals that row computed alone; positions it must not
// see (the future, before the window, other slots) are NaN and change nothing. The paged layout
// (KvPages: a block pool and a block table) gives the contiguous layout's bits, and refuses
// positions without a block and tables that alias. Harness: test_cpu_ops_support.hpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/ops.hpp"
#include "kernels/test_cpu_ops_support.hpp"
#include "nvfp4/error.hpp"
#include "support/test_support.hpp"

namespace {

using namespace cpu_ops_test;
using nvfp4::test::error_of;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// A cache (slots, max_ctx, NKV, HS) for K and one for V, every element NaN until appended.
struct Cache {
  int64_t slots, max_ctx, nkv, hs;
  Vf k, v;
  Cache(int64_t s, int64_t m, int64_t nkv_, int64_t hs_)
      : slots(s), max_ctx(m), nkv(nkv_), hs(hs_), k(s * m * nkv_ * hs_, kNaN), v(k.size(), kNaN) {}
  // Appends rows k_rows, v_rows (N, NKV, HS) at (slot[n], pos[n]).
  void append(const Vf& k_rows, const Vf& v_rows, const Ints& slot, const Ints& pos) {
    cpu::kv_append(k.data(), v.data(), k_rows.data(), v_rows.data(), slot.data(), pos.data(),
                   static_cast<int64_t>(slot.size()), nkv, hs, slots, max_ctx);
  }
  Vf attend(const Vf& q, const Ints& slot, const Ints& pos, int64_t nh, int64_t window, float scale) const {
    Vf out(q.size(), kNaN);
    cpu::attention_cache(out.data(), q.data(), k.data(), v.data(), slot.data(), pos.data(),
                         static_cast<int64_t>(slot.size()), nh, nkv, hs, slots, max_ctx, window, scale);
    return out;
  }
};

// Row n of a (rows, width) array.
Vf row_of(const Vf& x, int64_t n, int64_t width) { return Vf(x.begin() + n * width, x.begin() + (n + 1) * width); }

TEST(CpuOpsKvCache, AppendWritesExactlyItsRows) {
  constexpr int64_t S = 3, M = 10, NK = 2, H = 5;
  Cache c(S, M, NK, H);
  const Ints slot = {2, 0, 2}, pos = {9, 4, 0};
  const Vf k = randn(3 * NK * H, 81), v = randn(3 * NK * H, 82);
  c.append(k, v, slot, pos);
  for (int64_t s = 0; s < S; ++s)
    for (int64_t j = 0; j < M; ++j) {
      int64_t row = -1;
      for (int64_t n = 0; n < 3; ++n)
        if (slot[n] == s && pos[n] == j) row = n;
      for (int64_t e = 0; e < NK * H; ++e) {
        const int64_t at = (s * M + j) * NK * H + e;
        if (row < 0) {
          EXPECT_TRUE(std::isnan(c.k[at]) && std::isnan(c.v[at])) << "slot " << s << " pos " << j << " was written";
        } else {
          EXPECT_EQ(c.k[at], k[row * NK * H + e]);
          EXPECT_EQ(c.v[at], v[row * NK * H + e]);
        }
      }
    }
}

TEST(CpuOpsKvCache, BadRowsAreNamedAndNothingIsWritten) {
  Cache c(2, 8, 1, 4);
  const Vf k = randn(8, 83), v = randn(8, 84);
  EXPECT_EQ(error_of([&] { c.append(k, v, {0, 2}, {0, 1}); }),
            "cpu::kv_append: row 1: slot 2 is outside the cache's slots [0, 2)");
  EXPECT_EQ(error_of([&] { c.append(k, v, {1, 1}, {8, 1}); }),
            "cpu::kv_append: row 0: position 8 is outside the cache's [0, 8); the sequence is longer than max_ctx");
  EXPECT_EQ(error_of([&] { c.append(k, v, {1, 1}, {3, 3}); }),
            "cpu::kv_append: rows 0 and 1 both write slot 1, position 3");
  for (float x : c.k) EXPECT_TRUE(std::isnan(x));
  const Vf q = randn(2 * 4, 85);
  Vf out(q.size());
  const Ints s0 = {0, 0}, p_bad = {0, -1};
  EXPECT_EQ(error_of([&] {
              cpu::attention_cache(out.data(), q.data(), c.k.data(), c.v.data(), s0.data(), p_bad.data(), 2, 1, 1, 4,
                                   2, 8, 0, 0.5f);
            }),
            "cpu::attention_cache: row 1: position -1 is outside the cache's [0, 8)");
  EXPECT_THROW(cpu::attention_cache(out.data(), q.data(), c.k.data(), c.v.data(), s0.data(), s0.data(), 1, 3, 2, 4, 2,
                                    8, 0, 0.5f),
               nvfp4::Error);  // NH = 3 is not a multiple of NKV = 2
  EXPECT_THROW(cpu::attention_cache(out.data(), q.data(), c.k.data(), c.v.data(), s0.data(), s0.data(), 1, 1, 1, 4, 2,
                                    8, -1, 0.5f),
               nvfp4::Error);  // window < 0
}

// Sequences appended position by position, then every position attended at once (prefill):
// attention_forward's output bit for bit (so within 1e-6), for B sequences in B slots, with the
// rest of the cache NaN.
TEST(CpuOpsKvCache, AttentionEqualsAttentionForward) {
  for (const int64_t nkv : {NKV, NH}) {
    SCOPED_TRACE("NKV=" + std::to_string(nkv));
    constexpr int64_t T2 = 37, H = 16;
    const Vf q = randn(B * T2 * NH * H, 86), k = randn(B * T2 * nkv * H, 87), v = randn(B * T2 * nkv * H, 88);
    Vf want(q.size()), att(B * NH * T2 * T2);
    cpu::attention_forward(want.data(), att.data(), q.data(), k.data(), v.data(), B, T2, NH, nkv, H);
    Cache c(B + 1, T2 + 5, nkv, H);
    Ints slot(B * T2), pos(B * T2);
    for (int64_t n = 0; n < B * T2; ++n) {
      slot[n] = static_cast<int32_t>(B - n / T2);  // sequence b in slot B - b; slot 0 stays NaN
      pos[n] = static_cast<int32_t>(n % T2);
    }
    c.append(k, v, slot, pos);
    const Vf got = c.attend(q, slot, pos, NH, 0, 1.0f / std::sqrt(float(H)));
    EXPECT_TRUE(same_bits(got, want));
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-6) << i;
  }
}

// A sliding window: only the last `window` positions, against a brute-force loop in double.
// window = 1 gives the value row itself (one weight, exactly 1); a window covering the whole
// sequence is window 0.
TEST(CpuOpsKvCache, WindowMatchesBruteForce) {
  constexpr int64_t T2 = 40, H = 12, NK = 1, NHQ = 2;
  const float scale = 0.3f;
  const Vf k = randn(T2 * NK * H, 89), v = randn(T2 * NK * H, 90), q = randn(T2 * NHQ * H, 91);
  Cache c(1, T2, NK, H);
  Ints slot(T2, 0), pos(T2);
  for (int64_t t = 0; t < T2; ++t) pos[t] = static_cast<int32_t>(t);
  c.append(k, v, slot, pos);
  for (const int64_t window : {int64_t{1}, int64_t{7}, int64_t{16}}) {
    SCOPED_TRACE("window=" + std::to_string(window));
    const Vf got = c.attend(q, slot, pos, NHQ, window, scale);
    Vd want(q.size());
    for (int64_t t = 0; t < T2; ++t)
      for (int64_t h = 0; h < NHQ; ++h) {
        std::vector<double> w;
        double mx = -INFINITY, sum = 0.0;
        for (int64_t j = 0; j <= t; ++j) {
          if (t - j >= window) {
            w.push_back(-INFINITY);
            continue;
          }
          double dot = 0.0;
          for (int64_t i = 0; i < H; ++i) dot += double(q[(t * NHQ + h) * H + i]) * k[j * H + i];
          w.push_back(dot * scale);
          mx = std::max(mx, w.back());
        }
        for (auto& x : w) sum += (x = std::exp(x - mx));
        for (int64_t i = 0; i < H; ++i) {
          double o = 0.0;
          for (int64_t j = 0; j <= t; ++j) o += w[j] / sum * v[j * H + i];
          want[(t * NHQ + h) * H + i] = o;
        }
      }
    EXPECT_CLOSE(got, want, double(window + H + 8), "out");
    if (window == 1) {
      for (int64_t t = 0; t < T2; ++t)
        for (int64_t h = 0; h < NHQ; ++h) EXPECT_TRUE(same_bits(row_of(got, t * NHQ + h, H), row_of(v, t, H)));
    }
  }
  EXPECT_TRUE(same_bits(c.attend(q, slot, pos, NHQ, T2, scale), c.attend(q, slot, pos, NHQ, 0, scale)));
  EXPECT_FALSE(same_bits(c.attend(q, slot, pos, NHQ, T2 - 1, scale), c.attend(q, slot, pos, NHQ, 0, scale)));
}

// A ragged batch: slots of different lengths, some rows a decode step, some a prefill chunk,
// in mixed order. Each row equals itself computed alone (N = 1) and attention_forward's row of
// its sequence; the cache past each slot's length is NaN and never read.
TEST(CpuOpsKvCache, RaggedBatchRowsEqualEachRowAlone) {
  constexpr int64_t H = 8, M = 64;
  const int64_t len[] = {23, 1, 64, 9};
  constexpr int64_t S = 4;
  Cache c(S + 1, M, NKV, H);
  std::vector<Vf> qs, ks, vs;
  for (int64_t s = 0; s < S; ++s) {
    qs.push_back(randn(len[s] * NH * H, 100 + s));
    ks.push_back(randn(len[s] * NKV * H, 110 + s));
    vs.push_back(randn(len[s] * NKV * H, 120 + s));
    Ints slot(len[s], static_cast<int32_t>(s)), pos(len[s]);
    for (int64_t t = 0; t < len[s]; ++t) pos[t] = static_cast<int32_t>(t);
    c.append(ks[s], vs[s], slot, pos);
  }
  // rows: slot 0's last 5 positions, slot 1's only one, slot 2's position 63 and 10, slot 3 all
  Ints slot, pos;
  Vf q;
  auto add = [&](int64_t s, int64_t t) {
    slot.push_back(static_cast<int32_t>(s));
    pos.push_back(static_cast<int32_t>(t));
    const Vf r = row_of(qs[s], t, NH * H);
    q.insert(q.end(), r.begin(), r.end());
  };
  for (int64_t t = 18; t < 23; ++t) add(0, t);
  add(2, 63);
  add(1, 0);
  for (int64_t t = 0; t < 9; ++t) add(3, t);
  add(2, 10);
  const float scale = 1.0f / std::sqrt(float(H));
  for (const int64_t window : {int64_t{0}, int64_t{5}}) {
    SCOPED_TRACE("window=" + std::to_string(window));
    const Vf got = c.attend(q, slot, pos, NH, window, scale);
    for (size_t n = 0; n < slot.size(); ++n) {
      const Vf alone = c.attend(row_of(q, n, NH * H), {slot[n]}, {pos[n]}, NH, window, scale);
      EXPECT_TRUE(same_bits(row_of(got, n, NH * H), alone)) << "row " << n;
      if (window == 0) {
        const int64_t s = slot[n], T2 = len[s];
        Vf want(T2 * NH * H), att(NH * T2 * T2);
        cpu::attention_forward(want.data(), att.data(), qs[s].data(), ks[s].data(), vs[s].data(), 1, T2, NH, NKV, H);
        EXPECT_TRUE(same_bits(row_of(got, n, NH * H), row_of(want, pos[n], NH * H))) << "row " << n;
      }
      for (float x : row_of(got, n, NH * H)) ASSERT_TRUE(std::isfinite(x)) << "row " << n << " read a NaN";
    }
  }
}

// The same appends and attention through a block table whose blocks are a shuffled pool (block
// size 3, so blocks cut the tiles of every row at odd places): the same bits as the contiguous
// cache, and every pool row not named by the table untouched.
TEST(CpuOpsKvCache, PagedLayoutGivesTheContiguousBits) {
  constexpr int64_t S = 3, M = 20, NK = 2, NH = 4, H = 6, BS = 3, PER = (M + BS - 1) / BS, BLOCKS = S * PER + 4;
  Cache flat(S, M, NK, H);
  Vf pk(BLOCKS * BS * NK * H, kNaN), pv(pk.size(), kNaN);
  Ints table(S * PER);
  std::vector<int32_t> order(BLOCKS);
  for (int32_t b = 0; b < BLOCKS; ++b) order[b] = b;
  std::shuffle(order.begin(), order.end(), std::mt19937(7));
  for (int64_t e = 0; e < S * PER; ++e) table[e] = order[e];  // 4 blocks of the pool stay unused
  const cpu::KvPages pages{table.data(), BS, BLOCKS};
  const int64_t len[S] = {20, 7, 13};
  for (int64_t s = 0; s < S; ++s) {
    Ints slot(len[s], static_cast<int32_t>(s)), pos(len[s]);
    for (int64_t t = 0; t < len[s]; ++t) pos[t] = static_cast<int32_t>(t);
    const Vf k = randn(len[s] * NK * H, 300 + s), v = randn(len[s] * NK * H, 310 + s);
    flat.append(k, v, slot, pos);
    cpu::kv_append(pk.data(), pv.data(), k.data(), v.data(), slot.data(), pos.data(), len[s], NK, H, S, M, pages);
  }
  const Ints slot = {0, 1, 2, 0, 2}, pos = {19, 6, 12, 4, 0};
  const Vf q = randn(static_cast<int64_t>(slot.size()) * NH * H, 320);
  for (const int64_t window : {int64_t{0}, int64_t{4}}) {
    SCOPED_TRACE("window=" + std::to_string(window));
    const Vf want = flat.attend(q, slot, pos, NH, window, 0.4f);
    Vf got(q.size(), kNaN);
    cpu::attention_cache(got.data(), q.data(), pk.data(), pv.data(), slot.data(), pos.data(),
                         static_cast<int64_t>(slot.size()), NH, NK, H, S, M, window, 0.4f, pages);
    EXPECT_TRUE(same_bits(got, want));
  }
  for (int64_t e = S * PER; e < BLOCKS; ++e) {  // the unused blocks
    for (int64_t i = 0; i < BS * NK * H; ++i) {
      ASSERT_TRUE(std::isnan(pk[order[e] * BS * NK * H + i]) && std::isnan(pv[order[e] * BS * NK * H + i]));
    }
  }
}

TEST(CpuOpsKvCache, PagedLayoutRefusesMissingBlocksAndAliases) {
  constexpr int64_t S = 2, M = 8, BS = 4, BLOCKS = 3;
  Vf k(BLOCKS * BS * 4, 0.0f), v(k.size(), 0.0f), rows(2 * 4, 1.0f), out(2 * 4);
  Ints table = {0, -1, 1, 7};  // slot 0: block 0 then none; slot 1: block 1 then one past the pool
  const cpu::KvPages pages{table.data(), BS, BLOCKS};
  const Ints s0 = {0}, p5 = {5}, s1 = {1}, p6 = {6};
  EXPECT_EQ(error_of([&] {
              cpu::kv_append(k.data(), v.data(), rows.data(), rows.data(), s0.data(), p5.data(), 1, 1, 4, S, M, pages);
            }),
            "cpu::kv_append: row 0: slot 0, position 5 has no cache block (table entry -1, blocks [0, 3))");
  EXPECT_EQ(error_of([&] {
              cpu::attention_cache(out.data(), rows.data(), k.data(), v.data(), s1.data(), p6.data(), 1, 1, 1, 4, S, M, 0,
                                   1.0f, pages);
            }),
            "cpu::attention_cache: row 0: slot 1, position 4 has no cache block (table entry 7, blocks [0, 3))");
  Ints alias = {2, 2, 0, 1};  // slot 0's two blocks are one
  const cpu::KvPages aliased{alias.data(), BS, BLOCKS};
  const Ints slots = {0, 0}, pos = {1, 5};
  EXPECT_EQ(error_of([&] {
              cpu::kv_append(k.data(), v.data(), rows.data(), rows.data(), slots.data(), pos.data(), 2, 1, 4, S, M,
                             aliased);
            }),
            "cpu::kv_append: rows 0 and 1 (slot 0, position 1; slot 0, position 5) share one cache row: the block "
            "table gives two positions the same block");
  for (float x : k) EXPECT_EQ(x, 0.0f);  // nothing written
}

}  // namespace
