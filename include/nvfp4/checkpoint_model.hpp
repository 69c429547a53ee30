// A trained model out of its checkpoint, and into a Hugging Face folder: what `sample`,
// `export-hf` (and, next, evaluation and serving) start from. Training reads its own
// checkpoints for --resume (src/train/); this is the inference side.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "nvfp4/hf_config.hpp"
#include "nvfp4/model.hpp"
#include "nvfp4/tokenizer.hpp"

namespace nvfp4::infer {

// The model a checkpoint written by `nvfp4 train` holds: its config and parameters (the
// optimizer state is not read). Throws nvfp4::Error naming the file, and the tensor and index
// of the first non-finite parameter.
model::CpuModel load_checkpoint_model(const std::string& checkpoint);
// The description of the tokenizer the checkpoint's training data used (Tokenizer::describe(),
// JSON; checkpoints written before it hold the bare name, "byte").
std::string checkpoint_tokenizer_description(const std::string& checkpoint);
// That tokenizer, made from its description (io::make_tokenizer_from_description). Throws
// nvfp4::Error naming the file if this build's tokenizer of that name differs.
std::unique_ptr<io::Tokenizer> load_checkpoint_tokenizer(const std::string& checkpoint);

// The model config <-> Hugging Face config.json. The architecture is the one that has the
// model's features: Qwen3ForCausalLM with q/k norms (its attention_bias, set with q/k/v biases,
// also gives o_proj a bias: export_hf writes zeros for it), else Qwen2ForCausalLM with q/k/v
// biases, else MistralForCausalLM with a sliding window, else LlamaForCausalLM. A head size,
// tied embeddings and RoPE scaling are fields of all four (a sliding window of Qwen2 / Qwen3 too).
io::HfLlamaConfig hf_config(const model::ModelConfig& c, std::optional<int> bos, std::optional<int> eos);
// The inverse; throws nvfp4::Error naming what this model cannot be (an o_proj bias, windows on
// some layers only, another architecture or RoPE scaling).
model::ModelConfig model_config(const io::HfLlamaConfig& h);

// A checkpoint as a Hugging Face folder of hf_config()'s architecture: config.json,
// generation_config.json, model.safetensors (BF16, HF names and layouts: our parameters already
// are; no lm_head.weight when tied; zero o_proj biases where the architecture has them), the tokenizer
// description (nvfp4_tokenizer.json), and nvfp4_reference_logits.safetensors — our FP32 logits
// from the exported (BF16-rounded) weights on [end-of-text] + check_text (at most seq_len
// tokens), for checking the export (tests/hf/check_hf_export.py). A folder that is not empty
// needs force (then only these files are replaced); none of them may be the checkpoint.
struct HfExport {
  int64_t parameters = 0;
  int reference_tokens = 0;
};
// With a Hugging Face tokenizer the export also holds its tokenizer.json (the same text) and a
// tokenizer_config.json (PreTrainedTokenizerFast, eos_token), so AutoTokenizer loads it.
inline constexpr const char* kHfExportFiles[] = {"model.safetensors",    "config.json",
                                                 "generation_config.json", "nvfp4_tokenizer.json",
                                                 "nvfp4_reference_logits.safetensors", "tokenizer.json",
                                                 "tokenizer_config.json"};
HfExport export_hf(const std::string& checkpoint, const std::string& dir, const std::string& check_text, bool force);

}  // namespace nvfp4::infer
