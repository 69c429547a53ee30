// FP8 (E4M3, E5M2) quantization on Hopper: per-tensor scaling (cast + transpose, one tensor or many
// per launch) and 1x128 / 128x128 block scaling (include/nvfp4/cuda_quantize.hpp).
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>
#include <type_traits>

#include "format/fp8.hpp"

#include "kernels/cuda/quantize_common.cuh"

namespace nvfp4::cuda {

using namespace quantize_detail;

namespace {

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

// ---- host side ------------------------------------------------------------------------------

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

// What both FP8 paths check and fill: the input, the output copies (codes 16-byte aligned,
// scale_inv, and the amax where `need_amax`), and the arguments' shape, copies, kind and
// non-finite counter (Args: Fp8Args or Fp8BlockArgs).
template <typename Args>
Args fp8_args(const void* x, DType dtype, int64_t M, int64_t K, Format format, const DeviceCopy* row,
              const DeviceCopy* col, DeviceStatus status, bool need_amax) {
  validate_input("quantize_fp8", x, dtype, M, K);
  if (!row && !col) throw Error("quantize_fp8: neither the row-wise nor the column-wise copy was requested");
  for (const DeviceCopy* p : {row, col}) {
    if (p && (!p->codes || !p->scale_inv || (need_amax && !p->amax))) {
      throw Error("quantize_fp8: an output copy has a null pointer");
    }
    if (p && reinterpret_cast<uintptr_t>(p->codes) % 16 != 0) {
      throw Error("quantize_fp8: output codes must be 16-byte aligned (16 codes are one store)");
    }
  }
  Args a{};
  a.M = M;
  a.K = K;
  a.row_codes = row ? row->codes : nullptr;
  a.col_codes = col ? col->codes : nullptr;
  a.row_scale_inv = row ? row->scale_inv : nullptr;
  a.col_scale_inv = col ? col->scale_inv : nullptr;
  a.kind = format == Format::fp8_e4m3 ? fmt::Fp8Kind::e4m3 : fmt::Fp8Kind::e5m2;
  a.nonfinite = status.nonfinite_count;
  return a;
}

void run_fp8(const void* x, DType dtype, int64_t M, int64_t K, Format format, const DeviceCopy* row,
             const DeviceCopy* col, DeviceStatus status, Stream stream, bool with_amax) {
  Fp8Args a = fp8_args<Fp8Args>(x, dtype, M, K, format, row, col, status, true);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  float* ra = row ? row->amax : nullptr;
  float* ca = col ? col->amax : nullptr;
  if (with_amax) {
    if (ra) check(cudaMemsetAsync(ra, 0, sizeof(float), s), "cudaMemsetAsync");
    if (ca) check(cudaMemsetAsync(ca, 0, sizeof(float), s), "cudaMemsetAsync");
    if (dtype == DType::BF16) launch_amax(static_cast<const uint16_t*>(x), M, K, false, 0, ra, ca, status.nonfinite_count, s);
    else launch_amax(static_cast<const float*>(x), M, K, false, 0, ra, ca, status.nonfinite_count, s);
  }
  a.amax = ra ? ra : ca;  // per tensor: both copies share one amax and one scale
  if (dtype == DType::BF16) launch_fp8(static_cast<const uint16_t*>(x), M, K, a, !with_amax, s);
  else launch_fp8(static_cast<const float*>(x), M, K, a, !with_amax, s);
}

void run_fp8_block(const void* x, DType dtype, int64_t M, int64_t K, Format format, BlockShape block,
                   const DeviceCopy* row, const DeviceCopy* col, DeviceStatus status, Stream stream) {
  const bool tile_scaled = block == BlockShape{128, 128};
  if (!tile_scaled && block != BlockShape{1, 128}) {
    throw Error("quantize_fp8: block " + block_name(block) +
                " is not supported; use 1x128 (activations, gradients) or 128x128 (weights)");
  }
  Fp8BlockArgs a = fp8_args<Fp8BlockArgs>(x, dtype, M, K, format, row, col, status, false);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  a.row_amax = row ? row->amax : nullptr;  // optional outputs
  a.col_amax = col ? col->amax : nullptr;
  a.tile_scaled = tile_scaled;
  for (const DeviceCopy* p : {row, col}) {
    if (p && p->amax) check(cudaMemsetAsync(p->amax, 0, sizeof(float), s), "cudaMemsetAsync");
  }
  if (M == 0 || K == 0) return;
  const dim3 grid(static_cast<unsigned>((K + kBTile - 1) / kBTile), static_cast<unsigned>((M + kBTile - 1) / kBTile));
  if (grid.y > 65535) throw Error("quantize_fp8: M = " + std::to_string(M) + " is too large for one launch");
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

}  // namespace

namespace formats {

void quantize_fp8(const void* x, DType dtype, int64_t M, int64_t K, const QuantizeOptions& options,
                  const DeviceCopy* row, const DeviceCopy* col, DeviceStatus status, Stream stream, AmaxInput amax) {
  const Format format = options.format;
  if (format != Format::fp8_e4m3 && format != Format::fp8_e5m2) {
    throw Error("quantize_fp8: format " + std::string(format_traits(format).name) + " is not an FP8 format");
  }
  const BlockShape block = options.block.value_or(format_traits(format).default_block);
  if (block.per_tensor()) {
    run_fp8(x, dtype, M, K, format, row, col, status, stream, amax == AmaxInput::compute);
    return;
  }
  if (amax == AmaxInput::given) {
    throw Error("quantize_fp8: block " + block_name(block) + " scales come from each block's own amax; a given "
                "per-tensor amax applies to per-tensor scaling only");
  }
  run_fp8_block(x, dtype, M, K, format, block, row, col, status, stream);
}

}  // namespace formats

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
      validate_input("quantize_fp8_multi", t.x, dtype, t.M, t.K);
      if ((t.row.codes != nullptr) != row || (t.col.codes != nullptr) != col) {
        throw Error(which + " asks for other copies than task 0 (every task: the same row/column copies)");
      }
      if (t.format != Format::fp8_e4m3 && t.format != Format::fp8_e5m2) throw Error(which + ": not an FP8 format");
      for (const DeviceCopy* c : {&t.row, &t.col}) {
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

}  // namespace nvfp4::cuda
