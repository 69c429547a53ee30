// The CUDA model (see include/nvfp4/model_cuda.hpp): the CPU reference model's forward and
// backward, op for op, over the CUDA operators (include/nvfp4/cuda_ops.hpp), the Llama family's
// features included (head size, q/k/v biases, q/k norms, tied embeddings, a sliding window, RoPE
// scaling: model.hpp). Activations and their gradients are BF16; parameter gradients, masters and
// AdamW state FP32. Parameters are found through param_index() (their positions depend on the
// features).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "model/device_array.cuh"
#include "nvfp4/cuda_ops.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/model_cuda.hpp"
#include "nvfp4/quantized_linear_cuda.hpp"

namespace nvfp4::model {

namespace {

__global__ void scale_kernel(float* x, int64_t n, float s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) x[i] *= s;
}

using bf16 = uint16_t;

}  // namespace

struct CudaModel::State {
  ModelConfig c;
  std::vector<ParamSpec> specs;
  ParamIndex idx;  // where each parameter is in specs
  int64_t P = 0, bytes = 0;
  cuda::Blas blas;
  std::unique_ptr<QuantizedLinearCuda> lin;
  DeviceArray<float> params, grads, m, v;
  DeviceArray<bf16> wbf;  // BF16 copy of params, same offsets
  DeviceArray<uint32_t> status;
  DeviceArray<double> norms;
  DeviceArray<float> inv_freq;  // (HS / 2) RoPE inverse frequencies, c.rope_inv_freq() (scaling applied)
  // Activations for (B, T).
  int B = 0, T = 0;
  bool have_targets = false;
  DeviceArray<int32_t> tokens, targets;
  DeviceArray<bf16> resid, resid2, ln1, ln2, q, k, v_, atty, gate, up, h, lnf, logits;
  DeviceArray<float> rstd1, rstd2, rstdf, lse, losses;
  // q/k norms only: q and k before their norms (L, N, QD) / (L, N, KD) and the norms' rstd (L, N*NH) / (L, N*NKV).
  DeviceArray<bf16> qpre, kpre;
  DeviceArray<float> rstdq, rstdk;
  DeviceArray<bf16> dresid, dln, dattn, dq, dk, dv, dqr, dkr, dgate, dup, dh;
  DeviceArray<uint8_t> scratch;
  std::vector<float> host_losses;
  std::vector<int32_t> host_ids;  // pageable staging of the tokens and targets (see forward)

  explicit State(const ModelConfig& cfg)
      : c(cfg),
        specs(param_specs(cfg)),
        idx(param_index(cfg)),
        lin(std::make_unique<QuantizedLinearCuda>(recipe::preset("bf16", cfg.n_layer), cfg.n_layer, 0)) {}
  // Parameter i of specs (an index of idx): FP32 master, BF16 copy, FP32 gradient.
  const float* w32(int i) const { return params.p + specs.at(size_t(i)).offset; }
  const bf16* w(int i) const { return wbf.p + specs.at(size_t(i)).offset; }
  float* g(int i) { return grads.p + specs.at(size_t(i)).offset; }

  // Where the kernel about to write linear layer (layer, kind)'s input X, or its output gradient
  // dY, folds the tensor's amax: the plan's slot (nullptr: the plan has no use for it).
  float* x_amax(int64_t layer, LinearKind kind) {
    return lin->producer_amax(LinearId{int(layer), kind}, recipe::Tensor::x, nullptr);
  }
  float* dy_amax(int64_t layer, LinearKind kind) {
    return lin->producer_amax(LinearId{int(layer), kind}, recipe::Tensor::dy, nullptr);
  }

  // The linear layers, through the recipe's QuantizedLinearCuda; wi: the weight's spec index.
  // (Its bias, where it has one, is added outside: cuda::bias_forward / bias_backward.)
  void fwd(int64_t layer, LinearKind kind, bf16* out, const bf16* inp, int wi, int64_t N, int64_t C, int64_t OC) {
    lin->forward(blas, LinearId{int(layer), kind}, out, inp, w32(wi), w(wi), N, C, OC, nullptr);
  }
  void bwd(int64_t layer, LinearKind kind, bf16* dinp, const bf16* dout, const bf16* inp, int wi, int64_t N,
           int64_t C, int64_t OC, bool accumulate_dinp) {
    lin->backward(blas, LinearId{int(layer), kind}, dinp, g(wi), dout, inp, w32(wi), w(wi), N, C, OC, accumulate_dinp,
                  nullptr);
  }

