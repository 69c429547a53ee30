// Argument checks shared by the CPU and CUDA ops: a failed check throws nvfp4::Error naming
// the side and the op ("cpu::rmsnorm_forward: ...", "cuda::attention_forward: ...").
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "nvfp4/error.hpp"

namespace nvfp4::kernels {

inline void require(bool ok, const char* side, const char* op, const std::string& what) {
  if (!ok) throw Error(std::string(side) + "::" + op + ": " + what);
}

inline void require_nonnegative(const char* side, const char* op,
                                std::initializer_list<std::pair<const char*, int64_t>> dims) {
  for (const auto& [name, value] : dims)
    require(value >= 0, side, op, std::string(name) + " = " + std::to_string(value) + " is negative");
}

// Grouped-query attention's head counts: NKV key/value heads each serving NH / NKV query heads.
inline void require_head_groups(const char* side, const char* op, int64_t NH, int64_t NKV) {
  require(NKV > 0 || NH == 0, side, op, "NKV = 0 with NH = " + std::to_string(NH) + " query heads");
  require(NKV == 0 || NH % NKV == 0, side, op,
          "NH = " + std::to_string(NH) + " is not a multiple of NKV = " + std::to_string(NKV) +
              "; each key/value head must serve the same number of query heads");
}

}  // namespace nvfp4::kernels
