// Quantization on Hopper: NVFP4 (the row-wise and column-wise copies of a BF16/FP32 matrix in
// one pass over the input, with 16x16 tiles, the 16-point RHT and stochastic rounding) and
// FP8 with per-tensor scaling (cast + transpose, same tiling).
//
// Layout (one CTA = one 64x64 tile of x, 256 threads):
//   load      the tile goes to shared memory as FP32 (16-byte coalesced global loads)
//   row phase thread (r, b) = (t / 4, t % 4): the 16 values x[r][16b .. 16b+15]  -> one block
//   col phase thread (k, mb) = (t / 4, t % 4): the 16 values x[16mb .. 16mb+15][k] -> one block
//             of the transposed copy (RHT applied to exactly these 16 values when enabled)
// Four consecutive threads write 32 consecutive code bytes in both phases (full sectors).
// All arithmetic is the format core's (src/format/): same functions, same order as the CPU
// reference, so the bits agree.
//
// The per-tensor amax of each copy must be known before any block scale: nvfp4_amax() is a
// separate pass (with RHT it transforms as it goes, so the column amax is post-RHT).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <string>
#include <type_traits>

#include "format/fp8.hpp"
#include "format/mxfp4.hpp"
#include "format/nvfp4.hpp"
#include "format/rht.hpp"
#include "format/swizzle.hpp"
#include "nvfp4/cuda_check.hpp"
#include "nvfp4/cuda_quantize.hpp"
#include "nvfp4/error.hpp"

namespace nvfp4::cuda {

namespace {

constexpr int kTile = 64;            // tile edge, elements
constexpr int kThreads = 256;        // (64 rows x 4 blocks) in the row phase, (64 cols x 4) in the col phase
constexpr int kPad = kTile + 1;      // shared-memory row pitch in floats (== 1 mod 32)
// NOTE: both phases have 2-way bank conflicts (blocks b and b + 2 of a row share banks; ncu:
// 50% excess wavefronts). An XOR swizzle that removes them measured SLOWER (the kernel is
// instruction-bound and the index math costs more than the conflicts): see docs/perf.md.

static_assert(kTile / fmt::kNvfp4Block * kTile == kThreads, "one thread per 16-element block in each phase");
static_assert(kTile % 16 == 0, "NVFP4 scales cover 16 elements; 16x16 tiles must fit a CTA tile");

// Calls fn(std::bool_constant<b0>{}, std::bool_constant<b1>{}, ...) for run-time bools: one
// kernel instantiation per combination, chosen at launch. The first two bools are always
// (row copy, column copy), and "neither" is never instantiated (validation rejects it).
template <typename Fn>
void with_bools(Fn&& fn) {
  fn();
}
template <typename Fn, typename... Rest>
void with_bools(Fn&& fn, bool b, Rest... rest) {
  if (b) with_bools([&](auto... c) { fn(std::true_type{}, c...); }, rest...);
  else with_bools([&](auto... c) { fn(std::false_type{}, c...); }, rest...);
}

// ---- element access ---------------------------------------------------------------------

template <typename T>
struct Elem;
template <>
struct Elem<uint16_t> {  // BF16, as raw bits
  static constexpr int kPerVec = 8;  // per 16-byte vector
  __device__ static float to_f32(uint16_t v) { return fmt::bf16_decode(v); }
  // NOTE: cvt.rn.bf16.f32 is the same RNE as fmt::bf16_round for every non-NaN value, in
  // one instruction (NaN input is counted and flagged, never silently used).
  __device__ static float round(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }
};
template <>
struct Elem<float> {
  static constexpr int kPerVec = 4;
  __device__ static float to_f32(float v) { return v; }
  __device__ static float round(float v) { return v; }
};

__device__ __forceinline__ void atomic_max_nonneg(float* addr, float v) {
  // Non-negative floats order like their bit patterns (NaN/Inf bits sort above all finite).
  atomicMax(reinterpret_cast<unsigned int*>(addr), __float_as_uint(v));
}

__device__ __forceinline__ void count_nonfinite(uint32_t* counter, uint32_t n) {
  if (counter == nullptr) return;
  const uint32_t warp_total = __reduce_add_sync(__activemask(), n);
  if (warp_total && (threadIdx.x & 31) == (__ffs(__activemask()) - 1)) atomicAdd(counter, warp_total);
}

__device__ __forceinline__ float warp_max(float v) {
  return __uint_as_float(__reduce_max_sync(0xFFFFFFFFu, __float_as_uint(v)));
}

// max |x| of a 16-element block as FP32 bits, from its raw 16-byte vectors (v: the same values
// as FP32). NaN and Inf bits sort above every finite value, so the block holds a non-finite
// value exactly when the result is >= 0x7F800000.
template <typename T>
__device__ __forceinline__ uint32_t block_amax_bits(const uint4 (&u)[16 / Elem<T>::kPerVec], const float (&v)[16]) {
  if constexpr (std::is_same_v<T, uint16_t>) {
    // NOTE: BF16 pairs: |x| by masking the two sign bits, then a NaN-propagating packed max
    // (HMNMX2): one instruction per two elements, and a max of BF16 values is exact.
    __nv_bfloat162 m2 = __halves2bfloat162(__ushort_as_bfloat16(0), __ushort_as_bfloat16(0));
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      const uint32_t w[4] = {u[q].x & 0x7FFF7FFFu, u[q].y & 0x7FFF7FFFu, u[q].z & 0x7FFF7FFFu, u[q].w & 0x7FFF7FFFu};
#pragma unroll
      for (int i = 0; i < 4; ++i) m2 = __hmax2_nan(m2, *reinterpret_cast<const __nv_bfloat162*>(&w[i]));
    }
    const uint32_t m = *reinterpret_cast<const uint32_t*>(&m2);
    return max(m & 0xFFFFu, m >> 16) << 16;
  } else {
    uint32_t m = 0;
#pragma unroll
    for (int j = 0; j < 16; ++j) m = max(m, __float_as_uint(fmt::abs_f32(v[j])));
    return m;
  }
}

// Adds the block's NaN/Inf count to the device counter (every thread of the CTA must call it).
// NOTE: only a block whose |x| max is non-finite is counted element by element, so the common
// case costs one compare per 16 elements instead of a test per element.
__device__ __forceinline__ void count_block_nonfinite(uint32_t* counter, uint32_t block_amax, const float (&v)[16]) {
  uint32_t bad = 0;
  if (block_amax >= 0x7F800000u) {
#pragma unroll
    for (int j = 0; j < 16; ++j) bad += fmt::is_finite(v[j]) ? 0u : 1u;
  }
  count_nonfinite(counter, bad);
}

// ---- amax pass ----------------------------------------------------------------------------
//
// With RHT (the column copy's amax is post-RHT). Thread = 16 rows x one 32-bit word of columns
// (2 BF16 or 1 FP32): a warp reads 128 contiguous bytes of each row. It takes |x| for the row
// amax and transforms each of its columns' 16-row chunk exactly as the quantize kernel will.
template <typename T>
__global__ void __launch_bounds__(256) rht_amax_kernel(const T* __restrict__ x, int64_t M, int64_t K, uint16_t sign_mask,
                                                   float* row_amax, float* col_amax, uint32_t* nonfinite) {
  constexpr int W = 4 / sizeof(T);  // columns per 32-bit word
  const int64_t words_per_row = K / W;
  const int64_t chunks = (M / 16) * words_per_row;
  const uint32_t* xw = reinterpret_cast<const uint32_t*>(x);
  float rmax = 0.0f, cmax = 0.0f;
  uint32_t bad = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < chunks; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t m0 = (i / words_per_row) * 16, w = i % words_per_row;
    uint32_t raw[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) raw[j] = __ldcs(xw + (m0 + j) * words_per_row + w);
#pragma unroll
    for (int c = 0; c < W; ++c) {
      float col[16];
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        union {
          uint32_t u;
          T e[W];
        } v{raw[j]};
        col[j] = Elem<T>::to_f32(v.e[c]);
        bad += fmt::is_finite(col[j]) ? 0u : 1u;
        rmax = fmaxf(rmax, fmt::abs_f32(col[j]));
      }
      fmt::rht16(col, sign_mask);
#pragma unroll
      for (int j = 0; j < 16; ++j) cmax = fmaxf(cmax, fmt::abs_f32(Elem<T>::round(col[j])));
    }
  }
  count_nonfinite(nonfinite, bad);
  rmax = warp_max(rmax);
  cmax = warp_max(cmax);
  if ((threadIdx.x & 31) == 0) {
    if (row_amax) atomic_max_nonneg(row_amax, rmax);
    if (col_amax) atomic_max_nonneg(col_amax, cmax);
  }
}

