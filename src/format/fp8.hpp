// FP8 E4M3 / E5M2 with current scaling (the FP8 baseline of docs/numerics.md §5):
//   per tensor:            scale = fp8_max / amax over the tensor
//   per block (DeepSeek):  scale = fp8_max / amax over each 1x128 (activations, gradients)
//                          or 128x128 (weights) block
// q = fp8_rne_satfinite(x * scale); the stored decode factor is scale_inv = 1 / scale, and
// x_hat = fp8_decode(q) * scale_inv. An all-zero tensor or block gets scale 1.
#pragma once

#include "format/scalar.hpp"

namespace nvfp4::fmt {

enum class Fp8Kind : uint8_t { e4m3, e5m2 };

NVFP4_HD float fp8_max(Fp8Kind k) { return k == Fp8Kind::e4m3 ? kE4M3Max : kE5M2Max; }

// Encode scale from an amax: fp8_max / amax, kept finite; 1 when amax is 0, Inf or NaN
// (TE's compute_scale_from_amax does the same).
NVFP4_HD float fp8_scale_from_amax(float amax, Fp8Kind k) {
  if (!(amax > 0.0f) || !is_finite(amax)) return 1.0f;
  return min_f32(fp8_max(k) / amax, kFltMax);
}

NVFP4_HD uint8_t fp8_encode(float x, Fp8Kind k) { return k == Fp8Kind::e4m3 ? e4m3_encode(x) : e5m2_encode(x); }
NVFP4_HD float fp8_decode(uint8_t q, Fp8Kind k) { return k == Fp8Kind::e4m3 ? e4m3_decode(q) : e5m2_decode(q); }

NVFP4_HD uint8_t fp8_encode_scaled(float x, float scale, Fp8Kind k) { return fp8_encode(x * scale, k); }

}  // namespace nvfp4::fmt
