// Post-training quantization of a model (include/nvfp4/quantize_model.hpp).
#include "nvfp4/quantize_model.hpp"

#include <fnmatch.h>

#include <algorithm>
#include <cmath>

#include "nvfp4/calibrate.hpp"
#include "nvfp4/engine.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/model.hpp"
#include "nvfp4/ptq_export.hpp"

namespace nvfp4::ptq {

namespace {

// Counts each layer's 16-value input blocks (along the input dimension) and those whose amax
// exceeds the layer's threshold.
struct SaturationCounter final : infer::LinearInputObserver {
  std::vector<float> threshold;  // per linear; <= 0: not counted
  std::vector<int64_t> blocks, saturated;
  explicit SaturationCounter(std::vector<float> t)
      : threshold(std::move(t)), blocks(threshold.size(), 0), saturated(threshold.size(), 0) {}
  void observe(size_t i, const float* x, int64_t N, int64_t C) override {
    if (i >= threshold.size() || threshold[i] <= 0.0f) return;
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t b = 0; b < C; b += 16) {
        float m = 0.0f;
        for (int64_t k = b; k < std::min(b + 16, C); ++k) m = std::max(m, std::fabs(x[n * C + k]));
        ++blocks[i];
        saturated[i] += m > threshold[i];
      }
    }
  }
};

// Runs `tokens` through a CPU engine observed by `observer`, in windows of `window`.
void run_windows(const infer::HfModel& model, std::span<const int32_t> tokens, int window,
                 infer::LinearInputObserver* observer) {
  infer::EngineOptions ro;
  ro.max_context = std::max(1, std::min(window, model.config().seq_len));
  ro.observer = observer;
  const auto engine = infer::make_cpu_engine(model, ro);
  std::vector<float> logits;
  for (size_t at = 0; at < tokens.size(); at += static_cast<size_t>(ro.max_context)) {
    const size_t n = std::min(tokens.size() - at, static_cast<size_t>(ro.max_context));
    engine->reset(0);
    const infer::SeqChunk ch{0, tokens.subspan(at, n), false};
    engine->forward(std::span<const infer::SeqChunk>(&ch, 1), logits);
  }
}

}  // namespace

QuantizeModelResult quantize_model(const infer::HfModel& model, std::span<const int32_t> calib,
                                   const QuantizeModelOptions& o,
                                   const std::function<void(size_t, size_t, const std::string&)>& progress) {
  if (!(o.act_percentile > 0.0 && o.act_percentile <= 100.0)) {
    throw Error("--act-scale percentile:" + std::to_string(o.act_percentile) + ": the percentile must be in (0, 100]");
  }
  if (calib.empty()) throw Error("quantize: no calibration tokens");
  const model::ModelConfig& c = model.config();
  const auto idx = model::param_index(c);
  // Module names and which layers stay unquantized: the engine's plan (its --keep-bf16 errors too).
  infer::EngineOptions eo;
  eo.precision = infer::Precision::w4a16;
  eo.keep_bf16 = o.keep_bf16;
  const auto plan = infer::resolve_linear_plan(c, eo, infer::Precision::fp32);
  const size_t n_block = plan.size() - 1;  // the head stays unquantized

  // Calibration: the FP32 CPU engine over the tokens, in windows.
  Calibrator cal(plan.size(), o.gptq);
  run_windows(model, calib, o.window, &cal);

  // Weights, and the groups' shared amax (q/k/v; gate/up).
  const auto spec_of = [&](size_t i) { return idx.layers[i / 7].weight(static_cast<model::LinearKind>(i % 7)); };
  // (One weight in memory at a time: each is read for its amax here and again when quantized.)
  const auto read_weight = [&](size_t i) {
    std::vector<float> v(static_cast<size_t>(model.specs()[static_cast<size_t>(spec_of(i))].numel));
    model.read_f32(static_cast<size_t>(spec_of(i)), v);
    return v;
  };
  std::vector<float> amax(n_block, 0.0f);
  for (size_t i = 0; i < n_block; ++i) {
    for (float v : read_weight(i)) amax[i] = std::max(amax[i], std::fabs(v));
  }

  QuantizeModelResult r;
  r.calib_tokens = static_cast<int64_t>(calib.size());
  for (size_t i = 0; i < n_block; ++i) {
    if (progress) progress(i, n_block, plan[i].name);
    const auto& s = model.specs()[static_cast<size_t>(spec_of(i))];
    const int64_t OC = s.shape[0], C = s.shape[1];
    LayerReport rep;
    rep.module = plan[i].name;
    rep.calib_rows = cal.rows(i);
    rep.input_amax = o.act_percentile == 100.0 ? cal.input_stats(i).amax() : cal.input_stats(i).percentile(o.act_percentile);
    if (plan[i].precision != infer::Precision::w4a16) {
      rep.why_not = "kept by --keep-bf16";
    } else if (C % 16 != 0) {
      rep.why_not = "input size " + std::to_string(C) + " is not a multiple of 16";
    }
    if (!rep.why_not.empty()) {
      r.kept.push_back(rep.module);
      r.report.push_back(rep);
      continue;
    }
    // The group's amax over the members that are quantized.
    float shared = 0.0f;
    const auto [g0, g1] = fused_group(i, plan.size());
    for (size_t k = g0; k < g1; ++k) {
      if (plan[k].precision == infer::Precision::w4a16) shared = std::max(shared, amax[k]);
    }
    const std::vector<float> w = read_weight(i);
    Nvfp4Weight q;
    if (o.gptq) {
      GptqOptions go = o.gptq_options;
      go.rule = o.rule;
      q = gptq_quantize(w, OC, C, cal.hessian(i), go, shared).weight;
    } else {
      q = quantize_weight(w, OC, C, o.rule, shared);
    }
    const auto d = dequantize(q);
    double num = 0, den = 0;
    for (size_t k = 0; k < d.size(); ++k) {
      num += (double(w[k]) - d[k]) * (double(w[k]) - d[k]);
      den += double(w[k]) * w[k];
    }
    rep.weight_rel_error = den > 0 ? std::sqrt(num / den) : 0.0;
    rep.quantized = true;
    if (o.w4a4 && !(rep.input_amax > 0.0f)) {
      throw Error(rep.module + ": its calibrated input amax is 0 (the calibration never reached it?)");
    }
    r.layers.push_back(checkpoint_layer(rep.module, q, o.w4a4 ? std::optional<float>(rep.input_amax) : std::nullopt));
    r.report.push_back(rep);
  }
  r.kept.push_back("lm_head");
  // W4A4: how often held-out activations exceed the calibrated input amax.
  if (o.w4a4 && !o.holdout.empty()) {
    std::vector<float> threshold(plan.size(), 0.0f);
    for (size_t k = 0; k < r.report.size(); ++k) {  // report[k] is linear k
      if (r.report[k].quantized) threshold[k] = r.report[k].input_amax;
    }
    SaturationCounter sat(threshold);
    run_windows(model, o.holdout, o.window, &sat);
    for (size_t k = 0; k < r.report.size(); ++k) {
      if (!r.report[k].quantized) continue;
      r.report[k].holdout_blocks = sat.blocks[k];
      r.report[k].holdout_saturated = sat.saturated[k];
      r.holdout_blocks += sat.blocks[k];
      r.holdout_saturated += sat.saturated[k];
    }
  }
  return r;
}

}  // namespace nvfp4::ptq
