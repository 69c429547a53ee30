// CUDA attention (src/kernels/cuda/attention.cu) against the CPU op, without and with a sliding
// window: values, causality, the window's locality, determinism, and window 0's bits.
// Harness and tolerance rule: test_ops_cuda_support.hpp.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda/test_ops_cuda_support.hpp"
#include "kernels/cpu/ops.hpp"
#include "nvfp4/cuda_ops.hpp"
#include "support/cuda_test.hpp"

namespace {

using namespace cuda_ops_test;

struct AttShape {
  int64_t B, T, NH, NKV, HS;
  int64_t offset;  // BF16 elements before every BF16 tensor: 1 makes them misaligned (scalar path)
};

// T = 100, 257 and 130: not multiples of the 64-row tile; NKV < NH (grouped) and = NH; T = 1.
const AttShape kAttShapes[] = {
    {2, 100, 4, 2, 64, 0}, {1, 257, 8, 2, 128, 0}, {2, 64, 4, 4, 32, 0}, {1, 1, 2, 1, 64, 0}, {1, 130, 6, 3, 32, 1}};

// The first key position query t sees (cpu::attention_forward's lo(t)).
int64_t first_visible(int64_t t, int64_t window) { return window > 0 && t >= window ? t - window + 1 : 0; }

// Forward and backward of one shape and window (0: none) against the CPU op.
void expect_attention_matches_cpu(const AttShape& s, int64_t window, uint64_t seed,
                                  cu::AttentionKernel kernel = cu::AttentionKernel::automatic) {
  {
    const int64_t B = s.B, T = s.T, NH = s.NH, NKV = s.NKV, HS = s.HS, G = NH / NKV;
    SCOPED_TRACE("B=" + std::to_string(B) + " T=" + std::to_string(T) + " NH=" + std::to_string(NH) +
                 " NKV=" + std::to_string(NKV) + " HS=" + std::to_string(HS) + " offset=" + std::to_string(s.offset) +
                 " window=" + std::to_string(window) + " kernel=" + std::to_string(static_cast<int>(kernel)));
    const int64_t nq = B * T * NH * HS, nk = B * T * NKV * HS;
    const auto q = randn_bf16(nq, ++seed, 1.5f), k = randn_bf16(nk, ++seed, 1.5f), v = randn_bf16(nk, ++seed);
    const auto dout = randn_bf16(nq, ++seed);
    std::vector<float> out(nq), att(B * NH * T * T), dq(nq, 0.0f), dk(nk, 0.0f), dv(nk, 0.0f), datt(B * NH * T * T);
    cpu::attention_forward(out.data(), att.data(), q.data(), k.data(), v.data(), B, T, NH, NKV, HS, window);
    cpu::attention_backward(dq.data(), dk.data(), dv.data(), datt.data(), dout.data(), q.data(), k.data(), v.data(),
                            att.data(), B, T, NH, NKV, HS, window);

    const int64_t off = s.offset;
    auto padded = [&](const std::vector<float>& x) {
      std::vector<uint16_t> b(off, 0);
      const auto bits = to_bits(x);
      b.insert(b.end(), bits.begin(), bits.end());
      return b;
    };
    auto unpadded = [&](const DeviceBuffer<uint16_t>& d) {
      const auto x = download_bf16(d);
      return std::vector<float>(x.begin() + off, x.end());
    };
    DeviceBuffer<uint16_t> d_q(padded(q)), d_k(padded(k)), d_v(padded(v)), d_dout(padded(dout)), d_out(nq + off),
        d_dq(nq + off), d_dk(nk + off), d_dv(nk + off);
    DeviceBuffer<float> d_lse(B * NH * T);
    DeviceBuffer<uint8_t> scratch(cu::attention_backward_scratch_bytes(B, T, NH));
    cu::attention_forward(d_out.ptr + off, d_lse.ptr, d_q.ptr + off, d_k.ptr + off, d_v.ptr + off, B, T, NH, NKV, HS,
                          nullptr, nullptr, window, nullptr, 0, kernel);
    cu::attention_backward(d_dq.ptr + off, d_dk.ptr + off, d_dv.ptr + off, d_dout.ptr + off, d_out.ptr + off,
                           d_q.ptr + off, d_k.ptr + off, d_v.ptr + off, d_lse.ptr, B, T, NH, NKV, HS, scratch.ptr,
                           nullptr, nullptr, window);
    CUDA_OK(cudaDeviceSynchronize());

    // Magnitudes in double from the CPU's probabilities (see the file comment).
    const double scale = 1.0 / std::sqrt(double(HS));
    std::vector<double> mag_out(nq, 0.0), lse_ref(B * NH * T), lse_mag(B * NH * T);
    std::vector<double> mag_dq(nq, 0.0), magD_dq(nq, 0.0), mag_dk(nk, 0.0), magD_dk(nk, 0.0), mag_dv(nk, 0.0);
    std::vector<double> sc(T), dp(T);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < NH; ++h)
        for (int64_t t = 0; t < T; ++t) {
          const int64_t kvh = h / G;
          const float* qr = &q[((b * T + t) * NH + h) * HS];
          const float* dor = &dout[((b * T + t) * NH + h) * HS];
          const float* orow = &out[((b * T + t) * NH + h) * HS];
          const float* arow = &att[((b * NH + h) * T + t) * T];
          double mx = -INFINITY, D = 0.0, absD = 0.0, maxabs = 0.0;
          const int64_t lo = first_visible(t, window);
          for (int64_t i = 0; i < HS; ++i) D += double(dor[i]) * orow[i], absD += std::fabs(double(dor[i]) * orow[i]);
          for (int64_t t2 = lo; t2 <= t; ++t2) {
            const float* kr = &k[((b * T + t2) * NKV + kvh) * HS];
            const float* vr = &v[((b * T + t2) * NKV + kvh) * HS];
            double dot = 0.0, dpv = 0.0;
            for (int64_t i = 0; i < HS; ++i) dot += double(qr[i]) * kr[i], dpv += double(dor[i]) * vr[i];
            sc[t2] = dot * scale;
            dp[t2] = dpv;
            mx = std::max(mx, sc[t2]);
            maxabs = std::max(maxabs, std::fabs(sc[t2]));
          }
          double sum = 0.0;
          for (int64_t t2 = lo; t2 <= t; ++t2) sum += std::exp(sc[t2] - mx);
          const int64_t row = (b * NH + h) * T + t;
          lse_ref[row] = mx + std::log(sum);
          lse_mag[row] = 1.0 + std::fabs(lse_ref[row]) + maxabs;
          for (int64_t t2 = lo; t2 <= t; ++t2) {
            const double p = arow[t2];
            const double ds = p * (std::fabs(dp[t2]) + std::fabs(D)), dsD = p * absD;
            const int64_t ko = ((b * T + t2) * NKV + kvh) * HS, qo = ((b * T + t) * NH + h) * HS;
            for (int64_t i = 0; i < HS; ++i) {
              mag_out[qo + i] += p * std::fabs(v[ko + i]);
              mag_dq[qo + i] += scale * ds * std::fabs(k[ko + i]);
              magD_dq[qo + i] += scale * dsD * std::fabs(k[ko + i]);
              mag_dk[ko + i] += scale * ds * std::fabs(q[qo + i]);
              magD_dk[ko + i] += scale * dsD * std::fabs(q[qo + i]);
              mag_dv[ko + i] += p * std::fabs(dout[qo + i]);
            }
          }
        }
    // + 2^-8 mag: the BF16 rounding of P (dS) before the tensor-core product (file comment).
    auto with_P = [&](std::vector<double> e, const std::vector<double>& mag) {
      for (size_t i = 0; i < e.size(); ++i) e[i] += kBf16 * mag[i];
      return e;
    };
    EXPECT_TRUE(close("out", unpadded(d_out), out, 1, with_P(reassoc(double(T + HS), mag_out), mag_out)));
    const std::vector<float> lse_ref_f(lse_ref.begin(), lse_ref.end());
    EXPECT_TRUE(close("lse", d_lse.download(), lse_ref_f, 0, reassoc(double(T + HS), lse_mag)));
    // K = 4 (G T + HS): the reductions, x4 for the recomputed probabilities (lse, scores).
    const double Kb = 4.0 * double(G * T + HS);
    auto with_D = [&](std::vector<double> e, const std::vector<double>& magD) {
      for (size_t i = 0; i < e.size(); ++i) e[i] += 2.0 * kBf16 * magD[i];
      return e;
    };
    EXPECT_TRUE(close("dq", unpadded(d_dq), dq, 1, with_P(with_D(reassoc(Kb, mag_dq), magD_dq), mag_dq)));
    EXPECT_TRUE(close("dk", unpadded(d_dk), dk, 1, with_P(with_D(reassoc(Kb, mag_dk), magD_dk), mag_dk)));
    EXPECT_TRUE(close("dv", unpadded(d_dv), dv, 1, with_P(reassoc(Kb, mag_dv), mag_dv)));
  }
}