// Without RHT both copies' amax is max |x|: one flat pass of 16-byte loads (x is 16-byte
// aligned and M K is a multiple of 16), the block's maximum folded with one atomic. (The
// chunked kernel above, which served this case too, read it at 1.76 TB/s on an H100.)
//
// Block b of nb reads 16-byte vectors b*256 + t, + nb*256, ... of x (n values); returns this
// thread's max |x| (NaN ignored) and adds its non-finite count to bad.
template <typename T>
__device__ __forceinline__ float strided_max_abs(const T* __restrict__ x, int64_t n, int64_t b, int64_t nb,
                                                 uint32_t& bad) {
  constexpr int V = Elem<T>::kPerVec;
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  const int64_t nv = n / V;
  float m = 0.0f;
  for (int64_t i = b * 256 + threadIdx.x; i < nv; i += nb * 256) {
    union {
      uint4 u;
      T e[V];
    } v{__ldcs(xv + i)};
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float f = Elem<T>::to_f32(v.e[e]);
      bad += fmt::is_finite(f) ? 0u : 1u;
      m = fmaxf(m, fmt::abs_f32(f));
    }
  }
  return m;
}

// The block's maximum of m (every thread of the 256 calls), folded into a and b (either null).
__device__ __forceinline__ void fold_block_max(float m, float* a, float* b) {
  __shared__ float warp_m[8];
  m = warp_max(m);
  if ((threadIdx.x & 31) == 0) warp_m[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < 8; ++w) m = fmaxf(m, warp_m[w]);
    if (a) atomic_max_nonneg(a, m);
    if (b) atomic_max_nonneg(b, m);
  }
}

template <typename T>
__global__ void __launch_bounds__(256) flat_amax_kernel(const T* __restrict__ x, int64_t n, float* row_amax,
                                                        float* col_amax, uint32_t* nonfinite) {
  uint32_t bad = 0;
  const float m = strided_max_abs(x, n, blockIdx.x, gridDim.x, bad);
  count_nonfinite(nonfinite, bad);
  fold_block_max(m, row_amax, col_amax);
}

// multi_amax: task i owns blocks [first[i], first[i + 1]).
constexpr int kAmaxTasks = 48;  // per launch (the argument block stays under 2 KB)
struct MultiAmaxArgs {
  const void* x[kAmaxTasks];
  int64_t n[kAmaxTasks];
  float* amax[kAmaxTasks];
  int first[kAmaxTasks + 1];
  int count;
};

template <typename T>
__global__ void __launch_bounds__(256) multi_amax_kernel(const MultiAmaxArgs a) {
  int t = 0;
  while (t + 1 < a.count && a.first[t + 1] <= int(blockIdx.x)) ++t;  // uniform
  uint32_t bad = 0;
  const float m = strided_max_abs(static_cast<const T*>(a.x[t]), a.n[t], blockIdx.x - a.first[t],
                                  a.first[t + 1] - a.first[t], bad);
  fold_block_max(m, a.amax[t], nullptr);
}

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

// Encodes 16 values with the block's encode factor; returns the 8 packed bytes.
template <bool kSr>
__device__ __forceinline__ uint2 encode16(const float (&v)[16], float encode_factor, const fmt::Philox4x32& bits) {
  uint32_t w[2] = {0, 0};
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    uint32_t q;
    if constexpr (kSr) q = fmt::nvfp4_encode_sr(v[j], encode_factor, fmt::sr_byte(bits, j));
    else q = fmt::nvfp4_encode_rne(v[j], encode_factor);
    w[j / 8] |= q << (4 * (j % 8));
  }
  return make_uint2(w[0], w[1]);
}

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

// ---- shared by the FP8 and MXFP4 kernels --------------------------------------------------

// Thread (i4, j4) of a 64x64 tile loads x[m0 + i4][k0 + 16 j4 ..] as FP32 (zeros outside the
// matrix) and, with kCount, counts non-finite values. (The NVFP4 kernel spells this out
// itself; see the NOTE there on what a helper did to its registers.)
// Where thread t of a CTA sits in its 64x64 tile: (i4, j4) = (t / 4, t % 4); the tile's origin
// (m0, k0) and its valid extent (rows, cols) at the matrix edges.
struct TileThread {
  int t, i4, j4;
  int64_t m0, k0;
  int rows, cols;
  __device__ bool row_block_valid() const { return i4 < rows && 16 * j4 < cols; }  // x[i4][16 j4 ..]
  __device__ bool col_block_valid() const { return i4 < cols && 16 * j4 < rows; }  // x[16 j4 ..][i4]
};

// Tile (ty, tx) of the grid: by default the CTA's (blockIdx.y, blockIdx.x).
__device__ __forceinline__ TileThread tile_thread(int64_t M, int64_t K, int64_t ty = -1, int64_t tx = -1) {
  TileThread p;
  p.t = threadIdx.x;
  p.i4 = p.t / 4;
  p.j4 = p.t % 4;
  p.m0 = (ty < 0 ? int64_t(blockIdx.y) : ty) * kTile;
  p.k0 = (tx < 0 ? int64_t(blockIdx.x) : tx) * kTile;
  p.rows = static_cast<int>(M - p.m0 < kTile ? M - p.m0 : kTile);
  p.cols = static_cast<int>(K - p.k0 < kTile ? K - p.k0 : kTile);
  return p;
}

