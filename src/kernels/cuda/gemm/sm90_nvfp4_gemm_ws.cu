// sm90_nvfp4_gemm_ws: the warp-specialized fused NVFP4 GEMMs — nvfp4_gemm's wgmma_ws (W4A16) and
// nvfp4_gemm_nt's wgmma_ws (W4A4): TMA producers, mbarriers, consumers that only decode and
// multiply. The same tiles and sums as the wide wgmma kernel and the W4A4 kernel of
// sm90_nvfp4_bf16_gemm.cu (the tests require their bits). Contract: include/nvfp4/cuda_gemm_nvfp4.hpp.
#include <cudaTypedefs.h>  // the TMA encoder's type; the encoder comes from the runtime's entry point

#include <string>

#include "kernels/cuda/gemm/sm90_wgmma.cuh"

namespace nvfp4::cuda::gemm_detail {

namespace {

// ---- the warp-specialized wgmma kernel (`wgmma_ws`) --------------------------------------------
// Layout (WsLayout): the wide tile, 128 weight rows x 256 tokens, C in stages of 64, kStages deep;
// shared memory holds every stage's x tile first (32 KB each, 1024-byte aligned: the 128-byte
// swizzle's atom), then their codes (128 rows x 32 bytes), the barriers.
// Roles: warps 0-7 are two consumer warpgroups, each 64 rows x all 256 tokens as in the wgmma
// kernel (per 16 columns: its A fragment decoded into registers, one m64n256k16 reading x through a
// descriptor, wgmmas in flight across stages); warp 8 is the producer: lane 0 issues the stage's
// TMA copies of x (256 tokens x 64 BF16 with the 128-byte swizzle, the layout the descriptor
// reads; tokens past M arrive as zeros) and of the codes (rows past OC: zeros). Each consumer
// thread loads its two rows' scale bytes of the next stage (one word each, scale_words) from global
// memory at the end of a stage (there, not at its start, the kernel keeps to 168 registers without
// spills): the producer hands over only what TMA wrote. full[s]: lane 0's arrival
// with the TMA byte count — the stage landed; empty[s]: one arrival per consumer warp once the
// wgmmas that read the stage are done — it can be refilled.
// No block-wide barrier in the main loop: the copies run up to kStages - 1 stages ahead of the
// tensor cores, and no consumer thread computes a copy address.
struct WsLayout {
  static constexpr int kRows = 128, kTokens = 256, kK = 64, kStages = 5;
  static constexpr int kConsumerWarps = 8, kThreads = 32 * kConsumerWarps + 32;
  static constexpr int kXBytes = kTokens * kK * 2;     // a stage's x tile
  static constexpr int kCodeBytes = kRows * kK / 2;    // rows of 32 bytes (the TMA box's rows)
  static constexpr int kCodePitch = kK / 2;
  static constexpr int kCodesAt = kStages * kXBytes, kBarriersAt = kCodesAt + kStages * kCodeBytes;
  static constexpr int kSmem = kBarriersAt + 2 * kStages * 8 + 1024;  // + the first tile's alignment
  static constexpr int kFullArrivals = 1, kEmptyArrivals = kConsumerWarps;
  static_assert(kXBytes % 1024 == 0, "every stage's x tile starts on a 1024-byte swizzle atom");
  static_assert(kK * 2 == 128, "an x row of a stage is one 128-byte swizzle row (the TMA box's inner size)");
  static_assert(kCodeBytes % 128 == 0 && kCodesAt % 128 == 0, "TMA writes the codes 128-byte aligned");
  static_assert(kBarriersAt % 8 == 0, "mbarriers are 8-byte aligned");
  static_assert(kK / 16 == 4, "a row's scales of a stage are one 32-bit word (scale_words)");
  static_assert(kSmem <= 227 * 1024, "a CTA's shared memory on Hopper");
};

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
    mbar_init_stages(full, L::kFullArrivals, empty, L::kEmptyArrivals, L::kStages);
    mbar_init_fence();
  }
  __syncthreads();
  dependent_wait();
  dependent_trigger();

