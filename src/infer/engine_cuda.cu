// The CUDA engine (include/nvfp4/engine.hpp): BF16 weights, activations and KV cache, FP32
// accumulation in every GEMM (cuBLASLt) and reduction. Quantized linear layers keep their
// weights quantized on the device (NVFP4 codes + E4M3 block scales + amax, or FP8 + scale) and
// decode them exactly to BF16 right before each GEMM, the per-tensor factors applied to the FP32
// product — "decode-then-GEMM"; the fused kernels of issue 17 replace it. With EngineOptions::fuse
// a block's BF16 q/k/v weights sit in one buffer (and gate/up in another) so each group runs as one
// GEMM, and the row ops between the GEMMs run fused (cuda::qkv_rows, residual_rmsnorm_forward,
// swiglu_rows): half the launches of a decode step.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "format/nvfp4.hpp"
#include "model/device_array.cuh"
#include "infer/engine_base.hpp"
#include "nvfp4/cuda_gemm_nvfp4.hpp"
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

// Where a quantized weight's decode factor (NVFP4 amax / 2688, FP8 scale_inv) sits after its amax
// in Linear::factor, and the activation's FP8 scale_inv after its amax: 16 bytes in, as cuBLASLt's
// scale pointers must be aligned.
constexpr size_t kFactorAt = 4;

// From how many rows (tokens) an NVFP4 projection runs the split-K GEMM instead of the GEMV
// (both fused; up to kNvfp4GemvMaxRows). H100, bench_gemm_nvfp4 (docs/perf.md, run 4): the GEMV
// was faster at 32 tokens on all seven Llama shapes, split-K at 64 on all seven.
constexpr int64_t kSplitKFromRows = 33;