// Returns the block's max |x| bits (block_amax_bits).
template <typename T, bool kCount>
__device__ __forceinline__ uint32_t load_block16(const T* __restrict__ x, int64_t K, int64_t m0, int64_t k0, int i4,
                                                 int j4, bool mine, uint32_t* nonfinite, float (&v)[16]) {
  constexpr int V = Elem<T>::kPerVec;
  constexpr int kVecs = 16 / V;
  union {
    uint4 u[kVecs];
    T e[16];
  } in;
#pragma unroll
  for (int q = 0; q < kVecs; ++q) {
    in.u[q] = mine ? *reinterpret_cast<const uint4*>(x + (m0 + i4) * K + k0 + 16 * j4 + q * V) : make_uint4(0, 0, 0, 0);
  }
#pragma unroll
  for (int j = 0; j < 16; ++j) v[j] = Elem<T>::to_f32(in.e[j]);
  const uint32_t m = block_amax_bits<T>(in.u, v);
  if constexpr (kCount) count_block_nonfinite(nonfinite, m, v);
  return m;
}

// ---- FP8 cast + transpose (per-tensor scale) -------------------------------------------------
//
// Same tiling as the NVFP4 kernel: thread (i4, j4) loads x[m0 + i4][k0 + 16 j4 ..] and writes
// those 16 codes as one 16-byte store; the column phase reads 16 values of a column from the
// shared tile and writes them as one 16-byte store of the transposed copy.
struct Fp8Args {
  int64_t M, K;
  uint8_t* row_codes;  // nullptr: not requested
  uint8_t* col_codes;
  float* row_scale_inv;
  float* col_scale_inv;
  const float* amax;
  fmt::Fp8Kind kind;
  uint32_t* nonfinite;
};

