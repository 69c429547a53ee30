// CUDA RoPE (src/kernels/cuda/rope.cu) against the CPU op — theta and inverse-frequency-table
// (RoPE scaling) versions — and rope_rows (inference: rows at given positions). Harness and tolerance rule: test_ops_cuda_support.hpp.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "cuda/test_ops_cuda_support.hpp"
#include "kernels/cpu/ops.hpp"
#include "nvfp4/cuda_ops.hpp"
#include "support/cuda_test.hpp"

namespace {

using namespace cuda_ops_test;

// Extra tolerance of a rotated element at position t: |x1| + |x2| times the angle's error.
// The angle t * inv_freq carries the few-ulp error of powf (relative), so its absolute error
// grows with t: 2^-20 * (1 + t) covers 8 ulp of the angle plus 8 ulp of sin/cos.
std::vector<double> rope_extra(const std::vector<float>& x, const HeadShape& s) {
  std::vector<double> e(x.size());
  const int64_t half = s.HS / 2;
  for (int64_t row = 0; row < s.B * s.T * s.NH; ++row) {
    const int64_t t = (row / s.NH) % s.T;
    for (int64_t i = 0; i < half; ++i) {
      const double a = std::fabs(x[row * s.HS + i]) + std::fabs(x[row * s.HS + i + half]);
      e[row * s.HS + i] = e[row * s.HS + i + half] = std::ldexp(1.0, -20) * (1.0 + t) * a;
    }
  }
  return e;
}

TEST(CudaOps, RopeMatchesCpu) {
  REQUIRE_GPU();
  uint64_t seed = 200;
  for (const auto& s : kRopeShapes) {
    SCOPED_TRACE("B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) + " NH=" + std::to_string(s.NH) +
                 " HS=" + std::to_string(s.HS));
    const int64_t n = s.B * s.T * s.NH * s.HS;
    const auto x = randn_bf16(n, ++seed), dy = randn_bf16(n, ++seed), dx0 = randn_bf16(n, ++seed);
    std::vector<float> out(n), dx = dx0;
    cpu::rope_forward(out.data(), x.data(), s.B, s.T, s.NH, s.HS, 10000.0f);
    cpu::rope_backward(dx.data(), dy.data(), s.B, s.T, s.NH, s.HS, 10000.0f);

    DeviceBuffer<uint16_t> d_x(to_bits(x)), d_out(n), d_inplace(to_bits(x)), d_dy(to_bits(dy)), d_dx(to_bits(dx0));
    cu::rope_forward(d_out.ptr, d_x.ptr, s.B, s.T, s.NH, s.HS, 10000.0f, nullptr);
    cu::rope_forward(d_inplace.ptr, d_inplace.ptr, s.B, s.T, s.NH, s.HS, 10000.0f, nullptr);
    cu::rope_backward(d_dx.ptr, d_dy.ptr, s.B, s.T, s.NH, s.HS, 10000.0f, nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    const auto gout = d_out.download();
    EXPECT_TRUE(close("out", from_bits(gout), out, 1, rope_extra(x, s)));
    EXPECT_EQ(first_diff(gout, d_inplace.download()), -1) << "in place differs from out of place";
    // The old dinp enters one FP32 addition, rounded once with the output.
    EXPECT_TRUE(close("dinp (+=)", download_bf16(d_dx), dx, 1, rope_extra(dy, s)));
    // accumulate = false writes dinp without reading it (NaN there stays out of the result):
    // the bits of accumulating onto zeros.
    DeviceBuffer<uint16_t> d_zero(std::vector<uint16_t>(n, 0)), d_nan(std::vector<uint16_t>(n, 0x7FC0));
    cu::rope_backward(d_zero.ptr, d_dy.ptr, s.B, s.T, s.NH, s.HS, 10000.0f, nullptr);
    cu::rope_backward(d_nan.ptr, d_dy.ptr, s.B, s.T, s.NH, s.HS, 10000.0f, nullptr, nullptr, false);
    EXPECT_EQ(first_diff(d_zero.download(), d_nan.download()), -1) << "rope_backward without accumulation";
  }
}

// The table versions: the angle float(t) * inv_freq[i] is the same FP32 product on both sides
// (the table is the caller's), so what may differ is sincosf against glibc (a few ulp) and the
// rotation's contraction: 2^-20 (|x1| + |x2|), as rope_rows. Tables shaped like the models'
// (ModelConfig::rope_inv_freq(), tested in tests/model): plain, linear scaling (every frequency
// divided) and llama3-like bands (kept, blended, divided); the vectorized and scalar paths.
TEST(CudaOpsRope, TableMatchesCpu) {
  REQUIRE_GPU();
  uint64_t seed = 230;
  for (const auto& s : kRopeShapes) {
    for (const int scaling : {0, 1, 2}) {
      const int64_t half = s.HS / 2;
      std::vector<float> inv_freq(half);
      for (int64_t i = 0; i < half; ++i) {
        const float f = 1.0f / std::pow(500000.0f, float(2 * i) / float(s.HS));
        const float band = i < half / 3 ? 1.0f : i < 2 * half / 3 ? 0.6f : 0.125f;
        inv_freq[i] = scaling == 0 ? f : scaling == 1 ? f / 4.0f : f * band;
      }
      SCOPED_TRACE("B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) + " NH=" + std::to_string(s.NH) +
                   " HS=" + std::to_string(s.HS) + " table " + std::to_string(scaling));
      const int64_t n = s.B * s.T * s.NH * s.HS;
      const auto x = randn_bf16(n, ++seed), dy = randn_bf16(n, ++seed), dx0 = randn_bf16(n, ++seed);
      std::vector<float> out(n), dx = dx0;
      cpu::rope_forward(out.data(), x.data(), s.B, s.T, s.NH, s.HS, inv_freq.data());
      cpu::rope_backward(dx.data(), dy.data(), s.B, s.T, s.NH, s.HS, inv_freq.data());

      DeviceBuffer<float> d_f(inv_freq);
      DeviceBuffer<uint16_t> d_x(to_bits(x)), d_out(n), d_inplace(to_bits(x)), d_dy(to_bits(dy)), d_dx(to_bits(dx0));
      DeviceBuffer<uint16_t> d_zero(std::vector<uint16_t>(n, 0)), d_nan(std::vector<uint16_t>(n, 0x7FC0));
      cu::rope_forward(d_out.ptr, d_x.ptr, s.B, s.T, s.NH, s.HS, d_f.ptr, nullptr);
      cu::rope_forward(d_inplace.ptr, d_inplace.ptr, s.B, s.T, s.NH, s.HS, d_f.ptr, nullptr);
      cu::rope_backward(d_dx.ptr, d_dy.ptr, s.B, s.T, s.NH, s.HS, d_f.ptr, nullptr);
      cu::rope_backward(d_zero.ptr, d_dy.ptr, s.B, s.T, s.NH, s.HS, d_f.ptr, nullptr);
      cu::rope_backward(d_nan.ptr, d_dy.ptr, s.B, s.T, s.NH, s.HS, d_f.ptr, nullptr, nullptr, false);
      auto extra = [&](const std::vector<float>& v) {
        std::vector<double> e(n);
        for (int64_t r = 0; r < n / s.HS; ++r)
          for (int64_t i = 0; i < half; ++i)
            e[r * s.HS + i] = e[r * s.HS + i + half] =
                std::ldexp(1.0, -20) * (std::fabs(v[r * s.HS + i]) + std::fabs(v[r * s.HS + i + half]));
        return e;
      };
      const auto gout = d_out.download();
      EXPECT_TRUE(close("out", from_bits(gout), out, 1, extra(x)));
      EXPECT_EQ(first_diff(gout, d_inplace.download()), -1) << "in place differs from out of place";
      EXPECT_TRUE(close("dinp (+=)", download_bf16(d_dx), dx, 1, extra(dy)));
      EXPECT_EQ(first_diff(d_zero.download(), d_nan.download()), -1) << "rope_backward without accumulation";
    }
  }
}

// The table of 1 / theta^(2i/HS) computed on the host gives what the theta version computes with
// the device's powf: the same rotation up to powf's few ulp (rope_extra's bound), both outputs
// rounded to BF16 (R = 2: two roundings may fall on either side of a BF16 midpoint).
TEST(CudaOpsRope, TableOfThetaMatchesTheta) {
  REQUIRE_GPU();
  const HeadShape s{2, 100, 4, 64};
  const int64_t n = s.B * s.T * s.NH * s.HS;
  std::vector<float> inv_freq(s.HS / 2);
  for (int64_t i = 0; i < s.HS / 2; ++i) inv_freq[i] = 1.0f / std::pow(10000.0f, float(2 * i) / float(s.HS));
  const auto x = randn_bf16(n, 240);
  DeviceBuffer<float> d_f(inv_freq);
  DeviceBuffer<uint16_t> d_x(to_bits(x)), d_theta(n), d_table(n);
  cu::rope_forward(d_theta.ptr, d_x.ptr, s.B, s.T, s.NH, s.HS, 10000.0f, nullptr);
  cu::rope_forward(d_table.ptr, d_x.ptr, s.B, s.T, s.NH, s.HS, d_f.ptr, nullptr);
  const auto theta = download_bf16(d_theta);
  EXPECT_TRUE(close("table vs theta", download_bf16(d_table), theta, 2, rope_extra(x, s)));
}

// rope_rows: the angle float(pos) * inv_freq[i] is the same FP32 product on both sides; what may
// differ is sincosf against glibc (a few ulp) and the rotation's contraction, 2^-20 (|x1| + |x2|).
TEST(CudaOpsRope, RowsMatchCpu) {
  REQUIRE_GPU();
  struct RowsShape {
    int64_t N, NH, HS;
  };
  uint64_t seed = 250;
  for (const auto& s : {RowsShape{37, 8, 128}, RowsShape{5, 3, 6}, RowsShape{300, 4, 80}, RowsShape{1, 32, 64}}) {
    SCOPED_TRACE("N=" + std::to_string(s.N) + " NH=" + std::to_string(s.NH) + " HS=" + std::to_string(s.HS));
    const int64_t n = s.N * s.NH * s.HS, half = s.HS / 2;
    const auto x = randn_bf16(n, ++seed);
    std::mt19937_64 rng(++seed);
    std::vector<int32_t> pos(s.N);
    for (auto& p : pos) p = static_cast<int32_t>(rng() % 8192);
    std::vector<float> inv_freq(half);
    for (int64_t i = 0; i < half; ++i)  // some scaled frequencies, as a rope-scaling table would hold
      inv_freq[i] = (i % 3 == 0 ? 0.125f : 1.0f) / std::pow(500000.0f, float(2 * i) / float(s.HS));
    std::vector<float> want = x;
    cpu::rope_rows(want.data(), pos.data(), inv_freq.data(), s.N, s.NH, s.HS);
    DeviceBuffer<uint16_t> d_x(to_bits(x));
    DeviceBuffer<int32_t> d_pos(pos);
    DeviceBuffer<float> d_f(inv_freq);
    cu::rope_rows(d_x.ptr, d_pos.ptr, d_f.ptr, s.N, s.NH, s.HS, nullptr);
    std::vector<double> extra(n);
    for (int64_t r = 0; r < s.N * s.NH; ++r)
      for (int64_t i = 0; i < half; ++i)
        extra[r * s.HS + i] = extra[r * s.HS + i + half] =
            std::ldexp(1.0, -20) * (std::fabs(x[r * s.HS + i]) + std::fabs(x[r * s.HS + i + half]));
    EXPECT_TRUE(close("rope_rows", download_bf16(d_x), want, 1, extra));
  }
}

}  // namespace
