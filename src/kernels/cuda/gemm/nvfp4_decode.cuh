// Decoding NVFP4 in registers for the fused kernels (sm90_nvfp4_bf16_gemv.cu, sm90_nvfp4_bf16_gemm.cu):
// codes in the GEMV order (include/nvfp4/cuda_gemm_nvfp4.hpp) to the exact BF16 pairs the
// tensor cores take. Host and device: the host versions (the BF16 product in FP32, rounded to
// nearest even) let a test without a GPU check every code and scale against the format core.
#pragma once

#ifdef __CUDACC__
#include <cuda_bf16.h>

#include "kernels/cuda/ops_common.cuh"
#endif

#include <atomic>
#include <cstdint>
#include <string>

#include "format/scalar.hpp"
#include "nvfp4/cuda_gemm_nvfp4.hpp"

namespace nvfp4::cuda::gemm_detail {

// nvfp4_calls()'s counts (sm90_nvfp4_bf16_gemv.cu), bumped by each entry before it launches.
extern std::atomic<int64_t> calls_gemv, calls_gemm, calls_gemm_nt;

// The GEMV's one-n-tile configurations (sm90_nvfp4_bf16_gemv.cu, kGemvVariants; 0 is the default:
// register-ring depth, accumulator sets, warps an SM), for bench_gemm_nvfp4 to time side by side
// and the tests to check: nvfp4_gemv at 1 <= N <= max_rows (8 or 16) with a given variant and
// split (1-16 warps).
int nvfp4_gemv_variants();
std::string nvfp4_gemv_variant_name(int variant);
int nvfp4_gemv_variant_max_rows(int variant);  // 8 or 16 tokens
void nvfp4_gemv_variant(int variant, int split, void* out, DType out_dtype, const uint16_t* x, const Nvfp4Weight& w,
                        const uint16_t* bias, int64_t N, int64_t C, int64_t OC, Stream stream, const float* row_scale);

// NOTE: nibbles (s e1 e0 m) at bits 0-3 and 16-19 of p (higher bits are ignored) become the BF16
// bits s << 15 | (e1 e0 m) << 6, i.e. the BF16 value e2m1 × 2^-126: exponent field e1 e0 and
// mantissa m; e1 e0 = 0 is a BF16 subnormal, m × 2^-127 = (m × 0.5) × 2^-126. Exact for all 16.
NVFP4_HD uint32_t e2m1x2_times_2pow_minus126(uint32_t p) {
  return ((p << 6) & 0x01C001C0u) | ((p << 12) & 0x80008000u);
}

// Two BF16 products, each rounded to nearest even (HMUL2.BF16 on the device).
NVFP4_HD uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
#ifdef __CUDA_ARCH__
  __nv_bfloat162 r = __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&a), *reinterpret_cast<const __nv_bfloat162*>(&b));
  return *reinterpret_cast<const uint32_t*>(&r);
#else
  const auto half = [](uint32_t x, int h) { return fmt::bf16_decode(static_cast<uint16_t>(x >> (16 * h))); };
  return static_cast<uint32_t>(fmt::bf16_encode(half(a, 0) * half(b, 0))) |
         (static_cast<uint32_t>(fmt::bf16_encode(half(a, 1) * half(b, 1))) << 16);
#endif
}

// The decoded weights the tensor cores take are w × 2^-8 (w = e2m1 × block scale), not w: the
// block scale is carried as scale × 2^118 (the largest, 448 × 2^118 < 2^127, is inside BF16's
// range), so ONE exact BF16 multiply takes the bits of e2m1 × 2^-126 to w × 2^-8 — where w itself
// would take two (× 2^126, then × scale: scale × 2^126 is past BF16's range from scale 2 up). The epilogues multiply the FP32 sums
// by the tensor's factor × 2^8 (× 2^16 where both operands are decoded), exactly, so a result is
// the same bits as with w: scaling every product by a power of two scales every partial sum
// exactly, as long as none falls below FP32's normal range. The W4A4 products (both operands
// NVFP4) are 0 or at least 2^-36 here; a W4A16 product would need |x · w| < 2^-118.
constexpr int kDecodedWeightShift = 8;                                  // decoded = w × 2^-8
constexpr float kDecodedWeightUnshift = 256.0f;                         // × 2^8 undoes it
constexpr uint32_t kBf16x2Unshift = 0x43804380u;                        // BF16 2^8 twice
static_assert(kDecodedWeightUnshift == static_cast<float>(1 << kDecodedWeightShift), "2^8");

