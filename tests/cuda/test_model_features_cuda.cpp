// The CUDA model's Llama-family features (include/nvfp4/model.hpp) against the CPU model, each
// alone and all together: a head size other than d_model / n_head (wider and narrower than the
// model), q/k/v biases, q/k norms, tied embeddings, a sliding window, RoPE scaling (linear,
// llama3). Per feature: the loss and every parameter gradient on the same BF16-representable
// weights, the logits without targets, determinism, and AdamW steps on one batch tracking the
// CPU model's. Skips cleanly without a GPU.
//
// Tolerances: those of test_model_cuda.cpp (LossAndEveryGradientMatchTheCpuModel), whose file
// comment gives the reasoning: BF16 activations and activation gradients (unit roundoff
// u = 2^-9), a few dozen roundings from the loss to the first layer: every gradient tensor's
// relative L2 error < 32 u, the loss within 8 u relative. The training steps: within 5 % of
// the CPU's loss at every step, as TrainingTracksTheCpuAndIsDeterministic.
//
// Head sizes: the CUDA attention kernels take 32, 64 and 128 (the CPU test's head size 12 is not
// one of them), so the base model here has head size 32 and the head_dim features use 64 and 32.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "format/scalar.hpp"
#include "kernels/cpu/ops.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/model.hpp"
#include "nvfp4/model_cuda.hpp"
#include "support/cuda_test.hpp"

namespace {

using nvfp4::model::CpuModel;
using nvfp4::model::CudaModel;
using nvfp4::model::ModelConfig;
using nvfp4::model::RopeScaling;

constexpr double kU = 1.0 / 512.0;  // BF16 unit roundoff

ModelConfig base() {
  ModelConfig c;
  c.n_layer = 2;
  c.d_model = 128;
  c.n_head = 4;     // head size 32
  c.n_kv_head = 2;  // grouped-query attention
  c.d_ffn = 256;
  c.vocab = 257;
  c.seq_len = 160;  // three attention tiles of 64
  c.init_std = 0.05f;
  return c;
}

struct Feature {
  std::string name;
  ModelConfig config;
};
void PrintTo(const Feature& f, std::ostream* os) { *os << f.name << " " << f.config.to_json(); }

ModelConfig with(const std::function<void(ModelConfig&)>& edit) {
  ModelConfig c = base();
  edit(c);
  c.validate();
  return c;
}

// llama3 scaling over head size 32, theta 10000, a 64-position original context: the RoPE pairs
// fall in all three bands (wavelength < 16 kept, 16 .. 64 blended, > 64 divided by the factor).
void llama3(ModelConfig& c) { c.rope_scaling = {RopeScaling::llama3, 8.0f, 1.0f, 4.0f, 64}; }

// Window 40 < the 64-row tile: at T = 160 the last query tile (rows 128..159) skips key tile 0,
// and its later rows see no key of tile 1 (the first tile they read).
constexpr int kWindow = 40;

std::vector<Feature> features() {
  return {
      {"head_dim_wide", with([](ModelConfig& c) { c.head_dim = 64; })},  // 4 x 64 = 256 > d_model 128
      {"head_dim_narrow", with([](ModelConfig& c) { c.n_head = 2, c.n_kv_head = 1, c.head_dim = 32; })},  // 64 < 128
      {"attention_bias", with([](ModelConfig& c) { c.attention_bias = true; })},
      {"qk_norm", with([](ModelConfig& c) { c.qk_norm = true; })},
      {"tie_embeddings", with([](ModelConfig& c) { c.tie_embeddings = true; })},
      {"sliding_window", with([](ModelConfig& c) { c.sliding_window = kWindow; })},
      {"rope_linear", with([](ModelConfig& c) { c.rope_scaling = {RopeScaling::linear, 4.0f}; })},
      {"rope_llama3", with(llama3)},
      {"all", with([](ModelConfig& c) {
         c.head_dim = 64;
         c.attention_bias = true;
         c.qk_norm = true;
         c.tie_embeddings = true;
         c.sliding_window = kWindow;
         llama3(c);
       })},
  };
}

std::vector<int32_t> tokens(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % 257);
  return t;
}

// The CPU model initialized, its vector parameters (norm gains from 1, biases from 0) moved to
// random values near their start — a zero bias or a unit gain is a special point where a wrong
// formula can still give the right number — and every parameter rounded to BF16, so that both
// models hold exactly the same weights.
CpuModel cpu_model(const ModelConfig& c, uint64_t seed) {
  CpuModel m(c);
  nvfp4::model::init_params(c, m.params(), seed);
  std::mt19937_64 rng(seed + 100);
  std::normal_distribution<float> nd(0.0f, 0.3f);
  for (const auto& s : m.specs()) {
    if (s.shape.size() != 1) continue;
    for (int64_t i = 0; i < s.numel; ++i) m.params()[s.offset + i] += nd(rng);
  }
  for (float& p : m.params()) p = nvfp4::fmt::bf16_round(p);
  return m;
}