  void resize(int b, int t) {
    if (b == B && t == T) return;
    B = b;
    T = t;
    const size_t L = c.n_layer, N = size_t(b) * t, C = c.d_model, F = c.ffn(), V = c.vocab, NH = c.n_head;
    const size_t NKV = c.n_kv_head, HS = c.head_size(), QD = NH * HS, KD = NKV * HS;
    int64_t& tot = bytes;
    tokens.alloc(N, tot);
    targets.alloc(N, tot);
    resid.alloc((L + 1) * N * C, tot);
    resid2.alloc(L * N * C, tot);
    ln1.alloc(L * N * C, tot);
    ln2.alloc(L * N * C, tot);
    q.alloc(L * N * QD, tot);
    k.alloc(L * N * KD, tot);
    v_.alloc(L * N * KD, tot);
    atty.alloc(L * N * QD, tot);
    gate.alloc(L * N * F, tot);
    up.alloc(L * N * F, tot);
    h.alloc(L * N * F, tot);
    lnf.alloc(N * C, tot);
    logits.alloc(N * V, tot);
    rstd1.alloc(L * N, tot);
    rstd2.alloc(L * N, tot);
    rstdf.alloc(N, tot);
    lse.alloc(L * size_t(b) * NH * t, tot);
    losses.alloc(N, tot);
    const size_t qk = c.qk_norm ? 1 : 0;  // (one element each otherwise)
    qpre.alloc(qk * L * N * QD, tot);
    kpre.alloc(qk * L * N * KD, tot);
    rstdq.alloc(qk * L * N * NH, tot);
    rstdk.alloc(qk * L * N * NKV, tot);
    dresid.alloc(N * C, tot);
    dln.alloc(N * C, tot);
    dattn.alloc(N * QD, tot);
    dq.alloc(N * QD, tot);
    dk.alloc(N * KD, tot);
    dv.alloc(N * KD, tot);
    dqr.alloc(N * QD, tot);
    dkr.alloc(N * KD, tot);
    dgate.alloc(N * F, tot);
    dup.alloc(N * F, tot);
    dh.alloc(N * F, tot);
    size_t s = cuda::rmsnorm_backward_scratch_bytes(N, C);
    s = std::max(s, cuda::attention_backward_scratch_bytes(b, t, NH));
    s = std::max(s, cuda::encoder_backward_scratch_bytes(b, t, C, V));
    if (c.qk_norm) s = std::max(s, cuda::rmsnorm_backward_scratch_bytes(N * std::max(NH, NKV), HS));
    if (c.attention_bias) s = std::max(s, cuda::bias_backward_scratch_bytes(N, std::max(QD, KD)));
    scratch.alloc(s, tot);
    host_losses.resize(N);
  }

