// CUDA training operators (see include/nvfp4/cuda_ops.hpp for what each computes, its shapes
// and its gradient convention). The GPU twins of src/kernels/cpu/ops.cpp: same formulas, FP32
// arithmetic in registers, BF16 storage for activations, rounded once when stored.
//
// What it is: straightforward, correct, deterministic kernels.
//   elementwise ops    one thread per 8 consecutive elements (16-byte loads when aligned)
//   row ops            one warp per row (RMSNorm), one CTA per row (cross-entropy)
//   matmuls            cuBLASLt, BF16 operands, FP32 accumulation
//   attention          FlashAttention-2 on the tensor cores (mma.sync BF16, FP32 accumulation):
//                      one CTA per 64-row tile, K/V tiles double-buffered through shared
//                      memory, online softmax in registers, the log-sum-exp saved; no T x T
//                      matrix in memory; the backward recomputes probabilities. P and dS are
//                      rounded to BF16 as the operands of their products (as FlashAttention)
//   reductions         fixed-order partial sums (never float atomics)
// What it is not (yet): wgmma/TMA attention, fused norms+GEMMs, a persistent grid.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <compare>
#include <cub/device/device_radix_sort.cuh>
#include <initializer_list>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>

#include "kernels/cpu/ops.hpp"  // cpu::kEncoderChunk: the order of the embedding gradient's additions
#include "nvfp4/cuda_check.hpp"
#include "nvfp4/cuda_ops.hpp"
#include "nvfp4/error.hpp"

namespace nvfp4::cuda {

namespace {

// ---- host-side checks ---------------------------------------------------------------------

void require(bool ok, const char* op, const std::string& what) {
  if (!ok) throw Error(std::string("cuda::") + op + ": " + what);
}

void require_nonnegative(const char* op, std::initializer_list<std::pair<const char*, int64_t>> dims) {
  for (const auto& [name, value] : dims)
    require(value >= 0, op, std::string(name) + " = " + std::to_string(value) + " is negative");
}

void require_ptr(const void* p, const char* op, const char* name) {
  require(p != nullptr, op, std::string(name) + " is null");
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

constexpr int kThreads = 256;  // elementwise and row kernels
constexpr int kVec = 8;        // BF16 elements per 16-byte vector

// Blocks for `items` work items of one thread each (grid-stride loops cover the rest).
unsigned grid_for(int64_t items, int threads = kThreads) {
  const int64_t blocks = (items + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, INT_MAX));
}

// Blocks of kThreads threads that fit on the device at once for `kernel` (its registers and
// shared memory decide how many an SM holds), asked of the CUDA occupancy calculator once per
// kernel and device.
int resident_blocks(const void* kernel) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, int> known;
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  const std::lock_guard<std::mutex> lock(mu);
  const auto it = known.find({kernel, dev});
  if (it != known.end()) return it->second;
  int sms = 0, per_sm = 0;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0),
        "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  return known[{kernel, dev}] = std::max(1, per_sm) * std::max(1, sms);
}

// The same as grid_for, at most one resident wave of `kernel` when it folds an amax (see
// "producer amax" below): each thread then loops over several items and folds its maximum once,
// instead of every short-lived warp ending on a read of the global maximum. The wave is what
// the occupancy calculator says fits: a fixed 2048 threads per SM (the first version) overshot
// for kernels of more than 32 registers, and their second, partial wave cost the H100 RMSNorm
// forward +15 % and SwiGLU backward +8 % over the same kernels without amax (batch 64 x 1024).
// (Blocks of kThreads threads; per_block: the items a block takes per round.)
template <class Kernel>
unsigned grid_for(Kernel kernel, int64_t items, const float* amax, int per_block = kThreads) {
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

template <bool kAligned>
__device__ __forceinline__ void load8f(const float* p, int64_t i, int64_t n, float (&v)[8]) {
  if (kAligned && i + 8 <= n) {
    const float4 a = *reinterpret_cast<const float4*>(p + i), b = *reinterpret_cast<const float4*>(p + i + 4);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = i + e < n ? p[i + e] : 0.0f;
  }
}

template <bool kAligned>
__device__ __forceinline__ void store8f(float* p, int64_t i, int64_t n, const float (&v)[8]) {
  if (kAligned && i + 8 <= n) {
    *reinterpret_cast<float4*>(p + i) = make_float4(v[0], v[1], v[2], v[3]);
    *reinterpret_cast<float4*>(p + i + 4) = make_float4(v[4], v[5], v[6], v[7]);
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e)
      if (i + e < n) p[i + e] = v[e];
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  return v;
}

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

// Grid-stride loop over the 8-element chunks of an n-element array: i is the chunk's first index.
#define NVFP4_FOR_CHUNKS(i, n)                                                                   \
  for (int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kVec; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x * kVec)

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

// ---- elementwise kernels ------------------------------------------------------------------------

template <bool kAligned>
__global__ void residual_kernel(uint16_t* out, const uint16_t* a, const uint16_t* b, int64_t n) {
  NVFP4_FOR_CHUNKS(i, n) {
    float x[8], y[8];
    load8<kAligned>(a, i, n, x);
    load8<kAligned>(b, i, n, y);
#pragma unroll
    for (int e = 0; e < 8; ++e) x[e] += y[e];
    store8<kAligned>(out, i, n, x);  // out may be a or b: this thread read its chunk first
  }
}

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

template <bool kAligned>
__global__ void swiglu_forward_kernel(uint16_t* out, const uint16_t* gate, const uint16_t* up, int64_t n, float* amax) {
  float m = 0.0f;
  NVFP4_FOR_CHUNKS(i, n) {
    float g[8], u[8];
    load8<kAligned>(gate, i, n, g);
    load8<kAligned>(up, i, n, u);
#pragma unroll
    for (int e = 0; e < 8; ++e) g[e] = (g[e] * sigmoidf(g[e])) * u[e];
    store8<kAligned>(out, i, n, g);
    if (amax) m = max_abs8(m, g);
  }
  fold_amax(amax, m);
}

template <bool kAligned>
__global__ void swiglu_backward_kernel(uint16_t* dgate, uint16_t* dup, const uint16_t* dout, const uint16_t* gate,
                                       const uint16_t* up, int64_t n, float* amax_dgate, float* amax_dup) {
  float mg = 0.0f, mu = 0.0f;
  NVFP4_FOR_CHUNKS(i, n) {
    float dy[8], g[8], u[8], dg[8], du[8];
    load8<kAligned>(dout, i, n, dy);
    load8<kAligned>(gate, i, n, g);
    load8<kAligned>(up, i, n, u);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const float s = sigmoidf(g[e]);
      dg[e] = dy[e] * u[e] * (s * (1.0f + g[e] * (1.0f - s)));  // d silu / dx = s (1 + x (1 - s))
      du[e] = dy[e] * (g[e] * s);
    }
    store8<kAligned>(dgate, i, n, dg);
    store8<kAligned>(dup, i, n, du);
    if (amax_dgate) mg = max_abs8(mg, dg);
    if (amax_dup) mu = max_abs8(mu, du);
  }
  fold_amax(amax_dgate, mg);
  fold_amax(amax_dup, mu);
}

template <bool kAligned>
__global__ void f32_to_bf16_kernel(uint16_t* out, const float* in, int64_t n) {
  NVFP4_FOR_CHUNKS(i, n) {
    float v[8];
    load8f<kAligned>(in, i, n, v);
    store8<kAligned>(out, i, n, v);
  }
}

template <bool kAligned>
__global__ void bf16_to_f32_kernel(float* out, const uint16_t* in, int64_t n) {
  NVFP4_FOR_CHUNKS(i, n) {
    float v[8];
    load8<kAligned>(in, i, n, v);
    store8f<kAligned>(out, i, n, v);
  }
}

// ---- RMSNorm ----------------------------------------------------------------------------------
//
// One warp per row; lane l handles the 8-element chunks l, l + 32, ... The row is read twice
// (sum of squares, then the output): the second read hits L1/L2.

constexpr int kRowsPerBlock = kThreads / 32;
constexpr int kNormChunkRows = 64;  // dweight partial sums: fixed row chunks (device-independent bits)

template <bool kAligned>
__global__ void __launch_bounds__(kThreads) rmsnorm_forward_kernel(uint16_t* __restrict__ out, float* __restrict__ rstd,
                                                                   const uint16_t* __restrict__ inp,
                                                                   const uint16_t* __restrict__ weight, int64_t N,
                                                                   int64_t C, float eps, float* amax) {
  const int lane = threadIdx.x & 31;
  float m = 0.0f;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32; row < N;
       row += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const uint16_t* x = inp + row * C;  // (C)
    float ss = 0.0f;
    for (int64_t c = lane * kVec; c < C; c += 32 * kVec) {
      float v[8];
      load8<kAligned>(x, c, C, v);
#pragma unroll
      for (int e = 0; e < 8; ++e) ss += v[e] * v[e];
    }
    ss = warp_sum(ss);
    const float r = 1.0f / sqrtf(ss / static_cast<float>(C) + eps);
    uint16_t* o = out + row * C;
    for (int64_t c = lane * kVec; c < C; c += 32 * kVec) {
      float v[8], w[8];
      load8<kAligned>(x, c, C, v);
      load8<kAligned>(weight, c, C, w);
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = (v[e] * r) * w[e];
      store8<kAligned>(o, c, C, v);
      if (amax) m = max_abs8(m, v);
    }
    if (lane == 0) rstd[row] = r;
  }
  fold_amax(amax, m);
}

// dinp += rstd * (g - xhat * mean(g * xhat)), g = dout * weight, xhat = inp * rstd: warp per row.
template <bool kAligned>
__global__ void __launch_bounds__(kThreads) rmsnorm_backward_dinp_kernel(uint16_t* __restrict__ dinp,
                                                                         const uint16_t* __restrict__ dout,
                                                                         const uint16_t* __restrict__ inp,
                                                                         const uint16_t* __restrict__ weight,
                                                                         const float* __restrict__ rstd, int64_t N,
                                                                         int64_t C, float* amax) {
  const int lane = threadIdx.x & 31;
  float m = 0.0f;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32; row < N;
       row += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const uint16_t* x = inp + row * C;
    const uint16_t* dy = dout + row * C;
    uint16_t* dx = dinp + row * C;
    const float r = rstd[row];
    float dot = 0.0f;
    for (int64_t c = lane * kVec; c < C; c += 32 * kVec) {
      float xv[8], gv[8], wv[8];
      load8<kAligned>(x, c, C, xv);
      load8<kAligned>(dy, c, C, gv);
      load8<kAligned>(weight, c, C, wv);
#pragma unroll
      for (int e = 0; e < 8; ++e) dot += (gv[e] * wv[e]) * (xv[e] * r);
    }
    const float mean = warp_sum(dot) / static_cast<float>(C);
    for (int64_t c = lane * kVec; c < C; c += 32 * kVec) {
      float xv[8], gv[8], wv[8], d[8];
      load8<kAligned>(x, c, C, xv);
      load8<kAligned>(dy, c, C, gv);
      load8<kAligned>(weight, c, C, wv);
      load8<kAligned>(dx, c, C, d);
#pragma unroll
      for (int e = 0; e < 8; ++e) d[e] += r * ((gv[e] * wv[e]) - (xv[e] * r) * mean);
      store8<kAligned>(dx, c, C, d);
      if (amax) m = max_abs8(m, d);
    }
  }
  fold_amax(amax, m);
}

// partial[chunk, c] = sum over the chunk's rows (increasing) of dout * inp * rstd.
// grid (chunks, ceil(C / kThreads)); one thread per channel: a warp reads 64 contiguous bytes a row.
__global__ void __launch_bounds__(kThreads) rmsnorm_dweight_partial_kernel(float* __restrict__ partial,
                                                                           const uint16_t* __restrict__ dout,
                                                                           const uint16_t* __restrict__ inp,
                                                                           const float* __restrict__ rstd, int64_t N,
                                                                           int64_t C) {
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kThreads + threadIdx.x;
  if (c >= C) return;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kNormChunkRows;
  const int64_t n1 = min(N, n0 + kNormChunkRows);
  float acc = 0.0f;
  for (int64_t n = n0; n < n1; ++n) acc += bf16_to_f32(dout[n * C + c]) * (bf16_to_f32(inp[n * C + c]) * rstd[n]);
  partial[blockIdx.x * C + c] = acc;
}

