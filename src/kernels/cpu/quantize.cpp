// CPU reference quantizers: NVFP4 (1x16, 16x16, RHT, SR), MXFP4 (both scale rules), FP8.
//
// What it is: the oracle. Every number comes from the header-only core in src/format/, the
// same functions the CUDA kernels call, arranged in plain loops over a row-major tensor.
// What it is not: clever. It is single-threaded and makes a separate transposed copy for the
// column-wise layout. The inner loops are written so the compiler vectorizes them (integer
// max over |x| bits, branch-free E2M1 compares); that is all the tuning there is.
#include <algorithm>
#include <bit>
#include <cstring>
#include <string>

#include "format/fp8.hpp"
#include "format/mxfp4.hpp"
#include "format/nvfp4.hpp"
#include "format/rht.hpp"
#include "format/swizzle.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/quantize.hpp"
#include "nvfp4/tensor.hpp"

// Hot loops get an AVX2 clone chosen at run time; the default clone runs anywhere x86-64 does.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NVFP4_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define NVFP4_CPU_CLONES
#endif

namespace nvfp4 {

namespace cpu_detail {

// max over (bits of |x|): for non-negative floats integer order is float order, and NaN/Inf
// show up as values >= 0x7F800000 — one vectorizable pass finds the amax and any non-finite.
NVFP4_CPU_CLONES uint32_t max_abs_bits(const float* x, int64_t n) {
  uint32_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, x + i, 4);
    b &= 0x7FFFFFFFu;
    m = b > m ? b : m;
  }
  return m;
}

// Column-block amax (as |x| bits) of `rows` rows: out[b] = max over rows r and the 16 columns
// of block b. rows = 1 gives 1x16 block amaxes, rows = 16 the amax of 16x16 tiles.
NVFP4_CPU_CLONES void block16_amax_bits(const float* x, int64_t rows, int64_t cols, uint32_t* out) {
  const int64_t nb = cols / 16;
  for (int64_t b = 0; b < nb; ++b) out[b] = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < nb; ++b) {
      uint32_t m = out[b];
      for (int j = 0; j < 16; ++j) {
        uint32_t u;
        std::memcpy(&u, x + r * cols + 16 * b + j, 4);
        u &= 0x7FFFFFFFu;
        m = u > m ? u : m;
      }
      out[b] = m;
    }
  }
}

// Pack n (even) codes, one per byte, two per byte: element 2j in the low nibble.
// NOTE: reads each pair as one little-endian uint16 (low byte = element 2j), which the
// compiler turns into a few wide shifts and masks instead of per-byte extracts.
NVFP4_CPU_CLONES void pack_nibbles(const uint8_t* q, int64_t n, uint8_t* out) {
  static_assert(std::endian::native == std::endian::little, "pack_nibbles reads byte pairs as little-endian");
  for (int64_t j = 0; j < n / 2; ++j) {
    uint16_t w;
    std::memcpy(&w, q + 2 * j, 2);
    out[j] = static_cast<uint8_t>((w & 0x0Fu) | ((w >> 4) & 0xF0u));
  }
}

// E4M3 block scales from block amaxes (as |x| bits), n of them.
NVFP4_CPU_CLONES void nvfp4_scales_from_amax(const uint32_t* amax_bits, int64_t n, const fmt::Nvfp4TensorScale& ts,
                                             uint8_t* scales) {
  for (int64_t b = 0; b < n; ++b) scales[b] = fmt::nvfp4_block_scale(fmt::f32_from_bits(amax_bits[b]), ts);
}

// Encode factors of n block scales.
NVFP4_CPU_CLONES void nvfp4_encode_factors(const uint8_t* scales, int64_t n, const fmt::Nvfp4TensorScale& ts,
                                           float* factors) {
  for (int64_t b = 0; b < n; ++b) factors[b] = fmt::nvfp4_block_encode_factor(scales[b], ts);
}

// Codes of one row with RNE, given its blocks' encode factors, one per byte into q (cols bytes).
NVFP4_CPU_CLONES void nvfp4_row_encode_rne(const float* x, int64_t cols, const float* factors, uint8_t* q) {
  for (int64_t b = 0; b < cols / 16; ++b) {
    const float e = factors[b];
    for (int j = 0; j < 16; ++j) q[16 * b + j] = fmt::nvfp4_encode_rne(x[16 * b + j], e);
  }
}

