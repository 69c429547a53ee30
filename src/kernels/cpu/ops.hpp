// CPU reference operators of a Llama-style decoder, FP32 in and out: the oracle every CUDA op
// and every model-level test is checked against (architecture.md: "clarity first").
//
// What it is: plain loops over row-major FP32 arrays, llm.c style: one forward and one
// explicit backward per op, raw pointers plus shape arguments, shapes in the comments.
// The matmuls call OpenBLAS cblas_sgemm; everything else is written out. One source file per op
// family, named as on the CUDA side and in the tests: attention.cpp, norm.cpp, rope.cpp,
// embedding.cpp, loss.cpp, optim.cpp, elementwise.cpp, gemm.cpp (+ threads.cpp).
// What it is not: fused, blocked, or mixed-precision. No op quantizes anything; the model
// layer puts the recipe's quantizers around these ops.
//
// Dimension legend:
//   B   batch size                 T   sequence length (positions 0..T-1)
//   C   channels (model width)     OC  output channels of a matmul
//   N   rows, usually B*T          F   hidden width of the SwiGLU MLP
//   NH  query heads                NKV key/value heads (grouped-query attention; NH % NKV == 0)
//   HS  head size                  V   vocabulary size
//
// Conventions:
//   - Linear weights use the nn.Linear layout (OC, C): out = inp · weightᵀ, no bias.
//   - Every backward ACCUMULATES (+=) into all of its gradient outputs, as llm.c does: the
//     caller zeroes gradient buffers once per step, and an activation read by two ops (a
//     residual stream) simply collects both contributions. No backward reads the old value
//     of a gradient buffer for anything else.
//   - Gradient outputs must not alias the inputs of the same call unless a comment says so.
//   - Deterministic: results are bit-identical run to run and for any thread count. OpenMP
//     splits only loops whose iterations write disjoint outputs; every reduction runs inside
//     one iteration in a fixed order (no atomics, no thread-count-dependent partial sums).
//     OpenBLAS picks its kernels by CPU, so matmul bits can differ between machines (not
//     between runs); compare across machines with a tolerance.
//   - Invalid shapes or indices throw nvfp4::Error naming the op and the offending value.
#pragma once

#include <cstdint>

namespace nvfp4::cpu {

// ---- threads -------------------------------------------------------------------------

// Threads used by the OpenMP loops (n >= 1). Results do not depend on it; it exists so
// callers and tests can pin it explicitly instead of through the environment. OpenBLAS always
// runs single-threaded (its threaded sgemm changes bits with the thread count).
void set_num_threads(int n);

// ---- matmul (nn.Linear without bias) --------------------------------------------------

// out (N, OC) = inp (N, C) · weight (OC, C)ᵀ, via cblas_sgemm. Overwrites out.
void matmul_forward(float* out, const float* inp, const float* weight, int64_t N, int64_t C, int64_t OC);

// Same result as matmul_forward from three plain loops (FP32 accumulation in increasing c).
// Only for tests, to check the BLAS call (layout, transposes, leading dimensions).
void matmul_forward_naive(float* out, const float* inp, const float* weight, int64_t N, int64_t C, int64_t OC);

// dinp (N, C) += dout (N, OC) · weight (OC, C);  dweight (OC, C) += dout (N, OC)ᵀ · inp (N, C).
// Either gradient may be nullptr to skip it (the first layer needs no dinp).
void matmul_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                     int64_t N, int64_t C, int64_t OC);

// ---- RMSNorm --------------------------------------------------------------------------

// Per row n: rstd[n] = 1 / sqrt(mean_c(inp[n,c]^2) + eps);  out[n,c] = (inp[n,c] * rstd[n]) * weight[c].
// out (N, C), rstd (N) saved for the backward, inp (N, C), weight (C). As HF LlamaRMSNorm (FP32).
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N, int64_t C,
                     float eps);

// With xhat = inp * rstd and g = dout * weight:
//   dinp (N, C) += rstd * (g - xhat * mean_c(g * xhat));   dweight (C) += sum_n dout * xhat.
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int64_t N, int64_t C);

// ---- rotary position embedding (RoPE) ----------------------------------------------------

// HF Llama convention ("rotate_half", NOT interleaved pairs): for position t in 0..T-1 and
// i in 0..HS/2-1, with angle = t * theta^(-2i/HS), the pair (x[i], x[i + HS/2]) is rotated:
//   out[i]        = x[i] * cos(angle) - x[i + HS/2] * sin(angle)
//   out[i + HS/2] = x[i + HS/2] * cos(angle) + x[i] * sin(angle)
// out, inp (B, T, NH, HS); pass NKV as NH for the keys. HS must be even. Precompute-free: the
// angles are computed in FP32 exactly as HF does (inv_freq = 1 / theta^(2i/HS) in FP32, then
// angle = float(t) * inv_freq, cosf/sinf). out may equal inp (in place).
void rope_forward(float* out, const float* inp, int64_t B, int64_t T, int64_t NH, int64_t HS,
                  float theta = 10000.0f);

// dinp (B, T, NH, HS) += the inverse rotation (by -angle) of dout (B, T, NH, HS).
void rope_backward(float* dinp, const float* dout, int64_t B, int64_t T, int64_t NH, int64_t HS,
                   float theta = 10000.0f);