// dweight[c] += the sum over chunks of partial[chunk, c], in a fixed order: the chunks are cut
// into kDwGroups runs of consecutive chunks, each summed in increasing order by one warp, and the
// runs' sums are added in increasing order. A block takes 32 channels (lane = channel), so each
// warp reads 128 contiguous bytes a chunk. (The first version summed every chunk in one thread
// per channel: 3 blocks for C = 768, 115 us a call at 64 x 1024 tokens on the H100.)
constexpr int kDwGroups = 32;
__global__ void __launch_bounds__(32 * kDwGroups) rmsnorm_dweight_reduce_kernel(float* __restrict__ dweight,
                                                                                const float* __restrict__ partial,
                                                                                int64_t chunks, int64_t C) {
  __shared__ float sums[kDwGroups][33];
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + lane;
  const int64_t per = (chunks + kDwGroups - 1) / kDwGroups;
  const int64_t ch0 = warp * per, ch1 = min(chunks, ch0 + per);
  float acc = 0.0f;
  if (c < C)
    for (int64_t ch = ch0; ch < ch1; ++ch) acc += partial[ch * C + c];
  sums[warp][lane] = acc;
  __syncthreads();
  if (warp != 0 || c >= C) return;
  float total = 0.0f;
  for (int w = 0; w < kDwGroups; ++w) total += sums[w][lane];
  dweight[c] += total;
}

// ---- RoPE ------------------------------------------------------------------------------------------
//
// A block takes `tpb` consecutive (b, t) rows. It first computes the cos and sin of their angles
// into shared memory — half of them per token, each exactly the CPU op's FP32 expression (HF's):
// inv_freq = 1 / theta^(2i/HS), angle = float(t) * inv_freq — then rotates every head of those
// tokens with them, so each angle is computed once per token instead of once per head (powf and
// sincosf cost more than the pair's memory traffic). kVec8: a thread rotates 8 pairs (i..i+7 with
// i+HS/2..) through 16-byte loads (HS/2 a multiple of 8, tensors 16-byte aligned); else one pair.
// NOTE: CUDA's powf and sincosf are within 2 ulp, not glibc's bits.

template <int W>
__device__ __forceinline__ void load_w(const uint16_t* p, float (&v)[W]) {
  if constexpr (W == 8) load8<true>(p, 0, 8, v);
  else v[0] = bf16_to_f32(p[0]);
}
template <int W>
__device__ __forceinline__ void store_w(uint16_t* p, const float (&v)[W]) {
  if constexpr (W == 8) store8<true>(p, 0, 8, v);
  else p[0] = f32_to_bf16(v[0]);
}

template <bool kBackward, bool kVec8>
__global__ void __launch_bounds__(kThreads) rope_kernel(uint16_t* out, const uint16_t* inp, int tokens /* B*T */,
                                                        int T, int NH, int HS, int tpb, float theta, float* amax,
                                                        bool accumulate) {
  extern __shared__ float2 rope_cs[];  // [tpb][HS/2]: (cos, sin)
  constexpr int W = kVec8 ? 8 : 1;
  const int half = HS / 2;
  const int tok0 = blockIdx.x * tpb;
  const int ntok = min(tpb, tokens - tok0);
  for (int j = threadIdx.x; j < ntok * half; j += blockDim.x) {
    const int i = j % half, t = (tok0 + j / half) % T;
    const float inv_freq = 1.0f / powf(theta, static_cast<float>(2 * i) / static_cast<float>(HS));
    const float angle = static_cast<float>(t) * inv_freq;
    float sn, cs;
    sincosf(angle, &sn, &cs);
    rope_cs[j] = make_float2(cs, sn);
  }
  __syncthreads();
  const int per_head = half / W, per_tok = NH * per_head;
  float m = 0.0f;
  for (int u = threadIdx.x; u < ntok * per_tok; u += blockDim.x) {
    const int tt = u / per_tok, r = u % per_tok;
    const int h = r / per_head, i0 = (r % per_head) * W;
    const int64_t base = (static_cast<int64_t>(tok0 + tt) * NH + h) * HS + i0;
    const float2* cs = rope_cs + tt * half + i0;
    float x1[W], x2[W], y1[W], y2[W];
    load_w<W>(inp + base, x1);  // both halves read first: out may be inp
    load_w<W>(inp + base + half, x2);
    if constexpr (!kBackward) {
#pragma unroll
      for (int e = 0; e < W; ++e) {
        y1[e] = x1[e] * cs[e].x - x2[e] * cs[e].y;
        y2[e] = x2[e] * cs[e].x + x1[e] * cs[e].y;
      }
    } else {
      // The transpose of [[c, -s], [s, c]] is the rotation by -angle; added to dinp, or written.
      if (accumulate) {
        load_w<W>(out + base, y1);
        load_w<W>(out + base + half, y2);
      } else {
#pragma unroll
        for (int e = 0; e < W; ++e) y1[e] = y2[e] = 0.0f;
      }
#pragma unroll
      for (int e = 0; e < W; ++e) {
        y1[e] += x1[e] * cs[e].x + x2[e] * cs[e].y;
        y2[e] += x2[e] * cs[e].x - x1[e] * cs[e].y;
        if (amax) m = fmaxf(m, fmaxf(fabsf(y1[e]), fabsf(y2[e])));
      }
    }
    store_w<W>(out + base, y1);
    store_w<W>(out + base + half, y2);
  }
  fold_amax(amax, m);
}

// ---- attention -------------------------------------------------------------------------------------
//
// FlashAttention-2 on the tensor cores: BF16 operands, FP32 accumulation, through
// mma.sync.m16n8k16 (sm_80 and later; it runs as HMMA on the H100) with ldmatrix fragments.
// Layout: a CTA of 4 warps works on a tile of 64 rows (query rows in the forward and the dq
// kernel, key rows in the dk/dv kernel); warp w owns rows [16w, 16w + 16) of it, i.e. the M
// side of every product. Query and key tiles are both 64 rows, so the causal diagonal is the
// tile pair qt == kt: only it (and the ragged last tile) needs the mask.
// Tiles of Q, K, V, dO live in shared memory as BF16, rows padded to HS + 8 elements (16 bytes:
// the 8 row addresses of one ldmatrix land in distinct banks); rows past T are zeros and never
// stored. Roles:
//   producer   every thread copies 16-byte pieces of the next tile with cp.async (double
//              buffered: tile i+1 is in flight while tile i is used); pointers that are not
//              16-byte aligned take plain 2-byte loads into the same layout
//   consumer   each warp: scores for its 16 rows against the 64 rows of the other tile
//              (accumulators in registers), softmax / probabilities in FP32 registers, then the
//              probabilities (or dS), rounded to BF16, are the A operand of the next product
//              straight from the accumulator registers (FA2's register reuse)
//   epilogue   scale, round once to BF16, store rows < T
// Fragment legend (PTX ISA, mma.m16n8k16): lane = 4 g + t; an accumulator tile (16, 8) holds
// rows g (elements 0, 1) and g + 8 (2, 3), columns 2t and 2t + 1.
// NOTE: probabilities are exp2(s * scale * log2(e) - m) with m in log2 units; lse is saved in
// natural-log units (m * ln 2 + ln l), as before.

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <int HS>
struct AttMmaLayout {
  static_assert(HS % 32 == 0, "ldmatrix.x4 covers 16 head dims per k-step and 16 per pair of n-blocks");
  static constexpr int kTile = 64;                 // rows of every Q / K / V / dO tile
  static constexpr int kWarps = 4;                 // warp w owns tile rows [16w, 16w + 16)
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kPitch = HS + 8;            // BF16 elements per shared-memory row
  static constexpr int kTileElems = kTile * kPitch;
  static constexpr int kTileBytes = 2 * kTileElems;
  static constexpr int kDimSteps = HS / 16;        // k-steps of a product over the head dims
  static constexpr int kDimBlocks = HS / 8;        // n-blocks of an accumulator over the head dims
  static constexpr int kRowBlocks = kTile / 8;     // n-blocks of a score tile over 64 rows
  // Query rows per pass of the dk/dv kernel: two (16, 32) score tiles instead of two (16, 64)
  // keep HS = 128's dk and dv accumulators (64 registers each) clear of spills.
  static constexpr int kBwdPass = HS > 64 ? 32 : 64;
  static_assert(kTile % kBwdPass == 0 && kBwdPass % 16 == 0, "passes split the tile into k-steps of 16");
  static_assert(kTile == 16 * kWarps, "each warp owns 16 rows of the tile");
};

constexpr int kAttThreads = AttMmaLayout<64>::kThreads;
constexpr int kAttTile = AttMmaLayout<64>::kTile;

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most one committed group of this thread is still in flight.
__device__ __forceinline__ void cp_async_wait_prev() { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }

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

// d (16, 8) fp32 += a (16, 16) bf16 · b (16, 8) bf16
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two FP32 values as a BF16 pair (RNE), lo in the low half: the lower column of a fragment.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The A fragments (16 rows, 16 columns per k-step) of a warp's score-shaped accumulators
// acc (16, 8 N) fp32: n-blocks 2kk and 2kk + 1 form k-step kk (no shared-memory round trip).
template <int N>
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[N / 2][4], const float (&acc)[N][4]) {
  static_assert(N % 2 == 0, "a k-step of 16 is two n-blocks of 8");
#pragma unroll
  for (int kk = 0; kk < N / 2; ++kk) {
    a[kk][0] = pack_bf16(acc[2 * kk][0], acc[2 * kk][1]);
    a[kk][1] = pack_bf16(acc[2 * kk][2], acc[2 * kk][3]);
    a[kk][2] = pack_bf16(acc[2 * kk + 1][0], acc[2 * kk + 1][1]);
    a[kk][3] = pack_bf16(acc[2 * kk + 1][2], acc[2 * kk + 1][3]);
  }
}

// Fragment addresses in a tile of kPitch-element rows (lane = this thread's lane):
//   A operand, rows [r0, r0 + 16) x cols [c0, c0 + 16) of a row-major (M, K) tile
template <int HS>
__device__ __forceinline__ uint32_t a_frag_addr(const uint16_t* tile, int r0, int c0, int lane) {
  return smem_addr(tile + (r0 + (lane & 15)) * AttMmaLayout<HS>::kPitch + c0 + (lane >> 4) * 8);
}
//   B operands of two n-blocks, B[k][n] = tile[n][k]: tile rows [n0, n0 + 16), cols [k0, k0 + 16);
//   ldsm_x4 gives {b0, b1} of n-block n0 in r[0], r[1] and of n0 + 8 in r[2], r[3]
template <int HS>
__device__ __forceinline__ uint32_t bt_frag_addr(const uint16_t* tile, int n0, int k0, int lane) {
  return smem_addr(tile + (n0 + (lane & 7) + (lane >> 4) * 8) * AttMmaLayout<HS>::kPitch + k0 + ((lane >> 3) & 1) * 8);
}
//   B operands of two n-blocks, B[k][n] = tile[k][n]: tile rows [k0, k0 + 16), cols [n0, n0 + 16);
//   ldsm_x4_trans gives them in the same register order
template <int HS>
__device__ __forceinline__ uint32_t b_frag_addr(const uint16_t* tile, int k0, int n0, int lane) {
  return smem_addr(tile + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * AttMmaLayout<HS>::kPitch + n0 + (lane >> 4) * 8);
}

// acc (16, 8 N) += A (16, HS) · B where B[k][n] = tile[n0 + n][k] (a product with a row-major
// tile's transpose: Q·Kᵀ, dO·Vᵀ, K·Qᵀ, V·dOᵀ). A from shared memory at rows [r0, r0 + 16).
template <int HS, int N>
__device__ __forceinline__ void mma_abt(float (&acc)[N][4], const uint16_t* a_tile, int r0, const uint16_t* b_tile,
                                        int n0, int lane) {
  using L = AttMmaLayout<HS>;
#pragma unroll
  for (int kb = 0; kb < L::kDimSteps; ++kb) {
    uint32_t a[4];
    ldsm_x4(a, a_frag_addr<HS>(a_tile, r0, 16 * kb, lane));
#pragma unroll
    for (int nb2 = 0; nb2 < N / 2; ++nb2) {
      uint32_t b[4];
      ldsm_x4(b, bt_frag_addr<HS>(b_tile, n0 + 16 * nb2, 16 * kb, lane));
      mma_bf16(acc[2 * nb2], a, b[0], b[1]);
      mma_bf16(acc[2 * nb2 + 1], a, b[2], b[3]);
    }
  }
}

