// Shared by the CUDA quantizers' files (one per format: quantize_nvfp4.cu, quantize_fp8.cu,
// quantize_mxfp4.cu, and amax.cu for the amax passes; include/nvfp4/cuda_quantize.hpp is their
// API): the tiling constants, element access, block amax and non-finite counting, the tile
// loads of the FP8 and MXFP4 kernels, argument checks. Private to src/kernels/cuda/.
//
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
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "format/nvfp4.hpp"
#include "kernels/cuda/quantize_formats.hpp"
#include "nvfp4/cuda_check.hpp"
#include "nvfp4/cuda_quantize.hpp"
#include "nvfp4/error.hpp"

// The quantizer files say `using namespace quantize_detail;` at the top of nvfp4::cuda.
namespace nvfp4::cuda::quantize_detail {

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
inline void with_bools(Fn&& fn) {
  fn();
}
template <typename Fn, typename... Rest>
inline void with_bools(Fn&& fn, bool b, Rest... rest) {
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

// ---- shared by the NVFP4 and MXFP4 kernels (E2M1 codes) --------------------------------------

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

// ---- host side ------------------------------------------------------------------------------

// The NVFP4 kernels read QuantizeOptions (the one config type): nvfp4_options() checks what
// only the NVFP4 kernels need and returns the options with the block resolved (1x16 or 16x16).
inline QuantizeOptions nvfp4_options(const QuantizeOptions& o) {
  if (o.format != Format::nvfp4) {
    throw Error("quantize_nvfp4: options.format is " + std::string(format_traits(o.format).name) + ", not nvfp4");
  }
  QuantizeOptions r = o;
  r.block = o.block.value_or(format_traits(Format::nvfp4).default_block);
  if (r.block->cols != 16 || (r.block->rows != 1 && r.block->rows != 16)) {
    throw Error("quantize_nvfp4: block " + block_name(*r.block) + " is not 1x16 or 16x16");
  }
  if (r.rht && r.block->rows != 1) throw Error("quantize_nvfp4: RHT applies to 1x16 operands only");
  if (r.sr_key.role >= 128 || r.sr_key.layer >= (1u << 24)) throw Error("quantize_nvfp4: SR key role < 128, layer < 2^24");
  return r;
}

// The kernels read BF16 or FP32 inputs.
inline void require_bf16_or_f32(const char* op, DType dtype) {
  if (dtype != DType::BF16 && dtype != DType::F32) {
    throw Error(std::string(op) + ": input dtype " + std::string(dtype_name(dtype)) +
                " is not supported; use BF16 or F32");
  }
}

// The input checks every quantizer makes (op: its name in the message).
inline void validate_input(const char* op, const void* x, DType dtype, int64_t M, int64_t K) {
  const std::string o = op;
  require_bf16_or_f32(op, dtype);
  if (M < 0 || K < 0) throw Error(o + ": negative shape");
  if (M * K > 0 && x == nullptr) throw Error(o + ": input pointer is null");
  if (reinterpret_cast<uintptr_t>(x) % 16 != 0) throw Error(o + ": the input must be 16-byte aligned");
  if (K % 16 != 0) throw Error(o + ": K = " + std::to_string(K) + " is not a multiple of 16 (the kernels' blocks)");
  if (M % 16 != 0) {
    throw Error(o + ": M = " + std::to_string(M) +
                " is not a multiple of 16 (the kernels read 16-row chunks; pad the tensor)");
  }
}

// The amax pass (amax.cu), every format's first pass when it finds the amax itself: max |x|
// into row_amax and col_amax (either null; with rht the column copy's is post-RHT, the 16-point
// transform with rht_sign_mask), non-finite inputs counted into `nonfinite`. T: uint16_t (BF16
// bits) or float.
template <typename T>
void launch_amax(const T* x, int64_t M, int64_t K, bool rht, uint16_t rht_sign_mask, float* row_amax, float* col_amax,
                 uint32_t* nonfinite, cudaStream_t s);

}  // namespace nvfp4::cuda::quantize_detail
