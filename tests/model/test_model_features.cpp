// The CPU model's Llama-family features (model.hpp): a head size other than C / NH (with grouped
// kv heads), q/k/v biases, q/k norms, tied embeddings, a sliding window, RoPE scaling (linear,
// llama3), each alone and all together. Per feature: the logits against an independent
// double-precision forward (model_reference.hpp), whole-model gradients against finite
// differences (each tensor along a random direction, and single elements), and AdamW steps
// fitting a batch. Then the identities the features promise, exactly where they are exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "model/model_reference.hpp"
#include "model/model_test_util.hpp"
#include "nvfp4/model.hpp"

namespace {

using namespace model_test;
using nvfp4::model::RopeScaling;
using nvfp4::model::RopeScalingConfig;

struct Feature {
  std::string name;
  ModelConfig config;
};
void PrintTo(const Feature& f, std::ostream* os) { *os << f.name << " " << f.config.to_json(); }

ModelConfig with(const std::function<void(ModelConfig&)>& edit) {
  ModelConfig c = tiny();
  edit(c);
  c.validate();
  return c;
}

// llama3 scaling with theta 100 and a 64-position original context puts the RoPE pairs in all
// three bands: kept (wavelength < 16), blended (16 .. 64), divided by the factor (> 64). Head
// size 8: wavelengths 6.3 | 19.9, 62.8 | 199; head size 12: 6.3, 13.5 | 29.2, 62.8 | 135, 292.
void llama3(ModelConfig& c) {
  c.rope_theta = 100.0f;
  c.rope_scaling = {RopeScaling::llama3, 8.0f, 1.0f, 4.0f, 64};
}

void all_features(ModelConfig& c) {
  c.head_dim = 12;  // 4 heads x 12 != d_model 32, 2 kv heads
  c.attention_bias = true;
  c.qk_norm = true;
  c.tie_embeddings = true;
  c.sliding_window = 3;
  llama3(c);
}

std::vector<Feature> features() {
  return {
      {"head_dim", with([](ModelConfig& c) { c.head_dim = 12; })},  // 4 x 12 = 48 != 32, kv heads 2
      {"attention_bias", with([](ModelConfig& c) { c.attention_bias = true; })},
      {"qk_norm", with([](ModelConfig& c) { c.qk_norm = true; })},
      {"tie_embeddings", with([](ModelConfig& c) { c.tie_embeddings = true; })},
      {"sliding_window", with([](ModelConfig& c) { c.sliding_window = 3; })},
      {"rope_linear", with([](ModelConfig& c) { c.rope_scaling = {RopeScaling::linear, 4.0f}; })},
      {"rope_llama3", with(llama3)},
      {"all", with(all_features)},
  };
}

class ModelFeature : public ::testing::TestWithParam<Feature> {
 protected:
  // Initialized, with the vector parameters (gains, biases) moved off their start values.
  CpuModel model(uint64_t seed) const {
    CpuModel m(GetParam().config);
    nvfp4::model::init_params(m.config(), m.params(), seed);
    perturb_vectors(m, seed + 100);
    return m;
  }
};

TEST_P(ModelFeature, LogitsMatchTheDoubleReference) {
  CpuModel m = model(1);
  const Batch batch = random_batch(m.config(), 2, 8, 3);
  m.forward(batch.tokens.data(), nullptr, batch.B, batch.T);
  const std::vector<double> want = reference_logits(m, batch.tokens, batch.B, batch.T);
  const auto got = m.logits();
  ASSERT_EQ(got.size(), want.size());
  double scale = 0, worst = 0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(double(got[i]) - want[i]));
  EXPECT_GT(scale, 0.5);
  EXPECT_LT(worst, 2e-5 * scale) << "max |logit| " << scale;
}

TEST_P(ModelFeature, GradientsMatchFiniteDifferences) {
  CpuModel m = model(3);
  const Batch batch = random_batch(m.config(), 2, 7, 11);
  const int tensors = static_cast<int>(m.specs().size());
  EXPECT_EQ(expect_directional_gradients(m, batch, 5), tensors);
  EXPECT_EQ(expect_element_gradients(m, batch, 2, 6), 3 * tensors);
}

TEST_P(ModelFeature, AdamWFitsOneBatch) {
  const auto losses = fit_one_batch(GetParam().config, 40, 9);
  EXPECT_LT(losses.back(), 0.3f * losses.front()) << "first " << losses.front() << " last " << losses.back();
  for (float l : losses) EXPECT_TRUE(std::isfinite(l));
}

INSTANTIATE_TEST_SUITE_P(Features, ModelFeature, ::testing::ValuesIn(features()),
                         [](const ::testing::TestParamInfo<Feature>& i) { return i.param.name; });

// ---- the identities ---------------------------------------------------------------------------

// Copies each parameter of `to` that `from` has by name (same shape).
void copy_shared(const CpuModel& from, CpuModel& to) {
  for (const auto& s : to.specs()) {
    for (const auto& f : from.specs()) {
      if (f.name != s.name) continue;
      ASSERT_EQ(f.shape, s.shape) << s.name;
      std::copy_n(from.params().begin() + f.offset, s.numel, to.params().begin() + s.offset);
    }
  }
}