// acc (16, HS) += A (16, 16 KS) · tile rows [k0, k0 + 16 KS) (P·V, Pᵀ·dO, dSᵀ·Q, dS·K).
template <int HS, int KS>
__device__ __forceinline__ void mma_ab(float (&acc)[HS / 8][4], const uint32_t (&a)[KS][4], const uint16_t* b_tile,
                                       int k0, int lane) {
#pragma unroll
  for (int kk = 0; kk < KS; ++kk)
#pragma unroll
    for (int nb2 = 0; nb2 < HS / 16; ++nb2) {
      uint32_t b[4];
      ldsm_x4_trans(b, b_frag_addr<HS>(b_tile, k0 + 16 * kk, 16 * nb2, lane));
      mma_bf16(acc[2 * nb2], a[kk], b[0], b[1]);
      mma_bf16(acc[2 * nb2 + 1], a[kk], b[2], b[3]);
    }
}

// Producer: rows [row0, row0 + 64) of one head of a (T, heads, HS) BF16 tensor (g points at
// row 0 of that head; rows are row_stride elements apart) into a padded BF16 tile; rows >= T
// are zeros. Aligned: 16-byte cp.async (the caller commits and waits); else 2-byte loads.
template <int HS>
__device__ __forceinline__ void load_tile_async(uint16_t* tile, const uint16_t* g, int64_t row_stride, int row0,
                                                int T, bool aligned) {
  using L = AttMmaLayout<HS>;
  constexpr int kVecs = HS / kVec;
  for (int idx = threadIdx.x; idx < L::kTile * kVecs; idx += L::kThreads) {
    const int r = idx / kVecs, c = (idx % kVecs) * kVec;
    uint16_t* dst = tile + r * L::kPitch + c;
    if (row0 + r >= T) {
      *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
      continue;
    }
    const uint16_t* src = g + static_cast<int64_t>(row0 + r) * row_stride + c;
    if (aligned) {
      cp_async16(smem_addr(dst), src);
    } else {
#pragma unroll
      for (int e = 0; e < kVec; ++e) dst[e] = src[e];
    }
  }
}

// Epilogue: a warp's (16, HS) accumulator tile times `scale` as BF16 rows row0 + g and
// row0 + g + 8 (those < T) of one head (base: its row 0; rows row_stride elements apart).
template <int HS>
// Returns max |value| this thread stored, before BF16 rounding (for fold_amax).
__device__ __forceinline__ float store_acc_rows(uint16_t* base, int64_t row_stride, int row0, int T,
                                                const float (&acc)[HS / 8][4], float scale_lo, float scale_hi,
                                                int lane, bool aligned) {
  const int g = lane >> 2, t = lane & 3;
  float m = 0.0f;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = row0 + g + 8 * half;
    if (row >= T) continue;
    const float sc = half ? scale_hi : scale_lo;
    uint16_t* dst = base + static_cast<int64_t>(row) * row_stride + 2 * t;
#pragma unroll
    for (int nb = 0; nb < HS / 8; ++nb) {
      const float a = acc[nb][2 * half] * sc, b = acc[nb][2 * half + 1] * sc;
      m = fmaxf(m, fmaxf(fabsf(a), fabsf(b)));
      const uint32_t w = pack_bf16(a, b);
      if (aligned) {
        *reinterpret_cast<uint32_t*>(dst + 8 * nb) = w;
      } else {
        dst[8 * nb] = static_cast<uint16_t>(w & 0xFFFFu);
        dst[8 * nb + 1] = static_cast<uint16_t>(w >> 16);
      }
    }
  }
  return m;
}

struct AttShape {
  int T, NH, NKV;
  float scale;   // 1 / sqrt(HS)
  bool aligned;  // every BF16 tensor 16-byte aligned
  float* amax = nullptr;  // producer amax: of out (forward) or of dv (backward); may be null
};

template <int HS>
constexpr size_t att_forward_smem() {
  return static_cast<size_t>(AttMmaLayout<HS>::kTileBytes) * 5;  // Q, 2 stages of K and V
}

// Forward: one CTA per (query tile, head, batch); loops over key tiles 0..qt with an online
// softmax in registers.
template <int HS>
__global__ void __launch_bounds__(kAttThreads) attention_forward_mma_kernel(uint16_t* __restrict__ out,
                                                                            float* __restrict__ lse,
                                                                            const uint16_t* __restrict__ q,
                                                                            const uint16_t* __restrict__ k,
                                                                            const uint16_t* __restrict__ v,
                                                                            AttShape s) {
  using L = AttMmaLayout<HS>;
  extern __shared__ uint4 att_smem[];
  uint16_t* sQ = reinterpret_cast<uint16_t*>(att_smem);
  uint16_t* sK = sQ + L::kTileElems;      // stage i at sK + i * kTileElems
  uint16_t* sV = sK + 2 * L::kTileElems;  // likewise

  const int qt = gridDim.x - 1 - blockIdx.x;  // the longest (latest) query tiles start first
  const int h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / (s.NH / s.NKV);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int r0 = 16 * warp;  // the warp's rows in the tile
  const int64_t qstride = static_cast<int64_t>(s.NH) * HS, kstride = static_cast<int64_t>(s.NKV) * HS;
  const uint16_t* qb = q + static_cast<int64_t>(b) * s.T * qstride + h * HS;
  const uint16_t* kb = k + static_cast<int64_t>(b) * s.T * kstride + kvh * HS;
  const uint16_t* vb = v + static_cast<int64_t>(b) * s.T * kstride + kvh * HS;
  const float scale_log2 = s.scale * kLog2e;

  load_tile_async<HS>(sQ, qb, qstride, qt * L::kTile, s.T, s.aligned);
  load_tile_async<HS>(sK, kb, kstride, 0, s.T, s.aligned);
  load_tile_async<HS>(sV, vb, kstride, 0, s.T, s.aligned);
  cp_async_commit();

  float o[L::kDimBlocks][4] = {};
  float m[2] = {-INFINITY, -INFINITY};  // running max (log2 units) of rows g, g + 8
  float l[2] = {0.0f, 0.0f};            // this thread's part of the running sums

  for (int kt = 0; kt <= qt; ++kt) {
    const uint16_t* cK = sK + (kt & 1) * L::kTileElems;
    const uint16_t* cV = sV + (kt & 1) * L::kTileElems;
    __syncthreads();  // every warp is done with tile kt - 1, whose buffers receive tile kt + 1
    if (kt < qt) {
      load_tile_async<HS>(sK + ((kt + 1) & 1) * L::kTileElems, kb, kstride, (kt + 1) * L::kTile, s.T, s.aligned);
      load_tile_async<HS>(sV + ((kt + 1) & 1) * L::kTileElems, vb, kstride, (kt + 1) * L::kTile, s.T, s.aligned);
    }
    cp_async_commit();
    cp_async_wait_prev();  // tile kt (and Q) landed
    __syncthreads();

    // S = Q Kᵀ for the warp's 16 rows x 64 keys
    float sc[L::kRowBlocks][4] = {};
    mma_abt<HS, L::kRowBlocks>(sc, sQ, r0, cK, 0, lane);

    // scale (log2 units), causal mask on the diagonal tile, online softmax
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nb = 0; nb < L::kRowBlocks; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = sc[nb][e] * scale_log2;
        if (kt == qt && 8 * nb + 2 * t + (e & 1) > r0 + g + 8 * (e >> 1)) x = -INFINITY;
        sc[nb][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
    float alpha[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xFFFFFFFFu, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xFFFFFFFFu, mx[i], 2));
      // NOTE: key 0 is visible to every row, so m is finite after tile 0 and no exp sees -inf - -inf.
      const float m_new = fmaxf(m[i], mx[i]);
      alpha[i] = exp2f(m[i] - m_new);  // 0 on the first tile (m = -inf)
      m[i] = m_new;
      l[i] *= alpha[i];
    }
#pragma unroll
    for (int nb = 0; nb < L::kRowBlocks; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f(sc[nb][e] - m[e >> 1]);
        l[e >> 1] += p;
        sc[nb][e] = p;
      }
#pragma unroll
    for (int nb = 0; nb < L::kDimBlocks; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[nb][e] *= alpha[e >> 1];

    // O += P V with P rounded to BF16 (the sum l keeps the FP32 values)
    uint32_t pa[L::kRowBlocks / 2][4];
    acc_to_a<L::kRowBlocks>(pa, sc);
    mma_ab<HS, L::kRowBlocks / 2>(o, pa, cV, 0, lane);
  }

  // epilogue: the quad's partial sums, then O / l and lse
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xFFFFFFFFu, l[i], 1);
    l[i] += __shfl_xor_sync(0xFFFFFFFFu, l[i], 2);
  }
  const int row0 = qt * L::kTile + r0;
  const float mo = store_acc_rows<HS>(out + static_cast<int64_t>(b) * s.T * qstride + h * HS, qstride, row0, s.T, o,
                                     1.0f / l[0], 1.0f / l[1], lane, s.aligned);
  fold_amax(s.amax, mo);
  if (t == 0) {
    float* lrow = lse + (static_cast<int64_t>(b) * s.NH + h) * s.T;
#pragma unroll
    for (int i = 0; i < 2; ++i)
      if (row0 + g + 8 * i < s.T) lrow[row0 + g + 8 * i] = m[i] * kLn2 + logf(l[i]);
  }
}

// D[b, h, t] = sum_d dout[b,t,h,d] * out[b,t,h,d]: HS / 8 threads per (b, t, h) row (4, 8 or 16
// lanes of one warp), 8 elements each through 16-byte loads, then a butterfly over the row's
// lanes. (One warp per row with 2-byte loads ran at a third of the bandwidth on the H100.)
template <bool kAligned>
__global__ void __launch_bounds__(kThreads) attention_rowdot_kernel(float* __restrict__ D,
                                                                    const uint16_t* __restrict__ dout,
                                                                    const uint16_t* __restrict__ out, int64_t rows,
                                                                    int T, int NH, int HS) {
  const int per_row = HS / kVec;  // a power of two dividing 32 (HS = 32, 64 or 128)
  const int64_t id = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t row = id / per_row;  // (b, t, h)
  const int part = static_cast<int>(id % per_row);
  float acc = 0.0f;
  if (row < rows) {
    float a[8], b[8];
    load8<kAligned>(dout + row * HS, static_cast<int64_t>(part) * kVec, HS, a);
    load8<kAligned>(out + row * HS, static_cast<int64_t>(part) * kVec, HS, b);
#pragma unroll
    for (int e = 0; e < 8; ++e) acc += a[e] * b[e];
  }
  for (int o = per_row / 2; o > 0; o /= 2) acc += __shfl_xor_sync(0xFFFFFFFFu, acc, o);  // every lane takes part
  if (row < rows && part == 0) {
    const int64_t h = row % NH, bt = row / NH, t = bt % T, b = bt / T;
    D[(b * NH + h) * T + t] = acc;
  }
}

template <int HS>
constexpr size_t att_dkdv_smem() {
  // K, V, 2 stages of Q and dO, 2 stages of the query rows' lse (log2 units) and D
  return static_cast<size_t>(AttMmaLayout<HS>::kTileBytes) * 6 + sizeof(float) * 4 * kAttTile;
}

