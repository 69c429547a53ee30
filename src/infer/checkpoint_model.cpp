// Models out of checkpoints and into Hugging Face folders (see include/nvfp4/checkpoint_model.hpp).
#include "nvfp4/checkpoint_model.hpp"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <span>
#include <vector>

#include "format/scalar.hpp"
#include "nvfp4/checkpoint.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_tokenizer.hpp"
#include "nvfp4/output_paths.hpp"
#include "nvfp4/safetensors.hpp"

namespace nvfp4::infer {

namespace fs = std::filesystem;

model::CpuModel load_checkpoint_model(const std::string& checkpoint) {
  const io::CheckpointReader ck = io::CheckpointReader::open(checkpoint);
  model::CpuModel m(model::ModelConfig::from_json(ck.metadata(io::kCheckpointModelConfigKey)));
  for (const auto& s : m.specs()) ck.read_finite_into(s.name, m.params().subspan(s.offset, s.numel), s.shape);
  return m;
}

std::string checkpoint_tokenizer_description(const std::string& checkpoint) {
  return io::CheckpointReader::open(checkpoint).metadata(io::kCheckpointTokenizerKey);
}

std::unique_ptr<io::Tokenizer> load_checkpoint_tokenizer(const std::string& checkpoint) {
  return io::make_tokenizer_from_description(checkpoint_tokenizer_description(checkpoint),
                                             checkpoint + " (metadata " + io::kCheckpointTokenizerKey + ")");
}

io::HfLlamaConfig hf_config(const model::ModelConfig& c, std::optional<int> bos, std::optional<int> eos) {
  io::HfLlamaConfig h;
  // The architecture that has the model's features (see checkpoint_model.hpp).
  if (c.qk_norm) {
    h.architecture = "Qwen3ForCausalLM", h.model_type = "qwen3";
    h.attention_bias = c.attention_bias;  // then o_proj has a bias too: export_hf writes zeros
  } else if (c.attention_bias) {
    h.architecture = "Qwen2ForCausalLM", h.model_type = "qwen2";
  } else if (c.sliding_window > 0) {
    h.architecture = "MistralForCausalLM", h.model_type = "mistral";
  }
  h.hidden_size = c.d_model;
  h.intermediate_size = c.ffn();
  h.num_hidden_layers = c.n_layer;
  h.num_attention_heads = c.n_head;
  h.num_key_value_heads = c.n_kv_head;
  h.head_dim = c.head_size();
  h.vocab_size = c.vocab;
  h.max_position_embeddings = c.seq_len;
  // The FP32 fields as our config's JSON spells them (shortest round-trip text of the float).
  const auto mc = nlohmann::json::parse(c.to_json());
  h.rms_norm_eps = mc.at("norm_eps").get<double>();
  h.rope_theta = mc.at("rope_theta").get<double>();
  h.initializer_range = mc.at("init_std").get<double>();
  h.tie_word_embeddings = c.tie_embeddings;
  if (c.rope_scaling.type != model::RopeScaling::none) {
    const auto& r = mc.at("rope_scaling");
    io::HfRopeScaling s;
    s.rope_type = r.at("type").get<std::string>();  // "linear" or "llama3", transformers' names too
    s.factor = r.at("factor").get<double>();
    if (c.rope_scaling.type == model::RopeScaling::llama3) {
      s.low_freq_factor = r.at("low_freq_factor").get<double>();
      s.high_freq_factor = r.at("high_freq_factor").get<double>();
      s.original_max_position_embeddings = c.rope_scaling.original_max_position;
    }
    h.rope_scaling = s;
  }
  if (c.sliding_window > 0) h.sliding_window = c.sliding_window;
  h.max_window_layers = c.sliding_window > 0 ? 0 : c.n_layer;  // qwen2 / qwen3: every layer slides, or none
  h.bos_token_id = bos;
  h.eos_token_id = eos;
  return h;
}

model::ModelConfig model_config(const io::HfLlamaConfig& h) {
  model::ModelConfig c;
  const std::string& a = h.architecture;
  if (a != "LlamaForCausalLM" && a != "Qwen2ForCausalLM" && a != "Qwen3ForCausalLM" && a != "MistralForCausalLM") {
    throw Error("config.json: architecture " + a +
                " is not one this model has (LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MistralForCausalLM)");
  }
  if (h.sliding_window && a == "LlamaForCausalLM") throw Error("config.json: LlamaForCausalLM has no sliding window");
  // Llama's and Qwen3's attention_bias also give o_proj a bias, which this model has not: a
  // folder is read only when those biases are zero (what export_hf writes; HfModel checks).
  c.attention_bias = a == "Qwen2ForCausalLM" || h.attention_bias;
  c.qk_norm = a == "Qwen3ForCausalLM";
  c.n_layer = h.num_hidden_layers;
  c.d_model = h.hidden_size;
  c.n_head = h.num_attention_heads;
  c.n_kv_head = h.num_key_value_heads;
  c.head_dim = h.head_dim * h.num_attention_heads == h.hidden_size ? 0 : h.head_dim;
  c.d_ffn = h.intermediate_size;
  c.vocab = h.vocab_size;
  c.seq_len = h.max_position_embeddings;
  c.rope_theta = static_cast<float>(h.rope_theta);
  c.norm_eps = static_cast<float>(h.rms_norm_eps);
  c.init_std = static_cast<float>(h.initializer_range);
  c.tie_embeddings = h.tie_word_embeddings;
  if (h.sliding_window) {
    if (a != "MistralForCausalLM" && h.max_window_layers != 0 && h.max_window_layers < h.num_hidden_layers) {
      throw Error("config.json: max_window_layers " + std::to_string(h.max_window_layers) +
                  ": only some layers slide; this model's window is every layer's");
    }
    if (a == "MistralForCausalLM" || h.max_window_layers == 0) c.sliding_window = *h.sliding_window;
  }
  if (h.rope_scaling) {
    const io::HfRopeScaling& r = *h.rope_scaling;
    if (r.rope_type == "linear") {
      c.rope_scaling.type = model::RopeScaling::linear;
    } else if (r.rope_type == "llama3") {
      c.rope_scaling.type = model::RopeScaling::llama3;
      c.rope_scaling.low_freq_factor = static_cast<float>(r.low_freq_factor);
      c.rope_scaling.high_freq_factor = static_cast<float>(r.high_freq_factor);
      c.rope_scaling.original_max_position = r.original_max_position_embeddings;
    } else {
      throw Error("config.json: rope_scaling type \"" + r.rope_type + "\" is not linear or llama3");
    }
    c.rope_scaling.factor = static_cast<float>(r.factor);
  }
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(std::string("config.json describes a model nvfp4 cannot run: ") + e.what());
  }
  return c;
}

