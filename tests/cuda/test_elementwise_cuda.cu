// CUDA SwiGLU, residual and conversions (src/kernels/cuda/elementwise.cu) against the CPU ops.
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

TEST(CudaOps, SwigluMatchesCpu) {
  REQUIRE_GPU();
  uint64_t seed = 400;
  // offset 1: misaligned pointers and a ragged tail take the scalar path.
  for (const auto& [n, offset] : {std::pair<int64_t, int64_t>{65536, 0}, {1003, 1}, {5, 0}}) {
    SCOPED_TRACE("n=" + std::to_string(n) + " offset=" + std::to_string(offset));
    const auto gate = randn_bf16(n, ++seed, 3.0f), up = randn_bf16(n, ++seed), dy = randn_bf16(n, ++seed);
    std::vector<float> out(n), dg(n, 0.0f), du(n, 0.0f);
    cpu::swiglu_forward(out.data(), gate.data(), up.data(), n);
    cpu::swiglu_backward(dg.data(), du.data(), dy.data(), gate.data(), up.data(), n);
    auto pad = [&](const std::vector<float>& x) {
      std::vector<uint16_t> b(n + offset, 0);
      const auto bits = to_bits(x);
      std::copy(bits.begin(), bits.end(), b.begin() + offset);
      return b;
    };
    DeviceBuffer<uint16_t> d_g(pad(gate)), d_u(pad(up)), d_dy(pad(dy)), d_out(n + offset), d_dg(n + offset),
        d_du(n + offset);
    cu::swiglu_forward(d_out.ptr + offset, d_g.ptr + offset, d_u.ptr + offset, n, nullptr);
    cu::swiglu_backward(d_dg.ptr + offset, d_du.ptr + offset, d_dy.ptr + offset, d_g.ptr + offset, d_u.ptr + offset, n,
                        nullptr);
    auto get = [&](const DeviceBuffer<uint16_t>& d) {
      auto x = download_bf16(d);
      return std::vector<float>(x.begin() + offset, x.end());
    };
    // Elementwise: K = 16 covers a few ulp of expf and the 1 / (1 + e) chain.
    std::vector<double> mag_g(n);
    for (int64_t i = 0; i < n; ++i) mag_g[i] = std::fabs(double(dy[i]) * up[i]) * (1.0 + std::fabs(gate[i]));
    EXPECT_TRUE(close("out", get(d_out), out, 1, reassoc(16, abs_of(out))));
    EXPECT_TRUE(close("dgate", get(d_dg), dg, 1, reassoc(16, mag_g)));
    EXPECT_TRUE(close("dup", get(d_du), du, 1, reassoc(16, abs_of(du))));
  }
}

TEST(CudaOps, ResidualAndConversionsBitExact) {
  REQUIRE_GPU();
  uint64_t seed = 500;
  for (const auto& [n, offset] : {std::pair<int64_t, int64_t>{4096, 0}, {1003, 1}, {3, 0}}) {
    SCOPED_TRACE("n=" + std::to_string(n) + " offset=" + std::to_string(offset));
    const auto a = randn_bf16(n + offset, ++seed), b = randn_bf16(n + offset, ++seed);
    const auto f = randn_f32(n + offset, ++seed);
    DeviceBuffer<uint16_t> d_a(to_bits(a)), d_b(to_bits(b)), d_out(n + offset), d_f2b(n + offset);
    DeviceBuffer<float> d_f(f), d_b2f(n + offset);
    cu::residual_forward(d_out.ptr + offset, d_a.ptr + offset, d_b.ptr + offset, n, nullptr);
    cu::residual_forward(d_a.ptr + offset, d_a.ptr + offset, d_b.ptr + offset, n, nullptr);  // in place
    cu::convert_f32_to_bf16(d_f2b.ptr + offset, d_f.ptr + offset, n, nullptr);
    cu::convert_bf16_to_f32(d_b2f.ptr + offset, d_b.ptr + offset, n, nullptr);
    const auto out = d_out.download(), inplace = d_a.download(), f2b = d_f2b.download();
    const auto b2f = d_b2f.download();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t j = i + offset;
      std::vector<float> sum(1);
      cpu::residual_forward(sum.data(), &a[j], &b[j], 1);
      ASSERT_EQ(out[j], bf16_encode(sum[0])) << "residual at " << i;
      ASSERT_EQ(inplace[j], out[j]) << "in-place residual at " << i;
      ASSERT_EQ(f2b[j], bf16_encode(f[j])) << "f32 -> bf16 at " << i;
      ASSERT_EQ(std::memcmp(&b2f[j], &b[j], 4), 0) << "bf16 -> f32 at " << i;
    }
  }
}

}  // namespace
