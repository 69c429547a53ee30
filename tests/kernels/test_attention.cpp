// CPU reference attention (src/kernels/cpu/attention.cpp): the gradient check, causality, GQA.
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

// Plain causal attention written head by head; kv head of query head h is h / (NH / NKV). With
// a window w > 0, query t sees the keys t2 with t - t2 < w (and t2 <= t).
Vd ref_attention(const Vd& q, const Vd& k, const Vd& v, int64_t B, int64_t T, int64_t NH, int64_t NKV,
                 int64_t HS, int64_t window = 0) {
  Vd out(static_cast<size_t>(B * T * NH * HS), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < NH; ++h) {
      const int64_t kvh = h / (NH / NKV);
      for (int64_t t = 0; t < T; ++t) {
        Vd s(static_cast<size_t>(t + 1), 0.0);
        auto visible = [&](int64_t t2) { return window == 0 || t - t2 < window; };
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          if (!visible(t2)) continue;
          double dot = 0.0;
          for (int64_t i = 0; i < HS; ++i) dot += q[((b * T + t) * NH + h) * HS + i] * k[((b * T + t2) * NKV + kvh) * HS + i];
          s[t2] = std::exp(dot / std::sqrt(static_cast<double>(HS)));  // no max subtraction needed in double here
        }
        double sum = 0.0;
        for (double x : s) sum += x;
        for (int64_t t2 = 0; t2 <= t; ++t2)
          for (int64_t i = 0; i < HS; ++i)
            out[((b * T + t) * NH + h) * HS + i] += s[t2] / sum * v[((b * T + t2) * NKV + kvh) * HS + i];
      }
    }
  return out;
}

// Grouped (NKV = 2), plain multi-head (NKV = NH) and multi-query (NKV = 1) attention.
TEST(CpuOpsGrad, Attention) {
  for (int64_t nkv : {NKV, NH, int64_t{1}}) {
    GradCase gc;
    gc.name = "attention NH=" + std::to_string(NH) + " NKV=" + std::to_string(nkv);
    gc.inputs = {randn(B * T * NH * HS, 6), randn(B * T * nkv * HS, 7), randn(B * T * nkv * HS, 8)};
    gc.input_names = {"q", "k", "v"};
    gc.K = HS + 3 * T + 8;  // q·k, softmax sum, weighted sum; backward adds a dot over T
    gc.ref = [nkv](const std::vector<Vd>& x) { return ref_attention(x[0], x[1], x[2], B, T, NH, nkv, HS); };
    gc.fwd = [nkv](const std::vector<Vf>& x) {
      Vf out(B * T * NH * HS), att(B * NH * T * T);
      cpu::attention_forward(out.data(), att.data(), x[0].data(), x[1].data(), x[2].data(), B, T, NH, nkv, HS);
      return out;
    };
    gc.bwd = [nkv](std::vector<Vf>& g, const Vf& dout, const std::vector<Vf>& x) {
      Vf out(B * T * NH * HS), att(B * NH * T * T);
      cpu::attention_forward(out.data(), att.data(), x[0].data(), x[1].data(), x[2].data(), B, T, NH, nkv, HS);
      Vf scratch(att.size(), NAN);  // must be overwritten, never read
      cpu::attention_backward(g[0].data(), g[1].data(), g[2].data(), scratch.data(), dout.data(), x[0].data(),
                              x[1].data(), x[2].data(), att.data(), B, T, NH, nkv, HS);
    };
    run_grad_case(gc);
  }
}

// Sliding windows (Mistral): 1 (each query sees itself only), 2, and 4 < T = 5.
TEST(CpuOpsGrad, AttentionSlidingWindow) {
  for (int64_t w : {int64_t{1}, int64_t{2}, int64_t{4}}) {
    GradCase gc;
    gc.name = "attention window=" + std::to_string(w);
    gc.inputs = {randn(B * T * NH * HS, 16), randn(B * T * NKV * HS, 17), randn(B * T * NKV * HS, 18)};
    gc.input_names = {"q", "k", "v"};
    gc.K = HS + 3 * T + 8;
    gc.ref = [w](const std::vector<Vd>& x) { return ref_attention(x[0], x[1], x[2], B, T, NH, NKV, HS, w); };
    gc.fwd = [w](const std::vector<Vf>& x) {
      Vf out(B * T * NH * HS), att(B * NH * T * T);
      cpu::attention_forward(out.data(), att.data(), x[0].data(), x[1].data(), x[2].data(), B, T, NH, NKV, HS, w);
      return out;
    };
    gc.bwd = [w](std::vector<Vf>& g, const Vf& dout, const std::vector<Vf>& x) {
      Vf out(B * T * NH * HS), att(B * NH * T * T);
      cpu::attention_forward(out.data(), att.data(), x[0].data(), x[1].data(), x[2].data(), B, T, NH, NKV, HS, w);
      Vf scratch(att.size(), NAN);  // must be overwritten, never read
      cpu::attention_backward(g[0].data(), g[1].data(), g[2].data(), scratch.data(), dout.data(), x[0].data(),
                              x[1].data(), x[2].data(), att.data(), B, T, NH, NKV, HS, w);
    };
    run_grad_case(gc);
  }
}

