// sm90_nvfp4_bf16_gemv: out (N, OC) = x (N, C) bf16 · W (OC, C)ᵀ NVFP4, for N <= 64 tokens (the
// decode step), on the BF16 tensor cores (mma.sync m16n8k16, FP32 accumulators). Contract and
// numerics: include/nvfp4/cuda_gemm_nvfp4.hpp.
//
// Layout. A CTA is WK warps and covers 16 output rows: warp kw takes them over every WK-th step of
// 128 elements of C, starting at step kw.
//   codes   (OC, C/2) bytes, GEMV order; a thread reads 16 bytes (32 elements) of row g and of row
//           g + 8 per step, g = lane / 4, at column 32 t, t = lane % 4
//   scales  (OC, C/16) e4m3; the thread's 32 elements are 2 blocks: 2 bytes per row
//   x       (N, C) bf16; token n = 8 nt + g of n-tile nt, the thread's 32 columns
//   A tile  16 rows x 16 k of an mma: from each thread 4 consecutive elements of rows g and g + 8
//           (its k slots 2t, 2t+1, 2t+8, 2t+9 hold columns 32t + 8w + 4h + 0..3 of the step: the
//           k order inside an mma is a permutation of C that B's fragment follows the same way)
//   D       acc[nt][0..1]: row g, tokens 8nt + 2t, +1; acc[nt][2..3]: row g + 8, the same tokens
// Pipeline. A ring of P steps' codes and scales in registers (GemvConfig): the next P - 1 are
// in flight while one step computes; up to 16 tokens, x is loaded two steps ahead (two slots: a
// register copy of x between steps waited for its load, which ncu showed as the L1TEX stall that
// dominated), beyond that word by word (its registers would cost occupancy). A step: decode each
// word's 4 pairs (rotations and a mask: the BF16 bits of e2m1 × 2^-126, then one exact multiply
// by the block scale × 2^118: the weight × 2^-8, undone by the epilogue's factor × 2^8) -> 2 mmas
// per word and n-tile, into one of CH accumulator sets. Then the sets are added in order, the WK
// warps' sums in warp order through shared memory, and warp kw = 0 writes fma(sum, decode, bias).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <iterator>
#include <string>

#include "kernels/cuda/gemm/nvfp4_decode.cuh"
#include "kernels/cuda/ops_common.cuh"
#include "nvfp4/cuda_gemm_nvfp4.hpp"