// dk, dv for one key tile of one KV head: loops over the group's query heads, then the query
// tiles that see this key tile, in increasing order (deterministic, no atomics). Warp w owns
// key rows [16w, 16w + 16); per query tile (in passes of kBwdPass query rows):
//   Sᵀ = K Qᵀ, Pᵀ = exp(Sᵀ scale - lse), dV += Pᵀ dO, dPᵀ = V dOᵀ, dSᵀ = Pᵀ ∘ (dPᵀ - D), dK += dSᵀ Q.
template <int HS>
__global__ void __launch_bounds__(kAttThreads) attention_backward_dkdv_mma_kernel(
    uint16_t* __restrict__ dk, uint16_t* __restrict__ dv, const uint16_t* __restrict__ dout,
    const uint16_t* __restrict__ q, const uint16_t* __restrict__ k, const uint16_t* __restrict__ v,
    const float* __restrict__ lse, const float* __restrict__ D, AttShape s) {
  using L = AttMmaLayout<HS>;
  constexpr int kP = L::kBwdPass;
  extern __shared__ uint4 att_smem[];
  uint16_t* sK = reinterpret_cast<uint16_t*>(att_smem);
  uint16_t* sV = sK + L::kTileElems;
  uint16_t* sQ = sV + L::kTileElems;        // stage i at sQ + i * kTileElems
  uint16_t* sdO = sQ + 2 * L::kTileElems;   // likewise
  float* sL = reinterpret_cast<float*>(sdO + 2 * L::kTileElems);  // stage i at sL + i * kTile
  float* sD = sL + 2 * L::kTile;                                  // likewise

  const int kt = blockIdx.x;  // early key tiles see the most query tiles: they start first
  const int kvh = blockIdx.y, b = blockIdx.z;
  const int group = s.NH / s.NKV;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int r0 = 16 * warp;  // the warp's key rows in the tile
  const int n_qt = (s.T + L::kTile - 1) / L::kTile;
  const int steps_per_head = n_qt - kt;
  const int n_steps = group * steps_per_head;
  const int64_t qstride = static_cast<int64_t>(s.NH) * HS, kstride = static_cast<int64_t>(s.NKV) * HS;
  const int64_t kv_off = static_cast<int64_t>(b) * s.T * kstride + kvh * HS;
  const float scale_log2 = s.scale * kLog2e;

  // Producer for step i: query tile qt of head h = kvh * group + hh, into stage i % 2.
  auto load_step = [&](int i) {
    const int hh = i / steps_per_head, qt = kt + i % steps_per_head;
    const int h = kvh * group + hh;
    const int64_t q_off = static_cast<int64_t>(b) * s.T * qstride + h * HS;
    const int64_t row_off = (static_cast<int64_t>(b) * s.NH + h) * s.T;
    const int st = i & 1;
    load_tile_async<HS>(sQ + st * L::kTileElems, q + q_off, qstride, qt * L::kTile, s.T, s.aligned);
    load_tile_async<HS>(sdO + st * L::kTileElems, dout + q_off, qstride, qt * L::kTile, s.T, s.aligned);
    for (int idx = threadIdx.x; idx < L::kTile; idx += L::kThreads) {
      const int tq = qt * L::kTile + idx;
      sL[st * L::kTile + idx] = tq < s.T ? lse[row_off + tq] * kLog2e : 0.0f;
      sD[st * L::kTile + idx] = tq < s.T ? D[row_off + tq] : 0.0f;
    }
  };

  load_tile_async<HS>(sK, k + kv_off, kstride, kt * L::kTile, s.T, s.aligned);
  load_tile_async<HS>(sV, v + kv_off, kstride, kt * L::kTile, s.T, s.aligned);
  load_step(0);
  cp_async_commit();

  float dka[L::kDimBlocks][4] = {}, dva[L::kDimBlocks][4] = {};
  const int tk_lo = kt * L::kTile + r0 + g;  // key of accumulator elements 0, 1 (+8: 2, 3)

  for (int i = 0; i < n_steps; ++i) {
    const int st = i & 1;
    const int qt = kt + i % steps_per_head;
    const uint16_t* cQ = sQ + st * L::kTileElems;
    const uint16_t* cdO = sdO + st * L::kTileElems;
    const float* cL = sL + st * L::kTile;
    const float* cD = sD + st * L::kTile;
    __syncthreads();  // every warp is done with step i - 1, whose buffers receive step i + 1
    if (i + 1 < n_steps) load_step(i + 1);
    cp_async_commit();
    cp_async_wait_prev();  // step i (and K, V) landed
    __syncthreads();

#pragma unroll 1
    for (int p0 = 0; p0 < L::kTile; p0 += kP) {
      // Sᵀ (16 keys, kP queries) = K Qᵀ, then Pᵀ in FP32
      float pt[kP / 8][4] = {};
      mma_abt<HS, kP / 8>(pt, sK, r0, cQ, p0, lane);
#pragma unroll
      for (int nb = 0; nb < kP / 8; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int qc = p0 + 8 * nb + 2 * t + (e & 1);
          const int tq = qt * L::kTile + qc;
          const bool visible = tq >= tk_lo + 8 * (e >> 1) && tq < s.T;
          pt[nb][e] = visible ? exp2f(pt[nb][e] * scale_log2 - cL[qc]) : 0.0f;
        }
      // dV += Pᵀ dO (Pᵀ rounded to BF16)
      {
        uint32_t pa[kP / 16][4];
        acc_to_a<kP / 8>(pa, pt);
        mma_ab<HS, kP / 16>(dva, pa, cdO, p0, lane);
      }
      // dPᵀ = V dOᵀ, dSᵀ = Pᵀ ∘ (dPᵀ - D)
      float dpt[kP / 8][4] = {};
      mma_abt<HS, kP / 8>(dpt, sV, r0, cdO, p0, lane);
#pragma unroll
      for (int nb = 0; nb < kP / 8; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) dpt[nb][e] = pt[nb][e] * (dpt[nb][e] - cD[p0 + 8 * nb + 2 * t + (e & 1)]);
      // dK += dSᵀ Q (dSᵀ rounded to BF16; the scale comes at the end)
      uint32_t dsa[kP / 16][4];
      acc_to_a<kP / 8>(dsa, dpt);
      mma_ab<HS, kP / 16>(dka, dsa, cQ, p0, lane);
    }
  }
  const int row0 = kt * L::kTile + r0;
  store_acc_rows<HS>(dk + kv_off, kstride, row0, s.T, dka, s.scale, s.scale, lane, s.aligned);
  fold_amax(s.amax, store_acc_rows<HS>(dv + kv_off, kstride, row0, s.T, dva, 1.0f, 1.0f, lane, s.aligned));
}

template <int HS>
constexpr size_t att_dq_smem() {
  return static_cast<size_t>(AttMmaLayout<HS>::kTileBytes) * 6;  // Q, dO, 2 stages of K and V
}

// dq for one query tile of one head: loops over key tiles 0..qt in order. Warp w owns query
// rows [16w, 16w + 16): S = Q Kᵀ, P = exp(S scale - lse), dP = dO Vᵀ, dS = P ∘ (dP - D),
// dQ += dS K.
template <int HS>
__global__ void __launch_bounds__(kAttThreads) attention_backward_dq_mma_kernel(
    uint16_t* __restrict__ dq, const uint16_t* __restrict__ dout, const uint16_t* __restrict__ q,
    const uint16_t* __restrict__ k, const uint16_t* __restrict__ v, const float* __restrict__ lse,
    const float* __restrict__ D, AttShape s) {
  using L = AttMmaLayout<HS>;
  extern __shared__ uint4 att_smem[];
  uint16_t* sQ = reinterpret_cast<uint16_t*>(att_smem);
  uint16_t* sdO = sQ + L::kTileElems;
  uint16_t* sK = sdO + L::kTileElems;     // stage i at sK + i * kTileElems
  uint16_t* sV = sK + 2 * L::kTileElems;  // likewise

  const int qt = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / (s.NH / s.NKV);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int r0 = 16 * warp;
  const int64_t qstride = static_cast<int64_t>(s.NH) * HS, kstride = static_cast<int64_t>(s.NKV) * HS;
  const int64_t q_off = static_cast<int64_t>(b) * s.T * qstride + h * HS;
  const int64_t kv_off = static_cast<int64_t>(b) * s.T * kstride + kvh * HS;
  const int64_t row_off = (static_cast<int64_t>(b) * s.NH + h) * s.T;
  const float scale_log2 = s.scale * kLog2e;

  load_tile_async<HS>(sQ, q + q_off, qstride, qt * L::kTile, s.T, s.aligned);
  load_tile_async<HS>(sdO, dout + q_off, qstride, qt * L::kTile, s.T, s.aligned);
  load_tile_async<HS>(sK, k + kv_off, kstride, 0, s.T, s.aligned);
  load_tile_async<HS>(sV, v + kv_off, kstride, 0, s.T, s.aligned);
  cp_async_commit();

  // lse (log2 units) and D of rows g, g + 8; rows >= T are never stored (0 keeps them finite)
  float lse_r[2], D_r[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int tq = qt * L::kTile + r0 + g + 8 * i;
    lse_r[i] = tq < s.T ? lse[row_off + tq] * kLog2e : 0.0f;
    D_r[i] = tq < s.T ? D[row_off + tq] : 0.0f;
  }
  float dqa[L::kDimBlocks][4] = {};

  for (int kt = 0; kt <= qt; ++kt) {
    const uint16_t* cK = sK + (kt & 1) * L::kTileElems;
    const uint16_t* cV = sV + (kt & 1) * L::kTileElems;
    __syncthreads();
    if (kt < qt) {
      load_tile_async<HS>(sK + ((kt + 1) & 1) * L::kTileElems, k + kv_off, kstride, (kt + 1) * L::kTile, s.T,
                          s.aligned);
      load_tile_async<HS>(sV + ((kt + 1) & 1) * L::kTileElems, v + kv_off, kstride, (kt + 1) * L::kTile, s.T,
                          s.aligned);
    }
    cp_async_commit();
    cp_async_wait_prev();
    __syncthreads();

    float ps[L::kRowBlocks][4] = {};
    mma_abt<HS, L::kRowBlocks>(ps, sQ, r0, cK, 0, lane);
#pragma unroll
    for (int nb = 0; nb < L::kRowBlocks; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool visible = kt < qt || 8 * nb + 2 * t + (e & 1) <= r0 + g + 8 * (e >> 1);
        ps[nb][e] = visible ? exp2f(ps[nb][e] * scale_log2 - lse_r[e >> 1]) : 0.0f;
      }
    float dps[L::kRowBlocks][4] = {};
    mma_abt<HS, L::kRowBlocks>(dps, sdO, r0, cV, 0, lane);
#pragma unroll
    for (int nb = 0; nb < L::kRowBlocks; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) dps[nb][e] = ps[nb][e] * (dps[nb][e] - D_r[e >> 1]);
    // dQ += dS K (dS rounded to BF16; the scale comes at the end)
    uint32_t dsa[L::kRowBlocks / 2][4];
    acc_to_a<L::kRowBlocks>(dsa, dps);
    mma_ab<HS, L::kRowBlocks / 2>(dqa, dsa, cK, 0, lane);
  }
  store_acc_rows<HS>(dq + q_off, qstride, qt * L::kTile + r0, s.T, dqa, s.scale, s.scale, lane, s.aligned);
}

// Raises a kernel's dynamic shared-memory limit once (the attention tiles need more than 48 KB).
template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes, const char* op) {
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)), op);
}

template <int HS>
void attention_forward_hs(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v, int64_t B,
                          const AttShape& s, Stream stream) {
  constexpr size_t smem = att_forward_smem<HS>();
  static const bool once = (allow_smem(attention_forward_mma_kernel<HS>, smem, "attention_forward"), true);
  (void)once;
  const dim3 grid((s.T + kAttTile - 1) / kAttTile, s.NH, static_cast<unsigned>(B));
  attention_forward_mma_kernel<HS><<<grid, kAttThreads, smem, stream>>>(out, lse, q, k, v, s);
  check_launch("attention_forward");
}

template <int HS>
void attention_backward_hs(uint16_t* dq, uint16_t* dk, uint16_t* dv, const uint16_t* dout, const uint16_t* q,
                           const uint16_t* k, const uint16_t* v, const float* lse, const float* D, int64_t B,
                           const AttShape& s, Stream stream) {
  constexpr size_t smem_kv = att_dkdv_smem<HS>(), smem_q = att_dq_smem<HS>();
  static const bool once = (allow_smem(attention_backward_dkdv_mma_kernel<HS>, smem_kv, "attention_backward"),
                            allow_smem(attention_backward_dq_mma_kernel<HS>, smem_q, "attention_backward"), true);
  (void)once;
  const unsigned tiles = (s.T + kAttTile - 1) / kAttTile;
  attention_backward_dkdv_mma_kernel<HS><<<dim3(tiles, s.NKV, static_cast<unsigned>(B)), kAttThreads, smem_kv, stream>>>(
      dk, dv, dout, q, k, v, lse, D, s);
  check_launch("attention_backward (dk, dv)");
  attention_backward_dq_mma_kernel<HS>
      <<<dim3(tiles, s.NH, static_cast<unsigned>(B)), kAttThreads, smem_q, stream>>>(dq, dout, q, k, v, lse, D, s);
  check_launch("attention_backward (dq)");
}

