// The CUDA engine (include/nvfp4/engine.hpp): BF16 weights, activations and KV cache, FP32
// accumulation in every GEMM (cuBLASLt) and reduction. Quantized linear layers keep their
// weights quantized on the device (NVFP4 codes + E4M3 block scales + amax, or FP8 + scale) and
// decode them exactly to BF16 right before each GEMM, the per-tensor factors applied to the FP32
// product — "decode-then-GEMM"; the fused kernels of issue 17 replace it.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "model/device_array.cuh"
#include "infer/engine_base.hpp"
#include "nvfp4/cuda_ops.hpp"
#include "nvfp4/cuda_quantize.hpp"
#include "nvfp4/cuda_runtime_info.hpp"
#include "nvfp4/engine.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_model.hpp"

namespace nvfp4::infer {

namespace {

using bf16 = uint16_t;
using cuda::check;
using model::DeviceArray;
using model::LinearKind;

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

class CudaEngine final : public EngineBase {
 public:
  CudaEngine(const HfModel& m, const EngineOptions& o)
      : EngineBase(m, o, Precision::bf16, Precision::fp32, "the CPU reference's") {
    const auto inv = c_.rope_inv_freq();
    inv_freq_.alloc(inv.size(), bytes_);
    check(cudaMemcpy(inv_freq_.p, inv.data(), inv.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
    upload(idx_.embed, embed_);
    upload(idx_.norm, norm_);
    layers_.resize(static_cast<size_t>(c_.n_layer));
    for (int l = 0; l < c_.n_layer; ++l) {
      const auto& L = idx_.layers[l];
      Layer& d = layers_[l];
      upload(L.ln1, d.ln1);
      upload(L.ln2, d.ln2);
      if (L.q_norm >= 0) upload(L.q_norm, d.q_norm), upload(L.k_norm, d.k_norm);
      if (L.bq >= 0) upload(L.bq, d.bq), upload(L.bk, d.bk), upload(L.bv, d.bv);
    }
    lin_.resize(plan_.size());
    fallback_count_.alloc(plan_.size(), bytes_);
    fallback_count_.zero();
    rows_.assign(plan_.size(), 0);
    status_.alloc(1, bytes_);
    status_.zero();
    load_linears(plan_precisions(), /*all=*/true);
    const int64_t per_layer = int64_t(o.max_sequences) * max_ctx_ * c_.n_kv_head * c_.head_size();
    kc_.alloc(static_cast<size_t>(per_layer * c_.n_layer), bytes_);
    vc_.alloc(static_cast<size_t>(per_layer * c_.n_layer), bytes_);
    check(cudaDeviceSynchronize(), "loading the model");
    // A blocking stream: it waits for the legacy default stream's work and the synchronous copies
    // wait for it, and it can be captured into a CUDA graph.
    check(cudaStreamCreate(&stream_), "cudaStreamCreate");
  }
  ~CudaEngine() override {
    for (auto& g : graphs_) cudaGraphExecDestroy(g.exec);
    if (stream_) cudaStreamDestroy(stream_);
  }

  std::string_view device() const override { return "cuda"; }
  void set_linear_precisions(std::span<const Precision> p) override {
    check_precisions(p);
    load_linears(p, /*all=*/false);
    check(cudaDeviceSynchronize(), "quantizing weights");
    ++weights_version_;
  }
  void set_input_amax(size_t i, float amax) override { lin_.at(i).input_amax = amax; }
  GuardStats guard_stats() const override {
    GuardStats g;
    g.rows = rows_;
    std::vector<uint32_t> n(plan_.size());
    check(cudaMemcpy(n.data(), fallback_count_.p, n.size() * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
    for (uint32_t x : n) g.fallbacks.push_back(o_.fallback ? x : 0);
    return g;
  }
  void reset_guard_stats() override {
    std::fill(rows_.begin(), rows_.end(), 0);
    fallback_count_.zero();
  }
  int64_t memory_bytes() const override {
    int64_t n = bytes_;
    for (const auto& l : lin_) n += l.w.bytes() + l.codes.bytes() + l.scales.bytes() + l.factor.bytes();
    for (auto* a : {&x_, &h_, &q_, &k_, &v_, &att_, &g_, &u_, &qn_, &last_, &lnf_, &wdec_, &xq_, &xpad_, &head_out_})
      n += a->bytes();
    return n + y32_.bytes() + rstd_.bytes() + lse_.bytes() + rowf_.bytes() + logits_.bytes() + act_codes_.bytes() +
           act_scale_.bytes() + ints_.bytes();
  }

  void forward(std::span<const SeqChunk> chunks, std::vector<float>& logits) override;

 private:
  struct Layer {
    DeviceArray<bf16> ln1, ln2, q_norm, k_norm, bq, bk, bv;
  };
  struct Linear {
    Precision p = Precision::bf16;
    int64_t OC = 0, C = 0;
    float input_amax = 0.0f;
    DeviceArray<bf16> w;         // bf16: the weight
    DeviceArray<uint8_t> codes;  // w4a16 / w4a4: NVFP4 codes (OC, C/2); fp8: E4M3 (OC, C)
    DeviceArray<uint8_t> scales; // NVFP4 block scales (OC, C/16)
    DeviceArray<float> factor;   // [0] the weight's amax, [1] its decode factor (NVFP4 amax/2688; FP8 scale_inv)
  };

  void upload(int spec, DeviceArray<bf16>& d) {
    const auto& s = m_.specs()[spec];
    std::vector<bf16> h(static_cast<size_t>(s.numel));
    m_.read_bf16(static_cast<size_t>(spec), h);
    d.alloc(h.size(), bytes_);
    check(cudaMemcpy(d.p, h.data(), h.size() * 2, cudaMemcpyHostToDevice), "cudaMemcpy");
  }

  void load_linears(std::span<const Precision> p, bool all) {
    DeviceArray<bf16> staging;
    int64_t unused = 0;
    for (size_t i : change_precisions(p, all)) {
      Linear& L = lin_[i];
      const bool head = is_head(i);
      const int spec = linear_spec(i);
      const auto& s = m_.specs()[spec];
      L.OC = s.shape[0];
      L.C = s.shape[1];
      L.p = p[i];
      L.w = DeviceArray<bf16>();
      L.codes = DeviceArray<uint8_t>();
      L.scales = DeviceArray<uint8_t>();
      L.factor = DeviceArray<float>();
      if (p[i] == Precision::bf16) {
        if (head && c_.tie_embeddings) continue;  // reads embed_
        upload(spec, L.w);
        continue;
      }
      if (L.OC % 16 || L.C % 16) {
        throw Error("quantizing " + plan_[i].name + ": its shape " + std::to_string(L.OC) + " x " + std::to_string(L.C) +
                    " is not a multiple of 16 on both sides (keep it with --keep-bf16)");
      }
      upload(spec, staging);
      QuantizeOptions q;
      q.format = p[i] == Precision::fp8 ? Format::fp8_e4m3 : Format::nvfp4;
      const cuda::DeviceCopyBytes nb = cuda::device_copy_bytes(q, L.OC, L.C);
      L.codes.alloc(static_cast<size_t>(nb.codes), unused);
      if (nb.scales) L.scales.alloc(static_cast<size_t>(nb.scales), unused);
      L.factor.alloc(2, unused);
      L.factor.zero();
      cuda::DeviceCopy copy;
      copy.codes = L.codes.p;
      copy.scales = nb.scales ? L.scales.p : nullptr;
      copy.amax = L.factor.p;
      copy.scale_inv = q.format == Format::fp8_e4m3 ? L.factor.p + 1 : nullptr;
      cuda::quantize(staging.p, DType::BF16, L.OC, L.C, q, &copy, nullptr, {}, nullptr);
      if (q.format == Format::nvfp4) {  // the decode factor amax / 2688, applied as the GEMM's alpha
        float amax = 0;
        check(cudaMemcpy(&amax, L.factor.p, 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
        const float f = amax / 2688.0f;
        check(cudaMemcpy(L.factor.p + 1, &f, 4, cudaMemcpyHostToDevice), "cudaMemcpy");
      }
    }
  }

  const bf16* weight_bf16(Linear& L) {
    if (L.p == Precision::bf16) return L.w.p ? L.w.p : embed_.p;
    QuantizeOptions q;
    q.format = Format::nvfp4;
    cuda::DeviceCopy copy;
    copy.codes = L.codes.p;
    copy.scales = L.scales.p;
    copy.amax = L.factor.p;
    cuda::dequantize(copy, L.OC, L.C, q, /*apply_tensor_scale=*/false, wdec_.need(static_cast<size_t>(L.OC * L.C)),
                     DType::BF16, stream_);
    return wdec_.p;
  }

  // out (N, OC) bf16 = linear layer i of in (N, C) bf16 (+ bias), as its precision computes it.
  void linear(size_t i, bf16* out, const bf16* in, int64_t N, const DeviceArray<bf16>* bias) {
    Linear& L = lin_[i];
    const bf16* b = bias && bias->p ? bias->p : nullptr;
    if (L.p == Precision::bf16 && !b) {
      blas_.matmul_forward(out, in, weight_bf16(L), N, L.C, L.OC, stream_);
    } else if (L.p == Precision::fp8) {
      // Per-tensor FP8 of the activation (current scaling over the batch), rows padded to 16.
      const int64_t N16 = round_up(N, 16);
      bf16* xp = xpad_.need(static_cast<size_t>(N16 * L.C));
      check(cudaMemcpyAsync(xp, in, static_cast<size_t>(N * L.C) * 2, cudaMemcpyDeviceToDevice, stream_), "cudaMemcpy");
      if (N16 > N) check(cudaMemsetAsync(xp + N * L.C, 0, static_cast<size_t>((N16 - N) * L.C) * 2, stream_), "cudaMemset");
      QuantizeOptions q;
      q.format = Format::fp8_e4m3;
      cuda::DeviceCopy a;
      a.codes = act_codes_.need(static_cast<size_t>(N16 * L.C));
      a.amax = act_scale_.need(2);
      a.scale_inv = act_scale_.p + 1;
      cuda::quantize(xp, DType::BF16, N16, L.C, q, &a, nullptr, {}, stream_);
      cuda::GemmOperand A{a.codes, DType::F8_E4M3, true, a.scale_inv, {0, 0}};
      cuda::GemmOperand W{L.codes.p, DType::F8_E4M3, true, L.factor.p + 1, {0, 0}};
      float* y = y32_.need(static_cast<size_t>(N16 * L.OC));
      blas_.gemm(y, DType::F32, A, W, N16, L.OC, L.C, nullptr, false, stream_);
      cuda::scale_rows_bias_to_bf16(out, y, nullptr, b, N, L.OC, stream_);
    } else {
      const bf16* x = in;
      const float* rowf = nullptr;
      if (L.p == Precision::w4a4) {
        bf16* xq = xq_.need(static_cast<size_t>(N * L.C));
        float* rf = rowf_.need(static_cast<size_t>(N));
        cuda::nvfp4_quantize_rows(xq, rf, nullptr, in, N, L.C, L.input_amax, o_.fallback, fallback_count_.p + i,
                                  stream_);
        x = xq;
        rowf = rf;
      }
      const bf16* w = weight_bf16(L);
      const float* alpha = L.p == Precision::bf16 ? nullptr : L.factor.p + 1;
      float* y = y32_.need(static_cast<size_t>(N * L.OC));
      blas_.gemm(y, DType::F32, cuda::GemmOperand{x}, cuda::GemmOperand{w}, N, L.OC, L.C, alpha, false, stream_);
      cuda::scale_rows_bias_to_bf16(out, y, rowf, b, N, L.OC, stream_);
    }
    if (capturing(i)) {
      std::vector<bf16> h(static_cast<size_t>(N * L.OC));
      check(cudaMemcpy(h.data(), out, h.size() * 2, cudaMemcpyDeviceToHost), "cudaMemcpy");
      for (bf16 v : h) {
        const uint32_t bits = static_cast<uint32_t>(v) << 16;
        float f;
        std::memcpy(&f, &bits, 4);
        sink_->push_back(f);
      }
    }
  }

  int64_t bytes_ = 0;  // the fixed allocations
  cuda::Blas blas_;
  DeviceArray<float> inv_freq_;
  DeviceArray<bf16> embed_, norm_;
  std::vector<Layer> layers_;
  std::vector<Linear> lin_;
  DeviceArray<bf16> kc_, vc_;
  DeviceArray<uint32_t> fallback_count_, status_;
  std::vector<int64_t> rows_;
  // Scratch, grown as needed.
  DeviceArray<bf16> x_, h_, q_, k_, v_, att_, g_, u_, qn_, last_, lnf_, wdec_, xq_, xpad_, head_out_;
  DeviceArray<float> y32_, rstd_, lse_, rowf_, logits_, act_scale_;
  DeviceArray<uint8_t> act_codes_;
  DeviceArray<int32_t> ints_;

  // Decode steps (every chunk one token, no capture sink) replay a CUDA graph of the layers per
  // batch size: hundreds of small launches per token become one. A graph is re-captured when the
  // scratch buffers it was recorded with moved or the weights changed.
  struct DecodeGraph {
    int64_t n = 0;
    std::vector<const void*> buffers;
    int64_t weights_version = 0;
    cudaGraphExec_t exec = nullptr;
  };
  std::vector<const void*> buffer_pointers() const {
    return {x_.p, h_.p, q_.p, k_.p, v_.p, att_.p, g_.p, u_.p, qn_.p, last_.p, lnf_.p, wdec_.p, xq_.p, xpad_.p,
            head_out_.p, y32_.p, rstd_.p, lse_.p, rowf_.p, logits_.p, act_scale_.p, act_codes_.p, ints_.p};
  }
  void run_layers(int64_t N, int64_t R, bool flash, int64_t B, int64_t T);
  cudaStream_t stream_ = nullptr;
  std::vector<DecodeGraph> graphs_;
  int64_t weights_version_ = 0;
};

void CudaEngine::forward(std::span<const SeqChunk> chunks, std::vector<float>& logits) {
  const BatchRows b = batch_rows(chunks, len_, max_ctx_, c_.vocab);
  const int64_t N = static_cast<int64_t>(b.tokens.size()), V = c_.vocab, HS = c_.head_size();
  const int64_t R = static_cast<int64_t>(b.out_rows.size());

  // Token ids, slots, positions and output rows in one upload.
  std::vector<int32_t> host;
  host.reserve(static_cast<size_t>(3 * N + R));
  host.insert(host.end(), b.tokens.begin(), b.tokens.end());
  host.insert(host.end(), b.slot.begin(), b.slot.end());
  host.insert(host.end(), b.pos.begin(), b.pos.end());
  host.insert(host.end(), b.out_rows.begin(), b.out_rows.end());
  int32_t* ints = ints_.need(host.size());
  check(cudaMemcpyAsync(ints, host.data(), host.size() * 4, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync");

  // Flash attention for a batch of fresh prompts of one length (the prefill case), the cache
  // kernel otherwise.
  bool flash = (HS == 32 || HS == 64 || HS == 128);
  const int64_t T = static_cast<int64_t>(chunks[0].tokens.size());
  bool decode = true;
  for (const auto& ch : chunks) {
    flash = flash && len_[ch.slot] == 0 && static_cast<int64_t>(ch.tokens.size()) == T;
    decode = decode && ch.tokens.size() == 1;
  }
  flash = flash && T > 1 && (c_.sliding_window == 0 || T <= c_.sliding_window);
  const int64_t B = static_cast<int64_t>(chunks.size());

  // w4a4's rows, counted here (a replayed graph runs no host code).
  for (size_t i = 0; i < lin_.size(); ++i) {
    if (lin_[i].p == Precision::w4a4) rows_[i] += i + 1 == lin_.size() ? R : N;
  }
  DecodeGraph* graph = nullptr;
  if (decode && !sink_) {
    for (auto& g : graphs_) {
      if (g.n == N) graph = &g;
    }
  }
  if (graph && graph->exec && graph->buffers == buffer_pointers() && graph->weights_version == weights_version_) {
    check(cudaGraphLaunch(graph->exec, stream_), "cudaGraphLaunch");
  } else {
    run_layers(N, R, flash, B, T);
    if (decode && !sink_) {
      // Record this batch size's step (kernels are recorded, not run) for the next ones.
      if (!graph) graph = &graphs_.emplace_back();
      if (graph->exec) cudaGraphExecDestroy(graph->exec);
      graph->exec = nullptr;
      graph->n = N;
      cudaGraph_t g = nullptr;
      check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed), "cudaStreamBeginCapture");
      try {
        run_layers(N, R, flash, B, T);
      } catch (...) {
        cudaStreamEndCapture(stream_, &g);
        if (g) cudaGraphDestroy(g);
        throw;
      }
      check(cudaStreamEndCapture(stream_, &g), "cudaStreamEndCapture");
      check(cudaGraphInstantiate(&graph->exec, g, 0), "cudaGraphInstantiate");
      cudaGraphDestroy(g);
      graph->buffers = buffer_pointers();
      graph->weights_version = weights_version_;
    }
  }
  logits.resize(static_cast<size_t>(R * V));
  check(cudaMemcpyAsync(logits.data(), logits_.p, logits.size() * 4, cudaMemcpyDeviceToHost, stream_),
        "cudaMemcpyAsync logits");
  uint32_t st = 0;
  check(cudaMemcpyAsync(&st, status_.p, 4, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync");
  check(cudaStreamSynchronize(stream_), "engine forward");
  if (st) {
    status_.zero();
    throw Error("engine forward: the device reported status " + std::to_string(st) +
                " (a token, slot or position out of range); the batch was validated, so this is an internal error");
  }
  for (size_t i = 0; i < chunks.size(); ++i) len_[chunks[i].slot] = b.new_length[i];
}

// Every launch of one forward, on stream_ (capturable): embedding, the blocks, the final norm and
// the LM head into logits_ (R, V) FP32. ints_ holds tokens, slots, positions, output rows.
void CudaEngine::run_layers(int64_t N, int64_t R, bool flash, int64_t B, int64_t T) {
  const int64_t C = c_.d_model, F = c_.ffn(), V = c_.vocab;
  const int64_t NH = c_.n_head, NKV = c_.n_kv_head, HS = c_.head_size(), QD = NH * HS, KD = NKV * HS;
  const int64_t S = static_cast<int64_t>(len_.size()), per_layer = S * max_ctx_ * KD;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(HS)));
  const int32_t *tokens = ints_.p, *slot = ints_.p + N, *pos = ints_.p + 2 * N, *out_rows = ints_.p + 3 * N;
  cudaStream_t st = stream_;

  bf16 *x = x_.need(N * C), *h = h_.need(N * C), *q = q_.need(N * QD), *k = k_.need(N * KD), *v = v_.need(N * KD);
  bf16 *att = att_.need(N * QD), *g = g_.need(N * F), *u = u_.need(N * F);
  float* rstd = rstd_.need(static_cast<size_t>(N * NH));
  cuda::encoder_forward(x, tokens, embed_.p, 1, N, C, V, status_.p, st);
  for (int l = 0; l < c_.n_layer; ++l) {
    Layer& w = layers_[l];
    const size_t li = static_cast<size_t>(l) * 7;
    cuda::rmsnorm_forward(h, rstd, x, w.ln1.p, N, C, c_.norm_eps, st);
    linear(li + 0, q, h, N, &w.bq);
    linear(li + 1, k, h, N, &w.bk);
    linear(li + 2, v, h, N, &w.bv);
    if (c_.qk_norm) {
      bf16* t = qn_.need(static_cast<size_t>(N * QD));
      cuda::rmsnorm_forward(t, rstd, q, w.q_norm.p, N * NH, HS, c_.norm_eps, st);
      check(cudaMemcpyAsync(q, t, static_cast<size_t>(N * QD) * 2, cudaMemcpyDeviceToDevice, st), "cudaMemcpy");
      cuda::rmsnorm_forward(t, rstd, k, w.k_norm.p, N * NKV, HS, c_.norm_eps, st);
      check(cudaMemcpyAsync(k, t, static_cast<size_t>(N * KD) * 2, cudaMemcpyDeviceToDevice, st), "cudaMemcpy");
    }
    cuda::rope_rows(q, pos, inv_freq_.p, N, NH, HS, st);
    cuda::rope_rows(k, pos, inv_freq_.p, N, NKV, HS, st);
    bf16* kc = kc_.p + l * per_layer;
    bf16* vc = vc_.p + l * per_layer;
    cuda::kv_append(kc, vc, k, v, slot, pos, N, NKV, HS, S, max_ctx_, status_.p, st);
    if (flash) {
      cuda::attention_forward(att, lse_.need(static_cast<size_t>(B * NH * T)), q, k, v, B, T, NH, NKV, HS, st);
    } else {
      cuda::attention_cache(att, q, kc, vc, slot, pos, N, NH, NKV, HS, S, max_ctx_, c_.sliding_window, scale,
                            status_.p, st);
    }
    linear(li + 3, h, att, N, nullptr);
    cuda::residual_forward(x, x, h, N * C, st);
    cuda::rmsnorm_forward(h, rstd, x, w.ln2.p, N, C, c_.norm_eps, st);
    linear(li + 4, g, h, N, nullptr);
    linear(li + 5, u, h, N, nullptr);
    cuda::swiglu_forward(g, g, u, N * F, st);
    linear(li + 6, h, g, N, nullptr);
    cuda::residual_forward(x, x, h, N * C, st);
  }
  bf16* last = last_.need(static_cast<size_t>(R * C));
  bf16* lnf = lnf_.need(static_cast<size_t>(R * C));
  cuda::gather_rows(last, x, out_rows, R, N, C, status_.p, st);
  cuda::rmsnorm_forward(lnf, rstd, last, norm_.p, R, C, c_.norm_eps, st);
  // The LM head into FP32 logits.
  const size_t head = lin_.size() - 1;
  Linear& H = lin_[head];
  float* out = logits_.need(static_cast<size_t>(R * V));
  if (H.p == Precision::bf16) {
    blas_.gemm(out, DType::F32, cuda::GemmOperand{lnf}, cuda::GemmOperand{weight_bf16(H)}, R, V, C, nullptr,
               false, st);
  } else {
    bf16* tmp = head_out_.need(static_cast<size_t>(R * V));
    linear(head, tmp, lnf, R, nullptr);
    cuda::convert_bf16_to_f32(out, tmp, R * V, st);
  }
}

}  // namespace

std::unique_ptr<Engine> make_cuda_engine(const HfModel& model, const EngineOptions& o) {
  if (cuda::device_count() == 0) {
    throw Error("--device cuda: no CUDA device (" + cuda::unavailable_reason() + "); use --device cpu");
  }
  return std::make_unique<CudaEngine>(model, o);
}

}  // namespace nvfp4::infer