namespace nvfp4::cuda {

using namespace ops_detail;
using namespace gemm_detail;

namespace gemm_detail {
std::atomic<int64_t> calls_gemv{0}, calls_gemm{0}, calls_gemm_nt{0};
}

namespace {

constexpr int kRowsPerTile = 16;  // the A tile of m16n8k16
constexpr int64_t kMaxC = int64_t{1} << 30;  // columns held in an int, with room for a step's rounding
constexpr int kStep = 128;        // columns of C a warp takes per step: 4 threads x 32
static_assert(kStep % 16 == 0, "NVFP4 scales cover 16 elements: a step holds whole blocks");
static_assert(kStep == 4 * 32, "a thread decodes 32 elements (16 bytes of codes) of each of its two rows per step");
// C % 32 == 0 (whole 16-byte pieces; the scales of a piece are 2 bytes, so 2-byte aligned).

// A kernel configuration: P steps of codes and scales in the register ring (10 registers a stage;
// the next P - 1 in flight while one computes), CH independent accumulator sets at one n-tile (word
// w of a step adds into set w % CH; summed in set order after the last step), and the threads
// every SM must hold (so at most 65536 / that registers a thread), and whether x is loaded two
// steps ahead in two register slots (2 x 16 NT registers; P even) or word by word as a step
// computes (x is the same for every CTA: mostly L1 hits).
// l2_fetch: the L2 prefetch size of the code loads (0: the default; 128 or 256: ld's
// .L2::128B / .L2::256B qualifier — a miss brings the row's next 64 or 192 bytes, which the warps
// of the following steps read, into L2 with the same request; no extra instruction).
// max_rows: the most tokens a variant runs (8: one n-tile; 16: also two).
struct GemvConfig {
  int stages, chains, threads_per_sm;
  bool x_ahead;
  int l2_fetch = 0;
  int max_rows = 8;
};
// The defaults by n-tile count. One n-tile (N <= 8, the decode step): a ring of 2, one accumulator
// set, 32 warps an SM (64 registers), x word by word, code loads with a 128-byte L2 prefetch size —
// the ring, chains and warps: of the configurations below, the fastest or within 3 % of it in 13 of
// the 14 cases of 7 shapes at 1 and 8 tokens (docs/perf.md, run 5); the L2::128B loads: 1.01-1.13x
// the loads without a prefetch size in all 14 (run 7). Two n-tiles (9-16 tokens): the same ring
// at 20 warps an SM (96 registers, x word by word) — with split_for's one-wave split, 1.06-1.37x
// the 16-warp ring with x ahead it replaced on the 7 shapes at 16 tokens (run 7). More n-tiles: 16
// warps an SM up to 32 tokens (128 registers), 8 for 64 (x's fragments and 32 accumulators would
// spill at 128); x word by word. More n-tiles are independent chains already.
template <int NT>
constexpr GemvConfig kGemvDefault = NT == 1   ? GemvConfig{2, 1, 1024, false, 128}
                                    : NT == 2 ? GemvConfig{2, 1, 640, false}
                                              : GemvConfig{2, 1, NT >= 8 ? 256 : 512, false};
// The one-n-tile alternatives bench_gemm_nvfp4 times beside the default (gemm_detail::
// nvfp4_gemv_variant): the deeper ring with 4 sets and x ahead (the default until run 5), two
// between the two, the default without an L2 prefetch size (the default until run 7) and with 256
// bytes, and for up to 16 tokens the 2-n-tile default until run 7 (16 warps an SM, x ahead).
// (At 4 n-tiles fewer than 128 registers spill.)
constexpr GemvConfig kGemvVariants[] = {kGemvDefault<1>,
                                        {4, 4, 512, true},
                                        {2, 2, 768, false},
                                        {4, 2, 640, false},
                                        {2, 1, 1024, false, 0},
                                        {2, 1, 1024, false, 256},
                                        {2, 1, 512, true, 0, 16}};

// 16 bytes of codes, read once: evict-first (as __ldcs), or not allocated in L1 with an L2 prefetch
// size (kL2Fetch 128 or 256 bytes).
template <int kL2Fetch>
__device__ __forceinline__ uint4 load_codes(const uint4* p) {
  if constexpr (kL2Fetch == 0) {
    return __ldcs(p);
  } else {
    static_assert(kL2Fetch == 128 || kL2Fetch == 256, "ld's L2 prefetch sizes are 64, 128 and 256 bytes");
    uint4 v;
    if constexpr (kL2Fetch == 128) {
      asm volatile("ld.global.nc.L1::no_allocate.L2::128B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                   : "l"(p));
    } else {
      asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                   : "l"(p));
    }
    return v;
  }
}

struct Stage {
  uint4 q0{}, q1{};          // codes of rows g and g + 8
  uint32_t sc0 = 0, sc1 = 0;  // their two block scales (low byte: the first 16 elements)
};

// One warp's step: codes q0 (row g), q1 (row g + 8), their block scales, and xw(nt, w): word w
// (8 columns) of x's 32 for the thread's token of n-tile nt, into acc.
template <int NT, int CH, class XWord>
__device__ __forceinline__ void gemv_step(float (&acc)[CH][NT][4], const uint4& q0, const uint4& q1, uint32_t sc0,
                                          uint32_t sc1, XWord&& xw) {
  const uint32_t w0[4] = {q0.x, q0.y, q0.z, q0.w}, w1[4] = {q1.x, q1.y, q1.z, q1.w};
  uint32_t s0[2], s1[2];
#pragma unroll
  for (int b = 0; b < 2; ++b) {
    s0[b] = e4m3_to_bf16x2((sc0 >> (8 * b)) & 0xFFu);
    s1[b] = e4m3_to_bf16x2((sc1 >> (8 * b)) & 0xFFu);
  }
#pragma unroll
  for (int w = 0; w < 4; ++w) {  // word w: elements 8w .. 8w + 7 of the thread's 32, block w / 2
    uint32_t a0[4], a1[4];        // pair j: elements 2j, 2j + 1 of the word
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      a0[j] = decode_pair(w0[w], j, s0[w >> 1]);
      a1[j] = decode_pair(w1[w], j, s1[w >> 1]);
    }
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      // k slots 2t, 2t+1 <- elements 0, 1 (b0) and 2t+8, 2t+9 <- elements 2, 3 (b1); then 4..7.
      const uint4 xv = xw(nt, w);
      float(&d)[4] = acc[w % CH][nt];
      mma_bf16(d, {a0[0], a1[0], a0[1], a1[1]}, xv.x, xv.y);
      mma_bf16(d, {a0[2], a1[2], a0[3], a1[3]}, xv.z, xv.w);
    }
  }
}

