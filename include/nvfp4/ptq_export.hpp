// A quantized model folder (src/ptq/export.cpp): the source Hugging Face folder's tensors with
// each quantized layer's weight replaced by its NVFP4 tensors in the ModelOpt or compressed-tensors
// layout (nvfp4/nvfp4_checkpoint.hpp), config.json with its quantization_config, ModelOpt's
// hf_quant_config.json, the tokenizer and generation files copied; shards of at most 5 GB; every
// file written atomically.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "nvfp4/nvfp4_checkpoint.hpp"
#include "nvfp4/ptq.hpp"

namespace nvfp4::ptq {

// A quantized weight as a checkpoint layer. input_amax: W4A4's calibrated activation amax (its
// factors are the runtime quantizer's: encode 2688 / amax, decode amax / 2688).
io::Nvfp4Linear checkpoint_layer(const std::string& module, const Nvfp4Weight& w, std::optional<float> input_amax);

struct ExportOptions {
  io::QuantConfig config;                       // format, W4A4 or W4A16, the layers left unquantized
  // config.kv_cache_fp8: ModelOpt's per-layer k_proj.k_scale / v_proj.v_scale (F32 []) written
  // beside the weights (required then; ModelOpt format only).
  std::optional<io::KvCacheScales> kv_scales;
  std::map<std::string, std::string> metadata;  // every shard's __metadata__ (how it was made)
  uint64_t max_shard_bytes = 5'000'000'000;
};

// Writes out_dir from model_dir and `layers` (each replaces the tensor <module>.weight of the
// source). Returns the files written. Throws nvfp4::Error naming the problem: out_dir is the source
// or already holds a model, a layer whose module the source has no weight for (or of another
// shape), a layer twice, a source that is already quantized, a W4A4 config with a layer lacking its
// input scale (or the reverse), KV cache scales without config.kv_cache_fp8 (or the reverse), not
// one per layer, or in a compressed-tensors folder.
std::vector<std::string> write_quantized_folder(const std::string& model_dir, const std::string& out_dir,
                                                const std::vector<io::Nvfp4Linear>& layers, const ExportOptions& o);

}  // namespace nvfp4::ptq