// fmt::fp8_encode_scaled of 16 values, two per conversion instruction (cvt.rn.satfinite.
// {e4m3,e5m2}x2.f32: the same products, the same saturating RNE as the format core's
// per-value device path; the element in .x lands in the low byte).
__device__ __forceinline__ uint4 fp8_encode16(const float (&v)[16], float scale, fmt::Fp8Kind kind) {
  uint32_t w[4] = {0, 0, 0, 0};
  const __nv_fp8_interpretation_t f = kind == fmt::Fp8Kind::e4m3 ? __NV_E4M3 : __NV_E5M2;
#pragma unroll
  for (int j = 0; j < 16; j += 2) {
    const uint32_t two = __nv_cvt_float2_to_fp8x2(make_float2(v[j] * scale, v[j + 1] * scale), __NV_SATFINITE, f);
    w[j / 4] |= two << (8 * (j % 4));
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// One 64x64 tile p of x; the tile at the origin also writes the scale_inv.
template <typename T, bool kRow, bool kCol, bool kCount>
__device__ __forceinline__ void fp8_tile(const T* __restrict__ x, const Fp8Args& a, const TileThread& p) {
  __shared__ float tile[kCol ? kTile : 1][kPad];
  const int t = p.t, i4 = p.i4, j4 = p.j4;
  const int64_t m0 = p.m0, k0 = p.k0;
  const bool mine = p.row_block_valid();
  float v[16];
  load_block16<T, kCount>(x, a.K, m0, k0, i4, j4, mine, a.nonfinite, v);
  const float scale = fmt::fp8_scale_from_amax(*a.amax, a.kind);
  if (m0 == 0 && k0 == 0 && t == 0) {
    if (kRow) *a.row_scale_inv = 1.0f / scale;
    if (kCol) *a.col_scale_inv = 1.0f / scale;
  }
  if constexpr (kCol) {
#pragma unroll
    for (int j = 0; j < 16; ++j) tile[i4][16 * j4 + j] = v[j];
    __syncthreads();
  }
  if (kRow && mine) {
    *reinterpret_cast<uint4*>(a.row_codes + (m0 + i4) * a.K + k0 + 16 * j4) = fp8_encode16(v, scale, a.kind);
  }
  if (kCol && p.col_block_valid()) {
    float c[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) c[j] = tile[16 * j4 + j][i4];
    *reinterpret_cast<uint4*>(a.col_codes + (k0 + i4) * a.M + m0 + 16 * j4) = fp8_encode16(c, scale, a.kind);
  }
}

template <typename T, bool kRow, bool kCol, bool kCount>
__global__ void __launch_bounds__(kThreads) fp8_kernel(const T* __restrict__ x, Fp8Args a) {
  fp8_tile<T, kRow, kCol, kCount>(x, a, tile_thread(a.M, a.K));
}

// quantize_fp8_multi: tensor i owns the CTAs [first[i], first[i + 1]), its tiles row by row.
constexpr int kFp8Tasks = 24;  // per launch (the argument block stays near 2 KB)
struct MultiFp8Args {
  const void* x[kFp8Tasks];
  Fp8Args a[kFp8Tasks];
  int first[kFp8Tasks + 1];
  int count;
};

template <typename T, bool kRow, bool kCol>
__global__ void __launch_bounds__(kThreads) multi_fp8_kernel(const MultiFp8Args m) {
  int i = 0;
  while (i + 1 < m.count && m.first[i + 1] <= int(blockIdx.x)) ++i;  // uniform
  const Fp8Args& a = m.a[i];
  const int64_t tiles_x = (a.K + kTile - 1) / kTile, local = int(blockIdx.x) - m.first[i];
  fp8_tile<T, kRow, kCol, true>(static_cast<const T*>(m.x[i]), a, tile_thread(a.M, a.K, local / tiles_x, local % tiles_x));
}

// ---- FP8 with 1x128 / 128x128 block scales (+ optional transposed copy) ---------------------
//
// One CTA = one 128x128 tile, 256 threads; the tile is staged in shared memory as FP32.
//   load    coalesced 16-byte loads of whole rows, all issued before any is used; the lanes
//           that share a row reduce its |x| max with shuffles (the 1x128 row amax), and the
//           row maxima give the tile amax
//   lines   a "line" is a row of the tile (row-wise copy) or a column (column-wise copy, which is
//           a row of x^T). Thread (line, half) = (t % 128, t / 128) owns line elements
//           [64 half, 64 half + 64). A 1x128 block is one line: a row's amax comes from the load,
//           a column's is the max of two half-line maxima exchanged through shared memory.
//           A 128x128 block is the whole tile; it transposes onto itself, so both copies share
//           its amax and scale.
// Pitch 132 floats keeps rows 16-byte aligned: the load's float4 stores and the row lines'
// float4 reads take the minimum number of wavefronts, and the column lines read one float per
// lane from 32 consecutive columns (32 different banks).
// NOTE: staging the tile as BF16 (34 KiB, six CTAs per SM instead of three) measured slower on
// the H100 (33.7% vs 38.0% of copy for 1x128 row + col); see docs/perf.md.
constexpr int kBTile = 128;
constexpr int kBPitch = kBTile + 4;
constexpr size_t kBSmemBytes = sizeof(float) * kBTile * kBPitch;
static_assert(kBTile * 2 == kThreads, "two threads per 128-element line");
static_assert(kBPitch % 4 == 0, "float4 access to tile rows");

struct Fp8BlockArgs {
  int64_t M, K;
  uint8_t *row_codes, *col_codes;  // nullptr: copy not requested
  float *row_scale_inv, *col_scale_inv;
  float *row_amax, *col_amax;  // optional: max |x| over the tensor
  bool tile_scaled;            // 128x128 blocks (weights) instead of 1x128
  fmt::Fp8Kind kind;
  uint32_t* nonfinite;
};

// Element i of line `line`: tile[line][i] (row-wise) or tile[i][line] (column-wise).
template <bool kColumn>
__device__ __forceinline__ void read16(const float* tile, int line, int i0, float (&v)[16]) {
  if constexpr (kColumn) {
#pragma unroll
    for (int j = 0; j < 16; ++j) v[j] = tile[(i0 + j) * kBPitch + line];
  } else {
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const float4 f = *reinterpret_cast<const float4*>(tile + line * kBPitch + i0 + 4 * q);
      v[4 * q] = f.x;
      v[4 * q + 1] = f.y;
      v[4 * q + 2] = f.z;
      v[4 * q + 3] = f.w;
    }
  }
}

// Encodes this thread's half line of one copy with the block amax m (|x| bits). lines: valid
// lines; line_len: valid elements per line (the tile's extent across). Codes go to codes +
// line * ld + element; the scale to scale_inv[scale_index] (once per block).
template <bool kColumn>
__device__ __forceinline__ void fp8_block_encode(const float* tile, uint32_t m, const Fp8BlockArgs& a, int line, int half,
                                                 int lines, int line_len, uint8_t* codes, int64_t ld, float* scale_inv,
                                                 int64_t scale_index) {
  if (line >= lines) return;
  const float scale = fmt::fp8_scale_from_amax(__uint_as_float(m), a.kind);
  if (half == 0 && (!a.tile_scaled || line == 0)) scale_inv[scale_index] = 1.0f / scale;
#pragma unroll
  for (int i0 = 64 * half; i0 < 64 * half + 64; i0 += 16) {
    if (i0 >= line_len) break;
    float v[16];
    read16<kColumn>(tile, line, i0, v);
    *reinterpret_cast<uint4*>(codes + line * ld + i0) = fp8_encode16(v, scale, a.kind);
  }
}

template <typename T, bool kRow, bool kCol, bool kCount>
__global__ void __launch_bounds__(kThreads) fp8_block_kernel(const T* __restrict__ x, Fp8BlockArgs a) {
  extern __shared__ float4 smem[];  // float4: 16-byte alignment of the tile
  float* tile = reinterpret_cast<float*>(smem);
  __shared__ uint32_t row_amax[kBTile];      // |x| bits of each tile row (its 1x128 block)
  __shared__ uint32_t half_amax[2][kBTile];  // column lines: [half][column]
  constexpr int V = Elem<T>::kPerVec, kVecsPerRow = kBTile / V, kIters = kBTile * kVecsPerRow / kThreads;
  static_assert(kVecsPerRow <= 32 && 32 % kVecsPerRow == 0, "the lanes of one row sit in one warp");
  const int t = threadIdx.x;
  const int64_t m0 = int64_t(blockIdx.y) * kBTile, k0 = int64_t(blockIdx.x) * kBTile;
  const int rows = static_cast<int>(a.M - m0 < kBTile ? a.M - m0 : kBTile);
  const int cols = static_cast<int>(a.K - k0 < kBTile ? a.K - k0 : kBTile);

  // ---- load (zeros outside the matrix; they cannot raise an amax) ----
  union Vec {
    uint4 u;
    T e[V];
  };
  Vec in[kIters];
#pragma unroll
  for (int it = 0; it < kIters; ++it) {  // every load in flight before the first use
    const int i = t + it * kThreads, r = i / kVecsPerRow, c = (i % kVecsPerRow) * V;
    // cols is a multiple of 16 (K % 16 == 0), so a vector is wholly inside or outside.
    in[it].u = r < rows && c < cols ? *reinterpret_cast<const uint4*>(x + (m0 + r) * a.K + k0 + c) : make_uint4(0, 0, 0, 0);
  }
  uint32_t bad = 0;
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int i = t + it * kThreads, r = i / kVecsPerRow, c = (i % kVecsPerRow) * V;
    float f[V];
    uint32_t m = 0;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      f[j] = Elem<T>::to_f32(in[it].e[j]);
      if constexpr (kCount) bad += fmt::is_finite(f[j]) ? 0u : 1u;
      m = max(m, __float_as_uint(fmt::abs_f32(f[j])));
    }
#pragma unroll
    for (int j = 0; j < V; j += 4) {
      *reinterpret_cast<float4*>(tile + r * kBPitch + c + j) = make_float4(f[j], f[j + 1], f[j + 2], f[j + 3]);
    }
#pragma unroll
    for (int lanes = kVecsPerRow / 2; lanes > 0; lanes /= 2) m = max(m, __shfl_xor_sync(0xFFFFFFFFu, m, lanes));
    if (i % kVecsPerRow == 0) row_amax[r] = m;
  }
  if constexpr (kCount) count_nonfinite(a.nonfinite, bad);
  __syncthreads();
  uint32_t tile_amax = 0;
  if (a.tile_scaled || a.row_amax || a.col_amax) {  // uniform
#pragma unroll 8
    for (int r = 0; r < kBTile; ++r) tile_amax = max(tile_amax, row_amax[r]);  // broadcast reads
  }
  if (t == 0) {
    if (a.row_amax) atomic_max_nonneg(a.row_amax, __uint_as_float(tile_amax));
    if (a.col_amax) atomic_max_nonneg(a.col_amax, __uint_as_float(tile_amax));
  }

  const int line = t % kBTile, half = t / kBTile;
  if constexpr (kRow) {
    const int64_t scale_cols = (a.K + kBTile - 1) / kBTile;
    const int64_t si = a.tile_scaled ? blockIdx.y * scale_cols + blockIdx.x : (m0 + line) * scale_cols + blockIdx.x;
    fp8_block_encode<false>(tile, a.tile_scaled ? tile_amax : row_amax[line], a, line, half, rows, cols,
                               a.row_codes + m0 * a.K + k0, a.K, a.row_scale_inv, si);
  }
  if constexpr (kCol) {
    uint32_t m = tile_amax;
    if (!a.tile_scaled) {  // uniform: this column's 1x128 block amax from its two halves
      m = 0;
#pragma unroll
      for (int i0 = 64 * half; i0 < 64 * half + 64; i0 += 16) {
        float v[16];
        read16<true>(tile, line, i0, v);
#pragma unroll
        for (int j = 0; j < 16; ++j) m = max(m, __float_as_uint(fmt::abs_f32(v[j])));
      }
      half_amax[half][line] = m;
      __syncthreads();
      m = max(half_amax[0][line], half_amax[1][line]);
    }
    const int64_t scale_cols = (a.M + kBTile - 1) / kBTile;
    const int64_t si = a.tile_scaled ? blockIdx.x * scale_cols + blockIdx.y : (k0 + line) * scale_cols + blockIdx.y;
    fp8_block_encode<true>(tile, m, a, line, half, cols, rows, a.col_codes + k0 * a.M + m0, a.M, a.col_scale_inv, si);
  }
}

// ---- MXFP4 (1x32 blocks, E8M0 scales, no tensor scale): one pass --------------------------
//
// Same tiling again; a 32-element block is two neighbouring threads (lanes t and t ^ 1), which
// swap their 16-element amaxes with one shuffle. The even thread writes the E8M0 scale.
struct MxArgs {
  int64_t M, K;
  uint8_t *row_codes, *row_scales, *col_codes, *col_scales;  // codes nullptr: copy not requested
  fmt::MxScaleRule rule;
  fmt::SrKey row_key, col_key;
  uint32_t* nonfinite;
};

