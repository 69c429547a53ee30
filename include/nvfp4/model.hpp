// The Llama-style decoder: configuration, parameter layout, and the CPU reference model.
//
//   tokens (B, T) -> embed -> L x [ x += o_proj(attn(rope(q), rope(k), v)(rmsnorm(x)))
//                                   x += down(silu(gate(rmsnorm(x))) * up(rmsnorm(x))) ]
//                 -> rmsnorm -> lm_head -> logits (B, T, V) -> cross-entropy
//
// Grouped KV heads, RoPE in Hugging Face's rotate_half convention, and the features of the
// Llama family's relatives as options of one model: a head size other than C / NH, q/k/v biases
// (Qwen2), RMSNorm of each query and key head before RoPE (Qwen3), an LM head tied to the
// embedding, RoPE scaling (linear, llama3) and a sliding attention window (Mistral). Parameter
// names and layouts are exactly Hugging Face's, so an export is a dtype cast and an import a
// name lookup.
// Dimension legend (llm.c): B batch, T sequence, C d_model, NH heads, NKV kv heads, HS head size,
// F ffn width, V vocabulary, L layers, N = B * T.
//
// Every linear layer's three GEMMs (forward, data gradient, weight gradient) go through a
// LinearPrecision object, named by (layer, which linear): the FP32 one calls the reference
// matmul; a precision recipe (issue 5) substitutes one that quantizes the operands.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nvfp4/plan.hpp"

namespace nvfp4::model {

// RoPE frequency scaling, as transformers' rope_scaling (rope_type "linear" or "llama3").
enum class RopeScaling : uint8_t { none, linear, llama3 };
struct RopeScalingConfig {
  RopeScaling type = RopeScaling::none;
  float factor = 1.0f;                 // linear and llama3
  float low_freq_factor = 1.0f;        // llama3
  float high_freq_factor = 4.0f;       // llama3
  int original_max_position = 8192;    // llama3: original_max_position_embeddings
  bool operator==(const RopeScalingConfig&) const = default;
};

struct ModelConfig {
  int n_layer = 4;
  int d_model = 256;
  int n_head = 4;
  int n_kv_head = 4;   // grouped-query attention when < n_head (n_head % n_kv_head == 0)
  int d_ffn = 0;       // 0: Llama's rule, 8/3 * d_model rounded up to a multiple of 64
  int vocab = 257;     // the byte tokenizer's 256 bytes + end-of-text
  int seq_len = 256;   // longest sequence (RoPE positions 0 .. seq_len - 1)
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;
  float init_std = 0.02f;
  int head_dim = 0;             // 0: d_model / n_head
  bool attention_bias = false;  // q_proj, k_proj, v_proj have biases (Qwen2)
  bool qk_norm = false;         // self_attn.q_norm / k_norm: RMSNorm over each head before RoPE (Qwen3)
  bool tie_embeddings = false;  // the LM head is the embedding matrix (no lm_head.weight)
  int sliding_window = 0;       // a query attends to the last sliding_window positions; 0: all (Mistral)
  RopeScalingConfig rope_scaling;