// Addressing: the thread's columns at its warp's i-th step are k = (kw + i WK) 128 + 32 t, so its
// codes, scales and x advance by constant strides from pointers set once (an index multiply and a
// 64-bit add a load, no per-load division of a 64-bit column); it has data at steps i < my_steps
// (the last step may be partial: C % 128 = 32, 64 or 96 — a thread past C reads nothing and adds
// zeros, code 0 being +0). C < 2^31 (checked by the entry).
template <int NT, int WK, bool kF32, int P, int CH, int TPS, bool kXAhead, int kL2Fetch>
__global__ void __launch_bounds__(32 * WK, TPS / (32 * WK))
    sm90_nvfp4_bf16_gemv_kernel(void* __restrict__ out, const uint16_t* __restrict__ x, const uint8_t* __restrict__ codes,
                                const uint8_t* __restrict__ scales, const float* __restrict__ decode,
                                const uint16_t* __restrict__ bias, const float* __restrict__ row_scale, int N, int C,
                                int64_t OC, int decode_stride) {
  static_assert(NT >= 1 && NT * 8 <= kNvfp4GemvMaxRows, "an n-tile is 8 tokens; at most kNvfp4GemvMaxRows of them");
  static_assert(32 * WK <= TPS, "an SM holds at least one CTA within the register budget");
  static_assert(!kXAhead || P % 2 == 0, "x's two slots follow the ring's steps: an even ring");
  static_assert(CH >= 1 && 4 % CH == 0, "a step's 4 words go round the accumulator sets evenly");
  constexpr int kStride = WK * kStep / 32;  // uint4 of codes, uint16 of scales, per warp step
  static_assert(kStride * 32 == WK * kStep && kStride == WK * kStep / 2 / 16 && kStride == WK * kStep / 16 / 2,
                "a warp step is WK x 128 columns: 64 WK code bytes (4 WK uint4), 8 WK scale bytes (4 WK uint16)");
  constexpr int kXStride = WK * kStep / 8;  // uint4 of x (8 BF16) per warp step
  __shared__ float partial[WK > 1 ? WK - 1 : 1][NT][4][32];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) & 31;
  const int kw = warp;
  const int g = lane >> 2, t = lane & 3;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRowsPerTile + g, row1 = row0 + 8;
  // Rows past OC read the last row (their sums are never stored).
  const int64_t r0 = row0 < OC ? row0 : OC - 1, r1 = row1 < OC ? row1 : OC - 1;
  const int first = kw * kStep + 32 * t;  // the thread's first column
  const int my_steps = first < C ? (C - first + WK * kStep - 1) / (WK * kStep) : 0;
  const int warp_steps = kw * kStep < C ? (C - kw * kStep + WK * kStep - 1) / (WK * kStep) : 0;
  const int64_t code_row = C / 2, scale_row = C / 16;
  const uint4* q0p = reinterpret_cast<const uint4*>(codes + r0 * code_row + first / 2);
  const uint4* q1p = reinterpret_cast<const uint4*>(codes + r1 * code_row + first / 2);
  const uint16_t* s0p = reinterpret_cast<const uint16_t*>(scales + r0 * scale_row + first / 16);
  const uint16_t* s1p = reinterpret_cast<const uint16_t*>(scales + r1 * scale_row + first / 16);
  // x's 32 columns at step i of the thread's token g of n-tile nt (zeros past N or C).
  const uint4* xp = reinterpret_cast<const uint4*>(x + static_cast<int64_t>(g) * C + first);
  const int64_t x_tile = static_cast<int64_t>(C);  // uint4 from token n to n + 8: 8 C BF16
  const auto x_word = [&](int i, int nt, int w) {  // word w (8 columns) of those, at step i
    return nt * 8 + g < N && i < my_steps ? __ldg(xp + nt * x_tile + static_cast<int64_t>(i) * kXStride + w)
                                          : uint4{0, 0, 0, 0};
  };
  const auto load_x = [&](uint4 (&xv)[NT][4], int i) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int w = 0; w < 4; ++w) xv[nt][w] = x_word(i, nt, w);
  };
  const auto load_w = [&](Stage& st, int i) {
    if (i < my_steps) {
      const int64_t o = static_cast<int64_t>(i) * kStride;
      st.q0 = load_codes<kL2Fetch>(q0p + o);
      st.q1 = load_codes<kL2Fetch>(q1p + o);
      st.sc0 = s0p[o];
      st.sc1 = s1p[o];
    } else {
      st.q0 = st.q1 = uint4{0, 0, 0, 0};
      st.sc0 = st.sc1 = 0;
    }
  };

  float chains[CH][NT][4];
