// Fused NVFP4 GEMV / skinny GEMM for Hopper (issue 17): the decode step's W4A16 matmul, reading
// the 4-bit weights once instead of decoding them to BF16 first.
//
//   out (N, OC) = x (N, C) bf16 · W (OC, C)ᵀ · decode  (· row_scale (N), + bias (OC) bf16; both nullable)
//
// row_scale is W4A4's: x then holds each token's NVFP4-quantized values (nvfp4_quantize_rows, BF16,
// exact) and row_scale their decode factors.
// W is NVFP4: codes (OC, C) logical, (OC, C/2) bytes; block scales (OC, C/16) E4M3, row-major
// (the ModelOpt / compressed-tensors layout); one FP32 decode factor (amax / 2688) on the device.
// The codes are in the GEMV order (repack_nvfp4_codes_for_gemv below, done once when a model
// loads; unpack_nvfp4_codes_from_gemv undoes it). Every weight e2m1 × scale is exact in BF16 and
// each product with x is exact, so the result is decode-then-GEMM's up to the order of the FP32
// additions (the tensor cores' within each 16-element step, then one step after another along C,
// then the warps of a block in a fixed order: deterministic, independent of the SM count), then
// out = fma(sum, decode, bias) — with row_scale fma(sum × decode, row_scale[n], bias) — rounded
// once to BF16 (or stored as F32).
//
// Plain C++ (no CUDA headers), as include/nvfp4/cuda_ops.hpp. Implemented in
// src/kernels/cuda/gemm/ (sm90_nvfp4_bf16_gemv.cu, sm90_nvfp4_bf16_gemm.cu, sm90_nvfp4_gemm_ws.cu); tested in
// tests/cuda/test_gemm_nvfp4_cuda.cu.
#pragma once

#include <cstdint>
#include <cstring>

#include "nvfp4/cuda_ops.hpp"

