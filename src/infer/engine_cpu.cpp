// The CPU reference engine (include/nvfp4/engine.hpp): FP32 activations, weights and KV cache,
// the reference ops of src/kernels/cpu/ops.hpp, quantized weights decoded by the format core.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/ops.hpp"
#include "infer/engine_base.hpp"
#include "nvfp4/engine.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_model.hpp"
#include "nvfp4/quantize.hpp"
#include "format/fp8.hpp"

namespace nvfp4::infer {

namespace {

using model::LinearKind;

// x (N, K) as the FP8 per-tensor quantizer represents it (current scaling over the batch).
void fp8_round_trip(std::vector<float>& out, const float* x, int64_t N, int64_t K) {
  QuantizeOptions q;
  q.format = Format::fp8_e4m3;
  const QuantizedTensor t = quantize(std::span<const float>(x, static_cast<size_t>(N * K)), N, K, q);
  out = dequantize(*t.row, t.options);
}

// KvCache::fp8 on the CPU: n values as the cache holds them, in place — e4m3_rne_satfinite(x /
// scale) decoded and times scale. The cache keeps these FP32 values (the bytes' exact decodes), so
// attention reads them unchanged: the reference the CUDA engine's byte cache is to match.
// NOTE: x / scale (a division, as we read vLLM's cache write), not x * (1 / scale): the two can
// differ in the last bit for scales that are not powers of two, and so in an E4M3 code.
void fp8_kv_round_trip(float* x, int64_t n, float scale) {
  for (int64_t i = 0; i < n; ++i) {
    x[i] = fmt::fp8_decode(fmt::fp8_encode(x[i] / scale, fmt::Fp8Kind::e4m3), fmt::Fp8Kind::e4m3) * scale;
  }
}

class CpuEngine final : public EngineBase {
 public:
  CpuEngine(const HfModel& m, const EngineOptions& o)
      : EngineBase(m, o, Precision::fp32, Precision::bf16, "the CUDA engine's (the CPU reference runs fp32)") {
    inv_freq_ = c_.rope_inv_freq();
    auto read = [&](int i) {
      std::vector<float> v(static_cast<size_t>(m_.specs()[i].numel));
      m_.read_f32(static_cast<size_t>(i), v);
      return v;
    };
    embed_ = read(idx_.embed);
    norm_ = read(idx_.norm);
    for (const auto& L : idx_.layers) {
      Layer l;
      l.ln1 = read(L.ln1);
      l.ln2 = read(L.ln2);
      if (L.q_norm >= 0) l.q_norm = read(L.q_norm), l.k_norm = read(L.k_norm);
      if (L.bq >= 0) l.bq = read(L.bq), l.bk = read(L.bk), l.bv = read(L.bv);
      layers_.push_back(std::move(l));
    }
    lin_.resize(plan_.size());
    guard_.rows.assign(plan_.size(), 0);
    guard_.fallbacks.assign(plan_.size(), 0);
    load_linears(plan_precisions(), /*all=*/true);
    const int64_t per_layer = int64_t(kv_.blocks()) * kv_.block_size() * c_.n_kv_head * c_.head_size();
    kc_.assign(static_cast<size_t>(per_layer * c_.n_layer), 0.0f);
    vc_.assign(kc_.size(), 0.0f);
  }

  std::string_view device() const override { return "cpu"; }
  void set_linear_precisions(std::span<const Precision> p) override {
    check_precisions(p);
    load_linears(p, /*all=*/false);
  }
  void set_input_amax(size_t i, float amax) override { lin_.at(i).input_amax = amax; }
  // The activation scale of a w4a4 layer: a calibrated amax set here, else the checkpoint's stored
  // factors, else each row's own amax.
  fmt::Nvfp4InputScale input_scale(const auto& L) const {
    return L.input_amax > 0.0f ? fmt::Nvfp4InputScale{L.input_amax} : L.stored_input;
  }
  GuardStats guard_stats() const override { return guard_; }
  void reset_guard_stats() override {
    std::fill(guard_.rows.begin(), guard_.rows.end(), 0);
    std::fill(guard_.fallbacks.begin(), guard_.fallbacks.end(), 0);
  }
  int64_t memory_bytes() const override {
    int64_t n = static_cast<int64_t>(embed_.size() + norm_.size() + kc_.size() + vc_.size());
    for (const auto& l : layers_) n += static_cast<int64_t>(l.ln1.size() * 2 + l.q_norm.size() * 2 + l.bq.size() * 3);
    for (const auto& l : lin_) n += static_cast<int64_t>(l.w.size());
    return 4 * n;
  }

  void forward(std::span<const SeqChunk> chunks, std::vector<float>& logits) override;

