// Shared by the CUDA operators' files (one per op family: attention.cu, norm.cu, rope.cu,
// embedding.cu, loss.cu, optim.cu, elementwise.cu, gemm.cu, kv_cache.cu, quantize_rows.cu; see
// include/nvfp4/cuda_ops.hpp for what each op computes, its shapes and its gradient convention):
// argument checks, launch sizes, BF16 loads and stores, row copies, cp.async, the producer-amax
// fold. Private to src/kernels/cuda/.
// The ops are the GPU twins of src/kernels/cpu/ (same file names): same formulas, FP32
// arithmetic in registers, BF16 storage for activations, rounded once when stored.
//
// What they are: straightforward, correct, deterministic kernels.
//   elementwise ops    one thread per 8 consecutive elements (16-byte loads when aligned)
//   row ops            one warp per row (RMSNorm, NVFP4 row quantizer), one CTA per row (cross-entropy)
//   matmuls            cuBLASLt, BF16 operands, FP32 accumulation
//   attention          FlashAttention-2 on the tensor cores (mma.sync BF16, FP32 accumulation):
//                      one CTA per 64-row tile, K/V tiles double-buffered through shared
//                      memory, online softmax in registers, the log-sum-exp saved; no T x T
//                      matrix in memory; the backward recomputes probabilities. P and dS are
//                      rounded to BF16 as the operands of their products (as FlashAttention)
//   reductions         fixed-order partial sums (never float atomics)
//   KV-cache attention one CTA per (row, kv head) on the CUDA cores, keys split over its warps
//                      with an online softmax each, combined in warp order (kv_cache.cu)
// What they are not (yet): wgmma/TMA attention, fused norms+GEMMs, a persistent grid.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "nvfp4/cuda_check.hpp"
#include "nvfp4/cuda_ops.hpp"
#include "kernels/require.hpp"
#include "nvfp4/error.hpp"

// The op files say `using namespace ops_detail;` at the top of nvfp4::cuda.
namespace nvfp4::cuda::ops_detail {

// ---- host-side checks ---------------------------------------------------------------------

inline void require(bool ok, const char* op, const std::string& what) { kernels::require(ok, "cuda", op, what); }
inline void require_nonnegative(const char* op, std::initializer_list<std::pair<const char*, int64_t>> dims) {
  kernels::require_nonnegative("cuda", op, dims);
}
inline void require_head_groups(const char* op, int64_t NH, int64_t NKV) {
  kernels::require_head_groups("cuda", op, NH, NKV);
}

inline void require_ptr(const void* p, const char* op, const char* name) {
  require(p != nullptr, op, std::string(name) + " is null");
}

// The output types of the GEMMs that accumulate in FP32: BF16 or F32 (names the one given).
inline void require_bf16_or_f32_out(const char* op, DType out_dtype) {
  require(out_dtype == DType::BF16 || out_dtype == DType::F32, op,
          "out must be BF16 or F32, not " + std::string(dtype_name(out_dtype)));
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

constexpr int kThreads = 256;  // elementwise and row kernels
constexpr int kVec = 8;        // BF16 elements per 16-byte vector

// Blocks for `items` work items of one thread each (grid-stride loops cover the rest).
inline unsigned grid_for(int64_t items, int threads = kThreads) {
  const int64_t blocks = (items + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, INT_MAX));
}

// The current device's SM count, asked once per device.
inline int sm_count() {
  static std::mutex mu;
  static std::map<int, int> known;
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  const std::lock_guard<std::mutex> lock(mu);
  const auto it = known.find(dev);
  if (it != known.end()) return it->second;
  int sms = 0;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  return known[dev] = std::max(1, sms);
}

// Blocks of kThreads threads that fit on the device at once for `kernel` (its registers and
// shared memory decide how many an SM holds), asked of the CUDA occupancy calculator once per
// kernel and device.
inline int resident_blocks(const void* kernel) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, int> known;
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  const std::lock_guard<std::mutex> lock(mu);
  const auto it = known.find({kernel, dev});
  if (it != known.end()) return it->second;
  int per_sm = 0;
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0),
        "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  return known[{kernel, dev}] = std::max(1, per_sm) * sm_count();
}