// The same rotations with the inverse frequencies given: inv_freq (HS/2), angle = float(t) *
// inv_freq[i] (RoPE scaling: model::ModelConfig::rope_inv_freq()). The theta versions above are
// these with inv_freq[i] = 1 / theta^(2i/HS) (FP32): the same bits for the same table.
void rope_forward(float* out, const float* inp, int64_t B, int64_t T, int64_t NH, int64_t HS, const float* inv_freq);
void rope_backward(float* dinp, const float* dout, int64_t B, int64_t T, int64_t NH, int64_t HS,
                   const float* inv_freq);

// ---- causal grouped-query attention ---------------------------------------------------------

// For query head h, kv head h / (NH / NKV) (HF repeat_kv order), position t, and the visible
// key positions t2 in [lo(t), t] with lo(t) = max(0, t - window + 1) (a sliding window, Mistral:
// t - t2 < window), lo(t) = 0 when window = 0 (all earlier positions):
//   att[b,h,t,t2] = softmax_{lo(t) <= t2 <= t}(q[b,t,h,:] · k[b,t2,kvh,:] / sqrt(HS)), 0 elsewhere
//   out[b,t,h,:]  = sum_{lo(t) <= t2 <= t} att[b,h,t,t2] * v[b,t2,kvh,:]
// out (B, T, NH, HS); att (B, NH, T, T) the saved probabilities; q (B, T, NH, HS);
// k, v (B, T, NKV, HS). Softmax subtracts the row max before exp. Overwrites out and att.
// window >= T gives the same bits as window = 0.
void attention_forward(float* out, float* att, const float* q, const float* k, const float* v, int64_t B,
                       int64_t T, int64_t NH, int64_t NKV, int64_t HS, int64_t window = 0);

// dq (B, T, NH, HS) += ..., dk, dv (B, T, NKV, HS) += ... (each KV head sums over the query
// heads of its group, then over query positions, in increasing order). datt_scratch
// (B, NH, T, T) is overwritten with the gradient of the pre-softmax scores (scaled dot
// products), zero outside the visible positions. att is attention_forward's output for the
// same window.
void attention_backward(float* dq, float* dk, float* dv, float* datt_scratch, const float* dout, const float* q,
                        const float* k, const float* v, const float* att, int64_t B, int64_t T, int64_t NH,
                        int64_t NKV, int64_t HS, int64_t window = 0);

// ---- SwiGLU ------------------------------------------------------------------------------

// out (N, F) = silu(gate) * up with silu(x) = x * sigmoid(x) = x / (1 + exp(-x)).
// gate, up (N, F). n = N * F elements, elementwise.
void swiglu_forward(float* out, const float* gate, const float* up, int64_t n);

// dgate += dout * up * s * (1 + gate * (1 - s)) with s = sigmoid(gate);  dup += dout * silu(gate).
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t n);

// ---- token embedding -----------------------------------------------------------------------

// out[b,t,:] = wte[tokens[b,t], :]. out (B, T, C); tokens (B, T) int32 in [0, V); wte (V, C).
// A token outside [0, V) throws nvfp4::Error naming its position (b, t).
void encoder_forward(float* out, const int32_t* tokens, const float* wte, int64_t B, int64_t T, int64_t C,
                     int64_t V);

// dwte[tokens[b,t], :] += dout[b,t,:]. dwte (V, C), dout (B, T, C). The additions in a fixed
// order that a GPU can split over many blocks: positions sorted by token (stably), cut into
// chunks of kEncoderChunk; a token's rows inside one chunk summed from zero in position order,
// then its chunk sums added into dwte in order (cuda::encoder_backward: the same bits).
inline constexpr int64_t kEncoderChunk = 64;
void encoder_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t B, int64_t T, int64_t C,
                      int64_t V);

// ---- residual --------------------------------------------------------------------------------

// out = a + b, n elements (any shape). out may equal a or b. Its backward is the identity:
// the caller adds dout into both gradients (or lets both consumers accumulate into one).
void residual_forward(float* out, const float* a, const float* b, int64_t n);

// ---- cross-entropy ------------------------------------------------------------------------------

// losses[n] = logsumexp(logits[n,:]) - logits[n, targets[n]], with the row max subtracted
// before exp (stable log-softmax). losses (N) with N = B*T, logits (N, V), targets (N) int32.
// A target outside [0, V) throws nvfp4::Error naming its position n. No ignore index.
void crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int64_t N, int64_t V);

// Gradient of L = dloss_scale * sum_n losses[n] (dloss_scale = 1/N for the mean loss):
// dlogits (N, V) += (softmax(logits[n,:]) - onehot(targets[n])) * dloss_scale.
// The softmax is recomputed from logits (N, V).
void crossentropy_softmax_backward(float* dlogits, const float* logits, const int32_t* targets, int64_t N,
                                   int64_t V, float dloss_scale);

// ---- optimizer -------------------------------------------------------------------------------------

// One AdamW step (Loshchilov & Hutter, decoupled weight decay), n elements, step >= 1:
//   m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g^2
//   mhat = m / (1 - beta1^step);       vhat = v / (1 - beta2^step)
//   p -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * p)
// params, grads, m, v (n). Updates params, m and v in place.
void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int64_t step);

// sqrt(sum_i grads[i]^2), accumulated in double over fixed 4096-element chunks whose partial
// sums are added in order: the same bits for any thread count. For gradient clipping.
double global_norm(const float* grads, int64_t n);

}  // namespace nvfp4::cpu
