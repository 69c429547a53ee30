// sm90_nvfp4_bf16_gemm: out (M, OC) = x (M, C) bf16 · W (OC, C)ᵀ NVFP4 for any number of tokens
// (prefill), on the BF16 tensor cores, FP32 accumulators: three variants, all cp.async stages with
// the weights decoded in registers — mma.sync m16n8k16 with B by ldmatrix, and wgmma m64n128k16
// (the default) or m64n256k16 (wgmma_wide) with B read from swizzled shared memory; TMA and
// warp-specialized producers are the next step.
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
#include <cuda.h>  // CUtensorMap (the TMA descriptors); the encoder comes from the runtime's entry point
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cooperative_groups.h>

#include <algorithm>
#include <string>

#include "kernels/cuda/gemm/nvfp4_decode.cuh"
#include "kernels/cuda/ops_common.cuh"
#include "nvfp4/cuda_gemm_nvfp4.hpp"

// wgmma exists only in the arch-specific target (sm_90a); the portable PTX (compute_90) the build
// also embeds gets a trap in its place — an H100 or H200 always runs the sm_90a code.
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define NVFP4_WGMMA 1
#else
#define NVFP4_WGMMA 0
#endif

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

// d (64 x N, fp32; a warp's 16 rows as mma_bf16's D, column blocks of 8 in d[4j .. 4j + 3]) +=
// a (64 x 16 bf16 in registers: each warp its 16 rows, mma_bf16's A layout) · b (16 x N, K-major
// in shared memory, 128-byte swizzle; desc_b): wgmma m64nNk16, N = 128 or 256 (the size of d
// picks it). Asynchronous: wgmma_fence() before (after writing a or d), wgmma_commit() after,
// wgmma_wait<N>() before reading d or rewriting a.
__device__ __forceinline__ void wgmma_rs(float (&d)[64], const uint32_t (&a)[4], uint64_t desc_b) {
#if NVFP4_WGMMA
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(1));
#else
  __trap();
#endif
}

__device__ __forceinline__ void wgmma_rs(float (&d)[128], const uint32_t (&a)[4], uint64_t desc_b) {
#if NVFP4_WGMMA
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %133, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
      "}, {%128, %129, %130, %131}, %132, p, 1, 1, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
        "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
        "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(1));
#else
  __trap();
#endif
}

__device__ __forceinline__ void wgmma_fence() {
#if NVFP4_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if NVFP4_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#if NVFP4_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// Writes by cp.async (the generic proxy) made visible to wgmma's reads (the async proxy).
__device__ __forceinline__ void fence_proxy_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// A K-major operand of 128-byte rows in shared memory, 128-byte swizzle, 8-row groups 1024 bytes
// apart (the layout the x stages have): start address, LBO 1 (unused when swizzled), SBO 1024.
__device__ __forceinline__ uint64_t sw128_kmajor_desc(uint32_t smem_byte_addr) {
  return static_cast<uint64_t>((smem_byte_addr & 0x3FFFFu) >> 4) | (uint64_t{1} << 16) | (uint64_t{1024 >> 4} << 32) |
         (uint64_t{1} << 62);
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

#pragma unroll
  for (int j = 0; j < kN / 8; ++j) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t row = o0 + wg_rows + g + (i >= 2 ? 8 : 0);
      const int64_t m = m0 + 8 * j + 2 * t + (i & 1);
      if (row >= OC || m >= M) continue;
      store_nvfp4_output<kF32>(out, m * OC + row, acc[4 * j + i], row_factor(decode, row, decode_stride), row_scale, m,
                               bias ? bf16_to_f32(bias[row]) : 0.0f);
    }
  }
}