// The same as grid_for, at most one resident wave of `kernel` when it folds an amax (see
// "producer amax" below): each thread then loops over several items and folds its maximum once,
// instead of every short-lived warp ending on a read of the global maximum. The wave is what
// the occupancy calculator says fits: a fixed 2048 threads per SM (the first version) overshot
// for kernels of more than 32 registers, and their second, partial wave cost the H100 RMSNorm
// forward +15 % and SwiGLU backward +8 % over the same kernels without amax (batch 64 x 1024).
// (Blocks of kThreads threads; per_block: the items a block takes per round.)
template <class Kernel>
inline unsigned grid_for(Kernel kernel, int64_t items, const float* amax, int per_block = kThreads) {
  const unsigned blocks = grid_for(items, per_block);
  if (amax == nullptr) return blocks;
  return std::min<unsigned>(blocks, static_cast<unsigned>(resident_blocks(reinterpret_cast<const void*>(kernel))));
}

// ---- device helpers -------------------------------------------------------------------------

__device__ __forceinline__ float bf16_to_f32(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }
// NOTE: cvt.rn.bf16.f32: round to nearest even, the same as fmt::bf16_encode for non-NaN values.
__device__ __forceinline__ uint16_t f32_to_bf16(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }

// Elements [i, i + 8) of a BF16 array of n elements as FP32; missing ones read as 0.
// kAligned: the array is 16-byte aligned (i is always a multiple of 8).
template <bool kAligned>
__device__ __forceinline__ void load8(const uint16_t* p, int64_t i, int64_t n, float (&v)[8]) {
  if (kAligned && i + 8 <= n) {
    const uint4 u = *reinterpret_cast<const uint4*>(p + i);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      v[2 * e] = __uint_as_float(w[e] << 16);  // the lower address is the low half
      v[2 * e + 1] = __uint_as_float(w[e] & 0xFFFF0000u);
    }
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = i + e < n ? bf16_to_f32(p[i + e]) : 0.0f;
  }
}

template <bool kAligned>
__device__ __forceinline__ void store8(uint16_t* p, int64_t i, int64_t n, const float (&v)[8]) {
  if (kAligned && i + 8 <= n) {
    uint32_t w[4];
#pragma unroll
    for (int e = 0; e < 4; ++e)
      w[e] = static_cast<uint32_t>(f32_to_bf16(v[2 * e])) | (static_cast<uint32_t>(f32_to_bf16(v[2 * e + 1])) << 16);
    *reinterpret_cast<uint4*>(p + i) = make_uint4(w[0], w[1], w[2], w[3]);
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e)
      if (i + e < n) p[i + e] = f32_to_bf16(v[e]);
  }
}

// Sum over the warp by butterfly shuffles: every lane adds the same two partial sums at every
// level (in either order: the sum is commutative), so every lane holds the same bits.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  return v;
}

// RoPE's rotation of the pair (x1, x2) = (x[i], x[i + HS/2]) by the angle of cosine c, sine s
// (rope_forward, rope_rows and qkv_rows share it). Each product and sum rounded on its own: left
// to the compiler, which product joins the subtraction in an FMA depended on the kernel around
// it, and two kernels' bits differed (measured on the H100).
__device__ __forceinline__ void rope_rotate(float x1, float x2, float c, float s, float& y1, float& y2) {
  y1 = __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
  y2 = __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s));
}

// One step of a sum of squares, ss + v * v as one FMA (what `ss += v * v` compiles to), written out
// so every kernel that must agree with rmsnorm_forward's sum does.
__device__ __forceinline__ float add_square(float ss, float v) { return __fmaf_rn(v, v, ss); }

// A warp walking a row (one warp per row: RMSNorm) takes its lanes' 8-element chunks kRowBatch
// rounds at a time: all of a batch's loads are issued before any is used, so a decode step's
// single-row norm waits for memory once per batch instead of once per chunk. Each lane still
// handles its chunks l, l + 32, ... in order, so the arithmetic (and every bit) is unchanged.
constexpr int kRowBatch = 4;
constexpr int64_t kRowBatchSpan = int64_t{kRowBatch} * 32 * kVec;  // elements of a row per batch