// A window of T or more hides nothing: the same bits as no window, forward and backward.
TEST(CpuOpsAttention, WindowOfAtLeastTIsNoWindowBitForBit) {
  constexpr int64_t T7 = 7;
  const Vf q = randn(B * T7 * NH * HS, 71), k = randn(B * T7 * NKV * HS, 72), v = randn(B * T7 * NKV * HS, 73);
  const Vf dout = randn(B * T7 * NH * HS, 74);
  auto run = [&](int64_t window) {
    std::vector<Vf> r = {Vf(q.size()), Vf(B * NH * T7 * T7), Vf(q.size(), 0.0f), Vf(k.size(), 0.0f),
                         Vf(v.size(), 0.0f), Vf(B * NH * T7 * T7)};
    cpu::attention_forward(r[0].data(), r[1].data(), q.data(), k.data(), v.data(), B, T7, NH, NKV, HS, window);
    cpu::attention_backward(r[2].data(), r[3].data(), r[4].data(), r[5].data(), dout.data(), q.data(), k.data(),
                            v.data(), r[1].data(), B, T7, NH, NKV, HS, window);
    return r;
  };
  const auto none = run(0);
  for (int64_t w : {T7, T7 + 5}) {
    const auto got = run(w);
    for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(same_bits(got[i], none[i])) << "window " << w << " output " << i;
  }
  const auto narrower = run(T7 - 1);  // and one less does change the result
  EXPECT_FALSE(same_bits(narrower[0], none[0]));
}

// Window w: the output at t depends on positions t - w + 1 .. t only; the saved probabilities
// are zero outside them and sum to 1; w = 1 returns each position's own value row exactly.
TEST(CpuOpsAttention, SlidingWindowSeesOnlyTheLastPositions) {
  constexpr int64_t T8 = 8, w = 3, tf = 2;
  const Vf q = randn(B * T8 * NH * HS, 81);
  Vf k = randn(B * T8 * NKV * HS, 82), v = randn(B * T8 * NKV * HS, 83);
  Vf out1(B * T8 * NH * HS), att1(B * NH * T8 * T8), out2(out1.size()), att2(att1.size());
  cpu::attention_forward(out1.data(), att1.data(), q.data(), k.data(), v.data(), B, T8, NH, NKV, HS, w);
  for (int64_t r = 0; r < B * NH * T8; ++r) {
    const int64_t t = r % T8;
    double sum = 0.0;
    for (int64_t t2 = 0; t2 < T8; ++t2) {
      if (t2 > t || t - t2 >= w) {
        EXPECT_EQ(att1[r * T8 + t2], 0.0f) << "t " << t << " t2 " << t2;
      } else {
        EXPECT_GT(att1[r * T8 + t2], 0.0f) << "t " << t << " t2 " << t2;
      }
      sum += att1[r * T8 + t2];
    }
    EXPECT_NEAR(sum, 1.0, 8 * T8 * kEps32);
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < NKV * HS; ++i) {
      k[(b * T8 + tf) * NKV * HS + i] += 1.5f;
      v[(b * T8 + tf) * NKV * HS + i] -= 2.0f;
    }
  cpu::attention_forward(out2.data(), att2.data(), q.data(), k.data(), v.data(), B, T8, NH, NKV, HS, w);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T8; ++t) {
      const size_t at = static_cast<size_t>((b * T8 + t) * NH * HS), len = static_cast<size_t>(NH * HS);
      const bool same = std::memcmp(out1.data() + at, out2.data() + at, len * sizeof(float)) == 0;
      EXPECT_EQ(same, t < tf || t >= tf + w) << "b=" << b << " t=" << t;
    }
  Vf out3(out1.size()), att3(att1.size());
  cpu::attention_forward(out3.data(), att3.data(), q.data(), k.data(), v.data(), B, T8, NH, NKV, HS, 1);
  for (int64_t bt = 0; bt < B * T8; ++bt)
    for (int64_t h = 0; h < NH; ++h)
      for (int64_t i = 0; i < HS; ++i)
        ASSERT_EQ(out3[(bt * NH + h) * HS + i], v[(bt * NKV + h / (NH / NKV)) * HS + i]) << bt << " " << h << " " << i;
  EXPECT_THROW(cpu::attention_forward(out3.data(), att3.data(), q.data(), k.data(), v.data(), B, T8, NH, NKV, HS, -1),
               nvfp4::Error);
}