template <typename T, bool kRow, bool kCol, bool kSr, bool kCount>
__global__ void __launch_bounds__(kThreads) mxfp4_kernel(const T* __restrict__ x, MxArgs a) {
  __shared__ float tile[kCol ? kTile : 1][kPad];
  const TileThread p = tile_thread(a.M, a.K);
  const int i4 = p.i4, j4 = p.j4;
  const int64_t m0 = p.m0, k0 = p.k0;
  const bool mine = p.row_block_valid();
  float v[16];
  const uint32_t bamax = load_block16<T, kCount>(x, a.K, m0, k0, i4, j4, mine, a.nonfinite, v);
  if constexpr (kCol) {
#pragma unroll
    for (int j = 0; j < 16; ++j) tile[i4][16 * j4 + j] = v[j];
    __syncthreads();
  }
  if constexpr (kRow) {
    const uint32_t m = max(bamax, __shfl_xor_sync(0xFFFFFFFFu, bamax, 1));  // the other half of the 32-block
    if (mine) {
      const int e = fmt::mxfp4_block_exponent(__uint_as_float(m), a.rule);
      const int64_t r = m0 + i4, c16 = (k0 + 16 * j4) / 16;
      fmt::Philox4x32 bits{};
      if constexpr (kSr) bits = fmt::sr_block_bits(a.row_key, static_cast<uint64_t>(r * (a.K / 16) + c16));
      *reinterpret_cast<uint2*>(a.row_codes + r * (a.K / 2) + 8 * c16) = encode16<kSr>(v, fmt::mxfp4_encode_factor(e), bits);
      if ((j4 & 1) == 0) a.row_scales[r * (a.K / 32) + c16 / 2] = fmt::mxfp4_e8m0_code(e);
    }
  }
  if constexpr (kCol) {
    const bool col_mine = p.col_block_valid();
    float c[16];
    uint32_t m = 0;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      c[j] = tile[16 * j4 + j][i4];
      m = max(m, __float_as_uint(fmt::abs_f32(c[j])));
    }
    m = max(m, __shfl_xor_sync(0xFFFFFFFFu, m, 1));
    if (col_mine) {
      const int e = fmt::mxfp4_block_exponent(__uint_as_float(m), a.rule);
      const int64_t r = k0 + i4, c16 = (m0 + 16 * j4) / 16;
      fmt::Philox4x32 bits{};
      if constexpr (kSr) bits = fmt::sr_block_bits(a.col_key, static_cast<uint64_t>(r * (a.M / 16) + c16));
      *reinterpret_cast<uint2*>(a.col_codes + r * (a.M / 2) + 8 * c16) = encode16<kSr>(c, fmt::mxfp4_encode_factor(e), bits);
      if ((j4 & 1) == 0) a.col_scales[r * (a.M / 32) + c16 / 2] = fmt::mxfp4_e8m0_code(e);
    }
  }
}

// ---- the 32-point RHT of MXFP4's column-wise copies ---------------------------------------
//
// One thread per (32-row segment, column): adjacent threads read adjacent columns, so each of
// the 32 loads is coalesced across the warp. fmt::rht32 in registers, then the result rounded
// to the storage type (BF16: RNE), as the CPU quantizer rounds its transformed copy.
template <typename T>
__global__ void rht32_columns_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t M, int64_t K) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= (M / 32) * K) return;
  const int64_t seg = idx / K, col = idx % K;
  const T* src = x + seg * 32 * K + col;
  T* dst = out + seg * 32 * K + col;
  float v[32];
#pragma unroll
  for (int i = 0; i < 32; ++i) {
    if constexpr (sizeof(T) == 2) v[i] = fmt::bf16_decode(src[i * K]);
    else v[i] = src[i * K];
  }
  fmt::rht32(v, fmt::kRht32SignMask);
#pragma unroll
  for (int i = 0; i < 32; ++i) {
    if constexpr (sizeof(T) == 2) dst[i * K] = fmt::bf16_encode(v[i]);
    else dst[i * K] = v[i];
  }
}

// ---- host side ------------------------------------------------------------------------------

// The kernels read BF16 or FP32 inputs.
void require_bf16_or_f32(const char* op, DType dtype) {
  if (dtype != DType::BF16 && dtype != DType::F32) {
    throw Error(std::string(op) + ": input dtype " + std::string(dtype_name(dtype)) +
                " is not supported; use BF16 or F32");
  }
}

void validate_input(const void* x, DType dtype, int64_t M, int64_t K, const Nvfp4KernelConfig& c) {
  require_bf16_or_f32("quantize_nvfp4", dtype);
  if (M < 0 || K < 0) throw Error("quantize_nvfp4: negative shape");
  if (M * K > 0 && x == nullptr) throw Error("quantize_nvfp4: input pointer is null");
  if (reinterpret_cast<uintptr_t>(x) % 16 != 0) throw Error("quantize_nvfp4: the input must be 16-byte aligned");
  if (K % 16 != 0) throw Error("quantize_nvfp4: K = " + std::to_string(K) + " is not a multiple of 16 (NVFP4 blocks)");
  if (M % 16 != 0) {
    throw Error("quantize_nvfp4: M = " + std::to_string(M) +
                " is not a multiple of 16 (the kernels read 16-row chunks; pad the tensor)");
  }
  if (c.tile_rows != 1 && c.tile_rows != 16) throw Error("quantize_nvfp4: tile_rows must be 1 or 16");
  if (c.rht && c.tile_rows != 1) throw Error("quantize_nvfp4: RHT applies to 1x16 operands only");
  if (c.sr_key.role >= 128 || c.sr_key.layer >= (1u << 24)) throw Error("quantize_nvfp4: SR key role < 128, layer < 2^24");
}

void validate(const void* x, DType dtype, int64_t M, int64_t K, const Nvfp4KernelConfig& c, const DeviceNvfp4Copy* row,
              const DeviceNvfp4Copy* col) {
  validate_input(x, dtype, M, K, c);
  if (!row && !col) throw Error("quantize_nvfp4: neither the row-wise nor the column-wise copy was requested");
  if (c.rht && !col) throw Error("quantize_nvfp4: RHT transforms the column-wise copy: pass a column-wise output");
  for (const DeviceNvfp4Copy* p : {row, col}) {
    if (p && (!p->codes || !p->scales || !p->amax)) throw Error("quantize_nvfp4: an output copy has a null pointer");
    if (p && reinterpret_cast<uintptr_t>(p->codes) % 8 != 0) {
      throw Error("quantize_nvfp4: output codes must be 8-byte aligned (each block's 16 codes are one 8-byte store)");
    }
  }
}

template <typename T>
void launch_amax(const T* x, int64_t M, int64_t K, const Nvfp4KernelConfig& c, float* row_amax, float* col_amax,
                 uint32_t* nonfinite, cudaStream_t s) {
  const int64_t chunks = (M / 16) * (K * static_cast<int64_t>(sizeof(T)) / 4);
  if (chunks == 0) return;
  int sms = 0, dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  const int64_t blocks = std::min<int64_t>((chunks + 255) / 256, int64_t(sms) * 8);
  if (!c.rht) {
    const int64_t vecs = M * K / Elem<T>::kPerVec;
    const int64_t flat_blocks = std::min<int64_t>((vecs + 255) / 256, int64_t(sms) * 8);
    flat_amax_kernel<T><<<static_cast<unsigned>(flat_blocks), 256, 0, s>>>(x, M * K, row_amax, col_amax, nonfinite);
  } else {
    rht_amax_kernel<T><<<static_cast<unsigned>(blocks), 256, 0, s>>>(x, M, K, c.rht_sign_mask, row_amax, col_amax, nonfinite);
  }
  check(cudaGetLastError(), "amax_kernel launch");
}