// rmsnorm_forward's scale of one row of C BF16 values, 1 / sqrt(mean of squares + eps), the same in
// every lane: lane l sums the squares of its 8-element chunks l, l + 32, ... in order, then
// warp_sum. qkv_rows' head norms call it too, so their bits are rmsnorm_forward's by construction.
template <bool kAligned>
__device__ __forceinline__ float warp_row_rstd(const uint16_t* x, int64_t C, float eps, int lane) {
  float ss = 0.0f;
  for (int64_t c0 = lane * kVec; c0 < C; c0 += kRowBatchSpan) {
    float v[kRowBatch][8];
#pragma unroll
    for (int b = 0; b < kRowBatch; ++b) {
      if (c0 + b * 32 * kVec < C) load8<kAligned>(x, c0 + b * 32 * kVec, C, v[b]);
    }
#pragma unroll
    for (int b = 0; b < kRowBatch; ++b) {
      if (c0 + b * 32 * kVec < C) {
#pragma unroll
        for (int e = 0; e < 8; ++e) ss = add_square(ss, v[b][e]);
      }
    }
  }
  ss = warp_sum(ss);
  return 1.0f / sqrtf(ss / static_cast<float>(C) + eps);
}

// SwiGLU of one element: silu(g) * u, silu(g) = g * sigmoid(g) (swiglu_forward and swiglu_rows).
__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float swiglu_value(float g, float u) { return (g * sigmoidf(g)) * u; }

// ---- producer amax ------------------------------------------------------------------------------
//
// Kernels whose BF16 output a quantizer reads next can fold max |output| into a caller-zeroed
// float (see the ops' `amax` parameters): the quantizer then needs no pass of its own to find it.
// Values are taken as stored (BF16-rounded); NaN does not raise it (fmaxf), and the quantizer
// reading the tensor counts non-finite values.

// max(m, |v|) over 8 values before their BF16 rounding: fold_amax rounds the maximum once,
// which is the maximum of the rounded magnitudes (RNE is monotonic and symmetric).
__device__ __forceinline__ float max_abs8(float m, const float (&v)[8]) {
#pragma unroll
  for (int e = 0; e < 8; ++e) m = fmaxf(m, fabsf(v[e]));
  return m;
}

// Folds each thread's m (a max |value| before BF16 rounding) into *amax as the stored value's:
// rounded to BF16, a warp maximum, then one atomicMax per warp (on the bits: non-negative
// floats order like them), skipped when it cannot raise the stored value. No block barrier:
// threads may have returned early. Call from every thread that has not.
__device__ __forceinline__ void fold_amax(float* amax, float m) {
  if (amax == nullptr) return;
  const unsigned lanes = __activemask();
  const uint32_t bits = __reduce_max_sync(lanes, __float_as_uint(bf16_to_f32(f32_to_bf16(m))));
  if ((threadIdx.x & 31) == static_cast<unsigned>(__ffs(lanes) - 1) &&
      bits > *reinterpret_cast<volatile uint32_t*>(amax)) {
    atomicMax(reinterpret_cast<unsigned int*>(amax), bits);
  }
}

// ---- fixed-order column sums (rmsnorm_backward's dweight, bias_backward) ---------------------------
//
// A parameter gradient that sums a (N, C) BF16 tensor's rows, deterministically and the same on
// every device: the rows are cut into fixed chunks of kColumnChunkRows; a first kernel (the op's
// own) writes each chunk's per-column sum, its rows in increasing order, to partial
// (ceil(N / kColumnChunkRows), C) fp32; column_chunks_add_kernel then adds the chunks per column
// in a fixed order — kColumnRuns runs of consecutive chunks, each summed in increasing order by
// one warp, then the runs' sums in increasing order — into dst (C) fp32 (+=). A block takes 32
// columns (lane = column), so each warp reads 128 contiguous bytes a chunk. (The first version
// summed every chunk in one thread per column: 3 blocks for C = 768, 115 us a call at 64 x 1024
// tokens on the H100.)

