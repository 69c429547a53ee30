// CUDA training operators (see include/nvfp4/cuda_ops.hpp for what each computes, its shapes
// and its gradient convention). The GPU twins of src/kernels/cpu/ops.cpp: same formulas, FP32
// arithmetic in registers, BF16 storage for activations, rounded once when stored.
//
// What it is: straightforward, correct, deterministic kernels.
//   elementwise ops    one thread per 8 consecutive elements (16-byte loads when aligned)
//   row ops            one warp per row (RMSNorm), one CTA per row (cross-entropy)
//   matmuls            cuBLASLt, BF16 operands, FP32 accumulation
//   attention          flash-style SIMT kernels in FP32: one CTA per 64-row tile, K/V tiles
//                      streamed through shared memory, online softmax, the log-sum-exp saved;
//                      no T x T matrix in memory; the backward recomputes probabilities
//   reductions         fixed-order partial sums (never float atomics)
// What it is not (yet): tensor-core attention, fused norms+GEMMs, a persistent grid.
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
#include <string>
#include <utility>

#include "nvfp4/cuda_ops.hpp"
#include "nvfp4/error.hpp"

namespace nvfp4::cuda {

namespace {

// ---- host-side checks ---------------------------------------------------------------------

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("nvfp4: CUDA error in ") + what + ": " + cudaGetErrorString(e));
}

void check_launch(const char* op) { check(cudaGetLastError(), op); }

void require(bool ok, const char* op, const std::string& what) {
  if (!ok) throw Error(std::string("nvfp4: cuda::") + op + ": " + what);
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
__global__ void swiglu_forward_kernel(uint16_t* out, const uint16_t* gate, const uint16_t* up, int64_t n) {
  NVFP4_FOR_CHUNKS(i, n) {
    float g[8], u[8];
    load8<kAligned>(gate, i, n, g);
    load8<kAligned>(up, i, n, u);
#pragma unroll
    for (int e = 0; e < 8; ++e) g[e] = (g[e] * sigmoidf(g[e])) * u[e];
    store8<kAligned>(out, i, n, g);
  }
}

template <bool kAligned>
__global__ void swiglu_backward_kernel(uint16_t* dgate, uint16_t* dup, const uint16_t* dout, const uint16_t* gate,
                                       const uint16_t* up, int64_t n) {
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
  }
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
                                                                   int64_t C, float eps) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= N) return;
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
  }
  if (lane == 0) rstd[row] = r;
}

// dinp += rstd * (g - xhat * mean(g * xhat)), g = dout * weight, xhat = inp * rstd: warp per row.
template <bool kAligned>
__global__ void __launch_bounds__(kThreads) rmsnorm_backward_dinp_kernel(uint16_t* __restrict__ dinp,
                                                                         const uint16_t* __restrict__ dout,
                                                                         const uint16_t* __restrict__ inp,
                                                                         const uint16_t* __restrict__ weight,
                                                                         const float* __restrict__ rstd, int64_t N,
                                                                         int64_t C) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= N) return;
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
  }
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

// dweight[c] += sum over chunks (increasing) of partial[chunk, c].
__global__ void __launch_bounds__(kThreads) rmsnorm_dweight_reduce_kernel(float* __restrict__ dweight,
                                                                          const float* __restrict__ partial,
                                                                          int64_t chunks, int64_t C) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= C) return;
  float acc = 0.0f;
  for (int64_t ch = 0; ch < chunks; ++ch) acc += partial[ch * C + c];
  dweight[c] += acc;
}

// ---- RoPE ------------------------------------------------------------------------------------------
//
// One thread per rotated pair (b, t, h, i), i < HS/2; consecutive threads take consecutive i, so
// a warp reads 64 contiguous bytes of each half of the head.

template <bool kBackward>
__global__ void rope_kernel(uint16_t* out, const uint16_t* inp, int64_t rows /* B*T*NH */, int64_t T, int64_t NH,
                            int64_t HS, float theta) {
  const int64_t half = HS / 2;
  const int64_t total = rows * half;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx % half, row = idx / half;
    const int64_t t = (row / NH) % T;
    // NOTE: exactly the CPU op's FP32 expression (HF's): inv_freq = 1 / theta^(2i/HS), angle =
    // float(t) * inv_freq. CUDA's powf and sincosf are within 2 ulp, not glibc's bits.
    const float inv_freq = 1.0f / powf(theta, static_cast<float>(2 * i) / static_cast<float>(HS));
    const float angle = static_cast<float>(t) * inv_freq;
    float sn, cs;
    sincosf(angle, &sn, &cs);
    const int64_t base = row * HS;
    const float x1 = bf16_to_f32(inp[base + i]), x2 = bf16_to_f32(inp[base + i + half]);
    if constexpr (!kBackward) {
      out[base + i] = f32_to_bf16(x1 * cs - x2 * sn);  // both read first: out may be inp
      out[base + i + half] = f32_to_bf16(x2 * cs + x1 * sn);
    } else {
      // The transpose of [[c, -s], [s, c]] is the rotation by -angle; accumulate into dinp.
      out[base + i] = f32_to_bf16(bf16_to_f32(out[base + i]) + (x1 * cs + x2 * sn));
      out[base + i + half] = f32_to_bf16(bf16_to_f32(out[base + i + half]) + (x2 * cs - x1 * sn));
    }
  }
}

