// The FP32 CPU reference model: explicit forward and backward over the reference ops
// (src/kernels/cpu/ops.hpp), llm.c style. Shapes in the comments use the legend of model.hpp.
#include <algorithm>
#include <string>

#include "kernels/cpu/ops.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/model.hpp"

namespace nvfp4::model {

void Fp32Linear::forward(LinearId, float* out, const float* inp, const float* weight, int64_t N, int64_t C,
                         int64_t OC) {
  cpu::matmul_forward(out, inp, weight, N, C, OC);
}

void Fp32Linear::backward(LinearId, float* dinp, float* dweight, const float* dout, const float* inp,
                          const float* weight, int64_t N, int64_t C, int64_t OC) {
  cpu::matmul_backward(dinp, dweight, dout, inp, weight, N, C, OC);
}

namespace {

// Parameter views of one layer; nullptr where the config has none (biases, q/k norms).
struct LayerParams {
  float *ln1, *wq, *wk, *wv, *wo, *ln2, *wg, *wu, *wd;
  float *bq, *bk, *bv;  // q/k/v biases (attention_bias)
  float *qn, *kn;       // q/k RMSNorm weights (HS) (qk_norm)
};

LayerParams layer_params(float* base, const std::vector<ParamSpec>& specs, const LayerParamIndex& x) {
  auto at = [&](int i) { return i < 0 ? nullptr : base + specs[static_cast<size_t>(i)].offset; };
  return {at(x.ln1), at(x.wq), at(x.wk), at(x.wv), at(x.wo),     at(x.ln2),    at(x.wg),
          at(x.wu),  at(x.wd), at(x.bq), at(x.bk), at(x.bv), at(x.q_norm), at(x.k_norm)};
}

// out (N, OC) += bias (OC), row by row (its backward: cpu::bias_backward).
void bias_forward(float* out, const float* bias, int64_t N, int64_t OC) {
  cpu::scale_rows_bias(out, out, nullptr, bias, N, OC);
}

template <typename T>
void fill_zero(std::vector<T>& v) {
  std::fill(v.begin(), v.end(), T{});
}

}  // namespace

CpuModel::CpuModel(const ModelConfig& config)
    : config_(config), specs_(param_specs(config)), index_(param_index(config)), inv_freq_(config.rope_inv_freq()) {
  const int64_t total = specs_.back().offset + specs_.back().numel;
  params_.assign(static_cast<size_t>(total), 0.0f);
  grads_.assign(static_cast<size_t>(total), 0.0f);
}

const ParamSpec& CpuModel::spec(const std::string& name) const {
  for (const auto& s : specs_) {
    if (s.name == name) return s;
  }
  throw Error("model has no parameter named \"" + name + "\"");
}

void CpuModel::zero_grad() { fill_zero(grads_); }

void CpuModel::resize(int B, int T) {
  if (B == B_ && T == T_) return;
  B_ = B;
  T_ = T;
  const size_t L = config_.n_layer, N = size_t(B) * T, C = config_.d_model, F = config_.ffn(), V = config_.vocab;
  const size_t QD = size_t(config_.n_head) * config_.head_size(), KD = size_t(config_.n_kv_head) * config_.head_size();
  const size_t NH = config_.n_head;
  resid_.assign((L + 1) * N * C, 0.0f);
  resid2_.assign(L * N * C, 0.0f);
  ln1_.assign(L * N * C, 0.0f);
  ln2_.assign(L * N * C, 0.0f);
  rstd1_.assign(L * N, 0.0f);
  rstd2_.assign(L * N, 0.0f);
  q_.assign(L * N * QD, 0.0f);
  k_.assign(L * N * KD, 0.0f);
  v_.assign(L * N * KD, 0.0f);
  const size_t NKV = config_.n_kv_head, qk = config_.qk_norm ? 1 : 0;  // q/k norm activations only when used
  qpre_.assign(qk * L * N * QD, 0.0f);
  kpre_.assign(qk * L * N * KD, 0.0f);
  rstdq_.assign(qk * L * N * NH, 0.0f);
  rstdk_.assign(qk * L * N * NKV, 0.0f);
  att_.assign(L * B * NH * T * T, 0.0f);
  atty_.assign(L * N * QD, 0.0f);
  gate_.assign(L * N * F, 0.0f);
  up_.assign(L * N * F, 0.0f);
  h_.assign(L * N * F, 0.0f);
  lnf_.assign(N * C, 0.0f);
  rstdf_.assign(N, 0.0f);
  logits_.assign(N * V, 0.0f);
  losses_.assign(N, 0.0f);
  dresid_.assign(N * C, 0.0f);
  dln_.assign(N * C, 0.0f);
  dattn_.assign(N * QD, 0.0f);
  dq_.assign(N * QD, 0.0f);
  dk_.assign(N * KD, 0.0f);
  dv_.assign(N * KD, 0.0f);
  dqr_.assign(N * QD, 0.0f);
  dkr_.assign(N * KD, 0.0f);
  datt_.assign(size_t(B) * NH * T * T, 0.0f);
  dgate_.assign(N * F, 0.0f);
  dup_.assign(N * F, 0.0f);
  dh_.assign(N * F, 0.0f);
  dlogits_.assign(N * V, 0.0f);
}

float CpuModel::forward(const int32_t* tokens, const int32_t* targets, int B, int T) {
  if (B < 1 || T < 1 || T > config_.seq_len) {
    throw Error("model forward: batch " + std::to_string(B) + " x " + std::to_string(T) +
                " tokens; need B >= 1 and 1 <= T <= seq_len = " + std::to_string(config_.seq_len));
  }
  resize(B, T);
  const int64_t L = config_.n_layer, N = int64_t(B) * T, C = config_.d_model, F = config_.ffn(), V = config_.vocab;
  const int64_t NH = config_.n_head, NKV = config_.n_kv_head, HS = config_.head_size();
  const int64_t QD = NH * HS, KD = NKV * HS;
  tokens_.assign(tokens, tokens + N);
  have_targets_ = targets != nullptr;
  if (have_targets_) targets_.assign(targets, targets + N);

  float* p = params_.data();
  cpu::encoder_forward(resid_.data(), tokens, p + specs_[index_.embed].offset, B, T, C, V);  // (B, T, C)
  for (int64_t l = 0; l < L; ++l) {
    const LayerParams w = layer_params(p, specs_, index_.layers[l]);
    const int layer = static_cast<int>(l);
    float* x = resid_.data() + l * N * C;        // (N, C) layer input
    float* x2 = resid2_.data() + l * N * C;      // (N, C) after attention
    float* xo = resid_.data() + (l + 1) * N * C; // (N, C) layer output
    float* ln1 = ln1_.data() + l * N * C;
    float* ln2 = ln2_.data() + l * N * C;
    float* q = q_.data() + l * N * QD;           // (B, T, NH, HS)
    float* k = k_.data() + l * N * KD;           // (B, T, NKV, HS)
    float* v = v_.data() + l * N * KD;
    // With q/k norms the projections land in qpre / kpre and q / k hold the normed heads.
    float* qp = config_.qk_norm ? qpre_.data() + l * N * QD : q;
    float* kp = config_.qk_norm ? kpre_.data() + l * N * KD : k;
    float* att = att_.data() + l * B * NH * T * T;
    float* atty = atty_.data() + l * N * QD;     // (B, T, NH, HS)
    float* gate = gate_.data() + l * N * F;
    float* up = up_.data() + l * N * F;
    float* h = h_.data() + l * N * F;

    cpu::rmsnorm_forward(ln1, rstd1_.data() + l * N, x, w.ln1, N, C, config_.norm_eps);
    lin().forward({layer, LinearKind::q}, qp, ln1, w.wq, N, C, QD);
    lin().forward({layer, LinearKind::k}, kp, ln1, w.wk, N, C, KD);
    lin().forward({layer, LinearKind::v}, v, ln1, w.wv, N, C, KD);
    if (w.bq) {  // q/k/v biases (Qwen2)
      bias_forward(qp, w.bq, N, QD);
      bias_forward(kp, w.bk, N, KD);
      bias_forward(v, w.bv, N, KD);
    }
    if (config_.qk_norm) {  // RMSNorm over each head (rows of HS), before RoPE (Qwen3)
      cpu::rmsnorm_forward(q, rstdq_.data() + l * N * NH, qp, w.qn, N * NH, HS, config_.norm_eps);
      cpu::rmsnorm_forward(k, rstdk_.data() + l * N * NKV, kp, w.kn, N * NKV, HS, config_.norm_eps);
    }
    cpu::rope_forward(q, q, B, T, NH, HS, inv_freq_.data());  // in place
    cpu::rope_forward(k, k, B, T, NKV, HS, inv_freq_.data());
    cpu::attention_forward(atty, att, q, k, v, B, T, NH, NKV, HS, config_.sliding_window);
    lin().forward({layer, LinearKind::o}, x2, atty, w.wo, N, QD, C);
    cpu::residual_forward(x2, x2, x, N * C);  // x2 = x + o_proj(...)
    cpu::rmsnorm_forward(ln2, rstd2_.data() + l * N, x2, w.ln2, N, C, config_.norm_eps);
    lin().forward({layer, LinearKind::gate}, gate, ln2, w.wg, N, C, F);
    lin().forward({layer, LinearKind::up}, up, ln2, w.wu, N, C, F);
    cpu::swiglu_forward(h, gate, up, N * F);
    lin().forward({layer, LinearKind::down}, xo, h, w.wd, N, F, C);
    cpu::residual_forward(xo, xo, x2, N * C);
  }
  const ParamSpec& norm = specs_[index_.norm];
  const ParamSpec& head = specs_[index_.lm_head];
  cpu::rmsnorm_forward(lnf_.data(), rstdf_.data(), resid_.data() + L * N * C, p + norm.offset, N, C, config_.norm_eps);
  lin().forward({static_cast<int>(L), LinearKind::lm_head}, logits_.data(), lnf_.data(), p + head.offset, N, C, V);
  if (!have_targets_) return 0.0f;
  cpu::crossentropy_forward(losses_.data(), logits_.data(), targets, N, V);
  double sum = 0.0;  // fixed order
  for (int64_t i = 0; i < N; ++i) sum += losses_[i];
  return static_cast<float>(sum / static_cast<double>(N));
}

void CpuModel::backward(float loss_scale) {
  if (!have_targets_) throw Error("model backward: the last forward had no targets");
  const int B = B_, T = T_;
  const int64_t L = config_.n_layer, N = int64_t(B) * T, C = config_.d_model, F = config_.ffn(), V = config_.vocab;
  const int64_t NH = config_.n_head, NKV = config_.n_kv_head, HS = config_.head_size();
  const int64_t QD = NH * HS, KD = NKV * HS;
  float* p = params_.data();
  float* g = grads_.data();
  const ParamSpec& norm = specs_[index_.norm];
  const ParamSpec& head = specs_[index_.lm_head];

  // Loss and head: dlogits = (softmax - onehot) * loss_scale / N.
  fill_zero(dlogits_);
  cpu::crossentropy_softmax_backward(dlogits_.data(), logits_.data(), targets_.data(), N, V,
                                     loss_scale / static_cast<float>(N));
  // Tied embeddings: head is the embedding, so its weight gradient here and the gather's at the
  // end both accumulate into the embedding's gradient.
  fill_zero(dln_);
  lin().backward({static_cast<int>(L), LinearKind::lm_head}, dln_.data(), g + head.offset, dlogits_.data(),
                    lnf_.data(), p + head.offset, N, C, V);
  fill_zero(dresid_);  // gradient w.r.t. the residual stream, walked back layer by layer
  cpu::rmsnorm_backward(dresid_.data(), g + norm.offset, dln_.data(), resid_.data() + L * N * C, p + norm.offset,
                        rstdf_.data(), N, C);

  for (int64_t l = L - 1; l >= 0; --l) {
    const int layer = static_cast<int>(l);
    const LayerParams w = layer_params(p, specs_, index_.layers[l]);
    const LayerParams dw = layer_params(g, specs_, index_.layers[l]);
    const float* x = resid_.data() + l * N * C;
    const float* x2 = resid2_.data() + l * N * C;
    const float* ln1 = ln1_.data() + l * N * C;
    const float* ln2 = ln2_.data() + l * N * C;
    const float* q = q_.data() + l * N * QD;
    const float* k = k_.data() + l * N * KD;
    const float* v = v_.data() + l * N * KD;
    const float* att = att_.data() + l * B * NH * T * T;
    const float* atty = atty_.data() + l * N * QD;
    const float* gate = gate_.data() + l * N * F;
    const float* up = up_.data() + l * N * F;
    const float* h = h_.data() + l * N * F;

    // MLP: xo = x2 + down(swiglu(gate(ln2), up(ln2))); dresid holds d xo = d x2 (residual path).
    fill_zero(dh_);
    lin().backward({layer, LinearKind::down}, dh_.data(), dw.wd, dresid_.data(), h, w.wd, N, F, C);
    fill_zero(dgate_);
    fill_zero(dup_);
    cpu::swiglu_backward(dgate_.data(), dup_.data(), dh_.data(), gate, up, N * F);
    fill_zero(dln_);
    lin().backward({layer, LinearKind::gate}, dln_.data(), dw.wg, dgate_.data(), ln2, w.wg, N, C, F);
    lin().backward({layer, LinearKind::up}, dln_.data(), dw.wu, dup_.data(), ln2, w.wu, N, C, F);
    cpu::rmsnorm_backward(dresid_.data(), dw.ln2, dln_.data(), x2, w.ln2, rstd2_.data() + l * N, N, C);

    // Attention: x2 = x + o_proj(attn(rope(qnorm(q(ln1) + bq)), rope(knorm(k(ln1) + bk)), v(ln1) + bv)),
    // the biases and norms where the config has them; dresid = d x2.
    fill_zero(dattn_);
    lin().backward({layer, LinearKind::o}, dattn_.data(), dw.wo, dresid_.data(), atty, w.wo, N, QD, C);
    fill_zero(dqr_);
    fill_zero(dkr_);
    fill_zero(dv_);
    cpu::attention_backward(dqr_.data(), dkr_.data(), dv_.data(), datt_.data(), dattn_.data(), q, k, v, att, B, T, NH,
                            NKV, HS, config_.sliding_window);
    fill_zero(dq_);
    fill_zero(dk_);
    cpu::rope_backward(dq_.data(), dqr_.data(), B, T, NH, HS, inv_freq_.data());
    cpu::rope_backward(dk_.data(), dkr_.data(), B, T, NKV, HS, inv_freq_.data());
    // dqp, dkp: the gradient of the projections' outputs (+ bias). With q/k norms dq_ / dk_ are
    // the normed heads' and the norms' backward writes into dqr_ / dkr_ (free again).
    const float* dqp = dq_.data();
    const float* dkp = dk_.data();
    if (config_.qk_norm) {
      fill_zero(dqr_);
      fill_zero(dkr_);
      cpu::rmsnorm_backward(dqr_.data(), dw.qn, dq_.data(), qpre_.data() + l * N * QD, w.qn,
                            rstdq_.data() + l * N * NH, N * NH, HS);
      cpu::rmsnorm_backward(dkr_.data(), dw.kn, dk_.data(), kpre_.data() + l * N * KD, w.kn,
                            rstdk_.data() + l * N * NKV, N * NKV, HS);
      dqp = dqr_.data();
      dkp = dkr_.data();
    }
    if (dw.bq) {
      cpu::bias_backward(dw.bq, dqp, N, QD);
      cpu::bias_backward(dw.bk, dkp, N, KD);
      cpu::bias_backward(dw.bv, dv_.data(), N, KD);
    }
    fill_zero(dln_);
    lin().backward({layer, LinearKind::q}, dln_.data(), dw.wq, dqp, ln1, w.wq, N, C, QD);
    lin().backward({layer, LinearKind::k}, dln_.data(), dw.wk, dkp, ln1, w.wk, N, C, KD);
    lin().backward({layer, LinearKind::v}, dln_.data(), dw.wv, dv_.data(), ln1, w.wv, N, C, KD);
    cpu::rmsnorm_backward(dresid_.data(), dw.ln1, dln_.data(), x, w.ln1, rstd1_.data() + l * N, N, C);
  }
  cpu::encoder_backward(g + specs_[index_.embed].offset, dresid_.data(), tokens_.data(), B, T, C, V);
}

}  // namespace nvfp4::model
