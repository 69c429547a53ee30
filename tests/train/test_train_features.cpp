// `nvfp4 train --config` with the model features (head_dim, q/k/v biases, q/k norms, tied
// embeddings, a sliding window, RoPE scaling) on the CPU, the checkpoint read back, and
// `export-hf` writing the architecture and config.json fields that have them.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nvfp4/checkpoint.hpp"
#include "nvfp4/checkpoint_model.hpp"
#include "nvfp4/safetensors.hpp"
#include "support/test_support.hpp"
#include "support/tiny_corpus.hpp"

namespace {

namespace fs = std::filesystem;

std::string fresh_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("nvfp4_trainf_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p.string();
}

// Trains `model_json` a few steps on the tiny corpus (CPU) and exports the last checkpoint;
// returns the checkpoint and the export folder.
std::pair<std::string, std::string> train_and_export(const std::string& name, const std::string& model_json) {
  const std::string run_dir = fresh_dir(name), config = fresh_dir(name + "_config.json");
  std::ofstream(config) << model_json;
  auto r = nvfp4::test::run_cli("train --data " + nvfp4::test::tiny_corpus_dir() + " --out " + run_dir + " --config " +
                                config + " --device cpu --batch 4 --steps 6 --no-progress --json");
  EXPECT_EQ(r.status, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output.substr(r.output.find("{\n")));
  EXPECT_EQ(j.at("steps").get<int>(), 6);
  EXPECT_FALSE(j.at("diverged").get<bool>());
  const std::string ckpt = nvfp4::io::latest_checkpoint(run_dir);
  EXPECT_FALSE(ckpt.empty());
  const std::string out = fresh_dir(name + "_hf");
  r = nvfp4::test::run_cli("export-hf " + ckpt + " " + out);
  EXPECT_EQ(r.status, 0) << r.output;
  return {ckpt, out};
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream f(p);
  return nlohmann::json::parse(f);
}

// The checkpoint holds the config and every parameter; the export every parameter in BF16 (the
// same values rounded), plus `extra` zero tensors, and nothing else.
void expect_checkpoint_and_export(const std::string& ckpt, const std::string& out, const std::string& model_json,
                                  const std::vector<std::string>& extra) {
  const nvfp4::model::CpuModel m = nvfp4::infer::load_checkpoint_model(ckpt);
  EXPECT_EQ(m.config().to_json(), nvfp4::model::ModelConfig::from_json(model_json).to_json());
  const auto st = nvfp4::io::SafetensorsFile::open((fs::path(out) / "model.safetensors").string());
  EXPECT_EQ(st.tensors().size(), m.specs().size() + extra.size());
  for (const auto& spec : m.specs()) {
    const auto* t = st.find(spec.name);
    ASSERT_NE(t, nullptr) << spec.name;
    EXPECT_EQ(t->dtype, nvfp4::DType::BF16) << spec.name;
    EXPECT_EQ(t->shape, spec.shape) << spec.name;
  }
  for (const auto& name : extra) {
    const auto* t = st.find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->shape, std::vector<int64_t>{m.config().d_model}) << name;
    for (uint8_t b : st.bytes(*t)) ASSERT_EQ(b, 0) << name;
  }
  EXPECT_EQ(st.find("lm_head.weight") == nullptr, m.config().tie_embeddings);
}