// ---- attention -------------------------------------------------------------------------------------
//
// Layout: a CTA of 256 threads works on a tile of 64 rows (query rows in the forward and the dq
// kernel, key rows in the dk/dv kernel); each row belongs to a quad of 4 consecutive threads
// (r = tid / 4, j = tid % 4). Tiles of Q, K, V, dO live in shared memory as FP32, rows padded to
// HS + 4 floats (16-byte rows; float4 reads of 4 consecutive rows hit distinct banks).
// Roles in each tile step:
//   scores   thread (r, j) computes the 16 dot products of its row with tile rows j, j+4, ..., j+60
//   softmax  quad shuffles give the row max / sum (online softmax in the forward)
//   product  probabilities (or dS) go to a (64, 64+4) shared tile; thread (r, j) then owns the
//            output dims {4j + 16g + e}: float4 reads of 4 consecutive dims per quad lane
// Causality: query tile qt only sees key tiles 0..qt (equal tile sizes); masked scores are -inf.
// Rows past T are loaded as zeros and never stored.

constexpr int kAttTile = 64;
constexpr int kAttThreads = 256;
constexpr int kQuad = 4;
static_assert(kAttTile * kQuad == kAttThreads, "one quad of threads per tile row");

template <int HS>
struct AttLayout {
  static_assert(HS % 16 == 0, "each quad lane owns HS/16 float4 groups of output dims");
  static constexpr int kPitch = HS + 4;            // floats per row of a Q/K/V/dO tile
  static constexpr int kPPitch = kAttTile + 4;     // floats per row of a P / dS tile
  static constexpr int kTileFloats = kAttTile * kPitch;
  static constexpr int kPFloats = kAttTile * kPPitch;
  static constexpr int kGroups = HS / 16;          // float4 groups of output dims per thread
  static constexpr int kPerThread = kAttTile / kQuad;  // scores per thread per tile step (16)
};

// Rows [row0, row0 + 64) of one head of a (T, heads, HS) BF16 tensor (g points at row 0 of that
// head; rows are row_stride elements apart) into a padded FP32 tile; rows >= T are zeros.
template <int HS>
__device__ __forceinline__ void load_tile(float* tile, const uint16_t* g, int64_t row_stride, int row0, int T,
                                          bool aligned) {
  using L = AttLayout<HS>;
  constexpr int kVecs = HS / kVec;
  for (int idx = threadIdx.x; idx < kAttTile * kVecs; idx += kAttThreads) {
    const int r = idx / kVecs, c = (idx % kVecs) * kVec;
    float v[8];
    if (row0 + r < T) {
      const uint16_t* src = g + static_cast<int64_t>(row0 + r) * row_stride + c;
      if (aligned) load8<true>(src, 0, 8, v);
      else load8<false>(src, 0, 8, v);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = 0.0f;
    }
    float4* dst = reinterpret_cast<float4*>(tile + r * L::kPitch + c);
    dst[0] = make_float4(v[0], v[1], v[2], v[3]);
    dst[1] = make_float4(v[4], v[5], v[6], v[7]);
  }
}

__device__ __forceinline__ float dot4(float4 a, float4 b, float acc) {
  acc = fmaf(a.x, b.x, acc);
  acc = fmaf(a.y, b.y, acc);
  acc = fmaf(a.z, b.z, acc);
  return fmaf(a.w, b.w, acc);
}

__device__ __forceinline__ void axpy4(float (&acc)[4], float a, float4 x) {
  acc[0] = fmaf(a, x.x, acc[0]);
  acc[1] = fmaf(a, x.y, acc[1]);
  acc[2] = fmaf(a, x.z, acc[2]);
  acc[3] = fmaf(a, x.w, acc[3]);
}

// Stores dims {4j + 16g + e} of one output row (scaled by `scale`) as BF16.
template <int HS>
__device__ __forceinline__ void store_row(uint16_t* dst, const float (&acc)[HS / 16][4], float scale, int j,
                                          bool aligned) {
#pragma unroll
  for (int g = 0; g < HS / 16; ++g) {
    uint16_t* p = dst + 4 * j + 16 * g;
    const uint16_t h0 = f32_to_bf16(acc[g][0] * scale), h1 = f32_to_bf16(acc[g][1] * scale),
                   h2 = f32_to_bf16(acc[g][2] * scale), h3 = f32_to_bf16(acc[g][3] * scale);
    if (aligned) {
      *reinterpret_cast<uint2*>(p) = make_uint2(h0 | (static_cast<uint32_t>(h1) << 16), h2 | (static_cast<uint32_t>(h3) << 16));
    } else {
      p[0] = h0, p[1] = h1, p[2] = h2, p[3] = h3;
    }
  }
}

