// attention_sm90: the causal grouped-query attention forward on Hopper's tensor cores through wgmma
// and TMA, FlashAttention-3's scheme (attention_forward in include/nvfp4/cuda_ops.hpp takes it on
// an sm_90 device for HS 64 and 128 without a sliding window; the FlashAttention-2 kernels of
// attention.cu run every other call and are its reference in the tests).
//
// Layout (FwdLayout): a CTA owns 128 query rows of one (sequence, head); key/value tiles are 128
// rows too, so the causal diagonal is the last tile (qt == kt) and only it is masked. Every tile in
// shared memory is TMA's 128-byte-swizzled image of its rows: 64-column panels of 128 rows x 128
// bytes (HS 128: two panels), the layout wgmma's 128-byte swizzle mode reads — K-major for Q and K
// (S = Q Kᵀ) and MN-major for V (O += P V: B[k][n] = V[key k][dim n], rows as stored, no
// transpose pass). Shared memory: the Q tile, kStages K tiles, kStages V tiles, the barriers.
// Roles:
//   producer   warp 8: lane 0 issues the Q copy once and each key tile's K and V copies, up to
//              kStages ahead, on full[s] (its arrival with the byte count); a key tile that reaches
//              past the sequence completes on `tail` instead: the warp zeroes its V rows past the
//              sequence (they hold the next sequence's rows, or nothing: a 0 probability times a
//              non-finite neighbour must not reach the sum) and then arrives on full[s]
//   consumers  warps 0-7, two warpgroups of 64 query rows: per key tile one m64n128k16 chain for
//              S (Q and K through descriptors), the scaled scores and the online softmax in FP32
//              registers, the probabilities rounded to BF16 as the A operand of the P V chain
//              (register-sourced wgmma, m64nHSk16, V through an MN-major descriptor), then one
//              arrival per warp on empty[s]
//   epilogue   O / l rounded once to BF16 (rows < T), lse = m ln 2 + ln l, the producer amax
// The probabilities, their sums and the rounding points are FlashAttention-2's (attention.cu); the
// key tiles are twice as long, so the running maximum (and with it each P's BF16 rounding) is taken
// over other groups of keys: results agree with the mma.sync kernels within BF16 tolerance, not
// bit for bit. Deterministic: fixed tiles, fixed wgmma order, no atomics besides the amax.
// Packed sequences (cu_seqlens) read the same tiles as a sequence alone, past-the-end V rows zeroed
// either way, so each sequence's bits do not depend on its neighbours.
#include <cudaTypedefs.h>  // the TMA encoder's types

#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/gemm/sm90_wgmma.cuh"

namespace nvfp4::cuda::attention_detail {

namespace {

using namespace ops_detail;
using namespace gemm_detail;  // wgmma, mbarriers, TMA

template <int HS>
struct FwdLayout {
  static_assert(HS == 64 || HS == 128, "a row is one or two 128-byte swizzle panels");
  static constexpr int kRows = 128;            // query rows a CTA; key rows a stage
  static constexpr int kPanels = HS / 64;      // 64-column (128-byte) panels of a row
  static constexpr int kPanelBytes = kRows * 128;
  static constexpr int kTileBytes = kPanels * kPanelBytes;  // one Q, K or V tile
  static constexpr int kStages = HS == 64 ? 4 : 2;
  static constexpr int kKAt = kTileBytes, kVAt = kKAt + kStages * kTileBytes, kBarAt = kVAt + kStages * kTileBytes;
  static constexpr int kSmem = kBarAt + (2 * kStages + 2) * 8 + 1024;  // + the first tile's alignment
  static constexpr int kConsumerWarps = 8, kThreads = 32 * kConsumerWarps + 32;
  static constexpr int kGroupRows = 64;        // query rows a consumer warpgroup (wgmma's M)
  static constexpr int kScoreRegs = kRows / 2;  // m64n128 FP32 accumulators a thread
  static_assert(kConsumerWarps / 4 * kGroupRows == kRows, "two warpgroups cover the query tile");
  static_assert(kPanelBytes % 1024 == 0 && kTileBytes % 1024 == 0, "tiles start on 1024-byte swizzle atoms");
  static_assert(kGroupRows * 128 % 1024 == 0, "a warpgroup's rows start on a swizzle atom");
  static_assert(kPanelBytes >> 4 < (1 << 14), "the V descriptor's panel offset (LBO) fits its 14 bits");
  static_assert(kSmem <= 227 * 1024, "one CTA's shared memory on a Hopper SM");
};

template <int HS>
__global__ void __launch_bounds__(FwdLayout<HS>::kThreads, 1)
    attention_forward_sm90_kernel(uint16_t* __restrict__ out, float* __restrict__ lse,
                                  const __grid_constant__ CUtensorMap q_map, const __grid_constant__ CUtensorMap k_map,
                                  const __grid_constant__ CUtensorMap v_map, AttShape s) {
  using L = FwdLayout<HS>;
  extern __shared__ uint8_t fa_smem_raw[];
  uint8_t* smem = fa_smem_raw + ((1024 - (smem_addr(fa_smem_raw) & 1023u)) & 1023u);
  uint8_t* sQ = smem;
  uint8_t* sK = smem + L::kKAt;  // stage i at sK + i * kTileBytes
  uint8_t* sV = smem + L::kVAt;  // likewise
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + L::kBarAt);
  uint64_t* empty = full + L::kStages;
  uint64_t* q_full = empty + L::kStages;
  uint64_t* tail = q_full + 1;

