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

}  // namespace nvfp4::kernels
