#include "infer_options.hpp"

#include "common.hpp"
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
  o.max_sequences = sequences;
  o.max_context = context;
  return o;
}

}  // namespace nvfp4::cli