bool same_bits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::span<const float> tensor(const CpuModel& m, std::span<const float> buf, const std::string& name) {
  const auto& s = m.spec(name);
  return buf.subspan(static_cast<size_t>(s.offset), static_cast<size_t>(s.numel));
}

// A tied model is the untied one whose lm_head holds the embedding: the same forward bit for
// bit, and the tied embedding's gradient is the untied embedding's plus the untied head's.
TEST(ModelFeatures, TiedHeadIsTheUntiedHeadHoldingTheEmbedding) {
  const ModelConfig untied_c = tiny();
  ModelConfig tied_c = tiny();
  tied_c.tie_embeddings = true;
  CpuModel untied(untied_c), tied(tied_c);
  nvfp4::model::init_params(untied_c, untied.params(), 4);
  const auto& e = untied.spec("model.embed_tokens.weight");
  std::copy_n(untied.params().begin() + e.offset, e.numel, untied.params().begin() + untied.spec("lm_head.weight").offset);
  copy_shared(untied, tied);
  EXPECT_EQ(tied.params().size() + e.numel, untied.params().size());
  const Batch batch = random_batch(untied_c, 2, 8, 5);
  const std::vector<float> gu = model_gradient(untied, batch), gt = model_gradient(tied, batch);
  EXPECT_TRUE(same_bits(untied.logits(), tied.logits()));
  EXPECT_TRUE(same_bits(untied.losses(), tied.losses()));
  for (const auto& s : tied.specs()) {
    if (s.name == "model.embed_tokens.weight") continue;
    EXPECT_TRUE(same_bits(tensor(tied, gt, s.name), tensor(untied, gu, s.name))) << s.name;
  }
  const auto te = tensor(tied, gt, "model.embed_tokens.weight"), ue = tensor(untied, gu, "model.embed_tokens.weight"),
             uh = tensor(untied, gu, "lm_head.weight");
  double worst = 0, scale = 0, head_scale = 0;
  for (size_t i = 0; i < te.size(); ++i) {
    worst = std::max(worst, std::abs(double(te[i]) - (double(ue[i]) + uh[i])));
    scale = std::max(scale, std::abs(double(te[i])));
    head_scale = std::max(head_scale, std::abs(double(uh[i])));
  }
  EXPECT_LE(worst, 1e-6 * scale);
  EXPECT_GT(head_scale, 0.05 * scale) << "the head's share is part of the check";
}

// Zero biases are no biases: the same logits and the same gradients of every shared tensor.
TEST(ModelFeatures, ZeroBiasesAreNoBiases) {
  ModelConfig bias_c = tiny();
  bias_c.attention_bias = true;
  CpuModel plain(tiny()), biased(bias_c);
  nvfp4::model::init_params(tiny(), plain.params(), 6);
  nvfp4::model::init_params(bias_c, biased.params(), 6);  // biases start at 0
  copy_shared(plain, biased);
  const Batch batch = random_batch(bias_c, 2, 8, 7);
  const std::vector<float> gp = model_gradient(plain, batch), gb = model_gradient(biased, batch);
  EXPECT_TRUE(same_bits(plain.logits(), biased.logits()));
  for (const auto& s : plain.specs()) EXPECT_TRUE(same_bits(tensor(plain, gp, s.name), tensor(biased, gb, s.name))) << s.name;
  // ... and the bias gradients are the sums over positions of what reached each projection's output.
  double bq = 0;
  for (float g : tensor(biased, gb, "model.layers.0.self_attn.q_proj.bias")) bq = std::max(bq, double(std::abs(g)));
  EXPECT_GT(bq, 1e-4);
}

// q/k norms normalize each head on its own, so scaling one head's rows of q_proj (or k_proj)
// changes nothing but rounding (eps is made negligible); without them it changes the logits.
TEST(ModelFeatures, QkNormMakesEachHeadsScaleIrrelevant) {
  for (const bool qk_norm : {true, false}) {
    ModelConfig c = tiny();
    c.qk_norm = qk_norm;
    c.norm_eps = 1e-12f;
    CpuModel m(c);
    nvfp4::model::init_params(c, m.params(), 8);
    perturb_vectors(m, 9);
    const Batch batch = random_batch(c, 2, 8, 10);
    m.forward(batch.tokens.data(), nullptr, batch.B, batch.T);
    const std::vector<float> before(m.logits().begin(), m.logits().end());
    const int64_t HS = c.head_size(), C = c.d_model;
    auto scale_head = [&](const std::string& name, int64_t head, float by) {
      float* w = m.params().data() + m.spec(name).offset + head * HS * C;
      for (int64_t i = 0; i < HS * C; ++i) w[i] *= by;
    };
    scale_head("model.layers.0.self_attn.q_proj.weight", 1, 3.0f);
    scale_head("model.layers.1.self_attn.k_proj.weight", 0, 0.25f);
    m.forward(batch.tokens.data(), nullptr, batch.B, batch.T);
    double worst = 0, scale = 0;
    for (size_t i = 0; i < before.size(); ++i) {
      worst = std::max(worst, std::abs(double(m.logits()[i]) - before[i]));
      scale = std::max(scale, std::abs(double(before[i])));
    }
    if (qk_norm) {
      EXPECT_LT(worst, 1e-5 * scale);
    } else {
      EXPECT_GT(worst, 1e-2 * scale);
    }
  }
}