void attention_check(const char* op, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HS) {
  require_nonnegative(op, {{"B", B}, {"T", T}, {"NH", NH}, {"NKV", NKV}, {"HS", HS}});
  require(NKV > 0 || NH == 0, op, "NKV = 0 with NH = " + std::to_string(NH) + " query heads");
  require(NKV == 0 || NH % NKV == 0, op,
          "NH = " + std::to_string(NH) + " is not a multiple of NKV = " + std::to_string(NKV) +
              "; each key/value head must serve the same number of query heads");
  require(HS == 32 || HS == 64 || HS == 128 || NH == 0, op,
          "HS = " + std::to_string(HS) + " is not supported by the CUDA attention kernels (32, 64 or 128)");
  require(T <= INT_MAX / 2 && NH <= 65535 && B <= 65535, op, "B, T or NH too large for the launch grid");
}

// ---- token embedding -----------------------------------------------------------------------------

template <bool kAligned>
__global__ void encoder_forward_kernel(uint16_t* __restrict__ out, const int32_t* __restrict__ tokens,
                                       const uint16_t* __restrict__ wte, int64_t N, int64_t C, int64_t V,
                                       uint32_t* status) {
  const int64_t chunks_per_row = (C + kVec - 1) / kVec;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < N * chunks_per_row;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = idx / chunks_per_row, c = (idx % chunks_per_row) * kVec;
    const int32_t tok = tokens[n];
    float v[8] = {};
    if (tok >= 0 && tok < V) load8<kAligned>(wte + static_cast<int64_t>(tok) * C, c, C, v);
    else if (status) atomicOr(status, kStatusBadToken);
    store8<kAligned>(out + n * C, c, C, v);
  }
}

// Sort keys: the token, or V for a token outside [0, V) (sorted last, skipped).
__global__ void encoder_keys_kernel(uint32_t* __restrict__ keys, int32_t* __restrict__ positions,
                                    const int32_t* __restrict__ tokens, int64_t N, int64_t V, uint32_t* status) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t tok = tokens[i];
    const bool ok = tok >= 0 && tok < V;
    if (!ok && status) atomicOr(status, kStatusBadToken);
    keys[i] = ok ? static_cast<uint32_t>(tok) : static_cast<uint32_t>(V);
    positions[i] = static_cast<int32_t>(i);
  }
}

// The embedding gradient in cpu::encoder_backward's order (same bits): the (token, position)
// pairs sorted by token, stably; the sorted sequence cut into chunks of kEncoderChunk; in a
// chunk, each token's rows summed from zero in position order (a piece); each token's pieces
// added into its row in order. A token's positions are one run of the sorted keys; most runs sit
// inside one chunk, and a long one (byte-level text puts a large share of its tokens on a few
// characters) spans many, which the two kernels below take in parallel:
//   pieces  grid (chunks, channel blocks): the pieces of one chunk. A run inside the chunk goes
//           straight into its row (no other block touches that token); the piece that starts a
//           run continuing past the chunk goes to run_head[chunk], a piece continuing one from
//           the chunk before to run_tail[chunk].
//   chains  grid (chunks, channel blocks): the chunk whose last piece starts a continuing run
//           adds its row + run_head + the following chunks' run_tail pieces, in order.
// (Summing each run in one serial chain, even with 32 rows fetched ahead, took 2.6 ms of an 82 ms
// step on docs/results.md's model and corpus; these two take 0.23 + 0.03 ms there, H100.)
constexpr int kEncThreads = 128;
constexpr int kChunk = static_cast<int>(cpu::kEncoderChunk);

// Whether the piece of the chunk starting at sorted index chunk_start that begins at sorted
// index a is the first of its token's run: it is, unless it opens the chunk and the chunk
// before ends with the same token.
__device__ __forceinline__ bool piece_begins_run(const uint32_t* keys, int64_t a, int64_t chunk_start) {
  return a > chunk_start || chunk_start == 0 || keys[chunk_start - 1] != keys[a];
}

__global__ void __launch_bounds__(kEncThreads) encoder_pieces_kernel(float* __restrict__ dwte,
                                                                     float* __restrict__ run_head,
                                                                     float* __restrict__ run_tail,
                                                                     const uint16_t* __restrict__ dout,
                                                                     const uint32_t* __restrict__ keys,
                                                                     const int32_t* __restrict__ positions,
                                                                     int64_t N, int64_t C, int64_t V) {
  __shared__ uint32_t skey[kChunk];
  __shared__ int32_t spos[kChunk];
  const int64_t g = blockIdx.x, start = g * kChunk, end = min(N, start + kChunk);
  const int n = static_cast<int>(end - start);
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    skey[j] = keys[start + j];
    spos[j] = positions[start + j];
  }
  __syncthreads();
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kEncThreads + threadIdx.x;
  if (c >= C) return;
  float v[kChunk];  // every row's value first: the additions below wait on no load
#pragma unroll
  for (int j = 0; j < kChunk; ++j) v[j] = j < n ? bf16_to_f32(dout[static_cast<int64_t>(spos[j]) * C + c]) : 0.0f;
  float acc = 0.0f;
  int a = 0;  // the current piece's first index in the chunk
#pragma unroll
  for (int j = 0; j <= kChunk; ++j) {
    if (j > n) break;
    if (j > a && (j == n || skey[j] != skey[a])) {  // piece [a, j) ends
      const uint32_t tok = skey[a];
      if (tok < V) {
        const bool begins = piece_begins_run(keys, start + a, start);
        const bool ends = j < n || end == N || keys[end] != tok;
        if (begins && ends) dwte[static_cast<int64_t>(tok) * C + c] += acc;
        else if (begins) run_head[g * C + c] = acc;
        else run_tail[g * C + c] = acc;
      }
      acc = 0.0f;
      a = j;
    }
    if (j < n) acc += v[j];
  }
}

__global__ void __launch_bounds__(kEncThreads) encoder_chains_kernel(float* __restrict__ dwte,
                                                                     const float* __restrict__ run_head,
                                                                     const float* __restrict__ run_tail,
                                                                     const uint32_t* __restrict__ keys, int64_t N,
                                                                     int64_t C, int64_t V) {
  const int64_t g = blockIdx.x, start = g * kChunk, end = min(N, start + kChunk);
  const uint32_t tok = keys[end - 1];  // the chunk's last piece
  if (tok >= V || end == N || keys[end] != tok) return;  // it does not continue past the chunk
  // It opens the chunk when the whole chunk is that token; then it may itself continue a run,
  // whose chain starts in an earlier chunk.
  if (keys[start] == tok && !piece_begins_run(keys, start, start)) return;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kEncThreads + threadIdx.x;
  if (c >= C) return;
  // The run's end (binary search in the sorted keys), then its chunks' pieces in order.
  int64_t lo = end, hi = N;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (keys[mid] == tok) lo = mid + 1;
    else hi = mid;
  }
  const int64_t last_chunk = (lo - 1) / kChunk;
  float* row = dwte + static_cast<int64_t>(tok) * C + c;
  float acc = *row + run_head[g * C + c];
  constexpr int kAhead = 16;
  for (int64_t h = g + 1; h <= last_chunk; h += kAhead) {
    float t[kAhead];
#pragma unroll
    for (int u = 0; u < kAhead; ++u) t[u] = h + u <= last_chunk ? run_tail[(h + u) * C + c] : 0.0f;
#pragma unroll
    for (int u = 0; u < kAhead; ++u)
      if (h + u <= last_chunk) acc += t[u];
  }
  *row = acc;
}

// Bits that hold every key 0..V of encoder_keys_kernel.
int key_bits(int64_t V) {
  int bits = 1;
  while (bits < 32 && (int64_t{1} << bits) <= V) ++bits;
  return bits;
}

size_t align256(size_t bytes) { return (bytes + 255) & ~size_t{255}; }

size_t cub_sort_bytes(int64_t N, int64_t V) {
  size_t bytes = 0;
  check(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const uint32_t*>(nullptr),
                                        static_cast<uint32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                        static_cast<int32_t*>(nullptr), static_cast<int>(N), 0, key_bits(V)),
        "encoder_backward (sort size)");
  return bytes;
}

// ---- cross-entropy ------------------------------------------------------------------------------

constexpr int kCeThreads = 512;

// Online (max, sum of exp(x - max)) pairs: combine two.
__device__ __forceinline__ void combine_max_sum(float& m, float& s, float m2, float s2) {
  const float mn = fmaxf(m, m2);
  if (mn == -INFINITY) return;  // both empty
  s = s * expf(m - mn) + s2 * expf(m2 - mn);
  m = mn;
}

template <bool kAligned>
__global__ void __launch_bounds__(kCeThreads) crossentropy_kernel(float* losses, uint16_t* dlogits,
                                                                  const uint16_t* logits, const int32_t* targets,
                                                                  int64_t V, float dloss_scale, uint32_t* status) {
  // NOTE: no __restrict__ on logits / dlogits: they may be the same buffer. Every element is read
  // and then written by the same thread, and the target logit is read before the first barrier.
  __shared__ float red_m[kCeThreads / 32], red_s[kCeThreads / 32];
  const int64_t n = blockIdx.x;
  const uint16_t* x = logits + n * V;  // (V)
  uint16_t* dx = dlogits + n * V;      // (V)
  const int32_t target = targets[n];
  const bool valid = target >= 0 && target < V;
  const float x_target = (threadIdx.x == 0 && valid) ? bf16_to_f32(x[target]) : 0.0f;

  // pass 1: online max and sum of exp over this thread's chunks, then over the block
  float m = -INFINITY, s = 0.0f;
  for (int64_t i = static_cast<int64_t>(threadIdx.x) * kVec; i < V; i += static_cast<int64_t>(kCeThreads) * kVec) {
    float v[8];
    load8<kAligned>(x, i, V, v);
    float cm = -INFINITY;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      if (i + e >= V) v[e] = -INFINITY;
      cm = fmaxf(cm, v[e]);
    }
    if (cm > m) {  // element i is in range, so cm is finite (for finite logits)
      s *= expf(m - cm);
      m = cm;
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) s += expf(v[e] - m);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xFFFFFFFFu, m, o), s2 = __shfl_xor_sync(0xFFFFFFFFu, s, o);
    combine_max_sum(m, s, m2, s2);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  if (lane == 0) red_m[warp] = m, red_s[warp] = s;
  __syncthreads();
  m = red_m[0], s = red_s[0];
  for (int w = 1; w < kCeThreads / 32; ++w) combine_max_sum(m, s, red_m[w], red_s[w]);  // fixed order, every thread

  if (threadIdx.x == 0) {
    // -log softmax[target] = log sum exp(x - max) - (x[target] - max), as the CPU op
    losses[n] = valid ? logf(s) - (x_target - m) : __int_as_float(0x7FC00000);
    if (!valid && status) atomicOr(status, kStatusBadTarget);
  }
  // pass 2: dlogits = (softmax - onehot) * dloss_scale
  const float inv = 1.0f / s;
  for (int64_t i = static_cast<int64_t>(threadIdx.x) * kVec; i < V; i += static_cast<int64_t>(kCeThreads) * kVec) {
    float v[8];
    load8<kAligned>(x, i, V, v);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const float p = expf(v[e] - m) * inv;
      v[e] = valid ? (p - (i + e == target ? 1.0f : 0.0f)) * dloss_scale : 0.0f;
    }
    store8<kAligned>(dx, i, V, v);
  }
}

// ---- optimizer ---------------------------------------------------------------------------------

struct AdamParams {
  float lr, beta1, beta2, one_minus_beta1, one_minus_beta2, eps, weight_decay, correction1, correction2;
};

// NOTE: every operation is an explicitly rounded intrinsic (never contracted into an FMA), in
// the CPU op's order, so the result equals the CPU op's bits (its host code has no contraction).
__global__ void adamw_kernel(float* __restrict__ params, uint16_t* __restrict__ params_bf16,
                             const float* __restrict__ grads, float* __restrict__ m, float* __restrict__ v, int64_t n,
                             AdamParams a) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = grads[i];
    const float mi = __fadd_rn(__fmul_rn(a.beta1, m[i]), __fmul_rn(a.one_minus_beta1, g));
    const float vi = __fadd_rn(__fmul_rn(a.beta2, v[i]), __fmul_rn(a.one_minus_beta2, __fmul_rn(g, g)));
    const float mhat = __fdiv_rn(mi, a.correction1);
    const float vhat = __fdiv_rn(vi, a.correction2);
    const float p = params[i];
    const float step = __fadd_rn(__fdiv_rn(mhat, __fadd_rn(__fsqrt_rn(vhat), a.eps)), __fmul_rn(a.weight_decay, p));
    const float pn = __fsub_rn(p, __fmul_rn(a.lr, step));
    m[i] = mi;
    v[i] = vi;
    params[i] = pn;
    if (params_bf16) params_bf16[i] = f32_to_bf16(pn);
  }
}

