// Hugging Face config.json, both directions (see include/nvfp4/hf_config.hpp).
#include "nvfp4/hf_config.hpp"

#include <nlohmann/json.hpp>

#include "nvfp4/error.hpp"

namespace nvfp4::io {

std::string to_config_json(const HfLlamaConfig& c) {
  const bool qwen = c.model_type == "qwen2" || c.model_type == "qwen3";
  nlohmann::ordered_json j;
  j["architectures"] = {c.architecture};
  j["model_type"] = c.model_type;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling) {
    const HfRopeScaling& r = *c.rope_scaling;
    nlohmann::ordered_json rs;
    rs["rope_type"] = r.rope_type;
    rs["factor"] = r.factor;
    if (r.rope_type == "llama3") {
      rs["low_freq_factor"] = r.low_freq_factor;
      rs["high_freq_factor"] = r.high_freq_factor;
      rs["original_max_position_embeddings"] = r.original_max_position_embeddings;
    }
    j["rope_scaling"] = rs;
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["hidden_act"] = "silu";
  if (c.model_type == "llama" || c.model_type == "qwen3") j["attention_bias"] = c.attention_bias;
  if (c.model_type == "llama") j["mlp_bias"] = false;
  const nlohmann::json window = c.sliding_window ? nlohmann::json(*c.sliding_window) : nlohmann::json(nullptr);
  if (c.model_type == "mistral") j["sliding_window"] = window;
  if (qwen) {
    j["use_sliding_window"] = c.sliding_window.has_value();
    j["sliding_window"] = window;
    j["max_window_layers"] = c.max_window_layers;
  }
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["initializer_range"] = c.initializer_range;
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_id) j["eos_token_id"] = *c.eos_token_id;
  j["torch_dtype"] = "bfloat16";
  j["use_cache"] = true;
  return j.dump(2) + "\n";
}

HfLlamaConfig parse_config_json(std::string_view text, const std::string& path) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) throw Error(path + ": not a JSON object; a config.json is one");
  auto fail = [&](const std::string& field, const std::string& what) -> void {
    throw Error(path + ": field \"" + field + "\" " + what);
  };
  auto need = [&](const char* field) -> const nlohmann::json& {
    if (!j.contains(field)) fail(field, "is missing");
    return j.at(field);
  };
  auto integer = [&](const char* field) {
    const auto& v = need(field);
    if (!v.is_number_integer() || v.get<int64_t>() <= 0 || v.get<int64_t>() > (int64_t{1} << 30)) {
      fail(field, "is " + v.dump() + "; expected a positive integer");
    }
    return v.get<int>();
  };
  auto number = [&](const char* field, double fallback) {
    if (!j.contains(field)) return fallback;
    const auto& v = j.at(field);
    if (!v.is_number() || !(v.get<double>() > 0)) fail(field, "is " + v.dump() + "; expected a positive number");
    return v.get<double>();
  };
  HfLlamaConfig c;
  const auto& arch = need("architectures");
  if (!arch.is_array() || arch.size() != 1 || !arch[0].is_string()) {
    fail("architectures", "is " + arch.dump() + "; expected one architecture name");
  }
  c.architecture = arch[0].get<std::string>();
  if (c.architecture != "LlamaForCausalLM") {
    fail("architectures", "is " + c.architecture + "; this version reads LlamaForCausalLM");
  }
  if (j.contains("model_type")) c.model_type = j.at("model_type").is_string() ? j.at("model_type").get<std::string>() : "";
  c.hidden_size = integer("hidden_size");
  c.intermediate_size = integer("intermediate_size");
  c.num_hidden_layers = integer("num_hidden_layers");
  c.num_attention_heads = integer("num_attention_heads");
  c.num_key_value_heads = j.contains("num_key_value_heads") ? integer("num_key_value_heads") : c.num_attention_heads;
  c.head_dim = j.contains("head_dim") ? integer("head_dim") : c.hidden_size / c.num_attention_heads;
  c.vocab_size = integer("vocab_size");
  c.max_position_embeddings = integer("max_position_embeddings");
  c.rms_norm_eps = number("rms_norm_eps", c.rms_norm_eps);
  c.rope_theta = number("rope_theta", c.rope_theta);
  c.initializer_range = number("initializer_range", c.initializer_range);
  if (j.contains("rope_scaling") && !j.at("rope_scaling").is_null()) {
    fail("rope_scaling", "is " + j.at("rope_scaling").dump() + "; this version reads models without rope scaling");
  }
  for (const char* bias : {"attention_bias", "mlp_bias"}) {
    if (j.contains(bias) && j.at(bias) != false) fail(bias, "is " + j.at(bias).dump() + "; this version reads models without biases");
  }
  if (j.contains("hidden_act") && j.at("hidden_act") != "silu") {
    fail("hidden_act", "is " + j.at("hidden_act").dump() + "; Llama's MLP is silu");
  }
  if (j.contains("tie_word_embeddings")) {
    if (!j.at("tie_word_embeddings").is_boolean()) fail("tie_word_embeddings", "is not true or false");
    c.tie_word_embeddings = j.at("tie_word_embeddings").get<bool>();
  }
  for (auto [field, slot] : {std::pair{"bos_token_id", &c.bos_token_id}, std::pair{"eos_token_id", &c.eos_token_id}}) {
    if (!j.contains(field) || j.at(field).is_null()) continue;
    if (!j.at(field).is_number_integer()) fail(field, "is " + j.at(field).dump() + "; expected a token id");
    *slot = j.at(field).get<int>();
  }
  return c;
}

}  // namespace nvfp4::io
