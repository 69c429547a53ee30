// Post-training quantization of a Hugging Face model's linear layers (src/ptq/quantize_model.cpp):
// calibrate on the CPU or CUDA engine, then quantize every block projection to NVFP4 — round to nearest
// under a scale rule, or GPTQ — with the tensor scales vLLM and TensorRT-LLM require (q/k/v share
// one weight amax, gate/up another; under W4A4 each layer's input scale from its calibrated
// activations). The result is the layers of a quantized checkpoint (nvfp4/ptq_export.hpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
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
  // Per-layer sensitivity, measured on these held-out tokens (not calibrated on; empty: not
  // measured) on the model as quantized here: each quantized layer alone at its NVFP4 weights (and
  // W4A4 input scale), every other layer unquantized — the KL divergence of the next-token
  // distribution against the unquantized model and the layer's relative output error
  // (infer::evaluate's per-layer pass, over at most sensitivity_scored scored tokens) — and the
  // whole model's perplexity and KL before and after the fallback below.
  std::vector<int32_t> sensitivity_tokens;
  int64_t sensitivity_scored = 512;
  // The engine calibration, the held-out saturation and the sensitivity run on: "cpu" (the FP32
  // model) or "cuda" (the BF16 model, as the issue's "run the BF16 model over the calibration
  // tokens"; its statistics are of BF16 activations).
  std::string device = "cpu";
  // BF16 fallback, by fused group (q/k/v; gate/up; o; down: vLLM requires a fused layer's members
  // to share one precision), from the sensitivity: every group with a member above auto_fallback_kl
  // (> 0), or the groups of highest KL (their members' largest) while their weights stay within
  // bf16_budget (> 0) of the block projections' weights. At most one of the two.
  double auto_fallback_kl = 0;
  double bf16_budget = 0;
  // FP8 KV cache scales: calibrate each layer's K (after RoPE) and V amax on the calibration tokens
  // (infer::KvCacheObserver, the unquantized model on the CPU) and give k_scale = amax_K / 448,
  // v_scale = amax_V / 448 (decode scales: a cached value is e4m3(x / scale) x scale). CPU only.
  bool kv_cache_fp8 = false;
};

struct LayerReport {
  std::string module;
  bool quantized = false;
  std::string why_not;           // when not: "kept by --keep-bf16 PATTERN", "input size 100 is not a multiple of 16"
  int64_t calib_rows = 0;
  float input_amax = 0;          // the calibrated one used (W4A4), or the observed max
  double weight_rel_error = 0;   // ||W - Q|| / ||W||
  int64_t holdout_blocks = 0, holdout_saturated = 0;  // W4A4 with holdout tokens: input blocks, and those above the amax
  // With sensitivity tokens: this layer alone quantized (NaN: not measured).
  double kl = NAN, output_rel_error = NAN;
  bool fallback = false;  // quantized, measured, then kept unquantized by the fallback rule
};

// The whole model on the sensitivity tokens against the unquantized model.
struct ModelQuality {
  double ppl = 0, kl = 0, top1_agree = 0;
};

struct QuantizeModelResult {
  std::vector<io::Nvfp4Linear> layers;  // the quantized ones
  std::vector<LayerReport> report;      // every block projection, linear_refs() order
  std::vector<std::string> kept;        // modules left unquantized (for the checkpoint's ignore list)
  int64_t calib_tokens = 0;
  int64_t holdout_blocks = 0, holdout_saturated = 0;  // over every quantized layer
  // With sensitivity tokens: the unquantized model's perplexity; every layer quantized (before the
  // fallback); the final set (after it; equal to before when nothing fell back).
  int64_t sensitivity_scored = 0;
  double unquantized_ppl = 0;
  std::optional<ModelQuality> before, after;
  std::string fallback_rule;  // "", "auto-fallback KL > 0.05", "bf16-budget 0.1"
  int64_t fallback_weights = 0, block_weights = 0;  // weights kept unquantized by the rule, of all block projections
  // kv_cache_fp8: per layer the calibrated K and V amax and the scales from them (amax / 448; an
  // amax of 0 gives scale 1).
  std::vector<float> k_amax, v_amax;
  std::optional<io::KvCacheScales> kv_scales;
};

// Throws nvfp4::Error when `model` is already an NVFP4 checkpoint (quantize its source instead).
void require_unquantized(const infer::HfModel& model);

// Calibrates `model` on `calib` (token ids, run in windows of options.window), then quantizes;
// with sensitivity tokens measures each layer and applies the fallback rule. A --keep-bf16 pattern
// naming one member of a fused group keeps the whole group (vLLM's rule). progress(done, total,
// what) is called as work is done ("module name" per layer while quantizing, then "sensitivity").
// Throws nvfp4::Error for bad options (a percentile outside (0, 100], no calibration tokens, a
// fallback rule without sensitivity tokens or both rules) or an already quantized model.
QuantizeModelResult quantize_model(const infer::HfModel& model, std::span<const int32_t> calib,
                                   const QuantizeModelOptions& options,
                                   const std::function<void(size_t, size_t, const std::string&)>& progress = {});

}  // namespace nvfp4::ptq