  const int qt = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x);  // the longest rows first
  const int h = blockIdx.y, b = blockIdx.z;
  const int first_row = s.cu_seqlens ? s.cu_seqlens[b] : b * s.T;  // rows < 2^31 (the launch checks)
  const int T = s.cu_seqlens ? s.cu_seqlens[b + 1] - s.cu_seqlens[b] : s.T;
  if (qt * L::kRows >= T) return;  // past this sequence's rows (packed): the whole CTA, before any barrier
  const int kvh = h / (s.NH / s.NKV);
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid & 31;
  const int tiles = qt + 1;  // key tiles 0 .. qt

  if (tid == 0) {
    mbar_init_stages(full, 1, empty, L::kConsumerWarps, L::kStages);
    mbar_init(q_full, 1);
    mbar_init(tail, 1);
    mbar_init_fence();
  }
  __syncthreads();

  if (warp == L::kConsumerWarps) {  // ---- producer warp ----
    const int tail_rows = T - qt * L::kRows;  // rows of the last key tile inside the sequence (1 .. 128)
    if (lane == 0) {
      mbar_arrive_expect_tx(q_full, L::kTileBytes);
      for (int p = 0; p < L::kPanels; ++p)
        tma_load_3d(sQ + p * L::kPanelBytes, &q_map, 64 * p, first_row + qt * L::kRows, h, q_full);
    }
    for (int i = 0; i < tiles; ++i) {
      const int st = i % L::kStages;
      const bool zero_tail = i == qt && tail_rows < L::kRows;
      if (lane == 0) {
        mbar_wait(&empty[st], static_cast<uint32_t>((i / L::kStages) & 1) ^ 1u);
        uint64_t* bar = zero_tail ? tail : &full[st];
        mbar_arrive_expect_tx(bar, 2 * L::kTileBytes);
        for (int p = 0; p < L::kPanels; ++p) {
          const int off = st * L::kTileBytes + p * L::kPanelBytes;
          tma_load_3d(sK + off, &k_map, 64 * p, first_row + i * L::kRows, kvh, bar);
          tma_load_3d(sV + off, &v_map, 64 * p, first_row + i * L::kRows, kvh, bar);
        }
      }
      if (zero_tail) {  // once a CTA at most: its last tile
        mbar_wait(tail, 0);
        uint4* vt = reinterpret_cast<uint4*>(sV + st * L::kTileBytes);
        for (int p = 0; p < L::kPanels; ++p)  // whole 128-byte rows: the swizzle moves pieces within a row only
          for (int idx = tail_rows * 8 + lane; idx < L::kRows * 8; idx += 32)
            vt[p * (L::kPanelBytes / 16) + idx] = make_uint4(0u, 0u, 0u, 0u);
        fence_proxy_async_shared();  // the zeros visible to wgmma's reads
        __syncwarp();
        if (lane == 0) mbar_arrive(&full[st]);
      }
    }
    return;
  }

  // ---- consumers: warpgroup wg owns query rows [64 wg, 64 wg + 64) of the tile ----
  const int wg = warp / 4, g = lane >> 2, t = lane & 3;
  const int row_lo = L::kGroupRows * wg + 16 * (warp % 4) + g;  // this thread's rows in the tile: row_lo, row_lo + 8
  const float scale_log2 = s.scale * kLog2e;
  float o[HS / 2] = {};                  // O (64 x HS) of the warpgroup: a warp's 16 rows, n-blocks of 8
  float m[2] = {-INFINITY, -INFINITY};  // running max (log2 units) of rows row_lo, row_lo + 8
  float l[2] = {0.0f, 0.0f};            // this thread's part of the running sums
  const uint32_t q_addr = smem_addr(sQ) + wg * L::kGroupRows * 128;
  mbar_wait(q_full, 0);

  for (int i = 0; i < tiles; ++i) {
    const int st = i % L::kStages;
    mbar_wait(&full[st], static_cast<uint32_t>((i / L::kStages) & 1));
    const uint32_t k_addr = smem_addr(sK + st * L::kTileBytes), v_addr = smem_addr(sV + st * L::kTileBytes);

    // S = Q Kᵀ: HS / 16 k-steps, each 32 bytes into a 128-byte row of the step's panel
    float sc[L::kScoreRegs];  // S, then P (64 x 128): written by the first k-step
    wgmma_fence();
    wgmma_ss<false>(sc, sw128_kmajor_desc(q_addr), sw128_kmajor_desc(k_addr));
#pragma unroll
    for (int kk = 1; kk < HS / 16; ++kk) {
      const uint32_t off = (kk / 4) * L::kPanelBytes + (kk % 4) * 32;
      wgmma_ss<true>(sc, sw128_kmajor_desc(q_addr + off), sw128_kmajor_desc(k_addr + off));
    }
    wgmma_commit();
    wgmma_wait<0>();

    // scale (log2 units), the causal mask on the diagonal tile, online softmax. Key 0 is visible
    // to every row, so m is finite after tile 0 and no exponent sees -inf - -inf.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < L::kScoreRegs / 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = sc[4 * j + e] * scale_log2;
        if (i == qt && 8 * j + 2 * t + (e & 1) > row_lo + 8 * (e >> 1)) x = -INFINITY;
        sc[4 * j + e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xFFFFFFFFu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xFFFFFFFFu, mx[r], 2));
      const float m_new = fmaxf(m[r], mx[r]);
      alpha[r] = exp2f(m[r] - m_new);  // 0 on the first tile (m = -inf)
      m[r] = m_new;
      l[r] *= alpha[r];
    }
