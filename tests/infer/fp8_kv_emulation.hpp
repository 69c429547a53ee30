// An FP8 KV cache emulated independently of the engine's cache (tests of EngineOptions::kv_cache):
// the model's FP32 forward over one whole sequence, written here with the CPU ops for the row-wise
// parts (embedding, norms, GEMMs, RoPE, SwiGLU: the engine's own ops, so K and V before rounding are
// the engine's bits) and its own attention (double-precision softmax over the causal window),
// where every K row (after RoPE) and V row is first replaced by its FP8 round trip written from the
// format codec: e4m3(x / scale) x scale. Scales empty: no rounding (the FP32 cache).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "format/scalar.hpp"
#include "kernels/cpu/ops.hpp"
#include "nvfp4/hf_model.hpp"
#include "nvfp4/model.hpp"

namespace nvfp4::test {

// x as an E4M3 cache holds it under decode scale `scale`: round to nearest even, saturating at 448.
inline float fp8_kv_value(float x, float scale) { return fmt::e4m3_decode(fmt::e4m3_encode(x / scale)) * scale; }

// (T, vocab) logits of `tokens` (positions 0 .. T-1) with the K / V rows of layer l rounded under
// k_scale[l] / v_scale[l] (both empty: FP32 K and V).
inline std::vector<float> fp8_kv_emulated_logits(const infer::HfModel& m, const std::vector<int32_t>& tokens,
                                                 const std::vector<float>& k_scale, const std::vector<float>& v_scale) {
  const model::ModelConfig& c = m.config();
  const model::ParamIndex idx = model::param_index(c);
  const auto read = [&](int i) {
    std::vector<float> v(static_cast<size_t>(m.specs()[static_cast<size_t>(i)].numel));
    m.read_f32(static_cast<size_t>(i), v);
    return v;
  };
  const int64_t T = static_cast<int64_t>(tokens.size()), C = c.d_model, F = c.ffn(), V = c.vocab;
  const int64_t NH = c.n_head, NKV = c.n_kv_head, HS = c.head_size(), QD = NH * HS, KD = NKV * HS;
  std::vector<int32_t> pos(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) pos[t] = static_cast<int32_t>(t);
  const std::vector<float> inv_freq = c.rope_inv_freq();
  std::vector<float> x(T * C), h(T * C), q(T * QD), k(T * KD), v(T * KD), att(T * QD), g(T * F), u(T * F), rstd(T * NH);
  const auto embed = read(idx.embed);
  cpu::encoder_forward(x.data(), tokens.data(), embed.data(), 1, T, C, V);
  const auto linear = [&](float* out, const float* in, int w, int b, int64_t OC, int64_t IC) {
    const auto W = read(w);
    cpu::matmul_forward(out, in, W.data(), T, IC, OC);
    if (b >= 0) {
      const auto B = read(b);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t o = 0; o < OC; ++o) out[t * OC + o] += B[o];
    }
  };
  for (int l = 0; l < c.n_layer; ++l) {
    const auto& L = idx.layers[static_cast<size_t>(l)];
    cpu::rmsnorm_forward(h.data(), rstd.data(), x.data(), read(L.ln1).data(), T, C, c.norm_eps);
    linear(q.data(), h.data(), L.wq, L.bq, QD, C);
    linear(k.data(), h.data(), L.wk, L.bk, KD, C);
    linear(v.data(), h.data(), L.wv, L.bv, KD, C);
    if (c.qk_norm) {
      cpu::rmsnorm_forward(q.data(), rstd.data(), q.data(), read(L.q_norm).data(), T * NH, HS, c.norm_eps);
      cpu::rmsnorm_forward(k.data(), rstd.data(), k.data(), read(L.k_norm).data(), T * NKV, HS, c.norm_eps);
    }
    cpu::rope_rows(q.data(), pos.data(), inv_freq.data(), T, NH, HS);
    cpu::rope_rows(k.data(), pos.data(), inv_freq.data(), T, NKV, HS);
    if (!k_scale.empty()) {
      for (auto& e : k) e = fp8_kv_value(e, k_scale[static_cast<size_t>(l)]);
      for (auto& e : v) e = fp8_kv_value(e, v_scale[static_cast<size_t>(l)]);
    }
    // Causal attention (the last `sliding_window` positions when the model has a window).
    const double scale = 1.0 / std::sqrt(static_cast<double>(HS));
    for (int64_t t = 0; t < T; ++t) {
      const int64_t first = c.sliding_window > 0 ? std::max<int64_t>(0, t - c.sliding_window + 1) : 0;
      for (int64_t hh = 0; hh < NH; ++hh) {
        const int64_t kv = hh / (NH / NKV);
        const float* qr = &q[t * QD + hh * HS];
        std::vector<double> s(static_cast<size_t>(t - first + 1));
        double mx = -INFINITY, sum = 0;
        for (int64_t j = first; j <= t; ++j) {
          double d = 0;
          for (int64_t e = 0; e < HS; ++e) d += static_cast<double>(qr[e]) * k[j * KD + kv * HS + e];
          s[j - first] = d * scale;
          mx = std::max(mx, s[j - first]);
        }
        for (auto& e : s) sum += (e = std::exp(e - mx));
        for (int64_t e = 0; e < HS; ++e) {
          double o = 0;
          for (int64_t j = first; j <= t; ++j) o += s[j - first] * v[j * KD + kv * HS + e];
          att[t * QD + hh * HS + e] = static_cast<float>(o / sum);
        }
      }
    }
    linear(h.data(), att.data(), L.wo, -1, C, QD);
    cpu::residual_forward(x.data(), x.data(), h.data(), T * C);
    cpu::rmsnorm_forward(h.data(), rstd.data(), x.data(), read(L.ln2).data(), T, C, c.norm_eps);
    linear(g.data(), h.data(), L.wg, -1, F, C);
    linear(u.data(), h.data(), L.wu, -1, F, C);
    cpu::swiglu_forward(g.data(), g.data(), u.data(), T * F);
    linear(h.data(), g.data(), L.wd, -1, C, F);
    cpu::residual_forward(x.data(), x.data(), h.data(), T * C);
  }
  std::vector<float> logits(static_cast<size_t>(T * V));
  cpu::rmsnorm_forward(h.data(), rstd.data(), x.data(), read(idx.norm).data(), T, C, c.norm_eps);
  cpu::matmul_forward(logits.data(), h.data(), read(idx.lm_head).data(), T, C, V);
  return logits;
}

}  // namespace nvfp4::test
