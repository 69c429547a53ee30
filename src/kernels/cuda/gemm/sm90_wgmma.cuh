// Hopper primitives the fused NVFP4 GEMMs share (sm90_nvfp4_bf16_gemm.cu, sm90_nvfp4_gemm_ws.cu):
// wgmma with A in registers and B through a 128-byte-swizzle descriptor, mbarriers and 2-D TMA
// copies, the W4A4 kernels' tile decode and epilogue; and the warp-specialized kernels' launches.
#pragma once

#include <cuda.h>  // CUtensorMap
#include <cuda_runtime.h>

#include <cstdint>

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

namespace nvfp4::cuda::gemm_detail {

using namespace ops_detail;

// The "+f" asm operands of accumulators d[o] .. d[o + 63] (wgmma_rs's output lists).
#define NVFP4_WGMMA_ACC8(d, o)                                                                              \
  "+f"(d[(o) + 0]), "+f"(d[(o) + 1]), "+f"(d[(o) + 2]), "+f"(d[(o) + 3]), "+f"(d[(o) + 4]), "+f"(d[(o) + 5]), \
      "+f"(d[(o) + 6]), "+f"(d[(o) + 7])
#define NVFP4_WGMMA_ACC64(d, o)                                                                          \
  NVFP4_WGMMA_ACC8(d, o), NVFP4_WGMMA_ACC8(d, (o) + 8), NVFP4_WGMMA_ACC8(d, (o) + 16),                   \
      NVFP4_WGMMA_ACC8(d, (o) + 24), NVFP4_WGMMA_ACC8(d, (o) + 32), NVFP4_WGMMA_ACC8(d, (o) + 40),       \
      NVFP4_WGMMA_ACC8(d, (o) + 48), NVFP4_WGMMA_ACC8(d, (o) + 56)

// d (64 x N, fp32; a warp's 16 rows as mma_bf16's D, column blocks of 8 in d[4j .. 4j + 3]) +=
// a (64 x 16 bf16 in registers: each warp its 16 rows, mma_bf16's A layout) · b (16 x N, K-major
// in shared memory, 128-byte swizzle; desc_b): wgmma m64nNk16, N = 128 or 256 (the size of d
// picks it). Asynchronous: wgmma_fence() before (after writing a or d), wgmma_commit() after,
// wgmma_wait<N>() before reading d or rewriting a. kTransB 1: b MN-major instead (16 x N with its
// N side contiguous, sw128_mnmajor_desc; N = 64 or 128): the attention kernels' O += P V.
template <int kTransB = 0>
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
      "}, {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n"
      "}\n"
      : NVFP4_WGMMA_ACC64(d, 0)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(1), "n"(kTransB));
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
      : NVFP4_WGMMA_ACC64(d, 0), NVFP4_WGMMA_ACC64(d, 64)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(1));
#else
  __trap();
#endif
}

// The attention kernels' products (attention_sm90.cu):
//   wgmma_ss: d (64 x 128, fp32) (+)= a (64 x 16, K-major in shared memory: desc_a) · b (16 x 128,
//     K-major: desc_b), both through 128-byte-swizzle descriptors; kAccumulate false overwrites d
//     (scores S = Q Kᵀ: the first k-step starts the sum);
//   wgmma_rs<1>: d (64 x N) += a (registers) · b (16 x N, MN-major in shared memory: desc_b from
//     sw128_mnmajor_desc), N = 64 or 128 (O += P V with V's rows as stored).
#define NVFP4_WGMMA_ACC32(d, o) \
  NVFP4_WGMMA_ACC8(d, o), NVFP4_WGMMA_ACC8(d, (o) + 8), NVFP4_WGMMA_ACC8(d, (o) + 16), NVFP4_WGMMA_ACC8(d, (o) + 24)
#define NVFP4_WGMMA_REGS32                                                                                   \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                                  \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define NVFP4_WGMMA_REGS64                                                                                   \
  NVFP4_WGMMA_REGS32 ", "                                                                                    \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "                        \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"

