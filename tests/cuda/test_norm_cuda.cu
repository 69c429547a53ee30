// CUDA RMSNorm (src/kernels/cuda/norm.cu) against the CPU op, on model rows and on head rows (the
// q/k norms). Harness and tolerance rule: test_ops_cuda_support.hpp.
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

// Forward and backward of (N, C) rows against the CPU op.
void expect_rmsnorm_matches_cpu(int64_t N, int64_t C, uint64_t seed) {
  SCOPED_TRACE("N=" + std::to_string(N) + " C=" + std::to_string(C));
  const float eps = 1e-5f;
  const auto x = randn_bf16(N * C, ++seed, 2.0f), w = randn_bf16(C, ++seed), dy = randn_bf16(N * C, ++seed);
  const auto dx0 = randn_bf16(N * C, ++seed), dw0 = randn_f32(C, ++seed);
  std::vector<float> out(N * C), rstd(N), dx = dx0, dw = dw0;
  cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps);
  cpu::rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), N, C);

  DeviceBuffer<uint16_t> d_x(to_bits(x)), d_w(to_bits(w)), d_dy(to_bits(dy)), d_out(N * C), d_dx(to_bits(dx0));
  DeviceBuffer<float> d_rstd(N), d_rstd_cpu(rstd), d_dw(dw0);
  DeviceBuffer<uint8_t> scratch(cu::rmsnorm_backward_scratch_bytes(N, C));
  cu::rmsnorm_forward(d_out.ptr, d_rstd.ptr, d_x.ptr, d_w.ptr, N, C, eps, nullptr);
  // The backward reads the CPU's rstd, so both sides start from the same saved statistics.
  cu::rmsnorm_backward(d_dx.ptr, d_dw.ptr, d_dy.ptr, d_x.ptr, d_w.ptr, d_rstd_cpu.ptr, N, C, scratch.ptr, nullptr);
  CUDA_OK(cudaDeviceSynchronize());

  // Sum of squares: C positive terms; out inherits its relative error.
  EXPECT_TRUE(close("out", download_bf16(d_out), out, 1, reassoc(C, abs_of(out))));
  EXPECT_TRUE(close("rstd", d_rstd.download(), rstd, 0, reassoc(C, abs_of(rstd))));
  std::vector<double> mag_dx(N * C), mag_dw(C);
  for (int64_t n = 0; n < N; ++n) {
    double sabs = 0.0;
    for (int64_t c = 0; c < C; ++c) sabs += std::fabs(double(dy[n * C + c]) * w[c] * x[n * C + c] * rstd[n]);
    for (int64_t c = 0; c < C; ++c) {
      const double g = std::fabs(double(dy[n * C + c]) * w[c]), xh = std::fabs(double(x[n * C + c]) * rstd[n]);
      mag_dx[n * C + c] = std::fabs(dx0[n * C + c]) + rstd[n] * (g + xh * sabs / C);
      mag_dw[c] += std::fabs(double(dy[n * C + c]) * x[n * C + c] * rstd[n]);
    }
  }
  for (int64_t c = 0; c < C; ++c) mag_dw[c] += std::fabs(dw0[c]);
  EXPECT_TRUE(close("dinp (+=)", download_bf16(d_dx), dx, 1, reassoc(C + 2, mag_dx)));
  EXPECT_TRUE(close("dweight (+=)", d_dw.download(), dw, 0, reassoc(N + 1, mag_dw)));
}

TEST(CudaOps, RmsNormMatchesCpu) {
  REQUIRE_GPU();
  uint64_t seed = 100;
  for (const auto& s : kNormShapes) expect_rmsnorm_matches_cpu(s.N, s.C, seed += 10);
}

// The q/k norms of a model with qk_norm: (N * heads, HS) rows, most of a warp's 32 lanes idle
// (HS / 8 of them hold a chunk): the attention kernels' head sizes 32, 64, 128, others (48, 80, 8),
// and 36, not a multiple of 8 (the scalar path).
TEST(CudaOps, RmsNormMatchesCpuOnHeadRows) {
  REQUIRE_GPU();
  uint64_t seed = 150;
  for (const auto& s : {RowShape{4 * 300, 32}, RowShape{8 * 77, 64}, RowShape{2 * 130, 128}, RowShape{999, 48},
                        RowShape{640, 80}, RowShape{333, 36}, RowShape{65, 8}})
    expect_rmsnorm_matches_cpu(s.N, s.C, seed += 10);
}