// Changing the keys and values of a future position leaves every earlier output bit-identical
// (and changes the outputs at and after it, so the test sees the change at all).
TEST(CpuOpsAttention, CausalFutureDoesNotLeak) {
  const Vf q = randn(B * T * NH * HS, 31);
  Vf k = randn(B * T * NKV * HS, 32), v = randn(B * T * NKV * HS, 33);
  Vf out1(B * T * NH * HS), att1(B * NH * T * T), out2(out1.size()), att2(att1.size());
  cpu::attention_forward(out1.data(), att1.data(), q.data(), k.data(), v.data(), B, T, NH, NKV, HS);
  const int64_t tf = 3;  // the "future" position
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < NKV * HS; ++i) {
      k[(b * T + tf) * NKV * HS + i] += 1.5f;
      v[(b * T + tf) * NKV * HS + i] -= 2.0f;
    }
  cpu::attention_forward(out2.data(), att2.data(), q.data(), k.data(), v.data(), B, T, NH, NKV, HS);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const size_t at = static_cast<size_t>((b * T + t) * NH * HS), len = static_cast<size_t>(NH * HS);
      const bool same = std::memcmp(out1.data() + at, out2.data() + at, len * sizeof(float)) == 0;
      if (t < tf) {
        EXPECT_TRUE(same) << "b=" << b << " t=" << t << " saw position " << tf;
      } else {
        EXPECT_FALSE(same) << "b=" << b << " t=" << t << " did not see position " << tf;
      }
    }
  // the saved probabilities: exactly zero above the diagonal, each row sums to 1
  for (int64_t r = 0; r < B * NH * T; ++r) {
    const int64_t t = r % T;
    double sum = 0.0;
    for (int64_t t2 = 0; t2 < T; ++t2) {
      if (t2 > t) {
        EXPECT_EQ(att1[r * T + t2], 0.0f);
      }
      sum += att1[r * T + t2];
    }
    EXPECT_NEAR(sum, 1.0, 8 * T * kEps32);
  }
}

// k, v (B, T, NKV, HS) -> (B, T, NH, HS) with each kv head repeated NH/NKV times (HF repeat_kv).
Vf repeat_kv(const Vf& x, int64_t nkv) {
  Vf out(B * T * NH * HS);
  for (int64_t bt = 0; bt < B * T; ++bt)
    for (int64_t h = 0; h < NH; ++h)
      for (int64_t i = 0; i < HS; ++i) out[(bt * NH + h) * HS + i] = x[(bt * nkv + h / (NH / nkv)) * HS + i];
  return out;
}

// Grouped-query attention is multi-head attention on repeated kv heads: the forward is
// bit-identical, and dk/dv are the sums over each group of the multi-head dk/dv.
TEST(CpuOpsAttention, GqaEqualsMhaOnRepeatedHeads) {
  const Vf q = randn(B * T * NH * HS, 41), k = randn(B * T * NKV * HS, 42), v = randn(B * T * NKV * HS, 43);
  const Vf dout = randn(B * T * NH * HS, 44);
  const Vf k_rep = repeat_kv(k, NKV), v_rep = repeat_kv(v, NKV);
  Vf out_g(B * T * NH * HS), att_g(B * NH * T * T), out_m(out_g.size()), att_m(att_g.size()), scratch(att_g.size());
  cpu::attention_forward(out_g.data(), att_g.data(), q.data(), k.data(), v.data(), B, T, NH, NKV, HS);
  cpu::attention_forward(out_m.data(), att_m.data(), q.data(), k_rep.data(), v_rep.data(), B, T, NH, NH, HS);
  EXPECT_TRUE(same_bits(out_g, out_m));
  EXPECT_TRUE(same_bits(att_g, att_m));

  Vf dq_g(q.size(), 0.0f), dk_g(k.size(), 0.0f), dv_g(v.size(), 0.0f);
  Vf dq_m(q.size(), 0.0f), dk_m(k_rep.size(), 0.0f), dv_m(v_rep.size(), 0.0f);
  cpu::attention_backward(dq_g.data(), dk_g.data(), dv_g.data(), scratch.data(), dout.data(), q.data(), k.data(),
                          v.data(), att_g.data(), B, T, NH, NKV, HS);
  cpu::attention_backward(dq_m.data(), dk_m.data(), dv_m.data(), scratch.data(), dout.data(), q.data(),
                          k_rep.data(), v_rep.data(), att_m.data(), B, T, NH, NH, HS);
  EXPECT_TRUE(same_bits(dq_g, dq_m));
  Vd dk_sum(k.size(), 0.0), dv_sum(v.size(), 0.0);
  for (int64_t bt = 0; bt < B * T; ++bt)
    for (int64_t h = 0; h < NH; ++h)
      for (int64_t i = 0; i < HS; ++i) {
        dk_sum[(bt * NKV + h / (NH / NKV)) * HS + i] += dk_m[(bt * NH + h) * HS + i];
        dv_sum[(bt * NKV + h / (NH / NKV)) * HS + i] += dv_m[(bt * NH + h) * HS + i];
      }
  EXPECT_CLOSE(dk_g, dk_sum, T * NH / NKV, "dk");
  EXPECT_CLOSE(dv_g, dv_sum, T * NH / NKV, "dv");
}

TEST(CpuOpsAttention, RejectsHeadsNotAMultipleOfKvHeads) {
  Vf buf(1024);
  EXPECT_THROW(cpu::attention_forward(buf.data(), buf.data(), buf.data(), buf.data(), buf.data(), 1, 2, 3, 2, 4),
               nvfp4::Error);
}

}  // namespace