// The "=f" operands of d[0] .. d[63]: a first k-step that only writes its accumulators (scale-d 0),
// so nothing keeps their previous values alive.
#define NVFP4_WGMMA_OUT8(d, o)                                                                              \
  "=f"(d[(o) + 0]), "=f"(d[(o) + 1]), "=f"(d[(o) + 2]), "=f"(d[(o) + 3]), "=f"(d[(o) + 4]), "=f"(d[(o) + 5]), \
      "=f"(d[(o) + 6]), "=f"(d[(o) + 7])
#define NVFP4_WGMMA_OUT64(d)                                                                                 \
  NVFP4_WGMMA_OUT8(d, 0), NVFP4_WGMMA_OUT8(d, 8), NVFP4_WGMMA_OUT8(d, 16), NVFP4_WGMMA_OUT8(d, 24),        \
      NVFP4_WGMMA_OUT8(d, 32), NVFP4_WGMMA_OUT8(d, 40), NVFP4_WGMMA_OUT8(d, 48), NVFP4_WGMMA_OUT8(d, 56)

template <bool kAccumulate>
__device__ __forceinline__ void wgmma_ss(float (&d)[64], uint64_t desc_a, uint64_t desc_b) {
#if NVFP4_WGMMA
  if constexpr (kAccumulate) {
    asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {" NVFP4_WGMMA_REGS64
                 "}, %64, %65, 1, 1, 1, 0, 0;\n"
                 : NVFP4_WGMMA_ACC64(d, 0)
                 : "l"(desc_a), "l"(desc_b));
  } else {
    asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {" NVFP4_WGMMA_REGS64
                 "}, %64, %65, 0, 1, 1, 0, 0;\n"
                 : NVFP4_WGMMA_OUT64(d)
                 : "l"(desc_a), "l"(desc_b));
  }
#else
  __trap();
#endif
}

template <int kTransB>
__device__ __forceinline__ void wgmma_rs(float (&d)[32], const uint32_t (&a)[4], uint64_t desc_b) {
#if NVFP4_WGMMA
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {" NVFP4_WGMMA_REGS32
      "}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n"
      "}\n"
      : NVFP4_WGMMA_ACC32(d, 0)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(1), "n"(kTransB));
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

// An MN-major operand (B[k][n] at row k, column n: rows of 64 BF16 = 128 bytes, 128-byte swizzle)
// of 8-row groups 1024 bytes apart (SBO) whose 64-column panels are `panel_bytes` apart (LBO): the
// canonical MN-major SW128 layout, ((8 x 8 elements, panels), (8 rows, groups)).
__device__ __forceinline__ uint64_t sw128_mnmajor_desc(uint32_t smem_byte_addr, uint32_t panel_bytes) {
  return static_cast<uint64_t>((smem_byte_addr & 0x3FFFFu) >> 4) | (static_cast<uint64_t>(panel_bytes >> 4) << 16) |
         (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}

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

// A 3-D TMA copy of the box at (c0 inner, c1, c2 outer) of `map` into dst, completing on `bar`.
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, int c0, int c1, int c2, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
      "[%5];\n" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_addr(bar))
      : "memory");
}

// Thread 0: n barriers at a with a_count arrivals each and n at b with b_count, then the fence
// that makes them visible (to the async proxy and the cluster) before any thread uses them.
__device__ __forceinline__ void mbar_init_stages(uint64_t* a, unsigned a_count, uint64_t* b, unsigned b_count, int n) {
  for (int s = 0; s < n; ++s) {
    mbar_init(&a[s], a_count);
    mbar_init(&b[s], b_count);
  }
}
__device__ __forceinline__ void mbar_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }

