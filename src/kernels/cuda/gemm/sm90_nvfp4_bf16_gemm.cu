// sm90_nvfp4_bf16_gemm: out (M, OC) = x (M, C) bf16 · W (OC, C)ᵀ NVFP4 for any number of tokens
// (prefill), on the BF16 tensor cores, FP32 accumulators: three variants, all cp.async stages with
// the weights decoded in registers — mma.sync m16n8k16 with B by ldmatrix, and wgmma m64n128k16
// (the default) or m64n256k16 (wgmma_wide) with B read from swizzled shared memory; their
// warp-specialized TMA versions (wgmma_ws) are in sm90_nvfp4_gemm_ws.cu, the shared wgmma and
// mbarrier primitives in sm90_wgmma.cuh.
// Contract and numerics: include/nvfp4/cuda_gemm_nvfp4.hpp (nvfp4_gemm).
//
// Layout (GemmLayout): one CTA = 128 weight rows x 128 tokens, 8 warps as 4 (rows) x 2 (tokens),
// a warp 32 rows x 64 tokens = 2 x 8 mma tiles; C in stages of 64 (4 NVFP4 blocks), kStages deep.
//   codes   (128, 32 bytes) a stage, rows kCodePitch = 48 bytes apart (the 8 rows one load
//           instruction reads fall in distinct banks)
//   scales  (128, 4) e4m3 a stage
//   x       (128 tokens, 64) bf16 a stage, 128-byte rows whose 16-byte pieces are XOR-swizzled by
//           the row's low 3 bits (ldmatrix's 8 row addresses hit 8 distinct bank groups)
// Roles: every thread copies its share of the next stage (cp.async: 4 pieces of x, 1 of codes, 4
// bytes of scales); then each warp, per 16-column block: decodes its A fragments from the codes —
// thread t takes pair t of the block's two GEMV-order words (elements 2t, 2t+1 and 2t+8, 2t+9,
// exactly m16n8k16's A layout) times the block scale — loads B with ldmatrix and runs 16 mmas.
// Epilogue: fma(sum, decode, bias) (W4A4: fma(sum × decode, row_scale, bias)) rounded once.
#include <cuda_runtime.h>

#include <cooperative_groups.h>

#include <algorithm>
#include <string>

#include "kernels/cuda/gemm/nvfp4_decode.cuh"
#include "kernels/cuda/gemm/sm90_wgmma.cuh"
#include "kernels/cuda/ops_common.cuh"
#include "nvfp4/cuda_gemm_nvfp4.hpp"

