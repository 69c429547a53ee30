// The CPU reference rotary position embedding (ops.hpp; CUDA twin: src/kernels/cuda/rope.cu).
#include "kernels/cpu/ops.hpp"

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/ops_common.hpp"

namespace nvfp4::cpu {

using namespace ops_detail;

// ---- RoPE -------------------------------------------------------------------------------

namespace {

// The inverse frequency of pair i as HF LlamaRotaryEmbedding computes it in FP32: 1 / theta^(2i/HS).
float rope_inv_freq(int64_t i, int64_t HS, float theta) {
  return 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(HS));
}

// (cos, sin) of the angle of a pair at position t: angle = float(t) * inv_freq, as HF.
void rope_cos_sin(int64_t t, float inv_freq, float* cs, float* sn) {
  const float angle = static_cast<float>(t) * inv_freq;
  *cs = std::cos(angle);
  *sn = std::sin(angle);
}

// The rotation of the pair (x1, x2) by the angle whose cosine and sine are (cs, sn).
void rotate_pair(float x1, float x2, float cs, float sn, float* y1, float* y2) {
  *y1 = x1 * cs - x2 * sn;
  *y2 = x2 * cs + x1 * sn;
}

void rope_check(const char* op, int64_t B, int64_t T, int64_t NH, int64_t HS) {
  require_nonnegative(op, {{"B", B}, {"T", T}, {"NH", NH}, {"HS", HS}});
  require(HS % 2 == 0, op, "HS = " + std::to_string(HS) + " is odd; rotate_half pairs i with i + HS/2");
}

void rope_check_theta(const char* op, float theta) {
  require(theta > 0.0f, op, "theta = " + std::to_string(theta) + " must be positive");
}

// The theta versions' table: inv_freq[i] for i in 0..HS/2-1.
std::vector<float> rope_inv_freq_table(int64_t HS, float theta) {
  std::vector<float> f(static_cast<size_t>(HS / 2));
  for (int64_t i = 0; i < HS / 2; ++i) f[static_cast<size_t>(i)] = rope_inv_freq(i, HS, theta);
  return f;
}

}  // namespace

namespace {

// Rotates each pair (x[i], x[i + HS/2]) of inp by +angle (sign = 1) or -angle (sign = -1, the
// transpose: the backward) into out, overwriting or, with kAccumulate, adding.
template <bool kAccumulate>
void rope_rotate(float* out, const float* inp, int64_t B, int64_t T, int64_t NH, int64_t HS, const float* inv_freq,
                 float sign) {
  const int64_t half = HS / 2;
  NVFP4_OMP("omp parallel for collapse(2)")
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t i = 0; i < half; ++i) {
        float cs, sn;
        rope_cos_sin(t, inv_freq[i], &cs, &sn);
        sn *= sign;  // exact
        for (int64_t h = 0; h < NH; ++h) {
          const int64_t base = ((b * T + t) * NH + h) * HS;
          float y1, y2;  // both read first: out may be inp
          rotate_pair(inp[base + i], inp[base + i + half], cs, sn, &y1, &y2);
          if constexpr (kAccumulate) {
            out[base + i] += y1;
            out[base + i + half] += y2;
          } else {
            out[base + i] = y1;
            out[base + i + half] = y2;
          }
        }
      }
    }
  }
}

}  // namespace

void rope_forward(float* out, const float* inp, int64_t B, int64_t T, int64_t NH, int64_t HS, float theta) {
  rope_check("rope_forward", B, T, NH, HS);
  rope_check_theta("rope_forward", theta);
  const std::vector<float> inv_freq = rope_inv_freq_table(HS, theta);
  rope_forward(out, inp, B, T, NH, HS, inv_freq.data());
}

void rope_backward(float* dinp, const float* dout, int64_t B, int64_t T, int64_t NH, int64_t HS, float theta) {
  rope_check("rope_backward", B, T, NH, HS);
  rope_check_theta("rope_backward", theta);
  const std::vector<float> inv_freq = rope_inv_freq_table(HS, theta);
  rope_backward(dinp, dout, B, T, NH, HS, inv_freq.data());
}

void rope_forward(float* out, const float* inp, int64_t B, int64_t T, int64_t NH, int64_t HS, const float* inv_freq) {
  rope_check("rope_forward", B, T, NH, HS);
  require(inv_freq != nullptr || HS == 0, "rope_forward", "inv_freq is null");
  rope_rotate<false>(out, inp, B, T, NH, HS, inv_freq, 1.0f);
}

void rope_backward(float* dinp, const float* dout, int64_t B, int64_t T, int64_t NH, int64_t HS,
                   const float* inv_freq) {
  rope_check("rope_backward", B, T, NH, HS);
  require(inv_freq != nullptr || HS == 0, "rope_backward", "inv_freq is null");
  // The transpose of the rotation [[c, -s], [s, c]] is the rotation by -angle.
  rope_rotate<true>(dinp, dout, B, T, NH, HS, inv_freq, -1.0f);
}

// ---- RoPE of rows at given positions (inference) --------------------------------------------------

void rope_rows(float* x, const int32_t* pos, const float* inv_freq, int64_t N, int64_t NH, int64_t HS) {
  constexpr const char* op = "rope_rows";
  require_nonnegative(op, {{"N", N}, {"NH", NH}, {"HS", HS}});
  require(HS % 2 == 0, op, "HS = " + std::to_string(HS) + " is odd; rotate_half pairs i with i + HS/2");
  const int64_t half = HS / 2;
  NVFP4_OMP("omp parallel for")
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(pos[n]) * inv_freq[i];
      const float cs = std::cos(angle), sn = std::sin(angle);
      for (int64_t h = 0; h < NH; ++h) {
        float* p = x + (n * NH + h) * HS;
        rotate_pair(p[i], p[i + half], cs, sn, &p[i], &p[i + half]);
      }
    }
  }
}

}  // namespace nvfp4::cpu