struct AttShape {
  int T, NH, NKV;
  float scale;   // 1 / sqrt(HS)
  bool aligned;  // every BF16 tensor 16-byte aligned
};

template <int HS>
constexpr size_t att_forward_smem() {
  using L = AttLayout<HS>;
  return sizeof(float) * (3 * L::kTileFloats + L::kPFloats);
}

template <int HS>
__global__ void __launch_bounds__(kAttThreads) attention_forward_kernel(uint16_t* __restrict__ out,
                                                                        float* __restrict__ lse,
                                                                        const uint16_t* __restrict__ q,
                                                                        const uint16_t* __restrict__ k,
                                                                        const uint16_t* __restrict__ v, AttShape s) {
  using L = AttLayout<HS>;
  extern __shared__ float4 att_smem[];
  float* sQ = reinterpret_cast<float*>(att_smem);
  float* sK = sQ + L::kTileFloats;
  float* sV = sK + L::kTileFloats;
  float* sP = sV + L::kTileFloats;

  const int qt = gridDim.x - 1 - blockIdx.x;  // the longest (latest) query tiles start first
  const int h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / (s.NH / s.NKV);
  const int r = threadIdx.x / kQuad, j = threadIdx.x % kQuad;
  const int tq = qt * kAttTile + r;
  const int64_t qstride = static_cast<int64_t>(s.NH) * HS, kstride = static_cast<int64_t>(s.NKV) * HS;
  const uint16_t* qb = q + static_cast<int64_t>(b) * s.T * qstride + h * HS;
  const uint16_t* kb = k + static_cast<int64_t>(b) * s.T * kstride + kvh * HS;
  const uint16_t* vb = v + static_cast<int64_t>(b) * s.T * kstride + kvh * HS;

  load_tile<HS>(sQ, qb, qstride, qt * kAttTile, s.T, s.aligned);
  float o[L::kGroups][4] = {};
  float m = -INFINITY, l = 0.0f;
  const float* qrow = sQ + r * L::kPitch;
  float* prow = sP + r * L::kPPitch;

  for (int kt = 0; kt <= qt; ++kt) {
    __syncthreads();  // the previous tile's readers are done (and sQ is loaded)
    load_tile<HS>(sK, kb, kstride, kt * kAttTile, s.T, s.aligned);
    load_tile<HS>(sV, vb, kstride, kt * kAttTile, s.T, s.aligned);
    __syncthreads();

    // scores of row r with key rows j + 4i
    float sc[L::kPerThread] = {};
#pragma unroll 4
    for (int d = 0; d < HS; d += 4) {
      const float4 q4 = *reinterpret_cast<const float4*>(qrow + d);
#pragma unroll
      for (int i = 0; i < L::kPerThread; ++i)
        sc[i] = dot4(q4, *reinterpret_cast<const float4*>(sK + (j + kQuad * i) * L::kPitch + d), sc[i]);
    }
    float mx = -INFINITY;
#pragma unroll
    for (int i = 0; i < L::kPerThread; ++i) {
      const int tk = kt * kAttTile + j + kQuad * i;
      sc[i] = (tk <= tq && tk < s.T) ? sc[i] * s.scale : -INFINITY;
      mx = fmaxf(mx, sc[i]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, 2));
    // NOTE: key 0 is visible to every row, so m is finite after tile 0 and no exp sees -inf - -inf.
    const float m_new = fmaxf(m, mx);
    const float alpha = expf(m - m_new);  // 0 on the first tile (m = -inf)
    float psum = 0.0f;
#pragma unroll
    for (int i = 0; i < L::kPerThread; ++i) {
      const float p = expf(sc[i] - m_new);
      psum += p;
      prow[j + kQuad * i] = p;
    }
    psum += __shfl_xor_sync(0xFFFFFFFFu, psum, 1);
    psum += __shfl_xor_sync(0xFFFFFFFFu, psum, 2);
    l = l * alpha + psum;
    m = m_new;
#pragma unroll
    for (int g = 0; g < L::kGroups; ++g)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[g][e] *= alpha;
    __syncwarp();  // row r of sP was written by this quad

    // o += P · V over the 64 keys of the tile
#pragma unroll 2
    for (int kk = 0; kk < kAttTile; kk += 4) {
      const float4 p4 = *reinterpret_cast<const float4*>(prow + kk);
      const float pv[4] = {p4.x, p4.y, p4.z, p4.w};
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const float* vrow = sV + (kk + u) * L::kPitch + 4 * j;
#pragma unroll
        for (int g = 0; g < L::kGroups; ++g) axpy4(o[g], pv[u], *reinterpret_cast<const float4*>(vrow + 16 * g));
      }
    }
  }
  if (tq < s.T) {
    store_row<HS>(out + (static_cast<int64_t>(b) * s.T + tq) * qstride + h * HS, o, 1.0f / l, j, s.aligned);
    if (j == 0) lse[(static_cast<int64_t>(b) * s.NH + h) * s.T + tq] = m + logf(l);
  }
}