template <typename T>
void launch_quantize(const T* x, int64_t M, int64_t K, const Nvfp4KernelConfig& c, const DeviceNvfp4Copy* row,
                     const DeviceNvfp4Copy* col, uint32_t* nonfinite, bool count_here, cudaStream_t s) {
  if (M == 0 || K == 0) return;
  QuantizeArgs a{};
  a.M = M;
  a.K = K;
  a.row = row ? CopyArgs{row->codes, row->scales, row->amax} : CopyArgs{nullptr, nullptr, nullptr};
  a.col = col ? CopyArgs{col->codes, col->scales, col->amax} : CopyArgs{nullptr, nullptr, nullptr};
  a.tile_rows = c.tile_rows;
  a.sign_mask = c.rht_sign_mask;
  a.rht = c.rht;
  a.sr = c.stochastic;
  a.swizzled = c.swizzled_scales;
  a.row_key = fmt::SrKey{c.sr_key.seed, c.sr_key.step, c.sr_key.layer, c.sr_key.role & 0x7Fu};
  a.col_key = fmt::SrKey{c.sr_key.seed, c.sr_key.step, c.sr_key.layer, (c.sr_key.role & 0x7Fu) | 0x80u};
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

void run(const void* x, DType dtype, int64_t M, int64_t K, const Nvfp4KernelConfig& c, const DeviceNvfp4Copy* row,
         const DeviceNvfp4Copy* col, DeviceStatus status, Stream stream, bool with_amax) {
  validate(x, dtype, M, K, c, row, col);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  if (with_amax) {
    float* ra = row ? row->amax : nullptr;
    float* ca = col ? col->amax : nullptr;
    if (ra) check(cudaMemsetAsync(ra, 0, sizeof(float), s), "cudaMemsetAsync");
    if (ca) check(cudaMemsetAsync(ca, 0, sizeof(float), s), "cudaMemsetAsync");
    if (dtype == DType::BF16) launch_amax(static_cast<const uint16_t*>(x), M, K, c, ra, ca, status.nonfinite_count, s);
    else launch_amax(static_cast<const float*>(x), M, K, c, ra, ca, status.nonfinite_count, s);
  }
  // Non-finite input is counted by whichever pass reads every element first.
  const bool count_here = !with_amax;
  if (dtype == DType::BF16) launch_quantize(static_cast<const uint16_t*>(x), M, K, c, row, col, status.nonfinite_count, count_here, s);
  else launch_quantize(static_cast<const float*>(x), M, K, c, row, col, status.nonfinite_count, count_here, s);
}

template <typename T>
void launch_fp8(const T* x, int64_t M, int64_t K, const Fp8Args& a, bool count_here, cudaStream_t s) {
  if (M == 0 || K == 0) return;
  const dim3 grid(static_cast<unsigned>((K + kTile - 1) / kTile), static_cast<unsigned>((M + kTile - 1) / kTile));
  if (grid.y > 65535) throw Error("quantize_fp8: M = " + std::to_string(M) + " is too large for one launch");
  with_bools(
      [&](auto row_c, auto col_c, auto count_c) {
        if constexpr (decltype(row_c)::value || decltype(col_c)::value) {
          fp8_kernel<T, decltype(row_c)::value, decltype(col_c)::value, decltype(count_c)::value>
              <<<grid, kThreads, 0, s>>>(x, a);
        }
      },
      a.row_codes != nullptr, a.col_codes != nullptr, count_here && a.nonfinite != nullptr);
  check(cudaGetLastError(), "fp8_kernel launch");
}

void run_fp8(const void* x, DType dtype, int64_t M, int64_t K, Format format, const DeviceFp8Copy* row,
             const DeviceFp8Copy* col, DeviceStatus status, Stream stream, bool with_amax) {
  if (format != Format::fp8_e4m3 && format != Format::fp8_e5m2) {
    throw Error("quantize_fp8: format " + std::string(format_traits(format).name) + " is not an FP8 format");
  }
  validate_input(x, dtype, M, K, Nvfp4KernelConfig{});
  if (!row && !col) throw Error("quantize_fp8: neither the row-wise nor the column-wise copy was requested");
  for (const DeviceFp8Copy* p : {row, col}) {
    if (p && (!p->codes || !p->scale_inv || !p->amax)) throw Error("quantize_fp8: an output copy has a null pointer");
    if (p && reinterpret_cast<uintptr_t>(p->codes) % 16 != 0) {
      throw Error("quantize_fp8: output codes must be 16-byte aligned (16 codes are one store)");
    }
  }
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  float* ra = row ? row->amax : nullptr;
  float* ca = col ? col->amax : nullptr;
  if (with_amax) {
    if (ra) check(cudaMemsetAsync(ra, 0, sizeof(float), s), "cudaMemsetAsync");
    if (ca) check(cudaMemsetAsync(ca, 0, sizeof(float), s), "cudaMemsetAsync");
    if (dtype == DType::BF16) launch_amax(static_cast<const uint16_t*>(x), M, K, Nvfp4KernelConfig{}, ra, ca, status.nonfinite_count, s);
    else launch_amax(static_cast<const float*>(x), M, K, Nvfp4KernelConfig{}, ra, ca, status.nonfinite_count, s);
  }
  Fp8Args a{};
  a.M = M;
  a.K = K;
  a.row_codes = row ? row->codes : nullptr;
  a.col_codes = col ? col->codes : nullptr;
  a.row_scale_inv = row ? row->scale_inv : nullptr;
  a.col_scale_inv = col ? col->scale_inv : nullptr;
  a.amax = ra ? ra : ca;  // per tensor: both copies share one amax and one scale
  a.kind = format == Format::fp8_e4m3 ? fmt::Fp8Kind::e4m3 : fmt::Fp8Kind::e5m2;
  a.nonfinite = status.nonfinite_count;
  if (dtype == DType::BF16) launch_fp8(static_cast<const uint16_t*>(x), M, K, a, !with_amax, s);
  else launch_fp8(static_cast<const float*>(x), M, K, a, !with_amax, s);
}

void run_fp8_block(const void* x, DType dtype, int64_t M, int64_t K, Format format, BlockShape block,
                   const DeviceFp8Copy* row, const DeviceFp8Copy* col, DeviceStatus status, Stream stream) {
  if (format != Format::fp8_e4m3 && format != Format::fp8_e5m2) {
    throw Error("quantize_fp8_blockwise: format " + std::string(format_traits(format).name) + " is not an FP8 format");
  }
  const bool tile_scaled = block == BlockShape{128, 128};
  if (!tile_scaled && block != BlockShape{1, 128}) {
    throw Error("quantize_fp8_blockwise: block " + block_name(block) +
                " is not supported; use 1x128 (activations, gradients) or 128x128 (weights)");
  }
  validate_input(x, dtype, M, K, Nvfp4KernelConfig{});
  if (!row && !col) throw Error("quantize_fp8_blockwise: neither the row-wise nor the column-wise copy was requested");
  for (const DeviceFp8Copy* p : {row, col}) {
    if (p && (!p->codes || !p->scale_inv)) throw Error("quantize_fp8_blockwise: an output copy has a null pointer");
    if (p && reinterpret_cast<uintptr_t>(p->codes) % 16 != 0) {
      throw Error("quantize_fp8_blockwise: output codes must be 16-byte aligned (16 codes are one store)");
    }
  }
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  Fp8BlockArgs a{};
  a.M = M;
  a.K = K;
  a.row_codes = row ? row->codes : nullptr;
  a.col_codes = col ? col->codes : nullptr;
  a.row_scale_inv = row ? row->scale_inv : nullptr;
  a.col_scale_inv = col ? col->scale_inv : nullptr;
  a.row_amax = row ? row->amax : nullptr;  // optional outputs
  a.col_amax = col ? col->amax : nullptr;
  a.tile_scaled = tile_scaled;
  a.kind = format == Format::fp8_e4m3 ? fmt::Fp8Kind::e4m3 : fmt::Fp8Kind::e5m2;
  a.nonfinite = status.nonfinite_count;
  for (const DeviceFp8Copy* p : {row, col}) {
    if (p && p->amax) check(cudaMemsetAsync(p->amax, 0, sizeof(float), s), "cudaMemsetAsync");
  }
  if (M == 0 || K == 0) return;
  const dim3 grid(static_cast<unsigned>((K + kBTile - 1) / kBTile), static_cast<unsigned>((M + kBTile - 1) / kBTile));
  if (grid.y > 65535) throw Error("quantize_fp8_blockwise: M = " + std::to_string(M) + " is too large for one launch");
  auto launch = [&](auto type_c) {
    using T = typename decltype(type_c)::type;
    with_bools(
        [&](auto row_c, auto col_c, auto count_c) {
          if constexpr (decltype(row_c)::value || decltype(col_c)::value) {
            auto* kernel = fp8_block_kernel<T, decltype(row_c)::value, decltype(col_c)::value, decltype(count_c)::value>;
            check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kBSmemBytes)),
                  "cudaFuncSetAttribute");
            kernel<<<grid, kThreads, kBSmemBytes, s>>>(static_cast<const T*>(x), a);
          }
        },
        row != nullptr, col != nullptr, a.nonfinite != nullptr);
  };
  if (dtype == DType::BF16) launch(std::type_identity<uint16_t>{});
  else launch(std::type_identity<float>{});
  check(cudaGetLastError(), "fp8_block_kernel launch");
}