namespace nvfp4::cuda {

using namespace ops_detail;
using namespace gemm_detail;

namespace {

// A 128-row NVFP4 tile's share of one stage (64 columns from k0) for thread tid of 256: its
// codes (2 pieces of 16 bytes a row, rows `pitch` bytes apart) and scales (4 bytes a row); rows
// past `rows` read the last one (their results are never stored).
__device__ __forceinline__ void copy_nvfp4_stage(uint8_t* code_dst, int pitch, uint8_t* scale_dst, const uint8_t* codes,
                                                 const uint8_t* scales, int64_t row0, int64_t rows, int64_t K,
                                                 int64_t k0, int tid) {
  const int r = tid / 2, c = tid % 2;
  const int64_t o = row0 + r < rows ? row0 + r : rows - 1;
  cp_async16(smem_addr(code_dst + r * pitch + c * 16), codes + o * (K / 2) + k0 / 2 + c * 16);
  if (c == 0) cp_async4(smem_addr(scale_dst + r * 4), scales + o * (K / 16) + k0 / 16);
}

// A kTok-token BF16 tile's share of one stage (64 columns from k0) for thread tid of 256: 8 pieces
// of 16 bytes a row, XOR-swizzled by the row's low 3 bits (ldmatrix's conflict-free order and
// wgmma's 128-byte swizzle mode alike).
template <int kTok = 128>
__device__ __forceinline__ void copy_bf16_stage(uint8_t* dst, const uint16_t* x, int64_t row0, int64_t rows, int64_t K,
                                                int64_t k0, int tid) {
  static_assert(kTok * 8 % 256 == 0, "whole pieces for each of 256 threads");
#pragma unroll
  for (int i = 0; i < kTok * 8 / 256; ++i) {
    const int idx = tid + i * 256, r = idx / 8, c = idx % 8;
    const int64_t m = row0 + r < rows ? row0 + r : rows - 1;
    cp_async16(smem_addr(dst + r * 128 + ((c ^ (r & 7)) * 16)), x + m * K + k0 + c * 8);
  }
}

struct GemmLayout {
  static constexpr int kRows = 128, kTokens = 128, kK = 64, kStages = 3;
  static constexpr int kWarpRows = 32, kWarpTokens = 64;
  static constexpr int kWarps = (kRows / kWarpRows) * (kTokens / kWarpTokens);
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kCodePitch = 48;  // bytes a code row takes in shared memory (32 used)
  static constexpr int kCodeBytes = kRows * kCodePitch;
  static constexpr int kScaleBytes = kRows * (kK / 16);
  static constexpr int kXBytes = kTokens * kK * 2;
  static constexpr int kStageBytes = kCodeBytes + kScaleBytes + kXBytes;
  static constexpr int kSmem = kStages * kStageBytes;
  static_assert(kK % 16 == 0, "NVFP4 scales cover 16 elements: a stage holds whole blocks");
  static_assert(kK * 2 == 128, "an x row of a stage is 8 pieces of 16 bytes: the swizzle's 3 bits");
  static_assert(kCodePitch % 16 == 0 && kCodePitch >= kK / 2, "cp.async writes 16-byte pieces of a code row");
  static_assert(kWarps == 8 && kTokens * kK * 2 / 16 == 4 * kThreads, "each thread copies 4 pieces of x a stage");
  static_assert(kRows * (kK / 2) / 16 == kThreads, "each thread copies 1 piece of codes a stage");
  static_assert(kCodeBytes % 16 == 0 && kScaleBytes % 16 == 0, "x stays 16-byte aligned in a stage");
};

// The mma.sync kernels' main loop (the 128 x 128 tile and split-K): kStages cp.async stages laid
// out as L has them (codes, scales, x), load_stage(buffer, s) issuing stage s's copies of this
// thread; per 16 columns each warp decodes the A fragments of its RT row tiles (rows warp_rows +
// 16 rt + g, + 8) and multiplies them by 8 n-tiles of x from warp_tokens on (ldmatrix). Returns
// with every copy landed and acc holding the warp's sums over the `steps` stages.
template <class L, int RT, class LoadStage>
__device__ __forceinline__ void mma_sync_mainloop(float (&acc)[RT][8][4], const uint8_t* smem, LoadStage&& load_stage,
                                                  int64_t steps, int warp_rows, int warp_tokens, int lane) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int rt = 0; rt < RT; ++rt)
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) acc[rt][nt][0] = acc[rt][nt][1] = acc[rt][nt][2] = acc[rt][nt][3] = 0.0f;
#pragma unroll
  for (int s = 0; s < L::kStages - 1; ++s) {
    if (s < steps) load_stage(s, s);
    cp_async_commit();
  }
  for (int64_t s = 0; s < steps; ++s) {
    cp_async_wait<L::kStages - 2>();
    __syncthreads();  // stage s landed for every thread; every warp is done with stage s - 1
    if (s + L::kStages - 1 < steps) load_stage(static_cast<int>((s + L::kStages - 1) % L::kStages), s + L::kStages - 1);
    cp_async_commit();

    const uint8_t* base = smem + (s % L::kStages) * L::kStageBytes;
    const uint8_t* cs = base;
    const uint8_t* ss = base + L::kCodeBytes;
    const uint8_t* xs = base + L::kCodeBytes + L::kScaleBytes;
#pragma unroll
    for (int kb = 0; kb < L::kK / 16; ++kb) {
      uint32_t a[RT][4];
#pragma unroll
      for (int rt = 0; rt < RT; ++rt) a_fragment<true>(a[rt], cs, ss, L::kCodePitch, warp_rows + rt * 16 + g, kb, t);
#pragma unroll
      for (int i = 0; i < 4; ++i) {  // token tiles 2i and 2i + 1
        const int q = lane >> 3, r = lane & 7;
        const int token = warp_tokens + (2 * i + (q >> 1)) * 8 + r, piece = kb * 2 + (q & 1);
        uint32_t b[4];
        ldsm_x4(b, smem_addr(xs + token * 128 + ((piece ^ (token & 7)) * 16)));
#pragma unroll
        for (int rt = 0; rt < RT; ++rt) {
          mma_bf16(acc[rt][2 * i], a[rt], b[0], b[1]);
          mma_bf16(acc[rt][2 * i + 1], a[rt], b[2], b[3]);
        }
      }
    }
  }
  cp_async_wait_all();
}

