// The CPU reference model: configuration, parameter layout, whole-model gradients (directional
// finite differences, per parameter tensor), the linear-layer hook, determinism, and that a
// few optimizer steps fit a batch.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kernels/cpu/ops.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/model.hpp"

namespace {

using nvfp4::model::CpuModel;
using nvfp4::model::ModelConfig;

ModelConfig tiny() {
  ModelConfig c;
  c.n_layer = 2;
  c.d_model = 32;
  c.n_head = 4;
  c.n_kv_head = 2;  // grouped-query attention exercised
  c.d_ffn = 48;
  c.vocab = 23;
  c.seq_len = 8;
  c.init_std = 0.2f;  // large enough that every tensor's gradient is well above FP32 noise
  return c;
}

std::vector<int32_t> random_tokens(size_t n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return t;
}

TEST(ModelConfig, JsonRoundTripAndValidation) {
  ModelConfig c = tiny();
  const ModelConfig back = ModelConfig::from_json(c.to_json());
  EXPECT_EQ(back.to_json(), c.to_json());
  EXPECT_EQ(ModelConfig{}.ffn(), 704);  // 8/3 * 256 = 682.7 -> multiple of 64
  auto expect_error = [](const std::string& json, const std::string& needle) {
    try {
      ModelConfig::from_json(json);
      ADD_FAILURE() << "accepted " << json;
    } catch (const nvfp4::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(R"({"n_layer": 2, "heads": 4})", "unknown key \"heads\"");
  expect_error(R"({"d_model": 100})", "d_model = 100");
  expect_error(R"({"n_head": 3})", "n_head = 3");
  expect_error(R"({"n_kv_head": 3})", "n_kv_head = 3");
  expect_error(R"({"n_layer": "two"})", "must be an integer");
  expect_error("{nope", "not valid JSON");
}

TEST(ModelParams, NamesAndShapesAreHuggingFaceLlamas) {
  const ModelConfig c = tiny();
  const auto specs = nvfp4::model::param_specs(c);
  ASSERT_EQ(specs.size(), 1u + 9u * 2u + 2u);
  std::map<std::string, std::vector<int64_t>> want = {
      {"model.embed_tokens.weight", {23, 32}},
      {"model.layers.1.input_layernorm.weight", {32}},
      {"model.layers.1.self_attn.q_proj.weight", {32, 32}},
      {"model.layers.1.self_attn.k_proj.weight", {16, 32}},  // 2 kv heads x head size 8
      {"model.layers.1.self_attn.v_proj.weight", {16, 32}},
      {"model.layers.1.self_attn.o_proj.weight", {32, 32}},
      {"model.layers.1.post_attention_layernorm.weight", {32}},
      {"model.layers.1.mlp.gate_proj.weight", {48, 32}},
      {"model.layers.1.mlp.up_proj.weight", {48, 32}},
      {"model.layers.1.mlp.down_proj.weight", {32, 48}},
      {"model.norm.weight", {32}},
      {"lm_head.weight", {23, 32}},
  };
  int64_t offset = 0;
  for (const auto& s : specs) {
    EXPECT_EQ(s.offset, offset) << s.name;
    offset += s.numel;
    if (want.count(s.name)) {
      EXPECT_EQ(s.shape, want[s.name]) << s.name;
    }
    EXPECT_EQ(s.decay, s.shape.size() == 2) << s.name;
  }
  EXPECT_EQ(offset, c.num_params());
  EXPECT_EQ(c.num_params(), 2 * 23 * 32 + 2 * (2 * 32 + 32 * 32 * 2 + 16 * 32 * 2 + 3 * 48 * 32) + 32);
}

TEST(ModelParams, InitIsDeterministicAndScaled) {
  const ModelConfig c = tiny();
  CpuModel a(c), b(c), other(c);
  nvfp4::model::init_params(c, a.params(), 7);
  nvfp4::model::init_params(c, b.params(), 7);
  nvfp4::model::init_params(c, other.params(), 8);
  EXPECT_TRUE(std::equal(a.params().begin(), a.params().end(), b.params().begin()));
  EXPECT_FALSE(std::equal(a.params().begin(), a.params().end(), other.params().begin()));
  auto rms = [&](const std::string& name) {
    const auto& s = a.spec(name);
    double sum = 0;
    for (int64_t i = 0; i < s.numel; ++i) sum += double(a.params()[s.offset + i]) * a.params()[s.offset + i];
    return std::sqrt(sum / s.numel);
  };
  EXPECT_NEAR(rms("model.embed_tokens.weight"), 0.2, 0.02);
  EXPECT_NEAR(rms("model.layers.0.mlp.down_proj.weight"), 0.2 / std::sqrt(4.0), 0.02);  // 1/sqrt(2L)
  EXPECT_EQ(rms("model.norm.weight"), 1.0);
  EXPECT_THROW(a.spec("model.layers.9.mlp.up_proj.weight"), nvfp4::Error);
}

// Directional derivative along a random direction inside one tensor, analytic vs central
// difference. FP32 forward: the step is chosen so the loss moves by ~1e-3, far above FP32
// rounding of the loss (~1e-7 relative); truncation error is O(h^2). A wrong gradient is off
// by O(1), far outside the 2 % tolerance.
TEST(ModelGradients, EveryTensorMatchesFiniteDifferences) {
  const ModelConfig c = tiny();
  CpuModel m(c);
  nvfp4::model::init_params(c, m.params(), 3);
  const int B = 2, T = 7;
  const auto tokens = random_tokens(B * T, c.vocab, 11), targets = random_tokens(B * T, c.vocab, 12);
  m.zero_grad();
  m.forward(tokens.data(), targets.data(), B, T);
  m.backward();
  const std::vector<float> grad(m.grads().begin(), m.grads().end());
  std::mt19937_64 rng(5);
  std::normal_distribution<double> nd;
  int checked = 0;
  for (const auto& s : m.specs()) {
    std::vector<double> d(static_cast<size_t>(s.numel));
    double analytic = 0, norm = 0;
    for (int64_t i = 0; i < s.numel; ++i) {
      d[i] = nd(rng);
      analytic += d[i] * grad[s.offset + i];
      norm += d[i] * d[i];
    }
    // Step so that |h * analytic| ~ 1e-3 (bounded for tiny gradients).
    const double h = std::min(1e-2 / std::sqrt(norm), 1e-3 / std::max(std::abs(analytic), 1e-3));
    const std::vector<float> saved(m.params().begin() + s.offset, m.params().begin() + s.offset + s.numel);
    auto loss_at = [&](double sign) {
      for (int64_t i = 0; i < s.numel; ++i) m.params()[s.offset + i] = static_cast<float>(saved[i] + sign * h * d[i]);
      return static_cast<double>(m.forward(tokens.data(), targets.data(), B, T));
    };
    const double numeric = (loss_at(1) - loss_at(-1)) / (2 * h);
    std::copy(saved.begin(), saved.end(), m.params().begin() + s.offset);
    EXPECT_NEAR(analytic, numeric, 0.02 * std::abs(numeric) + 2e-4) << s.name;
    ++checked;
  }
  EXPECT_EQ(checked, 21);
}

// Every linear layer goes through the hook: once per forward and once per backward each.
struct CountingLinear final : nvfp4::model::LinearPrecision {
  std::map<std::pair<int, int>, int> fwd, bwd;
  nvfp4::model::Fp32Linear inner;
  void forward(nvfp4::model::LinearId id, float* out, const float* inp, const float* w, int64_t N, int64_t C,
               int64_t OC) override {
    ++fwd[{id.layer, int(id.kind)}];
    inner.forward(id, out, inp, w, N, C, OC);
  }
  void backward(nvfp4::model::LinearId id, float* dinp, float* dw, const float* dout, const float* inp, const float* w,
                int64_t N, int64_t C, int64_t OC) override {
    ++bwd[{id.layer, int(id.kind)}];
    inner.backward(id, dinp, dw, dout, inp, w, N, C, OC);
  }
};

TEST(ModelLinearHook, SeesEveryGemmOnceAndChangesNothingWhenFp32) {
  const ModelConfig c = tiny();
  CpuModel a(c), b(c);
  nvfp4::model::init_params(c, a.params(), 1);
  nvfp4::model::init_params(c, b.params(), 1);
  CountingLinear counting;
  b.set_linear_precision(&counting);
  const auto tokens = random_tokens(2 * 8, c.vocab, 1), targets = random_tokens(2 * 8, c.vocab, 2);
  a.zero_grad();
  b.zero_grad();
  const float la = a.forward(tokens.data(), targets.data(), 2, 8);
  const float lb = b.forward(tokens.data(), targets.data(), 2, 8);
  a.backward();
  b.backward();
  EXPECT_EQ(la, lb);
  EXPECT_TRUE(std::equal(a.grads().begin(), a.grads().end(), b.grads().begin()));
  EXPECT_EQ(counting.fwd.size(), 2u * 7u + 1u);
  for (const auto& [key, n] : counting.fwd) EXPECT_EQ(n, 1) << key.first << "/" << key.second;
  EXPECT_EQ(counting.bwd, counting.fwd);
  EXPECT_EQ(counting.fwd.count({2, int(nvfp4::model::LinearKind::lm_head)}), 1u);
}

// A few AdamW steps on one batch: the loss must fall a lot, and two runs agree bit for bit.
std::vector<float> fit_one_batch(int steps) {
  const ModelConfig c = tiny();
  CpuModel m(c);
  nvfp4::model::init_params(c, m.params(), 9);
  std::vector<float> mom(m.params().size(), 0.0f), var(m.params().size(), 0.0f);
  const auto tokens = random_tokens(4 * 8, c.vocab, 21);
  std::vector<int32_t> targets(tokens.begin() + 1, tokens.end());
  targets.push_back(0);
  std::vector<float> losses;
  for (int s = 1; s <= steps; ++s) {
    m.zero_grad();
    losses.push_back(m.forward(tokens.data(), targets.data(), 4, 8));
    m.backward();
    nvfp4::cpu::adamw_update(m.params().data(), m.grads().data(), mom.data(), var.data(),
                             static_cast<int64_t>(m.params().size()), 1e-2f, 0.9f, 0.95f, 1e-8f, 0.0f, s);
  }
  return losses;
}

TEST(ModelTraining, FitsOneBatchAndIsDeterministic) {
  const auto a = fit_one_batch(40), b = fit_one_batch(40);
  ASSERT_EQ(a.size(), 40u);
  EXPECT_LT(a.back(), 0.3f * a.front()) << "first " << a.front() << " last " << a.back();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << "step " << i;
}

TEST(ModelForward, RejectsBadShapesAndTokens) {
  const ModelConfig c = tiny();
  CpuModel m(c);
  nvfp4::model::init_params(c, m.params(), 1);
  const auto tokens = random_tokens(2 * 9, c.vocab, 1);
  EXPECT_THROW(m.forward(tokens.data(), nullptr, 2, 9), nvfp4::Error);  // T > seq_len
  std::vector<int32_t> bad(8, 0);
  bad[3] = c.vocab;
  EXPECT_THROW(m.forward(bad.data(), nullptr, 1, 8), nvfp4::Error);
  EXPECT_THROW(m.backward(), nvfp4::Error);  // no targets
}

}  // namespace
