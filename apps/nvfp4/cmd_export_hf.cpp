// nvfp4 export-hf CKPT DIR: a Hugging Face LlamaForCausalLM checkpoint of a trained model —
// config.json, model.safetensors (BF16, HF names and layouts: our parameters already are), the
// tokenizer description, and a reference for checking the export: logits our model computes
// from the exported (BF16-rounded) weights on a fixed token sequence. tests/hf/check_hf_export.py
// loads the folder with transformers and compares (docs/model.md has the command and result).
#include <filesystem>
#include <iostream>

#include "common.hpp"
#include "format/scalar.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/output_paths.hpp"
#include "nvfp4/safetensors.hpp"
#include "nvfp4/tokenizer.hpp"
#include "train/trainer.hpp"

namespace nvfp4::cli {

namespace {

namespace fs = std::filesystem;

struct ExportArgs {
  std::string checkpoint, dir;
  std::string check_text = "The quick brown fox jumps over the lazy dog. NVFP4 keeps a scale per 16 values.";
  bool force = false, json = false;
};

// The files export-hf writes into its folder.
constexpr const char* kWritten[] = {"model.safetensors", "config.json", "generation_config.json", "nvfp4_tokenizer.json",
                                    "nvfp4_reference_logits.safetensors"};

void run(const ExportArgs& a) {
  const fs::path dir(a.dir);
  io::require_output_folder("output folder", a.dir);
  for (const char* name : kWritten) io::refuse_output_over_input((dir / name).string(), {a.checkpoint});
  model::CpuModel m = train::load_checkpoint_model(a.checkpoint);
  const auto tok = train::load_checkpoint_tokenizer(a.checkpoint);
  const model::ModelConfig& c = m.config();
  if (fs::exists(dir) && !fs::is_empty(dir) && !a.force) {
    throw Error(a.dir + " is not empty; choose another folder or pass --force to replace the files this writes");
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
  io::write_file((dir / "model.safetensors").string(), refs, {{"format", "pt"}, {"nvfp4.source", a.checkpoint}});

  nlohmann::ordered_json cfg;
  cfg["architectures"] = {"LlamaForCausalLM"};
  cfg["model_type"] = "llama";
  cfg["hidden_size"] = c.d_model;
  cfg["intermediate_size"] = c.ffn();
  cfg["num_hidden_layers"] = c.n_layer;
  cfg["num_attention_heads"] = c.n_head;
  cfg["num_key_value_heads"] = c.n_kv_head;
  cfg["head_dim"] = c.head_size();
  cfg["vocab_size"] = c.vocab;
  cfg["max_position_embeddings"] = c.seq_len;
  const auto mc = nlohmann::json::parse(c.to_json());
  cfg["rms_norm_eps"] = mc.at("norm_eps");
  cfg["rope_theta"] = mc.at("rope_theta");
  cfg["rope_scaling"] = nullptr;
  cfg["hidden_act"] = "silu";
  cfg["attention_bias"] = false;
  cfg["mlp_bias"] = false;
  cfg["tie_word_embeddings"] = false;
  cfg["initializer_range"] = mc.at("init_std");
  cfg["bos_token_id"] = tok->eot_token();
  cfg["eos_token_id"] = tok->eot_token();
  cfg["torch_dtype"] = "bfloat16";
  cfg["use_cache"] = true;
  write_text_file((dir / "config.json").string(), cfg.dump(2) + "\n");
  nlohmann::ordered_json gen = {{"bos_token_id", tok->eot_token()}, {"eos_token_id", tok->eot_token()}};
  write_text_file((dir / "generation_config.json").string(), gen.dump(2) + "\n");
  write_text_file((dir / "nvfp4_tokenizer.json").string(), tok->describe() + "\n");

  // Reference: our FP32 logits from the BF16 weights on [EOT] + the check text (<= seq_len).
  std::vector<int32_t> ids = {tok->eot_token()};
  tok->encode_append(a.check_text, ids);
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

  if (a.json) {
    nlohmann::ordered_json j = {{"dir", a.dir}, {"parameters", c.num_params()}, {"reference_tokens", T}};
    std::cout << json_text(j) << "\n";
  } else {
    std::cout << "wrote " << a.dir << ": config.json, generation_config.json, model.safetensors (BF16, "
              << c.num_params() << " parameters), nvfp4_tokenizer.json, nvfp4_reference_logits.safetensors (" << T
              << " tokens)\n";
  }
}

}  // namespace

void register_export_hf(CLI::App& app) {
  const auto [c, a] = add_command<ExportArgs>(app,
      "export-hf", "Write a checkpoint as a Hugging Face Llama model (BF16)");
  c->add_option("checkpoint", a->checkpoint, "ckpt_*.safetensors written by nvfp4 train")->required();
  c->add_option("dir", a->dir, "Output folder")->required();
  c->add_option("--check-text", a->check_text, "Text whose reference logits are written for checking the export");
  c->add_flag("--force", a->force, "Write into a non-empty folder (replaces the files this command writes)");
  c->add_flag("--json", a->json, "Print the summary as JSON");
  c->callback([a] { run(*a); });
}

}  // namespace nvfp4::cli
