// Post-training quantization of a Hugging Face model's linear layers (src/ptq/quantize_model.cpp):
// calibrate on the CPU engine, then quantize every block projection to NVFP4 — round to nearest
// under a scale rule, or GPTQ — with the tensor scales vLLM and TensorRT-LLM require (q/k/v share
// one weight amax, gate/up another; under W4A4 each layer's input scale from its calibrated
// activations). The result is the layers of a quantized checkpoint (nvfp4/ptq_export.hpp).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "nvfp4/hf_model.hpp"
#include "nvfp4/nvfp4_checkpoint.hpp"
#include "nvfp4/ptq.hpp"

namespace nvfp4::ptq {

struct QuantizeModelOptions {
  ScaleRule rule = ScaleRule::max;
  bool gptq = false;
  GptqOptions gptq_options;       // its rule is `rule`
  bool w4a4 = true;               // false: weight-only (W4A16): no input scales
  double act_percentile = 100.0;  // the input amax: max |x| (100) or this percentile of |x|
  std::vector<std::string> keep_bf16;  // module globs left unquantized (as EngineOptions::keep_bf16)
  int window = 512;               // calibration tokens per forward (at most the model's context)
  // Held-out tokens (not calibrated on): under W4A4, the share of each layer's 16-value input
  // blocks whose amax exceeds its calibrated input amax — blocks whose E4M3 scale saturates and
  // whose values clip (the runtime guard's fallbacks). Empty: not measured.
  std::vector<int32_t> holdout;
};

struct LayerReport {
  std::string module;
  bool quantized = false;
  std::string why_not;           // when not: "kept by --keep-bf16 PATTERN", "input size 100 is not a multiple of 16"
  int64_t calib_rows = 0;
  float input_amax = 0;          // the calibrated one used (W4A4), or the observed max
  double weight_rel_error = 0;   // ||W - Q|| / ||W||
  int64_t holdout_blocks = 0, holdout_saturated = 0;  // W4A4 with holdout tokens: input blocks, and those above the amax
};

struct QuantizeModelResult {
  std::vector<io::Nvfp4Linear> layers;  // the quantized ones
  std::vector<LayerReport> report;      // every block projection, linear_refs() order
  std::vector<std::string> kept;        // modules left unquantized (for the checkpoint's ignore list)
  int64_t calib_tokens = 0;
  int64_t holdout_blocks = 0, holdout_saturated = 0;  // over every quantized layer
};

// Calibrates `model` on `calib` (token ids, run in windows of options.window), then quantizes.
// progress(done, total, module) is called before each layer. Throws nvfp4::Error for bad options
// (a percentile outside (0, 100], no calibration tokens).
QuantizeModelResult quantize_model(const infer::HfModel& model, std::span<const int32_t> calib,
                                   const QuantizeModelOptions& options,
                                   const std::function<void(size_t, size_t, const std::string&)>& progress = {});

}  // namespace nvfp4::ptq
