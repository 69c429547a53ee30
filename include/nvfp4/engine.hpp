// The inference engine: a model from a Hugging Face folder (nvfp4/hf_model.hpp) run token by
// token with a KV cache, several sequences of different lengths in one batch, with its linear
// layers at a precision chosen at load. Two implementations of one interface: the CPU reference
// (FP32 activations and accumulation, OpenBLAS) and CUDA (BF16 activations, FP32 accumulation,
// cuBLASLt; nvfp4/engine_cuda.hpp).
//
// One forward() runs a batch of chunks: each chunk appends tokens to one sequence slot (a fresh
// prompt, the rest of a long one, or one decoded token), and every token attends to its own
// sequence's cache only. The linear layers see all the batch's tokens as the rows of one GEMM;
// nothing in a token's result depends on its batch neighbours (w4a4 quantizes each activation row
// with its own scale), except fp8's per-tensor activation scale, which is the batch's.
//
// Precisions (applied to the blocks' linear layers; embeddings, norms, attention and the LM
// head stay in the engine's own precision — FP32 on the CPU, BF16 on CUDA — unless asked):
//   fp32   CPU reference: FP32 weights and activations.
//   bf16   CUDA: BF16 weights and activations, FP32 accumulation.
//   w4a16  weights NVFP4 (1x16 blocks along K, E4M3 block scales, FP32 tensor scale from the
//          weight's amax; round to nearest through the format core), activations unquantized.
//   w4a4   w4a16's weights and each activation row quantized to NVFP4 at run time: E4M3 scale per
//          16 values, the per-tensor scale from a calibrated input amax when one is set, else the
//          row's own amax. GEMM operands are the codes x block scales decoded exactly, the FP32
//          tensor factors applied to the FP32 product: what Blackwell's FP4 tensor cores compute.
//          Runtime outlier guard (fallback): a row holding NaN/Inf, or (with a calibrated amax)
//          a block the scale cannot represent, is computed in w4a16 instead and counted.
//   fp8    E4M3 weights and activations, per-tensor scales (current scaling).
//
// KV cache (EngineOptions::kv_cache): the engine's own precision, or FP8 E4M3 with one FP32 decode
// scale per layer for K and one for V (vLLM's and ModelOpt's k_scale / v_scale): each K row (after
// RoPE) and V row is stored as e4m3_rne_satfinite(x / scale) when it is appended, and attention
// reads e4m3 x scale. Scales come from the checkpoint (HfModel::kv_cache_scales), else 1.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nvfp4/model.hpp"

