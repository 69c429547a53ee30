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
#include "model/model_test_util.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/model.hpp"

namespace {

using model_test::random_tokens;
using model_test::tiny;
using nvfp4::model::CpuModel;
using nvfp4::model::ModelConfig;

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

TEST(ModelConfig, FeaturesRoundTripAndAreValidated) {
  ModelConfig c = tiny();
  const std::string plain = c.to_json();
  for (const char* key : {"head_dim", "attention_bias", "qk_norm", "tie_embeddings", "sliding_window", "rope_scaling"}) {
    EXPECT_EQ(plain.find(key), std::string::npos) << key << " in a plain model's JSON";
  }
  c.head_dim = 12, c.attention_bias = true, c.qk_norm = true, c.tie_embeddings = true, c.sliding_window = 5;
  c.rope_scaling = {nvfp4::model::RopeScaling::llama3, 8.0f, 1.0f, 4.0f, 64};
  const ModelConfig back = ModelConfig::from_json(c.to_json());
  EXPECT_EQ(back.to_json(), c.to_json());
  EXPECT_EQ(back.head_size(), 12);
  EXPECT_TRUE(back.attention_bias && back.qk_norm && back.tie_embeddings);
  EXPECT_EQ(back.sliding_window, 5);
  EXPECT_EQ(back.rope_scaling, c.rope_scaling);
  c.rope_scaling = {nvfp4::model::RopeScaling::linear, 2.5f};
  EXPECT_EQ(ModelConfig::from_json(c.to_json()).rope_scaling, c.rope_scaling);
  auto expect_error = [](const std::string& json, const std::string& needle) {
    try {
      ModelConfig::from_json(json);
      ADD_FAILURE() << "accepted " << json;
    } catch (const nvfp4::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(R"({"head_dim": 7})", "head size = 7");
  expect_error(R"({"sliding_window": -1})", "sliding_window = -1");
  expect_error(R"({"qk_norm": 1})", "true or false");
  expect_error(R"({"rope_scaling": {"type": "yarn", "factor": 4}})", "rope_scaling.type");
  expect_error(R"({"rope_scaling": {"factor": 4}})", "needs a \"type\"");
  expect_error(R"({"rope_scaling": {"type": "linear", "factor": 0}})", "factor must be positive");
  expect_error(R"({"rope_scaling": {"type": "llama3", "low_freq_factor": 4, "high_freq_factor": 1}})",
               "low_freq_factor < high_freq_factor");
}

// The features' parameters, in HF's names and shapes; param_index finds each.
TEST(ModelParams, FeaturesAddAndRemoveParameters) {
  ModelConfig c = tiny();
  c.head_dim = 12, c.attention_bias = true, c.qk_norm = true, c.tie_embeddings = true;
  const auto specs = nvfp4::model::param_specs(c);
  ASSERT_EQ(specs.size(), 1u + 14u * 2u + 1u);  // no lm_head
  std::map<std::string, std::vector<int64_t>> want = {
      {"model.layers.1.self_attn.q_proj.weight", {48, 32}},  // 4 heads x 12
      {"model.layers.1.self_attn.q_proj.bias", {48}},
      {"model.layers.1.self_attn.k_proj.weight", {24, 32}},  // 2 kv heads x 12
      {"model.layers.1.self_attn.k_proj.bias", {24}},
      {"model.layers.1.self_attn.v_proj.bias", {24}},
      {"model.layers.1.self_attn.q_norm.weight", {12}},
      {"model.layers.1.self_attn.k_norm.weight", {12}},
      {"model.layers.1.self_attn.o_proj.weight", {32, 48}},
  };
  int64_t offset = 0;
  for (const auto& s : specs) {
    EXPECT_EQ(s.offset, offset) << s.name;
    offset += s.numel;
    EXPECT_NE(s.name, "lm_head.weight");
    if (want.count(s.name)) {
      EXPECT_EQ(s.shape, want[s.name]) << s.name;
      want.erase(s.name);
    }
    EXPECT_EQ(s.decay, s.shape.size() == 2) << s.name;
  }
  EXPECT_TRUE(want.empty());
  EXPECT_EQ(offset, c.num_params());
  const auto x = nvfp4::model::param_index(c);
  EXPECT_EQ(x.lm_head, x.embed);
  const auto& l1 = x.layers.at(1);
  EXPECT_EQ(specs.at(l1.bq).name, "model.layers.1.self_attn.q_proj.bias");
  EXPECT_EQ(specs.at(l1.bv).name, "model.layers.1.self_attn.v_proj.bias");
  EXPECT_EQ(specs.at(l1.k_norm).name, "model.layers.1.self_attn.k_norm.weight");
  EXPECT_EQ(specs.at(l1.wd).name, "model.layers.1.mlp.down_proj.weight");
  // init: biases 0, norm gains 1
  CpuModel m(c);
  nvfp4::model::init_params(c, m.params(), 1);
  const auto& b = m.spec("model.layers.0.self_attn.k_proj.bias");
  const auto& n = m.spec("model.layers.0.self_attn.q_norm.weight");
  for (int64_t i = 0; i < b.numel; ++i) EXPECT_EQ(m.params()[b.offset + i], 0.0f);
  for (int64_t i = 0; i < n.numel; ++i) EXPECT_EQ(m.params()[n.offset + i], 1.0f);
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

// Directional derivatives per tensor, analytic vs central difference (model_test_util.hpp).
TEST(ModelGradients, EveryTensorMatchesFiniteDifferences) {
  const ModelConfig c = tiny();
  CpuModel m(c);
  nvfp4::model::init_params(c, m.params(), 3);
  const model_test::Batch batch{random_tokens(2 * 7, c.vocab, 11), random_tokens(2 * 7, c.vocab, 12), 2, 7};
  EXPECT_EQ(model_test::expect_directional_gradients(m, batch, 5), 21);
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
std::vector<float> fit_one_batch(int steps) { return model_test::fit_one_batch(tiny(), steps, 9); }

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