 private:
  struct Layer {
    std::vector<float> ln1, ln2, q_norm, k_norm, bq, bk, bv;
  };
  struct Linear {
    std::vector<float> w;   // (OC, C): the weight as the precision represents it (decoded)
    const float* wp = nullptr;
    int64_t OC = 0, C = 0;
    Precision p = Precision::fp32;
    float input_amax = 0.0f;
    fmt::Nvfp4InputScale stored_input;  // a stored NVFP4 layer's activation factors (W4A4 checkpoints)
  };

  // Reads and quantizes linear layers whose precision changes (all of them when `all`).
  void load_linears(std::span<const Precision> p, bool all) {
    for (size_t i : change_precisions(p, all)) {
      Linear& L = lin_[i];
      const bool head = is_head(i);
      const int spec = linear_spec(i);
      const auto& s = m_.specs()[spec];
      L.OC = s.shape[0];
      L.C = s.shape[1];
      L.p = p[i];
      if (head && c_.tie_embeddings && p[i] == Precision::fp32) {
        L.w.clear();
        L.wp = embed_.data();
        continue;
      }
      L.w.assign(static_cast<size_t>(s.numel), 0.0f);
      L.stored_input = {};
      if (stored(i, p[i])) {  // the NVFP4 bits the model holds, decoded
        const io::Nvfp4Linear q = m_.read_nvfp4(static_cast<size_t>(spec));
        io::decode_nvfp4_linear(q, L.w);
        if (q.w4a4()) L.stored_input = {0.0f, *q.input_encode, *q.input_decode};
        L.wp = L.w.data();
        continue;
      }
      m_.read_f32(static_cast<size_t>(spec), L.w);
      if (p[i] != Precision::fp32) {
        QuantizeOptions q;
        q.format = p[i] == Precision::fp8 ? Format::fp8_e4m3 : Format::nvfp4;
        try {
          const QuantizedTensor t = quantize(L.w, L.OC, L.C, q);
          L.w = dequantize(*t.row, t.options);
        } catch (const Error& e) {
          throw Error("quantizing " + plan_[i].name + " (" + s.name + ") to " + std::string(precision_name(p[i])) +
                      ": " + e.what());
        }
      }
      L.wp = L.w.data();
    }
  }

  // out (N, OC) = the linear layer i of in (N, C), its activation quantized as its precision says.
  void linear(size_t i, float* out, const float* in, int64_t N, const std::vector<float>* bias) {
    Linear& L = lin_[i];
    if (o_.observer) o_.observer->observe(i, in, N, L.C);
    const float* x = in;
    if (L.p == Precision::w4a4) {
      xq_.resize(static_cast<size_t>(N * L.C));
      factor_.resize(static_cast<size_t>(N));
      flags_.resize(static_cast<size_t>(N));
      cpu::nvfp4_quantize_rows(xq_.data(), factor_.data(), flags_.data(), in, N, L.C, input_scale(L), o_.fallback);
      for (int64_t n = 0; n < N; ++n) {
        float* row = xq_.data() + n * L.C;
        for (int64_t k = 0; k < L.C; ++k) row[k] *= factor_[n];
        if (flags_[n] != 0 && o_.fallback) ++guard_.fallbacks[i];
      }
      guard_.rows[i] += N;
      x = xq_.data();
    } else if (L.p == Precision::fp8) {
      try {
        fp8_round_trip(xq_, in, N, L.C);
      } catch (const Error& e) {
        throw Error("the input of " + plan_[i].name + " (fp8): " + e.what());
      }
      x = xq_.data();
    }
    cpu::matmul_forward(out, x, L.wp, N, L.C, L.OC);
    if (bias && !bias->empty()) cpu::scale_rows_bias(out, out, nullptr, bias->data(), N, L.OC);
    if (capturing(i)) sink_->insert(sink_->end(), out, out + N * L.OC);
  }

  std::vector<float> inv_freq_, embed_, norm_;
  std::vector<Layer> layers_;
  std::vector<Linear> lin_;
  std::vector<float> kc_, vc_;  // per layer (blocks, block_size, NKV, HS): paged by kv_
  GuardStats guard_;
  // Scratch of one forward.
  std::vector<float> x_, h_, q_, k_, v_, att_, g_, u_, rstd_, xq_, factor_, last_, lnf_;
  std::vector<uint8_t> flags_;
};

void CpuEngine::forward(std::span<const SeqChunk> chunks, std::vector<float>& logits) {
  const BatchRows b = batch_rows(chunks, len_, max_ctx_, c_.vocab);
  kv_.reserve(b.chunk_slot, b.new_length);  // throws "KV cache full" before anything is written
  const cpu::KvPages pages{kv_.table().data(), kv_.block_size(), kv_.blocks()};
  const int64_t N = static_cast<int64_t>(b.tokens.size()), C = c_.d_model, F = c_.ffn(), V = c_.vocab;
  const int64_t NH = c_.n_head, NKV = c_.n_kv_head, HS = c_.head_size(), QD = NH * HS, KD = NKV * HS;
  const int64_t S = static_cast<int64_t>(len_.size()), per_layer = int64_t{kv_.blocks()} * kv_.block_size() * KD;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(HS)));
  auto size = [](std::vector<float>& v, int64_t n) { v.resize(static_cast<size_t>(n)); };
  size(x_, N * C), size(h_, N * C), size(q_, N * QD), size(k_, N * KD), size(v_, N * KD), size(att_, N * QD);
  size(g_, N * F), size(u_, N * F), size(rstd_, N * NH);

