// MXFP4 quantization on Hopper (1x32 blocks, E8M0 scales, both scale rules, stochastic rounding)
// and the 32-point RHT of its column-wise copies (include/nvfp4/cuda_quantize.hpp).
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "format/mxfp4.hpp"
#include "format/rht.hpp"

#include "kernels/cuda/quantize_common.cuh"

namespace nvfp4::cuda {

using namespace quantize_detail;

namespace {

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

void run_mxfp4(const void* x, DType dtype, int64_t M, int64_t K, const QuantizeOptions& options, const DeviceCopy* row,
               const DeviceCopy* col, DeviceStatus status, Stream stream) {
  const Format format = options.format;
  if (format != Format::mxfp4 && format != Format::mxfp4_ocp) {
    throw Error("quantize_mxfp4: format " + std::string(format_traits(format).name) + " is not an MXFP4 format");
  }
  if (options.block && *options.block != BlockShape{1, 32}) {
    throw Error("quantize_mxfp4: block " + block_name(*options.block) + " is not 1x32");
  }
  const bool stochastic = options.rounding == Rounding::stochastic;
  const SrKey key = options.sr_key;
  validate_input("quantize_mxfp4", x, dtype, M, K);
  if (!row && !col) throw Error("quantize_mxfp4: neither the row-wise nor the column-wise copy was requested");
  if (row && K % 32 != 0) throw Error("quantize_mxfp4: K = " + std::to_string(K) + " is not a multiple of 32 (MXFP4 blocks)");
  if (col && M % 32 != 0) {
    throw Error("quantize_mxfp4: M = " + std::to_string(M) + " is not a multiple of 32 (blocks of the column-wise copy)");
  }
  for (const DeviceCopy* p : {row, col}) {
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
  a.row_key = sr_copy_key(key, false);
  a.col_key = sr_copy_key(key, true);
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

namespace formats {

void quantize_mxfp4(const void* x, DType dtype, int64_t M, int64_t K, const QuantizeOptions& options,
                    const DeviceCopy* row, const DeviceCopy* col, DeviceStatus status, Stream stream) {
  run_mxfp4(x, dtype, M, K, options, row, col, status, stream);
}

}  // namespace formats

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

}  // namespace nvfp4::cuda
