// Host/device portability for the header-only format core.
//
// Everything under src/format/ is plain arithmetic on scalars and small arrays. It compiles
// as ordinary C++ for the CPU reference and as __host__ __device__ code for the CUDA kernels,
// so both run the SAME definition of every rounding step (architecture.md, principle 1).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define NVFP4_HD __host__ __device__ __forceinline__
#else
#define NVFP4_HD inline
#endif

namespace nvfp4::fmt {

// The largest finite FP32 value (FLT_MAX), spelled out so device code needs no <cfloat>.
inline constexpr float kFltMax = 3.40282346638528859812e+38f;

NVFP4_HD uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

NVFP4_HD float f32_from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

NVFP4_HD bool is_finite(float f) { return (f32_bits(f) & 0x7F800000u) != 0x7F800000u; }
NVFP4_HD bool is_nan(float f) { return (f32_bits(f) & 0x7FFFFFFFu) > 0x7F800000u; }
NVFP4_HD float abs_f32(float f) { return f32_from_bits(f32_bits(f) & 0x7FFFFFFFu); }

// min/max with explicit semantics: NaN never wins (callers reject non-finite input first).
NVFP4_HD float min_f32(float a, float b) { return b < a ? b : a; }
NVFP4_HD float max_f32(float a, float b) { return b > a ? b : a; }

// Round-to-nearest-even to an integer for |v| < 2^23 (exact for the small ranges used here).
// NOTE: adding and subtracting 1.5*2^23 rounds in IEEE round-to-nearest-even on host and
// device alike; without fast-math no compiler may fold the pair away. Valid for |v| < 2^22.
NVFP4_HD float rne_integer(float v) {
  const float magic = 12582912.0f;  // 1.5 * 2^23
#if defined(__CUDA_ARCH__)
  return __fsub_rn(__fadd_rn(v, magic), magic);
#else
  const float t = v + magic;
  return t - magic;
#endif
}

// min(|v|, hi) for hi > 0, with NaN giving hi and -0.0 giving +0 or -0 (both compare as 0).
// NOTE: the device form is one FMNMX with an |.| operand (fminf returns the non-NaN operand);
// the host form is compare-and-select, which compilers vectorize. Same value either way.
NVFP4_HD float min_abs(float v, float hi) {
#if defined(__CUDA_ARCH__)
  return fminf(fabsf(v), hi);
#else
  const float m = v < 0.0f ? -v : v;
  return m < hi ? m : hi;
#endif
}

// 2^23 + floor(q) for 0 <= q < 2^22, exactly: the integer floor(q) sits in the low mantissa
// bits of the result. NOTE: the device adds with round-toward-zero (a full-rate FADD); the
// host truncates through an integer. Both give the same float, without the device's slower
// float<->int conversion instructions in the hot loop.
NVFP4_HD float floor_plus_2p23(float q) {
#if defined(__CUDA_ARCH__)
  return __fadd_rz(q, 8388608.0f);
#else
  return f32_from_bits(0x4B000000u | static_cast<uint32_t>(q));
#endif
}

// An integer 0 <= r < 2^23 as a float, exactly, by bit assembly (no conversion instruction).
NVFP4_HD float small_uint_to_f32(uint32_t r) { return f32_from_bits(0x4B000000u | r) - 8388608.0f; }

}  // namespace nvfp4::fmt
