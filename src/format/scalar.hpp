// Scalar codecs: E2M1 (FP4), E4M3 and E5M2 (FP8), E8M0 (MX scale), BF16, FP16.
//
// The one definition of every conversion in the project (docs/numerics.md §1). Header-only,
// __host__ __device__. Conversions FROM FP32 round to nearest, ties to even (RNE). The FP8
// and FP4 encoders saturate ("satfinite"): values beyond the largest finite magnitude become
// that magnitude. BF16 and FP16 follow IEEE (overflow to Inf), as torch and cuda_bf16.h do.
//
// These are deliberately plain: bit manipulation and compares, no tables that a GPU would
// have to fetch from memory except the 16-entry E2M1 decode.
#pragma once

#include "format/hd.hpp"

#if defined(__CUDACC__)
#include <cuda_fp8.h>
#endif

namespace nvfp4::fmt {

// ---------------------------------------------------------------------------------------
// E2M1: 1 sign, 2 exponent, 1 mantissa bit, bias 1, no Inf/NaN.
// Codes 0..7 = +{0, 0.5, 1, 1.5, 2, 3, 4, 6}; 8..15 the same magnitudes negative (8 = -0).
// ---------------------------------------------------------------------------------------
inline constexpr float kE2M1Max = 6.0f;

NVFP4_HD float e2m1_decode(uint8_t code) {
  // Magnitude of code c (0..7): 0, 0.5, 1, 1.5, 2, 3, 4, 6.
  const uint32_t c = code & 7u;
  const float mag = c < 4 ? 0.5f * static_cast<float>(c)
                          : static_cast<float>((c & 1u) ? 3u << ((c >> 1) - 2) : 2u << ((c >> 1) - 2));
  return (code & 8u) ? -mag : mag;
}

// Magnitude code (0..7) of a >= 0 by RNE, saturating: above 6 gives 7; NaN gives 0. The rule (TE's cast_to_fp4x2, PTX
// cvt.rn.satfinite.e2m1x2): each boundary is a midpoint between two grid values and a
// midpoint goes to the EVEN code:
//   code = (a > 0.25) + (a >= 0.75) + (a > 1.25) + (a >= 1.75) + (a > 2.5) + (a >= 3.5) + (a > 5)
// i.e. 0.25->0, 0.75->2 (1.0), 1.25->2, 1.75->4 (2.0), 2.5->4, 3.5->6 (4.0), 5->6 (4.0).
// Computed here with fewer operations: on each binade-pair the grid is evenly spaced, so
// scale a by a power of two (exact) to make the spacing 1, round to an integer with the FPU's
// own ties-to-even by adding 2^23, and read the integer from the low mantissa bits:
//   [0, 2): code = rne(2a); [2, 4): code = 2 + rne(a); [4, 6]: code = 4 + rne(a / 2).
// NOTE: equal to the threshold rule for every FP32 in [0, 6] (-0.0 included): checked
// exhaustively by CodecE2M1.MagnitudeCodeEqualsThresholdRuleOnEveryFloat.
NVFP4_HD uint32_t e2m1_magnitude_code_rne_unchecked(float a) {  // a in [0, 6] (or -0.0)
  const bool low = a < 2.0f, mid = a < 4.0f;
  const float scale = low ? 2.0f : (mid ? 1.0f : 0.5f);
  const uint32_t offset = low ? 0u : (mid ? 2u : 4u);
  const float t = a * scale + 8388608.0f;  // a * scale is exact, so an FMA here changes nothing
  return (f32_bits(t) & 7u) + offset;
}

// The same code from a's exponent with integer operations instead of compares and selects
// (the device form: 7 instructions instead of 9). On a's binade pair the grid spacing is
// s = 2^(max(floor(log2 a), 0) - 1) (0.5 below 2, 1 in [2, 4), 2 in [4, 6]); adding the magic
// number 2^23 * s rounds a to a multiple of s with the FPU's ties-to-even and leaves a / s in
// the low mantissa bits, and the code offset (0, 2, 4) is twice the same exponent.
// NOTE: equal to the threshold rule for every FP32 in [0, 6]: checked exhaustively by
// CodecE2M1.ExponentFormEqualsThresholdRuleOnEveryFloat.
NVFP4_HD uint32_t e2m1_magnitude_code_rne_exponent(float a) {  // a in [0, 6] (or -0.0)
  const uint32_t eb = f32_bits(a) & 0x7F800000u;
  const uint32_t e = eb > 0x3F800000u ? eb : 0x3F800000u;  // 2^max(floor(log2 a), 0), as FP32 bits
  const float t = a + f32_from_bits(e + 0x0B000000u);       // + 2^22 * that power = 2^23 * s
  return (f32_bits(t) & 7u) + (e >> 22) - 254u;
}

NVFP4_HD uint32_t e2m1_magnitude_code_rne(float a) {
  a = a > kE2M1Max ? kE2M1Max : (a == a ? a : 0.0f);  // saturate; NaN -> 0 (callers reject NaN)
  return e2m1_magnitude_code_rne_unchecked(a);
}

// FP32 -> E2M1 code, RNE, saturating at +-6. A negative value that rounds to zero keeps
// its sign (code 8, "-0"); -0.0 itself gives code 0 (it is not < 0). NaN gives 0: callers
// reject non-finite input before quantizing (docs/numerics.md §2, non-finite input).
// (|v| is taken by a compare rather than bit masking so that compilers vectorize it; -0.0
// stays -0.0, which compares like +0.)
NVFP4_HD uint8_t e2m1_encode_rne(float v) {
  const bool neg = v < 0.0f;
  const float a = neg ? -v : v;
  return static_cast<uint8_t>((neg ? 8u : 0u) | e2m1_magnitude_code_rne(a));
}

// Grid neighbours for stochastic rounding of a magnitude a in [0, 6]:
// lo = largest grid value <= a, step = distance to the next grid value.
// Steps: 0.5 below 2, 1 in [2, 4), 2 in [4, 6].
NVFP4_HD uint32_t e2m1_magnitude_code_floor(float a) {
  return static_cast<uint32_t>(a >= 0.5f) + static_cast<uint32_t>(a >= 1.0f) +
         static_cast<uint32_t>(a >= 1.5f) + static_cast<uint32_t>(a >= 2.0f) +
         static_cast<uint32_t>(a >= 3.0f) + static_cast<uint32_t>(a >= 4.0f) +
         static_cast<uint32_t>(a >= 6.0f);
}

// FP32 -> E2M1 code with stochastic rounding driven by 8 random bits r8 (0..255).
// |v| is saturated to 6, then rounded UP to the next grid value with probability
// (|v| - lo) / step, realised as: up iff r8 < 256 * (|v| - lo) / step.
// Computed branch-free (so it vectorizes): q = |v| / step is exact (step is a power of two),
// lo / step = floor(q), and the fraction q - floor(q) is exact too; so the comparison with
// the integer r8 is exact on host and device alike. Codes: [0,2): floor(q) + up (q = 2|v|);
// [2,4): 2 + floor(q) + up (q = |v|); [4,6]: 4 + floor(q) + up (q = |v|/2; 6 gives 7).
NVFP4_HD uint8_t e2m1_encode_sr(float v, uint32_t r8) {
  const bool neg = v < 0.0f;
  const float a = min_abs(v, kE2M1Max);  // saturate; NaN (rejected upstream) -> 6, code 7
#if defined(__CUDA_ARCH__)
  // The device form derives the step from a's exponent (as e2m1_magnitude_code_rne_exponent)
  // instead of compares and selects. Same decision, exactly: with s the step,
  //   t = 2^23 s + floor(a / s) s      (round-toward-zero add: floor(a/s) in the low bits)
  //   frac = a - floor(a / s) s        (exact: Sterbenz), in [0, s)
  //   up  <=>  r8 * s / 256 < frac     <=>  r8 < 256 * frac / s   (power-of-two scalings only)
  // NOTE: DeviceFormat tests compare it with the host form below on every midpoint and r8.
  const uint32_t eb = f32_bits(a) & 0x7F800000u;
  const uint32_t e = eb > 0x3F800000u ? eb : 0x3F800000u;  // 2^max(floor(log2 a), 0), as FP32 bits
  const float magic = f32_from_bits(e + 0x0B000000u);      // 2^23 * s
  const float t = __fadd_rz(a, magic);
  const float frac = a - (t - magic);
  const float threshold = small_uint_to_f32(r8) * f32_from_bits(e - 0x04800000u);  // r8 * s / 256
  const uint32_t up = threshold < frac ? 1u : 0u;
  return static_cast<uint8_t>((neg ? 8u : 0u) | ((f32_bits(t) & 7u) + (e >> 22) - 254u + up));
#else
  const bool low = a < 2.0f, mid = a < 4.0f;
  const float inv_step = low ? 2.0f : (mid ? 1.0f : 0.5f);
  const float q = a * inv_step;              // exact, in [0, 4)
  const float t = floor_plus_2p23(q);        // 2^23 + floor(q)
  const float frac = q - (t - 8388608.0f);   // exact
  const uint32_t up = small_uint_to_f32(r8) < frac * 256.0f ? 1u : 0u;
  const uint32_t base = low ? 0u : (mid ? 2u : 4u);
  return static_cast<uint8_t>((neg ? 8u : 0u) | (base + (f32_bits(t) & 7u) + up));
#endif
}

// ---------------------------------------------------------------------------------------
// E4M3 ("fn"): bias 7, max finite 448 (0x7E), min normal 2^-6, min subnormal 2^-9,
// no Inf, NaN = 0x7F / 0xFF.
// ---------------------------------------------------------------------------------------
inline constexpr float kE4M3Max = 448.0f;

NVFP4_HD float e4m3_decode(uint8_t code) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  // NOTE: on the GPU, the hardware conversion E4M3 -> FP16 (exact: every E4M3 value is an FP16
  // normal) and FP16 -> FP32, instead of the bit assembly below. NaN codes keep the host's bits.
  if ((code & 0x7Fu) == 0x7Fu) return f32_from_bits(0x7FC00000u | ((code & 0x80u) ? 0x80000000u : 0u));
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(code), __NV_E4M3)));
#endif
  const uint32_t exp = (code >> 3) & 0xFu;
  const uint32_t man = code & 7u;
  const bool neg = (code & 0x80u) != 0;
  if (exp == 0xFu && man == 7u) return f32_from_bits(0x7FC00000u | (neg ? 0x80000000u : 0u));
  float mag;
  if (exp == 0) {
    mag = static_cast<float>(man) * (1.0f / 512.0f);  // subnormal: man * 2^-9 (exact)
  } else {
    mag = f32_from_bits(((exp + 120u) << 23) | (man << 20));  // rebias 7 -> 127
  }
  return neg ? -mag : mag;
}