// Each shape through the automatic choice (on an H100: the wgmma kernel for the aligned HS 64 and
// 128 shapes, mma.sync for the rest) and through the mma.sync kernel forced.
TEST(CudaOps, AttentionMatchesCpu) {
  REQUIRE_GPU();
  uint64_t seed = 300;
  for (const auto kernel : {cu::AttentionKernel::automatic, cu::AttentionKernel::mma_sync})
    for (const auto& s : kAttShapes) expect_attention_matches_cpu(s, 0, seed += 10, kernel);
}

// The Hopper kernel (wgmma + TMA) forced, on shapes around its 128-row tiles (T 1, 127, 128, 129,
// 383: one row, a ragged last tile, exact tiles), grouped heads 4:1 and 8:1 and none, HS 64 and
// 128; and refused, with the reason, where it cannot run.
TEST(CudaOps, AttentionWgmmaMatchesCpu) {
  REQUIRE_GPU();
  int major = 0;
  CUDA_OK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
  if (major != 9) GTEST_SKIP() << "the wgmma attention kernel runs on sm_90 (Hopper) only";
  const AttShape shapes[] = {{1, 1, 4, 1, 64, 0},    {2, 127, 8, 2, 64, 0}, {1, 128, 8, 1, 128, 0},
                             {1, 129, 4, 4, 128, 0}, {1, 383, 8, 2, 64, 0}, {2, 200, 8, 8, 128, 0}};
  uint64_t seed = 900;
  for (const auto& s : shapes) expect_attention_matches_cpu(s, 0, seed += 10, cu::AttentionKernel::wgmma);
  DeviceBuffer<uint16_t> x(4 * 64 * 2 + 1);
  DeviceBuffer<float> lse(4 * 2);
  try {
    cu::attention_forward(x.ptr, lse.ptr, x.ptr, x.ptr, x.ptr, 1, 4, 2, 2, 64, nullptr, nullptr, 2, nullptr, 0,
                          cu::AttentionKernel::wgmma);
    ADD_FAILURE() << "a window with the wgmma kernel forced was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("no sliding window"), std::string::npos) << e.what();
  }
  try {
    cu::attention_forward(x.ptr + 1, lse.ptr, x.ptr + 1, x.ptr + 1, x.ptr + 1, 1, 4, 2, 2, 64, nullptr, nullptr, 0,
                          nullptr, 0, cu::AttentionKernel::wgmma);
    ADD_FAILURE() << "misaligned tensors with the wgmma kernel forced were accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("16-byte aligned"), std::string::npos) << e.what();
  }
}