// Sum of squares in double with a FIXED reduction tree, so the result depends only on n and the
// data — never on the grid or the device — and every level runs in parallel:
//   level 1: block ch (kNormThreads threads) takes chunk ch of kNormChunk elements; thread t
//            sums elements t, t + kNormThreads, ... of the chunk in order, then the block adds
//            the per-thread sums by a fixed shared-memory tree -> partial[ch]
//   level 2: one block adds the partials the same way (thread t sums t, t + kNormThreads, ...).
// NOTE: this order differs from cpu::global_norm's (sequential 4096-chunks), so the two agree
// to double rounding (~1e-15 relative), not bit for bit; the CPU chunk-serial order took one
// thread per 4096 elements and was 16% of a GPT-2-small training step on the H100.
constexpr int64_t kNormChunk = 4096;
constexpr int kNormThreads = 256;

__device__ __forceinline__ double block_tree_sum(double v, double* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
#pragma unroll
  for (int w = kNormThreads / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) sh[threadIdx.x] = __dadd_rn(sh[threadIdx.x], sh[threadIdx.x + w]);
    __syncthreads();
  }
  return sh[0];
}

__global__ void __launch_bounds__(kNormThreads) norm_partial_kernel(double* __restrict__ partial,
                                                                    const float* __restrict__ grads, int64_t n) {
  __shared__ double sh[kNormThreads];
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kNormChunk;
  const int64_t end = min(n, begin + kNormChunk);
  double acc = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kNormThreads) {
    const double g = grads[i];
    acc = __dadd_rn(acc, __dmul_rn(g, g));  // no DFMA contraction: the same bits on any device
  }
  const double total = block_tree_sum(acc, sh);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

__global__ void __launch_bounds__(kNormThreads) norm_final_kernel(double* __restrict__ out,
                                                                  const double* __restrict__ partial, int64_t chunks) {
  __shared__ double sh[kNormThreads];
  double acc = 0.0;
  for (int64_t ch = threadIdx.x; ch < chunks; ch += kNormThreads) acc = __dadd_rn(acc, partial[ch]);
  const double total = block_tree_sum(acc, sh);
  if (threadIdx.x == 0) *out = total;
}

// ---- cuBLASLt helpers -------------------------------------------------------------------------

void check_blas(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuBLASLt error in ") + what + ": " + cublasLtGetStatusString(st) + " (" +
                std::to_string(static_cast<int>(st)) + ")");
}

uint32_t ptr_alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && (a % align) != 0) align /= 2;
  return align;
}

// RAII owners of the per-call cuBLASLt descriptors.
struct MatmulDesc {
  cublasLtMatmulDesc_t d = nullptr;
  ~MatmulDesc() {
    if (d) cublasLtMatmulDescDestroy(d);
  }
};
struct Layout {
  cublasLtMatrixLayout_t d = nullptr;
  ~Layout() {
    if (d) cublasLtMatrixLayoutDestroy(d);
  }
};
struct Preference {
  cublasLtMatmulPreference_t d = nullptr;
  ~Preference() {
    if (d) cublasLtMatmulPreferenceDestroy(d);
  }
};

// FP8 block scales from this project's layout — (R, C) row-major, R the operand's rows (1x128)
// or row blocks (128x128), C its K blocks — into cuBLASLt's: out[r * row_stride + c * col_stride],
// the padding zero-filled by the caller.
__global__ void relayout_scales_kernel(float* __restrict__ out, const float* __restrict__ in, int64_t R, int64_t C,
                                       int64_t row_stride, int64_t col_stride) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= R * C) return;
  const int64_t r = i / C, c = i % C;
  out[r * row_stride + c * col_stride] = in[i];
}

}  // namespace

// ---- Blas ----------------------------------------------------------------------------------------

struct Blas::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = size_t{32} << 20;
  float* consts = nullptr;         // device {0, 1}: beta when alpha is a device pointer
  float* block_scales = nullptr;   // FP8 block scales in cuBLASLt's layout (grown on demand)
  size_t block_scales_floats = 0;

  // One GEMM operand as cuBLASLt sees it.
  struct Op {
    const void* data;
    cudaDataType_t type;
    bool trans;
    int64_t ld;
    const float* scale = nullptr;  // FP8: decode factor(s) in cuBLASLt's layout
    int scale_mode = -1;           // cublasLtMatmulMatrixScale_t; -1: cuBLASLt's default (one scalar)
  };

  struct Key {
    bool ta, tb;
    int64_t m, n, k, lda, ldb, ldd;
    int type_a, type_b, dtype_d, mode_a, mode_b;
    bool device_alpha, fast_accum;
    uint32_t align_a, align_b, align_d;
    auto operator<=>(const Key&) const = default;
  };
  std::map<Key, cublasLtMatmulAlgo_t> algos;

  // Column-major D (m, n) = alpha * op(A) (m, k) · op(B) (k, n) + beta * D; D BF16 or FP32.
  // alpha: a device float, or nullptr for 1. fast_accum: FP8 fast accumulation (Blas::gemm).
  void gemm(const char* op, int64_t m, int64_t n, int64_t k, const Op& A, const Op& B, void* D,
            cudaDataType_t dtype_d, int64_t ldd, const float* alpha, float beta, Stream stream,
            bool fast_accum = false) {
    MatmulDesc desc;
    check_blas(cublasLtMatmulDescCreate(&desc.d, CUBLAS_COMPUTE_32F, CUDA_R_32F), op);
    const cublasOperation_t opa = A.trans ? CUBLAS_OP_T : CUBLAS_OP_N, opb = B.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
    check_blas(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)), op);
    check_blas(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)), op);
    if (fast_accum) {
      const int8_t on = 1;
      check_blas(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &on, sizeof(on)), op);
    }
    if (alpha) {
      const cublasLtPointerMode_t pm = CUBLASLT_POINTER_MODE_DEVICE;
      check_blas(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_POINTER_MODE, &pm, sizeof(pm)), op);
    }
    for (const auto& [o, ptr_attr, mode_attr] :
         {std::tuple{&A, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, CUBLASLT_MATMUL_DESC_A_SCALE_MODE},
          std::tuple{&B, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, CUBLASLT_MATMUL_DESC_B_SCALE_MODE}}) {
      if (!o->scale) continue;
      check_blas(cublasLtMatmulDescSetAttribute(desc.d, ptr_attr, &o->scale, sizeof(o->scale)), op);
      if (o->scale_mode < 0) continue;  // the default: one scalar
      const auto mode = static_cast<cublasLtMatmulMatrixScale_t>(o->scale_mode);
      check_blas(cublasLtMatmulDescSetAttribute(desc.d, mode_attr, &mode, sizeof(mode)), op);
    }
    Layout la, lb, ld;
    check_blas(cublasLtMatrixLayoutCreate(&la.d, A.type, A.trans ? k : m, A.trans ? m : k, A.ld), op);
    check_blas(cublasLtMatrixLayoutCreate(&lb.d, B.type, B.trans ? n : k, B.trans ? k : n, B.ld), op);
    check_blas(cublasLtMatrixLayoutCreate(&ld.d, dtype_d, m, n, ldd), op);

    const Key key{A.trans, B.trans, m, n, k, A.ld, B.ld, ldd, static_cast<int>(A.type), static_cast<int>(B.type),
                  static_cast<int>(dtype_d), A.scale_mode, B.scale_mode, alpha != nullptr, fast_accum, ptr_alignment(A.data),
                  ptr_alignment(B.data), ptr_alignment(D)};
    auto it = algos.find(key);
    if (it == algos.end()) {
      Preference pref;
      check_blas(cublasLtMatmulPreferenceCreate(&pref.d), op);
      check_blas(cublasLtMatmulPreferenceSetAttribute(pref.d, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                      &workspace_bytes, sizeof(workspace_bytes)),
                 op);
      // The heuristic assumes 256-byte aligned operands unless told otherwise.
      const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_a},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_b},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_d},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_d}};
      for (const auto& [attr, value] : aligns)
        check_blas(cublasLtMatmulPreferenceSetAttribute(pref.d, attr, &value, sizeof(value)), op);
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      check_blas(cublasLtMatmulAlgoGetHeuristic(handle, desc.d, la.d, lb.d, ld.d, ld.d, pref.d, 1, &result, &found),
                 op);
      if (found == 0)
        throw Error(std::string("cuda::") + op + ": cuBLASLt has no algorithm for m=" + std::to_string(m) +
                    " n=" + std::to_string(n) + " k=" + std::to_string(k) + "; check the operand alignment");
      it = algos.emplace(key, result.algo).first;
    }
    const float one = 1.0f;
    const void* pa = alpha ? static_cast<const void*>(alpha) : &one;
    const void* pb = alpha ? static_cast<const void*>(consts + (beta == 0.0f ? 0 : 1)) : &beta;
    if (alpha && beta != 0.0f && beta != 1.0f) throw Error(std::string("cuda::") + op + ": beta must be 0 or 1");
    check_blas(cublasLtMatmul(handle, desc.d, pa, A.data, la.d, B.data, lb.d, pb, D, ld.d, D, ld.d, &it->second,
                              workspace, workspace_bytes, stream),
               op);
  }

  // The BF16 GEMMs of matmul_forward/backward.
  void gemm(const char* op, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void* A, int64_t lda,
            const void* B, int64_t ldb, void* D, cudaDataType_t dtype_d, int64_t ldd, float beta, Stream stream) {
    gemm(op, m, n, k, Op{A, CUDA_R_16BF, ta, lda}, Op{B, CUDA_R_16BF, tb, ldb}, D, dtype_d, ldd, nullptr, beta, stream);
  }
};

Blas::Blas() : impl_(std::make_unique<Impl>()) {
  check_blas(cublasLtCreate(&impl_->handle), "Blas (cublasLtCreate)");
  cudaError_t e = cudaMalloc(&impl_->workspace, impl_->workspace_bytes);
  if (e == cudaSuccess) e = cudaMalloc(&impl_->consts, 2 * sizeof(float));
  const float consts[2] = {0.0f, 1.0f};
  if (e == cudaSuccess) e = cudaMemcpy(impl_->consts, consts, sizeof(consts), cudaMemcpyHostToDevice);
  if (e != cudaSuccess) {
    cudaFree(impl_->workspace);
    cudaFree(impl_->consts);
    cublasLtDestroy(impl_->handle);
    check(e, "Blas (workspace cudaMalloc)");
  }
}

Blas::~Blas() {
  if (!impl_) return;
  cudaFree(impl_->workspace);
  cudaFree(impl_->consts);
  cudaFree(impl_->block_scales);
  cublasLtDestroy(impl_->handle);
}

// Row-major (N, OC) = (N, C) · (OC, C)ᵀ is column-major (OC, N) = W^T-view (OC, C) · inp-view (C, N):
// the row-major weight (OC, C) IS a column-major (C, OC) matrix, so it enters transposed ("TN").
void Blas::matmul_forward(uint16_t* out, const uint16_t* inp, const uint16_t* weight, int64_t N, int64_t C, int64_t OC,
                          Stream stream) {
  constexpr const char* op = "matmul_forward";
  require_nonnegative(op, {{"N", N}, {"C", C}, {"OC", OC}});
  if (N == 0 || OC == 0) return;
  require_ptr(out, op, "out");
  if (C == 0) {  // an empty contraction: zeros
    check(cudaMemsetAsync(out, 0, sizeof(uint16_t) * static_cast<size_t>(N * OC), stream), op);
    return;
  }
  require_ptr(inp, op, "inp");
  require_ptr(weight, op, "weight");
  impl_->gemm(op, true, false, OC, N, C, weight, C, inp, C, out, CUDA_R_16BF, OC, 0.0f, stream);
}

