// Options `generate` and `eval` share: the model folder, the device, the precision and what
// stays unquantized, and the engine made from them.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nvfp4/engine.hpp"
#include "nvfp4/hf_model.hpp"
#include "nvfp4/token_shards.hpp"

namespace nvfp4::cli {

struct EngineArgs {
  std::string model;
  std::string device = "auto";
  std::string precision;  // empty: fp32 on the CPU, bf16 on CUDA
  std::vector<std::string> keep_bf16;
  bool quantize_lm_head = false;
  std::string fallback = "on";
  std::string kv_cache = "model";  // --kv-cache: model | fp8
  int max_context = 0;
};

// Adds MODEL, --device, --precision, --keep-bf16, --quantize-lm-head, --fallback, --kv-cache.
void add_engine_options(CLI::App* c, EngineArgs& a);
// "cpu" or "cuda" (auto: cuda when a GPU is present).
std::string engine_device(const EngineArgs& a);
// `value` of `option` (--precision, --reference) as a precision the device runs: bf16 is CUDA's,
// fp32 the CPU's; anything else is an nvfp4::Error naming the option.
infer::Precision device_precision(const std::string& value, const std::string& device, const std::string& option);
// The precision to run: --precision, or the device's unquantized one.
infer::Precision engine_precision(const EngineArgs& a, const std::string& device);
infer::EngineOptions engine_options(const EngineArgs& a, const std::string& device, int sequences, int context);
// The precision a run reports: the asked one, or for an NVFP4 checkpoint the scheme its stored
// layers run at and the format, e.g. "w4a4 (modelopt checkpoint)"; an FP8 KV cache is added with
// where its scales come from: "w4a16, fp8 KV cache (scales from the checkpoint)".
std::string run_precision_text(const infer::Engine& e, const infer::HfModel& m, infer::Precision asked);

// Whether `path` is a dataset folder from `nvfp4 data` (a folder holding manifest.json).
bool is_dataset_folder(const std::string& path);

// The token ids of each shard `inputs` name — shard files, globs, folders, or a dataset folder from
// `nvfp4 data` (its `split` shards) — as (file, ids), checked against the model: ids inside its
// vocabulary, and a shard that records its tokenizer made by the model's. `option` names the
// option in errors.
std::vector<std::pair<std::string, std::vector<int32_t>>> read_token_shards(const std::vector<std::string>& inputs,
                                                                           io::Split split,
                                                                           const infer::HfModel& m,
                                                                           const std::string& option);

}  // namespace nvfp4::cli
