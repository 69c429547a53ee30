// CUDA cross-entropy (src/kernels/cuda/loss.cu) against the CPU op; determinism, bad targets.
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

struct CeShape {
  int64_t N, V;
  bool in_place;
};

const CeShape kCeShapes[] = {{64, 50304, false}, {64, 50304, true}, {37, 257, false}};

TEST(CudaOps, CrossEntropyMatchesCpu) {
  REQUIRE_GPU();
  uint64_t seed = 700;
  for (const auto& s : kCeShapes) {
    SCOPED_TRACE("N=" + std::to_string(s.N) + " V=" + std::to_string(s.V) + (s.in_place ? " in place" : ""));
    const int64_t N = s.N, V = s.V;
    const float dloss_scale = 1.0f / static_cast<float>(N);
    const auto logits = randn_bf16(N * V, ++seed, 2.0f);
    std::mt19937_64 rng(++seed);
    std::vector<int32_t> targets(N);
    for (auto& t : targets) t = static_cast<int32_t>(rng() % V);
    std::vector<float> losses(N), dlogits(N * V, 0.0f);
    cpu::crossentropy_forward(losses.data(), logits.data(), targets.data(), N, V);
    cpu::crossentropy_softmax_backward(dlogits.data(), logits.data(), targets.data(), N, V, dloss_scale);

    DeviceBuffer<uint16_t> d_logits(to_bits(logits)), d_dlogits(N * V);
    DeviceBuffer<int32_t> d_t(targets);
    DeviceBuffer<float> d_losses(N);
    DeviceBuffer<uint32_t> status(std::vector<uint32_t>{0});
    uint16_t* dl = s.in_place ? d_logits.ptr : d_dlogits.ptr;
    cu::crossentropy_forward_backward(d_losses.ptr, dl, d_logits.ptr, d_t.ptr, N, V, dloss_scale, status.ptr, nullptr);
    const auto gl = d_losses.download();
    const auto gd = from_bits(s.in_place ? d_logits.download() : d_dlogits.download());
    EXPECT_EQ(status.download()[0], 0u);

    // losses: log of a V-term sum, K = V against the CPU op (its sequential sum is the loose side).
    EXPECT_TRUE(close("losses vs cpu", gl, losses, 0, reassoc(V, std::vector<double>(N, 1.0))));
    // and against double: a GPU thread sums V / 512 terms in order (plus a rescale per 8), then
    // 5 shuffle levels and 16 warps: K = V / 512 + 64 terms of relative error in the sum,
    // magnitude 1 + |loss|.
    std::vector<double> mag_ref(N);
    std::vector<float> ref_d(N);
    for (int64_t n = 0; n < N; ++n) {
      double m = -INFINITY, sum = 0.0;
      for (int64_t i = 0; i < V; ++i) m = std::max(m, double(logits[n * V + i]));
      for (int64_t i = 0; i < V; ++i) sum += std::exp(double(logits[n * V + i]) - m);
      ref_d[n] = static_cast<float>(std::log(sum) - (logits[n * V + targets[n]] - m));
      mag_ref[n] = 1.0 + std::fabs(ref_d[n]);
    }
    EXPECT_TRUE(close("losses vs double", gl, ref_d, 0, reassoc(double(V / 512 + 64), mag_ref)));
    // dlogits: each p carries the sum's relative error (K = V); the onehot entry is exact.
    std::vector<double> mag_d(N * V);
    for (int64_t i = 0; i < N * V; ++i) {
      const int64_t n = i / V;
      mag_d[i] = std::fabs(dlogits[i] + (i % V == targets[n] ? dloss_scale : 0.0f));  // p * dloss_scale
    }
    EXPECT_TRUE(close("dlogits", gd, dlogits, 1, reassoc(V, mag_d)));
  }
}

TEST(CudaOps, CrossEntropyDeterministicAndFlagsBadTargets) {
  REQUIRE_GPU();
  const int64_t N = 6, V = 50304;
  const auto logits = randn_bf16(N * V, 77, 2.0f);
  std::vector<int32_t> targets = {0, 5, 50303, 17, 9, 1};
  DeviceBuffer<uint16_t> d_logits(to_bits(logits)), d_dl(N * V);
  DeviceBuffer<int32_t> d_t(targets);
  DeviceBuffer<float> d_losses(N);
  DeviceBuffer<uint32_t> status(std::vector<uint32_t>{0});
  cu::crossentropy_forward_backward(d_losses.ptr, d_dl.ptr, d_logits.ptr, d_t.ptr, N, V, 0.5f, status.ptr, nullptr);
  const auto l1 = d_losses.download();
  const auto g1 = d_dl.download();
  cu::crossentropy_forward_backward(d_losses.ptr, d_dl.ptr, d_logits.ptr, d_t.ptr, N, V, 0.5f, status.ptr, nullptr);
  EXPECT_EQ(first_diff(f32_bits(l1), f32_bits(d_losses.download())), -1);
  EXPECT_EQ(first_diff(g1, d_dl.download()), -1);
  EXPECT_EQ(status.download()[0], 0u) << "valid targets must not set the flag";

  targets[1] = static_cast<int32_t>(V);  // one past the end
  targets[4] = -1;
  d_t.upload(targets);
  cu::crossentropy_forward_backward(d_losses.ptr, d_dl.ptr, d_logits.ptr, d_t.ptr, N, V, 0.5f, status.ptr, nullptr);
  EXPECT_EQ(status.download()[0], cu::kStatusBadTarget);
  const auto l2 = d_losses.download();
  const auto g2 = from_bits(d_dl.download());
  EXPECT_TRUE(std::isnan(l2[1]) && std::isnan(l2[4]));
  EXPECT_EQ(l2[0], l1[0]) << "valid rows are unaffected";
  for (int64_t i = 0; i < V; ++i) ASSERT_EQ(g2[1 * V + i], 0.0f) << "bad row's gradient is zero";
}

}  // namespace