constexpr int kColumnChunkRows = 64;
constexpr int kColumnRuns = 32;

inline int64_t column_chunks(int64_t N) { return (N + kColumnChunkRows - 1) / kColumnChunkRows; }

// NOTE: a template so that every op file including this header may launch it.
template <int kRuns = kColumnRuns>
__global__ void __launch_bounds__(32 * kRuns) column_chunks_add_kernel(float* __restrict__ dst,
                                                                       const float* __restrict__ partial,
                                                                       int64_t chunks, int64_t C) {
  __shared__ float sums[kRuns][33];
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + lane;
  const int64_t per = (chunks + kRuns - 1) / kRuns;
  const int64_t ch0 = warp * per, ch1 = min(chunks, ch0 + per);
  float acc = 0.0f;
  if (c < C)
    for (int64_t ch = ch0; ch < ch1; ++ch) acc += partial[ch * C + c];
  sums[warp][lane] = acc;
  __syncthreads();
  if (warp != 0 || c >= C) return;
  float total = 0.0f;
  for (int w = 0; w < kRuns; ++w) total += sums[w][lane];
  dst[c] += total;
}

inline void launch_column_chunks_add(float* dst, const float* partial, int64_t chunks, int64_t C, Stream stream) {
  column_chunks_add_kernel<><<<static_cast<unsigned>((C + 31) / 32), 32 * kColumnRuns, 0, stream>>>(dst, partial,
                                                                                                    chunks, C);
}

// ---- asynchronous copies into shared memory (attention, kv_cache) ------------------------------------

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared without a register round trip; both addresses 16-byte aligned.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most one committed group of this thread is still in flight.
__device__ __forceinline__ void cp_async_wait_prev() { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }
// Waits until none is.
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
// Waits until at most N committed groups of this thread are still in flight (a pipeline of N + 1 stages).
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }
// 4 bytes global -> shared (both addresses 4-byte aligned).
__device__ __forceinline__ void cp_async4(uint32_t dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(src) : "memory");
}

// ---- tensor-core fragments (mma.sync m16n8k16 BF16: attention, the fused NVFP4 GEMV/GEMM) ----------------

// Four 8x8 BF16 matrices; lanes 8i .. 8i+7 give the row addresses of matrix i.
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// d (16, 8) fp32 += a (16, 16) bf16 · b (16, 8) bf16. Fragments (g = lane / 4, t = lane % 4; pairs
// in a register low half first): a[0] = A[g][2t, 2t+1], a[1] = A[g+8][2t, 2t+1], a[2] = A[g][2t+8, 2t+9],
// a[3] = A[g+8][2t+8, 2t+9]; b0 = B[2t, 2t+1][g], b1 = B[2t+8, 2t+9][g]; d[0, 1] = D[g][2t, 2t+1],
// d[2, 3] = D[g+8][2t, 2t+1].
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ---- row copies (gather_rows, kv_append) ---------------------------------------------------------------

// A grid-stride loop over a (rows, C) array in 8-element chunks of one row each (a row of
// C % 8 != 0 ends in a short chunk): item idx is row idx / chunks, columns from (idx % chunks) * 8.
#define NVFP4_FOR_ROW_CHUNKS(idx, rows, chunks)                                                            \
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < (rows) * (chunks); \
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x)

// dst[i, i + 8) = src[i, i + 8) of n-element BF16 arrays, the bits unchanged (NaN payloads too).
// kAligned: both arrays 16-byte aligned (i is a multiple of 8).
template <bool kAligned>
__device__ __forceinline__ void copy8(uint16_t* dst, const uint16_t* src, int64_t i, int64_t n) {
  if (kAligned && i + 8 <= n) {
    *reinterpret_cast<uint4*>(dst + i) = *reinterpret_cast<const uint4*>(src + i);
  } else {
    for (int64_t e = i; e < i + 8 && e < n; ++e) dst[e] = src[e];
  }
}