// D[b, h, t] = sum_d dout[b,t,h,d] * out[b,t,h,d]: one warp per (b, t, h) row.
__global__ void __launch_bounds__(kThreads) attention_rowdot_kernel(float* __restrict__ D,
                                                                    const uint16_t* __restrict__ dout,
                                                                    const uint16_t* __restrict__ out, int64_t rows,
                                                                    int T, int NH, int HS) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;  // (b, t, h)
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  float acc = 0.0f;
  for (int d = lane; d < HS; d += 32) acc += bf16_to_f32(dout[row * HS + d]) * bf16_to_f32(out[row * HS + d]);
  acc = warp_sum(acc);
  if (lane == 0) {
    const int64_t h = row % NH, bt = row / NH, t = bt % T, b = bt / T;
    D[(b * NH + h) * T + t] = acc;
  }
}

template <int HS>
constexpr size_t att_dkdv_smem() {
  using L = AttLayout<HS>;
  return sizeof(float) * (4 * L::kTileFloats + 2 * L::kPFloats + 2 * kAttTile);
}

// dk, dv for one key tile of one KV head: loops over the group's query heads, then the query
// tiles that see this key tile, in increasing order (deterministic, no atomics).
template <int HS>
__global__ void __launch_bounds__(kAttThreads) attention_backward_dkdv_kernel(
    uint16_t* __restrict__ dk, uint16_t* __restrict__ dv, const uint16_t* __restrict__ dout,
    const uint16_t* __restrict__ q, const uint16_t* __restrict__ k, const uint16_t* __restrict__ v,
    const float* __restrict__ lse, const float* __restrict__ D, AttShape s) {
  using L = AttLayout<HS>;
  extern __shared__ float4 att_smem[];
  float* sK = reinterpret_cast<float*>(att_smem);
  float* sV = sK + L::kTileFloats;
  float* sQ = sV + L::kTileFloats;
  float* sdO = sQ + L::kTileFloats;
  float* sP = sdO + L::kTileFloats;
  float* sdS = sP + L::kPFloats;
  float* sL = sdS + L::kPFloats;  // lse of the tile's query rows
  float* sD = sL + kAttTile;      // D of the tile's query rows

  const int kt = blockIdx.x;  // early key tiles see the most query tiles: they start first
  const int kvh = blockIdx.y, b = blockIdx.z;
  const int group = s.NH / s.NKV;
  const int c = threadIdx.x / kQuad, j = threadIdx.x % kQuad;
  const int tk = kt * kAttTile + c;
  const int n_qt = (s.T + kAttTile - 1) / kAttTile;
  const int64_t qstride = static_cast<int64_t>(s.NH) * HS, kstride = static_cast<int64_t>(s.NKV) * HS;
  const int64_t kv_off = static_cast<int64_t>(b) * s.T * kstride + kvh * HS;

  load_tile<HS>(sK, k + kv_off, kstride, kt * kAttTile, s.T, s.aligned);
  load_tile<HS>(sV, v + kv_off, kstride, kt * kAttTile, s.T, s.aligned);
  float dka[L::kGroups][4] = {}, dva[L::kGroups][4] = {};
  const float* krow = sK + c * L::kPitch;
  const float* vrow = sV + c * L::kPitch;
  float* prow = sP + c * L::kPPitch;
  float* dsrow = sdS + c * L::kPPitch;

  for (int hh = 0; hh < group; ++hh) {
    const int h = kvh * group + hh;
    const int64_t q_off = static_cast<int64_t>(b) * s.T * qstride + h * HS;
    const int64_t row_off = (static_cast<int64_t>(b) * s.NH + h) * s.T;
    for (int qt = kt; qt < n_qt; ++qt) {
      __syncthreads();  // previous step's readers of sQ/sdO/sL/sD are done
      load_tile<HS>(sQ, q + q_off, qstride, qt * kAttTile, s.T, s.aligned);
      load_tile<HS>(sdO, dout + q_off, qstride, qt * kAttTile, s.T, s.aligned);
      for (int idx = threadIdx.x; idx < kAttTile; idx += kAttThreads) {
        const int t = qt * kAttTile + idx;
        sL[idx] = t < s.T ? lse[row_off + t] : 0.0f;
        sD[idx] = t < s.T ? D[row_off + t] : 0.0f;
      }
      __syncthreads();

      // scores s = q·k and dp = dO·v of key row c with query rows j + 4i
      float sc[L::kPerThread] = {}, dp[L::kPerThread] = {};
#pragma unroll 2
      for (int d = 0; d < HS; d += 4) {
        const float4 k4 = *reinterpret_cast<const float4*>(krow + d);
        const float4 v4 = *reinterpret_cast<const float4*>(vrow + d);
#pragma unroll
        for (int i = 0; i < L::kPerThread; ++i) {
          const int rr = j + kQuad * i;
          sc[i] = dot4(*reinterpret_cast<const float4*>(sQ + rr * L::kPitch + d), k4, sc[i]);
          dp[i] = dot4(*reinterpret_cast<const float4*>(sdO + rr * L::kPitch + d), v4, dp[i]);
        }
      }
#pragma unroll
      for (int i = 0; i < L::kPerThread; ++i) {
        const int rr = j + kQuad * i;
        const int tq = qt * kAttTile + rr;
        const bool visible = tq >= tk && tq < s.T;
        const float p = visible ? expf(sc[i] * s.scale - sL[rr]) : 0.0f;
        prow[rr] = p;
        dsrow[rr] = p * (dp[i] - sD[rr]);  // dS = P ∘ (dP − D)
      }
      __syncwarp();  // row c of sP / sdS was written by this quad

      // dv += Pᵀ · dO, dk += dSᵀ · Q (scaled at the end)
#pragma unroll 2
      for (int rr = 0; rr < kAttTile; rr += 4) {
        const float4 p4 = *reinterpret_cast<const float4*>(prow + rr);
        const float4 s4 = *reinterpret_cast<const float4*>(dsrow + rr);
        const float pv[4] = {p4.x, p4.y, p4.z, p4.w}, sv[4] = {s4.x, s4.y, s4.z, s4.w};
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const float* qr = sQ + (rr + u) * L::kPitch + 4 * j;
          const float* dor = sdO + (rr + u) * L::kPitch + 4 * j;
#pragma unroll
          for (int g = 0; g < L::kGroups; ++g) {
            axpy4(dva[g], pv[u], *reinterpret_cast<const float4*>(dor + 16 * g));
            axpy4(dka[g], sv[u], *reinterpret_cast<const float4*>(qr + 16 * g));
          }
        }
      }
    }
  }
  if (tk < s.T) {
    const int64_t off = kv_off + static_cast<int64_t>(tk) * kstride;
    store_row<HS>(dk + off, dka, s.scale, j, s.aligned);
    store_row<HS>(dv + off, dva, 1.0f, j, s.aligned);
  }
}