  if (warp == L::kConsumerWarps) {  // ---- producer: lane 0 ----
    if (lane != 0) return;
    for (int64_t i = 0; i < steps; ++i) {
      const int s = static_cast<int>(i % L::kStages);
      mbar_wait(&empty[s], static_cast<uint32_t>((i / L::kStages) & 1) ^ 1u);
      mbar_arrive_expect_tx(&full[s], L::kXBytes + L::kCodeBytes);
      tma_load_2d(smem + s * L::kXBytes, &x_map, static_cast<int>(i * L::kK), static_cast<int>(m0), &full[s]);
      tma_load_2d(smem + L::kCodesAt + s * L::kCodeBytes, &code_map, static_cast<int>(i * L::kK / 2),
                  static_cast<int>(o0), &full[s]);
    }
    return;
  }

  // ---- consumers: warpgroup warp / 4, its warp's 16 rows of the CTA's 128 ----
  const int wg_rows = (warp / 4) * 64 + (warp % 4) * 16;
  float acc[L::kTokens / 2];
#pragma unroll
  for (int i = 0; i < L::kTokens / 2; ++i) acc[i] = 0.0f;
  uint32_t a[2][4];
  const uint32_t* scl = scale_words(scales, o0 + wg_rows + g, OC, C / 16);
  const uint32_t* sch = scale_words(scales, o0 + wg_rows + g + 8, OC, C / 16);
  uint32_t sl = __ldg(scl), sh = __ldg(sch);
  for (int64_t i = 0; i < steps; ++i) {
    const int s = static_cast<int>(i % L::kStages);
    mbar_wait(&full[s], static_cast<uint32_t>((i / L::kStages) & 1));
    const uint8_t* cs = smem + L::kCodesAt + s * L::kCodeBytes;
    const uint32_t x_addr = smem_addr(smem + s * L::kXBytes);
#pragma unroll
    for (int kb = 0; kb < L::kK / 16; ++kb) {
      // The wgmma that read a[kb % 2] two blocks back is done (unconditionally: with fewer in
      // flight it returns at once, and ptxas serializes the wgmmas if it cannot see the wait on
      // every path); from kb = 1 on, so is every wgmma of the previous stage.
      wgmma_wait<1>();
      a_fragment<true>(a[kb % 2], cs, L::kCodePitch, wg_rows + g, kb, t, sl >> (8 * kb), sh >> (8 * kb));
      wgmma_fence();
      wgmma_rs(acc, a[kb % 2], sw128_kmajor_desc(x_addr + kb * 32));
      wgmma_commit();
    }
    // Each warp frees the previous stage for the producer (after the stage's wgmmas are issued:
    // an arrive between them makes ptxas serialize the wgmmas, warning C7513).
    if (i > 0 && lane == 0) mbar_arrive(&empty[(i - 1) % L::kStages]);
    if (i + 1 < steps) sl = __ldg(scl + i + 1), sh = __ldg(sch + i + 1);  // in flight during the wait
  }
  wgmma_wait<0>();

  store_w4a16_tile<kF32>(out, acc, decode, decode_stride, row_scale, bias, o0 + wg_rows, m0, M, OC, g, t);
}