// Windows inside one key tile (1, 17), of exactly one tile (64), across two (65, 100), on the
// shapes above (ragged T, grouped heads, HS 32 / 64 / 128, the scalar path): key tiles wholly
// before a query tile's window are skipped, and a row may see no key of the first tile it reads.
TEST(CudaOps, AttentionWindowMatchesCpu) {
  REQUIRE_GPU();
  uint64_t seed = 700;
  for (const auto& s : kAttShapes)
    for (const int64_t window : {1, 17, 64, 65, 100})
      if (window < s.T) expect_attention_matches_cpu(s, window, seed += 10);
}

TEST(CudaOps, AttentionCausalAndDeterministic) {
  REQUIRE_GPU();
  const int64_t B = 2, T = 200, NH = 8, NKV = 2, HS = 64;
  const int64_t nq = B * T * NH * HS, nk = B * T * NKV * HS;
  auto q = randn_bf16(nq, 41), k = randn_bf16(nk, 42), v = randn_bf16(nk, 43);
  const auto dout = randn_bf16(nq, 44);
  DeviceBuffer<uint16_t> d_q(to_bits(q)), d_k(to_bits(k)), d_v(to_bits(v)), d_dout(to_bits(dout)), d_out(nq),
      d_dq(nq), d_dk(nk), d_dv(nk);
  DeviceBuffer<float> d_lse(B * NH * T);
  DeviceBuffer<uint8_t> scratch(cu::attention_backward_scratch_bytes(B, T, NH));
  cu::attention_forward(d_out.ptr, d_lse.ptr, d_q.ptr, d_k.ptr, d_v.ptr, B, T, NH, NKV, HS, nullptr);
  const auto out0 = d_out.download();
  std::vector<uint16_t> g[2][3];
  for (int run = 0; run < 2; ++run) {
    d_dq.poison(), d_dk.poison(), d_dv.poison();
    cu::attention_backward(d_dq.ptr, d_dk.ptr, d_dv.ptr, d_dout.ptr, d_out.ptr, d_q.ptr, d_k.ptr, d_v.ptr, d_lse.ptr, B,
                           T, NH, NKV, HS, scratch.ptr, nullptr);
    g[run][0] = d_dq.download(), g[run][1] = d_dk.download(), g[run][2] = d_dv.download();
  }
  for (int i = 0; i < 3; ++i) EXPECT_EQ(first_diff(g[0][i], g[1][i]), -1) << "gradient " << i << " differs between runs";

  // Causality: changing k and v at positions >= 150 leaves every output row t < 150 bit-identical.
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 150; t < T; ++t)
      for (int64_t i = 0; i < NKV * HS; ++i) {
        k[(b * T + t) * NKV * HS + i] = bf16_round(k[(b * T + t) * NKV * HS + i] + 1.0f);
        v[(b * T + t) * NKV * HS + i] = bf16_round(-v[(b * T + t) * NKV * HS + i]);
      }
  d_k.upload(to_bits(k));
  d_v.upload(to_bits(v));
  cu::attention_forward(d_out.ptr, d_lse.ptr, d_q.ptr, d_k.ptr, d_v.ptr, B, T, NH, NKV, HS, nullptr);
  const auto out1 = d_out.download();
  for (int64_t b = 0; b < B; ++b) {
    const size_t lo = size_t(b * T) * NH * HS, hi = lo + size_t(150) * NH * HS;
    EXPECT_TRUE(std::equal(out0.begin() + lo, out0.begin() + hi, out1.begin() + lo)) << "batch " << b;
  }
}

