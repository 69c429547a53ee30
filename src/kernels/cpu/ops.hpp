// CPU reference operators of a Llama-style decoder, FP32 in and out: the oracle every CUDA op
// and every model-level test is checked against (architecture.md: "clarity first").
//
// What it is: plain loops over row-major FP32 arrays, llm.c style: one forward and one
// explicit backward per op, raw pointers plus shape arguments, shapes in the comments.
// The matmuls call OpenBLAS cblas_sgemm; everything else is written out. One source file per op
// family, named as on the CUDA side and in the tests: attention.cpp, norm.cpp, rope.cpp,
// embedding.cpp, loss.cpp, optim.cpp, elementwise.cpp, gemm.cpp, kv_cache.cpp, quantize_rows.cpp
// (+ threads.cpp).
// What it is not: fused, blocked, or mixed-precision. No training op quantizes anything; the model
// layer puts the recipe's quantizers around these ops (the one exception, nvfp4_quantize_rows, is
// an inference op that emulates a quantized GEMM's input through the format core).
//
// Dimension legend:
//   B   batch size                 T   sequence length (positions 0..T-1)
//   C   channels (model width)     OC  output channels of a matmul
//   N   rows, usually B*T          F   hidden width of the SwiGLU MLP
//   NH  query heads                NKV key/value heads (grouped-query attention; NH % NKV == 0)
//   HS  head size                  V   vocabulary size
//   (the inference ops add slots and max_ctx: see "inference" below)
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
#include "format/nvfp4.hpp"  // fmt::Nvfp4InputScale
#include "nvfp4/kv_pages.hpp"

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

// ---- bias ------------------------------------------------------------------------------------------

// The backward of out (N, OC) += bias (OC) (the forward: scale_rows_bias(out, out, nullptr, bias)):
// dbias (OC) += sum_n dout (N, OC), each column summed from zero in FP32 in increasing n, then
// added (cuda::bias_backward sums in fixed chunks of rows: the same value up to that order).
void bias_backward(float* dbias, const float* dout, int64_t N, int64_t OC);

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

// ---- inference ---------------------------------------------------------------------------------------
//
// What an inference engine with a KV cache runs besides the ops above (no backward). A batch is
// N rows, each a token of some sequence: row n belongs to cache slot slot[n] and sits at
// position pos[n] of it. Decode: one row per sequence; (chunked) prefill: many rows of one or
// more sequences. Extra legend:
//   slots    sequences the cache holds      max_ctx  positions per slot
// KV cache layout, one per layer for K and one for V: (slots, max_ctx, NKV, HS) row-major, or
// paged (KvPages with a block table, as vLLM's paged attention keeps it): a pool of blocks
// (blocks, block_size, NKV, HS), and position j of slot s in block table[s * per_seq + j /
// block_size] at row j % block_size, per_seq = ceil(max_ctx / block_size). Sequences take blocks
// as they grow and give them back when reset (src/infer/kv_blocks.hpp), so a pool smaller than
// slots x max_ctx serves sequences of different lengths.
// Files: rope_rows in rope.cpp, scale_rows_bias and gather_rows in elementwise.cpp, kv_append and
// attention_cache in kv_cache.cpp, nvfp4_quantize_rows in quantize_rows.cpp.

// RoPE of rows at arbitrary positions, in place: x (N, NH, HS); row n at position pos[n] (N)
// int32. The rotate_half pairs of rope_forward; pair i rotates by angle = float(pos[n]) *
// inv_freq[i] (FP32 product, cosf/sinf). inv_freq (HS/2) is the caller's (it carries any rope
// scaling); with inv_freq[i] = 1 / theta^(2i/HS) and pos = t it is rope_forward, bit for bit.
void rope_rows(float* x, const int32_t* pos, const float* inv_freq, int64_t N, int64_t NH, int64_t HS);

// out (N, OC) = in (N, OC) * row_factor[n] + bias[o], the product and the sum each rounded
// (no fused multiply-add). row_factor (N) and bias (OC) may be nullptr (factor 1, no bias: the
// term is skipped, not added as 0). out may equal in: x += bias is scale_rows_bias(x, x,
// nullptr, bias, N, OC). The epilogue of a GEMM whose rows carry a factor (nvfp4_quantize_rows).
void scale_rows_bias(float* out, const float* in, const float* row_factor, const float* bias, int64_t N, int64_t OC);