namespace nvfp4::cuda {

// An NVFP4 weight on the device, as the fused kernels read it.
struct Nvfp4Weight {
  const uint8_t* codes = nullptr;   // (OC, C) logical; (OC, C/2) bytes, GEMV order
  const uint8_t* scales = nullptr;  // (OC, C/16) E4M3, row-major
  const float* decode = nullptr;    // [1] FP32: the tensor's decode factor (amax / 2688), or [OC]:
  bool decode_per_row = false;      // one per row — tensors stacked by rows (q|k|v, gate|up) in one call
};

// The fused GEMV takes up to this many rows (tokens); more go to the prefill GEMM.
inline constexpr int64_t kNvfp4GemvMaxRows = 64;

// C % 32 == 0 (a thread's 16 bytes of codes), 1 <= N <= kNvfp4GemvMaxRows, x and the codes
// 16-byte aligned, the scales 2-byte aligned.
bool nvfp4_gemv_supported(const uint16_t* x, const Nvfp4Weight& w, int64_t N, int64_t C);

// out (N, OC) BF16 or F32, OVERWRITTEN. Throws nvfp4::Error naming the op for shapes it does not
// take (see nvfp4_gemv_supported) or null pointers.
// split: warps along C per 16-row block, 1, 2, 4 or 8 (or 16, up to 8 tokens); 0 (the default)
// lets the kernel choose (its table in docs/kernels.md) — bench_gemm_nvfp4 measures the others.
void nvfp4_gemv(void* out, DType out_dtype, const uint16_t* x, const Nvfp4Weight& w, const uint16_t* bias, int64_t N,
                int64_t C, int64_t OC, Stream stream, const float* row_scale = nullptr, int split = 0);

// The same product for any number of tokens (prefill): C % 64 == 0, x and the codes 16-byte
// aligned, the scales 4-byte aligned; the same numerics as nvfp4_gemv (a different order of the
// FP32 additions: the tensor cores' within each 16 columns, then the 16-column blocks in order).
// src/kernels/cuda/gemm/sm90_nvfp4_bf16_gemm.cu (wgmma_ws: sm90_nvfp4_gemm_ws.cu).
// kernel: wgmma (warpgroup MMA, tiles of 128 rows x 128 tokens, the default), wgmma_wide (128 x 256
// tokens: each decoded weight fragment feeds twice the products), mma_sync (warp MMA) or split_k
// (128 rows x 64 tokens, C split over a thread-block cluster of up to 8 CTAs whose partial sums
// are added in rank order: for a few tokens, where the GEMV re-reads x for every 16 rows; the sum
// order is then the tensor cores' within 16 columns, the columns in order within a split, the
// splits in order), or wgmma_ws (wgmma_wide's tile and sums, warp-specialized: a producer warp
// feeds the stages by TMA and cp.async through mbarriers, the two consumer warpgroups only decode
// and multiply) — all kept to be measured side by side (bench_gemm_nvfp4) and tested.
enum class Nvfp4GemmKernel { wgmma, wgmma_wide, mma_sync, split_k, wgmma_ws };
bool nvfp4_gemm_supported(const uint16_t* x, const Nvfp4Weight& w, int64_t M, int64_t C);
void nvfp4_gemm(void* out, DType out_dtype, const uint16_t* x, const Nvfp4Weight& w, const uint16_t* bias, int64_t M,
                int64_t C, int64_t OC, Stream stream, const float* row_scale = nullptr,
                Nvfp4GemmKernel kernel = Nvfp4GemmKernel::wgmma);

// W4A4 with both operands NVFP4, as the training recipe quantizes them (checkpoint nibble order,
// 1x16 or 16x16 blocks with their scales (rows, K/16) row-major, not swizzled; the per-tensor
// factors folded into alpha, a device float):
//   out (M, N) BF16 or F32 = alpha · a (M, K) · b (N, K)ᵀ   (+= with accumulate)
// — Blas::gemm's convention. Each product of decoded values is exact in FP32; the sum's order is
// the tensor cores' within each 16 columns, then the columns in order; out = sum × alpha (+ out)
// rounded once per operation. K % 64 == 0, codes 16-byte and scales 4-byte aligned.
// kernel: wgmma (the default: every thread copies, decodes a's tile and multiplies, a block
// barrier per stage) or wgmma_ws (the same sums, warp-specialized: a producer warp (TMA, cp.async),
// a decoder warpgroup writing a's BF16 tiles ahead, two consumer warpgroups; mbarriers).
enum class Nvfp4GemmNtKernel { wgmma, wgmma_ws };
struct Nvfp4Operand {
  const uint8_t* codes = nullptr;   // (rows, K) logical; (rows, K/2) bytes, checkpoint order
  const uint8_t* scales = nullptr;  // (rows, K/16) E4M3
};
bool nvfp4_gemm_nt_supported(const Nvfp4Operand& a, const Nvfp4Operand& b, int64_t K);
void nvfp4_gemm_nt(void* out, DType out_dtype, const Nvfp4Operand& a, const Nvfp4Operand& b, int64_t M, int64_t N,
                   int64_t K, const float* alpha, bool accumulate, Stream stream,
                   Nvfp4GemmNtKernel kernel = Nvfp4GemmNtKernel::wgmma);

// Host calls of the fused entries since the process started, for the
// tests and benchmarks that check which route a caller took: a call recorded into a CUDA graph
// counts once, when it is captured; replays run no host code.
struct Nvfp4Calls {
  int64_t gemv = 0, gemm = 0, gemm_nt = 0;
};
Nvfp4Calls nvfp4_calls();

// The same weight decoded, in BF16 without the tensor factor: out (OC, C) = e2m1 × block scale
// (exact) — what a GEMM that does not read NVFP4 takes (the prefill path until the fused GEMM).
void nvfp4_decode_gemv_order(uint16_t* out, const Nvfp4Weight& w, int64_t OC, int64_t C, Stream stream);

// repack_nvfp4_codes_for_gemv on the device, in place: codes (OC, C/2) bytes, C % 8 == 0,
// 4-byte aligned.
void repack_nvfp4_codes_for_gemv_device(uint8_t* codes, int64_t OC, int64_t C, Stream stream);

// ---- the GEMV order of the codes (host) -------------------------------------------------------
// Checkpoint order: byte b holds elements 2b (low nibble) and 2b + 1 (high nibble), so a 32-bit
// little-endian word holds elements 0..7 of its 8 in nibbles 0..7. GEMV order: the 32 bits of each
// word permuted so that every pair of elements 2j, 2j + 1 comes out of the word as the BF16 pair
// the tensor cores take (e2m1 × 2^-126 in each half: magnitude bits e1 e0 m at BF16 bits 8 7 6,
// the sign at bit 15; src/kernels/cuda/gemm/nvfp4_decode.cuh) with a rotation or two and a mask:
//
//   pair j = (rotr(word, kGemvMagRot[j]) & 0x01C001C0) | (rotr(word, kGemvSignRot[j]) & 0x80008000)
//
// 11 integer instructions for a word's four pairs (pairs 1 and 2 rotate once: one mask of both
// fields), where nibbles in order took 16. No rotation set puts both fields in place with one
// rotation for every pair; this one (a search over all rotation sets) is the cheapest. Words never
// straddle rows (C % 8 == 0), so the permutation is per word and undone by
// unpack_nvfp4_codes_from_gemv.
inline constexpr int kGemvMagRot[4] = {0, 3, 6, 9};
inline constexpr int kGemvSignRot[4] = {4, 3, 6, 5};

// The GEMV-order word bit that holds bit b (0: m, 1: e0, 2: e1, 3: the sign) of element e (0..7).
constexpr int gemv_bit(int e, int b) {
  const int j = e / 2, h = e % 2;
  return b < 3 ? (6 + b + 16 * h + kGemvMagRot[j]) % 32 : (15 + 16 * h + kGemvSignRot[j]) % 32;
}

constexpr bool gemv_bits_are_a_permutation() {
  bool seen[32] = {};
  for (int e = 0; e < 8; ++e)
    for (int b = 0; b < 4; ++b) {
      if (seen[gemv_bit(e, b)]) return false;
      seen[gemv_bit(e, b)] = true;
    }
  return true;
}
static_assert(gemv_bits_are_a_permutation(), "the GEMV order must place the 32 code bits of a word on 32 distinct bits");

namespace gemv_detail {
// Per byte of the input word, the bits it contributes to the output word: repack (checkpoint ->
// GEMV) or unpack (GEMV -> checkpoint). Four lookups and three ORs a word.
struct ByteMaps {
  uint32_t map[4][256];
  explicit ByteMaps(bool to_gemv) : map{} {
    for (int k = 0; k < 4; ++k)
      for (uint32_t v = 0; v < 256; ++v)
        for (int bit = 0; bit < 8; ++bit) {
          if (!((v >> bit) & 1u)) continue;
          const int in = 8 * k + bit;  // the input word's bit
          int out = -1;
          for (int e = 0; e < 8 && out < 0; ++e)
            for (int b = 0; b < 4; ++b) {
              if (to_gemv && in == 4 * e + b) out = gemv_bit(e, b);
              if (!to_gemv && in == gemv_bit(e, b)) out = 4 * e + b;
            }
          map[k][v] |= 1u << out;
        }
  }
  uint32_t operator()(uint32_t w) const {
    return map[0][w & 255u] | map[1][(w >> 8) & 255u] | map[2][(w >> 16) & 255u] | map[3][w >> 24];
  }
};
inline void permute_words(uint8_t* dst, const uint8_t* src, int64_t OC, int64_t C, bool to_gemv) {
  static const ByteMaps repack(true), unpack(false);
  const ByteMaps& m = to_gemv ? repack : unpack;
  const int64_t words = OC * C / 8;
  for (int64_t i = 0; i < words; ++i) {
    uint32_t w = 0;
    std::memcpy(&w, src + 4 * i, 4);
    w = m(w);
    std::memcpy(dst + 4 * i, &w, 4);
  }
}
}  // namespace gemv_detail

// dst, src: (OC, C/2) bytes each (C % 8 == 0); dst may not alias src.
inline void repack_nvfp4_codes_for_gemv(uint8_t* dst, const uint8_t* src, int64_t OC, int64_t C) {
  gemv_detail::permute_words(dst, src, OC, C, true);
}

inline void unpack_nvfp4_codes_from_gemv(uint8_t* dst, const uint8_t* src, int64_t OC, int64_t C) {
  gemv_detail::permute_words(dst, src, OC, C, false);
}

}  // namespace nvfp4::cuda