template <int HS>
constexpr size_t att_dq_smem() {
  using L = AttLayout<HS>;
  return sizeof(float) * (4 * L::kTileFloats + L::kPFloats);
}

// dq for one query tile of one head: loops over key tiles 0..qt in order.
template <int HS>
__global__ void __launch_bounds__(kAttThreads) attention_backward_dq_kernel(
    uint16_t* __restrict__ dq, const uint16_t* __restrict__ dout, const uint16_t* __restrict__ q,
    const uint16_t* __restrict__ k, const uint16_t* __restrict__ v, const float* __restrict__ lse,
    const float* __restrict__ D, AttShape s) {
  using L = AttLayout<HS>;
  extern __shared__ float4 att_smem[];
  float* sQ = reinterpret_cast<float*>(att_smem);
  float* sdO = sQ + L::kTileFloats;
  float* sK = sdO + L::kTileFloats;
  float* sV = sK + L::kTileFloats;
  float* sdS = sV + L::kTileFloats;

  const int qt = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z;
  const int kvh = h / (s.NH / s.NKV);
  const int r = threadIdx.x / kQuad, j = threadIdx.x % kQuad;
  const int tq = qt * kAttTile + r;
  const int64_t qstride = static_cast<int64_t>(s.NH) * HS, kstride = static_cast<int64_t>(s.NKV) * HS;
  const int64_t q_off = static_cast<int64_t>(b) * s.T * qstride + h * HS;
  const int64_t kv_off = static_cast<int64_t>(b) * s.T * kstride + kvh * HS;
  const int64_t row = (static_cast<int64_t>(b) * s.NH + h) * s.T + tq;
  const float lse_r = tq < s.T ? lse[row] : 0.0f;
  const float D_r = tq < s.T ? D[row] : 0.0f;

  load_tile<HS>(sQ, q + q_off, qstride, qt * kAttTile, s.T, s.aligned);
  load_tile<HS>(sdO, dout + q_off, qstride, qt * kAttTile, s.T, s.aligned);
  float dqa[L::kGroups][4] = {};
  const float* qrow = sQ + r * L::kPitch;
  const float* dorow = sdO + r * L::kPitch;
  float* dsrow = sdS + r * L::kPPitch;

  for (int kt = 0; kt <= qt; ++kt) {
    __syncthreads();
    load_tile<HS>(sK, k + kv_off, kstride, kt * kAttTile, s.T, s.aligned);
    load_tile<HS>(sV, v + kv_off, kstride, kt * kAttTile, s.T, s.aligned);
    __syncthreads();

    float sc[L::kPerThread] = {}, dp[L::kPerThread] = {};
#pragma unroll 2
    for (int d = 0; d < HS; d += 4) {
      const float4 q4 = *reinterpret_cast<const float4*>(qrow + d);
      const float4 o4 = *reinterpret_cast<const float4*>(dorow + d);
#pragma unroll
      for (int i = 0; i < L::kPerThread; ++i) {
        const int cc = j + kQuad * i;
        sc[i] = dot4(q4, *reinterpret_cast<const float4*>(sK + cc * L::kPitch + d), sc[i]);
        dp[i] = dot4(o4, *reinterpret_cast<const float4*>(sV + cc * L::kPitch + d), dp[i]);
      }
    }
#pragma unroll
    for (int i = 0; i < L::kPerThread; ++i) {
      const int tk = kt * kAttTile + j + kQuad * i;
      const bool visible = tk <= tq && tq < s.T;
      const float p = visible ? expf(sc[i] * s.scale - lse_r) : 0.0f;
      dsrow[j + kQuad * i] = p * (dp[i] - D_r);
    }
    __syncwarp();

#pragma unroll 2
    for (int cc = 0; cc < kAttTile; cc += 4) {
      const float4 s4 = *reinterpret_cast<const float4*>(dsrow + cc);
      const float sv[4] = {s4.x, s4.y, s4.z, s4.w};
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const float* kr = sK + (cc + u) * L::kPitch + 4 * j;
#pragma unroll
        for (int g = 0; g < L::kGroups; ++g) axpy4(dqa[g], sv[u], *reinterpret_cast<const float4*>(kr + 16 * g));
      }
    }
  }
  if (tq < s.T) store_row<HS>(dq + q_off + static_cast<int64_t>(tq) * qstride, dqa, s.scale, j, s.aligned);
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
  static const bool once = (allow_smem(attention_forward_kernel<HS>, smem, "attention_forward"), true);
  (void)once;
  const dim3 grid((s.T + kAttTile - 1) / kAttTile, s.NH, static_cast<unsigned>(B));
  attention_forward_kernel<HS><<<grid, kAttThreads, smem, stream>>>(out, lse, q, k, v, s);
  check_launch("attention_forward");
}