// FP32 -> E4M3, RNE, saturating: clamp to +-448 first, then round (docs/numerics.md §1).
NVFP4_HD uint8_t e4m3_encode(float v) {
#if defined(__CUDA_ARCH__)
  // NOTE: on the GPU, the hardware conversion (cvt.rn.satfinite.e4m3x2.f32): the same
  // saturating RNE, NaN -> 0x7F, in one instruction. DeviceFormat.* tests compare it with the
  // host code below over every 61st FP32 bit pattern and every midpoint.
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
#else
  if (is_nan(v)) return 0x7Fu;
  const uint32_t sign = (f32_bits(v) >> 24) & 0x80u;
  const float a = min_f32(abs_f32(v), kE4M3Max);
  uint32_t code;
  if (a < 0.015625f) {  // below 2^-6: subnormal grid of step 2^-9; a*512 is exact
    code = static_cast<uint32_t>(rne_integer(a * 512.0f));  // 8 means 2^-6 = code 0x08
  } else {
    uint32_t b = f32_bits(a);
    b += 0x7FFFFu + ((b >> 20) & 1u);  // RNE to 3 mantissa bits
    code = (((b >> 23) - 120u) << 3) | ((b >> 20) & 7u);
  }
  return static_cast<uint8_t>(sign | code);
#endif
}