// An E4M3 block scale (0..448, no sign, no NaN: checked when a checkpoint loads) as a BF16 pair
// holding scale × 2^118, exactly (3 mantissa bits; 2^-9 × 2^118 .. 448 × 2^118 is inside BF16's
// normal range).
// NOTE: the code's bits placed at an FP32's exponent and mantissa (s << 20) are the FP32
// 2^(e-127) × (1 + m/8) — or, for e = 0, the FP32 subnormal m/8 × 2^-126 — i.e. the E4M3 value
// × 2^-120 in both cases; exact multiplies by 2^120 and by 2^118 (one constant 2^238 is past
// FP32's range) give scale × 2^118 (FP32 subnormals are kept: the kernels are not built with
// -ftz). Its top 16 bits are the BF16.
NVFP4_HD uint32_t e4m3_to_bf16x2(uint32_t s) {
  const float scale = fmt::f32_from_bits((s & 0x7Fu) << 20) * 0x1p120f;
  const uint32_t h = fmt::f32_bits(scale * 0x1p118f) >> 16;
  return h * 0x10001u;
}

// Both routes from the bits of e2m1 × 2^-126 (a pair, as the functions below make them) to
// e2m1 × scale × 2^-8 (s: a BF16 pair from e4m3_to_bf16x2), exact. By default one BF16 multiply
// (HMUL2.BF16 keeps subnormal inputs — the bits of codes 0.5 and -0.5 are BF16 subnormals —
// which the one-term GPU test checks). With NVFP4_DECODE_VIA_FP32 the same through FP32 (no BF16
// arithmetic on subnormals): each half widened to FP32 (exact), × scale in FP32 (exact: kept
// without -ftz), packed back to BF16 (exact: at most 5 significant bits). More instructions.
NVFP4_HD uint32_t scale_pair_fp32(uint32_t bits, uint32_t s) {
  const float scale = fmt::bf16_decode(static_cast<uint16_t>(s));
  const auto one = [&](uint32_t h) {
    const float v = fmt::f32_from_bits(h << 16) * scale;
    return static_cast<uint32_t>(fmt::f32_bits(v) >> 16);
  };
  return one(bits & 0xFFFFu) | (one(bits >> 16) << 16);
}

NVFP4_HD uint32_t scale_pair(uint32_t bits, uint32_t s) {
#ifdef NVFP4_DECODE_VIA_FP32
  return scale_pair_fp32(bits, s);
#else
  return bf16x2_mul(bits, s);
#endif
}

NVFP4_HD uint32_t rotr(uint32_t w, int r) {
#ifdef __CUDA_ARCH__
  return __funnelshift_r(w, w, static_cast<unsigned>(r));
#else
  return r ? (w >> r) | (w << (32 - r)) : w;
#endif
}

// The GEMV order's rotations (include/nvfp4/cuda_gemm_nvfp4.hpp), as arithmetic a thread can
// also evaluate for a j known only at run time.
NVFP4_HD constexpr int gemv_mag_rot(int j) { return 3 * j; }
NVFP4_HD constexpr int gemv_sign_rot(int j) { return (j ^ 1) + 3; }
static_assert(gemv_mag_rot(0) == kGemvMagRot[0] && gemv_mag_rot(1) == kGemvMagRot[1] &&
                  gemv_mag_rot(2) == kGemvMagRot[2] && gemv_mag_rot(3) == kGemvMagRot[3],
              "the decode's magnitude rotations must be the GEMV order's");
static_assert(gemv_sign_rot(0) == kGemvSignRot[0] && gemv_sign_rot(1) == kGemvSignRot[1] &&
                  gemv_sign_rot(2) == kGemvSignRot[2] && gemv_sign_rot(3) == kGemvSignRot[3],
              "the decode's sign rotations must be the GEMV order's");

// Elements 2j and 2j + 1 of a GEMV-order word as the BF16 bits of e2m1 × 2^-126: one or two
// rotations and a mask (pairs 1 and 2: one rotation, both fields in place).
NVFP4_HD uint32_t gemv_pair_bits(uint32_t word, int j) {
  return (rotr(word, gemv_mag_rot(j)) & 0x01C001C0u) | (rotr(word, gemv_sign_rot(j)) & 0x80008000u);
}

// Elements 2j and 2j + 1 of a GEMV-order word (8 codes of one block) times the block scale s (a
// BF16 pair from e4m3_to_bf16x2): the BF16 pair of the decoded weights × 2^-8, exact.
NVFP4_HD uint32_t decode_pair(uint32_t word, int j, uint32_t s) { return scale_pair(gemv_pair_bits(word, j), s); }

