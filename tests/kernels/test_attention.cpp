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

// Plain causal attention written head by head; kv head of query head h is h / (NH / NKV).
Vd ref_attention(const Vd& q, const Vd& k, const Vd& v, int64_t B, int64_t T, int64_t NH, int64_t NKV,
                 int64_t HS) {
  Vd out(static_cast<size_t>(B * T * NH * HS), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < NH; ++h) {
      const int64_t kvh = h / (NH / NKV);
      for (int64_t t = 0; t < T; ++t) {
        Vd s(static_cast<size_t>(t + 1));
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          double dot = 0.0;
          for (int64_t i = 0; i < HS; ++i) dot += q[((b * T + t) * NH + h) * HS + i] * k[((b * T + t2) * NKV + kvh) * HS + i];
          s[t2] = dot / std::sqrt(static_cast<double>(HS));
        }
        double sum = 0.0;
        for (auto& x : s) sum += (x = std::exp(x));  // no max subtraction needed in double here
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