class CudaEngine final : public EngineBase {
 public:
  CudaEngine(const HfModel& m, const EngineOptions& o)
      : EngineBase(m, o, Precision::bf16, Precision::fp32, "the CPU reference's") {
    // An observer (calibration) sees every projection's own input rows: the projections run apart
    // (no fused groups) and each step is launched, not replayed from a graph (the host reads rows).
    if (o.observer) o_.fuse = false;
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
      if (L.bq >= 0) {  // one buffer, q | k | v, as the fused projection's output rows
        const int64_t QD = int64_t(c_.n_head) * c_.head_size(), KD = int64_t(c_.n_kv_head) * c_.head_size();
        d.bqkv.alloc(static_cast<size_t>(QD + 2 * KD), bytes_);
        upload_into(L.bq, d.bqkv.p);
        upload_into(L.bk, d.bqkv.p + QD);
        upload_into(L.bv, d.bqkv.p + QD + KD);
      }
    }
    lin_.resize(plan_.size());
    fallback_count_.alloc(plan_.size(), bytes_);
    fallback_count_.zero();
    rows_.assign(plan_.size(), 0);
    status_.alloc(1, bytes_);
    status_.zero();
    load_linears(plan_precisions(), /*all=*/true);
    // The paged KV cache: every layer's pool of kv_.blocks() blocks, and the block table (its host
    // copy in kv_, uploaded when a forward changes it).
    const int64_t per_layer = int64_t{kv_.blocks()} * kv_.block_size() * c_.n_kv_head * c_.head_size();
    kc_.alloc(static_cast<size_t>(per_layer * c_.n_layer), bytes_);
    vc_.alloc(static_cast<size_t>(per_layer * c_.n_layer), bytes_);
    kv_table_.alloc(kv_.table().size(), bytes_);
    check(cudaMemcpy(kv_table_.p, kv_.table().data(), kv_.table().size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
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
    for (const auto& l : layers_) n += l.wqkv.bytes() + l.wgu.bytes() + l.qkv4.bytes() + l.gu4.bytes();
    for (auto* a : {&x_, &h_, &q_, &k_, &v_, &att_, &g_, &u_, &qn_, &last_, &lnf_, &wdec_, &xq_, &xpad_, &head_out_,
                    &y_, &qkv_, &gu_})
      n += a->bytes();
    return n + y32_.bytes() + rstd_.bytes() + lse_.bytes() + rowf_.bytes() + logits_.bytes() + act_codes_.bytes() +
           act_scale_.bytes() + ints_.bytes();
  }

  void forward(std::span<const SeqChunk> chunks, std::vector<float>& logits) override;

 private:
  struct Layer {
    DeviceArray<bf16> ln1, ln2, q_norm, k_norm;
    DeviceArray<bf16> bqkv;  // q | k | v biases (Qwen2), or empty
    // The BF16 weights of q | k | v and of gate | up, row blocks of one buffer each (a member's
    // rows are its Linear::view); allocated while any member runs in BF16.
    DeviceArray<bf16> wqkv, wgu;
    // The same groups when every member is w4a16 in GEMV order: codes and scales stacked by rows
    // (a member's rows are its Linear::codes_view / scales_view) and one decode factor per row, so
    // the decode step runs one fused GEMV for q | k | v and one for gate | up (k and v alone are
    // 1024-row launches that leave most SMs idle on Llama-3.1-8B).
    struct Nvfp4Group {
      DeviceArray<uint8_t> codes, scales;
      DeviceArray<float> decode;
      int64_t bytes() const { return codes.bytes() + scales.bytes() + decode.bytes(); }
    };
    Nvfp4Group qkv4, gu4;
  };
  struct Linear {
    Precision p = Precision::bf16;
    int64_t OC = 0, C = 0;
    float input_amax = 0.0f;
    fmt::Nvfp4InputScale stored_input;  // a stored NVFP4 layer's activation factors (W4A4 checkpoints)
    DeviceArray<bf16> w;         // bf16: the weight (unless it lives in a group buffer: view)
    bf16* view = nullptr;        // bf16: the weight's rows in its layer's wqkv / wgu
    DeviceArray<uint8_t> codes;  // w4a16 / w4a4: NVFP4 codes (OC, C/2); fp8: E4M3 (OC, C)
    bool gemv_order = false;     // NVFP4 codes in the fused GEMV's nibble order (C % 32 == 0)
    DeviceArray<uint8_t> scales; // NVFP4 block scales (OC, C/16)
    // w4a16 in an NVFP4 group: codes and scales live in the group's buffers (codes, scales empty).
    const uint8_t* codes_view = nullptr;
    const uint8_t* scales_view = nullptr;
    DeviceArray<float> factor;   // [0] the weight's amax, [kFactorAt] its decode factor (NVFP4 amax/2688; FP8 scale_inv)
  };

  void upload(int spec, DeviceArray<bf16>& d) {
    d.alloc(static_cast<size_t>(m_.specs()[spec].numel), bytes_);
    upload_into(spec, d.p);
  }
  void upload_into(int spec, bf16* dst) {
    std::vector<bf16> h(static_cast<size_t>(m_.specs()[spec].numel));
    m_.read_bf16(static_cast<size_t>(spec), h);
    check(cudaMemcpy(dst, h.data(), h.size() * 2, cudaMemcpyHostToDevice), "cudaMemcpy");
  }

  // Linear i's group within its block: q, k, v share one buffer and gate, up another (-1: none).
  // first: the group's first linear; rows_before: the rows of the group's members before i.
  struct GroupSlot {
    int layer = -1;
    bool qkv = false;
    size_t first = 0;
    int64_t rows_before = 0;
  };
  GroupSlot group_of(size_t i) const {
    GroupSlot g;
    if (is_head(i)) return g;
    const int64_t QD = int64_t(c_.n_head) * c_.head_size(), KD = int64_t(c_.n_kv_head) * c_.head_size();
    const size_t k = i % 7;
    g.layer = static_cast<int>(i / 7);
    if (k <= 2) {
      g.qkv = true, g.first = i - k, g.rows_before = k == 0 ? 0 : k == 1 ? QD : QD + KD;
    } else if (k == 4 || k == 5) {
      g.first = i - (k - 4), g.rows_before = k == 4 ? 0 : c_.ffn();
    } else {
      g.layer = -1;
    }
    return g;
  }
  // Whether every member of the group at `first` (q|k|v or gate|up) satisfies pred.
  template <class Pred>
  bool group_all(size_t first, bool qkv, Pred&& pred) const {
    for (size_t m = first; m < first + (qkv ? 3 : 2); ++m) {
      if (!pred(lin_[m])) return false;
    }
    return true;
  }
  // Whether every member runs in BF16 (the group can run as one GEMM).
  bool group_bf16(size_t first, bool qkv) const {
    return group_all(first, qkv, [](const Linear& L) { return L.p == Precision::bf16; });
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
      L.view = nullptr;
      L.codes = DeviceArray<uint8_t>();
      L.gemv_order = false;
      L.scales = DeviceArray<uint8_t>();
      L.codes_view = L.scales_view = nullptr;
      L.factor = DeviceArray<float>();
      if (p[i] == Precision::bf16) {
        if (head && c_.tie_embeddings) continue;  // reads embed_
        const GroupSlot g = group_of(i);
        if (g.layer < 0) {
          upload(spec, L.w);
          continue;
        }
        Layer& d = layers_[static_cast<size_t>(g.layer)];
        DeviceArray<bf16>& buf = g.qkv ? d.wqkv : d.wgu;
        if (!buf.p) {
          const int64_t QD = int64_t(c_.n_head) * c_.head_size(), KD = int64_t(c_.n_kv_head) * c_.head_size();
          buf.alloc(static_cast<size_t>((g.qkv ? QD + 2 * KD : 2 * c_.ffn()) * c_.d_model), unused);
        }
        L.view = buf.p + g.rows_before * L.C;
        upload_into(spec, L.view);
        continue;
      }
      L.stored_input = {};
      if (stored(i, p[i])) {  // the model's NVFP4 codes, block scales and factors, as held
        io::Nvfp4Linear q = m_.read_nvfp4(static_cast<size_t>(spec));
        L.codes.alloc(q.packed.size(), unused);
        L.scales.alloc(q.scales.size(), unused);
        L.gemv_order = L.C % 32 == 0;  // the fused GEMV's nibble order (the decode path reads it too)
        if (L.gemv_order) {
          std::vector<uint8_t> packed(q.packed.size());
          cuda::repack_nvfp4_codes_for_gemv(packed.data(), q.packed.data(), L.OC, L.C);
          q.packed.swap(packed);
        }
        check(cudaMemcpy(L.codes.p, q.packed.data(), q.packed.size(), cudaMemcpyHostToDevice), "cudaMemcpy");
        check(cudaMemcpy(L.scales.p, q.scales.data(), q.scales.size(), cudaMemcpyHostToDevice), "cudaMemcpy");
        float f[kFactorAt + 1] = {};
        f[0] = q.weight_decode * fmt::kNvfp4AmaxRange;  // the amax the factor stands for (unread: alpha is f[kFactorAt])
        f[kFactorAt] = q.weight_decode;
        L.factor.alloc(kFactorAt + 1, unused);
        check(cudaMemcpy(L.factor.p, f, sizeof f, cudaMemcpyHostToDevice), "cudaMemcpy");
        if (q.w4a4()) L.stored_input = {0.0f, *q.input_encode, *q.input_decode};
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
      L.factor.alloc(kFactorAt + 1, unused);
      L.factor.zero();
      cuda::DeviceCopy copy;
      copy.codes = L.codes.p;
      copy.scales = nb.scales ? L.scales.p : nullptr;
      copy.amax = L.factor.p;
      copy.scale_inv = q.format == Format::fp8_e4m3 ? L.factor.p + kFactorAt : nullptr;
      cuda::quantize(staging.p, DType::BF16, L.OC, L.C, q, &copy, nullptr, {}, nullptr);
      if (q.format == Format::nvfp4) {  // the decode factor amax / 2688, applied as the GEMM's alpha
        float amax = 0;
        check(cudaMemcpy(&amax, L.factor.p, 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
        const float f = amax / 2688.0f;
        check(cudaMemcpy(L.factor.p + kFactorAt, &f, 4, cudaMemcpyHostToDevice), "cudaMemcpy");
        L.gemv_order = L.C % 32 == 0;
        if (L.gemv_order) cuda::repack_nvfp4_codes_for_gemv_device(L.codes.p, L.OC, L.C, nullptr);
      }
    }
    for (size_t l = 0; l < layers_.size(); ++l) {  // group buffers no member reads any more
      const size_t li = l * 7;
      if (!lin_[li].view && !lin_[li + 1].view && !lin_[li + 2].view) layers_[l].wqkv = DeviceArray<bf16>();
      if (!lin_[li + 4].view && !lin_[li + 5].view) layers_[l].wgu = DeviceArray<bf16>();
      regroup_nvfp4(li, true, layers_[l].qkv4);
      regroup_nvfp4(li + 4, false, layers_[l].gu4);
    }
  }

  // Whether the members of the group at `first` are all w4a16 in GEMV order (one fused GEMV).
  bool group_nvfp4(size_t first, bool qkv) const {
    return group_all(first, qkv, [](const Linear& L) { return L.p == Precision::w4a16 && L.gemv_order; });
  }

  // After loading: the group's stacked buffers rebuilt from its members' rows (their own arrays or
  // their rows of the previous buffers), the members reading their rows of the new ones; or, where
  // the members no longer all qualify, each member given its rows back as its own arrays.
  void regroup_nvfp4(size_t first, bool qkv, Layer::Nvfp4Group& g) {
    const size_t n = qkv ? 3 : 2;
    const bool grouped = group_nvfp4(first, qkv);
    // Every member still reads its rows of the current buffers.
    const bool intact = g.codes.p && group_all(first, qkv, [](const Linear& L) { return L.codes_view != nullptr; });
    if (grouped && intact) return;
    int64_t rows = 0, unused = 0;
    for (size_t m = first; m < first + n; ++m) rows += lin_[m].OC;
    const int64_t C = lin_[first].C;
    Layer::Nvfp4Group next;
    if (grouped) {
      next.codes.alloc(static_cast<size_t>(rows * C / 2), unused);
      next.scales.alloc(static_cast<size_t>(rows * C / 16), unused);
      next.decode.alloc(static_cast<size_t>(rows), unused);
    }
    std::vector<float> per_row;
    int64_t r0 = 0;
    for (size_t m = first; m < first + n; ++m) {
      Linear& L = lin_[m];
      if (!L.codes_view && !grouped) continue;  // not in a group before or after
      const size_t cb = static_cast<size_t>(L.OC * L.C / 2), sb = static_cast<size_t>(L.OC * L.C / 16);
      const cuda::Nvfp4Weight w = nvfp4_weight(L);
      if (grouped) {
        check(cudaMemcpy(next.codes.p + r0 * C / 2, w.codes, cb, cudaMemcpyDeviceToDevice), "cudaMemcpy");
        check(cudaMemcpy(next.scales.p + r0 * C / 16, w.scales, sb, cudaMemcpyDeviceToDevice), "cudaMemcpy");
        float f = 0;
        check(cudaMemcpy(&f, L.factor.p + kFactorAt, 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
        per_row.insert(per_row.end(), static_cast<size_t>(L.OC), f);
        L.codes = DeviceArray<uint8_t>();
        L.scales = DeviceArray<uint8_t>();
        L.codes_view = next.codes.p + r0 * C / 2;
        L.scales_view = next.scales.p + r0 * C / 16;
      } else {  // its rows of the old group's buffers back into its own arrays
        DeviceArray<uint8_t> codes, scales;
        codes.alloc(cb, unused);
        scales.alloc(sb, unused);
        check(cudaMemcpy(codes.p, w.codes, cb, cudaMemcpyDeviceToDevice), "cudaMemcpy");
        check(cudaMemcpy(scales.p, w.scales, sb, cudaMemcpyDeviceToDevice), "cudaMemcpy");
        L.codes = std::move(codes);
        L.scales = std::move(scales);
        L.codes_view = L.scales_view = nullptr;
      }
      r0 += L.OC;
    }
    if (grouped) {
      check(cudaMemcpy(next.decode.p, per_row.data(), per_row.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
    }
    g = std::move(next);  // the previous buffers, read above, are freed
  }

  const bf16* weight_bf16(Linear& L) {
    if (L.p == Precision::bf16) return L.view ? L.view : L.w.p ? L.w.p : embed_.p;
    if (L.gemv_order) {
      cuda::nvfp4_decode_gemv_order(wdec_.need(static_cast<size_t>(L.OC * L.C)), nvfp4_weight(L), L.OC, L.C, stream_);
      return wdec_.p;
    }
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

  // An NVFP4 layer's weight as the fused kernels take it (codes in GEMV order).
  cuda::Nvfp4Weight nvfp4_weight(const Linear& L) const {
    return {L.codes_view ? L.codes_view : L.codes.p, L.scales_view ? L.scales_view : L.scales.p,
            L.factor.p + kFactorAt};
  }

  // An NVFP4 group's stacked weight as the fused kernels take it: a decode factor per row.
  static cuda::Nvfp4Weight group_weight(const Layer::Nvfp4Group& g) {
    cuda::Nvfp4Weight w{g.codes.p, g.scales.p, g.decode.p};
    w.decode_per_row = true;
    return w;
  }
  // Which fused kernel reads an NVFP4 weight (GEMV order) for N rows of in: the GEMV up to 32 rows,
  // from 33 to 64 the split-K GEMM (64-token tiles read x once per 128 rows where the GEMV reads it
  // per 16; bench_gemm_nvfp4, docs/kernels.md); none where they do not take the shape or
  // EngineOptions::fused_nvfp4 is off (the caller decodes the weight for cuBLAS); above 64 rows the
  // warp-specialized GEMM under EngineOptions::fused_nvfp4_prefill, else none.
  enum class FusedNvfp4 { none, gemv, split_k, prefill };
  FusedNvfp4 fused_nvfp4_kernel(const bf16* in, const cuda::Nvfp4Weight& w, int64_t N, int64_t C) const {
    if (!o_.fused_nvfp4 || !w.codes) return FusedNvfp4::none;
    if (N > cuda::kNvfp4GemvMaxRows) {
      return o_.fused_nvfp4_prefill && cuda::nvfp4_gemm_supported(in, w, N, C) ? FusedNvfp4::prefill : FusedNvfp4::none;
    }
    if (N >= kSplitKFromRows && cuda::nvfp4_gemm_supported(in, w, N, C)) return FusedNvfp4::split_k;
    return cuda::nvfp4_gemv_supported(in, w, N, C) ? FusedNvfp4::gemv : FusedNvfp4::none;
  }
  // out (N, OC) bf16 = in x w^T (+ bias; · each row's factor under w4a4) by kernel k (not none).
  void run_fused_nvfp4(FusedNvfp4 k, bf16* out, const bf16* in, const cuda::Nvfp4Weight& w, const bf16* b, int64_t N,
                       int64_t C, int64_t OC, const float* rowf) {
    if (k == FusedNvfp4::split_k || k == FusedNvfp4::prefill) {
      cuda::nvfp4_gemm(out, DType::BF16, in, w, b, N, C, OC, stream_, rowf,
                       k == FusedNvfp4::split_k ? cuda::Nvfp4GemmKernel::split_k : cuda::Nvfp4GemmKernel::wgmma_ws);
    } else {
      cuda::nvfp4_gemv(out, DType::BF16, in, w, b, N, C, OC, stream_, rowf);
    }
  }

  // out (N, OC) bf16 = in (N, C) bf16 x w (OC, C)^T (+ bias (OC) bf16, nullable): FP32 accumulation,
  // one rounding to BF16 (the bias added to the FP32 product first).
  // A few rows (decode) take cuda::gemv_bf16, which streams the weight faster than cuBLASLt does.
  void gemm_bf16(bf16* out, const bf16* in, const bf16* w, const bf16* bias, int64_t N, int64_t C, int64_t OC) {
    if (cuda::gemv_bf16_supported(in, w, N, C)) {
      cuda::gemv_bf16(out, DType::BF16, in, w, bias, N, C, OC, stream_);
      return;
    }
    if (!bias) {
      blas_.matmul_forward(out, in, w, N, C, OC, stream_);
      return;
    }
    float* y = y32_.need(static_cast<size_t>(N * OC));
    blas_.gemm(y, DType::F32, cuda::GemmOperand{in}, cuda::GemmOperand{w}, N, OC, C, nullptr, false, stream_);
    cuda::scale_rows_bias_to_bf16(out, y, nullptr, bias, N, OC, stream_);
  }

  // The observer (calibration) gets linear layer i's BF16 input rows as FP32 (exact), before any
  // activation quantization; q, k, v (and gate, up) read one buffer in a row: copied once for the group.
  void observe(size_t i, const bf16* in, int64_t N) {
    const Linear& L = lin_[i];
    if (observed_ != in || static_cast<int64_t>(observed_rows_.size()) != N * L.C) {
      std::vector<bf16> hb(static_cast<size_t>(N * L.C));
      check(cudaMemcpyAsync(hb.data(), in, hb.size() * 2, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync");
      check(cudaStreamSynchronize(stream_), "observer rows");
      observed_rows_.resize(hb.size());
      for (size_t k = 0; k < hb.size(); ++k) {
        const uint32_t bits = static_cast<uint32_t>(hb[k]) << 16;
        std::memcpy(&observed_rows_[k], &bits, 4);
      }
      observed_ = in;
    }
    o_.observer->observe(i, observed_rows_.data(), N, L.C);
  }

  // out (N, OC) bf16 = linear layer i of in (N, C) bf16 (+ bias (OC) bf16, nullable), as its
  // precision computes it.
  void linear(size_t i, bf16* out, const bf16* in, int64_t N, const bf16* b) {
    Linear& L = lin_[i];
    if (o_.observer) observe(i, in, N);
    if (L.p == Precision::bf16) {
      gemm_bf16(out, in, weight_bf16(L), b, N, L.C, L.OC);
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
      a.amax = act_scale_.need(kFactorAt + 1);
      a.scale_inv = act_scale_.p + kFactorAt;
      cuda::quantize(xp, DType::BF16, N16, L.C, q, &a, nullptr, {}, stream_);
      cuda::GemmOperand A{a.codes, DType::F8_E4M3, true, a.scale_inv, {0, 0}};
      cuda::GemmOperand W{L.codes.p, DType::F8_E4M3, true, L.factor.p + kFactorAt, {0, 0}};
      float* y = y32_.need(static_cast<size_t>(N16 * L.OC));
      blas_.gemm(y, DType::F32, A, W, N16, L.OC, L.C, nullptr, false, stream_);
      cuda::scale_rows_bias_to_bf16(out, y, nullptr, b, N, L.OC, stream_);
    } else {
      const bf16* x = in;
      const float* rowf = nullptr;
      if (L.p == Precision::w4a4) {
        bf16* xq = xq_.need(static_cast<size_t>(N * L.C));
        float* rf = rowf_.need(static_cast<size_t>(N));
        // A calibrated amax set on the engine, else the checkpoint's stored factors, else each row's own.
        const fmt::Nvfp4InputScale input = L.input_amax > 0.0f ? fmt::Nvfp4InputScale{L.input_amax} : L.stored_input;
        cuda::nvfp4_quantize_rows(xq, rf, nullptr, in, N, L.C, input, o_.fallback, fallback_count_.p + i, stream_);
        x = xq;
        rowf = rf;
      }
      // A few rows (decode, short prompts): the fused NVFP4 kernels read the 4-bit weight once.
      const FusedNvfp4 k = L.gemv_order ? fused_nvfp4_kernel(x, nvfp4_weight(L), N, L.C) : FusedNvfp4::none;
      if (k != FusedNvfp4::none) {
        run_fused_nvfp4(k, out, x, nvfp4_weight(L), b, N, L.C, L.OC, rowf);
      } else {
        const bf16* w = weight_bf16(L);
        const float* alpha = L.factor.p + kFactorAt;
        float* y = y32_.need(static_cast<size_t>(N * L.OC));
        blas_.gemm(y, DType::F32, cuda::GemmOperand{x}, cuda::GemmOperand{w}, N, L.OC, L.C, alpha, false, stream_);
        cuda::scale_rows_bias_to_bf16(out, y, rowf, b, N, L.OC, stream_);
      }
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
  // The observer's last rows (host FP32) and the device buffer they came from; forward() forgets them.
  const bf16* observed_ = nullptr;
  std::vector<float> observed_rows_;
  DeviceArray<bf16> embed_, norm_;
  std::vector<Layer> layers_;
  std::vector<Linear> lin_;
  DeviceArray<bf16> kc_, vc_;
  DeviceArray<uint32_t> fallback_count_, status_;
  DeviceArray<int32_t> kv_table_;  // the KV cache's block table (kv_'s, uploaded when it changes)
  const int32_t* cu_seqlens_ = nullptr;  // this forward's packed prompt rows (ragged prefill), in ints_
  KvPages pages() const { return {kv_table_.p, kv_.block_size(), kv_.blocks()}; }
  int64_t cache_per_layer() const {
    return int64_t{kv_.blocks()} * kv_.block_size() * c_.n_kv_head * c_.head_size();
  }
  std::vector<int64_t> rows_;
  // Scratch, grown as needed.
  DeviceArray<bf16> x_, h_, q_, k_, v_, att_, g_, u_, qn_, last_, lnf_, wdec_, xq_, xpad_, head_out_, y_, qkv_, gu_;
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
            head_out_.p, y_.p, qkv_.p, gu_.p, y32_.p, rstd_.p, lse_.p, rowf_.p, logits_.p, act_scale_.p, act_codes_.p, ints_.p};
  }
  void run_layers(int64_t N, int64_t R, bool flash, int64_t B, int64_t T);
  void run_block_fused(int l, int64_t N, bool flash, int64_t B, int64_t T);
  cudaStream_t stream_ = nullptr;
  std::vector<DecodeGraph> graphs_;
  int64_t weights_version_ = 0;
};

void CudaEngine::forward(std::span<const SeqChunk> chunks, std::vector<float>& logits) {
  const BatchRows b = batch_rows(chunks, len_, max_ctx_, c_.vocab);
  if (kv_.reserve(b.chunk_slot, b.new_length)) {  // throws "KV cache full" before anything is written
    check(cudaMemcpyAsync(kv_table_.p, kv_.table().data(), kv_.table().size() * 4, cudaMemcpyHostToDevice, stream_),
          "cudaMemcpyAsync");
  }
  const int64_t N = static_cast<int64_t>(b.tokens.size()), V = c_.vocab, HS = c_.head_size();
  const int64_t R = static_cast<int64_t>(b.out_rows.size());
  observed_ = nullptr;

  // Token ids, slots, positions and output rows in one upload.
  std::vector<int32_t> host;
  host.reserve(static_cast<size_t>(3 * N + R));
  host.insert(host.end(), b.tokens.begin(), b.tokens.end());
  host.insert(host.end(), b.slot.begin(), b.slot.end());
  host.insert(host.end(), b.pos.begin(), b.pos.end());
  host.insert(host.end(), b.out_rows.begin(), b.out_rows.end());

  // Flash attention for a batch of fresh prompts (the prefill case; prompts of different lengths
  // packed without padding, their row ranges in cu_seqlens), the cache kernel otherwise.
  bool flash = (HS == 32 || HS == 64 || HS == 128);
  int64_t T = 0;
  bool decode = true, ragged = false;
  for (const auto& ch : chunks) {
    flash = flash && len_[ch.slot] == 0;
    decode = decode && ch.tokens.size() == 1;
    ragged = ragged || (T > 0 && static_cast<int64_t>(ch.tokens.size()) != T);
    T = std::max<int64_t>(T, static_cast<int64_t>(ch.tokens.size()));
  }
  flash = flash && T > 1;
  const int64_t B = static_cast<int64_t>(chunks.size());
  const size_t cu_at = host.size();
  if (flash && ragged) {
    host.push_back(0);
    for (const auto& ch : chunks) host.push_back(host.back() + static_cast<int32_t>(ch.tokens.size()));
  }
  int32_t* ints = ints_.need(host.size());
  check(cudaMemcpyAsync(ints, host.data(), host.size() * 4, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync");
  cu_seqlens_ = flash && ragged ? ints + cu_at : nullptr;

  // w4a4's rows, counted here (a replayed graph runs no host code).
  for (size_t i = 0; i < lin_.size(); ++i) {
    if (lin_[i].p == Precision::w4a4) rows_[i] += i + 1 == lin_.size() ? R : N;
  }
  DecodeGraph* graph = nullptr;
  const bool replayable = decode && !sink_ && !o_.observer;
  if (replayable) {
    for (auto& g : graphs_) {
      if (g.n == N) graph = &g;
    }
  }
  if (graph && graph->exec && graph->buffers == buffer_pointers() && graph->weights_version == weights_version_) {
    check(cudaGraphLaunch(graph->exec, stream_), "cudaGraphLaunch");
  } else {
    run_layers(N, R, flash, B, T);
    if (replayable) {
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
                " (a token, slot, position or KV cache block out of range); the batch was validated, so this is an internal error");
  }
  for (size_t i = 0; i < chunks.size(); ++i) len_[chunks[i].slot] = b.new_length[i];
}

// Block l with EngineOptions::fuse: x (the residual stream) still lacks the previous block's MLP
// output, which y_ holds (l > 0); it is added in this block's first RMSNorm, and this block's own
// MLP output is left in y_ for the next.
void CudaEngine::run_block_fused(int l, int64_t N, bool flash, int64_t B, int64_t T) {
  const int64_t C = c_.d_model, F = c_.ffn();
  const int64_t NH = c_.n_head, NKV = c_.n_kv_head, HS = c_.head_size(), QD = NH * HS, KD = NKV * HS;
  const int64_t W = QD + 2 * KD, S = static_cast<int64_t>(len_.size()), per_layer = cache_per_layer();
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(HS)));
  const int32_t *slot = ints_.p + N, *pos = ints_.p + 2 * N;
  cudaStream_t st = stream_;
  bf16 *x = x_.p, *h = h_.p, *y = y_.need(N * C), *q = q_.p, *k = k_.p, *v = v_.p, *att = att_.p, *g = g_.p;
  float* rstd = rstd_.p;
  Layer& w = layers_[l];
  const size_t li = static_cast<size_t>(l) * 7;
  if (l == 0) cuda::rmsnorm_forward(h, rstd, x, w.ln1.p, N, C, c_.norm_eps, st);
  else cuda::residual_rmsnorm_forward(h, rstd, x, y, w.ln1.p, N, C, c_.norm_eps, st);
  // q, k, v: one GEMM into (N, QD + 2 KD) rows, or each linear at its own precision.
  const bool none_captured = !capturing(li) && !capturing(li + 1) && !capturing(li + 2);
  const bool one_qkv = w.wqkv.p && group_bf16(li, true) && none_captured;
  const FusedNvfp4 qkv4 = one_qkv || !none_captured ? FusedNvfp4::none : fused_nvfp4_kernel(h, group_weight(w.qkv4), N, C);
  const bf16* bias = w.bqkv.p;
  if (one_qkv || qkv4 != FusedNvfp4::none) {
    bf16* qkv = qkv_.need(N * W);
    if (one_qkv) gemm_bf16(qkv, h, w.wqkv.p, bias, N, C, W);
    else run_fused_nvfp4(qkv4, qkv, h, group_weight(w.qkv4), bias, N, C, W, nullptr);
    cuda::qkv_rows(q, k, v, qkv, qkv + QD, qkv + QD + KD, W, W, w.q_norm.p, w.k_norm.p, c_.norm_eps, pos,
                   inv_freq_.p, kc_.p + l * per_layer, vc_.p + l * per_layer, slot, N, NH, NKV, HS, S, max_ctx_,
                   status_.p, st, pages());
  } else {
    linear(li + 0, q, h, N, bias);
    linear(li + 1, k, h, N, bias ? bias + QD : nullptr);
    linear(li + 2, v, h, N, bias ? bias + QD + KD : nullptr);
    cuda::qkv_rows(q, k, v, q, k, v, QD, KD, w.q_norm.p, w.k_norm.p, c_.norm_eps, pos, inv_freq_.p,
                   kc_.p + l * per_layer, vc_.p + l * per_layer, slot, N, NH, NKV, HS, S, max_ctx_, status_.p, st,
                   pages());
  }
  if (flash) {
    cuda::attention_forward(att, lse_.need(static_cast<size_t>(B * NH * T)), q, k, v, B, T, NH, NKV, HS, st, nullptr,
                            c_.sliding_window, cu_seqlens_, N);
  } else {
    cuda::attention_cache(att, q, kc_.p + l * per_layer, vc_.p + l * per_layer, slot, pos, N, NH, NKV, HS, S, max_ctx_,
                          c_.sliding_window, scale, status_.p, st, pages());
  }
  linear(li + 3, y, att, N, nullptr);
  cuda::residual_rmsnorm_forward(h, rstd, x, y, w.ln2.p, N, C, c_.norm_eps, st);
  // gate, up: one GEMM into (N, 2F) rows, or each on its own.
  const bool gu_free = !capturing(li + 4) && !capturing(li + 5);
  const bool one_gu = w.wgu.p && group_bf16(li + 4, false) && gu_free;
  const FusedNvfp4 gu4 = one_gu || !gu_free ? FusedNvfp4::none : fused_nvfp4_kernel(h, group_weight(w.gu4), N, C);
  if (one_gu || gu4 != FusedNvfp4::none) {
    bf16* gu = gu_.need(N * 2 * F);
    if (one_gu) gemm_bf16(gu, h, w.wgu.p, nullptr, N, C, 2 * F);
    else run_fused_nvfp4(gu4, gu, h, group_weight(w.gu4), nullptr, N, C, 2 * F, nullptr);
    cuda::swiglu_rows(g, gu, N, F, st);
  } else {
    bf16* u = u_.need(N * F);
    linear(li + 4, g, h, N, nullptr);
    linear(li + 5, u, h, N, nullptr);
    cuda::swiglu_forward(g, g, u, N * F, st);
  }
  linear(li + 6, y, g, N, nullptr);
}

// Every launch of one forward, on stream_ (capturable): embedding, the blocks, the final norm and
// the LM head into logits_ (R, V) FP32. ints_ holds tokens, slots, positions, output rows.
void CudaEngine::run_layers(int64_t N, int64_t R, bool flash, int64_t B, int64_t T) {
  const int64_t C = c_.d_model, F = c_.ffn(), V = c_.vocab;
  const int64_t NH = c_.n_head, NKV = c_.n_kv_head, HS = c_.head_size(), QD = NH * HS, KD = NKV * HS;
  const int64_t S = static_cast<int64_t>(len_.size()), per_layer = cache_per_layer();
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(HS)));
  const int32_t *tokens = ints_.p, *slot = ints_.p + N, *pos = ints_.p + 2 * N, *out_rows = ints_.p + 3 * N;
  cudaStream_t st = stream_;

  bf16 *x = x_.need(N * C), *h = h_.need(N * C), *q = q_.need(N * QD), *k = k_.need(N * KD), *v = v_.need(N * KD);
  bf16 *att = att_.need(N * QD), *g = g_.need(N * F), *u = o_.fuse ? nullptr : u_.need(N * F);  // fused: on demand
  float* rstd = rstd_.need(static_cast<size_t>(N * NH));
  cuda::encoder_forward(x, tokens, embed_.p, 1, N, C, V, status_.p, st);
  if (o_.fuse) {
    for (int l = 0; l < c_.n_layer; ++l) run_block_fused(l, N, flash, B, T);
    if (c_.n_layer > 0) cuda::residual_forward(x, x, y_.p, N * C, st);  // the last block's MLP output
  }
  for (int l = 0; l < c_.n_layer && !o_.fuse; ++l) {
    Layer& w = layers_[l];
    const bf16* bias = w.bqkv.p;
    const size_t li = static_cast<size_t>(l) * 7;
    cuda::rmsnorm_forward(h, rstd, x, w.ln1.p, N, C, c_.norm_eps, st);
    linear(li + 0, q, h, N, bias);
    linear(li + 1, k, h, N, bias ? bias + QD : nullptr);
    linear(li + 2, v, h, N, bias ? bias + QD + KD : nullptr);
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
    cuda::kv_append(kc, vc, k, v, slot, pos, N, NKV, HS, S, max_ctx_, status_.p, st, pages());
    if (flash) {
      cuda::attention_forward(att, lse_.need(static_cast<size_t>(B * NH * T)), q, k, v, B, T, NH, NKV, HS, st, nullptr,
                              c_.sliding_window, cu_seqlens_, N);
    } else {
      cuda::attention_cache(att, q, kc, vc, slot, pos, N, NH, NKV, HS, S, max_ctx_, c_.sliding_window, scale,
                            status_.p, st, pages());
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
    if (o_.observer) observe(head, lnf, R);
    const bf16* w = weight_bf16(H);
    if (cuda::gemv_bf16_supported(lnf, w, R, C)) {
      cuda::gemv_bf16(out, DType::F32, lnf, w, nullptr, R, C, V, st);
    } else {
      blas_.gemm(out, DType::F32, cuda::GemmOperand{lnf}, cuda::GemmOperand{w}, R, V, C, nullptr, false, st);
    }
  } else {
    bf16* tmp = head_out_.need(static_cast<size_t>(R * V));
    linear(head, tmp, lnf, R, nullptr);
    cuda::convert_bf16_to_f32(out, tmp, R * V, st);
  }
}

}  // namespace

std::unique_ptr<Engine> make_cuda_engine(const HfModel& model, const EngineOptions& o) {
  check_cuda_kv_cache(o);  // before the device: the same error with or without a GPU
  if (cuda::device_count() == 0) {
    throw Error("--device cuda: no CUDA device (" + cuda::unavailable_reason() + "); use --device cpu");
  }
  return std::make_unique<CudaEngine>(model, o);
}

}  // namespace nvfp4::infer