#pragma unroll
    for (int j = 0; j < L::kScoreRegs; ++j) {
      const float p = exp2f(sc[j] - m[(j >> 1) & 1]);
      l[(j >> 1) & 1] += p;
      sc[j] = p;
    }
#pragma unroll
    for (int j = 0; j < HS / 2; ++j) o[j] *= alpha[(j >> 1) & 1];

    // O += P V with P rounded to BF16 (the sums l keep the FP32 values): 8 k-steps of 16 keys,
    // each two 8-row groups (2,048 bytes) further into V's panels
    uint32_t pa[L::kRows / 16][4];
    acc_to_a<L::kScoreRegs / 4>(pa, reinterpret_cast<const float(&)[L::kScoreRegs / 4][4]>(sc));
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < L::kRows / 16; ++kk)
      wgmma_rs<1>(o, pa[kk], sw128_mnmajor_desc(v_addr + kk * 2048, L::kPanelBytes));
    wgmma_commit();
    wgmma_wait<0>();
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[st]);  // this warp is done with the stage
  }

  // epilogue: O / l and lse from the warp's first row in the sequence; lse is (B, NH, T), T the
  // longest (packed)
  const int64_t qstride = static_cast<int64_t>(s.NH) * HS;
  store_forward_rows<HS>(out + static_cast<int64_t>(first_row) * qstride + h * HS, qstride, qt * L::kRows + row_lo - g, T,
                         reinterpret_cast<const float(&)[HS / 8][4]>(o), l, m,
                         lse + (static_cast<int64_t>(b) * s.NH + h) * s.T, s.amax, lane, true);
}

template <int HS>
void launch_forward(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v, int64_t B,
                    int64_t rows, const AttShape& s, cudaStream_t stream) {
  using L = FwdLayout<HS>;
  // (HS, rows, heads) BF16 with the row and head strides of (rows, heads, HS): boxes of 64 columns
  // (128 bytes, the swizzle's width) x 128 rows x one head; rows past `rows` arrive as zeros.
  const auto map = [&](const uint16_t* base, int64_t heads) {
    const uint64_t dims[3] = {HS, static_cast<uint64_t>(rows), static_cast<uint64_t>(heads)};
    const uint64_t strides[2] = {static_cast<uint64_t>(heads) * HS * 2, HS * 2};
    const uint32_t box[3] = {64, L::kRows, 1};
    return tensor_map(CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, base, 3, dims, strides, box, CU_TENSOR_MAP_SWIZZLE_128B);
  };
  const CUtensorMap q_map = map(q, s.NH), k_map = map(k, s.NKV), v_map = map(v, s.NKV);
  static const bool once = (check(cudaFuncSetAttribute(attention_forward_sm90_kernel<HS>,
                                                       cudaFuncAttributeMaxDynamicSharedMemorySize, L::kSmem),
                                  "cudaFuncSetAttribute"),
                            true);
  (void)once;
  const dim3 grid(static_cast<unsigned>((s.T + L::kRows - 1) / L::kRows), static_cast<unsigned>(s.NH),
                  static_cast<unsigned>(B));
  attention_forward_sm90_kernel<HS><<<grid, L::kThreads, L::kSmem, stream>>>(out, lse, q_map, k_map, v_map, s);
  check_launch("attention_forward (sm90)");
}

}  // namespace

bool attention_sm90_forward_fits(int64_t HS, const AttShape& s) {
  static const int major = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
      return 0;
    return v;
  }();
  return major == 9 && (HS == 64 || HS == 128) && s.window == 0 && s.aligned;
}

void attention_sm90_forward(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                            int64_t B, int64_t rows, int64_t HS, const AttShape& s, cudaStream_t stream) {
  require(attention_sm90_forward_fits(HS, s), "attention_forward",
          "the wgmma kernel needs an sm_90 GPU, HS 64 or 128, no sliding window and 16-byte aligned tensors");
  require(rows > 0 && rows + FwdLayout<64>::kRows <= INT_MAX, "attention_forward",
          "rows = " + std::to_string(rows) + ": the wgmma kernel's TMA coordinates need rows < 2^31 - 128");
  if (HS == 64) launch_forward<64>(out, lse, q, k, v, B, rows, s, stream);
  else launch_forward<128>(out, lse, q, k, v, B, rows, s, stream);
}

}  // namespace nvfp4::cuda::attention_detail