template <bool kF32>
__global__ void __launch_bounds__(GemmLayout::kThreads) sm90_nvfp4_bf16_gemm_kernel(
    void* __restrict__ out, const uint16_t* __restrict__ x, const uint8_t* __restrict__ codes,
    const uint8_t* __restrict__ scales, const float* __restrict__ decode, const uint16_t* __restrict__ bias,
    const float* __restrict__ row_scale, int64_t M, int64_t C, int64_t OC, int decode_stride) {
  using L = GemmLayout;
  extern __shared__ __align__(16) uint8_t smem[];
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int warp_rows = (warp % (L::kRows / L::kWarpRows)) * L::kWarpRows;
  const int warp_tokens = (warp / (L::kRows / L::kWarpRows)) * L::kWarpTokens;
  const int64_t o0 = static_cast<int64_t>(blockIdx.x) * L::kRows, m0 = static_cast<int64_t>(blockIdx.y) * L::kTokens;
  const int64_t steps = C / L::kK;

  // ---- producer: stage s's share of this thread (rows past OC or M read the last one) ----
  const auto load_stage = [&](int buf, int64_t s) {
    uint8_t* base = smem + buf * L::kStageBytes;
    copy_nvfp4_stage(base, L::kCodePitch, base + L::kCodeBytes, codes, scales, o0, OC, C, s * L::kK, tid);
    copy_bf16_stage(base + L::kCodeBytes + L::kScaleBytes, x, m0, M, C, s * L::kK, tid);
  };

  float acc[2][8][4];
  dependent_wait();
  dependent_trigger();
  mma_sync_mainloop<L>(acc, smem, load_stage, steps, warp_rows, warp_tokens, lane);

  // ---- epilogue ----
#pragma unroll
  for (int rt = 0; rt < 2; ++rt) {
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t row = o0 + warp_rows + rt * 16 + g + (i >= 2 ? 8 : 0);
        const int64_t m = m0 + warp_tokens + nt * 8 + 2 * t + (i & 1);
        if (row >= OC || m >= M) continue;
        store_nvfp4_output<kF32>(out, m * OC + row, acc[rt][nt][i], row_factor(decode, row, decode_stride), row_scale,
                                 m, bias ? bf16_to_f32(bias[row]) : 0.0f);
      }
    }
  }
}

// One stage's 64 columns for a warpgroup: per 16 columns, this warp's A fragment (rows rl, rl + 8)
// decoded into registers a (double-buffered, kept by the caller across stages: before a buffer is
// rewritten, every wgmma but the last one issued is waited for, so the one two blocks back that
// read it is done) and one m64n128k16 against the 128-row K-major BF16 tile at x_addr. kDrain: all
// of them complete on return (the tile and the codes may then be overwritten); otherwise the last
// two may still run — the caller keeps the stage's buffers until the next stage's second block.
template <bool kGemvOrder, bool kDrain, int kAcc>
__device__ __forceinline__ void wgmma_stage(float (&acc)[kAcc], uint32_t (&a)[2][4], const uint8_t* codes,
                                            const uint8_t* scales, int pitch, uint32_t x_addr, int rl, int t) {
#pragma unroll
  for (int kb = 0; kb < 4; ++kb) {
    if (kb >= 2 || !kDrain) wgmma_wait<1>();  // the wgmma that read a[kb % 2] two blocks back is done
    a_fragment<kGemvOrder>(a[kb % 2], codes, scales, pitch, rl, kb, t);
    wgmma_fence();
    wgmma_rs(acc, a[kb % 2], sw128_kmajor_desc(x_addr + kb * 32));
    wgmma_commit();
  }
  if constexpr (kDrain) wgmma_wait<0>();
}