namespace nvfp4::infer {

class HfModel;

enum class Precision : uint8_t { fp32, bf16, w4a16, w4a4, fp8 };
std::string_view precision_name(Precision p);
// "fp32", "bf16", "w4a16", "w4a4", "fp8"; anything else is an nvfp4::Error naming `option`.
Precision parse_precision(std::string_view name, std::string_view option = "--precision");
bool is_quantized(Precision p);  // w4a16, w4a4, fp8

// The KV cache's number format. model: the engine's own precision (FP32 on the CPU, BF16 on CUDA);
// fp8: E4M3 with per-layer FP32 decode scales k_scale / v_scale (see the header comment).
enum class KvCache : uint8_t { model, fp8 };
std::string_view kv_cache_name(KvCache k);  // "model", "fp8"
// "model" or "fp8"; anything else is an nvfp4::Error naming `option`.
KvCache parse_kv_cache(std::string_view name, std::string_view option = "--kv-cache");

// Calibration (src/ptq/): sees every linear layer's input rows as the layer receives them, FP32,
// before any activation quantization — (N, C) row-major, linear in model::linear_refs() order.
// The q/k/v projections of a block see the same rows, and so do gate/up.
struct LinearInputObserver {
  virtual ~LinearInputObserver() = default;
  virtual void observe(size_t linear, const float* rows, int64_t N, int64_t C) = 0;
};

// Calibration of an FP8 KV cache (src/ptq/): sees every layer's new K rows (after the q/k norms and
// RoPE) and V rows, FP32, exactly as they are appended to the cache and before any FP8 rounding —
// k and v (N, KD) row-major, KD = kv heads x head size; layer in 0 .. n_layer - 1.
struct KvCacheObserver {
  virtual ~KvCacheObserver() = default;
  virtual void observe(int layer, const float* k, const float* v, int64_t N, int64_t KD) = 0;
};

struct EngineOptions {
  Precision precision = Precision::fp32;
  // The KV cache's format. fp8 runs on the CPU engine only for now (the CUDA engine refuses it).
  KvCache kv_cache = KvCache::model;
  // Linear layers kept at the engine's own precision: globs (fnmatch, `*` matches dots too) over
  // Hugging Face module names, e.g. "model.layers.0.*", "*.down_proj". A pattern that names no
  // layer is an error (a typo would otherwise quantize everything silently).
  std::vector<std::string> keep_bf16;
  bool quantize_lm_head = false;  // the LM head at `precision` too
  bool fallback = true;           // w4a4's runtime outlier guard
  int max_sequences = 1;          // KV cache slots
  int max_context = 0;            // tokens per slot; 0: the model's max_position_embeddings, at most 4096
  // The KV cache is paged (as vLLM's): a pool of kv_blocks blocks of kv_block_size positions
  // (every layer's K and V), which the slots take as their sequences grow and give back on reset.
  // kv_blocks = 0: enough for every slot to reach max_context (no sharing needed); fewer lets many
  // slots of mixed lengths share less memory, and forward() throws "KV cache full" (caches
  // unchanged) when a batch needs more blocks than are free.
  int kv_block_size = 16;
  int kv_blocks = 0;
  // CUDA: a block's q/k/v projections one GEMM and its gate/up projections one GEMM where they
  // all run in BF16, and the row ops between the GEMMs fused (q/k norms, RoPE and the cache append
  // in one launch; each residual add with the next RMSNorm). false runs every op on its own, as
  // the CPU engine does: the benchmarks and tests compare the two.
  bool fuse = true;
  // CUDA: NVFP4 layers (w4a16, w4a4) of up to 64 tokens run the fused GEMV, which reads the 4-bit
  // weight once (cuda::nvfp4_gemv); false decodes the weight to BF16 before a cuBLAS GEMM for every
  // row count — the reference path the benchmarks and tests compare it with.
  bool fused_nvfp4 = true;
  // CUDA, with fused_nvfp4: NVFP4 layers of more than 64 tokens (prefill) run the fused
  // warp-specialized GEMM (cuda::nvfp4_gemm, Nvfp4GemmKernel::wgmma_ws) instead of decoding the
  // weight for cuBLAS. Off by default: slower (H100, docs/perf.md run 8: the kernel at 0.59-0.70x
  // cuBLAS BF16 at 4,096 tokens, where decoding the weight and cuBLAS measured 0.90-0.92x).
  bool fused_nvfp4_prefill = false;
  // Every forward reports each linear layer's input rows to it: FP32 on the CPU, the BF16 rows
  // (exactly, as FP32) on CUDA, where the projections then run apart (no fused groups) and no step
  // is replayed from a CUDA graph — the host reads every layer's rows.
  LinearInputObserver* observer = nullptr;
  // Every forward reports each layer's K and V rows to it as they are appended (CPU engine).
  KvCacheObserver* kv_observer = nullptr;
};

// Per linear layer, in model::linear_refs() order (q, k, v, o, gate, up, down per block, then
// lm_head): its Hugging Face module name and the precision it runs at.
struct LinearPlan {
  std::string name;  // "model.layers.3.self_attn.q_proj", "lm_head"
  Precision precision = Precision::fp32;
};
std::vector<LinearPlan> resolve_linear_plan(const model::ModelConfig& c, const EngineOptions& o, Precision base);

// The w4a4 outlier guard's counts, per linear layer (linear_refs() order) since the last reset.
struct GuardStats {
  std::vector<int64_t> rows;       // activation rows quantized at run time
  std::vector<int64_t> fallbacks;  // of them, rows recomputed in w4a16
  int64_t total_rows() const;
  int64_t total_fallbacks() const;
  double rate() const;  // total_fallbacks / total_rows (0 when no rows)
};

// One sequence's new tokens in a batch.
struct SeqChunk {
  int slot = 0;                       // 0 .. max_sequences - 1
  std::span<const int32_t> tokens;    // appended at positions length(slot) ...
  bool all_logits = false;            // logits of every token (scoring) or of the last only (generation)
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual const model::ModelConfig& config() const = 0;
  virtual std::string_view device() const = 0;  // "cpu", "cuda"
  virtual const std::vector<LinearPlan>& linear_plan() const = 0;
  virtual int max_sequences() const = 0;
  virtual int max_context() const = 0;
  virtual int length(int slot) const = 0;  // tokens in the slot's cache
  virtual void reset(int slot) = 0;        // empties it (its KV blocks back to the pool)
  virtual int kv_block_size() const = 0;   // positions a KV cache block
  virtual int kv_blocks() const = 0;       // blocks in the pool
  virtual int kv_free_blocks() const = 0;  // of them, owned by no slot
  virtual KvCache kv_cache() const = 0;    // the cache's format
  // fp8: each layer's decode scales (L each), from the checkpoint or 1; empty for KvCache::model.
  virtual const std::vector<float>& kv_k_scales() const = 0;
  virtual const std::vector<float>& kv_v_scales() const = 0;

