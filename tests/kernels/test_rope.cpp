// CPU reference RoPE (src/kernels/cpu/rope.cpp): the gradient check and the HF convention; rope_rows
// (inference: rows at given positions) against rope_forward.
// Harness: test_cpu_ops_support.hpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cpu/ops.hpp"
#include "kernels/test_cpu_ops_support.hpp"
#include "nvfp4/error.hpp"

namespace {

using namespace cpu_ops_test;

// HF Llama: cos/sin of cat(freqs, freqs), q * cos + rotate_half(q) * sin, rotate_half(x) = cat(-x2, x1).
// inv_freq (HS/2) given, or (empty) 1 / theta^(2i/HS).
Vd ref_rope(const Vd& inp, int64_t B, int64_t T, int64_t NH, int64_t HS, double theta, const Vd& inv_freq = {}) {
  Vd out(inp.size());
  const int64_t half = HS / 2;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < NH; ++h)
        for (int64_t d = 0; d < HS; ++d) {
          const int64_t base = ((b * T + t) * NH + h) * HS;
          const double f = inv_freq.empty() ? 1.0 / std::pow(theta, 2.0 * (d % half) / HS) : inv_freq[d % half];
          const double angle = t * f;
          const double rot = d < half ? -inp[base + d + half] : inp[base + d - half];
          out[base + d] = inp[base + d] * std::cos(angle) + rot * std::sin(angle);
        }
  return out;
}

TEST(CpuOpsGrad, Rope) {
  GradCase gc;
  gc.name = "rope";
  gc.inputs = {randn(B * T * NH * HS, 5)};
  gc.input_names = {"inp"};
  gc.K = 8;
  gc.ref = [](const std::vector<Vd>& x) { return ref_rope(x[0], B, T, NH, HS, 10000.0); };
  gc.fwd = [](const std::vector<Vf>& x) {
    Vf out(x[0].size());
    cpu::rope_forward(out.data(), x[0].data(), B, T, NH, HS);
    return out;
  };
  gc.bwd = [](std::vector<Vf>& g, const Vf& dout, const std::vector<Vf>&) {
    cpu::rope_backward(g[0].data(), dout.data(), B, T, NH, HS);
  };
  run_grad_case(gc);
}

// A table of inverse frequencies (RoPE scaling): some divided by 8, some by 2, some kept.
TEST(CpuOpsGrad, RopeInvFreqTable) {
  Vf inv(HS / 2);
  for (int64_t i = 0; i < HS / 2; ++i) inv[i] = 1.0f / std::pow(10000.0f, float(2 * i) / float(HS)) / float(1 << (3 - i % 3));
  GradCase gc;
  gc.name = "rope inv_freq";
  gc.inputs = {randn(B * T * NH * HS, 15)};
  gc.input_names = {"inp"};
  gc.K = 8;
  gc.ref = [inv](const std::vector<Vd>& x) { return ref_rope(x[0], B, T, NH, HS, 0.0, to_double(inv)); };
  gc.fwd = [inv](const std::vector<Vf>& x) {
    Vf out(x[0].size());
    cpu::rope_forward(out.data(), x[0].data(), B, T, NH, HS, inv.data());
    return out;
  };
  gc.bwd = [inv](std::vector<Vf>& g, const Vf& dout, const std::vector<Vf>&) {
    cpu::rope_backward(g[0].data(), dout.data(), B, T, NH, HS, inv.data());
  };
  run_grad_case(gc);
}

// The theta versions are the table versions with the table of ops.hpp: the same bits, forward
// (also in place) and backward (accumulating).
TEST(CpuOpsRope, ThetaIsTheInvFreqTableBitForBit) {
  for (const float theta : {10000.0f, 500000.0f, 1.5f}) {
    for (const int64_t hs : {int64_t{2}, int64_t{8}, int64_t{22}}) {
      constexpr int64_t T9 = 9;
      Vf inv(static_cast<size_t>(hs / 2));
      for (int64_t i = 0; i < hs / 2; ++i) inv[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(hs));
      const Vf x = randn(B * T9 * NH * hs, 61), dout = randn(B * T9 * NH * hs, 62);
      Vf a(x.size()), b(x.size());
      cpu::rope_forward(a.data(), x.data(), B, T9, NH, hs, theta);
      cpu::rope_forward(b.data(), x.data(), B, T9, NH, hs, inv.data());
      EXPECT_TRUE(same_bits(a, b)) << "theta " << theta << " HS " << hs;
      EXPECT_FALSE(same_bits(a, x));  // it rotated something
      Vf c = x;
      cpu::rope_forward(c.data(), c.data(), B, T9, NH, hs, inv.data());
      EXPECT_TRUE(same_bits(c, a));
      Vf da = randn(x.size(), 63), db = da;  // accumulate onto the same nonzero start
      cpu::rope_backward(da.data(), dout.data(), B, T9, NH, hs, theta);
      cpu::rope_backward(db.data(), dout.data(), B, T9, NH, hs, inv.data());
      EXPECT_TRUE(same_bits(da, db)) << "theta " << theta << " HS " << hs;
    }
  }
  Vf y(2 * HS), x(2 * HS, 1.0f);
  EXPECT_THROW(cpu::rope_forward(y.data(), x.data(), 1, 2, 1, HS, static_cast<const float*>(nullptr)), nvfp4::Error);
  EXPECT_THROW(cpu::rope_forward(y.data(), x.data(), 1, 2, 1, HS, -1.0f), nvfp4::Error);
}

