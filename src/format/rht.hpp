// The 16-point random Hadamard transform (numerics.md §4).
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

namespace nvfp4::fmt {

inline constexpr int kRhtSize = 16;

// Sign vector as a bit mask: bit i set means s_i = -1. TE's vector, element 0 first:
// + + + - + - - - - - - + - + - -
inline constexpr uint16_t kTeRhtSignMask = 0b1101'0111'1110'1000;  // bits 3,5,6,7,8,9,10,12,14,15

// In-place transform of 16 FP32 values.
// NOTE: each input is first multiplied by its sign (exact), then four butterfly stages of
// FP32 adds; the final * 0.25 is exact (a power of two) barring FP32 underflow.
NVFP4_HD void rht16(float* v, uint16_t sign_mask) {
  for (int i = 0; i < kRhtSize; ++i) {
    if ((sign_mask >> i) & 1u) v[i] = -v[i];
  }
  for (int h = 1; h < kRhtSize; h <<= 1) {
    for (int i = 0; i < kRhtSize; i += 2 * h) {
      for (int j = i; j < i + h; ++j) {
        const float a = v[j], b = v[j + h];
        v[j] = a + b;
        v[j + h] = a - b;
      }
    }
  }
  for (int i = 0; i < kRhtSize; ++i) v[i] *= 0.25f;
}

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
