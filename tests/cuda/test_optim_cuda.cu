// CUDA AdamW and global norm (src/kernels/cuda/optim.cu) against the CPU ops. Harness:
// test_ops_cuda_support.hpp.
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

TEST(CudaOps, AdamwBitExact) {
  REQUIRE_GPU();
  for (const int64_t n : {int64_t{10007}, int64_t{3}}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    auto p = randn_f32(n, 801, 0.1f), m = std::vector<float>(n, 0.0f), v = std::vector<float>(n, 0.0f);
    DeviceBuffer<float> d_p(p), d_m(m), d_v(v), d_g(n);
    DeviceBuffer<uint16_t> d_pb(n);
    for (int64_t step = 1; step <= 12; ++step) {
      const auto g = randn_f32(n, 900 + step, step == 7 ? 1e-6f : 0.5f);
      d_g.upload(g);
      const float lr = 3e-4f * step, wd = step % 2 ? 0.1f : 0.0f;
      cpu::adamw_update(p.data(), g.data(), m.data(), v.data(), n, lr, 0.9f, 0.95f, 1e-8f, wd, step);
      cu::adamw_update(d_p.ptr, d_pb.ptr, d_g.ptr, d_m.ptr, d_v.ptr, n, lr, 0.9f, 0.95f, 1e-8f, wd, step, nullptr);
    }
    EXPECT_EQ(first_diff(f32_bits(p), f32_bits(d_p.download())), -1) << "params";
    EXPECT_EQ(first_diff(f32_bits(m), f32_bits(d_m.download())), -1) << "m";
    EXPECT_EQ(first_diff(f32_bits(v), f32_bits(d_v.download())), -1) << "v";
    EXPECT_EQ(first_diff(to_bits(p), d_pb.download()), -1) << "params_bf16";
  }
}

// The GPU adds in a fixed tree (fast, deterministic), the CPU chunk-serially: equal to double
// rounding, and the GPU's bits identical run to run.
TEST(CudaOps, GlobalNormMatchesCpuAndIsDeterministic) {
  REQUIRE_GPU();
  for (const auto& [n, offset] : {std::pair<int64_t, int64_t>{1000003, 0}, {3 * 4096, 1}, {5, 0}, {0, 0}}) {
    SCOPED_TRACE("n=" + std::to_string(n) + " offset=" + std::to_string(offset));
    const auto g = randn_f32(n + offset, 1000 + n, 1e-2f);
    DeviceBuffer<float> d_g(g);
    DeviceBuffer<double> d_out(1);
    DeviceBuffer<uint8_t> scratch(cu::global_norm_scratch_bytes(n));
    cu::global_norm_squared(d_out.ptr, d_g.ptr + offset, n, scratch.ptr, nullptr);
    const double gpu = std::sqrt(d_out.download()[0]);
    const double ref = cpu::global_norm(g.data() + offset, n);
    EXPECT_LE(std::abs(gpu - ref), 1e-13 * ref) << "gpu " << gpu << " cpu " << ref;
    cu::global_norm_squared(d_out.ptr, d_g.ptr + offset, n, scratch.ptr, nullptr);
    const double again = std::sqrt(d_out.download()[0]);
    EXPECT_EQ(std::memcmp(&gpu, &again, sizeof(double)), 0) << "not deterministic";
  }
}

}  // namespace
