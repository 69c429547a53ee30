// A Hugging Face model folder, opened for inference: config.json (Llama, Mistral, Qwen2, Qwen3;
// include/nvfp4/hf_config.hpp), the weights (model.safetensors or a sharded index) memory-mapped
// and converted one tensor at a time when an engine asks for it, generation_config.json's
// end-of-text ids, and the tokenizer (tokenizer.json; an `nvfp4 export-hf` folder of a byte-level
// model has nvfp4_tokenizer.json instead).
//
// Opening validates everything before any weight is converted: every parameter the config
// implies is present with its exact shape and a float dtype (BF16, F16, F32); a tensor the
// model has no use for is an error naming it (except the rotary_emb.inv_freq buffers older
// checkpoints carry, and a tied model's lm_head.weight equal to its embedding, both ignored).
//
// NVFP4 checkpoints (include/nvfp4/nvfp4_checkpoint.hpp: ModelOpt, as config.json's
// quantization_config or an older folder's hf_quant_config.json declares it, or compressed-tensors
// nvfp4-pack-quantized — `nvfp4 quantize` writes both, vLLM loads both): a linear layer's weight
// may instead be stored as NVFP4 codes, E4M3 block scales and a tensor factor (W4A4: and the
// activation's factor). Each such layer is validated at open like the float ones (shapes, dtypes,
// no NaN or negative scale, finite positive factors, the activation factor present exactly when
// the config quantizes activations); engines run it from its stored bits (stored_nvfp4,
// read_nvfp4), and read_f32 / read_bf16 give its decoded values.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "nvfp4/dtype.hpp"
#include "nvfp4/hf_config.hpp"
#include "nvfp4/model.hpp"
#include "nvfp4/nvfp4_checkpoint.hpp"
#include "nvfp4/tokenizer.hpp"

namespace nvfp4::infer {

class HfModel {
 public:
  // `dir`: the model folder. Throws nvfp4::Error naming the file, field or tensor.
  static HfModel open(const std::string& dir);
  // The unquantized model of `dir` with `layers` standing in as NVFP4 linear layers, held in memory:
  // what a checkpoint written from them would run as (quantization() says NVFP4, `w4a4` or
  // weight-only), each such layer's unquantized weight still readable — to measure a quantization
  // before it is written (per-layer sensitivity, src/ptq/). Throws nvfp4::Error for a layer that
  // is no linear layer of the model, has another shape, is given twice, fails
  // io::check_nvfp4_linear, or has input factors exactly when !w4a4; or when `dir` is quantized.
  static HfModel open_with_layers(const std::string& dir, std::vector<io::Nvfp4Linear> layers, bool w4a4);
  HfModel(HfModel&&) noexcept;
  HfModel& operator=(HfModel&&) noexcept;
  ~HfModel();

  const std::string& dir() const;
  const io::HfLlamaConfig& hf_config() const;
  const model::ModelConfig& config() const;
  const std::vector<model::ParamSpec>& specs() const;  // model::param_specs(config())

  // Parameter specs()[i] converted from its stored dtype: FP32 (exact from BF16/F16), or BF16
  // bits (F32 rounded to nearest even). `out` holds exactly numel values. A stored NaN or
  // infinity (read_bf16: or an F32 beyond BF16's range) is an nvfp4::Error naming the folder,
  // the tensor and the first bad element (a model's weights are finite; such a file is corrupt
  // or from a diverged run).
  void read_f32(size_t i, std::span<float> out) const;
  void read_bf16(size_t i, std::span<uint16_t> out) const;
  DType stored_dtype(size_t i) const;  // U8 for a stored NVFP4 weight (its codes)
  uint64_t stored_bytes() const;       // of the parameters, as stored (NVFP4: codes, scales, factors)

  // The NVFP4 quantization the folder declares; nullopt for a float checkpoint.
  const std::optional<io::QuantConfig>& quantization() const;
  // The FP8 KV cache scales a ModelOpt checkpoint carries (per layer k_proj.k_scale and
  // v_proj.v_scale, validated at open: finite, positive, every layer or none); nullopt when it has
  // none. Read only when the folder declares kv_cache_quant_algo "FP8".
  const std::optional<io::KvCacheScales>& kv_cache_scales() const;
  // Whether parameter specs()[i] is held as NVFP4 (a quantized linear layer's weight: stored so in
  // a checkpoint, or given to open_with_layers).
  bool stored_nvfp4(size_t i) const;
  // Whether read_f32 / read_bf16 give parameter i's unquantized values: true except for a
  // checkpoint's NVFP4 layers, for which they give e2m1(code) x fp32(block scale) x decode factor
  // (io::decode_nvfp4_linear; read_bf16 rounds that to BF16).
  bool has_unquantized(size_t i) const;
  // A stored NVFP4 weight's codes, block scales and factors, exactly as stored (the factor a format
  // does not store is the FP32 reciprocal of the one it does). Throws nvfp4::Error for a parameter
  // stored as floats.
  io::Nvfp4Linear read_nvfp4(size_t i) const;

  // All parameters as FP32 in specs() order (a CpuModel's buffer; small models).
  std::vector<float> read_all_f32() const;

  // The files the model is read from, those present: config.json, generation_config.json, the
  // weights (the index and every shard) and the tokenizer's files. An output must replace none.
  std::vector<std::string> input_files() const;

  // Token ids that end a generation: config.json's eos_token_id (one or a list), then
  // generation_config.json's, then the tokenizer's end-of-text; no duplicates.
  std::vector<int32_t> eos_ids() const;
  bool has_tokenizer() const;
  // Throws nvfp4::Error when the folder has none (tokenizer.json or nvfp4_tokenizer.json).
  const io::Tokenizer& tokenizer() const;
  // The ids a prompt is run as: the tokenizer's own special tokens added (Llama 3's
  // <|begin_of_text|>, Llama 2's <s>), or for a model `nvfp4` trained and exported
  // (nvfp4_tokenizer.json beside it) end-of-text + the text's ids, as its training documents start.
  std::vector<int32_t> encode_prompt(const std::string& text) const;

 private:
  struct Impl;
  explicit HfModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace nvfp4::infer
