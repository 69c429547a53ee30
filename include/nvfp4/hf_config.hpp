// Hugging Face config.json for Llama-family models, both directions: what `export-hf` writes
// and what loading a Hugging Face folder reads. A plain description of the fields (io knows no
// model types); infer/ maps it to and from model::ModelConfig.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace nvfp4::io {

struct HfLlamaConfig {
  std::string architecture = "LlamaForCausalLM";
  std::string model_type = "llama";
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int head_dim = 0;
  int vocab_size = 0;
  int max_position_embeddings = 0;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  double initializer_range = 0.02;
  bool tie_word_embeddings = false;
  std::optional<int> bos_token_id, eos_token_id;
};

// config.json text (two-space indented, fields in Hugging Face's names; BF16 weights).
std::string to_config_json(const HfLlamaConfig& c);

// Reads a config.json's text; `path` names the file in errors. Architectures other than
// LlamaForCausalLM, rope scaling, attention or MLP biases, and missing or mistyped fields are
// nvfp4::Error naming the file and the field.
HfLlamaConfig parse_config_json(std::string_view text, const std::string& path);

}  // namespace nvfp4::io