// ---- the warp-specialized wgmma kernel (`wgmma_ws`) --------------------------------------------
// Layout (WsLayout): the wide tile, 128 weight rows x 256 tokens, C in stages of 64, kStages deep;
// shared memory holds every stage's x tile first (32 KB each, 1024-byte aligned: the 128-byte
// swizzle's atom), then their codes (128 rows x 32 bytes), their scales (128 x 4), the barriers.
// Roles: warps 0-7 are two consumer warpgroups, each 64 rows x all 256 tokens as in the wgmma
// kernel (per 16 columns: its A fragment decoded into registers, one m64n256k16 reading x through a
// descriptor, wgmmas in flight across stages); warp 8 is the producer: lane 0 issues the stage's
// TMA copies of x (256 tokens x 64 BF16 with the 128-byte swizzle, the layout the descriptor
// reads; tokens past M arrive as zeros) and of the codes (rows past OC: zeros), and every lane copies
// 4 rows' scales by cp.async (rows past OC read the last row). full[s]: 33 arrivals (lane 0's with
// the TMA byte count, and each lane's cp.async completion) — the stage landed; empty[s]: one
// arrival per consumer warp once the wgmmas that read the stage are done — it can be refilled.
// No block-wide barrier in the main loop: the copies run up to kStages - 1 stages ahead of the
// tensor cores, and no consumer thread computes a copy address.
struct WsLayout {
  static constexpr int kRows = 128, kTokens = 256, kK = 64, kStages = 5;
  static constexpr int kConsumerWarps = 8, kThreads = 32 * kConsumerWarps + 32;
  static constexpr int kXBytes = kTokens * kK * 2;     // a stage's x tile
  static constexpr int kCodeBytes = kRows * kK / 2;    // rows of 32 bytes (the TMA box's rows)
  static constexpr int kCodePitch = kK / 2;
  static constexpr int kScaleBytes = kRows * kK / 16;  // rows of 4 bytes
  static constexpr int kCodesAt = kStages * kXBytes, kScalesAt = kCodesAt + kStages * kCodeBytes;
  static constexpr int kBarriersAt = kScalesAt + kStages * kScaleBytes;
  static constexpr int kSmem = kBarriersAt + 2 * kStages * 8 + 1024;  // + the first tile's alignment
  static constexpr int kFullArrivals = 1 + 32, kEmptyArrivals = kConsumerWarps;
  static_assert(kXBytes % 1024 == 0, "every stage's x tile starts on a 1024-byte swizzle atom");
  static_assert(kK * 2 == 128, "an x row of a stage is one 128-byte swizzle row (the TMA box's inner size)");
  static_assert(kCodeBytes % 128 == 0 && kCodesAt % 128 == 0, "TMA writes the codes 128-byte aligned");
  static_assert(kBarriersAt % 8 == 0, "mbarriers are 8-byte aligned");
  static_assert(kRows == 4 * 32 && kScaleBytes == kRows * 4, "each producer lane copies the scales of 4 rows");
  static_assert(kSmem <= 227 * 1024, "a CTA's shared memory on Hopper");
};

__device__ __forceinline__ void mbar_init(uint64_t* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}
// One arrival that also expects `bytes` of asynchronous (TMA) transactions in this phase.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}
// One arrival once this thread's earlier cp.async copies have landed.
__device__ __forceinline__ void mbar_arrive_after_cp_async(uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}
// Waits until the phase of parity `parity` has completed (a fresh barrier: parity 1 at once).
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
  }
}
// A 2-D TMA copy of the box at (c0 inner, c1 outer) of `map` into dst, completing on `bar`.
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, int c0, int c1, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(smem_addr(bar))
      : "memory");
}