// Codes of one row with stochastic rounding; the bits of block b of the copy come from
// Philox keyed by `key` at counter first_block + b.
NVFP4_CPU_CLONES void nvfp4_row_encode_sr(const float* x, int64_t cols, const fmt::Nvfp4TensorScale& ts,
                                          const uint8_t* scales, const fmt::SrKey& key, int64_t first_block,
                                          uint8_t* codes) {
  for (int64_t b = 0; b < cols / 16; ++b) {
    const float e = fmt::nvfp4_block_encode_factor(scales[b], ts);
    const fmt::Philox4x32 bits = fmt::sr_block_bits(key, static_cast<uint64_t>(first_block + b));
    uint32_t r8[16];
    for (int j = 0; j < 16; ++j) r8[j] = fmt::sr_byte(bits, j);
    uint8_t q[16];
    for (int j = 0; j < 16; ++j) q[j] = fmt::nvfp4_encode_sr(x[16 * b + j], e, r8[j]);
    pack_nibbles(q, 16, codes + 8 * b);
  }
}

// Codes of one row of MXFP4 blocks with RNE, given their encode factors, one per byte into q.
NVFP4_CPU_CLONES void mxfp4_row_encode_rne(const float* x, int64_t cols, const float* factors, uint8_t* q) {
  for (int64_t b = 0; b < cols / 32; ++b) {
    const float f = factors[b];
    for (int j = 0; j < 32; ++j) q[32 * b + j] = fmt::mxfp4_encode_rne(x[32 * b + j], f);
  }
}

}  // namespace cpu_detail

namespace {

using cpu_detail::max_abs_bits;

// Amax of x (n values); throws NonFiniteError (flat index and count) on NaN/Inf.
float checked_amax(const float* x, int64_t n, int64_t cols, const char* what) {
  const uint32_t m = max_abs_bits(x, n);
  if (m < 0x7F800000u) return fmt::f32_from_bits(m);
  int64_t first = -1, count = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!fmt::is_finite(x[i])) {
      if (first < 0) first = i;
      ++count;
    }
  }
  throw NonFiniteError(std::string(what) + " contains " + std::to_string(count) +
                           " non-finite value(s) (NaN or Inf), the first at [" + std::to_string(first / cols) + ", " +
                           std::to_string(first % cols) +
                           "]; they are never quantized silently — fix or drop this tensor",
                       first, count);
}

// NVFP4: x (rows, cols) -> codes (rows, cols/2), scales (rows, cols/16); tile_rows 1 or 16.
void quantize_nvfp4_copy(const float* x, int64_t rows, int64_t cols, int tile_rows, bool sr, const fmt::SrKey& key,
                         float amax, QuantizedCopy& out) {
  const auto ts = fmt::nvfp4_tensor_scale(amax);
  const int64_t nb = cols / 16;
  out.rows = rows;
  out.cols = cols;
  out.amax = amax;
  out.codes.resize(static_cast<size_t>(rows * cols / 2));
  out.scales.resize(static_cast<size_t>(rows * nb));
  out.scale_rows = rows;
  out.scale_cols = nb;
  // Tiles are independent (SR draws are keyed by element position): OpenMP over tiles.
#pragma omp parallel if (rows * cols >= (int64_t{1} << 16))
  {
  std::vector<uint32_t> bamax(static_cast<size_t>(nb));
  std::vector<uint8_t> row_codes(static_cast<size_t>(cols));  // one code per byte, before packing
  std::vector<float> factors(static_cast<size_t>(nb));
#pragma omp for schedule(static)
  for (int64_t r0 = 0; r0 < rows; r0 += tile_rows) {
    // Scales: per 1x16 block, or per 16x16 tile replicated over its 16 rows.
    cpu_detail::block16_amax_bits(x + r0 * cols, tile_rows, cols, bamax.data());
    cpu_detail::nvfp4_scales_from_amax(bamax.data(), nb, ts, out.scales.data() + r0 * nb);
    cpu_detail::nvfp4_encode_factors(out.scales.data() + r0 * nb, nb, ts, factors.data());
    for (int64_t r = r0 + 1; r < r0 + tile_rows; ++r) {
      std::memcpy(out.scales.data() + r * nb, out.scales.data() + r0 * nb, static_cast<size_t>(nb));
    }
    for (int64_t r = r0; r < r0 + tile_rows; ++r) {
      const float* xr = x + r * cols;
      uint8_t* codes = out.codes.data() + r * cols / 2;
      if (sr) {
        cpu_detail::nvfp4_row_encode_sr(xr, cols, ts, out.scales.data() + r * nb, key, r * cols / 16, codes);
      } else {
        cpu_detail::nvfp4_row_encode_rne(xr, cols, factors.data(), row_codes.data());
        cpu_detail::pack_nibbles(row_codes.data(), cols, codes);
      }
    }
  }
  }  // omp parallel
}