void run_mxfp4(const void* x, DType dtype, int64_t M, int64_t K, Format format, bool stochastic, SrKey key,
               const DeviceNvfp4Copy* row, const DeviceNvfp4Copy* col, DeviceStatus status, Stream stream) {
  if (format != Format::mxfp4 && format != Format::mxfp4_ocp) {
    throw Error("quantize_mxfp4: format " + std::string(format_traits(format).name) + " is not an MXFP4 format");
  }
  validate_input(x, dtype, M, K, Nvfp4KernelConfig{});
  if (!row && !col) throw Error("quantize_mxfp4: neither the row-wise nor the column-wise copy was requested");
  if (row && K % 32 != 0) throw Error("quantize_mxfp4: K = " + std::to_string(K) + " is not a multiple of 32 (MXFP4 blocks)");
  if (col && M % 32 != 0) {
    throw Error("quantize_mxfp4: M = " + std::to_string(M) + " is not a multiple of 32 (blocks of the column-wise copy)");
  }
  for (const DeviceNvfp4Copy* p : {row, col}) {
    if (p && (!p->codes || !p->scales)) throw Error("quantize_mxfp4: an output copy has a null pointer");
    if (p && reinterpret_cast<uintptr_t>(p->codes) % 8 != 0) throw Error("quantize_mxfp4: output codes must be 8-byte aligned");
  }
  if (key.role >= 128 || key.layer >= (1u << 24)) throw Error("quantize_mxfp4: SR key role < 128, layer < 2^24");
  if (M == 0 || K == 0) return;
  MxArgs a{};
  a.M = M;
  a.K = K;
  a.row_codes = row ? row->codes : nullptr;
  a.row_scales = row ? row->scales : nullptr;
  a.col_codes = col ? col->codes : nullptr;
  a.col_scales = col ? col->scales : nullptr;
  a.rule = format == Format::mxfp4 ? fmt::MxScaleRule::round_up : fmt::MxScaleRule::ocp_floor;
  a.row_key = fmt::SrKey{key.seed, key.step, key.layer, key.role & 0x7Fu};
  a.col_key = fmt::SrKey{key.seed, key.step, key.layer, (key.role & 0x7Fu) | 0x80u};
  a.nonfinite = status.nonfinite_count;
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const dim3 grid(static_cast<unsigned>((K + kTile - 1) / kTile), static_cast<unsigned>((M + kTile - 1) / kTile));
  if (grid.y > 65535) throw Error("quantize_mxfp4: M = " + std::to_string(M) + " is too large for one launch");
  auto launch = [&](auto type_c) {
    using T = typename decltype(type_c)::type;
    const T* xt = static_cast<const T*>(x);
    with_bools(
        [&](auto row_c, auto col_c, auto sr_c, auto count_c) {
          if constexpr (decltype(row_c)::value || decltype(col_c)::value) {
            mxfp4_kernel<T, decltype(row_c)::value, decltype(col_c)::value, decltype(sr_c)::value,
                         decltype(count_c)::value><<<grid, kThreads, 0, s>>>(xt, a);
          }
        },
        row != nullptr, col != nullptr, stochastic, a.nonfinite != nullptr);
  };
  if (dtype == DType::BF16) launch(std::type_identity<uint16_t>{});
  else launch(std::type_identity<float>{});
  check(cudaGetLastError(), "mxfp4_kernel launch");
}

}  // namespace

void quantize_mxfp4(const void* x, DType dtype, int64_t M, int64_t K, Format format, bool stochastic, SrKey sr_key,
                    const DeviceNvfp4Copy* row, const DeviceNvfp4Copy* col, DeviceStatus status, Stream stream) {
  run_mxfp4(x, dtype, M, K, format, stochastic, sr_key, row, col, status, stream);
}

void rht32_columns(const void* x, DType dtype, int64_t M, int64_t K, void* out, Stream stream) {
  require_bf16_or_f32("rht32_columns", dtype);
  if (M < 0 || K < 0) throw Error("rht32_columns: negative shape");
  if (M % 32 != 0) throw Error("rht32_columns: M = " + std::to_string(M) + " is not a multiple of 32 (32-point RHT)");
  if (M * K == 0) return;
  if (!x || !out) throw Error("rht32_columns: a pointer is null");
  if (x == out) throw Error("rht32_columns: out must not alias x");
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const int64_t n = (M / 32) * K;
  const unsigned blocks = static_cast<unsigned>((n + 255) / 256);
  if (dtype == DType::BF16) {
    rht32_columns_kernel<<<blocks, 256, 0, s>>>(static_cast<const uint16_t*>(x), static_cast<uint16_t*>(out), M, K);
  } else {
    rht32_columns_kernel<<<blocks, 256, 0, s>>>(static_cast<const float*>(x), static_cast<float*>(out), M, K);
  }
  check(cudaGetLastError(), "rht32_columns launch");
}