// ---------------------------------------------------------------------------------------
// E5M2: bias 15, max finite 57344 (0x7B), min normal 2^-14, min subnormal 2^-16,
// Inf 0x7C, NaN 0x7D..0x7F. Encoding saturates to +-57344 (satfinite).
// ---------------------------------------------------------------------------------------
inline constexpr float kE5M2Max = 57344.0f;

NVFP4_HD float e5m2_decode(uint8_t code) {
  const uint32_t exp = (code >> 2) & 0x1Fu;
  const uint32_t man = code & 3u;
  const uint32_t sign = (code & 0x80u) ? 0x80000000u : 0u;
  if (exp == 0x1Fu) return f32_from_bits(sign | (man ? 0x7FC00000u : 0x7F800000u));
  if (exp == 0) {
    const float mag = static_cast<float>(man) * (1.0f / 65536.0f);  // man * 2^-16
    return sign ? -mag : mag;
  }
  return f32_from_bits(sign | ((exp + 112u) << 23) | (man << 21));
}

NVFP4_HD uint8_t e5m2_encode(float v) {
#if defined(__CUDA_ARCH__)
  // NOTE: as e4m3_encode: the hardware conversion (cvt.rn.satfinite.e5m2x2.f32), the same
  // saturating RNE, NaN -> 0x7F; compared with the host code below by the DeviceFormat tests.
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E5M2));
#else
  if (is_nan(v)) return 0x7Fu;
  const uint32_t sign = (f32_bits(v) >> 24) & 0x80u;
  const float a = min_f32(abs_f32(v), kE5M2Max);
  uint32_t code;
  if (a < 6.103515625e-05f) {  // below 2^-14: subnormal grid of step 2^-16; a*65536 exact
    code = static_cast<uint32_t>(rne_integer(a * 65536.0f));
  } else {
    uint32_t b = f32_bits(a);
    b += 0xFFFFFu + ((b >> 21) & 1u);  // RNE to 2 mantissa bits
    code = (((b >> 23) - 112u) << 2) | ((b >> 21) & 3u);
  }
  return static_cast<uint8_t>(sign | code);