// Launches kernel<true> when `aligned`, else kernel<false>.
#define NVFP4_LAUNCH_ALIGNED(aligned, kernel, grid, block, smem, stream, ...) \
  do {                                                                         \
    if (aligned) kernel<true><<<grid, block, smem, stream>>>(__VA_ARGS__);     \
    else kernel<false><<<grid, block, smem, stream>>>(__VA_ARGS__);            \
  } while (0)

// The same for a producer folding `amax`: kThreads per block, one resident wave of the chosen
// instance when amax is non-null (grid_for(kernel, items, amax, per_block)).
#define NVFP4_LAUNCH_PRODUCER(aligned, kernel, items, per_block, amax, stream, ...)                               \
  do {                                                                                                            \
    if (aligned)                                                                                                  \
      kernel<true><<<grid_for(kernel<true>, items, amax, per_block), kThreads, 0, stream>>>(__VA_ARGS__);   \
    else                                                                                                          \
      kernel<false><<<grid_for(kernel<false>, items, amax, per_block), kThreads, 0, stream>>>(__VA_ARGS__); \
  } while (0)

// ---- programmatic dependent launch (the inference step's chain of kernels) ------------------------
//
// On Hopper a kernel may be launched while the previous kernel of its stream is still running
// (cudaLaunchAttributeProgrammaticStreamSerialization): its CTAs are scheduled as SMs free up and
// run until dependent_wait(), which returns once the previous kernel has finished and its memory
// is visible. A decode step is a chain of ~9 kernels per layer, several of them one or a few CTAs;
// launched this way, each kernel's launch and start (for gemv_bf16: its first weight loads, which
// depend on nothing) overlap the previous kernel's tail instead of following it.
// Rules for a kernel launched with launch_dependent: before dependent_wait() it touches only data
// no kernel of the step writes (weights); right after, it calls dependent_trigger() so that the
// next kernel may be scheduled (it then waits in its own dependent_wait() for this one to finish).
// Launched normally, both are no-ops. cuda::set_dependent_launch(false) turns it off (A/B timing).
__device__ __forceinline__ void dependent_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void dependent_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// kernel<<<grid, block, smem, stream>>>(args...), as a programmatic dependent launch unless
// cuda::dependent_launch() is off; with cluster_x > 0, in thread-block clusters of cluster_x x 1 x
// 1 CTAs (grid.x a multiple of it; 1 is a cluster of one CTA, as a kernel using the cluster API
// needs).
template <typename... Params, typename... Args>
void launch_dependent_cluster(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                              unsigned cluster_x, Args&&... args) {
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  if (cluster_x > 0) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = cluster_x;
    attr[n].val.clusterDim.y = 1;
    attr[n].val.clusterDim.z = 1;
    ++n;
  }
  if (dependent_launch()) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = attr;
  config.numAttrs = n;
  check(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...), "cudaLaunchKernelEx");
}
template <typename... Params, typename... Args>
void launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                      Args&&... args) {
  launch_dependent_cluster(kernel, grid, block, smem, stream, 0u, std::forward<Args>(args)...);
}

// NVFP4_LAUNCH_ALIGNED and NVFP4_LAUNCH_PRODUCER through launch_dependent.
#define NVFP4_LAUNCH_ALIGNED_DEPENDENT(aligned, kernel, grid, block, smem, stream, ...)        \
  do {                                                                                         \
    if (aligned) launch_dependent(kernel<true>, grid, block, smem, stream, __VA_ARGS__);       \
    else launch_dependent(kernel<false>, grid, block, smem, stream, __VA_ARGS__);              \
  } while (0)
#define NVFP4_LAUNCH_PRODUCER_DEPENDENT(aligned, kernel, items, per_block, amax, stream, ...)                     \
  do {                                                                                                            \
    if (aligned)                                                                                                  \
      launch_dependent(kernel<true>, grid_for(kernel<true>, items, amax, per_block), kThreads, 0, stream,        \
                       __VA_ARGS__);                                                                              \
    else                                                                                                          \
      launch_dependent(kernel<false>, grid_for(kernel<false>, items, amax, per_block), kThreads, 0, stream,      \
                       __VA_ARGS__);                                                                              \
  } while (0)

}  // namespace nvfp4::cuda::ops_detail