// W4A4 warp-specialized (nvfp4_gemm_nt's wgmma_ws; the sums of sm90_nvfp4_nvfp4_gemm_nt_kernel, the same bits):
// NtWsLayout. Roles: warps 0-7, two consumer warpgroups of 64 rows of b x 128 tokens of a (b
// decoded into registers, one m64n128k16 per 16 columns reading a's BF16 tile); warps 8-11, the
// decoder warpgroup: each thread decodes one row of a's stage codes into a BF16 tile (3 tiles
// deep), fenced for the async proxy; warp 12, the producer: lane 0 copies both operands' stage
// codes by TMA (128 rows x 32 bytes each). Scales do not pass through shared memory: each consumer
// thread loads its two rows of b's, each decoder thread its row of a's, from global memory a stage
// ahead (scale_words). Barriers, per code stage: full (1: the TMA bytes), empty (12: each
// consumer and decoder warp once done with it); per tile: ready (4 decoder warps), free (8 consumer
// warps, once the wgmmas that read it are done). The consumers never wait on a decode of the stage
// they compute.
struct NtWsLayout {
  static constexpr int kRows = 128, kTokens = 128, kK = 64, kStages = 5, kTiles = 3;
  static constexpr int kConsumerWarps = 8, kDecoderWarps = 4, kThreads = 32 * (kConsumerWarps + kDecoderWarps + 1);
  static constexpr int kTile = kTokens * kK * 2;       // a's BF16 tile, 1024-byte aligned
  static constexpr int kCodeBytes = kRows * kK / 2;    // per operand and stage: rows of 32 bytes
  static constexpr int kCodePitch = kK / 2;
  static constexpr int kStageBytes = 2 * kCodeBytes;  // b codes, a codes
  static constexpr int kStagesAt = kTiles * kTile;
  static constexpr int kBarriersAt = kStagesAt + kStages * kStageBytes;
  static constexpr int kSmem = kBarriersAt + (2 * kStages + 2 * kTiles) * 8 + 1024;
  static constexpr int kFullArrivals = 1, kEmptyArrivals = kConsumerWarps + kDecoderWarps;
  static_assert(kTile % 1024 == 0 && kStagesAt % 1024 == 0, "the tiles and the stages stay 1024-byte aligned");
  static_assert(kStageBytes % 128 == 0 && kCodeBytes % 128 == 0, "TMA writes each code tile 128-byte aligned");
  static_assert(kK * 2 == 128, "a tile row is one 128-byte swizzle row");
  static_assert(kTokens == 32 * kDecoderWarps, "a decoder thread takes one row of a a stage");
  static_assert(kK / 16 == 4, "a row's scales of a stage are one 32-bit word (scale_words)");
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
  // Stage s: b codes, a codes.
  const auto b_codes = [&](int s) { return smem + L::kStagesAt + s * L::kStageBytes; };
  const auto a_codes = [&](int s) { return b_codes(s) + L::kCodeBytes; };

  if (tid == 0) {
    mbar_init_stages(full, L::kFullArrivals, empty, L::kEmptyArrivals, L::kStages);
    mbar_init_stages(ready, L::kDecoderWarps, free_tile, L::kConsumerWarps, L::kTiles);
    mbar_init_fence();
  }
  __syncthreads();
  dependent_wait();
  dependent_trigger();

  if (warp == L::kConsumerWarps + L::kDecoderWarps) {  // ---- producer: lane 0 ----
    if (lane != 0) return;
    for (int64_t i = 0; i < steps; ++i) {
      const int s = static_cast<int>(i % L::kStages);
      mbar_wait(&empty[s], static_cast<uint32_t>((i / L::kStages) & 1) ^ 1u);
      mbar_arrive_expect_tx(&full[s], 2 * L::kCodeBytes);
      tma_load_2d(b_codes(s), &b_map, static_cast<int>(i * L::kK / 2), static_cast<int>(n0), &full[s]);
      tma_load_2d(a_codes(s), &a_map, static_cast<int>(i * L::kK / 2), static_cast<int>(m0), &full[s]);
    }
    return;
  }

  if (warp >= L::kConsumerWarps) {  // ---- decoder: thread d takes row d of a's stage ----
    const int d = tid - 32 * L::kConsumerWarps;
    const uint32_t* sca = scale_words(a_scales, m0 + d, M, K / 16);
    uint32_t sc = __ldg(sca);
    for (int64_t i = 0; i < steps; ++i) {
      const int s = static_cast<int>(i % L::kStages), u = static_cast<int>(i % L::kTiles);
      const uint32_t next = __ldg(sca + (i + 1 < steps ? i + 1 : i));
      mbar_wait(&full[s], static_cast<uint32_t>((i / L::kStages) & 1));
      mbar_wait(&free_tile[u], static_cast<uint32_t>((i / L::kTiles) & 1) ^ 1u);
      uint8_t* tile = smem + u * L::kTile;
      decode_tile_half(tile, a_codes(s), sc, L::kCodePitch, d, 0);
      decode_tile_half(tile, a_codes(s), sc, L::kCodePitch, d, 1);
      fence_proxy_async_shared();  // the generic writes, visible to the consumers' wgmmas
      __syncwarp();
      if (lane == 0) {
        mbar_arrive(&ready[u]);
        mbar_arrive(&empty[s]);  // done with a's codes of the stage
      }
      sc = next;
    }
    return;
  }