template <bool kF32>
__global__ void __launch_bounds__(WsLayout::kThreads, 1) sm90_nvfp4_bf16_gemm_ws_kernel(
    void* __restrict__ out, const __grid_constant__ CUtensorMap x_map, const __grid_constant__ CUtensorMap code_map,
    const uint8_t* __restrict__ scales, const float* __restrict__ decode, const uint16_t* __restrict__ bias,
    const float* __restrict__ row_scale, int64_t M, int64_t C, int64_t OC, int decode_stride) {
  using L = WsLayout;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023u)) & 1023u);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + L::kBarriersAt);
  uint64_t* empty = full + L::kStages;
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int64_t o0 = static_cast<int64_t>(blockIdx.x) * L::kRows, m0 = static_cast<int64_t>(blockIdx.y) * L::kTokens;
  const int64_t steps = C / L::kK;

  if (tid == 0) {
    for (int s = 0; s < L::kStages; ++s) {
      mbar_init(&full[s], L::kFullArrivals);
      mbar_init(&empty[s], L::kEmptyArrivals);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  dependent_wait();
  dependent_trigger();

  if (warp == L::kConsumerWarps) {  // ---- producer ----
    const int64_t scale_row = C / 16;
    for (int64_t i = 0; i < steps; ++i) {
      const int s = static_cast<int>(i % L::kStages);
      mbar_wait(&empty[s], static_cast<uint32_t>((i / L::kStages) & 1) ^ 1u);
      if (lane == 0) {
        mbar_arrive_expect_tx(&full[s], L::kXBytes + L::kCodeBytes);
        tma_load_2d(smem + s * L::kXBytes, &x_map, static_cast<int>(i * L::kK), static_cast<int>(m0), &full[s]);
        tma_load_2d(smem + L::kCodesAt + s * L::kCodeBytes, &code_map, static_cast<int>(i * L::kK / 2),
                    static_cast<int>(o0), &full[s]);
      }
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int r = lane + 32 * q;
        const int64_t o = o0 + r < OC ? o0 + r : OC - 1;
        cp_async4(smem_addr(smem + L::kScalesAt + s * L::kScaleBytes + r * 4), scales + o * scale_row + i * (L::kK / 16));
      }
      mbar_arrive_after_cp_async(&full[s]);
    }
    cp_async_wait_all();
    return;
  }

  // ---- consumers: warpgroup warp / 4, its warp's 16 rows of the CTA's 128 ----
  const int wg_rows = (warp / 4) * 64 + (warp % 4) * 16;
  float acc[L::kTokens / 2];
#pragma unroll
  for (int i = 0; i < L::kTokens / 2; ++i) acc[i] = 0.0f;
  uint32_t a[2][4];
  for (int64_t i = 0; i < steps; ++i) {
    const int s = static_cast<int>(i % L::kStages);
    mbar_wait(&full[s], static_cast<uint32_t>((i / L::kStages) & 1));
    const uint8_t* cs = smem + L::kCodesAt + s * L::kCodeBytes;
    const uint8_t* ss = smem + L::kScalesAt + s * L::kScaleBytes;
    const uint32_t x_addr = smem_addr(smem + s * L::kXBytes);
#pragma unroll
    for (int kb = 0; kb < L::kK / 16; ++kb) {
      // The wgmma that read a[kb % 2] two blocks back is done (unconditionally: with fewer in
      // flight it returns at once, and ptxas serializes the wgmmas if it cannot see the wait on
      // every path); from kb = 1 on, so is every wgmma of the previous stage.
      wgmma_wait<1>();
      a_fragment<true>(a[kb % 2], cs, ss, L::kCodePitch, wg_rows + g, kb, t);
      wgmma_fence();
      wgmma_rs(acc, a[kb % 2], sw128_kmajor_desc(x_addr + kb * 32));
      wgmma_commit();
    }
    // Each warp frees the previous stage for the producer (after the stage's wgmmas are issued:
    // an arrive between them makes ptxas serialize the wgmmas, warning C7513).
    if (i > 0 && lane == 0) mbar_arrive(&empty[(i - 1) % L::kStages]);
  }
  wgmma_wait<0>();

#pragma unroll
  for (int j = 0; j < L::kTokens / 8; ++j) {
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t row = o0 + wg_rows + g + (q >= 2 ? 8 : 0);
      const int64_t m = m0 + 8 * j + 2 * t + (q & 1);
      if (row >= OC || m >= M) continue;
      store_nvfp4_output<kF32>(out, m * OC + row, acc[4 * j + q], row_factor(decode, row, decode_stride), row_scale, m,
                               bias ? bf16_to_f32(bias[row]) : 0.0f);
    }
  }
}

