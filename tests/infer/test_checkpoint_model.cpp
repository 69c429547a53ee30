// Hugging Face config.json both directions (io) and its mapping to the model config (infer):
// our export reads back as the same model; what this version cannot run is an error naming
// the file and the field.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "nvfp4/checkpoint_model.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_config.hpp"
#include "support/test_support.hpp"

namespace {

using nvfp4::io::parse_config_json;
using nvfp4::io::to_config_json;

nvfp4::model::ModelConfig a_model() {
  nvfp4::model::ModelConfig c;
  c.n_layer = 3, c.d_model = 96, c.n_head = 6, c.n_kv_head = 2, c.vocab = 300, c.seq_len = 80;
  c.rope_theta = 500000.0f, c.norm_eps = 1e-6f;
  return c;
}

TEST(HfConfig, OurExportReadsBackAsTheSameModel) {
  const auto c = a_model();
  const std::string text = to_config_json(nvfp4::infer::hf_config(c, 256, 256));
  const auto j = nlohmann::json::parse(text);
  EXPECT_EQ(j.at("architectures")[0], "LlamaForCausalLM");
  EXPECT_EQ(j.at("num_key_value_heads"), 2);
  EXPECT_EQ(j.at("intermediate_size"), c.ffn());
  EXPECT_EQ(j.at("head_dim"), 16);
  EXPECT_EQ(j.at("eos_token_id"), 256);
  const auto h = parse_config_json(text, "x/config.json");
  EXPECT_EQ(h.bos_token_id, 256);
  EXPECT_EQ(nvfp4::infer::model_config(h).to_json(), c.to_json());
}

TEST(HfConfig, WhatThisVersionCannotRunNamesTheFileAndTheField) {
  const std::string good = to_config_json(nvfp4::infer::hf_config(a_model(), std::nullopt, std::nullopt));
  auto with = [&](const char* field, const nlohmann::json& value) {
    auto j = nlohmann::json::parse(good);
    if (value.is_null() && std::string(field) != "rope_scaling") j.erase(field);
    else j[field] = value;
    return j.dump();
  };
  const struct {
    std::string text;
    std::string needle;
  } cases[] = {
      {with("architectures", {"GPT2LMHeadModel"}), "\"architectures\" is GPT2LMHeadModel"},
      {with("rope_scaling", {{"rope_type", "llama3"}, {"factor", 8}}), "\"rope_scaling.low_freq_factor\""},
      {with("rope_scaling", {{"rope_type", "yarn"}, {"factor", 8}}), "\"rope_scaling.rope_type\" is \"yarn\""},
      {with("hidden_act", "gelu"), "\"hidden_act\""},
      {with("hidden_size", nullptr), "\"hidden_size\" is missing"},
      {with("num_hidden_layers", -2), "\"num_hidden_layers\" is -2"},
      {with("mlp_bias", true), "\"mlp_bias\" is true"},
      {with("rms_norm_eps", "tiny"), "\"rms_norm_eps\""},
      {"[1, 2]", "not a JSON object"},
      {"{\"architectures\": ", "not a JSON object"},
  };
  for (const auto& cs : cases) {
    const std::string e = nvfp4::test::error_of([&] { parse_config_json(cs.text, "m/config.json"); });
    EXPECT_NE(e.find("m/config.json"), std::string::npos) << e;
    EXPECT_NE(e.find(cs.needle), std::string::npos) << e;
  }
  // Parsed but not a model nvfp4 runs: a width NVFP4 blocks cannot cover.
  auto h = parse_config_json(good, "m/config.json");
  h.hidden_size = 40;
  h.head_dim = 10;
  const std::string e = nvfp4::test::error_of([&] { nvfp4::infer::model_config(h); });
  EXPECT_NE(e.find("cannot run"), std::string::npos) << e;
  EXPECT_NE(e.find("d_model = 40"), std::string::npos) << e;
  // Parsed but not a model this version builds: windows on some layers only.
  h = parse_config_json(good, "m/config.json");
  h.architecture = "Qwen2ForCausalLM", h.sliding_window = 64, h.max_window_layers = 1;
  EXPECT_NE(nvfp4::test::error_of([&] { nvfp4::infer::model_config(h); }).find("max_window_layers 1"),
            std::string::npos);
  h.architecture = "GPT2LMHeadModel";
  EXPECT_NE(nvfp4::test::error_of([&] { nvfp4::infer::model_config(h); }).find("GPT2LMHeadModel"), std::string::npos);
  // A head size other than hidden_size / heads is a model (head_dim).
  h = parse_config_json(good, "m/config.json");
  h.head_dim = 32;
  EXPECT_EQ(nvfp4::infer::model_config(h).head_size(), 32);
}

// The features pick the architecture that has them and write its fields; each reads back as
// the same model (q/k norms with q/k/v biases: Qwen3's attention_bias, whose o_proj biases are zero).
TEST(HfConfig, FeaturesPickTheArchitectureAndItsFields) {
  using nvfp4::model::RopeScaling;
  auto json_of = [](const nvfp4::model::ModelConfig& c) {
    return nlohmann::json::parse(to_config_json(nvfp4::infer::hf_config(c, 256, 256)));
  };
  auto round_trips = [](const nvfp4::model::ModelConfig& c) {
    EXPECT_EQ(nvfp4::infer::model_config(nvfp4::infer::hf_config(c, 256, 256)).to_json(), c.to_json());
  };
  auto c = a_model();
  c.head_dim = 24, c.tie_embeddings = true;
  c.rope_scaling = {RopeScaling::llama3, 8.0f, 1.0f, 4.0f, 8192};
  auto j = json_of(c);
  EXPECT_EQ(j.at("architectures")[0], "LlamaForCausalLM");
  EXPECT_EQ(j.at("head_dim"), 24);
  EXPECT_EQ(j.at("tie_word_embeddings"), true);
  EXPECT_EQ(j.at("attention_bias"), false);
  EXPECT_EQ(j.at("rope_scaling"), nlohmann::json::parse(R"({"rope_type": "llama3", "factor": 8.0,
      "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})"));
  EXPECT_FALSE(j.contains("sliding_window"));
  round_trips(c);
  c.rope_scaling = {RopeScaling::linear, 2.5f};
  EXPECT_EQ(json_of(c).at("rope_scaling"), nlohmann::json::parse(R"({"rope_type": "linear", "factor": 2.5})"));
  round_trips(c);

  c = a_model();
  c.sliding_window = 48;
  j = json_of(c);
  EXPECT_EQ(j.at("architectures")[0], "MistralForCausalLM");
  EXPECT_EQ(j.at("model_type"), "mistral");
  EXPECT_EQ(j.at("sliding_window"), 48);
  EXPECT_FALSE(j.contains("attention_bias"));
  round_trips(c);

  c.attention_bias = true;  // q/k/v biases: Qwen2, with its window fields
  j = json_of(c);
  EXPECT_EQ(j.at("architectures")[0], "Qwen2ForCausalLM");
  EXPECT_EQ(j.at("model_type"), "qwen2");
  EXPECT_EQ(j.at("use_sliding_window"), true);
  EXPECT_EQ(j.at("sliding_window"), 48);
  EXPECT_EQ(j.at("max_window_layers"), 0);
  EXPECT_FALSE(j.contains("attention_bias"));  // Qwen2's biases come with the architecture
  round_trips(c);
  c.sliding_window = 0;
  j = json_of(c);
  EXPECT_EQ(j.at("use_sliding_window"), false);
  EXPECT_TRUE(j.at("sliding_window").is_null());
  round_trips(c);

  c = a_model();
  c.qk_norm = true;
  j = json_of(c);
  EXPECT_EQ(j.at("architectures")[0], "Qwen3ForCausalLM");
  EXPECT_EQ(j.at("model_type"), "qwen3");
  EXPECT_EQ(j.at("attention_bias"), false);
  EXPECT_EQ(j.at("use_sliding_window"), false);
  round_trips(c);
  c.attention_bias = true;
  EXPECT_EQ(json_of(c).at("attention_bias"), true);
  round_trips(c);  // its o_proj biases are zero in the export, which a folder load checks
}

}  // namespace