// MXFP4: x (rows, cols) -> codes (rows, cols/2), E8M0 scales (rows, cols/32).
void quantize_mxfp4_copy(const float* x, int64_t rows, int64_t cols, fmt::MxScaleRule rule, bool sr,
                         const fmt::SrKey& key, QuantizedCopy& out) {
  const int64_t nb = cols / 32;
  out.rows = rows;
  out.cols = cols;
  out.amax = 0.0f;
  out.codes.resize(static_cast<size_t>(rows * cols / 2));
  out.scales.resize(static_cast<size_t>(rows * nb));
  out.scale_rows = rows;
  out.scale_cols = nb;
  float amax = 0.0f;
  // Rows are independent (SR draws are keyed by element position): OpenMP over rows.
#pragma omp parallel if (rows * cols >= (int64_t{1} << 16)) reduction(max : amax)
  {
  std::vector<uint32_t> half_amax(static_cast<size_t>(2 * nb));
  std::vector<float> factors(static_cast<size_t>(nb));
  std::vector<uint8_t> row_codes(static_cast<size_t>(cols));
  uint8_t q[16];
#pragma omp for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    cpu_detail::block16_amax_bits(xr, 1, cols, half_amax.data());  // two 16-amaxes per 32-block
    for (int64_t b = 0; b < nb; ++b) {
      const float bamax = fmt::f32_from_bits(std::max(half_amax[2 * b], half_amax[2 * b + 1]));
      amax = std::max(amax, bamax);
      const int e = fmt::mxfp4_block_exponent(bamax, rule);
      out.scales[r * nb + b] = fmt::mxfp4_e8m0_code(e);
      factors[b] = fmt::mxfp4_encode_factor(e);
    }
    uint8_t* codes = out.codes.data() + r * cols / 2;
    if (!sr) {
      cpu_detail::mxfp4_row_encode_rne(xr, cols, factors.data(), row_codes.data());
      cpu_detail::pack_nibbles(row_codes.data(), cols, codes);
      continue;
    }
    for (int64_t h = 0; h < cols / 16; ++h) {  // SR bits come per 16 elements
      const fmt::Philox4x32 bits = fmt::sr_block_bits(key, static_cast<uint64_t>((r * cols + 16 * h) / 16));
      for (int j = 0; j < 16; ++j) q[j] = fmt::e2m1_encode_sr(xr[16 * h + j] * factors[h / 2], fmt::sr_byte(bits, j));
      cpu_detail::pack_nibbles(q, 16, codes + 8 * h);
    }
  }
  }  // omp parallel
  out.amax = amax;
}