// A 2-D tensor map over a row-major (outer, inner) array of `type`, rows `row_bytes` apart, read in
// boxes of box_outer x box_inner elements.
CUtensorMap tensor_map_2d(CUtensorMapDataType type, const void* base, uint64_t inner, uint64_t outer,
                          uint64_t row_bytes, uint32_t box_inner, uint32_t box_outer, CUtensorMapSwizzle swizzle) {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    check(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found),
          "cudaGetDriverEntryPointByVersion");
    require(found == cudaDriverEntryPointSuccess && fn != nullptr, "nvfp4_gemm",
            "the CUDA driver has no cuTensorMapEncodeTiled (TMA needs a CUDA 12 driver or newer)");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  CUtensorMap map{};
  const cuuint64_t dims[2] = {inner, outer}, strides[1] = {row_bytes};
  const cuuint32_t box[2] = {box_inner, box_outer}, elem[2] = {1, 1};
  const CUresult r = encode(&map, type, 2, const_cast<void*>(base), dims, strides, box, elem,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  require(r == CUDA_SUCCESS, "nvfp4_gemm", "cuTensorMapEncodeTiled failed (error " + std::to_string(int(r)) + ")");
  return map;
}

// The TMA map of an NVFP4 operand's codes, (rows, K/2) bytes, in boxes of 128 rows x one 64-column
// stage (32 bytes; both warp-specialized kernels' stages).
CUtensorMap code_tensor_map(const uint8_t* codes, int64_t rows, int64_t K) {
  static_assert(WsLayout::kK == 64 && WsLayout::kRows == 128, "the W4A16 kernel's code box");
  return tensor_map_2d(CU_TENSOR_MAP_DATA_TYPE_UINT8, codes, static_cast<uint64_t>(K / 2), static_cast<uint64_t>(rows),
                       static_cast<uint64_t>(K / 2), 32, 128, CU_TENSOR_MAP_SWIZZLE_NONE);
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

// Row r's 16 code bytes at columns 32h .. 32h + 31 of a stage (checkpoint order, rows `pitch`
// apart, scales 4 bytes a row) into the stage's BF16 tile: 128-byte rows, 16-byte pieces
// XOR-swizzled by r % 8 (the layout wgmma's 128-byte swizzle mode reads).
__device__ __forceinline__ void decode_tile_half(uint8_t* tile, const uint8_t* codes, const uint8_t* scales, int pitch,
                                                 int r, int h) {
  const uint4 q = *reinterpret_cast<const uint4*>(codes + r * pitch + h * 16);
  const uint32_t words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
  for (int w = 0; w < 4; ++w) {  // word w: 8 elements, one 16-byte piece of the tile
    const uint32_t sc = e4m3_to_bf16x2(scales[r * 4 + 2 * h + w / 2]);
    uint4 v;
    v.x = decode_byte_pair(words[w], sc);
    v.y = decode_byte_pair(words[w] >> 8, sc);
    v.z = decode_byte_pair(words[w] >> 16, sc);
    v.w = decode_byte_pair(words[w] >> 24, sc);
    const int piece = 4 * h + w;
    *reinterpret_cast<uint4*>(tile + r * 128 + ((piece ^ (r & 7)) * 16)) = v;
  }
}

// The W4A4 epilogue of a consumer warp's 16 rows of n (acc of m64n128k16: 128 tokens of m):
// out = alpha-factor × sum (+ out), rounded once.
template <bool kF32, bool kAccumulate>
__device__ __forceinline__ void store_nt_tile(void* out, const float (&acc)[64], float f, int64_t n_base, int64_t m0,
                                              int64_t M, int64_t N, int g, int t) {
#pragma unroll
  for (int j = 0; j < 16; ++j) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t n = n_base + g + (i >= 2 ? 8 : 0);
      const int64_t m = m0 + 8 * j + 2 * t + (i & 1);
      if (n >= N || m >= M) continue;
      float y = __fmul_rn(acc[4 * j + i], f);
      if constexpr (kF32) {
        float* o = static_cast<float*>(out) + m * N + n;
        if constexpr (kAccumulate) y = __fadd_rn(*o, y);
        *o = y;
      } else {
        uint16_t* o = static_cast<uint16_t*>(out) + m * N + n;
        if constexpr (kAccumulate) y = __fadd_rn(bf16_to_f32(*o), y);
        *o = f32_to_bf16(y);
      }
    }
  }
}

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
    decode_tile_half(tile, acs, ass, L::kCodePitch, tid / 2, tid % 2);
    fence_proxy_async_shared();
    __syncthreads();  // the tile is written and visible to wgmma

    uint32_t a[2][4];
    wgmma_stage<false, true>(acc, a, bcs, bss, L::kCodePitch, smem_addr(tile), wg_rows + g, t);
  }
  cp_async_wait_all();

  store_nt_tile<kF32, kAccumulate>(out, acc, unshifted_factor<2>(alpha), n0 + wg_rows, m0, M, N, g, t);
}

