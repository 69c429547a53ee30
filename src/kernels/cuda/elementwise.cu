// CUDA SwiGLU, residual add, FP32 <-> BF16 conversions, a linear layer's bias (forward and
// backward), and the inference row ops (a GEMM output's row factor and bias; a row gather) (include/nvfp4/cuda_ops.hpp; CPU twin:
// src/kernels/cpu/elementwise.cpp).
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "kernels/cuda/ops_common.cuh"

namespace nvfp4::cuda {

using namespace ops_detail;

namespace {

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

// Grid-stride loop over the 8-element chunks of an n-element array: i is the chunk's first index.
#define NVFP4_FOR_CHUNKS(i, n)                                                                   \
  for (int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kVec; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x * kVec)

// ---- elementwise kernels ------------------------------------------------------------------------

template <bool kAligned>
__global__ void residual_kernel(uint16_t* out, const uint16_t* a, const uint16_t* b, int64_t n) {
  dependent_wait();  // launched with launch_dependent (ops_common.cuh)
  dependent_trigger();
  NVFP4_FOR_CHUNKS(i, n) {
    float x[8], y[8];
    load8<kAligned>(a, i, n, x);
    load8<kAligned>(b, i, n, y);
#pragma unroll
    for (int e = 0; e < 8; ++e) x[e] += y[e];
    store8<kAligned>(out, i, n, x);  // out may be a or b: this thread read its chunk first
  }
}

template <bool kAligned>
__global__ void swiglu_forward_kernel(uint16_t* out, const uint16_t* gate, const uint16_t* up, int64_t n, float* amax) {
  float m = 0.0f;
  NVFP4_FOR_CHUNKS(i, n) {
    float g[8], u[8];
    load8<kAligned>(gate, i, n, g);
    load8<kAligned>(up, i, n, u);
#pragma unroll
    for (int e = 0; e < 8; ++e) g[e] = swiglu_value(g[e], u[e]);
    store8<kAligned>(out, i, n, g);
    if (amax) m = max_abs8(m, g);
  }
  fold_amax(amax, m);
}

// Row n: out[n, :] = swiglu of gu[n, :F] and gu[n, F:].
template <bool kAligned>
__global__ void swiglu_rows_kernel(uint16_t* out, const uint16_t* gu, int64_t N, int64_t F) {
  dependent_wait();  // launched with launch_dependent (ops_common.cuh)
  dependent_trigger();
  const int64_t chunks = (F + kVec - 1) / kVec;
  NVFP4_FOR_ROW_CHUNKS(idx, N, chunks) {
    const int64_t n = idx / chunks, c = (idx % chunks) * kVec;
    float g[8], u[8];
    load8<kAligned>(gu + n * 2 * F, c, F, g);
    load8<kAligned>(gu + n * 2 * F + F, c, F, u);
#pragma unroll
    for (int e = 0; e < 8; ++e) g[e] = swiglu_value(g[e], u[e]);
    store8<kAligned>(out + n * F, c, F, g);
  }
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

// ---- bias ----------------------------------------------------------------------------------------

// out (N, OC) bf16 += bias (OC) fp32, rows in 8-element chunks; kAligned as the row kernels below.
template <bool kAligned>
__global__ void bias_forward_kernel(uint16_t* __restrict__ out, const float* __restrict__ bias, int64_t N, int64_t OC) {
  const int64_t chunks = (OC + kVec - 1) / kVec;
  NVFP4_FOR_ROW_CHUNKS(idx, N, chunks) {
    const int64_t n = idx / chunks, o = (idx % chunks) * kVec;
    float y[8], b[8];
    load8<kAligned>(out + n * OC, o, OC, y);
    load8f<kAligned>(bias, o, OC, b);
#pragma unroll
    for (int e = 0; e < 8; ++e) y[e] += b[e];
    store8<kAligned>(out + n * OC, o, OC, y);
  }
}

// partial[chunk, o] = sum over the chunk's rows (increasing) of dout[n, o]: the first pass of the
// fixed-order column sums (ops_common.cuh). grid (chunks, ceil(OC / kThreads)), one thread a column.
__global__ void __launch_bounds__(kThreads) bias_partial_kernel(float* __restrict__ partial,
                                                                const uint16_t* __restrict__ dout, int64_t N,
                                                                int64_t OC) {
  const int64_t o = static_cast<int64_t>(blockIdx.y) * kThreads + threadIdx.x;
  if (o >= OC) return;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kColumnChunkRows;
  const int64_t n1 = min(N, n0 + kColumnChunkRows);
  float acc = 0.0f;
  for (int64_t n = n0; n < n1; ++n) acc += bf16_to_f32(dout[n * OC + o]);
  partial[blockIdx.x * OC + o] = acc;
}

// ---- inference row kernels ------------------------------------------------------------------------
//
// Rows in 8-element chunks (NVFP4_FOR_ROW_CHUNKS). kAligned: the row length is a multiple of 8 and
// every array 16-byte aligned.

template <bool kAligned>
__global__ void scale_rows_bias_kernel(uint16_t* __restrict__ out, const float* __restrict__ in,
                                       const float* __restrict__ row_factor, const uint16_t* __restrict__ bias,
                                       int64_t N, int64_t OC) {
  const int64_t chunks = (OC + kVec - 1) / kVec;
  NVFP4_FOR_ROW_CHUNKS(idx, N, chunks) {
    const int64_t n = idx / chunks, o = (idx % chunks) * kVec;
    float y[8], b[8];
    load8f<kAligned>(in + n * OC, o, OC, y);
    if (row_factor) {
      const float f = row_factor[n];
#pragma unroll
      for (int e = 0; e < 8; ++e) y[e] = __fmul_rn(y[e], f);  // NOTE: _rn: never fused with the add
    }
    if (bias) {
      load8<kAligned>(bias, o, OC, b);
#pragma unroll
      for (int e = 0; e < 8; ++e) y[e] = __fadd_rn(y[e], b[e]);
    }
    store8<kAligned>(out + n * OC, o, OC, y);
  }
}

template <bool kAligned>
__global__ void gather_rows_kernel(uint16_t* __restrict__ out, const uint16_t* __restrict__ in,
                                   const int32_t* __restrict__ rows, int64_t n, int64_t n_in, int64_t C,
                                   uint32_t* status) {
  dependent_wait();  // launched with launch_dependent (ops_common.cuh)
  dependent_trigger();
  const int64_t chunks = (C + kVec - 1) / kVec;
  NVFP4_FOR_ROW_CHUNKS(idx, n, chunks) {
    const int64_t i = idx / chunks, c = (idx % chunks) * kVec;
    const int32_t r = rows[i];
    if (r >= 0 && r < n_in) {
      copy8<kAligned>(out + i * C, in + r * C, c, C);
    } else {
      const float zero[8] = {};
      store8<kAligned>(out + i * C, c, C, zero);
      if (status && c == 0) atomicOr(status, kStatusBadRow);
    }
  }
}

}  // namespace

// ---- SwiGLU, residual, conversions -------------------------------------------------------------

void swiglu_forward(uint16_t* out, const uint16_t* gate, const uint16_t* up, int64_t n, Stream stream, float* amax) {
  require_nonnegative("swiglu_forward", {{"n", n}});
  if (n == 0) return;
  const bool aligned = aligned16(out) && aligned16(gate) && aligned16(up);
  NVFP4_LAUNCH_PRODUCER(aligned, swiglu_forward_kernel, (n + kVec - 1) / kVec, kThreads, amax, stream, out, gate, up, n,
                        amax);
  check_launch("swiglu_forward");
}

void swiglu_rows(uint16_t* out, const uint16_t* gu, int64_t N, int64_t F, Stream stream) {
  require_nonnegative("swiglu_rows", {{"N", N}, {"F", F}});
  if (N == 0 || F == 0) return;
  const bool aligned = F % kVec == 0 && aligned16(out) && aligned16(gu);
  NVFP4_LAUNCH_ALIGNED_DEPENDENT(aligned, swiglu_rows_kernel, grid_for(N * ((F + kVec - 1) / kVec)), kThreads, 0,
                                 stream, out, gu, N, F);
  check_launch("swiglu_rows");
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
  NVFP4_LAUNCH_ALIGNED_DEPENDENT(aligned, residual_kernel, grid_for((n + kVec - 1) / kVec), kThreads, 0, stream, out,
                                 a, b, n);
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

// ---- bias ----------------------------------------------------------------------------------------

void bias_forward(uint16_t* out, const float* bias, int64_t N, int64_t OC, Stream stream) {
  constexpr const char* op = "bias_forward";
  require_nonnegative(op, {{"N", N}, {"OC", OC}});
  if (N == 0 || OC == 0) return;
  require_ptr(bias, op, "bias");
  const bool aligned = OC % kVec == 0 && aligned16(out) && aligned16(bias);
  NVFP4_LAUNCH_ALIGNED(aligned, bias_forward_kernel, grid_for(N * ((OC + kVec - 1) / kVec)), kThreads, 0, stream, out,
                       bias, N, OC);
  check_launch(op);
}

size_t bias_backward_scratch_bytes(int64_t N, int64_t OC) {
  return sizeof(float) * static_cast<size_t>(column_chunks(N)) * static_cast<size_t>(OC);
}

void bias_backward(float* dbias, const uint16_t* dout, int64_t N, int64_t OC, void* scratch, Stream stream) {
  constexpr const char* op = "bias_backward";
  require_nonnegative(op, {{"N", N}, {"OC", OC}});
  if (N == 0 || OC == 0) return;
  require_ptr(scratch, op, "scratch (bias_backward_scratch_bytes)");
  const int64_t chunks = column_chunks(N), column_blocks = (OC + kThreads - 1) / kThreads;
  require(chunks <= INT_MAX && column_blocks <= 65535, op, "N or OC too large for the launch grid");
  float* partial = static_cast<float*>(scratch);
  bias_partial_kernel<<<dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(column_blocks)), kThreads, 0,
                        stream>>>(partial, dout, N, OC);
  check_launch(op);
  launch_column_chunks_add(dbias, partial, chunks, OC, stream);
  check_launch(op);
}

// ---- inference row ops ------------------------------------------------------------------------------

void scale_rows_bias_to_bf16(uint16_t* out, const float* in, const float* row_factor, const uint16_t* bias, int64_t N,
                             int64_t OC, Stream stream) {
  require_nonnegative("scale_rows_bias_to_bf16", {{"N", N}, {"OC", OC}});
  if (N == 0 || OC == 0) return;
  const bool aligned = OC % kVec == 0 && aligned16(out) && aligned16(in) && (bias == nullptr || aligned16(bias));
  NVFP4_LAUNCH_ALIGNED(aligned, scale_rows_bias_kernel, grid_for(N * ((OC + kVec - 1) / kVec)), kThreads, 0, stream,
                       out, in, row_factor, bias, N, OC);
  check_launch("scale_rows_bias_to_bf16");
}

void gather_rows(uint16_t* out, const uint16_t* in, const int32_t* rows, int64_t n, int64_t n_in, int64_t C,
                 uint32_t* status, Stream stream) {
  require_nonnegative("gather_rows", {{"n", n}, {"n_in", n_in}, {"C", C}});
  if (n == 0 || C == 0) return;
  const bool aligned = C % kVec == 0 && aligned16(out) && aligned16(in);
  NVFP4_LAUNCH_ALIGNED_DEPENDENT(aligned, gather_rows_kernel, grid_for(n * ((C + kVec - 1) / kVec)), kThreads, 0,
                                 stream, out, in, rows, n, n_in, C, status);
  check_launch("gather_rows");
}

}  // namespace nvfp4::cuda