// The wgmma variants: 128 weight rows x kN tokens (128, or 256: wgmma_wide), stages of 64, as two
// warpgroups, each 64 rows x all kN tokens with one wgmma m64nNk16 per 16 columns: A (the weights)
// decoded into registers by each warp for its 16 rows, exactly as the mma.sync kernel does; B (x)
// read by the tensor cores from shared memory through a descriptor. The kernel is bound by the
// instructions it issues (ncu: about 82 a warp per m64n128k16, IPC 1.96, the tensor pipe half idle
// at 4096 tokens, docs/kernels.md): 256 tokens decode each A fragment once for twice the products. Stage
// layout: x first (1024-byte aligned: the swizzle's atom), then the codes, then the scales.
template <int kN>
struct WgmmaLayout {
  // kStages buffers, loads kAhead stages ahead: the buffer a load rewrites held stage s - 2, whose
  // wgmmas are done (wgmma_stage without drain leaves only stage s - 1's last ones running).
  static constexpr int kRows = 128, kTokens = kN, kK = 64, kStages = 4, kAhead = 2, kThreads = 256;
  static_assert(kAhead + 2 == kStages, "a stage's buffers stay untouched until two stages later");
  static_assert(kN == 128 || kN == 256, "wgmma m64n128k16 or m64n256k16: a warpgroup takes every token of the tile");
  static constexpr int kXBytes = kTokens * kK * 2;
  static constexpr int kCodePitch = 48;
  static constexpr int kCodeBytes = kRows * kCodePitch;
  static constexpr int kScaleBytes = 1024;  // 128 x 4 used
  static constexpr int kStageBytes = kXBytes + kCodeBytes + kScaleBytes;
  static constexpr int kSmem = kStages * kStageBytes + 1024;  // + the alignment of the first stage
  static_assert(kXBytes % 1024 == 0 && kStageBytes % 1024 == 0, "every stage's x starts on a 1024-byte swizzle atom");
  static_assert(kK * 2 == 128, "an x row is one 128-byte swizzle row");
  static_assert(kRows == 2 * 64 && kThreads == 2 * 128, "two warpgroups of 64 rows");
  static_assert(kSmem <= 227 * 1024, "a CTA's shared memory on Hopper");
};

template <int kN, bool kF32>
__global__ void __launch_bounds__(WgmmaLayout<kN>::kThreads, kN == 128 ? 2 : 1) sm90_nvfp4_bf16_gemm_wgmma_kernel(
    void* __restrict__ out, const uint16_t* __restrict__ x, const uint8_t* __restrict__ codes,
    const uint8_t* __restrict__ scales, const float* __restrict__ decode, const uint16_t* __restrict__ bias,
    const float* __restrict__ row_scale, int64_t M, int64_t C, int64_t OC, int decode_stride) {
  using L = WgmmaLayout<kN>;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023u)) & 1023u);
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int wg_rows = (warp / 4) * 64 + (warp % 4) * 16;  // this warp's 16 rows of the CTA's 128
  const int64_t o0 = static_cast<int64_t>(blockIdx.x) * L::kRows, m0 = static_cast<int64_t>(blockIdx.y) * L::kTokens;
  const int64_t steps = C / L::kK;

  const auto load_stage = [&](int buf, int64_t s) {
    uint8_t* base = smem + buf * L::kStageBytes;
#pragma unroll
    for (int h = 0; h < kN / 128; ++h) copy_bf16_stage(base + h * 128 * 128, x, m0 + h * 128, M, C, s * L::kK, tid);
    copy_nvfp4_stage(base + L::kXBytes, L::kCodePitch, base + L::kXBytes + L::kCodeBytes, codes, scales, o0, OC, C,
                     s * L::kK, tid);
  };

  float acc[kN / 2];
#pragma unroll
  for (int i = 0; i < kN / 2; ++i) acc[i] = 0.0f;
  uint32_t a[2][4];

  dependent_wait();
  dependent_trigger();
#pragma unroll
  for (int s = 0; s < L::kAhead; ++s) {
    if (s < steps) load_stage(s, s);
    cp_async_commit();
  }
  for (int64_t s = 0; s < steps; ++s) {
    cp_async_wait<L::kAhead - 1>();
    fence_proxy_async_shared();
    __syncthreads();  // stage s landed; every warpgroup is past stage s - 1's second block (stage s - 2 done)
    if (s + L::kAhead < steps) load_stage(static_cast<int>((s + L::kAhead) % L::kStages), s + L::kAhead);
    cp_async_commit();

    const uint8_t* base = smem + (s % L::kStages) * L::kStageBytes;
    const uint8_t* cs = base + L::kXBytes;
    const uint8_t* ss = base + L::kXBytes + L::kCodeBytes;
    wgmma_stage<true, false>(acc, a, cs, ss, L::kCodePitch, smem_addr(base), wg_rows + g, t);
  }
  wgmma_wait<0>();
  cp_async_wait_all();

  store_w4a16_tile<kF32>(out, acc, decode, decode_stride, row_scale, bias, o0 + wg_rows, m0, M, OC, g, t);
}

