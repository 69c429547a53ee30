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

// The tensor scale that maps amax onto `range` (the largest block scale times 6): 2688 for the
// standard rule, kNvfp4FourOverSixRange for 4/6. nvfp4_tensor_scale(amax) is range 2688.
NVFP4_HD Nvfp4TensorScale nvfp4_tensor_scale_for_range(float amax, float range) {
  Nvfp4TensorScale t;
  t.amax = amax;
  // IEEE divide: amax == 0 gives +Inf, clamped to FLT_MAX; amax == +Inf gives 0, replaced by 1.
  float s_enc = min_f32(range / amax, kFltMax);
  if (s_enc == 0.0f) s_enc = 1.0f;
  t.s_enc = s_enc;
  t.s_dec = 1.0f / s_enc;
  // NOTE: fold 1/6 into the global scale FIRST, then multiply by the block amax. TE's kernel
  // and its reference do it in this order; (bamax * s_enc) / 6 rounds differently.
  const float inv6 = 1.0f / 6.0f;  // fp32(1/6), correctly rounded
  t.mult = s_enc * inv6;
  return t;
}

NVFP4_HD Nvfp4TensorScale nvfp4_tensor_scale(float amax) { return nvfp4_tensor_scale_for_range(amax, kNvfp4AmaxRange); }

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

// The per-tensor scale of an activation quantized row by row at run time (W4A4 inference):
//   dynamic    amax == 0, encode == 0: each row its own amax (per-token scaling);
//   calibrated amax > 0: nvfp4_tensor_scale(amax), the GEMM output factor amax / 2688;
//   stored     encode > 0, decode > 0 (amax == 0): a checkpoint's factors, used as the serving
//              engines use them — encode maps values onto the grid (ModelOpt: 1 / input_scale;
//              compressed-tensors: input_global_scale), decode multiplies the GEMM output
//              (input_scale; 1 / input_global_scale). The block scales then follow this header's
//              steps with S_enc = encode (S_dec = 1 / encode).
struct Nvfp4InputScale {
  float amax = 0.0f;
  float encode = 0.0f, decode = 0.0f;
};

// Why an Nvfp4InputScale is unusable, or nullptr: a value negative or not finite, amax together
// with stored factors, or only one of encode and decode.
inline const char* nvfp4_input_scale_problem(const Nvfp4InputScale& s) {
  const auto ok = [](float v) { return v >= 0.0f && v <= kFltMax; };  // false for NaN too
  if (!ok(s.amax) || !ok(s.encode) || !ok(s.decode)) return "its amax and factors must be finite and >= 0";
  if ((s.encode > 0.0f) != (s.decode > 0.0f)) return "stored factors come as a pair (encode and decode)";
  if (s.amax > 0.0f && s.encode > 0.0f) return "a calibrated amax and stored factors exclude each other";
  return nullptr;
}

// The tensor scale a row with max |x| = row_amax is quantized with under s, and through the
// out-parameters the GEMM output factor and whether the row saturates, never for a dynamic scale:
// calibrated: row_amax > amax (its largest block scale passes 448); stored: row_amax * mult > 464,
// where E4M3's round to nearest even would give 480 were 448 not its largest value — between 448
// and 464 the scale merely rounds to 448 (so the row holding the calibration's own amax, whose
// scale the stored factors' rounding may put a hair above 448, is not flagged).
NVFP4_HD Nvfp4TensorScale nvfp4_input_tensor_scale(const Nvfp4InputScale& s, float row_amax, float* decode,
                                                   bool* saturates) {
  if (s.encode > 0.0f) {
    Nvfp4TensorScale t;
    t.amax = s.decode * kNvfp4AmaxRange;
    t.s_enc = s.encode;
    t.s_dec = 1.0f / s.encode;
    const float inv6 = 1.0f / 6.0f;
    t.mult = s.encode * inv6;
    *decode = s.decode;
    *saturates = row_amax * t.mult > kE4M3Max + 16.0f;  // 464: the midpoint between 448 and 480
    return t;
  }
  const float amax = s.amax > 0.0f ? s.amax : row_amax;
  *decode = nvfp4_tensor_decode_factor(amax);
  *saturates = row_amax > amax;
  return nvfp4_tensor_scale(amax);
}

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

