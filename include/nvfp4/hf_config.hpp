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

// transformers' "rope_scaling": rope_type "linear" (factor) or "llama3" (all four numbers).
struct HfRopeScaling {
  std::string rope_type;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int original_max_position_embeddings = 8192;
};

// The fields of a Llama-family config.json. The architecture says what the fields do not:
// Qwen2ForCausalLM has q/k/v biases, Qwen3ForCausalLM RMSNorms of each query and key head.
struct HfLlamaConfig {
  std::string architecture = "LlamaForCausalLM";  // or Qwen2ForCausalLM, Qwen3ForCausalLM, MistralForCausalLM
  std::string model_type = "llama";               // "llama", "qwen2", "qwen3", "mistral"
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
  std::optional<HfRopeScaling> rope_scaling;  // null when absent
  // "attention_bias" of llama and qwen3: biases on q_proj, k_proj, v_proj AND o_proj. (Not
  // written for qwen2, whose q/k/v biases come with the architecture, nor for mistral.)
  bool attention_bias = false;
  // The window of a sliding-window attention (none when empty): mistral's "sliding_window";
  // qwen2 / qwen3 write "use_sliding_window", "sliding_window" and "max_window_layers" (the
  // layers from that index on slide).
  std::optional<int> sliding_window;
  int max_window_layers = 0;
  std::optional<int> bos_token_id, eos_token_id;
  std::string torch_dtype;  // as read (informational: the weights' own dtypes are what is loaded)
  // More end-of-text ids than eos_token_id's first (a list there, or generation_config.json's).
  std::vector<int> extra_eos_token_ids;
};

// config.json text (two-space indented, the fields in Hugging Face's names that model_type's
// config class has; BF16 weights).
std::string to_config_json(const HfLlamaConfig& c);

// Reads a config.json's text; `path` names the file in errors. RoPE as transformers 4 writes it
// (rope_theta + rope_scaling) or 5 (rope_parameters). Another architecture, rope type,
// activation, an MLP bias, a sliding window on some layers only (Qwen's max_window_layers,
// layer_types), and missing or mistyped fields are nvfp4::Error naming the file and the field.
HfLlamaConfig parse_config_json(std::string_view text, const std::string& path);

}  // namespace nvfp4::io
