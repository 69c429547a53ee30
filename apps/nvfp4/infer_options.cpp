#include "infer_options.hpp"

#include <filesystem>

#include "common.hpp"
#include "nvfp4/tokenizer.hpp"
#include "nvfp4/error.hpp"
#include "train/trainer.hpp"

namespace nvfp4::cli {

void add_engine_options(CLI::App* c, EngineArgs& a) {
  c->add_option("model", a.model, "A Hugging Face model folder (config.json, model.safetensors, tokenizer.json)")
      ->required();
  c->add_option("--device", a.device, "cpu | cuda | auto (cuda when a GPU is present)")->capture_default_str();
  c->add_option("--precision", a.precision,
                "Linear layers: fp32 (CPU reference), bf16 (CUDA), w4a16, w4a4, fp8 (default: fp32 on the CPU, bf16 "
                "on CUDA)");
  c->add_option("--keep-bf16", a.keep_bf16,
                "Linear layers kept unquantized: Hugging Face module names or globs (e.g. '*.down_proj')");
  c->add_flag("--quantize-lm-head", a.quantize_lm_head, "Quantize the LM head too (kept unquantized by default)");
  c->add_option("--fallback", a.fallback, "w4a4's runtime outlier guard: on | off")
      ->capture_default_str()
      ->check(CLI::IsMember({"on", "off"}));
  c->add_option("--kv-cache", a.kv_cache,
                "KV cache: model (the engine's own precision) | fp8 (E4M3, per-layer k_scale/v_scale from the "
                "checkpoint, else 1; CPU only for now)")
      ->capture_default_str()
      ->check(CLI::IsMember({"model", "fp8"}));
}

std::string engine_device(const EngineArgs& a) {
  if (a.device != "auto" && a.device != "cpu" && a.device != "cuda") {
    throw Error("--device " + a.device + " is not known; use cpu, cuda or auto");
  }
  return train::resolve_device(a.device);
}

infer::Precision device_precision(const std::string& value, const std::string& device, const std::string& option) {
  const infer::Precision p = infer::parse_precision(value, option);
  if (device == "cuda" && p == infer::Precision::fp32) {
    throw Error(option + " fp32 is the CPU reference's; on CUDA the unquantized precision is bf16 (or use --device cpu)");
  }
  if (device == "cpu" && p == infer::Precision::bf16) {
    throw Error(option + " bf16 is the CUDA engine's; the CPU reference runs fp32 (or w4a16, w4a4, fp8)");
  }
  return p;
}

infer::Precision engine_precision(const EngineArgs& a, const std::string& device) {
  if (a.precision.empty()) return device == "cpu" ? infer::Precision::fp32 : infer::Precision::bf16;
  return device_precision(a.precision, device, "--precision");
}

infer::EngineOptions engine_options(const EngineArgs& a, const std::string& device, int sequences, int context) {
  infer::EngineOptions o;
  o.precision = engine_precision(a, device);
  o.keep_bf16 = a.keep_bf16;
  o.quantize_lm_head = a.quantize_lm_head;
  o.fallback = a.fallback == "on";
  o.kv_cache = infer::parse_kv_cache(a.kv_cache);
  o.max_sequences = sequences;
  o.max_context = context;
  return o;
}

namespace {

std::string linear_precision_text(const infer::Engine& e, const infer::HfModel& m, infer::Precision asked) {
  if (m.quantization()) {
    for (const auto& l : e.linear_plan()) {
      if (l.precision == infer::Precision::w4a16 || l.precision == infer::Precision::w4a4) {
        return std::string(infer::precision_name(l.precision)) + " (" +
               std::string(io::quant_format_name(m.quantization()->format)) + " checkpoint)";
      }
    }
  }
  return std::string(infer::precision_name(asked));
}

}  // namespace

std::string run_precision_text(const infer::Engine& e, const infer::HfModel& m, infer::Precision asked) {
  std::string t = linear_precision_text(e, m, asked);
  if (e.kv_cache() == infer::KvCache::fp8) {
    t += m.kv_cache_scales() ? ", fp8 KV cache (scales from the checkpoint)"
                             : ", fp8 KV cache (scale 1: the model has no k_scale/v_scale)";
  }
  return t;
}

bool is_dataset_folder(const std::string& path) {
  return std::filesystem::is_directory(path) && std::filesystem::exists(std::filesystem::path(path) / "manifest.json");
}

std::vector<std::pair<std::string, std::vector<int32_t>>> read_token_shards(const std::vector<std::string>& inputs,
                                                                           io::Split split,
                                                                           const infer::HfModel& m,
                                                                           const std::string& option) {
  const int32_t V = m.config().vocab;
  std::vector<std::string> files;
  for (const std::string& x : inputs) {
    if (is_dataset_folder(x)) {
      for (const auto& s : io::manifest_shards(x, split)) files.push_back(s);
    } else {
      for (const auto& s : io::expand_inputs({x})) files.push_back(s);
    }
  }
  if (files.empty()) {
    throw Error(option + ": no token shards (is the dataset's " + (split == io::Split::val ? "val" : "train") +
                " split empty?)");
  }
  std::vector<std::pair<std::string, std::vector<int32_t>>> out;
  for (const std::string& f : files) {
    const io::TokenShard shard = io::TokenShard::open(f, 0);
    const io::ShardHeader& h = shard.header();
    if (h.vocab_size > V) {
      throw Error(f + ": its tokenizer has " + std::to_string(h.vocab_size) + " ids; the model's vocabulary is " +
                  std::to_string(V) + " (tokenized for another model?)");
    }
    // A shard that records its tokenizer must have been made by the model's (ids of another
    // tokenizer inside the vocabulary would score as garbage).
    if (m.has_tokenizer()) {
      const io::Tokenizer& tok = m.tokenizer();
      if ((h.tokenizer_id != 0 && h.tokenizer_id != tok.shard_id()) ||
          (h.vocab_size != 0 && h.vocab_size != tok.vocab_size())) {
        const std::string name = io::tokenizer_name_for_id(tok.shard_id());
        throw Error(f + ": its tokens are another tokenizer's (" + io::tokenizer_name_for_id(h.tokenizer_id) + ", " +
                    std::to_string(h.vocab_size) + " ids), not the model's (" + name + ", " +
                    std::to_string(tok.vocab_size()) + " ids); remake the data with `nvfp4 data --tokenizer " +
                    (name == "byte" ? name : m.dir()) + "`");
      }
    }
    std::vector<int32_t> ids(shard.tokens().begin(), shard.tokens().end());
    for (size_t k = 0; k < ids.size(); ++k) {  // a shard without a recorded vocabulary is checked here
      if (ids[k] >= V) {
        throw Error(f + ": token " + std::to_string(k) + " is " + std::to_string(ids[k]) +
                    ", not an id of the model's vocabulary [0, " + std::to_string(V) +
                    ") (the shard records no tokenizer; was it tokenized for another model?)");
      }
    }
    out.emplace_back(f, std::move(ids));
  }
  return out;
}

}  // namespace nvfp4::cli