// W4A4 warp-specialized (nvfp4_gemm_nt's wgmma_ws; the sums of the kernel above, the same bits):
// NtWsLayout. Roles: warps 0-7, two consumer warpgroups of 64 rows of b x 128 tokens of a (b
// decoded into registers, one m64n128k16 per 16 columns reading a's BF16 tile); warps 8-11, the
// decoder warpgroup: each thread decodes one row of a's stage codes into a BF16 tile (3 tiles
// deep), fenced for the async proxy; warp 12, the producer: lane 0 copies both operands' stage
// codes by TMA (128 rows x 32 bytes each), its 32 lanes both scales by cp.async. Barriers, per code
// stage: full (33: the TMA bytes and 32 cp.async arrivals), empty (12: each consumer and decoder
// warp once done with it); per tile: ready (4 decoder warps), free (8 consumer warps, once the
// wgmmas that read it are done). The consumers never wait on a decode of the stage they compute.
struct NtWsLayout {
  static constexpr int kRows = 128, kTokens = 128, kK = 64, kStages = 5, kTiles = 3;
  static constexpr int kConsumerWarps = 8, kDecoderWarps = 4, kThreads = 32 * (kConsumerWarps + kDecoderWarps + 1);
  static constexpr int kTile = kTokens * kK * 2;       // a's BF16 tile, 1024-byte aligned
  static constexpr int kCodeBytes = kRows * kK / 2;    // per operand and stage: rows of 32 bytes
  static constexpr int kCodePitch = kK / 2;
  static constexpr int kScaleBytes = kRows * kK / 16;  // per operand and stage: rows of 4 bytes
  static constexpr int kStageBytes = 2 * kCodeBytes + 2 * kScaleBytes;  // b codes, a codes, b scales, a scales
  static constexpr int kStagesAt = kTiles * kTile;
  static constexpr int kBarriersAt = kStagesAt + kStages * kStageBytes;
  static constexpr int kSmem = kBarriersAt + (2 * kStages + 2 * kTiles) * 8 + 1024;
  static constexpr int kFullArrivals = 1 + 32, kEmptyArrivals = kConsumerWarps + kDecoderWarps;
  static_assert(kTile % 1024 == 0 && kStagesAt % 1024 == 0, "the tiles and the stages stay 1024-byte aligned");
  static_assert(kStageBytes % 128 == 0 && kCodeBytes % 128 == 0, "TMA writes each code tile 128-byte aligned");
  static_assert(kK * 2 == 128, "a tile row is one 128-byte swizzle row");
  static_assert(kTokens == 32 * kDecoderWarps, "a decoder thread takes one row of a a stage");
  static_assert(kRows == 4 * 32, "each producer lane copies 4 rows' scales of each operand");
  static_assert(kSmem <= 227 * 1024, "a CTA's shared memory on Hopper");
};