// Window 0 is the kernel without a window: a window >= T gives its bits (every earlier key
// visible), and so does any window for the query rows it does not cut (t < window: their output,
// lse and dq read the same tiles in the same order). A window is local: changing k and v before
// t - window + 1 leaves row t's output and dq bit-identical. Deterministic.
TEST(CudaOps, AttentionWindowBitsAndLocality) {
  REQUIRE_GPU();
  const int64_t B = 2, T = 300, NH = 4, NKV = 2, HS = 64;
  const int64_t nq = B * T * NH * HS, nk = B * T * NKV * HS, row_q = NH * HS, row_k = NKV * HS;
  auto q = randn_bf16(nq, 61), k = randn_bf16(nk, 62), v = randn_bf16(nk, 63);
  const auto dout = randn_bf16(nq, 64);
  DeviceBuffer<uint16_t> d_q(to_bits(q)), d_k(to_bits(k)), d_v(to_bits(v)), d_dout(to_bits(dout)), d_out(nq),
      d_dq(nq), d_dk(nk), d_dv(nk);
  DeviceBuffer<float> d_lse(B * NH * T);
  DeviceBuffer<uint8_t> scratch(cu::attention_backward_scratch_bytes(B, T, NH));
  struct Result {
    std::vector<uint16_t> out, dq, dk, dv;
    std::vector<float> lse;
  };
  auto run = [&](int64_t window, cu::AttentionKernel kernel = cu::AttentionKernel::automatic) {
    d_out.poison(), d_dq.poison(), d_dk.poison(), d_dv.poison();
    cu::attention_forward(d_out.ptr, d_lse.ptr, d_q.ptr, d_k.ptr, d_v.ptr, B, T, NH, NKV, HS, nullptr, nullptr, window,
                          nullptr, 0, kernel);
    cu::attention_backward(d_dq.ptr, d_dk.ptr, d_dv.ptr, d_dout.ptr, d_out.ptr, d_q.ptr, d_k.ptr, d_v.ptr, d_lse.ptr, B,
                           T, NH, NKV, HS, scratch.ptr, nullptr, nullptr, window);
    return Result{d_out.download(), d_dq.download(), d_dk.download(), d_dv.download(), d_lse.download()};
  };
  // Rows [t0, t1) of every batch element of a (B, T, row) tensor, equal in a and b.
  auto same_rows = [&](const std::vector<uint16_t>& a, const std::vector<uint16_t>& b, int64_t row, int64_t t0,
                       int64_t t1) {
    for (int64_t bb = 0; bb < B; ++bb) {
      const size_t lo = size_t((bb * T + t0) * row), hi = size_t((bb * T + t1) * row);
      if (!std::equal(a.begin() + lo, a.begin() + hi, b.begin() + lo)) return false;
    }
    return true;
  };
  const Result none = run(0);
  // A window that cuts rows runs the mma.sync kernel: its uncut rows are that kernel's window-0
  // bits (the automatic choice for window 0 may be the wgmma kernel, whose key tiles differ).
  const Result none_mma = run(0, cu::AttentionKernel::mma_sync);
  for (const int64_t w : {T, T + 1, int64_t{1} << 40}) {
    const Result r = run(w);
    EXPECT_EQ(first_diff(none.out, r.out), -1) << "window " << w;
    EXPECT_EQ(first_diff(f32_bits(none.lse), f32_bits(r.lse)), -1) << "window " << w;
    EXPECT_EQ(first_diff(none.dq, r.dq), -1) << "window " << w;
    EXPECT_EQ(first_diff(none.dk, r.dk), -1) << "window " << w;
    EXPECT_EQ(first_diff(none.dv, r.dv), -1) << "window " << w;
  }
  for (const int64_t w : {40, 64, 130}) {
    const Result r = run(w), again = run(w);
    EXPECT_EQ(first_diff(r.out, again.out), -1) << "window " << w << " not deterministic";
    EXPECT_EQ(first_diff(r.dq, again.dq), -1) << "window " << w << " not deterministic";
    EXPECT_EQ(first_diff(r.dk, again.dk), -1) << "window " << w << " not deterministic";
    EXPECT_EQ(first_diff(r.dv, again.dv), -1) << "window " << w << " not deterministic";
    EXPECT_TRUE(same_rows(none_mma.out, r.out, row_q, 0, w)) << "window " << w << ": rows t < window";
    EXPECT_TRUE(same_rows(none_mma.dq, r.dq, row_q, 0, w)) << "window " << w << ": dq rows t < window";
    EXPECT_FALSE(same_rows(none_mma.out, r.out, row_q, w, T)) << "window " << w << " changed nothing";
  }
  // Locality: k, v changed at positions < 100 leave the rows t >= 100 + w - 1 of a window w.
  const int64_t w = 70;
  const Result before = run(w);
  for (int64_t bb = 0; bb < B; ++bb)
    for (int64_t t = 0; t < 100; ++t)
      for (int64_t i = 0; i < row_k; ++i) {
        k[(bb * T + t) * row_k + i] = bf16_round(k[(bb * T + t) * row_k + i] + 1.0f);
        v[(bb * T + t) * row_k + i] = bf16_round(-v[(bb * T + t) * row_k + i]);
      }
  d_k.upload(to_bits(k));
  d_v.upload(to_bits(v));
  const Result after = run(w);
  EXPECT_TRUE(same_rows(before.out, after.out, row_q, 100 + w - 1, T));
  EXPECT_TRUE(same_rows(before.dq, after.dq, row_q, 100 + w - 1, T));
  EXPECT_FALSE(same_rows(before.out, after.out, row_q, 0, 100 + w - 1));
}