#pragma unroll
  for (int c = 0; c < CH; ++c)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) chains[c][nt][0] = chains[c][nt][1] = chains[c][nt][2] = chains[c][nt][3] = 0.0f;

  // The weights depend on no kernel of the step: the ring's first codes load before the wait.
  Stage ring[P];
#pragma unroll
  for (int p = 0; p < P; ++p) load_w(ring[p], p);
  dependent_wait();
  dependent_trigger();
  // x two steps ahead in two slots (step i in slot i % 2; P is even, so p % 2 is i % 2): a slot is
  // reloaded only after its step computed — no register copy waits on a load in flight.
  uint4 xr[kXAhead ? 2 : 1][kXAhead ? NT : 1][4];
  if constexpr (kXAhead) {
    load_x(xr[0], 0);
    load_x(xr[1], 1);
  }
  for (int base = 0; base < warp_steps; base += P) {
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int i = base + p;
      if (i >= warp_steps) break;
      if constexpr (kXAhead) {
        gemv_step<NT, CH>(chains, ring[p].q0, ring[p].q1, ring[p].sc0, ring[p].sc1,
                          [&](int nt, int w) { return xr[p % 2][nt][w]; });
        load_x(xr[p % 2], i + 2);
      } else {
        gemv_step<NT, CH>(chains, ring[p].q0, ring[p].q1, ring[p].sc0, ring[p].sc1,
                          [&](int nt, int w) { return x_word(i, nt, w); });
      }
      load_w(ring[p], i + P);
    }
  }

  float acc[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      acc[nt][k] = chains[0][nt][k];
#pragma unroll
      for (int c = 1; c < CH; ++c) acc[nt][k] += chains[c][nt][k];
    }

  // The WK warps' sums, added in warp order (deterministic), then the epilogue by warp kw = 0.
  if constexpr (WK > 1) {
    if (kw > 0) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int k = 0; k < 4; ++k) partial[kw - 1][nt][k][lane] = acc[nt][k];
    }
    __syncthreads();
    if (kw > 0) return;
#pragma unroll
    for (int v = 0; v < WK - 1; ++v)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int k = 0; k < 4; ++k) acc[nt][k] += partial[v][nt][k][lane];
  }
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t row = k < 2 ? row0 : row1;
      const int n = nt * 8 + 2 * t + (k & 1);
      if (row >= OC || n >= N) continue;
      store_nvfp4_output<kF32>(out, static_cast<int64_t>(n) * OC + row, acc[nt][k], row_factor(decode, row, decode_stride),
                               row_scale, n, bias ? bf16_to_f32(bias[row]) : 0.0f);
    }
  }
}

template <int NT, int WK, int P, int CH, int TPS, bool kXAhead, int kL2Fetch>
void launch(void* out, bool f32, const uint16_t* x, const Nvfp4Weight& w, const uint16_t* bias, const float* row_scale,
            int64_t N, int64_t C, int64_t OC, Stream stream) {
  const auto kernel = f32 ? sm90_nvfp4_bf16_gemv_kernel<NT, WK, true, P, CH, TPS, kXAhead, kL2Fetch>
                          : sm90_nvfp4_bf16_gemv_kernel<NT, WK, false, P, CH, TPS, kXAhead, kL2Fetch>;
  const dim3 grid(static_cast<unsigned>((OC + kRowsPerTile - 1) / kRowsPerTile));
  launch_dependent(kernel, grid, dim3(32 * WK), 0, stream, out, x, w.codes, w.scales, w.decode, bias, row_scale,
                   static_cast<int>(N), static_cast<int>(C), OC, w.decode_per_row ? 1 : 0);
}

