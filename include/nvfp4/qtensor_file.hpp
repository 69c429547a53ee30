// Quantized tensors in safetensors files: the naming of NVIDIA's golden file, which
// `nvfp4 qtensor` writes and `nvfp4 dequant` / `nvfp4 inspect` read.
//
//   NVFP4:  T.row.q U8 [M, K/2], T.row.s F8_E4M3 [M, K/16], T.row.amax F32 [1]
//           T.col.q U8 [K, M/2], T.col.s F8_E4M3 [K, M/16], T.col.amax F32 [1]
//           T.col.x [K, M]: the post-RHT column-wise input, in the input's dtype (with RHT)
//   MXFP4:  T.row.q U8 [M, K/2], T.row.e8m0 U8 [M, K/32]               (T.col.* likewise)
//   FP8:    T.row.q F8_E4M3|F8_E5M2 [M, K], T.row.scale_inv F32 [1] or [blocks], T.row.amax F32 [1]
//
// How each tensor was quantized is recorded as JSON in the "nvfp4.quantization" metadata
// entry; files without it (such as the golden file) are understood from names and dtypes.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "nvfp4/quantize.hpp"
#include "nvfp4/safetensors.hpp"
#include "nvfp4/tensor.hpp"

namespace nvfp4::io {

inline constexpr const char* kQuantMetadataKey = "nvfp4.quantization";
inline constexpr const char* kFormatVersionKey = "nvfp4.format_version";

// How q was quantized, as the JSON object recorded per tensor in "nvfp4.quantization":
// {"format", "block", "rowwise", "columnwise", "rht", ["rht_sign_mask"], "rounding",
//  ["sr_seed", "sr_step", "sr_layer", "sr_role"], "shape": [M, K], "input_dtype"}.
std::string quantization_record(const QuantizedTensor& q);

// Metadata for a file of quantized tensors: format version, producer, and the
// quantization_record() of every base name.
std::map<std::string, std::string> quantized_file_metadata(
    const std::vector<std::pair<std::string, std::string>>& records, const std::string& producer);

// The tensors that store q under the base name `name`, in the order above.
std::vector<std::pair<std::string, Tensor>> quantized_tensors(const std::string& name, const QuantizedTensor& q);

struct QuantizedEntry {
  std::string name;          // base name T
  QuantizedTensor tensor;    // copies read back; options from metadata or inferred
  bool options_recorded;     // options came from "nvfp4.quantization" metadata
};

// Every quantized tensor group in a checkpoint (groups are found by their ".row.q" /
// ".col.q" tensors). Throws nvfp4::Error naming the file and tensor when a group is
// incomplete or its shapes or dtypes do not fit together.
std::vector<QuantizedEntry> read_quantized(const Checkpoint& ckpt, const std::string& file_label);

}  // namespace nvfp4::io
