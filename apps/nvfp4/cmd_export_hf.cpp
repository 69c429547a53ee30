// nvfp4 export-hf CKPT DIR: a Hugging Face LlamaForCausalLM folder of a trained model (or Qwen2 /
// Qwen3 / MistralForCausalLM, the architecture that has the model's features)
// (infer::export_hf, include/nvfp4/checkpoint_model.hpp: config.json, BF16 model.safetensors,
// the tokenizer description and reference logits for checking the export with transformers,
// tests/hf/check_hf_export.py; docs/model.md has the command and result).
#include <filesystem>
#include <iostream>

#include "common.hpp"
#include "nvfp4/checkpoint_model.hpp"

namespace nvfp4::cli {

namespace {

struct ExportArgs {
  std::string checkpoint, dir;
  std::string check_text = "The quick brown fox jumps over the lazy dog. NVFP4 keeps a scale per 16 values.";
  bool force = false, json = false;
};

void run(const ExportArgs& a) {
  const infer::HfExport e = infer::export_hf(a.checkpoint, a.dir, a.check_text, a.force);
  if (a.json) {
    nlohmann::ordered_json j = {{"dir", a.dir}, {"parameters", e.parameters}, {"reference_tokens", e.reference_tokens}};
    std::cout << json_text(j) << "\n";
  } else {
    std::cout << "wrote " << a.dir << ": config.json, generation_config.json, model.safetensors (BF16, "
              << e.parameters << " parameters), nvfp4_tokenizer.json, nvfp4_reference_logits.safetensors ("
              << e.reference_tokens << " tokens)\n";
  }
}

}  // namespace

void register_export_hf(CLI::App& app) {
  const auto [c, a] = add_command<ExportArgs>(app,
      "export-hf", "Write a checkpoint as a Hugging Face Llama-family model (BF16)");
  add_input_output(c, "checkpoint", a->checkpoint, "ckpt_*.safetensors written by nvfp4 train", "dir", a->dir,
                   "Output folder");
  c->add_option("--check-text", a->check_text, "Text whose reference logits are written for checking the export");
  c->add_flag("--force", a->force, "Write into a non-empty folder (replaces the files this command writes)");
  c->add_flag("--json", a->json, "Print the summary as JSON");
  c->callback([a] { run(*a); });
}

}  // namespace nvfp4::cli
