// CUDA SwiGLU, residual, conversions, a linear layer's bias and the inference row ops
// (src/kernels/cuda/elementwise.cu) against the CPU ops.
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

// The GEMM epilogue of the inference path: the product and the sum each rounded on both sides, so
// the BF16 output is the CPU value rounded once: bit for bit. Both paths (aligned, ragged, offset).
TEST(CudaOpsElementwise, ScaleRowsBiasBitExact) {
  REQUIRE_GPU();
  uint64_t seed = 520;
  struct Shape {
    int64_t N, OC, offset;
  };
  for (const auto& s : {Shape{37, 1000, 0}, Shape{5, 13, 0}, Shape{64, 256, 1}}) {
    SCOPED_TRACE("N=" + std::to_string(s.N) + " OC=" + std::to_string(s.OC) + " offset=" + std::to_string(s.offset));
    const int64_t n = s.N * s.OC, off = s.offset;
    const auto in = randn_f32(n + off, ++seed, 30.0f), factor = randn_f32(s.N, ++seed);
    const auto bias = randn_bf16(s.OC + off, ++seed);
    DeviceBuffer<float> d_in(in), d_factor(factor);
    DeviceBuffer<uint16_t> d_bias(to_bits(bias)), d_out(n + off);
    for (const bool with_factor : {false, true})
      for (const bool with_bias : {false, true}) {
        SCOPED_TRACE(std::string("factor ") + (with_factor ? "yes" : "no") + ", bias " + (with_bias ? "yes" : "no"));
        std::vector<float> want(n);
        cpu::scale_rows_bias(want.data(), in.data() + off, with_factor ? factor.data() : nullptr,
                             with_bias ? bias.data() + off : nullptr, s.N, s.OC);
        d_out.poison();
        cu::scale_rows_bias_to_bf16(d_out.ptr + off, d_in.ptr + off, with_factor ? d_factor.ptr : nullptr,
                                    with_bias ? d_bias.ptr + off : nullptr, s.N, s.OC, nullptr);
        const auto got = d_out.download();
        EXPECT_EQ(first_diff(to_bits(want), std::vector<uint16_t>(got.begin() + off, got.end())), -1);
      }
  }
}

// bias_forward: the stored BF16 value plus the FP32 bias in FP32, rounded once: the CPU op on the
// same values, rounded, bit for bit. bias_backward: cpu::bias_backward's column sums up to the
// order of the additions (fixed chunks of 64 rows here), K = N + 1 terms with the old value.
// Aligned, ragged (OC % 8 != 0) and offset (misaligned: the scalar path) shapes; N > 64 * 32
// gives runs of several chunks.
TEST(CudaOpsElementwise, BiasMatchesCpu) {
  REQUIRE_GPU();
  uint64_t seed = 560;
  struct Shape {
    int64_t N, OC, offset;
  };
  for (const auto& s : {Shape{300, 256, 0}, Shape{5000, 32, 0}, Shape{77, 45, 0}, Shape{130, 64, 1}, Shape{1, 8, 0}}) {
    SCOPED_TRACE("N=" + std::to_string(s.N) + " OC=" + std::to_string(s.OC) + " offset=" + std::to_string(s.offset));
    const int64_t N = s.N, OC = s.OC, n = N * OC, off = s.offset;
    const auto x = randn_bf16(n + off, ++seed, 2.0f), dy = randn_bf16(n + off, ++seed);
    const auto bias = randn_f32(OC + off, ++seed), db0 = randn_f32(OC + off, ++seed);
    std::vector<float> want(x.begin() + off, x.end()), db(db0.begin() + off, db0.end());
    cpu::scale_rows_bias(want.data(), want.data(), nullptr, bias.data() + off, N, OC);
    cpu::bias_backward(db.data(), dy.data() + off, N, OC);

    DeviceBuffer<uint16_t> d_x(to_bits(x)), d_dy(to_bits(dy));
    DeviceBuffer<float> d_bias(bias), d_db(db0);
    DeviceBuffer<uint8_t> scratch(cu::bias_backward_scratch_bytes(N, OC));
    cu::bias_forward(d_x.ptr + off, d_bias.ptr + off, N, OC, nullptr);
    cu::bias_backward(d_db.ptr + off, d_dy.ptr + off, N, OC, scratch.ptr, nullptr);
    const auto got = d_x.download();
    EXPECT_EQ(first_diff(to_bits(want), std::vector<uint16_t>(got.begin() + off, got.end())), -1);
    std::vector<double> mag(OC);
    for (int64_t o = 0; o < OC; ++o) {
      mag[o] = std::fabs(db0[o + off]);
      for (int64_t r = 0; r < N; ++r) mag[o] += std::fabs(dy[off + r * OC + o]);
    }
    const auto gdb = d_db.download();
    EXPECT_TRUE(close("dbias (+=)", std::vector<float>(gdb.begin() + off, gdb.end()), db, 0, reassoc(N + 1, mag)));
  }
}