void Blas::matmul_backward(uint16_t* dinp, float* dweight, const uint16_t* dout, const uint16_t* inp,
                           const uint16_t* weight, int64_t N, int64_t C, int64_t OC, bool accumulate_dinp,
                           Stream stream) {
  constexpr const char* op = "matmul_backward";
  require_nonnegative(op, {{"N", N}, {"C", C}, {"OC", OC}});
  if (N == 0 || C == 0) return;  // dinp is empty, dweight gets zero added
  if (OC == 0) {
    if (dinp && !accumulate_dinp)
      check(cudaMemsetAsync(dinp, 0, sizeof(uint16_t) * static_cast<size_t>(N * C), stream), op);
    return;
  }
  require_ptr(dout, op, "dout");
  // dinp (N, C) = dout (N, OC) · weight (OC, C): column-major (C, N) = weight-view (C, OC) · dout-view (OC, N)
  if (dinp) {
    require_ptr(weight, op, "weight");
    impl_->gemm(op, false, false, C, N, OC, weight, C, dout, OC, dinp, CUDA_R_16BF, C, accumulate_dinp ? 1.0f : 0.0f,
                stream);
  }
  // dweight (OC, C) += dout (N, OC)ᵀ · inp (N, C): column-major (C, OC) = inp-view (C, N) · dout-view (OC, N)ᵀ
  if (dweight) {
    require_ptr(inp, op, "inp");
    impl_->gemm(op, false, true, C, OC, N, inp, C, dout, OC, dweight, CUDA_R_32F, C, 1.0f, stream);
  }
}

namespace {
cudaDataType_t blas_type(DType d, const char* op) {
  switch (d) {
    case DType::BF16: return CUDA_R_16BF;
    case DType::F32: return CUDA_R_32F;
    case DType::F8_E4M3: return CUDA_R_8F_E4M3;
    case DType::F8_E5M2: return CUDA_R_8F_E5M2;
    default: throw Error(std::string("cuda::") + op + ": dtype " + std::string(dtype_name(d)) + " is not supported");
  }
}
}  // namespace

void Blas::gemm(void* out, DType out_dtype, const GemmOperand& a, const GemmOperand& b, int64_t M, int64_t N, int64_t K,
                const float* alpha, bool accumulate, Stream stream, bool fast_accumulation) {
  constexpr const char* op = "Blas::gemm";
  require_nonnegative(op, {{"M", M}, {"N", N}, {"K", K}});
  require(out_dtype == DType::BF16 || out_dtype == DType::F32, op, "out must be BF16 or F32");
  if (M == 0 || N == 0) return;
  require_ptr(out, op, "out");
  if (K == 0) {
    if (!accumulate) check(cudaMemsetAsync(out, 0, dtype_size(out_dtype) * static_cast<size_t>(M * N), stream), op);
    return;
  }
  require_ptr(a.data, op, "a");
  require_ptr(b.data, op, "b");
  const bool fp8a = a.dtype == DType::F8_E4M3 || a.dtype == DType::F8_E5M2;
  const bool fp8b = b.dtype == DType::F8_E4M3 || b.dtype == DType::F8_E5M2;
  require(fp8a == fp8b, op, "the operands must be both FP8 or both BF16");
  require(fp8a || (a.dtype == DType::BF16 && b.dtype == DType::BF16), op, "operands must be BF16 or FP8");
  // Row-major out (M, N) is column-major (N, M) = b-view · a-view: b enters as cuBLASLt's A.
  Impl::Op A{b.data, blas_type(b.dtype, op), b.k_major, b.k_major ? K : N};
  Impl::Op B{a.data, blas_type(a.dtype, op), !a.k_major, a.k_major ? K : M};
  if (fp8a) {
    require(a.k_major && b.k_major, op, "FP8 operands must be contiguous along K");
    require(!(a.dtype == DType::F8_E5M2 && b.dtype == DType::F8_E5M2), op, "cuBLASLt has no E5M2 x E5M2 GEMM");
    require(a.scale_inv && b.scale_inv, op, "FP8 operands need their scale_inv");
    // Measured (cuBLAS 13.0, H100): a 4-byte aligned scale pointer is "not supported".
    require(aligned16(a.scale_inv) && aligned16(b.scale_inv), op, "FP8 scale_inv pointers must be 16-byte aligned");
    require(!fast_accumulation || (a.block.per_tensor() && b.block.per_tensor()), op,
            "fast accumulation needs per-tensor scales (cuBLASLt has none with block scales on sm_90)");
    // Block scales: relaid into this Blas's buffer, b's first.
    struct Need {
      const GemmOperand* g;
      Impl::Op* o;
      int64_t rows;
      int64_t R, C, row_stride, col_stride, floats;
    };
    Need needs[2] = {{&b, &A, N}, {&a, &B, M}};
    size_t total = 0;
    for (Need& n : needs) {
      const BlockShape bl = n.g->block;
      n.o->scale = n.g->scale_inv;
      if (bl.per_tensor()) {  // cuBLASLt's default scale mode: one float
        n.floats = 0;
        continue;
      }
      // The layouts cuBLASLt reads (cuBLAS 13.0 on sm_90; found by comparing against an FP64
      // product of the decoded operands, tests/cuda/test_quantized_linear_cuda.cpp):
      //   1x128     transposed: (K blocks, rows), rows padded to a multiple of 4
      //   128x128   as written: (row blocks, K blocks), K blocks padded to a multiple of 4
      const int64_t kb = (K + 127) / 128;
      if (bl == BlockShape{1, 128}) {
        n.o->scale_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
        n.R = n.rows;
        n.C = kb;
        const int64_t padded = (n.R + 3) / 4 * 4;
        n.row_stride = 1;
        n.col_stride = padded;
        n.floats = padded * kb;
      } else if (bl == BlockShape{128, 128}) {
        n.o->scale_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
        n.R = (n.rows + 127) / 128;
        n.C = kb;
        const int64_t padded = (kb + 3) / 4 * 4;
        n.row_stride = padded;
        n.col_stride = 1;
        n.floats = n.R * padded;
      } else {
        throw Error(std::string("cuda::") + op + ": FP8 block " + block_name(bl) +
                    " has no cuBLASLt scale mode; use per tensor, 1x128 or 128x128");
      }
      n.floats = (n.floats + 3) / 4 * 4;  // keep the next operand's scales 16-byte aligned
      total += static_cast<size_t>(n.floats);
    }
    if (total > impl_->block_scales_floats) {
      cudaFree(impl_->block_scales);
      impl_->block_scales = nullptr;
      impl_->block_scales_floats = 0;
      check(cudaMalloc(&impl_->block_scales, total * sizeof(float)), "Blas::gemm (cudaMalloc)");
      impl_->block_scales_floats = total;
    }
    float* dst = impl_->block_scales;
    if (total > 0) check(cudaMemsetAsync(dst, 0, total * sizeof(float), stream), op);
    for (Need& n : needs) {
      if (n.floats == 0) continue;
      const int64_t count = n.R * n.C;
      relayout_scales_kernel<<<static_cast<unsigned>((count + 255) / 256), 256, 0, stream>>>(dst, n.g->scale_inv, n.R, n.C,
                                                                                          n.row_stride, n.col_stride);
      check_launch(op);
      n.o->scale = dst;
      dst += n.floats;
    }
  } else {
    require(!a.scale_inv && !b.scale_inv, op, "BF16 operands take no scale_inv (use alpha)");
    require(!fast_accumulation, op, "fast accumulation is for FP8 operands only");
  }
  impl_->gemm(op, N, M, K, A, B, out, blas_type(out_dtype, op), N, alpha, accumulate ? 1.0f : 0.0f, stream,
              fast_accumulation);
}

// ---- RMSNorm -------------------------------------------------------------------------------------

void rmsnorm_forward(uint16_t* out, float* rstd, const uint16_t* inp, const uint16_t* weight, int64_t N, int64_t C,
                     float eps, Stream stream, float* amax) {
  constexpr const char* op = "rmsnorm_forward";
  require_nonnegative(op, {{"N", N}, {"C", C}});
  require(C > 0 || N == 0, op, "C = 0: a row without channels has no RMS");
  if (N == 0) return;
  const bool aligned = C % kVec == 0 && aligned16(out) && aligned16(inp) && aligned16(weight);
  NVFP4_LAUNCH_PRODUCER(aligned, rmsnorm_forward_kernel, N, kRowsPerBlock, amax, stream, out, rstd, inp, weight, N, C,
                        eps, amax);
  check_launch(op);
}

size_t rmsnorm_backward_scratch_bytes(int64_t N, int64_t C) {
  return sizeof(float) * static_cast<size_t>((N + kNormChunkRows - 1) / kNormChunkRows) * static_cast<size_t>(C);
}

void rmsnorm_backward(uint16_t* dinp, float* dweight, const uint16_t* dout, const uint16_t* inp,
                      const uint16_t* weight, const float* rstd, int64_t N, int64_t C, void* scratch, Stream stream,
                      float* amax_dinp) {
  constexpr const char* op = "rmsnorm_backward";
  require_nonnegative(op, {{"N", N}, {"C", C}});
  if (N == 0 || C == 0) return;
  if (dinp) {
    const bool aligned =
        C % kVec == 0 && aligned16(dinp) && aligned16(dout) && aligned16(inp) && aligned16(weight);
    NVFP4_LAUNCH_PRODUCER(aligned, rmsnorm_backward_dinp_kernel, N, kRowsPerBlock, amax_dinp, stream, dinp, dout, inp,
                          weight, rstd, N, C, amax_dinp);
    check_launch(op);
  }
  if (dweight) {
    require_ptr(scratch, op, "scratch (rmsnorm_backward_scratch_bytes)");
    const int64_t chunks = (N + kNormChunkRows - 1) / kNormChunkRows;
    const int64_t channel_blocks = (C + kThreads - 1) / kThreads;
    require(chunks <= INT_MAX && channel_blocks <= 65535, op, "N or C too large for the launch grid");
    float* partial = static_cast<float*>(scratch);
    rmsnorm_dweight_partial_kernel<<<dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(channel_blocks)),
                                     kThreads, 0, stream>>>(partial, dout, inp, rstd, N, C);
    check_launch(op);
    rmsnorm_dweight_reduce_kernel<<<static_cast<unsigned>((C + 31) / 32), 32 * kDwGroups, 0, stream>>>(dweight, partial,
                                                                                                     chunks, C);
    check_launch(op);
  }
}

// ---- RoPE ------------------------------------------------------------------------------------------

namespace {
void rope_check(const char* op, int64_t B, int64_t T, int64_t NH, int64_t HS, float theta) {
  require_nonnegative(op, {{"B", B}, {"T", T}, {"NH", NH}, {"HS", HS}});
  require(HS % 2 == 0, op, "HS = " + std::to_string(HS) + " is odd; rotate_half pairs i with i + HS/2");
  require(theta > 0.0f, op, "theta = " + std::to_string(theta) + " must be positive");
  require(B * T <= INT_MAX && NH <= INT_MAX / std::max<int64_t>(HS, 1), op, "B*T or NH*HS exceeds the kernel's int range");
}

template <bool kBackward>
void launch_rope(uint16_t* out, const uint16_t* inp, int64_t B, int64_t T, int64_t NH, int64_t HS, float theta,
                 Stream stream, float* amax, bool accumulate) {
  const int64_t half = HS / 2, tokens = B * T;
  // Tokens per block: up to 16, fewer for wide heads (16 KiB of angles at most).
  const int64_t tpb = std::clamp<int64_t>(2048 / half, 1, 16);
  const unsigned grid = static_cast<unsigned>((tokens + tpb - 1) / tpb);
  const size_t smem = sizeof(float2) * static_cast<size_t>(tpb * half);
  const bool vec = half % 8 == 0 && aligned16(out) && aligned16(inp);
  const auto kernel = vec ? rope_kernel<kBackward, true> : rope_kernel<kBackward, false>;
  kernel<<<grid, kThreads, smem, stream>>>(out, inp, static_cast<int>(tokens), static_cast<int>(T),
                                           static_cast<int>(NH), static_cast<int>(HS), static_cast<int>(tpb), theta,
                                           amax, accumulate);
}
}  // namespace

void rope_forward(uint16_t* out, const uint16_t* inp, int64_t B, int64_t T, int64_t NH, int64_t HS, float theta,
                  Stream stream) {
  rope_check("rope_forward", B, T, NH, HS, theta);
  const int64_t rows = B * T * NH;
  if (rows == 0 || HS == 0) return;
  launch_rope<false>(out, inp, B, T, NH, HS, theta, stream, nullptr, false);
  check_launch("rope_forward");
}

void rope_backward(uint16_t* dinp, const uint16_t* dout, int64_t B, int64_t T, int64_t NH, int64_t HS, float theta,
                   Stream stream, float* amax, bool accumulate) {
  rope_check("rope_backward", B, T, NH, HS, theta);
  const int64_t rows = B * T * NH;
  if (rows == 0 || HS == 0) return;
  launch_rope<true>(dinp, dout, B, T, NH, HS, theta, stream, amax, accumulate);
  check_launch("rope_backward");
}