HfExport export_hf(const std::string& checkpoint, const std::string& dir_name, const std::string& check_text,
                   bool force) {
  const fs::path dir(dir_name);
  io::require_output_folder("output folder", dir_name);
  for (const char* name : kHfExportFiles) io::refuse_output_over_input((dir / name).string(), {checkpoint});
  model::CpuModel m = load_checkpoint_model(checkpoint);
  const auto tok = load_checkpoint_tokenizer(checkpoint);
  const model::ModelConfig& c = m.config();
  if (fs::exists(dir) && !fs::is_empty(dir) && !force) {
    throw Error(dir_name + " is not empty; choose another folder or pass --force to replace the files this writes");
  }
  fs::create_directories(dir);

  const io::HfLlamaConfig hf = hf_config(c, tok->eot_token(), tok->eot_token());

  // Parameters rounded to BF16 (RNE), the dtype of the export; the reference logits below use
  // exactly these values.
  std::vector<std::vector<uint16_t>> bf16(m.specs().size());
  std::vector<io::TensorRef> refs;
  for (size_t i = 0; i < m.specs().size(); ++i) {
    const auto& s = m.specs()[i];
    bf16[i].resize(static_cast<size_t>(s.numel));
    float* p = m.params().data() + s.offset;
    for (int64_t k = 0; k < s.numel; ++k) {
      bf16[i][k] = fmt::bf16_encode(p[k]);
      p[k] = fmt::bf16_decode(bf16[i][k]);
    }
    refs.push_back({s.name, DType::BF16, s.shape,
                    std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bf16[i].data()), bf16[i].size() * 2)});
  }
  // Qwen3's attention_bias also biases o_proj, which this model has not: zeros (BF16 0 is 0x0000).
  const std::vector<uint16_t> zero_bias(hf.attention_bias ? static_cast<size_t>(c.d_model) : 0, 0);
  for (int l = 0; hf.attention_bias && l < c.n_layer; ++l) {
    refs.push_back({"model.layers." + std::to_string(l) + ".self_attn.o_proj.bias", DType::BF16, {c.d_model},
                    std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(zero_bias.data()), zero_bias.size() * 2)});
  }
  io::write_file((dir / "model.safetensors").string(), refs, {{"format", "pt"}, {"nvfp4.source", checkpoint}});

  io::write_text_file_atomic((dir / "config.json").string(), io::to_config_json(hf));
  const nlohmann::ordered_json gen = {{"bos_token_id", tok->eot_token()}, {"eos_token_id", tok->eot_token()}};
  io::write_text_file_atomic((dir / "generation_config.json").string(), gen.dump(2) + "\n");
  io::write_text_file_atomic((dir / "nvfp4_tokenizer.json").string(), tok->describe() + "\n");
  if (const auto* hf = dynamic_cast<const io::HfTokenizer*>(tok.get())) {
    io::write_text_file_atomic((dir / "tokenizer.json").string(), hf->json());
    const nlohmann::ordered_json cfg = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                                        {"eos_token", hf->id_to_token(hf->eot_token()).value_or("")},
                                        {"model_max_length", c.seq_len},
                                        {"clean_up_tokenization_spaces", false}};
    io::write_text_file_atomic((dir / "tokenizer_config.json").string(), cfg.dump(2) + "\n");
  }

  // Reference: our FP32 logits from the BF16 weights on [EOT] + the check text (<= seq_len).
  std::vector<int32_t> ids = {tok->eot_token()};
  tok->encode_append(check_text, ids);
  if (ids.size() > size_t(c.seq_len)) ids.resize(size_t(c.seq_len));
  const int T = static_cast<int>(ids.size());
  m.forward(ids.data(), nullptr, 1, T);
  const auto logits = m.logits();
  io::write_file((dir / "nvfp4_reference_logits.safetensors").string(),
                 {{"input_ids", DType::I32, {1, T},
                   std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(ids.data()), ids.size() * 4)},
                  {"logits", DType::F32, {1, T, c.vocab},
                   std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(logits.data()), logits.size() * 4)}},
                 {{"nvfp4.note", "FP32 logits of the nvfp4 CPU model computed from the exported BF16 weights"}});
  return HfExport{c.num_params(), T};
}

}  // namespace nvfp4::infer
