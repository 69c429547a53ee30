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
  auto has = [&](const char* field) { return j.contains(field) && !j.at(field).is_null(); };
  auto need = [&](const char* field) -> const nlohmann::json& {
    if (!has(field)) fail(field, "is missing");
    return j.at(field);
  };
  auto integer_of = [&](const nlohmann::json& v, const std::string& field) {
    if (!v.is_number_integer() || v.get<int64_t>() <= 0 || v.get<int64_t>() > (int64_t{1} << 30)) {
      fail(field, "is " + v.dump() + "; expected a positive integer");
    }
    return v.get<int>();
  };
  auto integer = [&](const char* field) { return integer_of(need(field), field); };
  auto number_of = [&](const nlohmann::json& v, const std::string& field) {
    if (!v.is_number() || !(v.get<double>() > 0)) fail(field, "is " + v.dump() + "; expected a positive number");
    return v.get<double>();
  };
  auto number = [&](const char* field, double fallback) { return has(field) ? number_of(j.at(field), field) : fallback; };
  auto boolean = [&](const char* field, bool fallback) {
    if (!has(field)) return fallback;
    if (!j.at(field).is_boolean()) fail(field, "is " + j.at(field).dump() + "; expected true or false");
    return j.at(field).get<bool>();
  };
  HfLlamaConfig c;
  const auto& arch = need("architectures");
  if (!arch.is_array() || arch.size() != 1 || !arch[0].is_string()) {
    fail("architectures", "is " + arch.dump() + "; expected one architecture name");
  }
  c.architecture = arch[0].get<std::string>();
  const bool llama = c.architecture == "LlamaForCausalLM", mistral = c.architecture == "MistralForCausalLM",
             qwen2 = c.architecture == "Qwen2ForCausalLM", qwen3 = c.architecture == "Qwen3ForCausalLM";
  if (!llama && !mistral && !qwen2 && !qwen3) {
    fail("architectures", "is " + c.architecture +
                              "; nvfp4 reads LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM");
  }
  c.model_type = has("model_type") && j.at("model_type").is_string() ? j.at("model_type").get<std::string>() : "";
  c.hidden_size = integer("hidden_size");
  c.intermediate_size = integer("intermediate_size");
  c.num_hidden_layers = integer("num_hidden_layers");
  c.num_attention_heads = integer("num_attention_heads");
  c.num_key_value_heads = has("num_key_value_heads") ? integer("num_key_value_heads") : c.num_attention_heads;
  c.head_dim = has("head_dim") ? integer("head_dim") : c.hidden_size / c.num_attention_heads;
  c.vocab_size = integer("vocab_size");
  c.max_position_embeddings = integer("max_position_embeddings");
  c.rms_norm_eps = number("rms_norm_eps", c.rms_norm_eps);
  c.initializer_range = number("initializer_range", c.initializer_range);
  c.tie_word_embeddings = boolean("tie_word_embeddings", false);
  if (has("torch_dtype") && j.at("torch_dtype").is_string()) c.torch_dtype = j.at("torch_dtype").get<std::string>();
  if (c.torch_dtype.empty() && has("dtype") && j.at("dtype").is_string()) c.torch_dtype = j.at("dtype").get<std::string>();

  // RoPE: rope_theta + rope_scaling (transformers 4), or one rope_parameters object (5).
  c.rope_theta = number("rope_theta", c.rope_theta);
  const char* rope_field = has("rope_parameters") ? "rope_parameters" : "rope_scaling";
  if (has(rope_field)) {
    const auto& r = j.at(rope_field);
    const std::string f = rope_field;
    if (!r.is_object()) fail(f, "is " + r.dump() + "; expected an object or null");
    const char* type_key = r.contains("rope_type") ? "rope_type" : "type";
    if (!r.contains(type_key) || !r.at(type_key).is_string()) fail(f + ".rope_type", "is missing");
    const std::string type = r.at(type_key).get<std::string>();
    if (r.contains("rope_theta")) c.rope_theta = number_of(r.at("rope_theta"), f + ".rope_theta");
    if (type != "default" && type != "linear" && type != "llama3") {
      fail(f + ".rope_type", "is \"" + type + "\"; nvfp4 reads \"default\", \"linear\" and \"llama3\"");
    }
    if (type != "default") {
      HfRopeScaling s;
      s.rope_type = type;
      s.factor = number_of(r.value("factor", nlohmann::json()), f + ".factor");
      if (type == "llama3") {
        s.low_freq_factor = number_of(r.value("low_freq_factor", nlohmann::json()), f + ".low_freq_factor");
        s.high_freq_factor = number_of(r.value("high_freq_factor", nlohmann::json()), f + ".high_freq_factor");
        s.original_max_position_embeddings = integer_of(r.value("original_max_position_embeddings", nlohmann::json()),
                                                        f + ".original_max_position_embeddings");
      }
      c.rope_scaling = s;
    }
  }

  // Biases: Qwen2's q/k/v biases come with the architecture; Llama's and Qwen3's attention_bias
  // gives q, k, v and o_proj biases (Mistral has none).
  if (boolean("mlp_bias", false)) fail("mlp_bias", "is true; nvfp4 reads models without MLP biases");
  c.attention_bias = (llama || qwen3) && boolean("attention_bias", false);
  if (mistral && boolean("attention_bias", false)) fail("attention_bias", "is true; Mistral has no biases");
  if (has("hidden_act") && j.at("hidden_act") != "silu") {
    fail("hidden_act", "is " + j.at("hidden_act").dump() + "; the Llama family's MLP is silu");
  }
  // Sliding window: Mistral's on every layer; Qwen's only with use_sliding_window, on the layers
  // from max_window_layers on (all of them or none are what nvfp4 runs).
  if (mistral && has("sliding_window")) c.sliding_window = integer("sliding_window");
  if ((qwen2 || qwen3) && boolean("use_sliding_window", false)) {
    c.max_window_layers = has("max_window_layers") ? j.at("max_window_layers").get<int>() : 0;
    if (c.max_window_layers > 0 && c.max_window_layers < c.num_hidden_layers) {
      fail("max_window_layers", "is " + std::to_string(c.max_window_layers) +
                                    ": only some layers slide; nvfp4 runs a window on every layer or none");
    }
    if (c.max_window_layers <= 0) c.sliding_window = integer("sliding_window");
  }
  if (has("layer_types")) {
    const auto& lt = j.at("layer_types");
    const std::string want = c.sliding_window ? "sliding_attention" : "full_attention";
    if (!lt.is_array()) fail("layer_types", "is not a list");
    for (const auto& t : lt) {
      if (t != want) fail("layer_types", "holds " + t.dump() + "; nvfp4 runs models whose layers all use \"" + want + "\"");
    }
  }
  if (has("pretraining_tp") && j.at("pretraining_tp") != 1 && !j.at("pretraining_tp").is_number_integer()) {
    fail("pretraining_tp", "is " + j.at("pretraining_tp").dump() + "; expected an integer");
  }
  if (has("bos_token_id")) {
    if (!j.at("bos_token_id").is_number_integer()) fail("bos_token_id", "is " + j.at("bos_token_id").dump() + "; expected a token id");
    c.bos_token_id = j.at("bos_token_id").get<int>();
  }
  if (has("eos_token_id")) {
    const auto& e = j.at("eos_token_id");
    std::vector<int> ids;
    if (e.is_number_integer()) ids.push_back(e.get<int>());
    else if (e.is_array()) {
      for (const auto& x : e) {
        if (!x.is_number_integer()) fail("eos_token_id", "is " + e.dump() + "; expected a token id or a list of them");
        ids.push_back(x.get<int>());
      }
    } else {
      fail("eos_token_id", "is " + e.dump() + "; expected a token id or a list of them");
    }
    if (!ids.empty()) {
      c.eos_token_id = ids[0];
      c.extra_eos_token_ids.assign(ids.begin() + 1, ids.end());
    }
  }
  return c;
}

}  // namespace nvfp4::io
