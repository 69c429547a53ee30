// CPU reference cross-entropy (src/kernels/cpu/loss.cpp): the gradient check, log V, large logits,
// bad targets. Harness: test_cpu_ops_support.hpp.
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

Vd ref_crossentropy(const Vd& logits, const Ints& targets, int64_t N, int64_t V) {
  Vd losses(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) {
    double sum = 0.0;
    for (int64_t i = 0; i < V; ++i) sum += std::exp(logits[n * V + i]);
    losses[n] = std::log(sum) - logits[n * V + targets[n]];
  }
  return losses;
}

TEST(CpuOpsGrad, CrossEntropy) {
  const Ints targets = randint(N, V, 13);
  GradCase gc;
  gc.name = "crossentropy";
  gc.inputs = {randn(N * V, 14, 3.0f)};
  gc.input_names = {"logits"};
  gc.K = V + 8;
  gc.constant_R = true;  // the backward takes one scalar dloss_scale: L = 0.37 * sum(losses)
  gc.ref = [targets](const std::vector<Vd>& x) { return ref_crossentropy(x[0], targets, N, V); };
  gc.fwd = [targets](const std::vector<Vf>& x) {
    Vf losses(N);
    cpu::crossentropy_forward(losses.data(), x[0].data(), targets.data(), N, V);
    return losses;
  };
  gc.bwd = [targets](std::vector<Vf>& g, const Vf& dout, const std::vector<Vf>& x) {
    cpu::crossentropy_softmax_backward(g[0].data(), x[0].data(), targets.data(), N, V, dout[0]);
  };
  run_grad_case(gc);
}

TEST(CpuOpsCrossEntropy, UniformLogitsGiveLogV) {
  for (int64_t vocab : {int64_t{2}, V, int64_t{50257}}) {
    SCOPED_TRACE("V=" + std::to_string(vocab));
    const Vf logits(3 * vocab, 3.75f);
    const Ints targets = {0, static_cast<int32_t>(vocab / 2), static_cast<int32_t>(vocab - 1)};
    Vf losses(3);
    cpu::crossentropy_forward(losses.data(), logits.data(), targets.data(), 3, vocab);
    for (float l : losses) EXPECT_NEAR(l, std::log(double(vocab)), 4 * kEps32 * std::log(double(vocab)) + 1e-6);
    Vf dlogits(logits.size(), 0.0f);
    cpu::crossentropy_softmax_backward(dlogits.data(), logits.data(), targets.data(), 3, vocab, 0.5f);
    for (int64_t n = 0; n < 3; ++n)
      for (int64_t i = 0; i < vocab; ++i) {
        const double want = ((1.0 / vocab) - (i == targets[n] ? 1.0 : 0.0)) * 0.5;
        ASSERT_NEAR(dlogits[n * vocab + i], want, 1e-6 * std::abs(want) + 1e-9) << n << " " << i;
      }
  }
}

// Huge logits: the max subtraction keeps the loss finite.
TEST(CpuOpsCrossEntropy, StableForLargeLogits) {
  const Vf logits = {1000.0f, 999.0f, -1000.0f};
  const Ints target = {1};
  float loss = NAN;
  cpu::crossentropy_forward(&loss, logits.data(), target.data(), 1, 3);
  EXPECT_NEAR(loss, 1.0 + std::log1p(std::exp(-1.0)), 1e-5);
}

TEST(CpuOpsCrossEntropy, TargetOutsideVocabularyNamesThePosition) {
  const Vf logits(4 * V, 0.0f);
  Vf losses(4), dlogits(logits.size());
  for (int32_t bad : {static_cast<int32_t>(V), -1}) {
    const Ints targets = {0, 1, 2, bad};
    try {
      cpu::crossentropy_forward(losses.data(), logits.data(), targets.data(), 4, V);
      ADD_FAILURE() << "no error for target " << bad;
    } catch (const nvfp4::Error& e) {
      EXPECT_NE(std::string(e.what()).find("position 3"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(std::to_string(bad)), std::string::npos) << e.what();
    }
    EXPECT_THROW(cpu::crossentropy_softmax_backward(dlogits.data(), logits.data(), targets.data(), 4, V, 1.0f),
                 nvfp4::Error);
  }
}

}  // namespace