// Split 16 (a CTA of 512 threads) only at one n-tile (the variant entry, and nvfp4_gemv up to 8
// tokens).
template <int NT, int P, int CH, int TPS, bool XA, bool kSplit16, int L2F = 0>
void launch_split(int wk, void* out, bool f32, const uint16_t* x, const Nvfp4Weight& w, const uint16_t* bias,
                  const float* rs, int64_t N, int64_t C, int64_t OC, Stream stream) {
  switch (wk) {
    case 1: launch<NT, 1, P, CH, TPS, XA, L2F>(out, f32, x, w, bias, rs, N, C, OC, stream); break;
    case 2: launch<NT, 2, P, CH, TPS, XA, L2F>(out, f32, x, w, bias, rs, N, C, OC, stream); break;
    case 4: launch<NT, 4, P, CH, TPS, XA, L2F>(out, f32, x, w, bias, rs, N, C, OC, stream); break;
    case 8: launch<NT, 8, P, CH, TPS, XA, L2F>(out, f32, x, w, bias, rs, N, C, OC, stream); break;
    default:
      if constexpr (kSplit16) {
        static_assert(TPS >= 512, "split 16 is a CTA of 512 threads");
        launch<NT, 16, P, CH, TPS, XA, L2F>(out, f32, x, w, bias, rs, N, C, OC, stream);
      } else {
        require(false, "nvfp4_gemv", "split " + std::to_string(wk) + ": the kernel takes 1, 2, 4 or 8");
      }
  }
}

template <int NT>
void launch_default(int wk, void* out, bool f32, const uint16_t* x, const Nvfp4Weight& w, const uint16_t* bias,
                    const float* rs, int64_t N, int64_t C, int64_t OC, Stream stream) {
  constexpr GemvConfig c = kGemvDefault<NT>;
  launch_split<NT, c.stages, c.chains, c.threads_per_sm, c.x_ahead, NT == 1, c.l2_fetch>(wk, out, f32, x, w, bias, rs, N,
                                                                                         C, OC, stream);
}

// Warps along C per 16-row CTA. One n-tile (32 warps an SM): 8, or 16 for a long row (C >= 12288)
// over few CTAs (at most 2 an SM) — the best split or within 3 % of it on the 7 shapes at one token
// in run 5, within 11 % at 8 (8B and 70B gate/up: 2 or 4 was faster); never fewer than 2 steps a
// warp. Two n-tiles (20 warps an SM): the most (1, 2, 4, 8) whose warps all fit on the SMs at once
// — one wave; the best split of the 2-n-tile ring on all 7 shapes at 16 tokens in run 7. More
// n-tiles: the fewest that put about 32 warps on every SM, with at least 2 steps a warp. The table
// in docs/kernels.md records what each shape gets.
int split_for(int64_t C, int64_t OC, int64_t N) {
  const int64_t sms = sm_count();
  const int64_t ctas = (OC + kRowsPerTile - 1) / kRowsPerTile, steps = (C + kStep - 1) / kStep;
  if (N <= 8) {
    int wk = C >= 12288 && ctas <= 2 * sms ? 16 : 8;
    while (wk > 1 && 2 * wk > steps) wk /= 2;
    return wk;
  }
  if (N <= 16) {
    constexpr int64_t kWarpsPerSm = kGemvDefault<2>.threads_per_sm / 32;
    int wk = 1;
    while (wk < 8 && ctas * 2 * wk <= kWarpsPerSm * sms && 2 * wk <= steps) wk *= 2;
    return wk;
  }
  int wk = 1;
  while (wk < 8 && ctas * wk < 32 * sms && 2 * wk <= steps) wk *= 2;
  return wk;
}

// One 32-bit word of GEMV-order codes (8 elements of one row; C % 16 == 0 keeps a word inside one
// block) to 8 BF16 values e2m1 × block scale, in element order.
__global__ void decode_gemv_order_kernel(uint16_t* __restrict__ out, const uint8_t* __restrict__ codes,
                                         const uint8_t* __restrict__ scales, int64_t words) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < words;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint32_t w = reinterpret_cast<const uint32_t*>(codes)[i];
    const uint32_t s = e4m3_to_bf16x2(scales[i / 2]);  // 16 elements a block: 2 words
    uint32_t pairs[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) pairs[j] = bf16x2_mul(decode_pair(w, j, s), kBf16x2Unshift);  // w, not w × 2^-8
    reinterpret_cast<uint4*>(out)[i] = uint4{pairs[0], pairs[1], pairs[2], pairs[3]};
  }
}