#endif
}

// ---------------------------------------------------------------------------------------
// E8M0: unsigned biased exponent, value 2^(e - 127), 0xFF = NaN. Code 0 is 2^-127, an FP32
// subnormal (exactly representable).
// ---------------------------------------------------------------------------------------
NVFP4_HD float e8m0_decode(uint8_t code) {
  if (code == 0xFFu) return f32_from_bits(0x7FC00000u);
  if (code == 0) return f32_from_bits(0x00400000u);  // 2^-127
  return f32_from_bits(static_cast<uint32_t>(code) << 23);
}

// 2^e for an integer e in [-127, 127], exactly.
NVFP4_HD float exp2_int(int e) {
  return e == -127 ? f32_from_bits(0x00400000u) : f32_from_bits(static_cast<uint32_t>(e + 127) << 23);
}

// floor(log2(a)) for finite a > 0, exactly (subnormals included).
NVFP4_HD int floor_log2(float a) {
  const uint32_t b = f32_bits(a) & 0x7FFFFFFFu;
  const int e = static_cast<int>(b >> 23);
  if (e != 0) return e - 127;
  // subnormal: value = m * 2^-149, floor(log2) = -149 + index of the top set bit of m
  int top = 22;
  while (top > 0 && !((b >> top) & 1u)) --top;
  return -149 + top;
}

// ceil(log2(a)) for finite a > 0, exactly: floor, plus one unless a is a power of two.
NVFP4_HD int ceil_log2(float a) {
  const int f = floor_log2(a);
  const uint32_t b = f32_bits(a) & 0x7FFFFFFFu;
  const bool pow2 = (b >> 23) != 0 ? (b & 0x7FFFFFu) == 0 : (b & (b - 1)) == 0;
  return pow2 ? f : f + 1;
}

// ---------------------------------------------------------------------------------------
// BF16 and FP16 (IEEE; RNE; overflow to Inf; NaN stays NaN, quieted).
// ---------------------------------------------------------------------------------------
NVFP4_HD uint16_t bf16_encode(float v) {
  uint32_t b = f32_bits(v);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((b >> 16) | 0x40u);
  b += 0x7FFFu + ((b >> 16) & 1u);
  return static_cast<uint16_t>(b >> 16);
}

NVFP4_HD float bf16_decode(uint16_t h) { return f32_from_bits(static_cast<uint32_t>(h) << 16); }

// Round an FP32 value to the nearest BF16 value, returned as FP32.
NVFP4_HD float bf16_round(float v) { return bf16_decode(bf16_encode(v)); }

NVFP4_HD uint16_t fp16_encode(float v) {
  const uint32_t b = f32_bits(v);
  const uint32_t sign = (b >> 16) & 0x8000u;
  const uint32_t a = b & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
  if (a >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds to >= 65520: Inf
  if (a < 0x38800000u) {
    // Below 2^-14: subnormal grid of step 2^-24; |v| * 2^24 is exact, < 1024.
    const float q = rne_integer(f32_from_bits(a) * 16777216.0f);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(q));
  }
  const uint32_t r = a + 0xFFFu + ((a >> 13) & 1u);  // RNE to 10 mantissa bits
  return static_cast<uint16_t>(sign | ((r - (112u << 23)) >> 13));
}

NVFP4_HD float fp16_decode(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) ? 0x80000000u : 0u;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t man = h & 0x3FFu;
  if (exp == 0x1Fu) return f32_from_bits(sign | 0x7F800000u | (man << 13));
  if (exp == 0) {
    const float mag = static_cast<float>(man) * (1.0f / 16777216.0f);  // man * 2^-24
    return sign ? -mag : mag;
  }
  return f32_from_bits(sign | ((exp + 112u) << 23) | (man << 13));
}

}  // namespace nvfp4::fmt