template <int HS>
void attention_backward_hs(uint16_t* dq, uint16_t* dk, uint16_t* dv, const uint16_t* dout, const uint16_t* q,
                           const uint16_t* k, const uint16_t* v, const float* lse, const float* D, int64_t B,
                           const AttShape& s, Stream stream) {
  constexpr size_t smem_kv = att_dkdv_smem<HS>(), smem_q = att_dq_smem<HS>();
  static const bool once = (allow_smem(attention_backward_dkdv_kernel<HS>, smem_kv, "attention_backward"),
                            allow_smem(attention_backward_dq_kernel<HS>, smem_q, "attention_backward"), true);
  (void)once;
  const unsigned tiles = (s.T + kAttTile - 1) / kAttTile;
  attention_backward_dkdv_kernel<HS>
      <<<dim3(tiles, s.NKV, static_cast<unsigned>(B)), kAttThreads, smem_kv, stream>>>(dk, dv, dout, q, k, v, lse, D, s);
  check_launch("attention_backward (dk, dv)");
  attention_backward_dq_kernel<HS>
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

// grid (N, ceil(C / kThreads)): block x = a sorted position; only the first position of each
// token's run works, adding the run's dout rows (positions increasing) into dwte[token].
__global__ void __launch_bounds__(kThreads) encoder_backward_kernel(float* __restrict__ dwte,
                                                                    const uint16_t* __restrict__ dout,
                                                                    const uint32_t* __restrict__ keys,
                                                                    const int32_t* __restrict__ positions, int64_t N,
                                                                    int64_t C, int64_t V) {
  const int64_t i = blockIdx.x;
  const uint32_t tok = keys[i];
  if (tok >= V || (i > 0 && keys[i - 1] == tok)) return;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kThreads + threadIdx.x;
  if (c >= C) return;
  float* row = dwte + static_cast<int64_t>(tok) * C;
  float acc = row[c];
  for (int64_t p = i; p < N && keys[p] == tok; ++p) acc += bf16_to_f32(dout[static_cast<int64_t>(positions[p]) * C + c]);
  row[c] = acc;
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
    throw Error(std::string("nvfp4: cuBLASLt error in ") + what + ": " + cublasLtGetStatusString(st) + " (" +
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

}  // namespace

// ---- Blas ----------------------------------------------------------------------------------------

struct Blas::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = size_t{32} << 20;

  struct Key {
    bool ta, tb;
    int64_t m, n, k, lda, ldb, ldd;
    int dtype_d;
    uint32_t align_a, align_b, align_d;
    auto operator<=>(const Key&) const = default;
  };
  std::map<Key, cublasLtMatmulAlgo_t> algos;

  // Column-major D (m, n) = op(A) (m, k) · op(B) (k, n) + beta * D; A, B BF16; D BF16 or FP32.
  void gemm(const char* op, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void* A, int64_t lda,
            const void* B, int64_t ldb, void* D, cudaDataType_t dtype_d, int64_t ldd, float beta, Stream stream) {
    MatmulDesc desc;
    check_blas(cublasLtMatmulDescCreate(&desc.d, CUBLAS_COMPUTE_32F, CUDA_R_32F), op);
    const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    check_blas(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)), op);
    check_blas(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)), op);
    Layout la, lb, ld;
    check_blas(cublasLtMatrixLayoutCreate(&la.d, CUDA_R_16BF, ta ? k : m, ta ? m : k, lda), op);
    check_blas(cublasLtMatrixLayoutCreate(&lb.d, CUDA_R_16BF, tb ? n : k, tb ? k : n, ldb), op);
    check_blas(cublasLtMatrixLayoutCreate(&ld.d, dtype_d, m, n, ldd), op);

    const Key key{ta, tb, m, n, k, lda, ldb, ldd, static_cast<int>(dtype_d), ptr_alignment(A), ptr_alignment(B),
                  ptr_alignment(D)};
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
        throw Error(std::string("nvfp4: cuda::") + op + ": cuBLASLt has no algorithm for m=" + std::to_string(m) +
                    " n=" + std::to_string(n) + " k=" + std::to_string(k) + "; check the operand alignment");
      it = algos.emplace(key, result.algo).first;
    }
    const float alpha = 1.0f;
    check_blas(cublasLtMatmul(handle, desc.d, &alpha, A, la.d, B, lb.d, &beta, D, ld.d, D, ld.d, &it->second,
                              workspace, workspace_bytes, stream),
               op);
  }
};