// repack_nvfp4_codes_for_gemv (include/nvfp4/cuda_gemm_nvfp4.hpp), one word per thread, in place:
// bit i of the input word (element i / 4, code bit i % 4) goes to bit to[i] (gemv_bit, on the host).
struct GemvBits {
  uint8_t to[32];
};
__global__ void repack_gemv_order_kernel(uint32_t* __restrict__ codes, int64_t words, GemvBits bits) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < words;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint32_t in = codes[i];
    uint32_t out = 0;
#pragma unroll
    for (int b = 0; b < 32; ++b) out |= ((in >> b) & 1u) << bits.to[b];
    codes[i] = out;
  }
}

}  // namespace

bool nvfp4_gemv_supported(const uint16_t* x, const Nvfp4Weight& w, int64_t N, int64_t C) {
  return N >= 1 && N <= kNvfp4GemvMaxRows && C > 0 && C % 32 == 0 && C <= kMaxC && aligned16(x) && aligned16(w.codes) &&
         (reinterpret_cast<uintptr_t>(w.scales) & 1u) == 0;
}

void nvfp4_gemv(void* out, DType out_dtype, const uint16_t* x, const Nvfp4Weight& w, const uint16_t* bias, int64_t N,
                int64_t C, int64_t OC, Stream stream, const float* row_scale, int split) {
  constexpr const char* op = "nvfp4_gemv";
  require_nonnegative(op, {{"N", N}, {"C", C}, {"OC", OC}});
  require_bf16_or_f32_out(op, out_dtype);
  if (N == 0 || OC == 0) return;
  require_ptr(out, op, "out");
  require_ptr(x, op, "x");
  require_nvfp4_weight(op, w);
  require(nvfp4_gemv_supported(x, w, N, C), op,
          "N = " + std::to_string(N) + ", C = " + std::to_string(C) + ": needs 1 <= N <= " +
              std::to_string(kNvfp4GemvMaxRows) + ", C a positive multiple of 32 up to 2^30" +
              ", 16-byte aligned x and codes and 2-byte aligned scales (decode the weight and use Blas::gemm)");
  const bool f32 = out_dtype == DType::F32;
  require(split == 0 || split == 1 || split == 2 || split == 4 || split == 8 || (split == 16 && N <= 8), op,
          "split = " + std::to_string(split) + ": use 0 (the table's choice), 1, 2, 4 or 8 (16 up to 8 tokens)");
  const int wk = split ? split : split_for(C, OC, N);
  ++calls_gemv;
  if (N <= 8) launch_default<1>(wk, out, f32, x, w, bias, row_scale, N, C, OC, stream);
  else if (N <= 16) launch_default<2>(wk, out, f32, x, w, bias, row_scale, N, C, OC, stream);
  else if (N <= 32) launch_default<4>(wk, out, f32, x, w, bias, row_scale, N, C, OC, stream);
  else launch_default<8>(wk, out, f32, x, w, bias, row_scale, N, C, OC, stream);
  check_launch(op);
}

