// NVFP4 linear layers in the two Hugging Face checkpoint formats serving engines load
// (../shared/docs/interop.md, docs/numerics.md §6), written and read by src/io/nvfp4_checkpoint.cpp:
//
//   ModelOpt (vLLM modelopt_fp4, TensorRT-LLM)      compressed-tensors nvfp4-pack-quantized (vLLM, llm-compressor)
//   <m>.weight          U8 [out, in/2]              <m>.weight_packed       U8 [out, in/2]
//   <m>.weight_scale    F8_E4M3 [out, in/16]        <m>.weight_scale        F8_E4M3 [out, in/16]
//   <m>.weight_scale_2  F32 [] = decode factor      <m>.weight_global_scale F32 [1] = encode factor (its reciprocal)
//   <m>.input_scale     F32 [] (W4A4)               <m>.input_global_scale  F32 [1] (W4A4)
//
// Codes: element 2j of a row in the low nibble of byte j, 2j + 1 in the high nibble. Block scales
// row-major, not swizzled. A weight decodes as e2m1(code) x fp32(scale) x decode factor.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nvfp4/dtype.hpp"
#include "nvfp4/safetensors.hpp"

namespace nvfp4::io {

enum class QuantFormat : uint8_t { modelopt, compressed_tensors };
std::string_view quant_format_name(QuantFormat f);  // "modelopt", "compressed-tensors"
QuantFormat parse_quant_format(std::string_view name, std::string_view option = "--format");

// One NVFP4 linear layer. Each format stores one form of each tensor-wide factor — ModelOpt the
// decode factor, compressed-tensors the encode factor — and a reader keeps the stored one exactly
// and sets the other to its FP32 reciprocal; a writer stores its own form as held here. (The
// quantizer knows both exactly: encode = range / amax, decode = amax / range.)
struct Nvfp4Linear {
  std::string module;  // the Hugging Face module name, e.g. model.layers.0.self_attn.q_proj
  int64_t out = 0, in = 0;
  std::vector<uint8_t> packed;  // (out, in / 2)
  std::vector<uint8_t> scales;  // (out, in / 16) E4M3
  float weight_decode = 0.0f, weight_encode = 0.0f;
  std::optional<float> input_decode, input_encode;  // W4A4: the activation's (both or neither)
  bool w4a4() const { return input_decode.has_value(); }
};

// Throws nvfp4::Error naming the module and the problem: in not a positive multiple of 16, buffer
// sizes that do not match, a NaN block scale (E4M3 0x7F / 0xFF), a negative block scale (sign bit
// set), a factor that is not finite and positive, or only one of the input factors.
void check_nvfp4_linear(const Nvfp4Linear& l);

// The layer's weight decoded, (out, in) row-major: e2m1(code) x fp32(block scale) x weight_decode,
// left to right in FP32 (docs/numerics.md §2). A value that overflows FP32 (a factor near FLT_MAX)
// becomes infinite: the caller checks.
void decode_nvfp4_linear(const Nvfp4Linear& l, std::span<float> out);

// The tensors the format stores for the layer, in that order: names, dtypes, shapes and bytes.
struct OwnedTensor {
  std::string name;
  DType dtype = DType::U8;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  TensorRef ref() const { return {name, dtype, shape, bytes}; }
};
std::vector<OwnedTensor> nvfp4_linear_tensors(const Nvfp4Linear& l, QuantFormat f);

// The names nvfp4_linear_tensors gives a module's tensors (so a reader can tell them from plain
// weights).
std::vector<std::string> nvfp4_linear_tensor_names(const std::string& module, QuantFormat f, bool w4a4);

// Reads a module's tensors from a checkpoint, validated as check_nvfp4_linear does, plus what a
// file can get wrong: a missing tensor, a wrong dtype or shape (each named). ModelOpt's scalars
// may be F32 or BF16 (some checkpoints store BF16), shape [] or [1].
Nvfp4Linear read_nvfp4_linear(const Checkpoint& ck, const std::string& module, QuantFormat f);

// ---- FP8 KV cache scales (ModelOpt) ---------------------------------------------------------------
//
// Per decoder layer N, one FP32 decode scale for K and one for V, as ModelOpt exports them and vLLM
// reads them: model.layers.N.self_attn.k_proj.k_scale and model.layers.N.self_attn.v_proj.v_scale
// (F32 or BF16, shape [] or [1]). A cached value is stored as e4m3(x / scale) and read back as
// e4m3 x scale.
struct KvCacheScales {
  std::vector<float> k, v;  // (L): one per layer
};
// The two tensor names of layer `layer`: {k_scale, v_scale}.
std::vector<std::string> kv_cache_scale_names(int layer);
// Every layer's scales from the checkpoint; nullopt when it holds none. Throws nvfp4::Error naming
// the tensor: a scale that is not F32/BF16 [] or [1], not finite and positive, or present for some
// layers (or only one of K and V) but not all.
std::optional<KvCacheScales> read_kv_cache_scales(const Checkpoint& ck, int n_layer);
// The tensors that store `s` (F32 []), in layer order, K before V. Throws for a scale that is not
// finite and positive.
std::vector<OwnedTensor> kv_cache_scale_tensors(const KvCacheScales& s);

// ---- configuration files ---------------------------------------------------------------------------

struct QuantConfig {
  QuantFormat format = QuantFormat::modelopt;
  bool w4a4 = true;                    // false: weight-only (W4A16)
  std::vector<std::string> ignore;     // modules left unquantized (names or fnmatch patterns)
  // ModelOpt's kv_cache_quant_algo "FP8": the checkpoint declares an FP8 (E4M3) KV cache, and may
  // carry per-layer k_scale / v_scale (read_kv_cache_scales). Written as "FP8" / null.
  bool kv_cache_fp8 = false;
  std::string producer = "nvfp4", producer_version;
};
// config.json's "quantization_config" object, as JSON text.
std::string quantization_config_json(const QuantConfig& c);
// ModelOpt's hf_quant_config.json, as JSON text.
std::string hf_quant_config_json(const QuantConfig& c);
// The NVFP4 quantization a config.json declares (nullopt: none). Throws nvfp4::Error naming the
// file and field for a quantization_config this reader does not understand (another method or
// algorithm, a group size other than 16, an unknown format, a KV cache quantization other than
// ModelOpt's kv_cache_quant_algo "FP8", such as compressed-tensors' kv_cache_scheme).
std::optional<QuantConfig> read_quantization_config(std::string_view config_json, std::string_view file);
// ModelOpt's hf_quant_config.json ({"producer", "quantization": {"quant_algo", "group_size",
// "kv_cache_quant_algo", "exclude_modules"}}): what older ModelOpt checkpoints declare instead
// of a quantization_config. Throws nvfp4::Error naming the file and field for anything else (another
// algorithm, a group size other than 16, a kv_cache_quant_algo other than null and "FP8").
QuantConfig read_hf_quant_config(std::string_view json, std::string_view file);

}  // namespace nvfp4::io