// Every feature at once: Qwen3 (q/k norms), whose attention_bias brings o_proj biases (zeros).
TEST(TrainCli, FeatureModelTrainsOnCpuAndExportsAsQwen3) {
  const std::string model_json = R"({"n_layer": 2, "d_model": 64, "n_head": 2, "n_kv_head": 1, "seq_len": 32,
    "vocab": 257, "head_dim": 24, "attention_bias": true, "qk_norm": true, "tie_embeddings": true,
    "sliding_window": 8, "rope_scaling": {"type": "llama3", "factor": 8, "low_freq_factor": 1,
    "high_freq_factor": 4, "original_max_position": 64}})";
  const auto [ckpt, out] = train_and_export("qwen3", model_json);
  if (HasFailure()) return;
  expect_checkpoint_and_export(ckpt, out, model_json,
                               {"model.layers.0.self_attn.o_proj.bias", "model.layers.1.self_attn.o_proj.bias"});
  const auto cfg = read_json(fs::path(out) / "config.json");
  EXPECT_EQ(cfg.at("architectures"), nlohmann::json::array({"Qwen3ForCausalLM"}));
  EXPECT_EQ(cfg.at("model_type"), "qwen3");
  EXPECT_EQ(cfg.at("head_dim"), 24);
  EXPECT_EQ(cfg.at("hidden_size"), 64);
  EXPECT_EQ(cfg.at("num_key_value_heads"), 1);
  EXPECT_EQ(cfg.at("attention_bias"), true);
  EXPECT_EQ(cfg.at("tie_word_embeddings"), true);
  EXPECT_EQ(cfg.at("use_sliding_window"), true);
  EXPECT_EQ(cfg.at("sliding_window"), 8);
  EXPECT_EQ(cfg.at("max_window_layers"), 0);
  EXPECT_EQ(cfg.at("rope_scaling"), nlohmann::json::parse(R"({"rope_type": "llama3", "factor": 8.0,
      "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64})"));
  EXPECT_TRUE(fs::exists(fs::path(out) / "nvfp4_reference_logits.safetensors"));
  // The trained model samples.
  const auto s = nvfp4::test::run_cli("sample " + ckpt + " --prompt 'The' --tokens 8 --seed 1");
  EXPECT_EQ(s.status, 0) << s.output;
}

// q/k/v biases without q/k norms are Qwen2's; a head size and linear RoPE scaling ride along.
TEST(TrainCli, BiasedModelExportsAsQwen2) {
  const std::string model_json = R"({"n_layer": 1, "d_model": 64, "n_head": 4, "n_kv_head": 2, "seq_len": 32,
    "vocab": 257, "head_dim": 8, "attention_bias": true, "rope_scaling": {"type": "linear", "factor": 2}})";
  const auto [ckpt, out] = train_and_export("qwen2", model_json);
  if (HasFailure()) return;
  expect_checkpoint_and_export(ckpt, out, model_json, {});
  const auto cfg = read_json(fs::path(out) / "config.json");
  EXPECT_EQ(cfg.at("architectures"), nlohmann::json::array({"Qwen2ForCausalLM"}));
  EXPECT_EQ(cfg.at("head_dim"), 8);
  EXPECT_FALSE(cfg.contains("attention_bias"));
  EXPECT_EQ(cfg.at("use_sliding_window"), false);
  EXPECT_EQ(cfg.at("tie_word_embeddings"), false);
  EXPECT_EQ(cfg.at("rope_scaling"), nlohmann::json::parse(R"({"rope_type": "linear", "factor": 2.0})"));
}

// A sliding window alone is Mistral's; tied embeddings stay a Llama.
TEST(TrainCli, WindowedModelExportsAsMistralAndTiedAsLlama) {
  const std::string windowed = R"({"n_layer": 1, "d_model": 64, "n_head": 2, "n_kv_head": 2, "seq_len": 32,
    "vocab": 257, "sliding_window": 5})";
  auto [ckpt, out] = train_and_export("mistral", windowed);
  if (HasFailure()) return;
  expect_checkpoint_and_export(ckpt, out, windowed, {});
  auto cfg = read_json(fs::path(out) / "config.json");
  EXPECT_EQ(cfg.at("architectures"), nlohmann::json::array({"MistralForCausalLM"}));
  EXPECT_EQ(cfg.at("sliding_window"), 5);

  const std::string tied = R"({"n_layer": 1, "d_model": 64, "n_head": 2, "n_kv_head": 2, "seq_len": 32,
    "vocab": 257, "tie_embeddings": true})";
  std::tie(ckpt, out) = train_and_export("llama_tied", tied);
  if (HasFailure()) return;
  expect_checkpoint_and_export(ckpt, out, tied, {});
  cfg = read_json(fs::path(out) / "config.json");
  EXPECT_EQ(cfg.at("architectures"), nlohmann::json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(cfg.at("tie_word_embeddings"), true);
  EXPECT_TRUE(cfg.at("rope_scaling").is_null());
}

}  // namespace