  void check_status(const char* where) {
    uint32_t st = 0;
    check(cudaMemcpy(&st, status.p, 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
    if (st == 0) return;
    check(cudaMemset(status.p, 0, 4), "cudaMemset");
    throw Error(std::string("model ") + where + ": " +
                ((st & cuda::kStatusBadToken) ? "a token is outside [0, vocab = " + std::to_string(c.vocab) + ")"
                                              : "a target is outside [0, vocab = " + std::to_string(c.vocab) + ")"));
  }
};

CudaModel::CudaModel(const ModelConfig& config) : s_(std::make_unique<State>(config)) {
  const int hs = config.head_size();
  if (hs != 32 && hs != 64 && hs != 128) {
    throw Error("the CUDA model's attention kernels take head sizes 32, 64 or 128; this model's is " +
                std::to_string(hs) + (config.head_dim > 0 ? " (head_dim)" : " (d_model / n_head)") +
                " (change --heads, --d-model or head_dim, or train with --device cpu)");
  }
  State& s = *s_;
  s.P = s.specs.back().offset + s.specs.back().numel;
  s.params.alloc(s.P, s.bytes);
  s.grads.alloc(s.P, s.bytes);
  s.m.alloc(s.P, s.bytes);
  s.v.alloc(s.P, s.bytes);
  s.wbf.alloc(s.P, s.bytes);
  s.status.alloc(1, s.bytes);
  s.norms.alloc(s.specs.size(), s.bytes);
  s.params.zero();
  s.grads.zero();
  s.m.zero();
  s.v.zero();
  s.wbf.zero();
  s.status.zero();
  const std::vector<float> inv_freq = config.rope_inv_freq();
  s.inv_freq.alloc(inv_freq.size(), s.bytes);
  check(cudaMemcpy(s.inv_freq.p, inv_freq.data(), inv_freq.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
}

CudaModel::~CudaModel() = default;
const ModelConfig& CudaModel::config() const { return s_->c; }
const std::vector<ParamSpec>& CudaModel::specs() const { return s_->specs; }
int64_t CudaModel::num_params() const { return s_->P; }
int64_t CudaModel::device_bytes() const { return s_->bytes + s_->lin->device_bytes(); }

namespace {
void need_size(std::span<const float> h, int64_t n, const char* what) {
  if (static_cast<int64_t>(h.size()) != n) {
    throw Error(std::string(what) + ": " + std::to_string(h.size()) + " floats given, the model has " + std::to_string(n));
  }
}
}  // namespace

void CudaModel::set_params(std::span<const float> host) {
  need_size(host, s_->P, "CudaModel::set_params");
  check(cudaMemcpy(s_->params.p, host.data(), host.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
  cuda::convert_f32_to_bf16(s_->wbf.p, s_->params.p, s_->P, nullptr);
  check(cudaGetLastError(), "convert_f32_to_bf16");
}

void CudaModel::get_params(std::span<float> host) const {
  need_size(host, s_->P, "CudaModel::get_params");
  check(cudaMemcpy(host.data(), s_->params.p, host.size() * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
}

void CudaModel::get_grads(std::span<float> host) const {
  need_size(host, s_->P, "CudaModel::get_grads");
  check(cudaMemcpy(host.data(), s_->grads.p, host.size() * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
}

void CudaModel::set_optimizer_state(std::span<const float> m, std::span<const float> v) {
  need_size(m, s_->P, "CudaModel::set_optimizer_state");
  need_size(v, s_->P, "CudaModel::set_optimizer_state");
  check(cudaMemcpy(s_->m.p, m.data(), m.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
  check(cudaMemcpy(s_->v.p, v.data(), v.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
}

void CudaModel::get_optimizer_state(std::span<float> m, std::span<float> v) const {
  need_size(m, s_->P, "CudaModel::get_optimizer_state");
  need_size(v, s_->P, "CudaModel::get_optimizer_state");
  check(cudaMemcpy(m.data(), s_->m.p, m.size() * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
  check(cudaMemcpy(v.data(), s_->v.p, v.size() * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
}

void CudaModel::zero_grad() { s_->grads.zero(); }

float CudaModel::forward(const int32_t* tokens, const int32_t* targets, int B, int T, float loss_scale) {
  State& s = *s_;
  const ModelConfig& c = s.c;
  if (B < 1 || T < 1 || T > c.seq_len) {
    throw Error("model forward: batch " + std::to_string(B) + " x " + std::to_string(T) +
                " tokens; need B >= 1 and 1 <= T <= seq_len = " + std::to_string(c.seq_len));
  }
  s.resize(B, T);
  const int64_t L = c.n_layer, N = int64_t(B) * T, C = c.d_model, F = c.ffn(), V = c.vocab;
  const int64_t NH = c.n_head, NKV = c.n_kv_head, HS = c.head_size(), QD = NH * HS, KD = NKV * HS;
  cudaStream_t st = nullptr;
  // Unlike cudaMemcpy, an async copy does not wait for the work already on the stream; from
  // pageable memory (our own vector, whatever memory the caller's is) it is staged before it
  // returns, so the caller may reuse its buffers at once.
  s.host_ids.assign(tokens, tokens + N);
  check(cudaMemcpyAsync(s.tokens.p, s.host_ids.data(), N * 4, cudaMemcpyHostToDevice, st), "cudaMemcpyAsync");
  s.have_targets = targets != nullptr;
  if (targets) {
    s.host_ids.assign(targets, targets + N);
    check(cudaMemcpyAsync(s.targets.p, s.host_ids.data(), N * 4, cudaMemcpyHostToDevice, st), "cudaMemcpyAsync");
  }

  s.lin->begin_pass(targets ? QuantizedLinearCuda::Pass::training_forward : QuantizedLinearCuda::Pass::forward);
  // The weights' quantized copies for this pass in a few launches (FP8 current scaling).
  std::vector<QuantizedLinearCuda::WeightRef> weights;
  for (int64_t l = 0; l < L; ++l) {
    const struct {
      LinearKind kind;
      int64_t OC, C;
    } linears[] = {{LinearKind::q, QD, C}, {LinearKind::k, KD, C},    {LinearKind::v, KD, C},
                   {LinearKind::o, C, QD}, {LinearKind::gate, F, C}, {LinearKind::up, F, C},
                   {LinearKind::down, C, F}};
    for (const auto& li : linears) {
      weights.push_back({LinearId{int(l), li.kind}, s.w32(s.idx.layers[l].weight(li.kind)), li.OC, li.C});
    }
  }
  s.lin->prepare_weights(weights, st);
  cuda::encoder_forward(s.resid.p, s.tokens.p, s.w(s.idx.embed), B, T, C, V, s.status.p, st);
  for (int64_t l = 0; l < L; ++l) {
    const LayerParamIndex& P = s.idx.layers[l];
    bf16* x = s.resid.p + l * N * C;
    bf16* x2 = s.resid2.p + l * N * C;
    bf16* xo = s.resid.p + (l + 1) * N * C;
    bf16* ln1 = s.ln1.p + l * N * C;
    bf16* ln2 = s.ln2.p + l * N * C;
    bf16* q = s.q.p + l * N * QD;
    bf16* k = s.k.p + l * N * KD;
    bf16* v = s.v_.p + l * N * KD;
    bf16* atty = s.atty.p + l * N * QD;
    bf16* gate = s.gate.p + l * N * F;
    bf16* up = s.up.p + l * N * F;
    bf16* h = s.h.p + l * N * F;
    // With q/k norms the projections land in qpre / kpre and q / k hold the normed heads.
    bf16* qp = c.qk_norm ? s.qpre.p + l * N * QD : q;
    bf16* kp = c.qk_norm ? s.kpre.p + l * N * KD : k;
    cuda::rmsnorm_forward(ln1, s.rstd1.p + l * N, x, s.w(P.ln1), N, C, c.norm_eps, st, s.x_amax(l, LinearKind::q));
    s.fwd(l, LinearKind::q, qp, ln1, P.wq, N, C, QD);
    s.fwd(l, LinearKind::k, kp, ln1, P.wk, N, C, KD);
    s.fwd(l, LinearKind::v, v, ln1, P.wv, N, C, KD);
    if (P.bq >= 0) {  // q/k/v biases (Qwen2), from the FP32 masters
      cuda::bias_forward(qp, s.w32(P.bq), N, QD, st);
      cuda::bias_forward(kp, s.w32(P.bk), N, KD, st);
      cuda::bias_forward(v, s.w32(P.bv), N, KD, st);
    }
    if (c.qk_norm) {  // RMSNorm over each head (rows of HS), before RoPE (Qwen3)
      cuda::rmsnorm_forward(q, s.rstdq.p + l * N * NH, qp, s.w(P.q_norm), N * NH, HS, c.norm_eps, st);
      cuda::rmsnorm_forward(k, s.rstdk.p + l * N * NKV, kp, s.w(P.k_norm), N * NKV, HS, c.norm_eps, st);
    }
    cuda::rope_forward(q, q, B, T, NH, HS, s.inv_freq.p, st);  // in place
    cuda::rope_forward(k, k, B, T, NKV, HS, s.inv_freq.p, st);
    cuda::attention_forward(atty, s.lse.p + l * B * NH * T, q, k, v, B, T, NH, NKV, HS, st,
                            s.x_amax(l, LinearKind::o), c.sliding_window);
    s.fwd(l, LinearKind::o, x2, atty, P.wo, N, QD, C);
    cuda::residual_forward(x2, x2, x, N * C, st);
    cuda::rmsnorm_forward(ln2, s.rstd2.p + l * N, x2, s.w(P.ln2), N, C, c.norm_eps, st,
                          s.x_amax(l, LinearKind::gate));
    s.fwd(l, LinearKind::gate, gate, ln2, P.wg, N, C, F);
    s.fwd(l, LinearKind::up, up, ln2, P.wu, N, C, F);
    cuda::swiglu_forward(h, gate, up, N * F, st, s.x_amax(l, LinearKind::down));
    s.fwd(l, LinearKind::down, xo, h, P.wd, N, F, C);
    cuda::residual_forward(xo, xo, x2, N * C, st);
  }
  // The LM head: lm_head.weight, or the embedding when tied (idx.lm_head == idx.embed).
  const int norm = s.idx.norm, head = s.idx.lm_head;
  cuda::rmsnorm_forward(s.lnf.p, s.rstdf.p, s.resid.p + L * N * C, s.w(norm), N, C, c.norm_eps, st,
                        s.x_amax(L, LinearKind::lm_head));
  s.fwd(L, LinearKind::lm_head, s.logits.p, s.lnf.p, head, N, C, V);
  if (!targets) {
    check(cudaStreamSynchronize(st), "forward");
    s.check_status("forward");
    s.lin->check_nonfinite(st);
    return 0.0f;
  }
  // NOTE: the fused loss kernel overwrites the logits with their gradient, scaled for the
  // mean over N tokens times loss_scale (gradient accumulation).
  cuda::crossentropy_forward_backward(s.losses.p, s.logits.p, s.logits.p, s.targets.p, N, V,
                                      loss_scale / static_cast<float>(N), s.status.p, st);
  check(cudaMemcpy(s.host_losses.data(), s.losses.p, N * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
  s.check_status("forward");
  s.lin->check_nonfinite(st);
  double sum = 0.0;  // fixed order, as the CPU model
  for (int64_t i = 0; i < N; ++i) sum += s.host_losses[i];
  return static_cast<float>(sum / static_cast<double>(N));
}

std::vector<float> CudaModel::logits() const {
  const State& s = *s_;
  if (s.have_targets) throw Error("CudaModel::logits: the last forward had targets (its logits became gradients)");
  const size_t n = size_t(s.B) * s.T * s.c.vocab;
  std::vector<uint16_t> raw(n);
  check(cudaMemcpy(raw.data(), s.logits.p, n * 2, cudaMemcpyDeviceToHost), "cudaMemcpy");
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    const uint32_t b = uint32_t(raw[i]) << 16;
    std::memcpy(&out[i], &b, 4);
  }
  return out;
}

void CudaModel::backward() {
  State& s = *s_;
  if (!s.have_targets) throw Error("model backward: the last forward had no targets");
  const ModelConfig& c = s.c;
  const int B = s.B, T = s.T;
  const int64_t L = c.n_layer, N = int64_t(B) * T, C = c.d_model, F = c.ffn(), V = c.vocab;
  const int64_t NH = c.n_head, NKV = c.n_kv_head, HS = c.head_size(), QD = NH * HS, KD = NKV * HS;
  cudaStream_t st = nullptr;
  const int norm = s.idx.norm, head = s.idx.lm_head;
  void* scratch = s.scratch.p;
  s.lin->begin_pass(QuantizedLinearCuda::Pass::backward);

  // Tied embeddings: the head's weight gradient is ACCUMULATED into the embedding's here, and the
  // gather's (encoder_backward, ACCUMULATED) is added at the end: the CPU model's order.
  s.bwd(L, LinearKind::lm_head, s.dln.p, s.logits.p, s.lnf.p, head, N, C, V, false);
  check(cudaMemsetAsync(s.dresid.p, 0, size_t(N) * C * 2, st), "cudaMemsetAsync");
  cuda::rmsnorm_backward(s.dresid.p, s.g(norm), s.dln.p, s.resid.p + L * N * C, s.w(norm), s.rstdf.p, N, C, scratch, st,
                         L > 0 ? s.dy_amax(L - 1, LinearKind::down) : nullptr);
  for (int64_t l = L - 1; l >= 0; --l) {
    const LayerParamIndex& P = s.idx.layers[l];
    const bf16* x = s.resid.p + l * N * C;
    const bf16* x2 = s.resid2.p + l * N * C;
    const bf16* ln1 = s.ln1.p + l * N * C;
    const bf16* ln2 = s.ln2.p + l * N * C;
    const bf16* q = s.q.p + l * N * QD;
    const bf16* k = s.k.p + l * N * KD;
    const bf16* v = s.v_.p + l * N * KD;
    const bf16* atty = s.atty.p + l * N * QD;
    const bf16* gate = s.gate.p + l * N * F;
    const bf16* up = s.up.p + l * N * F;
    const bf16* h = s.h.p + l * N * F;
    // MLP (dresid = d of the layer output = d x2 through the residual path)
    s.bwd(l, LinearKind::down, s.dh.p, s.dresid.p, h, P.wd, N, F, C, false);
    cuda::swiglu_backward(s.dgate.p, s.dup.p, s.dh.p, gate, up, N * F, st, s.dy_amax(l, LinearKind::gate),
                          s.dy_amax(l, LinearKind::up));
    s.bwd(l, LinearKind::gate, s.dln.p, s.dgate.p, ln2, P.wg, N, C, F, false);
    s.bwd(l, LinearKind::up, s.dln.p, s.dup.p, ln2, P.wu, N, C, F, true);
    cuda::rmsnorm_backward(s.dresid.p, s.g(P.ln2), s.dln.p, x2, s.w(P.ln2), s.rstd2.p + l * N, N, C, scratch, st,
                           s.dy_amax(l, LinearKind::o));
    // Attention: x2 = x + o_proj(attn(rope(qnorm(q(ln1) + bq)), rope(knorm(k(ln1) + bk)), v(ln1) + bv)),
    // the biases and norms where the config has them.
    s.bwd(l, LinearKind::o, s.dattn.p, s.dresid.p, atty, P.wo, N, QD, C, false);
    cuda::attention_backward(s.dqr.p, s.dkr.p, s.dv.p, s.dattn.p, atty, q, k, v, s.lse.p + l * B * NH * T, B, T, NH,
                             NKV, HS, scratch, st, s.dy_amax(l, LinearKind::v), c.sliding_window);
    // dq, dk written, not accumulated: nothing else adds into them. Without q/k norms they are
    // the q/k projections' output gradients (the amax folded here); with them, the norms'
    // backward writes those into dqr / dkr (free again) and folds it.
    cuda::rope_backward(s.dq.p, s.dqr.p, B, T, NH, HS, s.inv_freq.p, st,
                        c.qk_norm ? nullptr : s.dy_amax(l, LinearKind::q), false);
    cuda::rope_backward(s.dk.p, s.dkr.p, B, T, NKV, HS, s.inv_freq.p, st,
                        c.qk_norm ? nullptr : s.dy_amax(l, LinearKind::k), false);
    const bf16* dqp = s.dq.p;
    const bf16* dkp = s.dk.p;
    if (c.qk_norm) {
      // rmsnorm_backward ACCUMULATES into dinp.
      check(cudaMemsetAsync(s.dqr.p, 0, size_t(N) * QD * 2, st), "cudaMemsetAsync");
      check(cudaMemsetAsync(s.dkr.p, 0, size_t(N) * KD * 2, st), "cudaMemsetAsync");
      cuda::rmsnorm_backward(s.dqr.p, s.g(P.q_norm), s.dq.p, s.qpre.p + l * N * QD, s.w(P.q_norm),
                             s.rstdq.p + l * N * NH, N * NH, HS, scratch, st, s.dy_amax(l, LinearKind::q));
      cuda::rmsnorm_backward(s.dkr.p, s.g(P.k_norm), s.dk.p, s.kpre.p + l * N * KD, s.w(P.k_norm),
                             s.rstdk.p + l * N * NKV, N * NKV, HS, scratch, st, s.dy_amax(l, LinearKind::k));
      dqp = s.dqr.p;
      dkp = s.dkr.p;
    }
    if (P.bq >= 0) {  // column sums of the projections' output gradients, ACCUMULATED
      cuda::bias_backward(s.g(P.bq), dqp, N, QD, scratch, st);
      cuda::bias_backward(s.g(P.bk), dkp, N, KD, scratch, st);
      cuda::bias_backward(s.g(P.bv), s.dv.p, N, KD, scratch, st);
    }
    s.bwd(l, LinearKind::q, s.dln.p, dqp, ln1, P.wq, N, C, QD, false);
    s.bwd(l, LinearKind::k, s.dln.p, dkp, ln1, P.wk, N, C, KD, true);
    s.bwd(l, LinearKind::v, s.dln.p, s.dv.p, ln1, P.wv, N, C, KD, true);
    cuda::rmsnorm_backward(s.dresid.p, s.g(P.ln1), s.dln.p, x, s.w(P.ln1), s.rstd1.p + l * N, N, C, scratch, st,
                           l > 0 ? s.dy_amax(l - 1, LinearKind::down) : nullptr);
  }
  cuda::encoder_backward(s.g(s.idx.embed), s.dresid.p, s.tokens.p, B, T, C, V, scratch, s.status.p, st);
  check(cudaStreamSynchronize(st), "backward");
  s.check_status("backward");
  s.lin->check_nonfinite(st);
}

std::vector<double> CudaModel::grad_norms_squared() {
  State& s = *s_;
  size_t scratch_bytes = 0;
  for (const auto& p : s.specs) scratch_bytes = std::max(scratch_bytes, cuda::global_norm_scratch_bytes(p.numel));
  if (s.scratch.n < scratch_bytes) s.scratch.alloc(scratch_bytes, s.bytes);
  for (size_t i = 0; i < s.specs.size(); ++i) {
    cuda::global_norm_squared(s.norms.p + i, s.grads.p + s.specs[i].offset, s.specs[i].numel, s.scratch.p, nullptr);
  }
  std::vector<double> out(s.specs.size());
  check(cudaMemcpy(out.data(), s.norms.p, out.size() * sizeof(double), cudaMemcpyDeviceToHost), "cudaMemcpy");
  return out;
}

void CudaModel::set_plan(recipe::Plan plan, uint64_t seed) {
  if (plan.n_layer() != s_->c.n_layer || plan.size() != linear_refs(s_->c.n_layer).size()) {
    throw Error("CudaModel::set_plan: the plan was resolved for " + std::to_string(plan.n_layer()) +
                " blocks, the model has " + std::to_string(s_->c.n_layer));
  }
  s_->lin = std::make_unique<QuantizedLinearCuda>(std::move(plan), seed);
}

void CudaModel::set_recipe(const recipe::Recipe& r, uint64_t seed) { set_plan(resolve_plan(r, s_->c.n_layer), seed); }

void CudaModel::set_step(uint32_t step, double progress) { s_->lin->set_step(step, progress); }
QuantizedLinearCuda& CudaModel::linear() { return *s_->lin; }

void CudaModel::scale_grads(float f) {
  scale_kernel<<<1024, 256>>>(s_->grads.p, s_->P, f);
  check(cudaGetLastError(), "scale_kernel");
}

void CudaModel::adamw(float lr, float beta1, float beta2, float eps, float weight_decay, int64_t step) {
  State& s = *s_;
  for (size_t i = 0; i < s.specs.size(); ++i) {
    const auto& p = s.specs[i];
    cuda::adamw_update(s.params.p + p.offset, s.wbf.p + p.offset, s.grads.p + p.offset, s.m.p + p.offset,
                       s.v.p + p.offset, p.numel, lr, beta1, beta2, eps, p.decay ? weight_decay : 0.0f, step, nullptr);
  }
  check(cudaGetLastError(), "adamw_update");
}

}  // namespace nvfp4::model
