// NVFP4 quantization on Hopper: row-wise and column-wise copies in one pass, 1x16 or 16x16
// blocks, the 16-point RHT, stochastic rounding, swizzled scales (include/nvfp4/cuda_quantize.hpp;
// the tiling: quantize_common.cuh).
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "format/nvfp4.hpp"
#include "format/rht.hpp"
#include "format/swizzle.hpp"

#include "kernels/cuda/quantize_common.cuh"

namespace nvfp4::cuda {

using namespace quantize_detail;

namespace {

// ---- quantize pass ------------------------------------------------------------------------

struct CopyArgs {
  uint8_t* codes;
  uint8_t* scales;
  const float* amax;
};

struct QuantizeArgs {
  int64_t M, K;
  CopyArgs row, col;  // codes == nullptr: copy not requested
  int tile_rows;
  uint16_t sign_mask;
  bool rht, sr, swizzled;
  fmt::SrKey row_key, col_key;
  uint32_t* nonfinite;  // counted here only when count_nonfinite_here
  bool count_nonfinite_here;
};

__device__ __forceinline__ int64_t scale_offset(bool swizzled, int64_t r, int64_t c, int64_t scale_cols) {
  return swizzled ? fmt::swizzled_scale_offset(r, c, scale_cols) : r * scale_cols + c;
}

// kRow / kCol: which copies; kSr: stochastic rounding; kCount: count non-finite inputs here.
// NOTE: the SR variants ask for 6 CTAs per SM (a 40-register budget, no spills per ptxas -v):
// uncapped they took 56 registers, 4 CTAs and 50% occupancy, and are instruction-bound.
// minBlocks 0 leaves the RNE variants to the compiler (it picks 32-60 registers, no spills).
template <typename T, bool kRow, bool kCol, bool kSr, bool kCount>
__global__ void __launch_bounds__(kThreads, kSr ? 6 : 0) quantize_kernel(const T* __restrict__ x, QuantizeArgs a) {
  constexpr int V = Elem<T>::kPerVec;
  constexpr int kVecs = 16 / V;  // 16-byte loads per 16-element block
  __shared__ float tile[kCol ? kTile : 1][kPad];
  __shared__ unsigned int tile_amax[kTile / 16][kTile / 16];  // 16x16 tiles (2D mode), |x| bits

  const int t = threadIdx.x;
  const int i4 = t / 4, j4 = t % 4;  // (row, block) in the row phase; (col, block) in the col phase
  const int64_t m0 = int64_t(blockIdx.y) * kTile, k0 = int64_t(blockIdx.x) * kTile;
  const int rows = static_cast<int>(a.M - m0 < kTile ? a.M - m0 : kTile);
  const int cols = static_cast<int>(a.K - k0 < kTile ? a.K - k0 : kTile);

  // ---- load: thread (i4, j4) reads its 16 values x[m0 + i4][k0 + 16 j4 ..] (4 threads = 128 B) ----
  const bool mine = i4 < rows && 16 * j4 < cols;
  float v[16];
  uint32_t bamax;  // this block's max |x| bits
  {
    union {
      uint4 u[kVecs];
      T e[16];
    } in;
#pragma unroll
    for (int q = 0; q < kVecs; ++q) {
      in.u[q] = mine ? *reinterpret_cast<const uint4*>(x + (m0 + i4) * a.K + k0 + 16 * j4 + q * V) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int j = 0; j < 16; ++j) v[j] = Elem<T>::to_f32(in.e[j]);
    bamax = block_amax_bits<T>(in.u, v);
  }
  if constexpr (kCount) count_block_nonfinite(a.nonfinite, bamax, v);

  if constexpr (kCol) {
#pragma unroll
    for (int j = 0; j < 16; ++j) tile[i4][16 * j4 + j] = v[j];
  }
  if (a.tile_rows == 16) {  // uniform: fold every block's amax into its 16x16 tile's
    if (t < (kTile / 16) * (kTile / 16)) tile_amax[t / 4][t % 4] = 0;
    __syncthreads();
    atomicMax(&tile_amax[i4 / 16][j4], bamax);
  }
  if (kCol || a.tile_rows == 16) __syncthreads();

  // ---- row phase: from registers ----
  // NOTE: the row and column phases end with the same five steps written out twice on purpose:
  // a shared __device__ helper (tried) raised the RNE kernels from 32 to 55 registers and cost
  // 9% of their speed on the H100.
  if (kRow && mine) {
    const auto ts = fmt::nvfp4_tensor_scale(*a.row.amax);
    const uint32_t m = a.tile_rows == 16 ? tile_amax[i4 / 16][j4] : bamax;
    const uint8_t s = fmt::nvfp4_block_scale(__uint_as_float(m), ts);
    const float e = fmt::nvfp4_block_encode_factor(s, ts);
    const int64_t r = m0 + i4, c16 = (k0 + 16 * j4) / 16;
    fmt::Philox4x32 bits{};
    if constexpr (kSr) bits = fmt::sr_block_bits(a.row_key, static_cast<uint64_t>(r * (a.K / 16) + c16));
    *reinterpret_cast<uint2*>(a.row.codes + r * (a.K / 2) + 8 * c16) = encode16<kSr>(v, e, bits);
    a.row.scales[scale_offset(a.swizzled, r, c16, a.K / 16)] = s;
  }

  // ---- col phase: x[m0 + 16 j4 ..][k0 + i4] is row k0 + i4 of the transposed copy ----
  if (kCol && i4 < cols && 16 * j4 < rows) {
    const auto ts = fmt::nvfp4_tensor_scale(*a.col.amax);
    float c[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) c[j] = tile[16 * j4 + j][i4];
    if (a.rht) {
      fmt::rht16(c, a.sign_mask);
#pragma unroll
      for (int j = 0; j < 16; ++j) c[j] = Elem<T>::round(c[j]);
    }
    // NOTE: fmaxf with an |.| operand is one instruction; it drops NaN, which is fine here:
    // non-finite input was counted in the load phase and such outputs are not meaningful.
    float fm = 0.0f;
#pragma unroll
    for (int j = 0; j < 16; ++j) fm = fmaxf(fm, fabsf(c[j]));
    uint32_t m = __float_as_uint(fm);
    if (a.tile_rows == 16) m = tile_amax[j4][i4 / 16];
    const uint8_t s = fmt::nvfp4_block_scale(__uint_as_float(m), ts);
    const float e = fmt::nvfp4_block_encode_factor(s, ts);
    const int64_t r = k0 + i4, c16 = (m0 + 16 * j4) / 16;
    fmt::Philox4x32 bits{};
    if constexpr (kSr) bits = fmt::sr_block_bits(a.col_key, static_cast<uint64_t>(r * (a.M / 16) + c16));
    *reinterpret_cast<uint2*>(a.col.codes + r * (a.M / 2) + 8 * c16) = encode16<kSr>(c, e, bits);
    a.col.scales[scale_offset(a.swizzled, r, c16, a.M / 16)] = s;
  }
}

// ---- host side ------------------------------------------------------------------------------

void validate(const void* x, DType dtype, int64_t M, int64_t K, const QuantizeOptions& c, const DeviceCopy* row,
              const DeviceCopy* col) {
  validate_input("quantize_nvfp4", x, dtype, M, K);
  if (!row && !col) throw Error("quantize_nvfp4: neither the row-wise nor the column-wise copy was requested");
  if (c.rht && !col) throw Error("quantize_nvfp4: RHT transforms the column-wise copy: pass a column-wise output");
  for (const DeviceCopy* p : {row, col}) {
    if (p && (!p->codes || !p->scales || !p->amax)) throw Error("quantize_nvfp4: an output copy has a null pointer");
    if (p && reinterpret_cast<uintptr_t>(p->codes) % 8 != 0) {
      throw Error("quantize_nvfp4: output codes must be 8-byte aligned (each block's 16 codes are one 8-byte store)");
    }
  }
}

template <typename T>
void launch_quantize(const T* x, int64_t M, int64_t K, const QuantizeOptions& c, const DeviceCopy* row,
                     const DeviceCopy* col, uint32_t* nonfinite, bool count_here, cudaStream_t s) {
  if (M == 0 || K == 0) return;
  QuantizeArgs a{};
  a.M = M;
  a.K = K;
  a.row = row ? CopyArgs{row->codes, row->scales, row->amax} : CopyArgs{nullptr, nullptr, nullptr};
  a.col = col ? CopyArgs{col->codes, col->scales, col->amax} : CopyArgs{nullptr, nullptr, nullptr};
  a.tile_rows = c.block->rows;
  a.sign_mask = c.rht_sign_mask;
  a.rht = c.rht;
  a.sr = c.rounding == Rounding::stochastic;
  a.swizzled = c.swizzled_scales;
  a.row_key = sr_copy_key(c.sr_key, false);
  a.col_key = sr_copy_key(c.sr_key, true);
  a.nonfinite = nonfinite;
  a.count_nonfinite_here = count_here && nonfinite != nullptr;
  if (c.swizzled_scales) {  // the padding of the 128x4 layout must read as zero
    if (row) check(cudaMemsetAsync(row->scales, 0, fmt::swizzled_scale_bytes(M, K / 16), s), "cudaMemsetAsync");
    if (col) check(cudaMemsetAsync(col->scales, 0, fmt::swizzled_scale_bytes(K, M / 16), s), "cudaMemsetAsync");
  }
  const dim3 grid(static_cast<unsigned>((K + kTile - 1) / kTile), static_cast<unsigned>((M + kTile - 1) / kTile));
  if (grid.y > 65535) throw Error("quantize_nvfp4: M = " + std::to_string(M) + " is too large for one launch");
  // One instantiation per (copies, rounding, where non-finite input is counted).
  with_bools(
      [&](auto row_c, auto col_c, auto sr_c, auto count_c) {
        if constexpr (decltype(row_c)::value || decltype(col_c)::value) {
          quantize_kernel<T, decltype(row_c)::value, decltype(col_c)::value, decltype(sr_c)::value,
                          decltype(count_c)::value><<<grid, kThreads, 0, s>>>(x, a);
        }
      },
      row != nullptr, col != nullptr, a.sr, a.count_nonfinite_here);
  check(cudaGetLastError(), "quantize_kernel launch");
}

void run(const void* x, DType dtype, int64_t M, int64_t K, const QuantizeOptions& c, const DeviceCopy* row,
         const DeviceCopy* col, DeviceStatus status, Stream stream, bool with_amax) {
  validate(x, dtype, M, K, c, row, col);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  if (with_amax) {
    float* ra = row ? row->amax : nullptr;
    float* ca = col ? col->amax : nullptr;
    if (ra) check(cudaMemsetAsync(ra, 0, sizeof(float), s), "cudaMemsetAsync");
    if (ca) check(cudaMemsetAsync(ca, 0, sizeof(float), s), "cudaMemsetAsync");
    if (dtype == DType::BF16) launch_amax(static_cast<const uint16_t*>(x), M, K, c.rht, c.rht_sign_mask, ra, ca, status.nonfinite_count, s);
    else launch_amax(static_cast<const float*>(x), M, K, c.rht, c.rht_sign_mask, ra, ca, status.nonfinite_count, s);
  }
  // Non-finite input is counted by whichever pass reads every element first.
  const bool count_here = !with_amax;
  if (dtype == DType::BF16) launch_quantize(static_cast<const uint16_t*>(x), M, K, c, row, col, status.nonfinite_count, count_here, s);
  else launch_quantize(static_cast<const float*>(x), M, K, c, row, col, status.nonfinite_count, count_here, s);
}

}  // namespace

namespace formats {

void quantize_nvfp4(const void* x, DType dtype, int64_t M, int64_t K, const QuantizeOptions& options,
                    const DeviceCopy* row, const DeviceCopy* col, DeviceStatus status, Stream stream, AmaxInput amax) {
  run(x, dtype, M, K, nvfp4_options(options), row, col, status, stream, amax == AmaxInput::compute);
}

}  // namespace formats

}  // namespace nvfp4::cuda
