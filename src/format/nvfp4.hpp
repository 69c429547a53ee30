// NVFP4 block quantization: the arithmetic of docs/numerics.md §2, step by step, in the order
// that makes the results bit-identical to NVIDIA Transformer Engine (TE) and its reference.
//
//   amax   = max |x| over the tensor being quantized                       (FP32)
//   S_enc  = min(2688 / amax, FLT_MAX); 0 -> 1                              (2688 = 6 * 448)
//   S_dec  = 1 / S_enc
//   mult   = S_enc * fp32(1/6)
//   s_b    = e4m3_rne_sat(min(block_amax * mult, FLT_MAX))                  per 16 values
//   e_b    = min(1 / (fp32(s_b) * S_dec), FLT_MAX)
//   q_i    = e2m1(clamp(x_i * e_b, -6, 6))                                  RNE or SR
//   x_hat  = e2m1(q_i) * fp32(s_b) * (amax / 2688)
//
// Header-only and __host__ __device__: the CPU reference (src/kernels/cpu) and the CUDA
// kernels (src/kernels/cuda) both call these functions, so they agree bit for bit.
#pragma once

#include "format/philox.hpp"
#include "format/scalar.hpp"

namespace nvfp4::fmt {

inline constexpr int kNvfp4Block = 16;           // elements per scale along the contiguous dim
inline constexpr float kNvfp4AmaxRange = 2688.0f;  // E2M1 max (6) * E4M3 max (448)

// The FP32 per-tensor scale and the values derived from it once per tensor.
struct Nvfp4TensorScale {
  float amax;   // max |x| of the tensor (post-RHT for an RHT copy)
  float s_enc;  // encode: maps amax onto 2688
  float s_dec;  // decode: 1 / s_enc
  float mult;   // s_enc / 6, folded: multiplies a block amax into its E4M3 scale
};

NVFP4_HD Nvfp4TensorScale nvfp4_tensor_scale(float amax) {
  Nvfp4TensorScale t;
  t.amax = amax;
  // IEEE divide: amax == 0 gives +Inf, clamped to FLT_MAX; amax == +Inf gives 0, replaced by 1.
  float s_enc = min_f32(kNvfp4AmaxRange / amax, kFltMax);
  if (s_enc == 0.0f) s_enc = 1.0f;
  t.s_enc = s_enc;
  t.s_dec = 1.0f / s_enc;
  // NOTE: fold 1/6 into the global scale FIRST, then multiply by the block amax. TE's kernel
  // and its reference do it in this order; (bamax * s_enc) / 6 rounds differently.
  const float inv6 = 1.0f / 6.0f;  // fp32(1/6), correctly rounded
  t.mult = s_enc * inv6;
  return t;
}

// E4M3 code of a block's decode scale (relative to the tensor scale). May be 0 (underflow).
NVFP4_HD uint8_t nvfp4_block_scale(float block_amax, const Nvfp4TensorScale& t) {
  const float s = min_f32(block_amax * t.mult, kFltMax);
  return e4m3_encode(s);  // clamps to 448, then RNE
}

// FP32 factor that maps the block's values onto the E2M1 grid.
// NOTE: 1 / (s_b * S_dec) is an exact IEEE reciprocal of the rounded product, not
// S_enc / s_b: TE keeps "the final reciprocal exact", and the two differ in the last bit.
// A zero scale gives 1/0 = Inf, clamped to FLT_MAX: then every nonzero x saturates to +-6
// and the block still decodes to 0 because its scale is 0.
NVFP4_HD float nvfp4_block_encode_factor(uint8_t scale_code, const Nvfp4TensorScale& t) {
  return min_f32(1.0f / (e4m3_decode(scale_code) * t.s_dec), kFltMax);
}

// x * e_b, saturated to [-6, 6] (NaN-free input assumed).
NVFP4_HD float nvfp4_scaled(float x, float encode_factor) {
  const float v = x * encode_factor;
  return max_f32(min_f32(v, kE2M1Max), -kE2M1Max);
}

// e2m1(clamp(x * e_b, -6, 6)) with RNE. Written as |x * e_b| saturated at 6 plus the sign of
// x * e_b (so -0.0 gives code 0 and a negative value that rounds to zero keeps code 8): the
// same result as e2m1_encode_rne(nvfp4_scaled(x, e)) for every non-NaN x, in fewer
// operations — this is the hot loop of every quantizer. (NaN, rejected upstream, gives 7.)
NVFP4_HD uint8_t nvfp4_encode_rne(float x, float encode_factor) {
  const float v = x * encode_factor;
  const float a = min_abs(v, kE2M1Max);
#if defined(__CUDA_ARCH__)
  return static_cast<uint8_t>((v < 0.0f ? 8u : 0u) | e2m1_magnitude_code_rne_exponent(a));  // fewer instructions
#else
  return static_cast<uint8_t>((v < 0.0f ? 8u : 0u) | e2m1_magnitude_code_rne_unchecked(a));  // vectorizes
#endif
}

// e2m1_encode_sr saturates |v| at 6 itself: no separate clamp.
NVFP4_HD uint8_t nvfp4_encode_sr(float x, float encode_factor, uint32_t r8) {
  return e2m1_encode_sr(x * encode_factor, r8);
}

// Per-tensor decode factor applied after codes x block scale: amax / 2688.
NVFP4_HD float nvfp4_tensor_decode_factor(float amax) { return amax / kNvfp4AmaxRange; }

// Decoded value, per docs/numerics.md §2: e2m1(q) * fp32(s_b) * (amax / 2688), left to right.
NVFP4_HD float nvfp4_decode(uint8_t code, uint8_t scale_code, float tensor_decode_factor) {
  return e2m1_decode(code) * e4m3_decode(scale_code) * tensor_decode_factor;
}

// Quantize one block of n (<= 16) values given its scale. Codes go to out[0..n), one per byte
// (callers pack two per byte). bits: Philox draws for SR, ignored when sr == false.
NVFP4_HD void nvfp4_encode_block(const float* x, int n, float encode_factor, bool sr, const Philox4x32& bits,
                                 uint8_t* out) {
  for (int j = 0; j < n; ++j) {
    out[j] = sr ? nvfp4_encode_sr(x[j], encode_factor, sr_byte(bits, j)) : nvfp4_encode_rne(x[j], encode_factor);
  }
}

}  // namespace nvfp4::fmt
