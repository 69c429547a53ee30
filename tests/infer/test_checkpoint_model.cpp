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
      {with("attention_bias", true), "\"attention_bias\" is true"},
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
}

}  // namespace