void quantize_fp8(const void* x, DType dtype, int64_t M, int64_t K, Format format, const DeviceFp8Copy* row,
                  const DeviceFp8Copy* col, DeviceStatus status, Stream stream) {
  run_fp8(x, dtype, M, K, format, row, col, status, stream, true);
}

void quantize_fp8_given_amax(const void* x, DType dtype, int64_t M, int64_t K, Format format,
                             const DeviceFp8Copy* row, const DeviceFp8Copy* col, DeviceStatus status,
                             Stream stream) {
  run_fp8(x, dtype, M, K, format, row, col, status, stream, false);
}

void quantize_fp8_blockwise(const void* x, DType dtype, int64_t M, int64_t K, Format format, BlockShape block,
                            const DeviceFp8Copy* row, const DeviceFp8Copy* col, DeviceStatus status, Stream stream) {
  run_fp8_block(x, dtype, M, K, format, block, row, col, status, stream);
}

void quantize_nvfp4(const void* x, DType dtype, int64_t M, int64_t K, const Nvfp4KernelConfig& config,
                    const DeviceNvfp4Copy* row, const DeviceNvfp4Copy* col, DeviceStatus status, Stream stream) {
  run(x, dtype, M, K, config, row, col, status, stream, true);
}

void quantize_nvfp4_given_amax(const void* x, DType dtype, int64_t M, int64_t K, const Nvfp4KernelConfig& config,
                               const DeviceNvfp4Copy* row, const DeviceNvfp4Copy* col, DeviceStatus status,
                               Stream stream) {
  run(x, dtype, M, K, config, row, col, status, stream, false);
}

void quantize_fp8_multi(const Fp8Task* tasks, int count, DType dtype, Stream stream) {
  require_bf16_or_f32("quantize_fp8_multi", dtype);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  if (count == 0) return;
  const bool row = tasks[0].row.codes != nullptr, col = tasks[0].col.codes != nullptr;
  for (int i0 = 0; i0 < count; i0 += kFp8Tasks) {
    MultiFp8Args m{};
    m.count = std::min(count - i0, kFp8Tasks);
    int blocks = 0;
    for (int j = 0; j < m.count; ++j) {
      const Fp8Task& t = tasks[i0 + j];
      const std::string which = "quantize_fp8_multi: task " + std::to_string(i0 + j);
      validate_input(t.x, dtype, t.M, t.K, Nvfp4KernelConfig{});
      if ((t.row.codes != nullptr) != row || (t.col.codes != nullptr) != col) {
        throw Error(which + " asks for other copies than task 0 (every task: the same row/column copies)");
      }
      if (t.format != Format::fp8_e4m3 && t.format != Format::fp8_e5m2) throw Error(which + ": not an FP8 format");
      for (const DeviceFp8Copy* c : {&t.row, &t.col}) {
        if (c->codes && (!c->scale_inv || !c->amax || reinterpret_cast<uintptr_t>(c->codes) % 16 != 0)) {
          throw Error(which + ": a copy needs 16-byte aligned codes, scale_inv and its (given) amax");
        }
      }
      Fp8Args& a = m.a[j];
      a.M = t.M;
      a.K = t.K;
      a.row_codes = t.row.codes;
      a.col_codes = t.col.codes;
      a.row_scale_inv = t.row.scale_inv;
      a.col_scale_inv = t.col.scale_inv;
      a.amax = row ? t.row.amax : t.col.amax;
      a.kind = t.format == Format::fp8_e4m3 ? fmt::Fp8Kind::e4m3 : fmt::Fp8Kind::e5m2;
      a.nonfinite = t.nonfinite_count;
      m.x[j] = t.x;
      m.first[j] = blocks;
      const int64_t tiles = ((t.M + kTile - 1) / kTile) * ((t.K + kTile - 1) / kTile);
      if (tiles > INT_MAX - blocks) throw Error(which + ": too many tiles for one launch");
      blocks += static_cast<int>(tiles);
    }
    m.first[m.count] = blocks;
    if (blocks == 0) continue;
    with_bools(
        [&](auto row_c, auto col_c) {
          if constexpr (decltype(row_c)::value || decltype(col_c)::value) {
            if (dtype == DType::BF16) {
              multi_fp8_kernel<uint16_t, decltype(row_c)::value, decltype(col_c)::value>
                  <<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(m);
            } else {
              multi_fp8_kernel<float, decltype(row_c)::value, decltype(col_c)::value>
                  <<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(m);
            }
          }
        },
        row, col);
    check(cudaGetLastError(), "multi_fp8_kernel launch");
  }
}

void multi_amax(const AmaxTask* tasks, int count, DType dtype, Stream stream) {
  require_bf16_or_f32("multi_amax", dtype);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const int64_t per_vec = dtype == DType::BF16 ? 8 : 4;
  for (int i0 = 0; i0 < count; i0 += kAmaxTasks) {
    MultiAmaxArgs a{};
    a.count = std::min(count - i0, kAmaxTasks);
    int blocks = 0;
    for (int j = 0; j < a.count; ++j) {
      const AmaxTask& t = tasks[i0 + j];
      if (t.n < 0 || t.n % 8 != 0 || !t.amax || (t.n > 0 && !t.x) || reinterpret_cast<uintptr_t>(t.x) % 16 != 0) {
        throw Error("multi_amax: task " + std::to_string(i0 + j) +
                    " needs a 16-byte aligned input, a size that is a multiple of 8 and an amax pointer");
      }
      a.x[j] = t.x;
      a.n[j] = t.n;
      a.amax[j] = t.amax;
      a.first[j] = blocks;
      // About 32 vectors per thread: enough work per block, enough blocks to fill the GPU.
      blocks += static_cast<int>(std::max<int64_t>(1, (t.n / per_vec + 256 * 32 - 1) / (256 * 32)));
    }
    a.first[a.count] = blocks;
    if (dtype == DType::BF16) multi_amax_kernel<uint16_t><<<static_cast<unsigned>(blocks), 256, 0, s>>>(a);
    else multi_amax_kernel<float><<<static_cast<unsigned>(blocks), 256, 0, s>>>(a);
    check(cudaGetLastError(), "multi_amax_kernel launch");
  }
}

void nvfp4_amax(const void* x, DType dtype, int64_t M, int64_t K, const Nvfp4KernelConfig& config, float* row_amax,
                float* col_amax, DeviceStatus status, Stream stream) {
  validate_input(x, dtype, M, K, config);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  if (row_amax) check(cudaMemsetAsync(row_amax, 0, sizeof(float), s), "cudaMemsetAsync");
  if (col_amax) check(cudaMemsetAsync(col_amax, 0, sizeof(float), s), "cudaMemsetAsync");
  if (dtype == DType::BF16) launch_amax(static_cast<const uint16_t*>(x), M, K, config, row_amax, col_amax, status.nonfinite_count, s);
  else launch_amax(static_cast<const float*>(x), M, K, config, row_amax, col_amax, status.nonfinite_count, s);
}

}  // namespace nvfp4::cuda