// FP8 with current scaling: per tensor (block {0,0}) or per block (partial edge blocks allowed).
void quantize_fp8_copy(const float* x, int64_t rows, int64_t cols, BlockShape block, fmt::Fp8Kind kind, float amax,
                       QuantizedCopy& out) {
  out.rows = rows;
  out.cols = cols;
  out.amax = amax;
  out.codes.assign(static_cast<size_t>(rows * cols), 0);
  out.scales.clear();
  if (block.per_tensor()) {
    const float scale = fmt::fp8_scale_from_amax(amax, kind);
    for (int64_t i = 0; i < rows * cols; ++i) out.codes[i] = fmt::fp8_encode_scaled(x[i], scale, kind);
    out.scale_rows = 1;
    out.scale_cols = 1;
    out.scale_inv = {1.0f / scale};
    return;
  }
  const int64_t br = block.rows, bc = block.cols;
  out.scale_rows = (rows + br - 1) / br;
  out.scale_cols = (cols + bc - 1) / bc;
  out.scale_inv.assign(static_cast<size_t>(out.scale_rows * out.scale_cols), 1.0f);
  for (int64_t i = 0; i < out.scale_rows; ++i) {
    for (int64_t j = 0; j < out.scale_cols; ++j) {
      const int64_t r1 = std::min(rows, (i + 1) * br), c1 = std::min(cols, (j + 1) * bc);
      uint32_t m = 0;
      for (int64_t r = i * br; r < r1; ++r) m = std::max(m, max_abs_bits(x + r * cols + j * bc, c1 - j * bc));
      const float scale = fmt::fp8_scale_from_amax(fmt::f32_from_bits(m), kind);
      out.scale_inv[i * out.scale_cols + j] = 1.0f / scale;
      for (int64_t r = i * br; r < r1; ++r) {
        for (int64_t c = j * bc; c < c1; ++c) out.codes[r * cols + c] = fmt::fp8_encode_scaled(x[r * cols + c], scale, kind);
      }
    }
  }
}

std::vector<float> transpose(const float* x, int64_t rows, int64_t cols) {
  std::vector<float> t(static_cast<size_t>(rows * cols));
  constexpr int64_t kTile = 32;  // cache-friendly tiles; order of writes does not matter
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      for (int64_t r = r0; r < std::min(rows, r0 + kTile); ++r) {
        for (int64_t c = c0; c < std::min(cols, c0 + kTile); ++c) t[c * rows + r] = x[r * cols + c];
      }
    }
  }
  return t;
}

// Round to what the input type can hold: the RHT output goes back to the input's precision.
float round_to_dtype(float v, DType d) {
  if (d == DType::BF16) return fmt::bf16_round(v);
  if (d == DType::F16) return fmt::fp16_decode(fmt::fp16_encode(v));
  return v;
}

void check_multiple(int64_t dim, int64_t m, const char* dim_name, const std::string& why) {
  if (dim % m != 0) {
    throw Error("dimension " + std::string(dim_name) + " = " + std::to_string(dim) + " is not a multiple of " +
                std::to_string(m) + ": " + why);
  }
}

// Points of a format's RHT: 16 for NVFP4 (TE), 32 for MXFP4 (its block).
int rht_points(Format f) { return format_traits(f).rht_points; }

}  // namespace

QuantizeOptions resolve_options(const QuantizeOptions& options, int64_t M, int64_t K) {
  QuantizeOptions o = options;
  const FormatTraits& t = format_traits(o.format);
  if (!o.block) o.block = t.default_block;
  const BlockShape b = *o.block;
  if (std::find(t.blocks.begin(), t.blocks.end(), b) == t.blocks.end()) {
    std::string allowed;
    for (const auto& a : t.blocks) allowed += (allowed.empty() ? "" : ", ") + block_name(a);
    throw Error("--block " + block_name(b) + " is not available for format " + std::string(t.name) +
                "; use one of: " + allowed);
  }
  if (!o.rowwise && !o.columnwise) throw Error("nothing to quantize: neither the row-wise nor the column-wise copy was requested");
  if (M < 0 || K < 0) throw Error("negative tensor shape");
  if (o.rht) {
    if (!t.supports_rht) {
      throw Error("--rht is defined for nvfp4 (16-point Hadamard) and mxfp4 (32-point) on the column-wise copy; "
                  "format " + std::string(t.name) + " does not support it");
    }
    if (b.rows != 1) {
      throw Error("--rht applies to 1x16 operands (activations and gradients); 16x16 weight blocks are not "
                  "Hadamard-transformed (paper §4): drop --rht or use --block 1x16");
    }
    if (o.format != Format::nvfp4 && o.rht_sign_mask != kTeRhtSignMask) {
      throw Error("--rht-signs chooses the 16-point transform's signs (nvfp4); " + std::string(t.name) +
                  "'s 32-point transform has fixed signs");
    }
    if (!o.columnwise) throw Error("--rht transforms the column-wise copy: add --columnwise");
  }
  if (o.rounding == Rounding::stochastic && !t.supports_sr) {
    throw Error("--sr (stochastic rounding) is defined for the FP4 formats only; " + std::string(t.name) +
                " rounds to nearest even");
  }
  if (t.packed_fp4) {
    const int64_t bc = b.cols;
    const std::string why = std::string(t.name) + " scales cover " + std::to_string(bc) +
                            " contiguous elements; pad the tensor or exclude it";
    if (o.rowwise) check_multiple(K, bc, "K (columns)", why);
    if (o.columnwise) check_multiple(M, bc, "M (rows), the contiguous dimension of the column-wise copy", why);
    if (b.rows > 1) {
      check_multiple(M, b.rows, "M (rows)", "16x16 tiles need whole tiles");
      check_multiple(K, b.rows, "K (columns)", "16x16 tiles need whole tiles");
    }
  }
  if (o.rht) {
    const int n = rht_points(o.format);
    check_multiple(M, n, "M (rows)", "the RHT works on " + std::to_string(n) + "-chunks");
  }
  if (o.sr_key.layer >= (1u << 24)) throw Error("SR key layer must be below 2^24");
  if (o.sr_key.role >= 128u) throw Error("SR key role must be below 128 (the column-wise copy uses role | 128)");
  return o;
}

