// Helpers shared by the codec tests (test_codecs.cpp, test_block_codecs.cpp).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

#include "support/mismatches.hpp"

namespace nvfp4::codec_test {

inline uint32_t bits_of(float f) { return std::bit_cast<uint32_t>(f); }
inline float float_of(uint32_t u) { return std::bit_cast<float>(u); }

inline std::string describe(float f) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g (%s)", static_cast<double>(f), nvfp4::test_support::hex32(bits_of(f)).c_str());
  return buf;
}

// Same value, bit for bit; for NaN only NaN-ness is required.
inline bool same_float(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return bits_of(a) == bits_of(b);
}

// floor/ceil of log2 via frexp (exact in double for every float, subnormals included).
inline int ref_floor_log2(float a) {
  int e;
  std::frexp(static_cast<double>(a), &e);  // a = m * 2^e, m in [0.5, 1)
  return e - 1;
}
inline int ref_ceil_log2(float a) {
  int e;
  const double m = std::frexp(static_cast<double>(a), &e);
  return m == 0.5 ? e - 1 : e;
}

}  // namespace nvfp4::codec_test