  // Runs the chunks (at most one per slot; each slot's length + tokens <= max_context; tokens in
  // [0, vocab)) and appends them to the caches. `logits` becomes (rows, vocab) FP32, rows in chunk
  // order: every token of an all_logits chunk, the last token of the others. Throws nvfp4::Error
  // naming the chunk for a bad slot, length or token; the caches are unchanged then. The CPU
  // engine also throws when the activations overflow FP32 (the final norm's input has an infinite
  // or NaN RMS); the lengths are unchanged then.
  virtual void forward(std::span<const SeqChunk> chunks, std::vector<float>& logits) = 0;

  // Changes the precision of linear layers: one entry per layer (linear_plan() order). The
  // weights of a changed layer are read again from the model and quantized.
  virtual void set_linear_precisions(std::span<const Precision> p) = 0;
  // A calibrated per-tensor input amax for linear layer i (w4a4: its activation tensor scale
  // instead of each row's amax); 0 removes it.
  virtual void set_input_amax(size_t linear, float amax) = 0;
  // From now on, every forward appends linear layer i's output rows (N, OC) as FP32 to *sink;
  // nullptr stops it. For per-layer sensitivity (the layer's relative output error).
  virtual void capture_linear_output(size_t linear, std::vector<float>* sink) = 0;
  virtual GuardStats guard_stats() const = 0;
  virtual void reset_guard_stats() = 0;
  // Bytes the engine holds: weights, KV cache and scratch (device memory for CUDA).
  virtual int64_t memory_bytes() const = 0;
};

// The CPU reference engine over `model` (which must outlive it). Precisions fp32, w4a16, w4a4,
// fp8 (bf16 is the CUDA engine's; on the CPU it is an error saying so).
std::unique_ptr<Engine> make_cpu_engine(const HfModel& model, const EngineOptions& o);
// The CUDA engine on the current device (src/infer/engine_cuda.cu): precisions bf16, w4a16,
// w4a4, fp8. Throws nvfp4::Error when this build has no CUDA or there is no GPU.
std::unique_ptr<Engine> make_cuda_engine(const HfModel& model, const EngineOptions& o);
// One of them by device name, "cpu" or "cuda".
std::unique_ptr<Engine> make_engine(const HfModel& model, const EngineOptions& o, std::string_view device);

// ---- shared by the implementations ------------------------------------------------------------

// The batch's rows: slot and position of every token, which rows give logits. Validates the
// chunks against the engine's slots (throws as forward() documents).
struct BatchRows {
  std::vector<int32_t> tokens, slot, pos;
  std::vector<int32_t> out_rows;  // rows whose logits forward() returns, in order
  std::vector<int> new_length;    // per chunk: the slot's length after it
  std::vector<int> chunk_slot;    // per chunk: its slot
};
BatchRows batch_rows(std::span<const SeqChunk> chunks, std::span<const int> lengths, int max_context, int vocab);

// What the CUDA engine does not run yet: KvCache::fp8 and a KvCacheObserver are nvfp4::Errors
// saying so (make_cuda_engine calls it first, in a build with or without CUDA, GPU or not).
void check_cuda_kv_cache(const EngineOptions& o);

}  // namespace nvfp4::infer