QuantizedTensor quantize(std::span<const float> x, int64_t M, int64_t K, const QuantizeOptions& options,
                         DType input_dtype) {
  if (M < 0 || K < 0 || static_cast<uint64_t>(M) * static_cast<uint64_t>(K) != x.size()) {
    throw Error("quantize: " + std::to_string(x.size()) + " values do not form a [" + std::to_string(M) + ", " +
                std::to_string(K) + "] matrix");
  }
  QuantizedTensor q;
  q.options = resolve_options(options, M, K);
  q.input_dtype = input_dtype;
  q.M = M;
  q.K = K;
  const QuantizeOptions& o = q.options;
  const BlockShape block = *o.block;
  const bool sr = o.rounding == Rounding::stochastic;

  const float row_amax = checked_amax(x.data(), M * K, std::max<int64_t>(K, 1), "the input tensor");

  auto quantize_copy = [&](const float* data, int64_t rows, int64_t cols, float amax, bool column) {
    QuantizedCopy c;
    const SrKey key = sr_copy_key(o.sr_key, column);
    switch (o.format) {
      case Format::nvfp4:
        quantize_nvfp4_copy(data, rows, cols, block.rows, sr, key, amax, c);
        break;
      case Format::mxfp4:
      case Format::mxfp4_ocp:
        quantize_mxfp4_copy(data, rows, cols,
                            o.format == Format::mxfp4 ? fmt::MxScaleRule::round_up : fmt::MxScaleRule::ocp_floor, sr,
                            key, c);
        break;
      case Format::fp8_e4m3:
      case Format::fp8_e5m2: {
        // A 128x128 weight block transposes onto itself; a 1x128 block runs along the copy's rows.
        quantize_fp8_copy(data, rows, cols, block, o.format == Format::fp8_e4m3 ? fmt::Fp8Kind::e4m3 : fmt::Fp8Kind::e5m2,
                          amax, c);
        break;
      }
    }
    return c;
  };

  if (o.rowwise) q.row = quantize_copy(x.data(), M, K, row_amax, false);
  if (o.columnwise) {
    std::vector<float> xt = transpose(x.data(), M, K);  // (K, M)
    float col_amax = row_amax;
    if (o.rht) {
      const int n = rht_points(o.format);
#pragma omp parallel for schedule(static) if (K * M >= (int64_t{1} << 16))
      for (int64_t i = 0; i < K * M; i += n) {
        if (n == fmt::kRhtSize) fmt::rht16(xt.data() + i, o.rht_sign_mask);
        else fmt::rht32(xt.data() + i, fmt::kRht32SignMask);
        for (int j = 0; j < n; ++j) xt[i + j] = round_to_dtype(xt[i + j], input_dtype);
      }
      // NOTE: the amax of the column-wise copy is taken AFTER the transform and rounding.
      col_amax = checked_amax(xt.data(), K * M, std::max<int64_t>(M, 1), "the Hadamard-transformed input");
    }
    q.col = quantize_copy(xt.data(), K, M, col_amax, true);
    if (o.rht) q.col_rht_input = std::move(xt);
  }
  return q;
}

