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
  h.tie_word_embeddings = false;
  h.bos_token_id = bos;
  h.eos_token_id = eos;
  return h;
}

model::ModelConfig model_config(const io::HfLlamaConfig& h) {
  model::ModelConfig c;
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
  c.attention_bias = h.qkv_bias;
  c.qk_norm = h.qk_norm;
  c.tie_embeddings = h.tie_word_embeddings;
  c.sliding_window = h.sliding_window;
  if (h.rope_type == "linear" || h.rope_type == "llama3") {
    c.rope_scaling.type = h.rope_type == "linear" ? model::RopeScaling::linear : model::RopeScaling::llama3;
    c.rope_scaling.factor = static_cast<float>(h.rope_factor);
    c.rope_scaling.low_freq_factor = static_cast<float>(h.rope_low_freq_factor);
    c.rope_scaling.high_freq_factor = static_cast<float>(h.rope_high_freq_factor);
    c.rope_scaling.original_max_position = h.rope_original_max_position;
  } else if (h.rope_type != "default") {
    throw Error("config.json: rope type \"" + h.rope_type + "\" is not one nvfp4 reads (default, linear, llama3)");
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
  io::write_file((dir / "model.safetensors").string(), refs, {{"format", "pt"}, {"nvfp4.source", checkpoint}});

  io::write_text_file_atomic((dir / "config.json").string(),
                             io::to_config_json(hf_config(c, tok->eot_token(), tok->eot_token())));
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
