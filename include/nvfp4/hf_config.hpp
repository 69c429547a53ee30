// Hugging Face config.json for Llama-family models, both directions: what `export-hf` writes
// and what loading a Hugging Face folder reads. A plain description of the fields (io knows no
// model types); infer/ maps it to and from model::ModelConfig.
//
// Architectures read: LlamaForCausalLM (Llama 2/3/3.1/3.2, TinyLlama, SmolLM), MistralForCausalLM
// (sliding_window), Qwen2ForCausalLM (q/k/v biases), Qwen3ForCausalLM (q/k RMSNorm).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

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
  // The Llama family's differences, as the architecture and its fields say:
  bool qkv_bias = false;    // q_proj, k_proj, v_proj have biases (Qwen2; Qwen3's attention_bias)
  bool qk_norm = false;     // q_norm / k_norm over each head (Qwen3)
  int sliding_window = 0;   // Mistral's sliding_window; 0: none (null)
  // rope_scaling: rope_type "default" (none), "linear" or "llama3".
  std::string rope_type = "default";
  double rope_factor = 1.0, rope_low_freq_factor = 1.0, rope_high_freq_factor = 4.0;
  int rope_original_max_position = 8192;  // original_max_position_embeddings
  std::string torch_dtype;                // as written; the weights' own dtypes are what is read
  // More end-of-text ids than eos_token_id's first (a list there, or generation_config.json's).
  std::vector<int> extra_eos_token_ids;
};

// config.json text (two-space indented, fields in Hugging Face's names; BF16 weights).
std::string to_config_json(const HfLlamaConfig& c);

// Reads a config.json's text; `path` names the file in errors. Another architecture, rope type,
// activation, an o_proj or MLP bias, Qwen's per-layer sliding windows, and missing or mistyped
// fields are nvfp4::Error naming the file and the field.
HfLlamaConfig parse_config_json(std::string_view text, const std::string& path);

}  // namespace nvfp4::io