// out (n, C) = in[rows[i], :] with in (n_in, C) and rows (n) int32 in [0, n_in); an index
// outside throws naming i. E.g. the last row of each sequence of a prefill, for the LM head.
void gather_rows(float* out, const float* in, const int32_t* rows, int64_t n, int64_t n_in, int64_t C);

// The paged layout of the caches (nvfp4/kv_pages.hpp; host pointers here).
using KvPages = nvfp4::KvPages;

// k_cache[slot[n], pos[n], :, :] = k[n, :, :] and the same for v: k, v (N, NKV, HS); caches
// (slots, max_ctx, NKV, HS), or paged; slot, pos (N) int32. A slot outside [0, slots), a position
// outside [0, max_ctx), a position whose block the table does not give (paged), or two rows
// naming the same (slot, pos), throws naming the row(s); nothing is written then.
void kv_append(float* k_cache, float* v_cache, const float* k, const float* v, const int32_t* slot,
               const int32_t* pos, int64_t N, int64_t NKV, int64_t HS, int64_t slots, int64_t max_ctx,
               const KvPages& pages = {});

// Attention of N query rows against the cache (their own K/V already appended): for row n, query
// head h, kv head h / (NH / NKV), and every key position j of slot slot[n] with j <= pos[n] and
// (window == 0 || pos[n] - j < window):
//   s_j = (q[n,h,:] · k_cache[slot[n], j, kvh, :]) * scale
//   out[n,h,:] = sum_j softmax(s)_j v_cache[slot[n], j, kvh, :]
// out, q (N, NH, HS). FP32 accumulation in attention_forward's order (dot products in increasing
// i, max subtracted before exp, the sum of exps, then 1/sum, weights times values added in
// increasing j): with slot 0, pos = 0..T-1, window 0 and scale = 1/sqrt(HS) it is
// attention_forward's output bit for bit, and the paged layout gives the contiguous one's bits. A
// slot or position out of range, or a visible position without a block (paged), throws naming the
// row; window >= 0.
void attention_cache(float* out, const float* q, const float* k_cache, const float* v_cache, const int32_t* slot,
                     const int32_t* pos, int64_t N, int64_t NH, int64_t NKV, int64_t HS, int64_t slots,
                     int64_t max_ctx, int64_t window, float scale, const KvPages& pages = {});

// NVFP4 "fake quantization" of activation rows, for exact W4A4 emulation on a BF16 GEMM:
// out (N, K) holds each row quantized to NVFP4 (1x16 blocks, E4M3 block scales, RNE) and decoded
// WITHOUT the per-tensor factor (code value x block scale: exact in BF16); the factor goes to
// row_factor (N), which the GEMM's epilogue multiplies in (scale_rows_bias). K % 16 == 0.
// Per row n the tensor scale is fmt::nvfp4_input_tensor_scale(input, max |in[n,:]|): the row's
// own amax (input = {}), a calibrated amax, or a checkpoint's stored encode/decode factors.
// row_flags[n] (nullable):
//   kRowNonFinite  the row holds NaN or Inf
//   kRowSaturated  (finite rows only) a 16-element block's E4M3 scale saturates at 448, so its
//                  values clip at 6 x 448 / encode (a calibrated or stored scale only; the exact
//                  criteria: fmt::nvfp4_input_tensor_scale)
// Flagged row with fallback: out row = in row, row_factor = 1 (the GEMM computes W4A16 for it).
// Non-finite row without fallback: out row = NaN, row_factor = 1. Otherwise the row is exactly
// what nvfp4::quantize of the (1, K) tensor with that tensor scale gives, dequantized without
// it (the format core's functions, src/format/nvfp4.hpp), and row_factor = the scale's decode
// factor (amax / 2688, or the stored decode). An input fmt::nvfp4_input_scale_problem refuses is
// an error. out may equal in.
inline constexpr uint8_t kRowNonFinite = 1u;
inline constexpr uint8_t kRowSaturated = 2u;
void nvfp4_quantize_rows(float* out, float* row_factor, uint8_t* row_flags, const float* in, int64_t N, int64_t K,
                         const fmt::Nvfp4InputScale& input, bool fallback);

}  // namespace nvfp4::cpu