// sqrt(sum (a - b)^2 / sum b^2) over n values.
double relative_l2(const float* a, const float* b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - b[i];
    num += d * d;
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

class CudaModelFeature : public ::testing::TestWithParam<Feature> {};

TEST_P(CudaModelFeature, LossAndEveryGradientMatchTheCpuModel) {
  REQUIRE_GPU();
  const ModelConfig& c = GetParam().config;
  CpuModel cpu = cpu_model(c, 4);
  CudaModel gpu(c);
  gpu.set_params(cpu.params());
  ASSERT_EQ(gpu.num_params(), static_cast<int64_t>(cpu.params().size()));
  for (int T : {160, 50}) {  // three tiles (the window skips one), and a ragged single tile
    SCOPED_TRACE("T = " + std::to_string(T));
    const int B = 3;
    const auto in = tokens(size_t(B) * T, 1), tgt = tokens(size_t(B) * T, 2);
    cpu.zero_grad();
    gpu.zero_grad();
    const double lc = cpu.forward(in.data(), tgt.data(), B, T);
    const double lg = gpu.forward(in.data(), tgt.data(), B, T);
    cpu.backward();
    gpu.backward();
    EXPECT_NEAR(lg, lc, 8 * kU * lc);
    std::vector<float> g(cpu.grads().size());
    gpu.get_grads(g);
    double worst = 0;
    std::string worst_name;
    for (const auto& s : cpu.specs()) {
      const double rel = relative_l2(g.data() + s.offset, cpu.grads().data() + s.offset, s.numel);
      EXPECT_LT(rel, 32 * kU) << s.name;
      if (rel > worst) worst = rel, worst_name = s.name;
    }
    std::printf("%s T=%d loss cpu %.6f gpu %.6f; worst gradient relative L2 error %.4f (%s)\n",
                GetParam().name.c_str(), T, lc, lg, worst, worst_name.c_str());
  }
  // Logits without targets.
  const auto in = tokens(160, 3);
  cpu.forward(in.data(), nullptr, 1, 160);
  gpu.forward(in.data(), nullptr, 1, 160);
  const auto lg = gpu.logits();
  ASSERT_EQ(lg.size(), cpu.logits().size());
  EXPECT_LT(relative_l2(lg.data(), cpu.logits().data(), static_cast<int64_t>(lg.size())), 32 * kU);
}

TEST_P(CudaModelFeature, GradientsAreDeterministic) {
  REQUIRE_GPU();
  const ModelConfig& c = GetParam().config;
  const CpuModel cpu = cpu_model(c, 5);
  CudaModel gpu(c);
  gpu.set_params(cpu.params());
  const int B = 2, T = 150;
  const auto in = tokens(size_t(B) * T, 6), tgt = tokens(size_t(B) * T, 7);
  std::vector<float> g[2];
  float loss[2];
  for (int run = 0; run < 2; ++run) {
    gpu.zero_grad();
    loss[run] = gpu.forward(in.data(), tgt.data(), B, T);
    gpu.backward();
    g[run].resize(cpu.params().size());
    gpu.get_grads(g[run]);
  }
  EXPECT_EQ(std::memcmp(&loss[0], &loss[1], 4), 0);
  EXPECT_EQ(std::memcmp(g[0].data(), g[1].data(), g[0].size() * 4), 0);
}

// AdamW on one batch, both models from the same weights: the CUDA run's loss follows the CPU's.
// lr 1e-3 for 6 steps keeps the loss in the range where 5 % is meaningful: measured on the CPU
// (this machine, 2026), every feature's loss falls from 5.68 .. 5.77 to 2.38 .. 4.19.
TEST_P(CudaModelFeature, TrainingStepsTrackTheCpu) {
  REQUIRE_GPU();
  const ModelConfig& c = GetParam().config;
  CpuModel cpu = cpu_model(c, 8);
  CudaModel gpu(c);
  gpu.set_params(cpu.params());
  const size_t P = cpu.params().size();
  std::vector<float> m(P, 0.0f), v(P, 0.0f);
  const int B = 2, T = 120;
  const auto in = tokens(size_t(B) * T, 9), tgt = tokens(size_t(B) * T, 10);
  constexpr float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, wd = 0.1f;
  std::vector<float> lc, lg;
  for (int step = 1; step <= 6; ++step) {
    cpu.zero_grad();
    gpu.zero_grad();
    lc.push_back(cpu.forward(in.data(), tgt.data(), B, T));
    lg.push_back(gpu.forward(in.data(), tgt.data(), B, T));
    cpu.backward();
    gpu.backward();
    for (const auto& s : cpu.specs()) {
      nvfp4::cpu::adamw_update(cpu.params().data() + s.offset, cpu.grads().data() + s.offset, m.data() + s.offset,
                               v.data() + s.offset, s.numel, lr, beta1, beta2, eps, s.decay ? wd : 0.0f, step);
    }
    gpu.adamw(lr, beta1, beta2, eps, wd, step);
  }
  for (size_t i = 0; i < lc.size(); ++i) EXPECT_NEAR(lg[i], lc[i], 0.05 * lc[i]) << "step " << i + 1;
  EXPECT_LT(lc.back(), lc.front() - 0.5f) << "the CPU model did not learn the batch";
  EXPECT_LT(lg.back(), lg.front() - 0.5f) << "the CUDA model did not learn the batch";
  std::printf("%s: loss cpu %.4f -> %.4f, cuda %.4f -> %.4f\n", GetParam().name.c_str(), lc.front(), lc.back(),
              lg.front(), lg.back());
}

INSTANTIATE_TEST_SUITE_P(Features, CudaModelFeature, ::testing::ValuesIn(features()),
                         [](const ::testing::TestParamInfo<Feature>& i) { return i.param.name; });

// What the kernels cannot do stays an error naming it: head sizes other than 32, 64, 128.
TEST(CudaModelFeatures, RejectsAHeadDimTheKernelsDoNotTake) {
  REQUIRE_GPU();
  ModelConfig c = base();
  c.head_dim = 48;
  try {
    CudaModel m(c);
    ADD_FAILURE() << "head_dim 48 was accepted";
  } catch (const nvfp4::Error& e) {
    EXPECT_NE(std::string(e.what()).find("48"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("head_dim"), std::string::npos) << e.what();
  }
}

}  // namespace
