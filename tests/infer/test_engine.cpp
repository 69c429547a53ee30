// The inference engine on the CPU: a Hugging Face folder opens as the model it describes (every
// architecture and feature), the engine computes the CPU reference model's logits, decoding with
// the KV cache equals a full recompute, a batch equals its sequences one at a time, and the
// quantized precisions compute exactly what their definitions say.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "nvfp4/engine.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_model.hpp"
#include "nvfp4/quantize.hpp"
#include "nvfp4/safetensors.hpp"
#include "support/test_support.hpp"
#include "tiny_hf_model.hpp"

namespace {

using nvfp4::infer::Engine;
using nvfp4::infer::EngineOptions;
using nvfp4::infer::HfModel;
using nvfp4::infer::Precision;
using nvfp4::infer::SeqChunk;
using nvfp4::test::rel_diff;
using nvfp4::test::some_tokens;
const auto& kArchs = nvfp4::test::kTinyArchs;
using nvfp4::test::error_of;

constexpr char kPrefix[] = "nvfp4_engine_test_";
using EngineTest = nvfp4::test::ScratchDirTest<kPrefix>;





// The CPU training model's logits for tokens (1, T) with parameters p.
std::vector<float> cpu_model_logits(const nvfp4::model::ModelConfig& c, const std::vector<float>& p,
                                    const std::vector<int32_t>& t) {
  nvfp4::model::CpuModel m(c);
  std::copy(p.begin(), p.end(), m.params().begin());
  m.forward(t.data(), nullptr, 1, static_cast<int>(t.size()));
  return {m.logits().begin(), m.logits().end()};
}

TEST_F(EngineTest, AFolderOpensAsTheModelItsConfigDescribes) {
  for (const auto& arch : kArchs) {
    const auto c = nvfp4::test::tiny_config(arch);
    nvfp4::test::write_tiny_hf_model(dir_ / arch, arch, c, 1);
    const HfModel m = HfModel::open((dir_ / arch).string());
    EXPECT_EQ(m.config().to_json(), c.to_json()) << arch;
    EXPECT_EQ(m.eos_ids(), std::vector<int32_t>{c.vocab - 1}) << arch;
    EXPECT_FALSE(m.has_tokenizer());
    EXPECT_NE(error_of([&] { m.tokenizer(); }).find("no tokenizer.json"), std::string::npos);
  }
}

TEST_F(EngineTest, BadFoldersAreErrorsNamingTheTensorOrField) {
  const auto c = nvfp4::test::tiny_config("qwen2");
  nvfp4::test::write_tiny_hf_model(dir_, "qwen2", c, 1);
  // The same weights described as Llama: the q/k/v biases are unexpected.
  std::ofstream(dir_ / "config.json") << nvfp4::test::tiny_config_json("llama", nvfp4::test::tiny_config("llama"));
  std::string e = error_of([&] { HfModel::open(dir_.string()); });
  EXPECT_NE(e.find("unexpected tensor model.layers.0.self_attn.k_proj.bias"), std::string::npos) << e;  // sorted
  // A wider MLP than the weights: a shape mismatch names the tensor.
  auto wide = c;
  wide.d_ffn = 128;
  std::ofstream(dir_ / "config.json") << nvfp4::test::tiny_config_json("qwen2", wide);
  e = error_of([&] { HfModel::open(dir_.string()); });
  EXPECT_NE(e.find("tensor model.layers.0.mlp.gate_proj.weight has shape [96, 64]"), std::string::npos) << e;
  // Qwen3's head_dim 32 x 4 heads.
  std::ofstream(dir_ / "config.json") << nvfp4::test::tiny_config_json("qwen3", nvfp4::test::tiny_config("qwen3"));
  e = error_of([&] { HfModel::open(dir_.string()); });
  EXPECT_NE(e.find("tensor model.layers.0.self_attn.q_proj.weight has shape [64, 64]; config.json implies [128, 64]"),
            std::string::npos) << e;
  // Another architecture, another rope type.
  std::string text = nvfp4::test::tiny_config_json("qwen2", c);
  std::ofstream(dir_ / "config.json") << std::string(text).replace(text.find("Qwen2ForCausalLM"), 16, "GPT2LMHeadModel");
  e = error_of([&] { HfModel::open(dir_.string()); });
  EXPECT_NE(e.find("\"architectures\""), std::string::npos) << e;
  EXPECT_NE(e.find("GPT2LMHeadModel"), std::string::npos) << e;
  std::ofstream(dir_ / "config.json") << std::string(text).replace(text.find("\"rope_scaling\": null"), 20,
                                                                   "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}");
  e = error_of([&] { HfModel::open(dir_.string()); });
  EXPECT_NE(e.find("rope_scaling.rope_type"), std::string::npos) << e;
  EXPECT_NE(e.find("yarn"), std::string::npos) << e;
  e = error_of([&] { HfModel::open((dir_ / "nothing").string()); });
  EXPECT_NE(e.find("not a folder"), std::string::npos) << e;
}

// Qwen3's attention_bias gives q, k, v AND o_proj biases; nvfp4's model has no o_proj bias, so a
// folder loads when those are zero (what export-hf writes) and is an error naming one otherwise.
TEST_F(EngineTest, AnOprojBiasLoadsOnlyWhenZero) {
  auto c = nvfp4::test::tiny_config("qwen3");
  c.attention_bias = true;
  const auto p = nvfp4::test::write_tiny_hf_model(dir_, "qwen3", c, 14);
  auto text = nlohmann::json::parse(nvfp4::test::tiny_config_json("qwen3", c));
  text["attention_bias"] = true;
  std::ofstream(dir_ / "config.json") << text.dump();
  const auto f = nvfp4::io::SafetensorsFile::open((dir_ / "model.safetensors").string());
  std::vector<std::pair<std::string, nvfp4::Tensor>> tensors;
  for (const auto& t : f.tensors()) tensors.emplace_back(t.name, f.load(t.name));
  for (float bias : {0.0f, 0.25f}) {
    auto all = tensors;
    for (int l = 0; l < c.n_layer; ++l) {
      nvfp4::Tensor b = f.load("model.norm.weight");  // F32 (C)
      auto* v = reinterpret_cast<float*>(b.data.data());
      for (int64_t i = 0; i < c.d_model; ++i) v[i] = bias;
      all.emplace_back("model.layers." + std::to_string(l) + ".self_attn.o_proj.bias", std::move(b));
    }
    nvfp4::io::write_file((dir_ / "model.safetensors").string(), all);
    if (bias == 0.0f) {
      const HfModel m = HfModel::open(dir_.string());
      EXPECT_TRUE(m.config().attention_bias && m.config().qk_norm);
      const auto e = nvfp4::infer::make_cpu_engine(m, {});
      const auto t = some_tokens(12, c.vocab, 15);
      EXPECT_LT(rel_diff(nvfp4::test::run_chunk(*e, 0, t, true), cpu_model_logits(c, p, t)), 2e-6);
    } else {
      const std::string e = error_of([&] { HfModel::open(dir_.string()); });
      EXPECT_NE(e.find("tensor model.layers.0.self_attn.o_proj.bias is not zero"), std::string::npos) << e;
    }
  }
}

TEST_F(EngineTest, ComputesTheCpuModelsLogitsForEveryArchitecture) {
  for (const auto& arch : kArchs) {
    const auto c = nvfp4::test::tiny_config(arch);
    const auto p = nvfp4::test::write_tiny_hf_model(dir_ / arch, arch, c, 2);
    const HfModel m = HfModel::open((dir_ / arch).string());
    const auto e = nvfp4::infer::make_cpu_engine(m, {});
    const auto t = some_tokens(20, c.vocab, 3);  // longer than Mistral's window of 6
    EXPECT_LT(rel_diff(nvfp4::test::run_chunk(*e, 0, t, true), cpu_model_logits(c, p, t)), 2e-6) << arch;
  }
}

TEST_F(EngineTest, DecodingWithTheCacheEqualsAFullRecompute) {
  for (const auto& arch : kArchs) {
    const auto c = nvfp4::test::tiny_config(arch);
    nvfp4::test::write_tiny_hf_model(dir_ / arch, arch, c, 4);
    const HfModel m = HfModel::open((dir_ / arch).string());
    const auto e = nvfp4::infer::make_cpu_engine(m, {});
    const auto t = some_tokens(24, c.vocab, 5);
    const auto full = nvfp4::test::run_chunk(*e, 0, t, true);
    e->reset(0);
    std::vector<float> inc = nvfp4::test::run_chunk(*e, 0, {t.begin(), t.begin() + 10}, true);
    for (size_t i = 10; i < t.size(); ++i) {
      const auto step = nvfp4::test::run_chunk(*e, 0, {t[i]}, false);
      inc.insert(inc.end(), step.begin(), step.end());
    }
    EXPECT_EQ(e->length(0), 24);
    EXPECT_LT(rel_diff(inc, full), 2e-6) << arch;
  }
}

TEST_F(EngineTest, ABatchEqualsItsSequencesOneAtATime) {
  for (const auto& arch : kArchs) {
    const auto c = nvfp4::test::tiny_config(arch);
    nvfp4::test::write_tiny_hf_model(dir_ / arch, arch, c, 6);
    const HfModel m = HfModel::open((dir_ / arch).string());
    EngineOptions o;
    o.max_sequences = 3;
    o.max_context = 40;
    for (Precision p : {Precision::fp32, Precision::w4a4}) {
      o.precision = p;
      const auto e = nvfp4::infer::make_cpu_engine(m, o);
      const auto a = some_tokens(7, c.vocab, 7), b = some_tokens(13, c.vocab, 8), d = some_tokens(1, c.vocab, 9);
      // Alone: each in slot 0.
      std::vector<float> alone;
      for (const auto* s : {&a, &b, &d}) {
        e->reset(0);
        const auto l = nvfp4::test::run_chunk(*e, 0, *s, true);
        alone.insert(alone.end(), l.begin(), l.end());
      }
      e->reset(0);
      const std::vector<SeqChunk> batch = {{2, a, true}, {0, b, true}, {1, d, true}};
      std::vector<float> together;
      e->forward(batch, together);
      EXPECT_LT(rel_diff(together, alone), 2e-6) << arch << " " << nvfp4::infer::precision_name(p);
      // Then a decode step for all three, ragged lengths 7, 13, 1.
      const std::vector<int32_t> next = {1, 2, 3};
      const std::vector<SeqChunk> step = {{0, {&next[0], 1}, false}, {1, {&next[1], 1}, false}, {2, {&next[2], 1}, false}};
      std::vector<float> stepped;
      e->forward(step, stepped);
      std::vector<int32_t> b1 = b, d1 = d, a1 = a;
      b1.push_back(1), d1.push_back(2), a1.push_back(3);
      std::vector<float> expect;
      for (const auto* s : {&b1, &d1, &a1}) {
        e->reset(0);
        const auto l = nvfp4::test::run_chunk(*e, 0, *s, false);
        expect.insert(expect.end(), l.begin(), l.end());
      }
      EXPECT_LT(rel_diff(stepped, expect), 2e-6) << arch;
    }
  }
}

// The CPU model with every block's linear weights replaced by their NVFP4 (or FP8) values.
std::vector<float> quantized_params(const nvfp4::model::ModelConfig& c, std::vector<float> p, nvfp4::Format f) {
  for (const auto& s : nvfp4::model::param_specs(c)) {
    if (s.shape.size() != 2 || s.name.find("model.layers.") != 0) continue;
    nvfp4::QuantizeOptions q;
    q.format = f;
    float* w = p.data() + s.offset;
    const auto t = nvfp4::quantize({w, static_cast<size_t>(s.numel)}, s.shape[0], s.shape[1], q);
    const auto back = nvfp4::dequantize(*t.row, t.options);
    std::copy(back.begin(), back.end(), w);
  }
  return p;
}

TEST_F(EngineTest, W4a16RunsExactlyTheNvfp4WeightsAndW4a4FallsBackRowByRow) {
  const auto c = nvfp4::test::tiny_config("qwen2");
  const auto p = nvfp4::test::write_tiny_hf_model(dir_, "qwen2", c, 10);
  const HfModel m = HfModel::open(dir_.string());
  const auto t = some_tokens(16, c.vocab, 11);
  EngineOptions o;
  o.precision = Precision::w4a16;
  const auto w4a16 = nvfp4::infer::make_cpu_engine(m, o);
  const auto l16 = nvfp4::test::run_chunk(*w4a16, 0, t, true);
  EXPECT_LT(rel_diff(l16, cpu_model_logits(c, quantized_params(c, p, nvfp4::Format::nvfp4), t)), 2e-6);
  EXPECT_EQ(w4a16->linear_plan().back().precision, Precision::fp32) << "the LM head stays unquantized";
  EXPECT_EQ(w4a16->linear_plan()[0].name, "model.layers.0.self_attn.q_proj");

  o.precision = Precision::w4a4;
  const auto w4a4 = nvfp4::infer::make_cpu_engine(m, o);
  const auto l4 = nvfp4::test::run_chunk(*w4a4, 0, t, true);
  EXPECT_GT(rel_diff(l4, l16), 1e-4) << "activation quantization changes the result";
  auto g = w4a4->guard_stats();
  EXPECT_EQ(g.total_rows(), 14 * 16);  // 14 quantized layers x 16 tokens
  EXPECT_EQ(g.total_fallbacks(), 0) << "a row's own amax never saturates";
  // A calibrated input amax far below the data: every row has a saturating block, and with the
  // guard every row is computed in w4a16 — exactly w4a16's logits.
  for (size_t i = 0; i + 1 < w4a4->linear_plan().size(); ++i) w4a4->set_input_amax(i, 1e-3f);
  w4a4->reset(0);
  w4a4->reset_guard_stats();
  EXPECT_EQ(nvfp4::test::run_chunk(*w4a4, 0, t, true), l16);
  g = w4a4->guard_stats();
  EXPECT_EQ(g.total_fallbacks(), g.total_rows());
  EXPECT_DOUBLE_EQ(g.rate(), 1.0);
  // Without the guard the clipped values are used.
  o.fallback = false;
  const auto clipped = nvfp4::infer::make_cpu_engine(m, o);
  for (size_t i = 0; i + 1 < clipped->linear_plan().size(); ++i) clipped->set_input_amax(i, 1e-3f);
  EXPECT_GT(rel_diff(nvfp4::test::run_chunk(*clipped, 0, t, true), l16), 1e-3);
  EXPECT_EQ(clipped->guard_stats().total_fallbacks(), 0);

  o.precision = Precision::fp8;
  o.fallback = true;
  const auto fp8 = nvfp4::infer::make_cpu_engine(m, o);
  EXPECT_GT(rel_diff(nvfp4::test::run_chunk(*fp8, 0, t, true), cpu_model_logits(c, p, t)), 1e-5);
}

TEST_F(EngineTest, KeepBf16NamesLayersAndAPatternThatNamesNoneIsAnError) {
  const auto c = nvfp4::test::tiny_config("llama");
  nvfp4::test::write_tiny_hf_model(dir_, "llama", c, 12);
  const HfModel m = HfModel::open(dir_.string());
  EngineOptions o;
  o.precision = Precision::w4a16;
  o.keep_bf16 = {"*.down_proj", "model.layers.1.self_attn.*"};
  const auto e = nvfp4::infer::make_cpu_engine(m, o);
  int kept = 0;
  for (const auto& l : e->linear_plan()) kept += l.precision == Precision::fp32;
  EXPECT_EQ(kept, 2 + 4 + 1);  // two down_proj, layer 1's four attention projections, the LM head
  o.keep_bf16 = {"*.dwon_proj"};
  EXPECT_NE(error_of([&] { nvfp4::infer::make_cpu_engine(m, o); }).find("--keep-bf16 *.dwon_proj: names no linear layer"),
            std::string::npos);
  o.keep_bf16.clear();
  o.precision = Precision::bf16;
  EXPECT_NE(error_of([&] { nvfp4::infer::make_cpu_engine(m, o); }).find("CUDA"), std::string::npos);
  EXPECT_NE(error_of([&] { nvfp4::infer::parse_precision("int4"); }).find("--precision int4"), std::string::npos);
}

TEST_F(EngineTest, BadBatchesAreErrorsAndLeaveTheCachesAlone) {
  const auto c = nvfp4::test::tiny_config("llama");
  nvfp4::test::write_tiny_hf_model(dir_, "llama", c, 13);
  const HfModel m = HfModel::open(dir_.string());
  EngineOptions o;
  o.max_sequences = 2;
  o.max_context = 8;
  const auto e = nvfp4::infer::make_cpu_engine(m, o);
  const std::vector<int32_t> ok = {1, 2, 3}, bad = {1, 97}, long_one(9, 1);
  std::vector<float> l;
  EXPECT_NE(error_of([&] { e->forward(std::vector<SeqChunk>{{0, ok}, {1, bad}}, l); }).find("chunk 1: token 1 is 97"),
            std::string::npos);
  EXPECT_EQ(e->length(0), 0);
  EXPECT_NE(error_of([&] { e->forward(std::vector<SeqChunk>{{2, ok}}, l); }).find("slot 2"), std::string::npos);
  EXPECT_NE(error_of([&] { e->forward(std::vector<SeqChunk>{{0, ok}, {0, ok}}, l); }).find("twice"), std::string::npos);
  EXPECT_NE(error_of([&] { e->forward(std::vector<SeqChunk>{{0, long_one}}, l); }).find("context is 8"),
            std::string::npos);
}

}  // namespace
