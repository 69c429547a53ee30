// An independent double-precision forward of the decoder, written from Hugging Face's modeling
// code (LlamaForCausalLM and its relatives Qwen2 / Qwen3 / Mistral) rather than from
// model_cpu.cpp: parameters read by their HF names, RoPE frequencies computed here from the
// config (transformers' _compute_linear_scaling / _compute_llama3_parameters), position by
// position with plain loops. CpuModel's FP32 logits are checked against it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "nvfp4/model.hpp"

namespace model_test {

// transformers' inverse frequencies, in double.
inline std::vector<double> reference_inv_freq(const nvfp4::model::ModelConfig& c) {
  using nvfp4::model::RopeScaling;
  const int HS = c.head_size();
  std::vector<double> f(static_cast<size_t>(HS / 2));
  for (int i = 0; i < HS / 2; ++i) f[i] = 1.0 / std::pow(double(c.rope_theta), 2.0 * i / HS);
  const auto& r = c.rope_scaling;
  if (r.type == RopeScaling::linear) {
    for (double& x : f) x /= r.factor;
  } else if (r.type == RopeScaling::llama3) {
    const double old_ctx = r.original_max_position;
    const double low_wavelen = old_ctx / r.low_freq_factor, high_wavelen = old_ctx / r.high_freq_factor;
    for (double& x : f) {
      const double wavelen = 2 * M_PI / x;
      if (wavelen > low_wavelen) {
        x /= r.factor;  // long wavelengths: interpolated
      } else if (wavelen >= high_wavelen) {  // the band between: blended
        const double smooth = (old_ctx / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
        x = (1 - smooth) * x / r.factor + smooth * x;
      }  // short wavelengths: kept
    }
  }
  return f;
}

// logits (B, T, V) of tokens (B, T).
inline std::vector<double> reference_logits(const nvfp4::model::CpuModel& m, const std::vector<int32_t>& tokens,
                                            int B, int T) {
  const nvfp4::model::ModelConfig& c = m.config();
  const int64_t C = c.d_model, NH = c.n_head, NKV = c.n_kv_head, F = c.ffn(), V = c.vocab;
  const int64_t HS = c.head_dim > 0 ? c.head_dim : C / NH, half = HS / 2;
  const double eps = c.norm_eps;
  auto P = [&](const std::string& name) { return m.params().data() + m.spec(name).offset; };
  using Vec = std::vector<double>;
  auto matvec = [](const float* w, const Vec& x, int64_t OC) {  // (OC, x.size()) . x
    Vec y(static_cast<size_t>(OC), 0.0);
    for (int64_t o = 0; o < OC; ++o)
      for (size_t i = 0; i < x.size(); ++i) y[o] += double(w[o * int64_t(x.size()) + int64_t(i)]) * x[i];
    return y;
  };
  auto rmsnorm = [eps](const double* x, int64_t n, const float* w, double* out) {  // LlamaRMSNorm
    double ms = 0;
    for (int64_t i = 0; i < n; ++i) ms += x[i] * x[i];
    const double r = 1.0 / std::sqrt(ms / n + eps);
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] * r * w[i];
  };
  const Vec inv_freq = reference_inv_freq(c);
  const int64_t N = int64_t(B) * T;
  std::vector<Vec> x(static_cast<size_t>(N));
  const float* embed = P("model.embed_tokens.weight");
  for (int64_t n = 0; n < N; ++n) x[n].assign(embed + tokens[n] * C, embed + (tokens[n] + 1) * C);
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    std::vector<Vec> q(N), k(N), v(N);
    for (int64_t n = 0; n < N; ++n) {
      Vec h(C);
      rmsnorm(x[n].data(), C, P(p + "input_layernorm.weight"), h.data());
      q[n] = matvec(P(p + "self_attn.q_proj.weight"), h, NH * HS);
      k[n] = matvec(P(p + "self_attn.k_proj.weight"), h, NKV * HS);
      v[n] = matvec(P(p + "self_attn.v_proj.weight"), h, NKV * HS);
      if (c.attention_bias) {
        for (int64_t j = 0; j < NH * HS; ++j) q[n][j] += P(p + "self_attn.q_proj.bias")[j];
        for (int64_t j = 0; j < NKV * HS; ++j) k[n][j] += P(p + "self_attn.k_proj.bias")[j];
        for (int64_t j = 0; j < NKV * HS; ++j) v[n][j] += P(p + "self_attn.v_proj.bias")[j];
      }
      const int64_t t = n % T;
      for (auto [vec, heads, norm] : {std::tuple{&q[n], NH, "q_norm"}, std::tuple{&k[n], NKV, "k_norm"}}) {
        for (int64_t hd = 0; hd < heads; ++hd) {
          double* e = vec->data() + hd * HS;
          if (c.qk_norm) rmsnorm(e, HS, P(p + "self_attn." + norm + ".weight"), e);  // Qwen3: before RoPE
          for (int64_t i = 0; i < half; ++i) {  // q * cos + rotate_half(q) * sin
            const double a = double(t) * inv_freq[i], x1 = e[i], x2 = e[i + half];
            e[i] = x1 * std::cos(a) - x2 * std::sin(a);
            e[i + half] = x2 * std::cos(a) + x1 * std::sin(a);
          }
        }
      }
    }
    for (int64_t n = 0; n < N; ++n) {
      const int64_t b = n / T, t = n % T;
      Vec y(static_cast<size_t>(NH * HS), 0.0);
      for (int64_t hd = 0; hd < NH; ++hd) {
        const int64_t kvh = hd / (NH / NKV);
        Vec s(static_cast<size_t>(t + 1), 0.0);
        double mx = -INFINITY, sum = 0;
        auto visible = [&](int64_t t2) { return c.sliding_window == 0 || t - t2 < c.sliding_window; };
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          if (!visible(t2)) continue;
          for (int64_t i = 0; i < HS; ++i) s[t2] += q[n][hd * HS + i] * k[b * T + t2][kvh * HS + i];
          s[t2] /= std::sqrt(double(HS));
          mx = std::max(mx, s[t2]);
        }
        for (int64_t t2 = 0; t2 <= t; ++t2) sum += visible(t2) ? std::exp(s[t2] - mx) : 0.0;
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          if (!visible(t2)) continue;
          const double a = std::exp(s[t2] - mx) / sum;
          for (int64_t i = 0; i < HS; ++i) y[hd * HS + i] += a * v[b * T + t2][kvh * HS + i];
        }
      }
      const Vec o = matvec(P(p + "self_attn.o_proj.weight"), y, C);
      for (int64_t i = 0; i < C; ++i) x[n][i] += o[i];
      Vec h(C);
      rmsnorm(x[n].data(), C, P(p + "post_attention_layernorm.weight"), h.data());
      const Vec g = matvec(P(p + "mlp.gate_proj.weight"), h, F), u = matvec(P(p + "mlp.up_proj.weight"), h, F);
      Vec a(F);
      for (int64_t i = 0; i < F; ++i) a[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      const Vec d = matvec(P(p + "mlp.down_proj.weight"), a, C);
      for (int64_t i = 0; i < C; ++i) x[n][i] += d[i];
    }
  }
  const float* head = c.tie_embeddings ? embed : P("lm_head.weight");
  std::vector<double> logits;
  for (int64_t n = 0; n < N; ++n) {
    Vec h(C);
    rmsnorm(x[n].data(), C, P("model.norm.weight"), h.data());
    const Vec z = matvec(head, h, V);
    logits.insert(logits.end(), z.begin(), z.end());
  }
  return logits;
}

}  // namespace model_test
