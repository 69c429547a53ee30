// A Hugging Face model folder with random weights, written by a test: config.json in the
// architecture's own fields (Llama, Mistral, Qwen2, Qwen3) and model.safetensors (F32 or BF16),
// for the engine, evaluation and CLI tests. The parameters are returned too (FP32, param_specs()
// order, already rounded to the stored dtype) so a test can run the CPU model on them. And the
// helpers the CPU and CUDA engine tests share.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "format/scalar.hpp"
#include "nvfp4/engine.hpp"
#include "nvfp4/model.hpp"
#include "nvfp4/safetensors.hpp"

namespace nvfp4::test {

// The config of a tiny model of `arch` ("llama", "mistral", "qwen2", "qwen3") with its features.
inline model::ModelConfig tiny_config(const std::string& arch) {
  model::ModelConfig c;
  c.n_layer = 2, c.d_model = 64, c.n_head = 4, c.n_kv_head = 2, c.d_ffn = 96, c.vocab = 97, c.seq_len = 64;
  c.rope_theta = 10000.0f, c.norm_eps = 1e-5f;
  if (arch == "llama") {
    c.tie_embeddings = true;
    c.rope_scaling.type = model::RopeScaling::llama3;
    c.rope_scaling.factor = 8.0f, c.rope_scaling.low_freq_factor = 1.0f, c.rope_scaling.high_freq_factor = 4.0f;
    c.rope_scaling.original_max_position = 16;
  } else if (arch == "mistral") {
    c.n_kv_head = 1;
    c.sliding_window = 6;
  } else if (arch == "qwen2") {
    c.attention_bias = true;
    c.tie_embeddings = true;
  } else if (arch == "qwen3") {
    c.qk_norm = true;
    c.head_dim = 32;  // != 64 / 4
  }
  return c;
}

inline std::string tiny_config_json(const std::string& arch, const model::ModelConfig& c) {
  nlohmann::ordered_json j;
  const char* names[][2] = {{"llama", "LlamaForCausalLM"},
                            {"mistral", "MistralForCausalLM"},
                            {"qwen2", "Qwen2ForCausalLM"},
                            {"qwen3", "Qwen3ForCausalLM"}};
  for (auto& n : names) {
    if (arch == n[0]) j["architectures"] = {n[1]};
  }
  j["model_type"] = arch;
  j["hidden_size"] = c.d_model;
  j["intermediate_size"] = c.ffn();
  j["num_hidden_layers"] = c.n_layer;
  j["num_attention_heads"] = c.n_head;
  j["num_key_value_heads"] = c.n_kv_head;
  if (c.head_dim) j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab;
  j["max_position_embeddings"] = c.seq_len;
  j["rms_norm_eps"] = c.norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = c.tie_embeddings;
  if (c.rope_scaling.type == model::RopeScaling::llama3) {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", c.rope_scaling.factor},
                         {"low_freq_factor", c.rope_scaling.low_freq_factor},
                         {"high_freq_factor", c.rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings", c.rope_scaling.original_max_position}};
  } else if (c.rope_scaling.type == model::RopeScaling::linear) {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_scaling.factor}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  if (arch == "mistral") j["sliding_window"] = c.sliding_window ? nlohmann::ordered_json(c.sliding_window) : nullptr;
  if (arch == "qwen2" || arch == "qwen3") j["use_sliding_window"] = false;
  j["eos_token_id"] = c.vocab - 1;
  j["torch_dtype"] = "float32";
  return j.dump(2);
}

// Random parameters with a realistic spread: matrices N(0, 0.08^2), norm gains in [0.5, 1.5],
// biases N(0, 0.05^2).
inline std::vector<float> tiny_params(const model::ModelConfig& c, uint64_t seed) {
  const auto specs = model::param_specs(c);
  std::vector<float> p(static_cast<size_t>(specs.back().offset + specs.back().numel));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  for (const auto& s : specs) {
    const bool bias = s.name.size() > 5 && s.name.substr(s.name.size() - 5) == ".bias";
    for (int64_t i = 0; i < s.numel; ++i) {
      float& x = p[static_cast<size_t>(s.offset + i)];
      x = s.shape.size() == 2 ? 0.08f * n(rng) : bias ? 0.05f * n(rng) : u(rng);
    }
  }
  return p;
}

// Writes dir/config.json and dir/model.safetensors (dtype F32 or BF16); returns the parameters
// as stored (BF16-rounded for BF16).
inline std::vector<float> write_tiny_hf_model(const std::filesystem::path& dir, const std::string& arch,
                                              const model::ModelConfig& c, uint64_t seed, DType dtype = DType::F32) {
  std::filesystem::create_directories(dir);
  std::vector<float> p = tiny_params(c, seed);
  const auto specs = model::param_specs(c);
  std::vector<std::vector<uint16_t>> half(specs.size());
  std::vector<io::TensorRef> refs;
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& s = specs[i];
    float* x = p.data() + s.offset;
    if (dtype == DType::BF16) {
      half[i].resize(static_cast<size_t>(s.numel));
      for (int64_t k = 0; k < s.numel; ++k) {
        half[i][k] = fmt::bf16_encode(x[k]);
        x[k] = fmt::bf16_decode(half[i][k]);
      }
      refs.push_back({s.name, DType::BF16, s.shape,
                      {reinterpret_cast<const uint8_t*>(half[i].data()), half[i].size() * 2}});
    } else {
      refs.push_back({s.name, DType::F32, s.shape,
                      {reinterpret_cast<const uint8_t*>(x), static_cast<size_t>(s.numel) * 4}});
    }
  }
  io::write_file((dir / "model.safetensors").string(), refs);
  io::write_text_file_atomic((dir / "config.json").string(), tiny_config_json(arch, c));
  return p;
}

// ---- what the engine tests share ----------------------------------------------------------------

inline const std::vector<std::string> kTinyArchs = {"llama", "mistral", "qwen2", "qwen3"};

// n token ids in [0, vocab), deterministic in seed.
inline std::vector<int32_t> some_tokens(int n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return t;
}

// Largest |a - b| relative to b's range (sizes must match: a test failure otherwise).
inline double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float lo = INFINITY, hi = -INFINITY;
  double d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    lo = std::min(lo, b[i]), hi = std::max(hi, b[i]);
    d = std::max(d, std::fabs(static_cast<double>(a[i]) - b[i]));
  }
  return d / std::max(1e-30, static_cast<double>(hi - lo));
}

// The logits of one chunk run alone: every token's (all) or the last one's.
inline std::vector<float> run_chunk(infer::Engine& e, int slot, const std::vector<int32_t>& t, bool all) {
  std::vector<float> logits;
  const infer::SeqChunk c{slot, t, all};
  e.forward(std::span<const infer::SeqChunk>(&c, 1), logits);
  return logits;
}

}  // namespace nvfp4::test