// Row r's E4M3 scales of an operand whose rows are `row_bytes` scale bytes apart, as 32-bit words:
// word i holds stage i's 4 bytes (one 64-column stage; byte kb: columns 16kb .. 16kb + 15). Rows
// past `rows` read the last one (their results are never stored). The warp-specialized kernels'
// decoding threads load their rows' words straight from global memory (__ldg, L1-cached) a stage
// ahead of use: no shared-memory handoff from the producer, which copies only codes and x by TMA.
__device__ __forceinline__ const uint32_t* scale_words(const uint8_t* scales, int64_t r, int64_t rows,
                                                       int64_t row_bytes) {
  return reinterpret_cast<const uint32_t*>(scales + (r < rows ? r : rows - 1) * row_bytes);
}

// Row r's 16 code bytes at columns 32h .. 32h + 31 of a stage (checkpoint order, rows `pitch`
// apart; the row's 4 scale bytes of the stage in `scales`, as scale_words holds them) into the
// stage's BF16 tile: 128-byte rows, 16-byte pieces XOR-swizzled by r % 8 (the layout wgmma's
// 128-byte swizzle mode reads).
__device__ __forceinline__ void decode_tile_half(uint8_t* tile, const uint8_t* codes, uint32_t scales, int pitch, int r,
                                                 int h) {
  const uint4 q = *reinterpret_cast<const uint4*>(codes + r * pitch + h * 16);
  const uint32_t words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
  for (int w = 0; w < 4; ++w) {  // word w: 8 elements, one 16-byte piece of the tile
    const uint32_t sc = e4m3_to_bf16x2((scales >> (8 * (2 * h + w / 2))) & 0xFFu);
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

// The W4A16 epilogue of a consumer warp's 16 weight rows from row0 (acc of m64nNk16: N = 2 kAcc
// tokens from m0): out = fma(sum, the row's decode factor, bias) (× row_scale), rounded once.
template <bool kF32, int kAcc>
__device__ __forceinline__ void store_w4a16_tile(void* out, const float (&acc)[kAcc], const float* decode,
                                                 int decode_stride, const float* row_scale, const uint16_t* bias,
                                                 int64_t row0, int64_t m0, int64_t M, int64_t OC, int g, int t) {
#pragma unroll
  for (int j = 0; j < kAcc / 4; ++j) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t row = row0 + g + (i >= 2 ? 8 : 0);
      const int64_t m = m0 + 8 * j + 2 * t + (i & 1);
      if (row >= OC || m >= M) continue;
      store_nvfp4_output<kF32>(out, m * OC + row, acc[4 * j + i], row_factor(decode, row, decode_stride), row_scale, m,
                               bias ? bf16_to_f32(bias[row]) : 0.0f);
    }
  }
}

// A TMA tensor map (defined in sm90_nvfp4_gemm_ws.cu): `rank` dimensions, dims[0] contiguous,
// strides[i] the byte stride of dims[i + 1], boxes of box[] elements, zeros outside the tensor.
CUtensorMap tensor_map(CUtensorMapDataType type, const void* base, int rank, const uint64_t* dims,
                       const uint64_t* strides, const uint32_t* box, CUtensorMapSwizzle swizzle);

// The warp-specialized kernels (sm90_nvfp4_gemm_ws.cu), launched on nvfp4_gemm's and
// nvfp4_gemm_nt's behalf with their grids: 128 weight rows x 256 tokens a CTA (W4A16), 128 rows of
// b x 128 of a (W4A4).
constexpr int kWsTokens = 256;
void launch_nvfp4_gemm_ws(bool f32, dim3 grid, void* out, const uint16_t* x, const Nvfp4Weight& w, const uint16_t* bias,
                          const float* row_scale, int64_t M, int64_t C, int64_t OC, Stream stream);
void launch_nvfp4_gemm_nt_ws(bool f32, bool accumulate, dim3 grid, void* out, const Nvfp4Operand& a,
                             const Nvfp4Operand& b, const float* alpha, int64_t M, int64_t N, int64_t K, Stream stream);

}  // namespace nvfp4::cuda::gemm_detail