// Runs a model of config c (initialized from seed 12) on one batch: logits, losses, gradients.
std::vector<std::vector<float>> run_once(const ModelConfig& c) {
  CpuModel m(c);
  nvfp4::model::init_params(c, m.params(), 12);
  const Batch batch = random_batch(c, 2, c.seq_len, 13);
  std::vector<float> g = model_gradient(m, batch);
  return {{m.logits().begin(), m.logits().end()}, {m.losses().begin(), m.losses().end()}, std::move(g)};
}

void expect_same_run(const ModelConfig& a, const ModelConfig& b, const std::string& what) {
  const auto ra = run_once(a), rb = run_once(b);
  for (size_t i = 0; i < ra.size(); ++i) EXPECT_TRUE(same_bits(ra[i], rb[i])) << what << ", output " << i;
}

// A window of the sequence length or more hides nothing; a shorter one does.
TEST(ModelFeatures, WindowOfAtLeastTIsNoWindowBitForBit) {
  const ModelConfig none = tiny();  // seq_len 8: the batches are 8 long
  for (int w : {8, 9, 100}) expect_same_run(none, with([w](ModelConfig& c) { c.sliding_window = w; }), "window " + std::to_string(w));
  const auto narrow = run_once(with([](ModelConfig& c) { c.sliding_window = 7; }));
  EXPECT_FALSE(same_bits(narrow[0], run_once(none)[0]));
}

// Scaling that changes no frequency is no scaling, bit for bit: linear with factor 1, and
// llama3 whose original context is so long that every wavelength is in the kept band.
TEST(ModelFeatures, RopeScalingThatChangesNothingIsNoScalingBitForBit) {
  const ModelConfig none = tiny();
  const ModelConfig linear1 = with([](ModelConfig& c) { c.rope_scaling = {RopeScaling::linear, 1.0f}; });
  const ModelConfig long_ctx = with([](ModelConfig& c) { c.rope_scaling = {RopeScaling::llama3, 8.0f, 1.0f, 4.0f, 1 << 24}; });
  EXPECT_EQ(linear1.rope_inv_freq(), none.rope_inv_freq());
  EXPECT_EQ(long_ctx.rope_inv_freq(), none.rope_inv_freq());
  expect_same_run(none, linear1, "linear factor 1");
  expect_same_run(none, long_ctx, "llama3, every wavelength kept");
  // llama3 with factor 1 blends x / 1 and x: the same frequencies up to rounding.
  const ModelConfig llama3_1 = with([](ModelConfig& c) { c.rope_scaling = {RopeScaling::llama3, 1.0f, 1.0f, 4.0f, 64}; });
  const auto a = llama3_1.rope_inv_freq(), b = none.rope_inv_freq();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 2e-7 * b[i]) << i;
  // and a factor that does change them changes the logits
  EXPECT_FALSE(same_bits(run_once(with([](ModelConfig& c) { c.rope_scaling = {RopeScaling::linear, 2.0f}; }))[0],
                         run_once(none)[0]));
}

// ModelConfig::rope_inv_freq against transformers' formulas (model_reference.hpp, in double),
// for the unscaled table: 1 / theta^(2i/HS) in FP32, the table cpu::rope_forward(theta) uses.
TEST(ModelFeatures, RopeInvFreqIsTransformers) {
  std::vector<ModelConfig> configs = {tiny(), with(llama3), with([](ModelConfig& c) {
                                        c.rope_scaling = {RopeScaling::linear, 4.0f};
                                      })};
  ModelConfig big = tiny();  // Llama 3.1's: head size 128, theta 500000, factor 8, 8192 positions
  big.d_model = 4096, big.n_head = 32, big.n_kv_head = 8, big.rope_theta = 500000.0f;
  big.rope_scaling = {RopeScaling::llama3, 8.0f, 1.0f, 4.0f, 8192};
  configs.push_back(big);
  for (const ModelConfig& c : configs) {
    const std::vector<float> got = c.rope_inv_freq();
    const std::vector<double> want = reference_inv_freq(c);
    ASSERT_EQ(got.size(), want.size());
    int changed = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_NEAR(got[i], want[i], 1e-6 * want[i]) << c.to_json() << " pair " << i;
      const float plain = 1.0f / std::pow(c.rope_theta, float(2 * i) / float(c.head_size()));
      changed += got[i] != plain;
      if (c.rope_scaling.type == RopeScaling::none) {
        EXPECT_EQ(got[i], plain) << i;
      }
    }
    if (c.rope_scaling.type != RopeScaling::none) {
      EXPECT_GT(changed, 0) << c.to_json();
    }
  }
}

}  // namespace