TEST(CpuOpsRope, PositionZeroIsIdentityAndNormsArePreserved) {
  constexpr int64_t T6 = 6;
  const Vf x = randn(B * T6 * NH * HS, 51);
  Vf y(x.size());
  cpu::rope_forward(y.data(), x.data(), B, T6, NH, HS);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T6; ++t)
      for (int64_t h = 0; h < NH; ++h) {
        const int64_t base = ((b * T6 + t) * NH + h) * HS;
        double nx = 0.0, ny = 0.0;
        for (int64_t i = 0; i < HS; ++i) {
          nx += double(x[base + i]) * x[base + i];
          ny += double(y[base + i]) * y[base + i];
          if (t == 0) {
            EXPECT_EQ(std::bit_cast<uint32_t>(y[base + i]), std::bit_cast<uint32_t>(x[base + i]));
          }
        }
        EXPECT_NEAR(std::sqrt(ny), std::sqrt(nx), 8 * kEps32 * std::sqrt(nx)) << "b=" << b << " t=" << t;
      }
  // in place gives the same bits
  Vf z = x;
  cpu::rope_forward(z.data(), z.data(), B, T6, NH, HS);
  EXPECT_TRUE(same_bits(z, y));
}

// rotate_half, not interleaved: at t = 1, e_0 rotates by 1 radian into component HS/2 (not 1).
TEST(CpuOpsRope, PairsIWithIPlusHalf) {
  Vf x(2 * HS, 0.0f);  // (B=1, T=2, NH=1, HS)
  x[HS + 0] = 1.0f;    // position 1, component 0
  Vf y(x.size());
  cpu::rope_forward(y.data(), x.data(), 1, 2, 1, HS);
  EXPECT_NEAR(y[HS + 0], std::cos(1.0), 4 * kEps32);
  EXPECT_NEAR(y[HS + HS / 2], std::sin(1.0), 4 * kEps32);
  for (int64_t i = 1; i < HS; ++i)
    if (i != HS / 2) {
      EXPECT_EQ(y[HS + i], 0.0f) << i;
    }
  // the last pair turns slowest: angle = 1 / theta^((HS-2)/HS)
  Vf x2(2 * HS, 0.0f), y2(x2.size());
  x2[HS + HS / 2 - 1] = 1.0f;
  cpu::rope_forward(y2.data(), x2.data(), 1, 2, 1, HS);
  const double a = 1.0 / std::pow(10000.0, double(HS - 2) / HS);
  EXPECT_NEAR(y2[HS + HS / 2 - 1], std::cos(a), 4 * kEps32);
  EXPECT_NEAR(y2[HS + HS - 1], std::sin(a), 4 * kEps32);
  EXPECT_THROW(cpu::rope_forward(y.data(), x.data(), 1, 2, 1, 7), nvfp4::Error);  // odd HS
}

// HF's inv_freq in FP32, as rope_forward computes it: 1 / theta^(2i/HS).
Vf hf_inv_freq(int64_t hs, float theta) {
  Vf f(static_cast<size_t>(hs / 2));
  for (int64_t i = 0; i < hs / 2; ++i)
    f[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(hs));
  return f;
}

// Rows at scattered positions (repeats, out of order) equal rope_forward's rows at those
// positions of one long sequence, bit for bit: the same FP32 angle and the same rotation.
TEST(CpuOpsRope, RowsAtGivenPositionsEqualRopeForward) {
  for (const int64_t hs : {int64_t{8}, int64_t{6}, int64_t{128}}) {
    SCOPED_TRACE("HS=" + std::to_string(hs));
    constexpr int64_t T2 = 300, NH2 = 3, N2 = 57;
    const Vf x = randn(T2 * NH2 * hs, 61 + hs);
    Vf full(x.size());
    cpu::rope_forward(full.data(), x.data(), 1, T2, NH2, hs, 500000.0f);
    const Ints pos = randint(N2, T2, 62);
    Vf rows(static_cast<size_t>(N2 * NH2 * hs)), want(rows.size());
    for (int64_t n = 0; n < N2; ++n)
      for (int64_t e = 0; e < NH2 * hs; ++e) {
        rows[n * NH2 * hs + e] = x[pos[n] * NH2 * hs + e];
        want[n * NH2 * hs + e] = full[pos[n] * NH2 * hs + e];
      }
    const Vf inv_freq = hf_inv_freq(hs, 500000.0f);
    cpu::rope_rows(rows.data(), pos.data(), inv_freq.data(), N2, NH2, hs);
    EXPECT_TRUE(same_bits(rows, want));
  }
  // pos = 0..T-1 of two sequences: rope_forward of the batch
  const Vf x = randn(B * T * NH * HS, 63);
  Vf want(x.size()), got = x;
  cpu::rope_forward(want.data(), x.data(), B, T, NH, HS);
  Ints pos(B * T);
  for (int64_t n = 0; n < B * T; ++n) pos[n] = static_cast<int32_t>(n % T);
  const Vf inv_freq = hf_inv_freq(HS, 10000.0f);
  cpu::rope_rows(got.data(), pos.data(), inv_freq.data(), B * T, NH, HS);
  EXPECT_TRUE(same_bits(got, want));
  // the table is the caller's: doubling it doubles every angle
  Vf twice = inv_freq, got2 = x, at2(x.size());
  for (auto& f : twice) f *= 2.0f;
  Ints pos2(pos);
  for (auto& p : pos2) p *= 2;
  cpu::rope_rows(got2.data(), pos.data(), twice.data(), B * T, NH, HS);
  Vf x2 = x;
  cpu::rope_rows(x2.data(), pos2.data(), inv_freq.data(), B * T, NH, HS);
  EXPECT_TRUE(same_bits(got2, x2)) << "float(p) * 2f == float(2p) * f exactly (powers of two)";
  EXPECT_FALSE(same_bits(got2, got));
  EXPECT_THROW(cpu::rope_rows(got.data(), pos.data(), inv_freq.data(), 1, 1, 7), nvfp4::Error);  // odd HS
}

}  // namespace
