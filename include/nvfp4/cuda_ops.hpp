// CUDA training and inference operators of the Llama-style decoder: the GPU twins of
// src/kernels/cpu/ops.hpp (same names, same shapes, same formulas), implemented in
// src/kernels/cuda/<family>.cu (attention, norm, rope, embedding, loss, optim, elementwise, gemm,
// kv_cache, quantize_rows) and tested against the CPU ops in tests/cuda/test_<family>_cuda.cu.
//
// Plain C++ (no CUDA headers): device buffers are raw pointers, the stream is CUDA's opaque
// cudaStream_t (nullptr: the default stream). Every op is asynchronous on its stream; bad
// arguments and failed launches throw nvfp4::Error. Data-dependent errors (a token or target
// outside the vocabulary) cannot throw without a synchronization: those ops OR a bit into a
// device status word (kStatus*) that the caller reads when it next synchronizes.
//
// Storage types:
//   activations and their gradients  BF16, passed as uint16_t* (the raw bf16 bits)
//   parameters                       FP32 master copy + a BF16 copy the GEMMs read
//   parameter gradients              FP32
//   saved statistics (rstd, lse)     FP32
// All arithmetic is FP32 in registers; a BF16 output is rounded once (RNE) when stored.
//
// Dimension legend (as ops.hpp):
//   B   batch size                 T   sequence length (positions 0..T-1)
//   C   channels (model width)     OC  output channels of a matmul
//   N   rows, usually B*T          F   hidden width of the SwiGLU MLP
//   NH  query heads                NKV key/value heads (grouped-query attention; NH % NKV == 0)
//   HS  head size                  V   vocabulary size
//
// Gradient conventions DIFFER from the CPU ops in one respect: where a comment says
// OVERWRITTEN, the op stores the gradient instead of adding it (a BF16 buffer would otherwise
// be rounded twice); ACCUMULATED means += as on the CPU. Deterministic: every op returns the
// same bits run to run on the same GPU model (no float atomics; every reduction has a fixed
// order that does not depend on the device's SM count). Scratch buffers are caller-owned
// device memory of at least the *_scratch_bytes() size, 16-byte aligned (cudaMalloc's are).
// Tensor pointers need only their element's alignment; 16-byte aligned ones (and row lengths
// that keep rows aligned) take the vectorized paths, others a scalar path with the same result.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "nvfp4/dtype.hpp"
#include "nvfp4/kv_pages.hpp"
#include "nvfp4/quantize.hpp"

struct CUstream_st;
namespace nvfp4::fmt {
struct Nvfp4InputScale;  // src/format/nvfp4.hpp: the activation tensor scale of nvfp4_quantize_rows
}

namespace nvfp4::cuda {

using Stream = CUstream_st*;  // cudaStream_t; nullptr is the default stream

// Bits of the device status word (uint32_t) the ops below OR into; zero it before a step.
inline constexpr uint32_t kStatusBadToken = 1u;   // encoder: a token outside [0, V)
inline constexpr uint32_t kStatusBadTarget = 2u;  // cross-entropy: a target outside [0, V)
inline constexpr uint32_t kStatusBadPosition = 4u;  // kv_append, attention_cache: a slot or position outside the cache
inline constexpr uint32_t kStatusBadRow = 8u;       // gather_rows: a row index outside the input

// Programmatic dependent launch (Hopper): the inference step's kernels (embedding, RMSNorm,
// gemv_bf16, qkv_rows, attention_cache, swiglu_rows, residual, gather_rows) are launched so that
// each may start while the previous kernel of its stream finishes, waiting on the device for its
// data (src/kernels/cuda/ops_common.cuh says how). The results are the same bits either way. On
// by default; off for a whole process (A/B timing: bench_infer's `-serial` precisions).
void set_dependent_launch(bool on);
bool dependent_launch();

// ---- matmul (nn.Linear without bias) through cuBLASLt -------------------------------------

// One operand of Blas::gemm: a logical (rows, K) matrix, K the contraction dimension.
struct GemmOperand {
  const void* data = nullptr;
  DType dtype = DType::BF16;  // BF16, F8_E4M3 or F8_E5M2
  bool k_major = true;        // stored (rows, K) row-major; false: stored (K, rows) row-major (BF16 only)
  // FP8 only: the decode factors as cuda::quantize() writes them — one float
  // (block {0, 0}), 1x128 blocks (rows, ceil(K/128)) or 128x128 blocks (ceil(rows/128), ceil(K/128)),
  // 16-byte aligned (cuBLASLt refuses others).
  const float* scale_inv = nullptr;
  BlockShape block{0, 0};
};

// Owns a cuBLASLt handle and a 32 MiB device workspace; the chosen algorithm of each GEMM
// shape is cached. BF16 operands, FP32 accumulation (CUBLAS_COMPUTE_32F). Not thread-safe:
// one Blas per host thread. Calls on one Blas must not run concurrently on two streams (they
// share the workspace).
class Blas {
 public:
  Blas();
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  // out (N, OC) bf16 = inp (N, C) bf16 · weight (OC, C)ᵀ bf16. OVERWRITES out.
  void matmul_forward(uint16_t* out, const uint16_t* inp, const uint16_t* weight, int64_t N, int64_t C, int64_t OC,
                      Stream stream);