// ---- Block-scale rules for post-training quantization (src/ptq/, docs/ptq.md) ---------------------
//
// Every rule gives standard NVFP4 (codes, E4M3 block scales, one FP32 tensor decode factor), so any
// engine decodes it; they differ in which E4M3 scale each block gets. Codes are always
// nvfp4_encode_rne with the chosen scale's nvfp4_block_encode_factor. A block's error is the sum of
// squared differences between its values and their decoded values e2m1(q) * fp32(s_b) * decode
// (decode: the tensor decode factor, amax / range), summed in double in element order.
//   max    nvfp4_block_scale: the block amax onto 6 (the training recipe's rule; range 2688).
//   mse    range 1536 as 4/6 (the max rule's block scales <= 256, so a block may take a scale up
//          to 1.75x larger), and among the max rule's code c and its neighbours c - 4 ... c + 8
//          (from about 0.8x, which clips the largest values, to about 2x, which maps the block
//          amax onto 3), the code with the least error: c itself unless another is strictly
//          better; of equally good others, the lowest code. Its candidates include 4/6's two, so
//          no block errs more under mse than under 4/6.
//   4/6    the Four-over-Six rule: range 6 x 256 = 1536 (block scales of the max rule <= 256), and
//          per block the max rule's scale (its amax onto 6) or the scale of its amax onto 4
//          (block amax x S_enc / 4 <= 384 < 448), whichever errs less (6 on a tie).

inline constexpr float kNvfp4FourOverSixRange = 1536.0f;  // 6 * 256
inline constexpr int kNvfp4MseBelow = 4, kNvfp4MseAbove = 8;  // the mse rule's candidate window

// Squared error of n (<= 16) values quantized with E4M3 scale `scale_code` and decoded.
NVFP4_HD double nvfp4_block_sq_error(const float* x, int n, uint8_t scale_code, const Nvfp4TensorScale& t,
                                     float decode) {
  const float e = nvfp4_block_encode_factor(scale_code, t);
  const float s = e4m3_decode(scale_code);
  double err = 0.0;
  for (int j = 0; j < n; ++j) {
    const float xhat = e2m1_decode(nvfp4_encode_rne(x[j], e)) * s * decode;
    const double d = static_cast<double>(x[j]) - static_cast<double>(xhat);
    err += d * d;
  }
  return err;
}

// The mse rule's scale code for a block of n values with amax block_amax (t: range
// kNvfp4FourOverSixRange).
NVFP4_HD uint8_t nvfp4_block_scale_mse(const float* x, int n, float block_amax, const Nvfp4TensorScale& t,
                                       float decode) {
  const uint8_t c = nvfp4_block_scale(block_amax, t);
  if (c == 0) return 0;  // the block underflows E4M3: every candidate below decodes it to 0 too
  uint8_t best = c;
  double best_err = nvfp4_block_sq_error(x, n, c, t, decode);
  const int lo = c > kNvfp4MseBelow ? c - kNvfp4MseBelow : 1;
  const int hi = c + kNvfp4MseAbove < 0x7E ? c + kNvfp4MseAbove : 0x7E;  // 0x7E = 448, 0x7F is NaN
  for (int k = lo; k <= hi; ++k) {
    if (k == c) continue;
    const double err = nvfp4_block_sq_error(x, n, static_cast<uint8_t>(k), t, decode);
    if (err < best_err) {
      best = static_cast<uint8_t>(k);
      best_err = err;
    }
  }
  return best;
}

// The 4/6 rule's scale code (t: range kNvfp4FourOverSixRange).
NVFP4_HD uint8_t nvfp4_block_scale_four_over_six(const float* x, int n, float block_amax, const Nvfp4TensorScale& t,
                                                 float decode) {
  const uint8_t c6 = nvfp4_block_scale(block_amax, t);
  const uint8_t c4 = e4m3_encode(min_f32(block_amax * (t.s_enc * 0.25f), kFltMax));
  if (c4 == c6) return c6;
  return nvfp4_block_sq_error(x, n, c4, t, decode) < nvfp4_block_sq_error(x, n, c6, t, decode) ? c4 : c6;
}

}  // namespace nvfp4::fmt