// W4A4 with both operands NVFP4 in checkpoint order (the training recipe's quantized copies):
// out (M, N) (+)= alpha · a (M, K) · b (N, K)ᵀ. The wgmma kernel's tile and roles, b in the place of
// the weights (decoded into registers, byte t and byte 4 + t of a block for thread t) and a in the
// place of x: its codes and scales land by cp.async in a staging area, then every thread decodes
// 16 bytes of one row (two blocks) into the swizzled BF16 tile wgmma reads, fenced for the async
// proxy. One BF16 tile: a stage's wgmmas finish before the next stage is decoded over it.
struct NtLayout {
  static constexpr int kRows = 128, kTokens = 128, kK = 64, kStages = 3, kThreads = 256;
  static constexpr int kTile = kTokens * kK * 2;  // the BF16 tile of a (1024-byte aligned)
  static constexpr int kCodePitch = 48;
  static constexpr int kCodeBytes = kRows * kCodePitch;  // per operand
  static constexpr int kScaleBytes = 512;                // per operand, 128 x 4
  static constexpr int kStageBytes = 2 * (kCodeBytes + kScaleBytes);
  static constexpr int kSmem = kTile + kStages * kStageBytes + 1024;
  static_assert(kTile % 1024 == 0, "the stages start after the BF16 tile, 16-byte aligned");
  static_assert(kTokens * kK / 32 == kThreads, "each thread decodes 32 elements (16 code bytes) of a a stage");
};

template <bool kF32, bool kAccumulate>
__global__ void __launch_bounds__(NtLayout::kThreads) sm90_nvfp4_nvfp4_gemm_nt_kernel(
    void* __restrict__ out, const uint8_t* __restrict__ a_codes, const uint8_t* __restrict__ a_scales,
    const uint8_t* __restrict__ b_codes, const uint8_t* __restrict__ b_scales, const float* __restrict__ alpha,
    int64_t M, int64_t N, int64_t K) {
  using L = NtLayout;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023u)) & 1023u);
  uint8_t* tile = smem;                 // a's BF16 tile (128 rows x 64), 128-byte swizzle
  uint8_t* stages = smem + L::kTile;    // per stage: b codes, b scales, a codes, a scales
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int wg_rows = (warp / 4) * 64 + (warp % 4) * 16;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * L::kRows, m0 = static_cast<int64_t>(blockIdx.y) * L::kTokens;
  const int64_t steps = K / L::kK;

  const auto load_stage = [&](int buf, int64_t s) {
    uint8_t* base = stages + buf * L::kStageBytes;
    uint8_t* ab = base + L::kCodeBytes + L::kScaleBytes;
    copy_nvfp4_stage(base, L::kCodePitch, base + L::kCodeBytes, b_codes, b_scales, n0, N, K, s * L::kK, tid);
    copy_nvfp4_stage(ab, L::kCodePitch, ab + L::kCodeBytes, a_codes, a_scales, m0, M, K, s * L::kK, tid);
  };

  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;

  dependent_wait();
  dependent_trigger();
#pragma unroll
  for (int s = 0; s < L::kStages - 1; ++s) {
    if (s < steps) load_stage(s, s);
    cp_async_commit();
  }
  for (int64_t s = 0; s < steps; ++s) {
    cp_async_wait<L::kStages - 2>();
    __syncthreads();  // stage s landed; the previous stage's wgmmas are done (waited below)
    if (s + L::kStages - 1 < steps) load_stage(static_cast<int>((s + L::kStages - 1) % L::kStages), s + L::kStages - 1);
    cp_async_commit();

    const uint8_t* base = stages + (s % L::kStages) * L::kStageBytes;
    const uint8_t* bcs = base;
    const uint8_t* bss = base + L::kCodeBytes;
    const uint8_t* acs = base + L::kCodeBytes + L::kScaleBytes;
    const uint8_t* ass = acs + L::kCodeBytes;
    decode_tile_half(tile, acs, *reinterpret_cast<const uint32_t*>(ass + (tid / 2) * 4), L::kCodePitch, tid / 2, tid % 2);
    fence_proxy_async_shared();
    __syncthreads();  // the tile is written and visible to wgmma

    uint32_t a[2][4];
    wgmma_stage<false, true>(acc, a, bcs, bss, L::kCodePitch, smem_addr(tile), wg_rows + g, t);
  }
  cp_async_wait_all();

  store_nt_tile<kF32, kAccumulate>(out, acc, unshifted_factor<2>(alpha), n0 + wg_rows, m0, M, N, g, t);
}

