// The random Hadamard transforms (docs/numerics.md §4): 16-point for NVFP4 (TE's), 32-point for
// MXFP4 (the NVFP4 paper's MXFP4 comparison used one; docs/numerics.md §5).
//
//   H = diag(s) * H16 / 4,  H16 the Sylvester Hadamard matrix, s a fixed sign vector.
//   y = x * H  for each contiguous 16-chunk x of a row (row vector times matrix):
//   y_j = (1/4) * sum_i s_i * (-1)^popcount(i & j) * x_i
//
// Applied to the column-wise (transposed) copies of the two Wgrad operands; H is orthogonal
// and the same for both, so it cancels in dW = dY^T X. The sum is taken in FP32 by the fast
// Walsh-Hadamard butterfly (the one order both CPU and GPU use); for BF16 input the result is
// rounded to BF16 before the amax is taken.
#pragma once

#include "format/scalar.hpp"
#include "nvfp4/sr_key.hpp"

namespace nvfp4::fmt {

inline constexpr int kRhtSize = 16;

// TE's sign vector as a bit mask (bit i set: s_i = -1): include/nvfp4/sr_key.hpp (defined once).
using nvfp4::kTeRhtSignMask;

// In-place transform of N FP32 values: each input multiplied by its sign (exact), then
// log2(N) butterfly stages of FP32 adds in this one order, then * scale.
template <int N>
NVFP4_HD void rht_n(float* v, uint32_t sign_mask, float scale) {
  for (int i = 0; i < N; ++i) {
    if ((sign_mask >> i) & 1u) v[i] = -v[i];
  }
  for (int h = 1; h < N; h <<= 1) {
    for (int i = 0; i < N; i += 2 * h) {
      for (int j = i; j < i + h; ++j) {
        const float a = v[j], b = v[j + h];
        v[j] = a + b;
        v[j + h] = a - b;
      }
    }
  }
  for (int i = 0; i < N; ++i) v[i] *= scale;
}

// The 16-point transform; the final * 0.25 is exact (a power of two) barring FP32 underflow.
NVFP4_HD void rht16(float* v, uint16_t sign_mask) { rht_n<kRhtSize>(v, sign_mask, 0.25f); }

}  // namespace nvfp4::fmt

namespace nvfp4::fmt {

// Inverse of rht16 (H is orthogonal: H^-1 = H^T = H16 * diag(s) / 4): undo the butterflies,
// then the signs. For dequantizing an RHT copy back to the original basis.
NVFP4_HD void rht16_inverse(float* v, uint16_t sign_mask) {
  rht16(v, 0);
  for (int i = 0; i < kRhtSize; ++i) {
    if ((sign_mask >> i) & 1u) v[i] = -v[i];
  }
}

}  // namespace nvfp4::fmt

namespace nvfp4::fmt {

// ---- the 32-point transform (MXFP4: one transform per 32-element block) ----------------------
//
//   H = diag(s) * H32 / sqrt(32),  y_j = (1/sqrt(32)) * sum_i s_i * (-1)^popcount(i & j) * x_i
//
// Sign vector (this project's choice; TE defines none for 32 points): TE's 16 signs, then the
// same 16 negated — bit i set means s_i = -1.
inline constexpr int kRht32Size = 32;
inline constexpr uint32_t kRht32SignMask = uint32_t{kTeRhtSignMask} | (uint32_t{static_cast<uint16_t>(~kTeRhtSignMask)} << 16);
// fp32(1/sqrt(32)), the final scale. Unlike 16 points' 1/4 it is not a power of two: the
// product is rounded once (RNE), identically on CPU and GPU.
inline constexpr float kRht32Scale = 0.17677669529663688f;

// In-place transform of 32 FP32 values: signs, five butterfly stages, then * kRht32Scale.
NVFP4_HD void rht32(float* v, uint32_t sign_mask) { rht_n<kRht32Size>(v, sign_mask, kRht32Scale); }

// Inverse of rht32 up to rounding (H is orthogonal): the unsigned transform, then the signs.
NVFP4_HD void rht32_inverse(float* v, uint32_t sign_mask) {
  rht32(v, 0);
  for (int i = 0; i < kRht32Size; ++i) {
    if ((sign_mask >> i) & 1u) v[i] = -v[i];
  }
}

}  // namespace nvfp4::fmt