  // dinp (N, C) bf16 = dout (N, OC) · weight (OC, C): OVERWRITTEN, or added to its current
  // value when accumulate_dinp (cuBLASLt beta = 1). dinp may be nullptr (skip).
  // NOTE: with accumulate_dinp, cuBLASLt's BF16 epilogue was measured (H100, CUDA 13.0) to round
  // the product to BF16 before adding the old value: two roundings, as in llm.c.
  // TODO: an FP32 product plus a fused add would make it one rounding.
  // dweight (OC, C) fp32 += dout (N, OC)ᵀ · inp (N, C): ACCUMULATED (beta = 1); may be nullptr.
  void matmul_backward(uint16_t* dinp, float* dweight, const uint16_t* dout, const uint16_t* inp,
                       const uint16_t* weight, int64_t N, int64_t C, int64_t OC, bool accumulate_dinp, Stream stream);

  // out (M, N) row-major = alpha · a (M, K) · b (N, K)ᵀ with FP32 accumulation, out BF16 or F32:
  // OVERWRITTEN, or added to (beta = 1) when accumulate. alpha: one device float (the product
  // of per-tensor factors a quantized GEMM applies at the end), or nullptr for 1. Operands are
  // both BF16 or both FP8; FP8 runs on Hopper's FP8 tensor cores (both k_major, at most one
  // E5M2), per-tensor scale_inv as cuBLASLt's scalar scales, 1x128 / 128x128 block scales
  // (cuBLAS 12.9+ on sm_90) relaid into the layout cuBLASLt reads in a buffer this Blas owns.
  // fast_accumulation (FP8 only): the FP8 tensor cores keep the running sum in their own
  // reduced-precision accumulator instead of promoting it to FP32 after every K block
  // (cuBLASLt's FAST_ACCUM; Transformer Engine's choice for fprop, not for dgrad or wgrad).
  // Per-tensor scales only: with block scales cuBLAS 13.0 on sm_90 answers "not supported"
  // (measured on the H100), so asking for it there is an error.
  void gemm(void* out, DType out_dtype, const GemmOperand& a, const GemmOperand& b, int64_t M, int64_t N, int64_t K,
            const float* alpha, bool accumulate, Stream stream, bool fast_accumulation = false);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// ---- GEMV: the decode step's matmul ---------------------------------------------------------

// out (N, OC) = x (N, C) bf16 · w (OC, C)ᵀ bf16 (+ bias (OC) bf16, nullable), FP32 accumulation,
// out BF16 (one rounding of the FP32 sum plus bias) or F32; OVERWRITTEN. For a few rows
// (N <= kGemvMaxRows: a decode step's tokens), where the weight is read once and the time is its
// bytes over the memory bandwidth: cuBLASLt's kernels for such shapes reached 58 % of the copy
// bandwidth over Llama-3.2-1B's layers on the H100 (bench_infer). One warp per output row at a
// time; lane l multiplies the row's 16-byte pieces l, l + 32, ... by x's (weights read with a
// streaming hint, x through L1), then warp_sum: deterministic, independent of the grid. Needs
// C % 8 == 0 and x, w 16-byte aligned (gemv_bf16_supported).
inline constexpr int64_t kGemvMaxRows = 8;
bool gemv_bf16_supported(const uint16_t* x, const uint16_t* w, int64_t N, int64_t C);
void gemv_bf16(void* out, DType out_dtype, const uint16_t* x, const uint16_t* w, const uint16_t* bias, int64_t N,
               int64_t C, int64_t OC, Stream stream);

// Producer amax: the ops below whose output a quantizer may read next take an optional
// `amax` (device float, zeroed by the caller): when non-null, max |value| of the output as
// stored (BF16) is folded into it with atomicMax, so a per-tensor quantizer (FP8 current
// scaling) needs no pass of its own to find it. NaN does not raise it: the quantizer reading
// the tensor counts non-finite values.

// ---- RMSNorm --------------------------------------------------------------------------

// Per row n: rstd[n] = 1 / sqrt(mean_c(inp[n,c]^2) + eps); out[n,c] = (inp[n,c] * rstd[n]) * weight[c].
// out (N, C) bf16 OVERWRITTEN, rstd (N) fp32 saved for the backward, inp (N, C) bf16, weight (C) bf16.
void rmsnorm_forward(uint16_t* out, float* rstd, const uint16_t* inp, const uint16_t* weight, int64_t N, int64_t C,
                     float eps, Stream stream, float* amax = nullptr);

// With xhat = inp * rstd and g = dout * weight:
//   dinp (N, C) bf16 += rstd * (g - xhat * mean_c(g * xhat))    ACCUMULATED (one rounding)
//   dweight (C) fp32 += sum_n dout * xhat                        ACCUMULATED
// Deterministic dweight: rows are cut into fixed chunks of 64; one pass writes each chunk's
// per-channel partial sum (rows in increasing order) to scratch (ceil(N/64), C), a second
// pass adds the chunks per channel in a fixed order (32 runs of consecutive chunks, each in
// increasing order, then the runs in increasing order), then adds that into dweight.
size_t rmsnorm_backward_scratch_bytes(int64_t N, int64_t C);
// amax_dinp: of dinp after the accumulation.
void rmsnorm_backward(uint16_t* dinp, float* dweight, const uint16_t* dout, const uint16_t* inp,
                      const uint16_t* weight, const float* rstd, int64_t N, int64_t C, void* scratch, Stream stream,
                      float* amax_dinp = nullptr);

// x (N, C) bf16 += delta (N, C) bf16 (residual_forward's rounding), then out = rmsnorm_forward of
// the new x: the two ops in one pass, the same bits. out, rstd as rmsnorm_forward's. delta and
// out must not overlap x (an error says so).
void residual_rmsnorm_forward(uint16_t* out, float* rstd, uint16_t* x, const uint16_t* delta, const uint16_t* weight,
                              int64_t N, int64_t C, float eps, Stream stream);

// ---- rotary position embedding (RoPE), HF rotate_half -----------------------------------

// out, inp (B, T, NH, HS) bf16; pass NKV as NH for the keys; HS even. Pair (i, i + HS/2) at
// position t is rotated by angle = float(t) * inv_freq, inv_freq = 1 / theta^(2i/HS) in FP32
// (CUDA's powf/sincosf: a few ulp from glibc's). out may equal inp (in place).
void rope_forward(uint16_t* out, const uint16_t* inp, int64_t B, int64_t T, int64_t NH, int64_t HS, float theta,
                  Stream stream);

// dinp (B, T, NH, HS) bf16 += the inverse rotation of dout: ACCUMULATED (one rounding), or
// OVERWRITTEN with accumulate = false (no memset and no read of dinp). amax: of dinp as stored.
void rope_backward(uint16_t* dinp, const uint16_t* dout, int64_t B, int64_t T, int64_t NH, int64_t HS, float theta,
                   Stream stream, float* amax = nullptr, bool accumulate = true);

// The same rotations with the inverse frequencies given (cpu::rope_forward / rope_backward's
// table versions): inv_freq (HS/2) fp32 in device memory, angle = float(t) * inv_freq[i] — the
// CPU op's FP32 product for the same table, so only sincosf's few ulp differ. RoPE scaling:
// model::ModelConfig::rope_inv_freq(), uploaded once by the caller.
void rope_forward(uint16_t* out, const uint16_t* inp, int64_t B, int64_t T, int64_t NH, int64_t HS,
                  const float* inv_freq, Stream stream);
void rope_backward(uint16_t* dinp, const uint16_t* dout, int64_t B, int64_t T, int64_t NH, int64_t HS,
                   const float* inv_freq, Stream stream, float* amax = nullptr, bool accumulate = true);

// ---- causal grouped-query attention (flash-style, no T x T matrix in memory) --------------

// out (B, T, NH, HS) bf16 OVERWRITTEN; lse (B, NH, T) fp32 the log-sum-exp of each row's
// scaled scores, saved for the backward; q (B, T, NH, HS), k, v (B, T, NKV, HS) bf16.
// Query head h reads KV head h / (NH / NKV). HS must be 32, 64 or 128.
// amax: producer amax of out. window: a sliding window as cpu::attention_forward's (query t sees
// keys t2 <= t with t - t2 < window; 0: all); key tiles wholly outside it are skipped. Window 0
// (or >= T) runs the kernels' instance without the window, the code they had before it: the
// same bits.
// cu_seqlens (B + 1, device int32, nondecreasing from 0; nullable): B sequences of different
// lengths packed row after row (inference's prefill of prompts of mixed lengths, no padding):
// sequence b is rows [cu_seqlens[b], cu_seqlens[b + 1]) of q, k, v and out, T the longest of them
// (lse stays (B, NH, T), rows past a sequence's length unwritten). Each sequence's bits are those
// it gets alone (B = 1, T its length). rows: with cu_seqlens, cu_seqlens[B] — the packed rows that
// q, k, v and out hold (the caller packed them; the kernels' TMA maps must not read past them).
// kernel: automatic picks the Hopper kernel (wgmma + TMA, FlashAttention-3's scheme) on an sm_90
// GPU for HS 64 and 128 without a window and with 16-byte aligned tensors, the FlashAttention-2
// kernel (mma.sync) otherwise; mma_sync or wgmma force one (wgmma where it cannot run: an error).
// The two agree within BF16 tolerance (their key tiles differ: 64 and 128 keys), each is
// deterministic.
enum class AttentionKernel { automatic, mma_sync, wgmma };
void attention_forward(uint16_t* out, float* lse, const uint16_t* q, const uint16_t* k, const uint16_t* v, int64_t B,
                       int64_t T, int64_t NH, int64_t NKV, int64_t HS, Stream stream, float* amax = nullptr,
                       int64_t window = 0, const int32_t* cu_seqlens = nullptr, int64_t rows = 0,
                       AttentionKernel kernel = AttentionKernel::automatic);

// dq (B, T, NH, HS), dk, dv (B, T, NKV, HS) bf16 OVERWRITTEN. dout, out (B, T, NH, HS) bf16
// (out: attention_forward's), lse (B, NH, T) fp32 (attention_forward's). scratch holds
// D = rowsum(dout * out) (B, NH, T) fp32. Deterministic: dk/dv by one CTA per (b, kv head, key
// tile) looping over the group's query heads and query tiles in order; dq by one CTA per
// (b, head, query tile) looping over key tiles (probabilities recomputed; no atomics).
// amax_dv: producer amax of dv. window: the forward's (tiles outside it skipped).
size_t attention_backward_scratch_bytes(int64_t B, int64_t T, int64_t NH);
void attention_backward(uint16_t* dq, uint16_t* dk, uint16_t* dv, const uint16_t* dout, const uint16_t* out,
                        const uint16_t* q, const uint16_t* k, const uint16_t* v, const float* lse, int64_t B, int64_t T,
                        int64_t NH, int64_t NKV, int64_t HS, void* scratch, Stream stream, float* amax_dv = nullptr,
                        int64_t window = 0);

// ---- SwiGLU ---------------------------------------------------------------------------

// out (N, F) = silu(gate) * up, silu(x) = x / (1 + exp(-x)); n = N * F elements, bf16.
void swiglu_forward(uint16_t* out, const uint16_t* gate, const uint16_t* up, int64_t n, Stream stream,
                    float* amax = nullptr);

// dgate = dout * up * s * (1 + gate * (1 - s)), s = sigmoid(gate); dup = dout * silu(gate).
// dgate, dup (n) bf16 OVERWRITTEN; dout, gate, up (n) bf16.
void swiglu_backward(uint16_t* dgate, uint16_t* dup, const uint16_t* dout, const uint16_t* gate, const uint16_t* up,
                     int64_t n, Stream stream, float* amax_dgate = nullptr, float* amax_dup = nullptr);

// out (N, F) = silu(gu[:, :F]) * gu[:, F:] for gu (N, 2F) bf16, the rows of a fused gate/up
// projection: swiglu_forward's values on the two halves of each row.
void swiglu_rows(uint16_t* out, const uint16_t* gu, int64_t N, int64_t F, Stream stream);

// ---- token embedding -------------------------------------------------------------------

// out[b,t,:] = wte[tokens[b,t], :]. out (B, T, C) bf16 OVERWRITTEN; tokens (B, T) int32;
// wte (V, C) bf16. A token outside [0, V) gives a zero row and sets kStatusBadToken in *status
// (status may be nullptr).
void encoder_forward(uint16_t* out, const int32_t* tokens, const uint16_t* wte, int64_t B, int64_t T, int64_t C,
                     int64_t V, uint32_t* status, Stream stream);

// dwte[tokens[b,t], :] += dout[b,t,:]: dwte (V, C) fp32 ACCUMULATED, dout (B, T, C) bf16.
// Deterministic and in the CPU op's order, so the bits equal cpu::encoder_backward's: a stable
// radix sort (CUB) of (token, position) pairs groups each token's positions in increasing order;
// the sorted sequence is cut into chunks of cpu::kEncoderChunk; a token's rows inside one chunk
// are summed from zero in order, and its chunk sums added into dwte in order — one block per
// chunk, so a very frequent token is not one serial chain. Out-of-range tokens are skipped and
// set kStatusBadToken.
size_t encoder_backward_scratch_bytes(int64_t B, int64_t T, int64_t C, int64_t V);
void encoder_backward(float* dwte, const uint16_t* dout, const int32_t* tokens, int64_t B, int64_t T, int64_t C,
                      int64_t V, void* scratch, uint32_t* status, Stream stream);

// ---- residual ----------------------------------------------------------------------------

// out = a + b, n elements bf16. out may equal a or b.
void residual_forward(uint16_t* out, const uint16_t* a, const uint16_t* b, int64_t n, Stream stream);

// ---- bias (a linear layer's: q/k/v_proj with attention_bias) -------------------------------------

// out (N, OC) bf16 += bias (OC) fp32, in place: the FP32 sum of the stored value and the bias,
// rounded once (cpu::scale_rows_bias(out, out, nullptr, bias) on the BF16 values).
void bias_forward(uint16_t* out, const float* bias, int64_t N, int64_t OC, Stream stream);

// dbias (OC) fp32 += sum_n dout (N, OC) bf16: ACCUMULATED (cpu::bias_backward). Deterministic,
// as rmsnorm_backward's dweight: fixed chunks of 64 rows each summed in increasing order into
// scratch (ceil(N/64), OC), then the chunks added per column in a fixed order (32 runs of
// consecutive chunks, each in increasing order, then the runs in increasing order).
size_t bias_backward_scratch_bytes(int64_t N, int64_t OC);
void bias_backward(float* dbias, const uint16_t* dout, int64_t N, int64_t OC, void* scratch, Stream stream);

// ---- fused cross-entropy -------------------------------------------------------------------

// Per row n of logits (N, V) bf16: losses[n] (fp32) = logsumexp(row) - row[targets[n]] (max
// subtracted first), and dlogits (N, V) bf16 = (softmax(row) - onehot(targets[n])) * dloss_scale,
// OVERWRITTEN. dlogits may equal logits (written in place). Row values are read as FP32, never
// stored as FP32. A target outside [0, V) sets kStatusBadTarget in *status (may be nullptr),
// gives losses[n] = NaN and a zero gradient row.
void crossentropy_forward_backward(float* losses, uint16_t* dlogits, const uint16_t* logits, const int32_t* targets,
                                   int64_t N, int64_t V, float dloss_scale, uint32_t* status, Stream stream);

// ---- optimizer --------------------------------------------------------------------------------

// One AdamW step, n elements, step >= 1, the CPU op's formula and operation order with every
// FP32 operation rounded separately (no FMA contraction), so params, m, v equal the CPU op's
// bits. params (n) fp32 updated, params_bf16 (n) = the refreshed BF16 copy (RNE), grads, m, v
// (n) fp32.
void adamw_update(float* params, uint16_t* params_bf16, const float* grads, float* m, float* v, int64_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int64_t step, Stream stream);

// *out (one device double) = sum_i grads[i]^2 in double over fixed 4096-element chunks whose
// partial sums are added in order: exactly cpu::global_norm's arithmetic, so
// sqrt(*out) == cpu::global_norm(grads, n) bit for bit. scratch: ceil(n / 4096) doubles.
size_t global_norm_scratch_bytes(int64_t n);
void global_norm_squared(double* out, const float* grads, int64_t n, void* scratch, Stream stream);

// ---- conversions ----------------------------------------------------------------------------------

// out (n) bf16 = RNE(in (n) fp32);  out (n) fp32 = in (n) bf16 (exact).
void convert_f32_to_bf16(uint16_t* out, const float* in, int64_t n, Stream stream);
void convert_bf16_to_f32(float* out, const uint16_t* in, int64_t n, Stream stream);

// ---- inference ------------------------------------------------------------------------------------
//
// The twins of cpu:: section "inference" (src/kernels/cpu/ops.hpp: the formulas, the cache layout
// (slots, max_ctx, NKV, HS) or paged (KvPages, nvfp4/kv_pages.hpp: the table in device memory), and
// the extra legend). Activations and caches BF16; slot, pos, rows int32 and inv_freq, row_factor
// FP32, all in device memory. Rows whose slot or position is outside the cache are skipped (their
// cache rows and outputs are not touched by kv_append; their attention output is zeros) and set
// kStatusBadPosition in *status (nullable), as does a position whose block the table does not give
// (not written; read as zeros): the CPU ops throw.

// In place, x (N, NH, HS) bf16; pair i of row n rotates by float(pos[n]) * inv_freq[i] (sincosf).
void rope_rows(uint16_t* x, const int32_t* pos, const float* inv_freq, int64_t N, int64_t NH, int64_t HS,
               Stream stream);

// out (N, OC) bf16 = RNE(in (N, OC) fp32 * row_factor[n] + bias[o]), the product and the sum each
// rounded to FP32 as on the CPU (no FMA), so out equals RNE of cpu::scale_rows_bias's value.
// row_factor (N) fp32 and bias (OC) bf16 nullable (skipped, not 1 and 0). in: a GEMM's FP32 output.
void scale_rows_bias_to_bf16(uint16_t* out, const float* in, const float* row_factor, const uint16_t* bias, int64_t N,
                             int64_t OC, Stream stream);

// out (n, C) bf16 = in[rows[i], :], in (n_in, C) bf16. An index outside [0, n_in) gives a zero row
// and sets kStatusBadRow.
void gather_rows(uint16_t* out, const uint16_t* in, const int32_t* rows, int64_t n, int64_t n_in, int64_t C,
                 uint32_t* status, Stream stream);

// The attention inputs of a step from the q/k/v projections, in one launch: q (N, NH, HS),
// k, v (N, NKV, HS) bf16 OVERWRITTEN with q = rope(q_norm(q_in)), k = rope(k_norm(k_in)), v = v_in,
// and k, v appended to the caches as kv_append does. Row n of q_in starts at q_in + n * q_ld, of
// k_in / v_in at n * kv_ld (a fused projection's (N, QD + 2 KD) output: q_in = qkv, k_in = qkv + QD,
// v_in = qkv + QD + KD, both strides QD + 2 KD); q == q_in (in place) when q_ld = NH * HS, likewise
// k, v. q_norm, k_norm (HS) bf16 nullable (no norm): rmsnorm_forward over each head (eps), the same
// loop and reduction, so the same bits; RoPE as rope_rows. Each step's result is rounded to BF16 as
// the separate ops store it: q, k, v and the caches equal rmsnorm_forward + rope_rows + kv_append
// bit for bit. HS even, at most 256.
void qkv_rows(uint16_t* q, uint16_t* k, uint16_t* v, const uint16_t* q_in, const uint16_t* k_in, const uint16_t* v_in,
              int64_t q_ld, int64_t kv_ld, const uint16_t* q_norm, const uint16_t* k_norm, float eps,
              const int32_t* pos, const float* inv_freq, uint16_t* k_cache, uint16_t* v_cache, const int32_t* slot,
              int64_t N, int64_t NH, int64_t NKV, int64_t HS, int64_t slots, int64_t max_ctx, uint32_t* status,
              Stream stream, const KvPages& pages = {});

// k_cache[slot[n], pos[n]] = k[n], v_cache likewise: k, v (N, NKV, HS) bf16. Rows must name
// distinct (slot, pos) pairs (the CPU op checks; here one of two such rows wins, unspecified).
void kv_append(uint16_t* k_cache, uint16_t* v_cache, const uint16_t* k, const uint16_t* v, const int32_t* slot,
               const int32_t* pos, int64_t N, int64_t NKV, int64_t HS, int64_t slots, int64_t max_ctx,
               uint32_t* status, Stream stream, const KvPages& pages = {});

// out (N, NH, HS) bf16 from q (N, NH, HS) bf16 and the caches, FP32 math on the CUDA cores. HS
// even, at most 256. One CTA per (row, kv head) serves the group's query heads (up to 8 per CTA;
// a larger group is split over CTAs), so each K/V row is read once per group; its 4 warps take
// the visible keys in tiles of 32 (tile i to warp i % 4), keep an online softmax each, and are
// combined in warp order: deterministic, and a row's bits do not depend on the other rows of the
// batch. Scores are dot products in FP32 from BF16 inputs (not rounded to BF16).
void attention_cache(uint16_t* out, const uint16_t* q, const uint16_t* k_cache, const uint16_t* v_cache,
                     const int32_t* slot, const int32_t* pos, int64_t N, int64_t NH, int64_t NKV, int64_t HS,
                     int64_t slots, int64_t max_ctx, int64_t window, float scale, uint32_t* status, Stream stream,
                     const KvPages& pages = {});

// cpu::nvfp4_quantize_rows on BF16 rows, bit for bit: out (N, K) bf16 holds the decoded values
// without the tensor factor (exact in BF16), or the input row (fallback), or NaN; row_factor (N)
// fp32; row_flags (N) (cpu::kRowNonFinite, cpu::kRowSaturated) nullable; *flagged_count (nullable)
// += the number of rows with a flag. The format core's functions (src/format/nvfp4.hpp), compiled
// without FMA contraction. One warp per row. out may equal in.
void nvfp4_quantize_rows(uint16_t* out, float* row_factor, uint8_t* row_flags, const uint16_t* in, int64_t N, int64_t K,
                         const fmt::Nvfp4InputScale& input, bool fallback, uint32_t* flagged_count, Stream stream);

}  // namespace nvfp4::cuda
