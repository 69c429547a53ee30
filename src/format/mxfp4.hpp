// MXFP4 (OCP Microscaling): E2M1 values, one E8M0 (power-of-two) scale per 32 values, no
// tensor-level scale. Two named rules for the block exponent (docs/numerics.md §5):
//
//   round-up (TE reference, the NVFP4 paper's MXFP4 baseline):
//       e = ceil(log2(block_amax / 6))        -> block_amax / 2^e <= 6: nothing saturates
//   OCP (spec v1.0, §6.3):
//       e = floor(log2(block_amax)) - 2       -> values above 6 * 2^e saturate to +-6
//
// e is clamped to [-127, 127]; an all-zero block gets e = -127 (E8M0 code 0). The codes are
// RNE of x / 2^e, saturated to [-6, 6].
#pragma once

#include "format/scalar.hpp"

namespace nvfp4::fmt {

inline constexpr int kMxfp4Block = 32;

enum class MxScaleRule : uint8_t { round_up, ocp_floor };

NVFP4_HD int clamp_exponent(int e) { return e < -127 ? -127 : (e > 127 ? 127 : e); }

// Block exponent e (scale = 2^e) for a block amax under the given rule.
// NOTE: block_amax / 6 is an IEEE FP32 divide and ceil(log2(.)) is taken EXACTLY on its
// result (a power of two stays, anything above rounds up), as TE's torch.ceil(torch.log2())
// does for every value whose log2 is not within an ulp of an integer.
NVFP4_HD int mxfp4_block_exponent(float block_amax, MxScaleRule rule) {
  if (!(block_amax > 0.0f)) return -127;
  if (rule == MxScaleRule::round_up) return clamp_exponent(ceil_log2(block_amax / 6.0f));
  return clamp_exponent(floor_log2(block_amax) - 2);
}

NVFP4_HD uint8_t mxfp4_e8m0_code(int e) { return static_cast<uint8_t>(e + 127); }

// Encode factor 1 / 2^e (exact: a power of two, 2^127 at most).
NVFP4_HD float mxfp4_encode_factor(int e) { return exp2_int(-e); }

NVFP4_HD uint8_t mxfp4_encode_rne(float x, float encode_factor) {
  const float v = x * encode_factor;
  return e2m1_encode_rne(max_f32(min_f32(v, kE2M1Max), -kE2M1Max));
}

NVFP4_HD float mxfp4_decode(uint8_t code, uint8_t e8m0) { return e2m1_decode(code) * e8m0_decode(e8m0); }

}  // namespace nvfp4::fmt