namespace gemm_detail {

int nvfp4_gemv_variants() { return static_cast<int>(std::size(kGemvVariants)); }

int nvfp4_gemv_variant_max_rows(int variant) { return kGemvVariants[variant].max_rows; }

std::string nvfp4_gemv_variant_name(int variant) {
  const GemvConfig& c = kGemvVariants[variant];
  return "ring " + std::to_string(c.stages) + ", chains " + std::to_string(c.chains) + ", " +
         std::to_string(c.threads_per_sm / 32) + " warps/SM, x " + (c.x_ahead ? "ahead" : "by word") +
         (c.l2_fetch ? ", L2::" + std::to_string(c.l2_fetch) + "B" : "");
}

void nvfp4_gemv_variant(int variant, int split, void* out, DType out_dtype, const uint16_t* x, const Nvfp4Weight& w,
                        const uint16_t* bias, int64_t N, int64_t C, int64_t OC, Stream stream, const float* row_scale) {
  constexpr const char* op = "nvfp4_gemv_variant";
  require(variant >= 0 && variant < nvfp4_gemv_variants(), op, "variant " + std::to_string(variant) + " is not one");
  require(split == 1 || split == 2 || split == 4 || split == 8 || split == 16, op,
          "split = " + std::to_string(split) + ": use 1, 2, 4, 8 or 16");
  require_bf16_or_f32_out(op, out_dtype);
  const int max_rows = kGemvVariants[variant].max_rows;
  require(N >= 1 && N <= max_rows && OC > 0, op,
          "variant " + std::to_string(variant) + " takes 1 <= N <= " + std::to_string(max_rows) + " and OC > 0");
  require_ptr(out, op, "out");
  require_nvfp4_weight(op, w);
  require(nvfp4_gemv_supported(x, w, N, C), op, "C = " + std::to_string(C) + ": as nvfp4_gemv");
  const bool f32 = out_dtype == DType::F32;
  const auto run_nt = [&]<int NT, int V>() {
    constexpr GemvConfig c = kGemvVariants[V];
    static_assert(NT * 8 <= c.max_rows, "a variant runs the n-tiles its max_rows allows");
    launch_split<NT, c.stages, c.chains, c.threads_per_sm, c.x_ahead, true, c.l2_fetch>(split, out, f32, x, w, bias,
                                                                                       row_scale, N, C, OC, stream);
  };
  const auto run = [&]<int V>() {
    constexpr int rows = kGemvVariants[V].max_rows;
    static_assert(rows == 8 || rows == 16, "variants take one or two n-tiles");
    if constexpr (rows >= 16) {
      if (N > 8) return run_nt.template operator()<2, V>();
    }
    run_nt.template operator()<1, V>();
  };
  static_assert(std::size(kGemvVariants) == 7, "one case a variant");
  switch (variant) {
    case 0: run.template operator()<0>(); break;
    case 1: run.template operator()<1>(); break;
    case 2: run.template operator()<2>(); break;
    case 3: run.template operator()<3>(); break;
    case 4: run.template operator()<4>(); break;
    case 5: run.template operator()<5>(); break;
    default: run.template operator()<6>(); break;
  }
  check_launch(op);
}

}  // namespace gemm_detail

Nvfp4Calls nvfp4_calls() {
  return {calls_gemv.load(), calls_gemm.load(), calls_gemm_nt.load()};
}

void nvfp4_decode_gemv_order(uint16_t* out, const Nvfp4Weight& w, int64_t OC, int64_t C, Stream stream) {
  constexpr const char* op = "nvfp4_decode_gemv_order";
  require_nonnegative(op, {{"OC", OC}, {"C", C}});
  require(C % 16 == 0, op, "C = " + std::to_string(C) + " is not a multiple of 16 (an NVFP4 block)");
  if (OC == 0 || C == 0) return;
  require_ptr(out, op, "out");
  require_ptr(w.codes, op, "codes");
  require_ptr(w.scales, op, "scales");
  const int64_t words = OC * C / 8;
  decode_gemv_order_kernel<<<grid_for(words), kThreads, 0, stream>>>(out, w.codes, w.scales, words);
  check_launch(op);
}

void repack_nvfp4_codes_for_gemv_device(uint8_t* codes, int64_t OC, int64_t C, Stream stream) {
  constexpr const char* op = "repack_nvfp4_codes_for_gemv_device";
  require_nonnegative(op, {{"OC", OC}, {"C", C}});
  require(C % 8 == 0, op, "C = " + std::to_string(C) + " is not a multiple of 8 (a 32-bit word of codes)");
  if (OC == 0 || C == 0) return;
  require_ptr(codes, op, "codes");
  require((reinterpret_cast<uintptr_t>(codes) & 3u) == 0, op, "codes are not 4-byte aligned");
  const int64_t words = OC * C / 8;
  GemvBits bits{};
  for (int b = 0; b < 32; ++b) bits.to[b] = static_cast<uint8_t>(gemv_bit(b / 4, b % 4));
  repack_gemv_order_kernel<<<grid_for(words), kThreads, 0, stream>>>(reinterpret_cast<uint32_t*>(codes), words, bits);
  check_launch(op);
}

}  // namespace nvfp4::cuda