// The forward's arithmetic, modelled on the host in its documented order (ops_common.cuh,
// warp_row_rstd): lane l sums the squares of its 8-element chunks l, l + 32, ... with FMAs, the
// warp adds the 32 partial sums by butterfly, r = 1 / sqrt(ss / C + eps), out = bf16((x * r) * w).
// Every bit must match: the kernel's loads may be batched or reordered, its sums may not.
TEST(CudaOps, RmsNormForwardSumsInItsDocumentedOrder) {
  REQUIRE_GPU();
  uint64_t seed = 610;
  for (const auto& [N, C] : {std::pair<int64_t, int64_t>{1, 4096}, {1, 14336}, {3, 2048}, {5, 1000}, {2, 8200}, {4, 37}}) {
    SCOPED_TRACE("N=" + std::to_string(N) + " C=" + std::to_string(C));
    const auto x = randn_bf16(static_cast<size_t>(N * C), ++seed, 3.0f), w = randn_bf16(static_cast<size_t>(C), ++seed);
    DeviceBuffer<uint16_t> d_x(to_bits(x)), d_w(to_bits(w)), d_out(N * C);
    DeviceBuffer<float> d_rstd(N);
    nvfp4::cuda::rmsnorm_forward(d_out.ptr, d_rstd.ptr, d_x.ptr, d_w.ptr, N, C, 1e-5f, nullptr);
    std::vector<float> want(static_cast<size_t>(N * C)), want_rstd(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n) {
      float lane_ss[32] = {};
      for (int l = 0; l < 32; ++l) {
        for (int64_t c = l * 8; c < C; c += 256) {
          for (int64_t e = c; e < std::min(c + 8, C); ++e) lane_ss[l] = std::fma(x[n * C + e], x[n * C + e], lane_ss[l]);
        }
      }
      for (int o = 16; o > 0; o >>= 1) {
        float next[32];
        for (int l = 0; l < 32; ++l) next[l] = lane_ss[l] + lane_ss[l ^ o];
        std::copy(next, next + 32, lane_ss);
      }
      const float r = 1.0f / std::sqrt(lane_ss[0] / static_cast<float>(C) + 1e-5f);
      want_rstd[n] = r;
      for (int64_t c = 0; c < C; ++c) want[n * C + c] = bf16_round((x[n * C + c] * r) * w[c]);
    }
    EXPECT_EQ(first_diff(f32_bits(d_rstd.download()), f32_bits(want_rstd)), -1) << "rstd";
    EXPECT_EQ(first_diff(f32_bits(download_bf16(d_out)), f32_bits(want)), -1) << "out";
  }
}

TEST(CudaOps, RmsNormBackwardDeterministic) {
  REQUIRE_GPU();
  const int64_t N = 4096, C = 768;
  const auto x = randn_bf16(N * C, 21), w = randn_bf16(C, 22), dy = randn_bf16(N * C, 23);
  std::vector<float> rstd(N, 0.7f);
  const auto dw0 = randn_f32(C, 24);
  DeviceBuffer<uint16_t> d_x(to_bits(x)), d_w(to_bits(w)), d_dy(to_bits(dy)), d_dx(N * C);
  DeviceBuffer<float> d_rstd(rstd), d_dw(C);
  DeviceBuffer<uint8_t> scratch(cu::rmsnorm_backward_scratch_bytes(N, C));
  std::vector<uint16_t> dx[2];
  std::vector<float> dw[2];
  for (int run = 0; run < 2; ++run) {
    CUDA_OK(cudaMemset(d_dx.ptr, 0, N * C * 2));
    d_dw.upload(dw0);
    cu::rmsnorm_backward(d_dx.ptr, d_dw.ptr, d_dy.ptr, d_x.ptr, d_w.ptr, d_rstd.ptr, N, C, scratch.ptr, nullptr);
    dx[run] = d_dx.download();
    dw[run] = d_dw.download();
  }
  EXPECT_EQ(first_diff(dx[0], dx[1]), -1);
  EXPECT_EQ(first_diff(f32_bits(dw[0]), f32_bits(dw[1])), -1);
}

}  // namespace
