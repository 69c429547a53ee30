// The "128x4" scale layout that cuBLAS / CUTLASS block-scaled FP4 GEMMs read (docs/numerics.md §2).
// A [R, C] scale matrix is padded with zeros to R' = roundup(R, 128), C' = roundup(C, 4);
// entry (r, c) lives at byte
//   ((r / 128) * (C' / 4) + c / 4) * 512 + (r % 32) * 16 + ((r % 128) / 32) * 4 + c % 4.
// Checkpoints always store the plain row-major layout; this is for GPU GEMM operands only.
#pragma once

#include "format/hd.hpp"

namespace nvfp4::fmt {

NVFP4_HD int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

NVFP4_HD int64_t swizzled_scale_bytes(int64_t rows, int64_t cols) { return round_up(rows, 128) * round_up(cols, 4); }

NVFP4_HD int64_t swizzled_scale_offset(int64_t r, int64_t c, int64_t cols) {
  const int64_t cols_padded = round_up(cols, 4);
  return ((r / 128) * (cols_padded / 4) + c / 4) * 512 + (r % 32) * 16 + ((r % 128) / 32) * 4 + c % 4;
}

}  // namespace nvfp4::fmt
