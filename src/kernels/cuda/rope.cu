// CUDA rotary position embedding (include/nvfp4/cuda_ops.hpp; CPU twin: src/kernels/cpu/rope.cpp).
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "kernels/cuda/ops_common.cuh"

namespace nvfp4::cuda {

using namespace ops_detail;

namespace {

// ---- RoPE ------------------------------------------------------------------------------------------
//
// A block takes `tpb` consecutive (b, t) rows. It first computes the cos and sin of their angles
// into shared memory — half of them per token, each exactly the CPU op's FP32 expression (HF's):
// inv_freq = 1 / theta^(2i/HS), angle = float(t) * inv_freq — then rotates every head of those
// tokens with them, so each angle is computed once per token instead of once per head (powf and
// sincosf cost more than the pair's memory traffic). kVec8: a thread rotates 8 pairs (i..i+7 with
// i+HS/2..) through 16-byte loads (HS/2 a multiple of 8, tensors 16-byte aligned); else one pair.
// NOTE: CUDA's powf and sincosf are within 2 ulp, not glibc's bits.
// The angles' other sources run the same kernel: the table overloads (RoPE scaling) take the
// caller's frequencies, angle = float(t) * inv_freq[i]; inference (rope_rows) also takes a token's
// position from pos[token], angle = float(pos) * inv_freq[i].

// Where the angle of pair i of a token comes from.
struct RopeAngles {
  const int32_t* pos;     // positions (tokens), or nullptr: the token's position is token % T
  const float* inv_freq;  // the caller's inv_freq (HS/2), or nullptr: 1 / theta^(2i/HS) (pos null)
  int T;
  float theta;
  __device__ __forceinline__ float angle(int token, int i, int HS) const {
    if (pos != nullptr) return static_cast<float>(pos[token]) * inv_freq[i];
    const float f =
        inv_freq != nullptr ? inv_freq[i] : 1.0f / powf(theta, static_cast<float>(2 * i) / static_cast<float>(HS));
    return static_cast<float>(token % T) * f;
  }
};

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
                                                        RopeAngles angles, int NH, int HS, int tpb, float* amax,
                                                        bool accumulate) {
  extern __shared__ float2 rope_cs[];  // [tpb][HS/2]: (cos, sin)
  constexpr int W = kVec8 ? 8 : 1;
  const int half = HS / 2;
  const int tok0 = blockIdx.x * tpb;
  const int ntok = min(tpb, tokens - tok0);
  for (int j = threadIdx.x; j < ntok * half; j += blockDim.x) {
    float sn, cs;
    sincosf(angles.angle(tok0 + j / half, j % half, HS), &sn, &cs);
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
      for (int e = 0; e < W; ++e) rope_rotate(x1[e], x2[e], cs[e].x, cs[e].y, y1[e], y2[e]);
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

}  // namespace

// ---- RoPE ------------------------------------------------------------------------------------------

namespace {
void rope_check(const char* op, int64_t B, int64_t T, int64_t NH, int64_t HS) {
  require_nonnegative(op, {{"B", B}, {"T", T}, {"NH", NH}, {"HS", HS}});
  require(HS % 2 == 0, op, "HS = " + std::to_string(HS) + " is odd; rotate_half pairs i with i + HS/2");
  require(B * T <= INT_MAX && NH <= INT_MAX / std::max<int64_t>(HS, 1), op, "B*T or NH*HS exceeds the kernel's int range");
}

template <bool kBackward>
void launch_rope(uint16_t* out, const uint16_t* inp, int64_t tokens, RopeAngles angles, int64_t NH, int64_t HS,
                 Stream stream, float* amax, bool accumulate) {
  const int64_t half = HS / 2;
  // Tokens per block: up to 16, fewer for wide heads (16 KiB of angles at most).
  const int64_t tpb = std::clamp<int64_t>(2048 / half, 1, 16);
  const unsigned grid = static_cast<unsigned>((tokens + tpb - 1) / tpb);
  const size_t smem = sizeof(float2) * static_cast<size_t>(tpb * half);
  const bool vec = half % 8 == 0 && aligned16(out) && aligned16(inp);
  const auto kernel = vec ? rope_kernel<kBackward, true> : rope_kernel<kBackward, false>;
  kernel<<<grid, kThreads, smem, stream>>>(out, inp, static_cast<int>(tokens), angles, static_cast<int>(NH),
                                           static_cast<int>(HS), static_cast<int>(tpb), amax, accumulate);
}
}  // namespace

namespace {
// RoPE over (B, T, NH, HS) at positions 0..T-1: the angles from theta (table null) or from the
// inv_freq table (theta unused).
template <bool kBackward>
void rope_tokens(const char* op, uint16_t* out, const uint16_t* inp, int64_t B, int64_t T, int64_t NH, int64_t HS,
                 float theta, const float* table, bool by_table, Stream stream, float* amax, bool accumulate) {
  rope_check(op, B, T, NH, HS);
  if (!by_table) require(theta > 0.0f, op, "theta = " + std::to_string(theta) + " must be positive");
  if (B * T * NH == 0 || HS == 0) return;
  if (by_table) require_ptr(table, op, "inv_freq");
  launch_rope<kBackward>(out, inp, B * T, RopeAngles{nullptr, table, static_cast<int>(T), by_table ? 0.0f : theta}, NH,
                         HS, stream, amax, accumulate);
  check_launch(op);
}
}  // namespace

void rope_forward(uint16_t* out, const uint16_t* inp, int64_t B, int64_t T, int64_t NH, int64_t HS, float theta,
                  Stream stream) {
  rope_tokens<false>("rope_forward", out, inp, B, T, NH, HS, theta, nullptr, false, stream, nullptr, false);
}

void rope_backward(uint16_t* dinp, const uint16_t* dout, int64_t B, int64_t T, int64_t NH, int64_t HS, float theta,
                   Stream stream, float* amax, bool accumulate) {
  rope_tokens<true>("rope_backward", dinp, dout, B, T, NH, HS, theta, nullptr, false, stream, amax, accumulate);
}

void rope_forward(uint16_t* out, const uint16_t* inp, int64_t B, int64_t T, int64_t NH, int64_t HS,
                  const float* inv_freq, Stream stream) {
  rope_tokens<false>("rope_forward", out, inp, B, T, NH, HS, 0.0f, inv_freq, true, stream, nullptr, false);
}

void rope_backward(uint16_t* dinp, const uint16_t* dout, int64_t B, int64_t T, int64_t NH, int64_t HS,
                   const float* inv_freq, Stream stream, float* amax, bool accumulate) {
  rope_tokens<true>("rope_backward", dinp, dout, B, T, NH, HS, 0.0f, inv_freq, true, stream, amax, accumulate);
}

void rope_rows(uint16_t* x, const int32_t* pos, const float* inv_freq, int64_t N, int64_t NH, int64_t HS,
               Stream stream) {
  constexpr const char* op = "rope_rows";
  require_nonnegative(op, {{"N", N}, {"NH", NH}, {"HS", HS}});
  require(HS % 2 == 0, op, "HS = " + std::to_string(HS) + " is odd; rotate_half pairs i with i + HS/2");
  require(N <= INT_MAX && NH <= INT_MAX / std::max<int64_t>(HS, 1), op, "N or NH*HS exceeds the kernel's int range");
  if (N == 0 || NH == 0 || HS == 0) return;
  require_ptr(pos, op, "pos");
  require_ptr(inv_freq, op, "inv_freq");
  launch_rope<false>(x, x, N, RopeAngles{pos, inv_freq, 1, 0.0f}, NH, HS, stream, nullptr, false);
  check_launch(op);
}

}  // namespace nvfp4::cuda