// Checkpoint order (byte b: elements 2b, 2b + 1, the low nibble first): one byte's two codes as
// the BF16 pair of the decoded weights × 2^-8 (s from e4m3_to_bf16x2). byte × 0x1001 puts the high
// nibble at bits 16-19 (the low one stays at 0-3; the copies at 4-7 and 12-15 are masked off).
NVFP4_HD uint32_t decode_byte_pair(uint32_t byte, uint32_t s) {
  return scale_pair(e2m1x2_times_2pow_minus126((byte & 0xFFu) * 0x1001u), s);
}

#ifdef __CUDACC__
// The three device pointers of an NVFP4 weight, each non-null (throws naming the op and the field).
inline void require_nvfp4_weight(const char* op, const Nvfp4Weight& w) {
  ops_detail::require_ptr(w.codes, op, "codes");
  ops_detail::require_ptr(w.scales, op, "scales");
  ops_detail::require_ptr(w.decode, op, "decode");
}

// The factor a fused kernel's FP32 sums take: the tensor's decode factor (W4A16; W4A4: the GEMM's
// alpha) × 2^8 for each decoded operand (kDecodedWeightShift), exact.
template <int kDecodedOperands>
__device__ __forceinline__ float unshifted_factor(const float* factor) {
  static_assert(kDecodedOperands == 1 || kDecodedOperands == 2, "one operand decoded (W4A16) or both (W4A4)");
  return kDecodedOperands == 1 ? *factor * kDecodedWeightUnshift
                               : *factor * (kDecodedWeightUnshift * kDecodedWeightUnshift);
}

// The W4A16 factor of output row r: the tensor's (decode_stride 0) or row r's own (decode_stride 1:
// tensors stacked by rows, Nvfp4Weight::decode_per_row).
__device__ __forceinline__ float row_factor(const float* decode, int64_t r, int decode_stride) {
  return unshifted_factor<1>(decode + r * decode_stride);
}

// A fused kernel's output: the FP32 sum times the tensor's decode factor plus the bias, fused (one
// rounding); with W4A4's per-token row scale the product with the factor is rounded first, as
// decode-then-GEMM's alpha is. Stored as F32 or rounded once to BF16.
template <bool kF32>
__device__ __forceinline__ void store_nvfp4_output(void* out, int64_t index, float sum, float decode,
                                                   const float* row_scale, int64_t token, float bias) {
  const float y = row_scale ? __fmaf_rn(__fmul_rn(sum, decode), row_scale[token], bias) : __fmaf_rn(sum, decode, bias);
  if constexpr (kF32) static_cast<float*>(out)[index] = y;
  else static_cast<uint16_t*>(out)[index] = __bfloat16_as_ushort(__float2bfloat16_rn(y));
}

// The m16n8k16 A fragment of one 16-column block (kb) of rows rl and rl + 8 of a code tile in
// shared memory (rows `pitch` bytes apart) with the two rows' E4M3 scale bytes of the block (the
// low 8 bits of sl8 and sh8): thread t's elements 2t, 2t+1 and 2t+8, 2t+9 of each row, decoded —
// from a GEMV-order block pair t of its two words, from a checkpoint-order block bytes t and 4 + t.
template <bool kGemvOrder>
__device__ __forceinline__ void a_fragment(uint32_t (&a)[4], const uint8_t* codes, int pitch, int rl, int kb, int t,
                                           uint32_t sl8, uint32_t sh8) {
  const int rh = rl + 8;
  const uint2 cl = *reinterpret_cast<const uint2*>(codes + rl * pitch + kb * 8);
  const uint2 ch = *reinterpret_cast<const uint2*>(codes + rh * pitch + kb * 8);
  const uint32_t sl = e4m3_to_bf16x2(sl8 & 0xFFu), sh = e4m3_to_bf16x2(sh8 & 0xFFu);
  if constexpr (kGemvOrder) {
    a[0] = decode_pair(cl.x, t, sl);
    a[1] = decode_pair(ch.x, t, sh);
    a[2] = decode_pair(cl.y, t, sl);
    a[3] = decode_pair(ch.y, t, sh);
  } else {
    a[0] = decode_byte_pair(cl.x >> (8 * t), sl);
    a[1] = decode_byte_pair(ch.x >> (8 * t), sh);
    a[2] = decode_byte_pair(cl.y >> (8 * t), sl);
    a[3] = decode_byte_pair(ch.y >> (8 * t), sh);
  }
}
// The same with the stage's scales in shared memory (4 bytes a row, one per block).
template <bool kGemvOrder>
__device__ __forceinline__ void a_fragment(uint32_t (&a)[4], const uint8_t* codes, const uint8_t* scales, int pitch,
                                           int rl, int kb, int t) {
  a_fragment<kGemvOrder>(a, codes, pitch, rl, kb, t, scales[rl * 4 + kb], scales[(rl + 8) * 4 + kb]);
}
#endif

}  // namespace nvfp4::cuda::gemm_detail