// Ragged prefill (cu_seqlens): sequences of lengths 1, 70, 200, 64 and 129 packed row after row
// give, sequence by sequence, the bits each gets alone (B = 1, T its length): output and lse,
// without a window and with one shorter than every sequence but the first; nothing is written past
// the packed rows. The last sequence's v is NaN: the tiles that reach past the end of the one
// before it must not carry it in (a probability of 0 times NaN), on either kernel.
TEST(CudaOps, AttentionRaggedPrefillEqualsEachSequenceAlone) {
  REQUIRE_GPU();
  const int64_t NH = 6, NKV = 2, HS = 64;
  const std::vector<int32_t> lens = {1, 70, 200, 64, 129};
  std::vector<int32_t> cu = {0};
  for (int32_t n : lens) cu.push_back(cu.back() + n);
  const int64_t rows = cu.back(), B = static_cast<int64_t>(lens.size()), T = 200;
  const auto q = to_bits(randn_bf16(rows * NH * HS, 61)), k = to_bits(randn_bf16(rows * NKV * HS, 62)),
             v = [&] {
               auto bits = to_bits(randn_bf16(rows * NKV * HS, 63));
               std::fill(bits.begin() + cu[lens.size() - 1] * NKV * HS, bits.end(), uint16_t{0x7FC0});
               return bits;
             }();
  DeviceBuffer<uint16_t> d_q(q), d_k(k), d_v(v), d_out(rows * NH * HS + 8);
  DeviceBuffer<float> d_lse(B * NH * T);
  DeviceBuffer<int32_t> d_cu(cu);
  for (const int64_t window : {int64_t{0}, int64_t{50}}) {
    SCOPED_TRACE("window=" + std::to_string(window));
    d_out.poison();
    cu::attention_forward(d_out.ptr, d_lse.ptr, d_q.ptr, d_k.ptr, d_v.ptr, B, T, NH, NKV, HS, nullptr, nullptr, window,
                          d_cu.ptr, rows);
    const auto out = d_out.download();
    const auto lse = d_lse.download();
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = lens[b], r0 = cu[b];
      const auto slice = [&](const std::vector<uint16_t>& x, int64_t width) {
        return std::vector<uint16_t>(x.begin() + r0 * width, x.begin() + (r0 + n) * width);
      };
      DeviceBuffer<uint16_t> a_q(slice(q, NH * HS)), a_k(slice(k, NKV * HS)), a_v(slice(v, NKV * HS)), a_out(n * NH * HS);
      DeviceBuffer<float> a_lse(NH * n);
      cu::attention_forward(a_out.ptr, a_lse.ptr, a_q.ptr, a_k.ptr, a_v.ptr, 1, n, NH, NKV, HS, nullptr, nullptr, window);
      EXPECT_EQ(first_diff(slice(out, NH * HS), a_out.download()), -1) << "sequence " << b;
      const auto al = a_lse.download();
      for (int64_t h = 0; h < NH; ++h)
        for (int64_t t = 0; t < n; ++t)
          ASSERT_EQ(lse[(b * NH + h) * T + t], al[h * n + t]) << "lse of sequence " << b << " head " << h << " row " << t;
    }
    for (int64_t i = rows * NH * HS; i < rows * NH * HS + 8; ++i) ASSERT_EQ(out[i], 0xFFFFu) << "written past the rows";
  }
}

}  // namespace