  // ---- consumers ----
  const int wg_rows = (warp / 4) * 64 + (warp % 4) * 16;
  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
  uint32_t a[2][4];
  const uint32_t* scl = scale_words(b_scales, n0 + wg_rows + g, N, K / 16);
  const uint32_t* sch = scale_words(b_scales, n0 + wg_rows + g + 8, N, K / 16);
  uint32_t sl = __ldg(scl), sh = __ldg(sch);
  for (int64_t i = 0; i < steps; ++i) {
    const int s = static_cast<int>(i % L::kStages), u = static_cast<int>(i % L::kTiles);
    const int64_t next = i + 1 < steps ? i + 1 : i;  // its scale words in flight during this stage
    const uint32_t nl = __ldg(scl + next), nh = __ldg(sch + next);
    mbar_wait(&full[s], static_cast<uint32_t>((i / L::kStages) & 1));
    mbar_wait(&ready[u], static_cast<uint32_t>((i / L::kTiles) & 1));
    const uint32_t tile_addr = smem_addr(smem + u * L::kTile);
#pragma unroll
    for (int kb = 0; kb < L::kK / 16; ++kb) {
      wgmma_wait<1>();  // as in sm90_nvfp4_bf16_gemm_ws_kernel
      a_fragment<false>(a[kb % 2], b_codes(s), L::kCodePitch, wg_rows + g, kb, t, sl >> (8 * kb), sh >> (8 * kb));
      wgmma_fence();
      wgmma_rs(acc, a[kb % 2], sw128_kmajor_desc(tile_addr + kb * 32));
      wgmma_commit();
    }
    // The previous stage's wgmmas are done (waited at kb = 1 on): free its codes and its tile.
    if (i > 0 && lane == 0) {
      mbar_arrive(&empty[(i - 1) % L::kStages]);
      mbar_arrive(&free_tile[(i - 1) % L::kTiles]);
    }
    sl = nl, sh = nh;
  }
  wgmma_wait<0>();
  store_nt_tile<kF32, kAccumulate>(out, acc, unshifted_factor<2>(alpha), n0 + wg_rows, m0, M, N, g, t);
}

}  // namespace

// A tensor map of `rank` (<= 5) dimensions, dims[0] the contiguous one; strides[i] is the byte
// stride of dims[i + 1]; read in boxes of box[] elements, zeros outside the tensor.
CUtensorMap tensor_map(CUtensorMapDataType type, const void* base, int rank, const uint64_t* dims,
                       const uint64_t* strides, const uint32_t* box, CUtensorMapSwizzle swizzle) {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    check(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found),
          "cudaGetDriverEntryPointByVersion");
    require(found == cudaDriverEntryPointSuccess && fn != nullptr, "tensor map",
            "the CUDA driver has no cuTensorMapEncodeTiled (TMA needs a CUDA 12 driver or newer)");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  require(rank >= 1 && rank <= 5, "tensor map", "rank " + std::to_string(rank) + " (1 to 5)");
  CUtensorMap map{};
  cuuint64_t d[5], st[4];
  cuuint32_t bx[5], elem[5];
  for (int i = 0; i < rank; ++i) {
    d[i] = dims[i];
    bx[i] = box[i];
    elem[i] = 1;
    if (i + 1 < rank) st[i] = strides[i];
  }
  const CUresult r = encode(&map, type, static_cast<cuuint32_t>(rank), const_cast<void*>(base), d, st, bx, elem,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  require(r == CUDA_SUCCESS, "tensor map", "cuTensorMapEncodeTiled failed (error " + std::to_string(int(r)) + ")");
  return map;
}

