// CUDA RMSNorm forward and backward (include/nvfp4/cuda_ops.hpp; CPU twin: src/kernels/cpu/norm.cpp).
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "kernels/cuda/ops_common.cuh"

namespace nvfp4::cuda {

using namespace ops_detail;

namespace {

// ---- RMSNorm ----------------------------------------------------------------------------------
//
// One warp per row; lane l handles the 8-element chunks l, l + 32, ... The row is read twice
// (sum of squares, then the output): the second read hits L1/L2.

constexpr int kRowsPerBlock = kThreads / 32;
constexpr int kNormChunkRows = kColumnChunkRows;  // dweight: fixed-order column sums (ops_common.cuh)

// One row's output, o = bf16((x * r) * weight), by one warp: kRowBatch chunks' loads issued at once,
// then each chunk in order. Returns m folded with max |o| when `fold` (the producer amax).
template <bool kAligned>
__device__ __forceinline__ float write_normed_row(uint16_t* o, const uint16_t* x, const uint16_t* weight, int64_t C,
                                                  float r, int lane, float m, bool fold) {
  for (int64_t c0 = lane * kVec; c0 < C; c0 += kRowBatchSpan) {
    float v[kRowBatch][8], w[kRowBatch][8];
#pragma unroll
    for (int b = 0; b < kRowBatch; ++b) {
      if (c0 + b * 32 * kVec < C) {
        load8<kAligned>(x, c0 + b * 32 * kVec, C, v[b]);
        load8<kAligned>(weight, c0 + b * 32 * kVec, C, w[b]);
      }
    }
#pragma unroll
    for (int b = 0; b < kRowBatch; ++b) {
      if (c0 + b * 32 * kVec < C) {
#pragma unroll
        for (int e = 0; e < 8; ++e) v[b][e] = (v[b][e] * r) * w[b][e];
        store8<kAligned>(o, c0 + b * 32 * kVec, C, v[b]);
        if (fold) m = max_abs8(m, v[b]);
      }
    }
  }
  return m;
}

template <bool kAligned>
__global__ void __launch_bounds__(kThreads) rmsnorm_forward_kernel(uint16_t* __restrict__ out, float* __restrict__ rstd,
                                                                   const uint16_t* __restrict__ inp,
                                                                   const uint16_t* __restrict__ weight, int64_t N,
                                                                   int64_t C, float eps, float* amax) {
  dependent_wait();  // launched with launch_dependent (ops_common.cuh)
  dependent_trigger();
  const int lane = threadIdx.x & 31;
  float m = 0.0f;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32; row < N;
       row += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const uint16_t* x = inp + row * C;  // (C)
    const float r = warp_row_rstd<kAligned>(x, C, eps, lane);
    m = write_normed_row<kAligned>(out + row * C, x, weight, C, r, lane, m, amax != nullptr);
    if (lane == 0) rstd[row] = r;
  }
  fold_amax(amax, m);
}

// residual_forward then rmsnorm_forward_kernel's loops: x += delta stored (BF16), the sum of
// squares of the stored values, then the output from x read back.
template <bool kAligned>
__global__ void __launch_bounds__(kThreads) residual_rmsnorm_kernel(uint16_t* out, float* rstd, uint16_t* x,
                                                                    const uint16_t* delta, const uint16_t* weight,
                                                                    int64_t N, int64_t C, float eps) {
  dependent_wait();  // launched with launch_dependent (ops_common.cuh)
  dependent_trigger();
  const int lane = threadIdx.x & 31;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32; row < N;
       row += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    uint16_t* xr = x + row * C;
    const uint16_t* dr = delta + row * C;
    float ss = 0.0f;
    // kRowBatch chunks' loads at once (x and delta never overlap; a lane stores only its own
    // chunks), then each chunk in order: the bits of one chunk at a time.
    for (int64_t c0 = lane * kVec; c0 < C; c0 += kRowBatchSpan) {
      float v[kRowBatch][8], d[kRowBatch][8];
#pragma unroll
      for (int b = 0; b < kRowBatch; ++b) {
        if (c0 + b * 32 * kVec < C) {
          load8<kAligned>(xr, c0 + b * 32 * kVec, C, v[b]);
          load8<kAligned>(dr, c0 + b * 32 * kVec, C, d[b]);
        }
      }
#pragma unroll
      for (int b = 0; b < kRowBatch; ++b) {
        if (c0 + b * 32 * kVec < C) {
#pragma unroll
          for (int e = 0; e < 8; ++e) v[b][e] += d[b][e];
          store8<kAligned>(xr, c0 + b * 32 * kVec, C, v[b]);
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            v[b][e] = bf16_to_f32(f32_to_bf16(v[b][e]));  // as stored
            ss = add_square(ss, v[b][e]);
          }
        }
      }
    }
    ss = warp_sum(ss);
    const float r = 1.0f / sqrtf(ss / static_cast<float>(C) + eps);
    write_normed_row<kAligned>(out + row * C, xr, weight, C, r, lane, 0.0f, false);  // xr: this lane's own stores
    if (lane == 0) rstd[row] = r;
  }
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

}  // namespace

// ---- RMSNorm -------------------------------------------------------------------------------------

void rmsnorm_forward(uint16_t* out, float* rstd, const uint16_t* inp, const uint16_t* weight, int64_t N, int64_t C,
                     float eps, Stream stream, float* amax) {
  constexpr const char* op = "rmsnorm_forward";
  require_nonnegative(op, {{"N", N}, {"C", C}});
  require(C > 0 || N == 0, op, "C = 0: a row without channels has no RMS");
  if (N == 0) return;
  const bool aligned = C % kVec == 0 && aligned16(out) && aligned16(inp) && aligned16(weight);
  NVFP4_LAUNCH_PRODUCER_DEPENDENT(aligned, rmsnorm_forward_kernel, N, kRowsPerBlock, amax, stream, out, rstd, inp,
                                  weight, N, C, eps, amax);
  check_launch(op);
}

void residual_rmsnorm_forward(uint16_t* out, float* rstd, uint16_t* x, const uint16_t* delta, const uint16_t* weight,
                              int64_t N, int64_t C, float eps, Stream stream) {
  constexpr const char* op = "residual_rmsnorm_forward";
  require_nonnegative(op, {{"N", N}, {"C", C}});
  require(C > 0 || N == 0, op, "C = 0: a row without channels has no RMS");
  if (N == 0) return;
  const auto overlaps = [&](const uint16_t* p) { return p < x + N * C && x < p + N * C; };
  require(!overlaps(delta) && !overlaps(out), op, "delta and out must not overlap x (the residual it updates)");
  const bool aligned =
      C % kVec == 0 && aligned16(out) && aligned16(x) && aligned16(delta) && aligned16(weight);
  NVFP4_LAUNCH_PRODUCER_DEPENDENT(aligned, residual_rmsnorm_kernel, N, kRowsPerBlock, nullptr, stream, out, rstd, x,
                                  delta, weight, N, C, eps);
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
    launch_column_chunks_add(dweight, partial, chunks, C, stream);
    check_launch(op);
  }
}

}  // namespace nvfp4::cuda