// ---- attention ------------------------------------------------------------------------------------

void attention_forward(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v, int64_t B,
                       int64_t T, int64_t NH, int64_t NKV, int64_t HS, Stream stream, float* amax) {
  constexpr const char* op = "attention_forward";
  attention_check(op, B, T, NH, NKV, HS);
  if (B == 0 || T == 0 || NH == 0) return;
  const AttShape s{static_cast<int>(T), static_cast<int>(NH), static_cast<int>(NKV),
                   1.0f / sqrtf(static_cast<float>(HS)),
                   aligned16(out) && aligned16(q) && aligned16(k) && aligned16(v), amax};
  switch (HS) {
    case 32: attention_forward_hs<32>(out, lse, q, k, v, B, s, stream); break;
    case 64: attention_forward_hs<64>(out, lse, q, k, v, B, s, stream); break;
    default: attention_forward_hs<128>(out, lse, q, k, v, B, s, stream); break;
  }
}

size_t attention_backward_scratch_bytes(int64_t B, int64_t T, int64_t NH) {
  return sizeof(float) * static_cast<size_t>(B * NH * T);
}

void attention_backward(uint16_t* dq, uint16_t* dk, uint16_t* dv, const uint16_t* dout, const uint16_t* out,
                        const uint16_t* q, const uint16_t* k, const uint16_t* v, const float* lse, int64_t B, int64_t T,
                        int64_t NH, int64_t NKV, int64_t HS, void* scratch, Stream stream, float* amax_dv) {
  constexpr const char* op = "attention_backward";
  attention_check(op, B, T, NH, NKV, HS);
  if (B == 0 || T == 0 || NH == 0) return;
  require_ptr(scratch, op, "scratch (attention_backward_scratch_bytes)");
  float* D = static_cast<float*>(scratch);
  const int64_t rows = B * T * NH;
  NVFP4_LAUNCH_ALIGNED(aligned16(dout) && aligned16(out), attention_rowdot_kernel, grid_for(rows * (HS / kVec)),
                       kThreads, 0, stream, D, dout, out, rows, static_cast<int>(T), static_cast<int>(NH),
                       static_cast<int>(HS));
  check_launch(op);
  const AttShape s{static_cast<int>(T), static_cast<int>(NH), static_cast<int>(NKV),
                   1.0f / sqrtf(static_cast<float>(HS)),
                   aligned16(dq) && aligned16(dk) && aligned16(dv) && aligned16(dout) && aligned16(q) &&
                       aligned16(k) && aligned16(v),
                   amax_dv};
  switch (HS) {
    case 32: attention_backward_hs<32>(dq, dk, dv, dout, q, k, v, lse, D, B, s, stream); break;
    case 64: attention_backward_hs<64>(dq, dk, dv, dout, q, k, v, lse, D, B, s, stream); break;
    default: attention_backward_hs<128>(dq, dk, dv, dout, q, k, v, lse, D, B, s, stream); break;
  }
}

// ---- SwiGLU, residual, conversions -------------------------------------------------------------

void swiglu_forward(uint16_t* out, const uint16_t* gate, const uint16_t* up, int64_t n, Stream stream, float* amax) {
  require_nonnegative("swiglu_forward", {{"n", n}});
  if (n == 0) return;
  const bool aligned = aligned16(out) && aligned16(gate) && aligned16(up);
  NVFP4_LAUNCH_PRODUCER(aligned, swiglu_forward_kernel, (n + kVec - 1) / kVec, kThreads, amax, stream, out, gate, up, n,
                        amax);
  check_launch("swiglu_forward");
}

void swiglu_backward(uint16_t* dgate, uint16_t* dup, const uint16_t* dout, const uint16_t* gate, const uint16_t* up,
                     int64_t n, Stream stream, float* amax_dgate, float* amax_dup) {
  require_nonnegative("swiglu_backward", {{"n", n}});
  if (n == 0) return;
  const bool aligned = aligned16(dgate) && aligned16(dup) && aligned16(dout) && aligned16(gate) && aligned16(up);
  NVFP4_LAUNCH_PRODUCER(aligned, swiglu_backward_kernel, (n + kVec - 1) / kVec, kThreads,
                        amax_dgate ? amax_dgate : amax_dup, stream, dgate, dup, dout, gate, up, n, amax_dgate, amax_dup);
  check_launch("swiglu_backward");
}

void residual_forward(uint16_t* out, const uint16_t* a, const uint16_t* b, int64_t n, Stream stream) {
  require_nonnegative("residual_forward", {{"n", n}});
  if (n == 0) return;
  const bool aligned = aligned16(out) && aligned16(a) && aligned16(b);
  NVFP4_LAUNCH_ALIGNED(aligned, residual_kernel, grid_for((n + kVec - 1) / kVec), kThreads, 0, stream, out, a, b, n);
  check_launch("residual_forward");
}

void convert_f32_to_bf16(uint16_t* out, const float* in, int64_t n, Stream stream) {
  require_nonnegative("convert_f32_to_bf16", {{"n", n}});
  if (n == 0) return;
  NVFP4_LAUNCH_ALIGNED(aligned16(out) && aligned16(in), f32_to_bf16_kernel, grid_for((n + kVec - 1) / kVec), kThreads,
                       0, stream, out, in, n);
  check_launch("convert_f32_to_bf16");
}

void convert_bf16_to_f32(float* out, const uint16_t* in, int64_t n, Stream stream) {
  require_nonnegative("convert_bf16_to_f32", {{"n", n}});
  if (n == 0) return;
  NVFP4_LAUNCH_ALIGNED(aligned16(out) && aligned16(in), bf16_to_f32_kernel, grid_for((n + kVec - 1) / kVec), kThreads,
                       0, stream, out, in, n);
  check_launch("convert_bf16_to_f32");
}

// ---- token embedding -----------------------------------------------------------------------------

void encoder_forward(uint16_t* out, const int32_t* tokens, const uint16_t* wte, int64_t B, int64_t T, int64_t C,
                     int64_t V, uint32_t* status, Stream stream) {
  constexpr const char* op = "encoder_forward";
  require_nonnegative(op, {{"B", B}, {"T", T}, {"C", C}, {"V", V}});
  const int64_t N = B * T;
  if (N == 0 || C == 0) return;
  const bool aligned = C % kVec == 0 && aligned16(out) && aligned16(wte);
  NVFP4_LAUNCH_ALIGNED(aligned, encoder_forward_kernel, grid_for(N * ((C + kVec - 1) / kVec)), kThreads, 0, stream, out,
                       tokens, wte, N, C, V, status);
  check_launch(op);
}

size_t encoder_backward_scratch_bytes(int64_t B, int64_t T, int64_t C, int64_t V) {
  const int64_t N = B * T, chunks = (N + kChunk - 1) / kChunk;
  return 4 * align256(sizeof(int32_t) * static_cast<size_t>(N)) + align256(cub_sort_bytes(N, V)) +
         2 * align256(sizeof(float) * static_cast<size_t>(chunks * C));
}

void encoder_backward(float* dwte, const uint16_t* dout, const int32_t* tokens, int64_t B, int64_t T, int64_t C,
                      int64_t V, void* scratch, uint32_t* status, Stream stream) {
  constexpr const char* op = "encoder_backward";
  require_nonnegative(op, {{"B", B}, {"T", T}, {"C", C}, {"V", V}});
  const int64_t N = B * T;
  if (N == 0 || C == 0) return;
  require(N <= INT_MAX && V < (int64_t{1} << 31), op, "B*T or V does not fit the 32-bit sort");
  require_ptr(scratch, op, "scratch (encoder_backward_scratch_bytes)");
  const int64_t channel_blocks = (C + kEncThreads - 1) / kEncThreads;
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  require(channel_blocks <= 65535, op, "C too large for the launch grid");
  char* base = static_cast<char*>(scratch);
  const size_t seg = align256(sizeof(int32_t) * static_cast<size_t>(N));
  uint32_t* keys_in = reinterpret_cast<uint32_t*>(base);
  uint32_t* keys_out = reinterpret_cast<uint32_t*>(base + seg);
  int32_t* pos_in = reinterpret_cast<int32_t*>(base + 2 * seg);
  int32_t* pos_out = reinterpret_cast<int32_t*>(base + 3 * seg);
  void* temp = base + 4 * seg;
  size_t temp_bytes = cub_sort_bytes(N, V);
  float* run_head = reinterpret_cast<float*>(base + 4 * seg + align256(temp_bytes));
  float* run_tail = run_head + align256(sizeof(float) * static_cast<size_t>(chunks * C)) / sizeof(float);

  encoder_keys_kernel<<<grid_for(N), kThreads, 0, stream>>>(keys_in, pos_in, tokens, N, V, status);
  check_launch(op);
  // NOTE: LSD radix sort is stable: equal tokens keep their positions in increasing order.
  check(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, pos_in, pos_out, static_cast<int>(N), 0,
                                        key_bits(V), stream),
        "encoder_backward (sort)");
  const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(channel_blocks));
  encoder_pieces_kernel<<<grid, kEncThreads, 0, stream>>>(dwte, run_head, run_tail, dout, keys_out, pos_out, N, C, V);
  check_launch(op);
  encoder_chains_kernel<<<grid, kEncThreads, 0, stream>>>(dwte, run_head, run_tail, keys_out, N, C, V);
  check_launch(op);
}

// ---- cross-entropy ---------------------------------------------------------------------------------

void crossentropy_forward_backward(float* losses, uint16_t* dlogits, const uint16_t* logits, const int32_t* targets,
                                   int64_t N, int64_t V, float dloss_scale, uint32_t* status, Stream stream) {
  constexpr const char* op = "crossentropy_forward_backward";
  require_nonnegative(op, {{"N", N}, {"V", V}});
  require(V > 0 || N == 0, op, "V = 0: an empty vocabulary has no softmax");
  if (N == 0) return;
  require(N <= INT_MAX, op, "N too large for the launch grid");
  const bool aligned = V % kVec == 0 && aligned16(dlogits) && aligned16(logits);
  NVFP4_LAUNCH_ALIGNED(aligned, crossentropy_kernel, static_cast<unsigned>(N), kCeThreads, 0, stream, losses, dlogits,
                       logits, targets, V, dloss_scale, status);
  check_launch(op);
}

// ---- optimizer ------------------------------------------------------------------------------------

void adamw_update(float* params, uint16_t* params_bf16, const float* grads, float* m, float* v, int64_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int64_t step, Stream stream) {
  constexpr const char* op = "adamw_update";
  require_nonnegative(op, {{"n", n}});
  require(step >= 1, op, "step = " + std::to_string(step) + "; steps count from 1 (bias correction)");
  if (n == 0) return;
  // NOTE: the bias corrections on the host with the CPU op's expression (FP32 std::pow).
  const AdamParams a{lr,
                     beta1,
                     beta2,
                     1.0f - beta1,
                     1.0f - beta2,
                     eps,
                     weight_decay,
                     1.0f - std::pow(beta1, static_cast<float>(step)),
                     1.0f - std::pow(beta2, static_cast<float>(step))};
  adamw_kernel<<<grid_for(n), kThreads, 0, stream>>>(params, params_bf16, grads, m, v, n, a);
  check_launch(op);
}

size_t global_norm_scratch_bytes(int64_t n) {
  return sizeof(double) * static_cast<size_t>(std::max<int64_t>(1, (n + kNormChunk - 1) / kNormChunk));
}

void global_norm_squared(double* out, const float* grads, int64_t n, void* scratch, Stream stream) {
  constexpr const char* op = "global_norm_squared";
  require_nonnegative(op, {{"n", n}});
  require_ptr(out, op, "out");
  require_ptr(scratch, op, "scratch (global_norm_scratch_bytes)");
  const int64_t chunks = (n + kNormChunk - 1) / kNormChunk;
  double* partial = static_cast<double*>(scratch);
  if (chunks > 0) {
    if (chunks > int64_t(INT32_MAX)) throw Error("global_norm_squared: n = " + std::to_string(n) + " is too large");
    norm_partial_kernel<<<static_cast<unsigned>(chunks), kNormThreads, 0, stream>>>(partial, grads, n);
    check_launch(op);
  }
  norm_final_kernel<<<1, kNormThreads, 0, stream>>>(out, partial, chunks);
  check_launch(op);
}

}  // namespace nvfp4::cuda