std::vector<float> dequantize_as_input(const QuantizedTensor& q, bool column) {
  if (!column) {
    if (!q.row) throw Error("dequantize_as_input: the tensor has no row-wise copy");
    return dequantize(*q.row, q.options);
  }
  if (!q.col) throw Error("dequantize_as_input: the tensor has no column-wise copy");
  std::vector<float> t = dequantize(*q.col, q.options);  // (K, M)
  if (q.options.rht) {
    const int n = rht_points(q.options.format);
    if (n == fmt::kRhtSize) {
      for (size_t i = 0; i + 16 <= t.size(); i += 16) fmt::rht16_inverse(t.data() + i, q.options.rht_sign_mask);
    } else if (n == fmt::kRht32Size) {
      for (size_t i = 0; i + 32 <= t.size(); i += 32) fmt::rht32_inverse(t.data() + i, fmt::kRht32SignMask);
    } else {
      throw Error("dequantize_as_input: format " + std::string(format_traits(q.options.format).name) + " has no RHT");
    }
  }
  std::vector<float> x(t.size());
  for (int64_t k = 0; k < q.K; ++k)
    for (int64_t m = 0; m < q.M; ++m) x[m * q.K + k] = t[k * q.M + m];
  return x;
}

std::vector<float> dequantize(const QuantizedCopy& c, const QuantizeOptions& options, bool apply_tensor_scale) {
  // element x block scale x tensor factor, left to right, every part from the traits table.
  const FormatTraits& t = format_traits(options.format);
  const BlockShape b = options.block.value_or(t.default_block);
  const float f = apply_tensor_scale && t.tensor_decode_factor ? t.tensor_decode_factor(c.amax) : 1.0f;
  // The decoders' values for every byte, once (the loop then makes no indirect calls).
  float element[256], byte_scale[256];
  for (int v = 0; v < 256; ++v) {
    element[v] = t.element_decode(static_cast<uint8_t>(v));
    byte_scale[v] = t.scale_decode ? t.scale_decode(static_cast<uint8_t>(v)) : 0.0f;
  }
  const int64_t n = c.rows * c.cols;
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = i / c.cols, col = i % c.cols;
    const uint8_t code = t.packed_fp4 ? ((i & 1) ? c.codes[i / 2] >> 4 : c.codes[i / 2] & 0xF) : c.codes[i];
    float scale;
    if (t.scale_decode) {  // byte scales, stored for every row (16x16 tiles replicate theirs)
      scale = byte_scale[c.scales[r * c.scale_cols + col / b.cols]];
    } else {  // FP32 decode factors per tensor or per block
      scale = b.per_tensor() ? c.scale_inv[0] : c.scale_inv[(r / b.rows) * c.scale_cols + col / b.cols];
    }
    out[i] = element[code] * scale * f;
  }
  return out;
}

std::vector<uint8_t> swizzle_scales(std::span<const uint8_t> scales, int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0 || static_cast<uint64_t>(rows * cols) != scales.size()) {
    throw Error("swizzle_scales: " + std::to_string(scales.size()) + " scales do not form a [" + std::to_string(rows) +
                ", " + std::to_string(cols) + "] matrix");
  }
  std::vector<uint8_t> out(static_cast<size_t>(fmt::swizzled_scale_bytes(rows, cols)), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[fmt::swizzled_scale_offset(r, c, cols)] = scales[r * cols + c];
  return out;
}

std::vector<uint8_t> unswizzle_scales(std::span<const uint8_t> swizzled, int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0 || static_cast<uint64_t>(fmt::swizzled_scale_bytes(rows, cols)) != swizzled.size()) {
    throw Error("unswizzle_scales: " + std::to_string(swizzled.size()) + " bytes are not the 128x4 layout of a [" +
                std::to_string(rows) + ", " + std::to_string(cols) + "] scale matrix (" +
                std::to_string(fmt::swizzled_scale_bytes(rows, cols)) + " bytes)");
  }
  std::vector<uint8_t> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = swizzled[fmt::swizzled_scale_offset(r, c, cols)];
  return out;
}

}  // namespace nvfp4