// The split-K variant for a few tokens (nvfp4_gemm's split_k; the GEMV's 17-64-token case is what
// it is for): a CTA is 128 weight rows x 64 tokens over a share of C, 8 warps of 16 rows each
// taking all 64 tokens (8 n-tiles: every decoded A fragment feeds 8 mmas), the mma.sync kernel's
// stages (cp.async codes, scales and swizzled x; A decoded from shared memory, B by ldmatrix).
// Where the row tiles are fewer than the SMs, `splits` CTAs (a thread-block cluster, 2-8) take
// consecutive shares of C for the same tile: each leaves its FP32 partial sums in its shared
// memory, and after a cluster barrier every CTA adds one slice of the tile's outputs across the
// cluster's CTAs in rank order (distributed shared memory: deterministic, no workspace), then
// writes the epilogue. x is read once per row tile (not per 16 rows, as in the GEMV, whose x
// traffic from L2 bounds it at 64 tokens: docs/kernels.md).
struct SplitKLayout {
  static constexpr int kRows = 128, kTokens = 64, kK = 64, kStages = 4, kThreads = 256, kMaxSplits = 8;
  static constexpr int kCodePitch = 48;
  static constexpr int kCodeBytes = kRows * kCodePitch;
  static constexpr int kScaleBytes = kRows * (kK / 16);
  static constexpr int kXBytes = kTokens * kK * 2;
  static constexpr int kStageBytes = kCodeBytes + kScaleBytes + kXBytes;
  static constexpr int kPartialBytes = kRows * kTokens * 4;
  static constexpr int kSmem = std::max(kStages * kStageBytes, kPartialBytes);
  static_assert(kRows == 16 * (kThreads / 32), "8 warps of 16 rows");
  static_assert(kCodeBytes % 16 == 0 && kScaleBytes % 16 == 0, "x stays 16-byte aligned in a stage");
  static_assert(kTokens == 64 && kK * 2 == 128, "x stages: 64 rows of 128 bytes (copy_bf16_stage<64>)");
};

template <bool kF32>
__global__ void __launch_bounds__(SplitKLayout::kThreads) sm90_nvfp4_bf16_gemm_split_k_kernel(
    void* __restrict__ out, const uint16_t* __restrict__ x, const uint8_t* __restrict__ codes,
    const uint8_t* __restrict__ scales, const float* __restrict__ decode, const uint16_t* __restrict__ bias,
    const float* __restrict__ row_scale, int64_t M, int64_t C, int64_t OC, int splits, int decode_stride) {
  using L = SplitKLayout;
  namespace cg = cooperative_groups;
  extern __shared__ __align__(16) uint8_t smem[];
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int split = static_cast<int>(blockIdx.x);  // the CTA's rank in its cluster (cluster dims splits x 1 x 1)
  const int64_t o0 = static_cast<int64_t>(blockIdx.y) * L::kRows, m0 = static_cast<int64_t>(blockIdx.z) * L::kTokens;
  const int64_t all_steps = C / L::kK;
  const int64_t s_begin = all_steps * split / splits, s_end = all_steps * (split + 1) / splits;
  const int64_t steps = s_end - s_begin;

  const auto load_stage = [&](int buf, int64_t s) {  // s: this CTA's s-th stage
    uint8_t* base = smem + buf * L::kStageBytes;
    const int64_t k0 = (s_begin + s) * L::kK;
    copy_nvfp4_stage(base, L::kCodePitch, base + L::kCodeBytes, codes, scales, o0, OC, C, k0, tid);
    copy_bf16_stage<L::kTokens>(base + L::kCodeBytes + L::kScaleBytes, x, m0, M, C, k0, tid);
  };

  float acc[1][8][4];  // one row tile of 16 a warp, all 64 tokens
  dependent_wait();
  dependent_trigger();
  mma_sync_mainloop<L>(acc, smem, load_stage, steps, warp * 16, 0, lane);
  __syncthreads();  // every warp is done with the stages: the partial sums take their place

  // Partial sums, token-major: part[token * 128 + row] (a row's 64 tokens 512 bytes apart).
  float* part = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int nt = 0; nt < 8; ++nt)