  cpu::encoder_forward(x_.data(), b.tokens.data(), embed_.data(), 1, N, C, V);
  for (int l = 0; l < c_.n_layer; ++l) {
    const Layer& w = layers_[l];
    const size_t li = static_cast<size_t>(l) * 7;
    cpu::rmsnorm_forward(h_.data(), rstd_.data(), x_.data(), w.ln1.data(), N, C, c_.norm_eps);
    linear(li + 0, q_.data(), h_.data(), N, &w.bq);
    linear(li + 1, k_.data(), h_.data(), N, &w.bk);
    linear(li + 2, v_.data(), h_.data(), N, &w.bv);
    if (c_.qk_norm) {  // per head, in place
      cpu::rmsnorm_forward(q_.data(), rstd_.data(), q_.data(), w.q_norm.data(), N * NH, HS, c_.norm_eps);
      cpu::rmsnorm_forward(k_.data(), rstd_.data(), k_.data(), w.k_norm.data(), N * NKV, HS, c_.norm_eps);
    }
    cpu::rope_rows(q_.data(), b.pos.data(), inv_freq_.data(), N, NH, HS);
    cpu::rope_rows(k_.data(), b.pos.data(), inv_freq_.data(), N, NKV, HS);
    if (o_.kv_observer) o_.kv_observer->observe(l, k_.data(), v_.data(), N, KD);
    if (o_.kv_cache == KvCache::fp8) {  // k_, v_ are read by nothing after the append
      fp8_kv_round_trip(k_.data(), N * KD, kv_k_scale_[static_cast<size_t>(l)]);
      fp8_kv_round_trip(v_.data(), N * KD, kv_v_scale_[static_cast<size_t>(l)]);
    }
    float* kc = kc_.data() + l * per_layer;
    float* vc = vc_.data() + l * per_layer;
    cpu::kv_append(kc, vc, k_.data(), v_.data(), b.slot.data(), b.pos.data(), N, NKV, HS, S, max_ctx_, pages);
    cpu::attention_cache(att_.data(), q_.data(), kc, vc, b.slot.data(), b.pos.data(), N, NH, NKV, HS, S, max_ctx_,
                         c_.sliding_window, scale, pages);
    linear(li + 3, h_.data(), att_.data(), N, nullptr);
    cpu::residual_forward(x_.data(), x_.data(), h_.data(), N * C);
    cpu::rmsnorm_forward(h_.data(), rstd_.data(), x_.data(), w.ln2.data(), N, C, c_.norm_eps);
    linear(li + 4, g_.data(), h_.data(), N, nullptr);
    linear(li + 5, u_.data(), h_.data(), N, nullptr);
    cpu::swiglu_forward(g_.data(), g_.data(), u_.data(), N * F);
    linear(li + 6, h_.data(), g_.data(), N, nullptr);
    cpu::residual_forward(x_.data(), x_.data(), h_.data(), N * C);
  }
  const int64_t R = static_cast<int64_t>(b.out_rows.size());
  size(last_, R * C), size(lnf_, R * C);
  cpu::gather_rows(last_.data(), x_.data(), b.out_rows.data(), R, N, C);
  cpu::rmsnorm_forward(lnf_.data(), rstd_.data(), last_.data(), norm_.data(), R, C, c_.norm_eps);
  for (int64_t r = 0; r < R; ++r) {
    // An infinite or NaN RMS: the residual stream overflowed FP32, and the norm would turn it into
    // zeros (uniform logits) or NaN. Finite weights of a trained model never get there.
    if (!std::isfinite(rstd_[r]) || rstd_[r] == 0.0f) {
      const int32_t row = b.out_rows[static_cast<size_t>(r)];
      throw Error("engine forward: the activations overflow FP32 (slot " + std::to_string(b.slot[row]) + ", position " +
                  std::to_string(b.pos[row]) + "): the weights of " + m_.dir() +
                  " hold values far outside a trained model's range");
    }
  }
  logits.resize(static_cast<size_t>(R * V));
  linear(lin_.size() - 1, logits.data(), lnf_.data(), R, nullptr);
  for (size_t i = 0; i < chunks.size(); ++i) len_[chunks[i].slot] = b.new_length[i];
}

}  // namespace

std::unique_ptr<Engine> make_cpu_engine(const HfModel& model, const EngineOptions& o) {
  return std::make_unique<CpuEngine>(model, o);
}

}  // namespace nvfp4::infer