template <bool kF32, bool kAccumulate>
__global__ void __launch_bounds__(NtWsLayout::kThreads, 1) sm90_nvfp4_nvfp4_gemm_nt_ws_kernel(
    void* __restrict__ out, const __grid_constant__ CUtensorMap a_map, const uint8_t* __restrict__ a_scales,
    const __grid_constant__ CUtensorMap b_map, const uint8_t* __restrict__ b_scales, const float* __restrict__ alpha,
    int64_t M, int64_t N, int64_t K) {
  using L = NtWsLayout;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023u)) & 1023u);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + L::kBarriersAt);
  uint64_t* empty = full + L::kStages;
  uint64_t* ready = empty + L::kStages;
  uint64_t* free_tile = ready + L::kTiles;
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * L::kRows, m0 = static_cast<int64_t>(blockIdx.y) * L::kTokens;
  const int64_t steps = K / L::kK;
  // Stage s: b codes, a codes, b scales, a scales.
  const auto b_codes = [&](int s) { return smem + L::kStagesAt + s * L::kStageBytes; };
  const auto a_codes = [&](int s) { return b_codes(s) + L::kCodeBytes; };
  const auto b_scl = [&](int s) { return b_codes(s) + 2 * L::kCodeBytes; };
  const auto a_scl = [&](int s) { return b_scl(s) + L::kScaleBytes; };

  if (tid == 0) {
    for (int s = 0; s < L::kStages; ++s) {
      mbar_init(&full[s], L::kFullArrivals);
      mbar_init(&empty[s], L::kEmptyArrivals);
    }
    for (int u = 0; u < L::kTiles; ++u) {
      mbar_init(&ready[u], L::kDecoderWarps);
      mbar_init(&free_tile[u], L::kConsumerWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  dependent_wait();
  dependent_trigger();

  if (warp == L::kConsumerWarps + L::kDecoderWarps) {  // ---- producer ----
    const int64_t scale_row = K / 16;
    for (int64_t i = 0; i < steps; ++i) {
      const int s = static_cast<int>(i % L::kStages);
      mbar_wait(&empty[s], static_cast<uint32_t>((i / L::kStages) & 1) ^ 1u);
      if (lane == 0) {
        mbar_arrive_expect_tx(&full[s], 2 * L::kCodeBytes);
        tma_load_2d(b_codes(s), &b_map, static_cast<int>(i * L::kK / 2), static_cast<int>(n0), &full[s]);
        tma_load_2d(a_codes(s), &a_map, static_cast<int>(i * L::kK / 2), static_cast<int>(m0), &full[s]);
      }
#pragma unroll
      for (int q = 0; q < 4; ++q) {  // rows past N or M read the last one (never stored)
        const int r = lane + 32 * q;
        const int64_t nb = n0 + r < N ? n0 + r : N - 1, ma = m0 + r < M ? m0 + r : M - 1;
        cp_async4(smem_addr(b_scl(s) + r * 4), b_scales + nb * scale_row + i * (L::kK / 16));
        cp_async4(smem_addr(a_scl(s) + r * 4), a_scales + ma * scale_row + i * (L::kK / 16));
      }
      mbar_arrive_after_cp_async(&full[s]);
    }
    cp_async_wait_all();
    return;
  }

  if (warp >= L::kConsumerWarps) {  // ---- decoder: thread d takes row d of a's stage ----
    const int d = tid - 32 * L::kConsumerWarps;
    for (int64_t i = 0; i < steps; ++i) {
      const int s = static_cast<int>(i % L::kStages), u = static_cast<int>(i % L::kTiles);
      mbar_wait(&full[s], static_cast<uint32_t>((i / L::kStages) & 1));
      mbar_wait(&free_tile[u], static_cast<uint32_t>((i / L::kTiles) & 1) ^ 1u);
      uint8_t* tile = smem + u * L::kTile;
      decode_tile_half(tile, a_codes(s), a_scl(s), L::kCodePitch, d, 0);
      decode_tile_half(tile, a_codes(s), a_scl(s), L::kCodePitch, d, 1);
      fence_proxy_async_shared();  // the generic writes, visible to the consumers' wgmmas
      __syncwarp();
      if (lane == 0) {
        mbar_arrive(&ready[u]);
        mbar_arrive(&empty[s]);  // done with a's codes and scales of the stage
      }
    }
    return;
  }

  // ---- consumers ----
  const int wg_rows = (warp / 4) * 64 + (warp % 4) * 16;
  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
  uint32_t a[2][4];
  for (int64_t i = 0; i < steps; ++i) {
    const int s = static_cast<int>(i % L::kStages), u = static_cast<int>(i % L::kTiles);
    mbar_wait(&full[s], static_cast<uint32_t>((i / L::kStages) & 1));
    mbar_wait(&ready[u], static_cast<uint32_t>((i / L::kTiles) & 1));
    const uint32_t tile_addr = smem_addr(smem + u * L::kTile);
#pragma unroll
    for (int kb = 0; kb < L::kK / 16; ++kb) {
      wgmma_wait<1>();  // as in sm90_nvfp4_bf16_gemm_ws_kernel
      a_fragment<false>(a[kb % 2], b_codes(s), b_scl(s), L::kCodePitch, wg_rows + g, kb, t);
      wgmma_fence();
      wgmma_rs(acc, a[kb % 2], sw128_kmajor_desc(tile_addr + kb * 32));
      wgmma_commit();
    }
    // The previous stage's wgmmas are done (waited at kb = 1 on): free its codes and its tile.
    if (i > 0 && lane == 0) {
      mbar_arrive(&empty[(i - 1) % L::kStages]);
      mbar_arrive(&free_tile[(i - 1) % L::kTiles]);
    }
  }
  wgmma_wait<0>();
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
    cudaLaunchAttribute attr[2];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = static_cast<unsigned>(splits);
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[1].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(static_cast<unsigned>(splits), tiles.x, tiles.y);
    config.blockDim = dim3(S::kThreads);
    config.dynamicSmemBytes = S::kSmem;
    config.stream = stream;
    config.attrs = attr;
    config.numAttrs = dependent_launch() ? 2 : 1;
    check(cudaLaunchKernelEx(&config, kernel, out, x, w.codes, w.scales, w.decode, bias, row_scale, M, C, OC, splits,
                             w.decode_per_row ? 1 : 0),
          "cudaLaunchKernelEx");
  } else if (kernel_choice == Nvfp4GemmKernel::wgmma_ws) {
    using W = WsLayout;
    const dim3 grid = grid_for_tokens(W::kTokens);
    const CUtensorMap x_map = tensor_map_2d(CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, x, static_cast<uint64_t>(C),
                                            static_cast<uint64_t>(M), static_cast<uint64_t>(C) * 2, W::kK, W::kTokens,
                                            CU_TENSOR_MAP_SWIZZLE_128B);
    const CUtensorMap code_map = code_tensor_map(w.codes, OC, C);
    const auto kernel = f32 ? sm90_nvfp4_bf16_gemm_ws_kernel<true> : sm90_nvfp4_bf16_gemm_ws_kernel<false>;
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, W::kSmem), "cudaFuncSetAttribute");
    launch_dependent(kernel, grid, dim3(W::kThreads), W::kSmem, stream, out, x_map, code_map, w.scales, w.decode, bias,
                     row_scale, M, C, OC, w.decode_per_row ? 1 : 0);
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
    using W = NtWsLayout;
    static_assert(W::kRows == L::kRows && W::kTokens == L::kTokens, "both kernels take the same grid");
    static_assert(W::kK == 64 && W::kRows == 128, "code_tensor_map's box");
    const CUtensorMap a_map = code_tensor_map(a.codes, M, K), b_map = code_tensor_map(b.codes, N, K);
    const auto kernel = f32 ? (accumulate ? sm90_nvfp4_nvfp4_gemm_nt_ws_kernel<true, true>
                                          : sm90_nvfp4_nvfp4_gemm_nt_ws_kernel<true, false>)
                            : (accumulate ? sm90_nvfp4_nvfp4_gemm_nt_ws_kernel<false, true>
                                          : sm90_nvfp4_nvfp4_gemm_nt_ws_kernel<false, false>);
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, W::kSmem), "cudaFuncSetAttribute");
    ++calls_gemm_nt;
    launch_dependent(kernel, grid, dim3(W::kThreads), W::kSmem, stream, out, a_map, a.scales, b_map, b.scales, alpha, M,
                     N, K);
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