// A 2-D tensor map over a row-major (outer, inner) array of `type`, rows `row_bytes` apart, read in
// boxes of box_outer x box_inner elements.
CUtensorMap tensor_map_2d(CUtensorMapDataType type, const void* base, uint64_t inner, uint64_t outer,
                          uint64_t row_bytes, uint32_t box_inner, uint32_t box_outer, CUtensorMapSwizzle swizzle) {
  const uint64_t dims[2] = {inner, outer}, strides[1] = {row_bytes};
  const uint32_t box[2] = {box_inner, box_outer};
  return tensor_map(type, base, 2, dims, strides, box, swizzle);
}

// The TMA map of an NVFP4 operand's codes, (rows, K/2) bytes, in boxes of 128 rows x one 64-column
// stage (32 bytes; both warp-specialized kernels' stages).
CUtensorMap code_tensor_map(const uint8_t* codes, int64_t rows, int64_t K) {
  static_assert(WsLayout::kK == 64 && WsLayout::kRows == 128, "the W4A16 kernel's code box");
  return tensor_map_2d(CU_TENSOR_MAP_DATA_TYPE_UINT8, codes, static_cast<uint64_t>(K / 2), static_cast<uint64_t>(rows),
                       static_cast<uint64_t>(K / 2), 32, 128, CU_TENSOR_MAP_SWIZZLE_NONE);
}

void launch_nvfp4_gemm_ws(bool f32, dim3 grid, void* out, const uint16_t* x, const Nvfp4Weight& w, const uint16_t* bias,
                          const float* row_scale, int64_t M, int64_t C, int64_t OC, Stream stream) {
  using W = WsLayout;
  static_assert(W::kTokens == kWsTokens && W::kRows == 128, "nvfp4_gemm's grid for wgmma_ws");
  const CUtensorMap x_map = tensor_map_2d(CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, x, static_cast<uint64_t>(C),
                                          static_cast<uint64_t>(M), static_cast<uint64_t>(C) * 2, W::kK, W::kTokens,
                                          CU_TENSOR_MAP_SWIZZLE_128B);
  const CUtensorMap code_map = code_tensor_map(w.codes, OC, C);
  const auto kernel = f32 ? sm90_nvfp4_bf16_gemm_ws_kernel<true> : sm90_nvfp4_bf16_gemm_ws_kernel<false>;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, W::kSmem), "cudaFuncSetAttribute");
  launch_dependent(kernel, grid, dim3(W::kThreads), W::kSmem, stream, out, x_map, code_map, w.scales, w.decode, bias,
                   row_scale, M, C, OC, w.decode_per_row ? 1 : 0);
}

void launch_nvfp4_gemm_nt_ws(bool f32, bool accumulate, dim3 grid, void* out, const Nvfp4Operand& a,
                             const Nvfp4Operand& b, const float* alpha, int64_t M, int64_t N, int64_t K, Stream stream) {
  using W = NtWsLayout;
  static_assert(W::kRows == 128 && W::kTokens == 128, "nvfp4_gemm_nt's grid: 128 x 128 tiles");
  static_assert(W::kK == 64 && W::kRows == 128, "code_tensor_map's box");
  const CUtensorMap a_map = code_tensor_map(a.codes, M, K), b_map = code_tensor_map(b.codes, N, K);
  const auto kernel = f32 ? (accumulate ? sm90_nvfp4_nvfp4_gemm_nt_ws_kernel<true, true>
                                        : sm90_nvfp4_nvfp4_gemm_nt_ws_kernel<true, false>)
                          : (accumulate ? sm90_nvfp4_nvfp4_gemm_nt_ws_kernel<false, true>
                                        : sm90_nvfp4_nvfp4_gemm_nt_ws_kernel<false, false>);
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, W::kSmem), "cudaFuncSetAttribute");
  launch_dependent(kernel, grid, dim3(W::kThreads), W::kSmem, stream, out, a_map, a.scales, b_map, b.scales, alpha, M,
                   N, K);
}

}  // namespace nvfp4::cuda::gemm_detail
