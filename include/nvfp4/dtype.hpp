// Element types of tensors in files and in memory, with the safetensors names.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace nvfp4 {

enum class DType : uint8_t { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL, F8_E4M3, F8_E5M2, F8_E8M0 };

struct DTypeInfo {
  DType dtype;
  std::string_view name;  // safetensors spelling, e.g. "BF16", "F8_E4M3"
  size_t size;            // bytes per element
  bool is_float;          // a floating-point type we can convert to FP32
};

// Every dtype, in enum order: I/O, tests and the CLI iterate this table.
std::span<const DTypeInfo> dtype_table();
const DTypeInfo& dtype_info(DType d);
inline std::string_view dtype_name(DType d) { return dtype_info(d).name; }
inline size_t dtype_size(DType d) { return dtype_info(d).size; }
std::optional<DType> parse_dtype(std::string_view name);

}  // namespace nvfp4