Blas::Blas() : impl_(std::make_unique<Impl>()) {
  check_blas(cublasLtCreate(&impl_->handle), "Blas (cublasLtCreate)");
  const cudaError_t e = cudaMalloc(&impl_->workspace, impl_->workspace_bytes);
  if (e != cudaSuccess) {
    cublasLtDestroy(impl_->handle);
    check(e, "Blas (workspace cudaMalloc)");
  }
}

Blas::~Blas() {
  if (!impl_) return;
  cudaFree(impl_->workspace);
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

// ---- RMSNorm -------------------------------------------------------------------------------------

void rmsnorm_forward(uint16_t* out, float* rstd, const uint16_t* inp, const uint16_t* weight, int64_t N, int64_t C,
                     float eps, Stream stream) {
  constexpr const char* op = "rmsnorm_forward";
  require_nonnegative(op, {{"N", N}, {"C", C}});
  require(C > 0 || N == 0, op, "C = 0: a row without channels has no RMS");
  if (N == 0) return;
  const bool aligned = C % kVec == 0 && aligned16(out) && aligned16(inp) && aligned16(weight);
  NVFP4_LAUNCH_ALIGNED(aligned, rmsnorm_forward_kernel, grid_for(N, kRowsPerBlock), kThreads, 0, stream, out, rstd, inp,
                       weight, N, C, eps);
  check_launch(op);
}

size_t rmsnorm_backward_scratch_bytes(int64_t N, int64_t C) {
  return sizeof(float) * static_cast<size_t>((N + kNormChunkRows - 1) / kNormChunkRows) * static_cast<size_t>(C);
}

void rmsnorm_backward(uint16_t* dinp, float* dweight, const uint16_t* dout, const uint16_t* inp,
                      const uint16_t* weight, const float* rstd, int64_t N, int64_t C, void* scratch, Stream stream) {
  constexpr const char* op = "rmsnorm_backward";
  require_nonnegative(op, {{"N", N}, {"C", C}});
  if (N == 0 || C == 0) return;
  if (dinp) {
    const bool aligned =
        C % kVec == 0 && aligned16(dinp) && aligned16(dout) && aligned16(inp) && aligned16(weight);
    NVFP4_LAUNCH_ALIGNED(aligned, rmsnorm_backward_dinp_kernel, grid_for(N, kRowsPerBlock), kThreads, 0, stream, dinp,
                         dout, inp, weight, rstd, N, C);
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
    rmsnorm_dweight_reduce_kernel<<<static_cast<unsigned>(channel_blocks), kThreads, 0, stream>>>(dweight, partial,
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
}
}  // namespace

void rope_forward(uint16_t* out, const uint16_t* inp, int64_t B, int64_t T, int64_t NH, int64_t HS, float theta,
                  Stream stream) {
  rope_check("rope_forward", B, T, NH, HS, theta);
  const int64_t rows = B * T * NH;
  if (rows == 0 || HS == 0) return;
  rope_kernel<false><<<grid_for(rows * (HS / 2)), kThreads, 0, stream>>>(out, inp, rows, T, NH, HS, theta);
  check_launch("rope_forward");
}

void rope_backward(uint16_t* dinp, const uint16_t* dout, int64_t B, int64_t T, int64_t NH, int64_t HS, float theta,
                   Stream stream) {
  rope_check("rope_backward", B, T, NH, HS, theta);
  const int64_t rows = B * T * NH;
  if (rows == 0 || HS == 0) return;
  rope_kernel<true><<<grid_for(rows * (HS / 2)), kThreads, 0, stream>>>(dinp, dout, rows, T, NH, HS, theta);
  check_launch("rope_backward");
}

// ---- attention ------------------------------------------------------------------------------------

void attention_forward(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v, int64_t B,
                       int64_t T, int64_t NH, int64_t NKV, int64_t HS, Stream stream) {
  constexpr const char* op = "attention_forward";
  attention_check(op, B, T, NH, NKV, HS);
  if (B == 0 || T == 0 || NH == 0) return;
  const AttShape s{static_cast<int>(T), static_cast<int>(NH), static_cast<int>(NKV),
                   1.0f / sqrtf(static_cast<float>(HS)),
                   aligned16(out) && aligned16(q) && aligned16(k) && aligned16(v)};
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
                        int64_t NH, int64_t NKV, int64_t HS, void* scratch, Stream stream) {
  constexpr const char* op = "attention_backward";
  attention_check(op, B, T, NH, NKV, HS);
  if (B == 0 || T == 0 || NH == 0) return;
  require_ptr(scratch, op, "scratch (attention_backward_scratch_bytes)");
  float* D = static_cast<float*>(scratch);
  const int64_t rows = B * T * NH;
  attention_rowdot_kernel<<<grid_for(rows, kRowsPerBlock), kThreads, 0, stream>>>(D, dout, out, rows, static_cast<int>(T),
                                                                                  static_cast<int>(NH),
                                                                                  static_cast<int>(HS));
  check_launch(op);
  const AttShape s{static_cast<int>(T), static_cast<int>(NH), static_cast<int>(NKV),
                   1.0f / sqrtf(static_cast<float>(HS)),
                   aligned16(dq) && aligned16(dk) && aligned16(dv) && aligned16(dout) && aligned16(q) &&
                       aligned16(k) && aligned16(v)};
  switch (HS) {
    case 32: attention_backward_hs<32>(dq, dk, dv, dout, q, k, v, lse, D, B, s, stream); break;
    case 64: attention_backward_hs<64>(dq, dk, dv, dout, q, k, v, lse, D, B, s, stream); break;
    default: attention_backward_hs<128>(dq, dk, dv, dout, q, k, v, lse, D, B, s, stream); break;
  }
}

// ---- SwiGLU, residual, conversions -------------------------------------------------------------

void swiglu_forward(uint16_t* out, const uint16_t* gate, const uint16_t* up, int64_t n, Stream stream) {
  require_nonnegative("swiglu_forward", {{"n", n}});
  if (n == 0) return;
  const bool aligned = aligned16(out) && aligned16(gate) && aligned16(up);
  NVFP4_LAUNCH_ALIGNED(aligned, swiglu_forward_kernel, grid_for((n + kVec - 1) / kVec), kThreads, 0, stream, out, gate,
                       up, n);
  check_launch("swiglu_forward");
}

void swiglu_backward(uint16_t* dgate, uint16_t* dup, const uint16_t* dout, const uint16_t* gate, const uint16_t* up,
                     int64_t n, Stream stream) {
  require_nonnegative("swiglu_backward", {{"n", n}});
  if (n == 0) return;
  const bool aligned = aligned16(dgate) && aligned16(dup) && aligned16(dout) && aligned16(gate) && aligned16(up);
  NVFP4_LAUNCH_ALIGNED(aligned, swiglu_backward_kernel, grid_for((n + kVec - 1) / kVec), kThreads, 0, stream, dgate,
                       dup, dout, gate, up, n);
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

size_t encoder_backward_scratch_bytes(int64_t B, int64_t T, int64_t V) {
  const int64_t N = B * T;
  return 4 * align256(sizeof(int32_t) * static_cast<size_t>(N)) + align256(cub_sort_bytes(N, V));
}

void encoder_backward(float* dwte, const uint16_t* dout, const int32_t* tokens, int64_t B, int64_t T, int64_t C,
                      int64_t V, void* scratch, uint32_t* status, Stream stream) {
  constexpr const char* op = "encoder_backward";
  require_nonnegative(op, {{"B", B}, {"T", T}, {"C", C}, {"V", V}});
  const int64_t N = B * T;
  if (N == 0 || C == 0) return;
  require(N <= INT_MAX && V < (int64_t{1} << 31), op, "B*T or V does not fit the 32-bit sort");
  require_ptr(scratch, op, "scratch (encoder_backward_scratch_bytes)");
  const int64_t channel_blocks = (C + kThreads - 1) / kThreads;
  require(channel_blocks <= 65535, op, "C too large for the launch grid");
  char* base = static_cast<char*>(scratch);
  const size_t seg = align256(sizeof(int32_t) * static_cast<size_t>(N));
  uint32_t* keys_in = reinterpret_cast<uint32_t*>(base);
  uint32_t* keys_out = reinterpret_cast<uint32_t*>(base + seg);
  int32_t* pos_in = reinterpret_cast<int32_t*>(base + 2 * seg);
  int32_t* pos_out = reinterpret_cast<int32_t*>(base + 3 * seg);
  void* temp = base + 4 * seg;
  size_t temp_bytes = cub_sort_bytes(N, V);

  encoder_keys_kernel<<<grid_for(N), kThreads, 0, stream>>>(keys_in, pos_in, tokens, N, V, status);
  check_launch(op);
  // NOTE: LSD radix sort is stable: equal tokens keep their positions in increasing order.
  check(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, pos_in, pos_out, static_cast<int>(N), 0,
                                        key_bits(V), stream),
        "encoder_backward (sort)");
  encoder_backward_kernel<<<dim3(static_cast<unsigned>(N), static_cast<unsigned>(channel_blocks)), kThreads, 0,
                            stream>>>(dwte, dout, keys_out, pos_out, N, C, V);
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