#pragma unroll
    for (int i = 0; i < 4; ++i)
      part[(nt * 8 + 2 * t + (i & 1)) * L::kRows + warp * 16 + g + (i >= 2 ? 8 : 0)] = acc[0][nt][i];
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();  // every CTA's partials written and visible to the cluster
  constexpr int kOutputs = L::kRows * L::kTokens;
  const int first = kOutputs * split / splits, last = kOutputs * (split + 1) / splits;
  for (int idx = first + tid; idx < last; idx += L::kThreads) {
    const int64_t row = o0 + idx % L::kRows, m = m0 + idx / L::kRows;
    float sum = cluster.map_shared_rank(part, 0)[idx];
    for (int r = 1; r < splits; ++r) sum += cluster.map_shared_rank(part, r)[idx];
    if (row < OC && m < M)
      store_nvfp4_output<kF32>(out, m * OC + row, sum, row_factor(decode, row, decode_stride), row_scale, m,
                               bias ? bf16_to_f32(bias[row]) : 0.0f);
  }
  cluster.sync();  // no CTA leaves (freeing its shared memory) while another still reads it
}

// Splits of C per 128-row tile: the fewest (1, 2, 4, 8) that give every SM a CTA, with at least
// 8 stages of 64 columns a split.
int split_k_for(int64_t tiles, int64_t C) {
  const int64_t sms = sm_count(), steps = C / SplitKLayout::kK;
  int splits = 1;
  while (splits < SplitKLayout::kMaxSplits && tiles * splits < sms && steps >= 8 * splits) splits *= 2;
  return splits;
}

template <int kN>
void launch_wgmma(bool f32, dim3 grid, void* out, const uint16_t* x, const Nvfp4Weight& w, const uint16_t* bias,
                  const float* row_scale, int64_t M, int64_t C, int64_t OC, Stream stream) {
  using W = WgmmaLayout<kN>;
  const auto kernel = f32 ? sm90_nvfp4_bf16_gemm_wgmma_kernel<kN, true> : sm90_nvfp4_bf16_gemm_wgmma_kernel<kN, false>;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, W::kSmem), "cudaFuncSetAttribute");
  launch_dependent(kernel, grid, dim3(W::kThreads), W::kSmem, stream, out, x, w.codes, w.scales, w.decode, bias,
                   row_scale, M, C, OC, w.decode_per_row ? 1 : 0);
}

}  // namespace

bool nvfp4_gemm_supported(const uint16_t* x, const Nvfp4Weight& w, int64_t M, int64_t C) {
  return M >= 1 && C > 0 && C % GemmLayout::kK == 0 && aligned16(x) && aligned16(w.codes) &&
         (reinterpret_cast<uintptr_t>(w.scales) & 3u) == 0;
}

void nvfp4_gemm(void* out, DType out_dtype, const uint16_t* x, const Nvfp4Weight& w, const uint16_t* bias, int64_t M,
                int64_t C, int64_t OC, Stream stream, const float* row_scale, Nvfp4GemmKernel kernel_choice) {
  constexpr const char* op = "nvfp4_gemm";
  using L = GemmLayout;
  require_nonnegative(op, {{"M", M}, {"C", C}, {"OC", OC}});
  require_bf16_or_f32_out(op, out_dtype);
  if (M == 0 || OC == 0) return;
  require_ptr(out, op, "out");
  require_ptr(x, op, "x");
  require_nvfp4_weight(op, w);
  require(nvfp4_gemm_supported(x, w, M, C), op,
          "C = " + std::to_string(C) + ": needs C a positive multiple of " + std::to_string(L::kK) +
              ", 16-byte aligned x and codes and 4-byte aligned scales (decode the weight and use Blas::gemm)");
  const auto grid_for_tokens = [&](int64_t tile) {  // every kernel: 128 weight rows a CTA
    const int64_t row_tiles = (OC + L::kRows - 1) / L::kRows, token_tiles = (M + tile - 1) / tile;
    require(token_tiles <= 65535, op,
            "M = " + std::to_string(M) + " is more tokens than one launch takes (65535 x " + std::to_string(tile) + ")");
    return dim3(static_cast<unsigned>(row_tiles), static_cast<unsigned>(token_tiles));
  };
  const bool f32 = out_dtype == DType::F32;
  ++calls_gemm;
  if (kernel_choice == Nvfp4GemmKernel::mma_sync) {
    const dim3 grid = grid_for_tokens(L::kTokens);
    const auto kernel = f32 ? sm90_nvfp4_bf16_gemm_kernel<true> : sm90_nvfp4_bf16_gemm_kernel<false>;
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kSmem), "cudaFuncSetAttribute");
    launch_dependent(kernel, grid, dim3(L::kThreads), L::kSmem, stream, out, x, w.codes, w.scales, w.decode, bias,
                     row_scale, M, C, OC, w.decode_per_row ? 1 : 0);
  } else if (kernel_choice == Nvfp4GemmKernel::split_k) {
    using S = SplitKLayout;
    const dim3 tiles = grid_for_tokens(S::kTokens);  // (row tiles, token tiles)
    const int splits = split_k_for(int64_t(tiles.x) * tiles.y, C);
    const auto kernel = f32 ? sm90_nvfp4_bf16_gemm_split_k_kernel<true> : sm90_nvfp4_bf16_gemm_split_k_kernel<false>;
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, S::kSmem), "cudaFuncSetAttribute");
    launch_dependent_cluster(kernel, dim3(static_cast<unsigned>(splits), tiles.x, tiles.y), dim3(S::kThreads), S::kSmem,
                             stream, static_cast<unsigned>(splits), out, x, w.codes, w.scales, w.decode, bias, row_scale,
                             M, C, OC, splits, w.decode_per_row ? 1 : 0);
  } else if (kernel_choice == Nvfp4GemmKernel::wgmma_ws) {
    launch_nvfp4_gemm_ws(f32, grid_for_tokens(kWsTokens), out, x, w, bias, row_scale, M, C, OC, stream);
  } else if (kernel_choice == Nvfp4GemmKernel::wgmma_wide) {
    launch_wgmma<256>(f32, grid_for_tokens(256), out, x, w, bias, row_scale, M, C, OC, stream);
  } else {
    launch_wgmma<128>(f32, grid_for_tokens(128), out, x, w, bias, row_scale, M, C, OC, stream);
  }
  check_launch(op);
}