  int head_size() const { return head_dim > 0 ? head_dim : d_model / n_head; }
  // RoPE's inverse frequencies (head_size() / 2), FP32, with rope_scaling applied exactly as
  // transformers computes them (linear: divided by factor; llama3: the wavelength bands).
  std::vector<float> rope_inv_freq() const;
  int ffn() const;                        // d_ffn resolved
  void validate() const;                  // throws nvfp4::Error naming the bad field and what works
  // The fields, d_ffn resolved; the features above only when they differ from their default,
  // so the JSON of a plain Llama model is what earlier versions wrote.
  std::string to_json() const;
  static ModelConfig from_json(std::string_view json);  // unknown keys are an error
  int64_t num_params() const;
  // FLOPs of one training token (forward + backward = 3 x forward): 6 x matmul weights plus
  // the attention score and value products, as llm.c / PaLM count them.
  double flops_per_token(int T) const;
};

// The linear layers, in HF's names.
enum class LinearKind : uint8_t { q, k, v, o, gate, up, down, lm_head };
const char* linear_name(LinearKind k);  // "self_attn.q_proj", ..., "lm_head"

struct LinearId {
  int layer;  // 0 .. n_layer - 1; n_layer for lm_head
  LinearKind kind;
};

// The model's linear layers in a fixed order — per block q, k, v, o, gate, up, down, then the LM
// head — as a quantization plan is resolved against them (include/nvfp4/plan.hpp); a layer's
// position in it is linear_index().
std::vector<recipe::LinearRef> linear_refs(int n_layer);
inline size_t linear_index(LinearId id) {
  return static_cast<size_t>(id.layer) * 7 + (id.kind == LinearKind::lm_head ? 0 : static_cast<size_t>(id.kind));
}
// The plan of recipe r for a model of n_layer blocks (throws nvfp4::Error as Plan::resolve).
recipe::Plan resolve_plan(const recipe::Recipe& r, int n_layer);

// out (N, OC) = inp (N, C) . weight (OC, C)^T and its gradients.
class LinearPrecision {
 public:
  virtual ~LinearPrecision() = default;
  virtual void forward(LinearId id, float* out, const float* inp, const float* weight, int64_t N, int64_t C,
                       int64_t OC) = 0;
  // dinp (N, C) += dout . weight;  dweight (OC, C) += dout^T . inp  (accumulating, as the ops)
  virtual void backward(LinearId id, float* dinp, float* dweight, const float* dout, const float* inp,
                        const float* weight, int64_t N, int64_t C, int64_t OC) = 0;
};

// FP32 everywhere: the reference matmul.
class Fp32Linear final : public LinearPrecision {
 public:
  void forward(LinearId, float* out, const float* inp, const float* weight, int64_t N, int64_t C, int64_t OC) override;
  void backward(LinearId, float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                int64_t N, int64_t C, int64_t OC) override;
};

// One parameter tensor inside the single parameter allocation.
struct ParamSpec {
  std::string name;            // HF name, e.g. "model.layers.3.mlp.up_proj.weight"
  std::vector<int64_t> shape;  // HF shape, e.g. {F, C}
  int64_t offset = 0;          // in floats, into the parameter (and gradient) buffer
  int64_t numel = 0;
  bool decay = false;          // AdamW weight decay applies (matrices, not norm gains)
};

// Every parameter in a fixed order; offsets pack them back to back. Per block: input_layernorm,
// q_proj (weight, bias), k_proj, v_proj, q_norm, k_norm, o_proj, post_attention_layernorm,
// gate_proj, up_proj, down_proj — biases and norms only where the config has them; then
// model.norm and lm_head (absent when tied).
std::vector<ParamSpec> param_specs(const ModelConfig& c);

// Where each parameter is in param_specs(): indices into it, -1 where the config has none.
struct LayerParamIndex {
  int ln1 = -1, wq = -1, bq = -1, wk = -1, bk = -1, wv = -1, bv = -1, q_norm = -1, k_norm = -1, wo = -1, ln2 = -1,
      wg = -1, wu = -1, wd = -1;
  int weight(LinearKind k) const;  // wq .. wd by kind (not lm_head)
  int bias(LinearKind k) const;    // bq, bk, bv; -1 for the others
};
struct ParamIndex {
  int embed = -1;
  std::vector<LayerParamIndex> layers;
  int norm = -1;
  int lm_head = -1;  // == embed when the embeddings are tied
};
ParamIndex param_index(const ModelConfig& c);

// Deterministic initialization (same values on every machine): matrices N(0, init_std), the
// output projections o_proj and down_proj scaled by 1 / sqrt(2 L) (GPT-2), norm gains 1.
// Normals come from Philox4x32-10 keyed by seed with the element index as counter
// (Box-Muller), so a CUDA backend can initialize identically.
void init_params(const ModelConfig& c, std::span<float> params, uint64_t seed);

// The FP32 CPU model: parameters, gradients and activations for one (B, T).
class CpuModel {
 public:
  explicit CpuModel(const ModelConfig& config);
  const ModelConfig& config() const { return config_; }
  const std::vector<ParamSpec>& specs() const { return specs_; }
  std::span<float> params() { return params_; }
  std::span<const float> params() const { return params_; }
  std::span<float> grads() { return grads_; }
  std::span<const float> grads() const { return grads_; }
  const ParamSpec& spec(const std::string& name) const;  // throws naming the unknown parameter

  // Linear layers use `p` from now on (not owned; nullptr restores FP32).
  void set_linear_precision(LinearPrecision* p) { linear_ = p; }

  // Forward over tokens (B, T), T <= seq_len. With targets (B, T): returns the mean
  // cross-entropy and keeps what backward() needs. Without: returns 0 (logits only).
  float forward(const int32_t* tokens, const int32_t* targets, int B, int T);
  std::span<const float> logits() const { return {logits_.data(), size_t(B_) * T_ * config_.vocab}; }  // (B, T, V)
  std::span<const float> losses() const { return {losses_.data(), size_t(B_) * T_}; }                  // (B, T)

  // Accumulates into grads() the gradient of loss_scale x (the mean loss of the last forward).
  // (Gradient accumulation over k micro-batches: loss_scale = 1 / k.)
  void backward(float loss_scale = 1.0f);
  void zero_grad();

 private:
  void resize(int B, int T);
  ModelConfig config_;
  std::vector<ParamSpec> specs_;
  ParamIndex index_;
  std::vector<float> params_, grads_;
  LinearPrecision& lin() { return linear_ ? *linear_ : fp32_; }
  Fp32Linear fp32_;
  LinearPrecision* linear_ = nullptr;  // nullptr: fp32_ (a pointer to it would not survive a move)
  std::vector<float> inv_freq_;        // (HS / 2) RoPE inverse frequencies, config_.rope_inv_freq()
  // Activations of the last forward (sized for B_, T_), per layer where noted.
  int B_ = 0, T_ = 0;
  bool have_targets_ = false;
  std::vector<int32_t> tokens_, targets_;
  std::vector<float> resid_;   // (L + 1, N, C): the residual stream entering each layer, and the final one
  std::vector<float> resid2_;  // (L, N, C): after attention
  std::vector<float> ln1_, ln2_, rstd1_, rstd2_;  // (L, N, C), (L, N)
  std::vector<float> q_, k_, v_;                  // (L, N, NH*HS) / (L, N, NKV*HS), q and k after RoPE
  std::vector<float> qpre_, kpre_, rstdq_, rstdk_;  // qk_norm only: q, k before their norms, (L, N*NH), (L, N*NKV)
  std::vector<float> att_;                        // (L, B, NH, T, T)
  std::vector<float> atty_;                       // (L, N, NH*HS)
  std::vector<float> gate_, up_, h_;              // (L, N, F)
  std::vector<float> lnf_, rstdf_;                // (N, C), (N)
  std::vector<float> logits_, losses_;            // (N, V), (N)
  // Backward scratch.
  std::vector<float> dresid_, dln_, dattn_, dq_, dk_, dv_, dqr_, dkr_, datt_, dgate_, dup_, dh_, dlogits_;
};

}  // namespace nvfp4::model