TEST(CudaOpsElementwise, BiasBackwardDeterministic) {
  REQUIRE_GPU();
  const int64_t N = 8192, OC = 384;
  const auto dy = randn_bf16(N * OC, 580);
  const auto db0 = randn_f32(OC, 581);
  DeviceBuffer<uint16_t> d_dy(to_bits(dy));
  DeviceBuffer<float> d_db(OC);
  DeviceBuffer<uint8_t> scratch(cu::bias_backward_scratch_bytes(N, OC));
  std::vector<float> db[2];
  for (int run = 0; run < 2; ++run) {
    d_db.upload(db0);
    cu::bias_backward(d_db.ptr, d_dy.ptr, N, OC, scratch.ptr, nullptr);
    db[run] = d_db.download();
  }
  EXPECT_EQ(first_diff(f32_bits(db[0]), f32_bits(db[1])), -1);
}

TEST(CudaOpsElementwise, GatherRowsBitExactAndFlagsBadRows) {
  REQUIRE_GPU();
  uint64_t seed = 540;
  for (const auto& [C, offset] : {std::pair<int64_t, int64_t>{4096, 0}, {13, 0}, {64, 1}}) {
    SCOPED_TRACE("C=" + std::to_string(C) + " offset=" + std::to_string(offset));
    const int64_t n_in = 50;
    const std::vector<int32_t> rows = {49, 0, 7, 7, 23};
    const auto in = randn_bf16(n_in * C + offset, ++seed);
    std::vector<float> want(rows.size() * C);
    cpu::gather_rows(want.data(), in.data() + offset, rows.data(), static_cast<int64_t>(rows.size()), n_in, C);
    DeviceBuffer<uint16_t> d_in(to_bits(in)), d_out(rows.size() * C + offset);
    DeviceBuffer<int32_t> d_rows(rows);
    DeviceBuffer<uint32_t> status(std::vector<uint32_t>{0});
    cu::gather_rows(d_out.ptr + offset, d_in.ptr + offset, d_rows.ptr, static_cast<int64_t>(rows.size()), n_in, C,
                    status.ptr, nullptr);
    const auto got = d_out.download();
    EXPECT_EQ(first_diff(to_bits(want), std::vector<uint16_t>(got.begin() + offset, got.end())), -1);
    EXPECT_EQ(status.download()[0], 0u);
    // an index outside [0, n_in): a zero row and the status bit, the other rows as before
    d_rows.upload({49, 50, 7, -1, 23});
    cu::gather_rows(d_out.ptr + offset, d_in.ptr + offset, d_rows.ptr, 5, n_in, C, status.ptr, nullptr);
    const auto bad = d_out.download();
    EXPECT_EQ(status.download()[0], cu::kStatusBadRow);
    for (int64_t i = 0; i < 5; ++i)
      for (int64_t c = 0; c < C; ++c) {
        const uint16_t g = bad[offset + i * C + c];
        ASSERT_EQ(g, (i == 1 || i == 3) ? uint16_t{0} : got[offset + i * C + c]) << i << "," << c;
      }
  }
}

}  // namespace