bool nvfp4_gemm_nt_supported(const Nvfp4Operand& a, const Nvfp4Operand& b, int64_t K) {
  const auto ok = [](const Nvfp4Operand& o) {
    return aligned16(o.codes) && (reinterpret_cast<uintptr_t>(o.scales) & 3u) == 0;
  };
  return K > 0 && K % NtLayout::kK == 0 && ok(a) && ok(b);
}

void nvfp4_gemm_nt(void* out, DType out_dtype, const Nvfp4Operand& a, const Nvfp4Operand& b, int64_t M, int64_t N,
                   int64_t K, const float* alpha, bool accumulate, Stream stream, Nvfp4GemmNtKernel kernel_choice) {
  constexpr const char* op = "nvfp4_gemm_nt";
  using L = NtLayout;
  require_nonnegative(op, {{"M", M}, {"N", N}, {"K", K}});
  require_bf16_or_f32_out(op, out_dtype);
  if (M == 0 || N == 0) return;
  require_ptr(out, op, "out");
  require_ptr(a.codes, op, "a codes");
  require_ptr(a.scales, op, "a scales");
  require_ptr(b.codes, op, "b codes");
  require_ptr(b.scales, op, "b scales");
  require_ptr(alpha, op, "alpha");
  require(nvfp4_gemm_nt_supported(a, b, K), op,
          "K = " + std::to_string(K) + ": needs K a positive multiple of " + std::to_string(L::kK) +
              ", 16-byte aligned codes and 4-byte aligned scales (decode the operands and use Blas::gemm)");
  const int64_t n_tiles = (N + L::kRows - 1) / L::kRows, m_tiles = (M + L::kTokens - 1) / L::kTokens;
  require(m_tiles <= 65535, op, "M = " + std::to_string(M) + " is more rows than one launch takes (65535 x 128)");
  const dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(m_tiles));
  const bool f32 = out_dtype == DType::F32;
  if (kernel_choice == Nvfp4GemmNtKernel::wgmma_ws) {
    static_assert(L::kRows == 128 && L::kTokens == 128, "the warp-specialized kernel takes the same grid");
    ++calls_gemm_nt;
    launch_nvfp4_gemm_nt_ws(f32, accumulate, grid, out, a, b, alpha, M, N, K, stream);
    check_launch(op);
    return;
  }
  const auto kernel = f32 ? (accumulate ? sm90_nvfp4_nvfp4_gemm_nt_kernel<true, true> : sm90_nvfp4_nvfp4_gemm_nt_kernel<true, false>)
                          : (accumulate ? sm90_nvfp4_nvfp4_gemm_nt_kernel<false, true> : sm90_nvfp4_nvfp4_gemm_nt_kernel<false, false>);
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kSmem), "cudaFuncSetAttribute");
  ++calls_gemm_nt;
  launch_dependent(kernel, grid, dim3(L::kThreads), L::kSmem, stream, out, a.codes, a.scales, b.codes, b.scales, alpha,
                   M, N, K);
  check_launch(op);
}

}  // namespace nvfp4::cuda
