// Post-training quantization of a model (include/nvfp4/quantize_model.hpp).
#include "nvfp4/quantize_model.hpp"

#include <fnmatch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "format/scalar.hpp"
#include "nvfp4/calibrate.hpp"
#include "nvfp4/engine.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/evaluate.hpp"
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

// Block projection i's weight (linear_refs() order: q, k, v, o, gate, up, down per block): its spec.
size_t block_linear_spec(const model::ParamIndex& idx, size_t i) {
  return static_cast<size_t>(idx.layers[i / 7].weight(static_cast<model::LinearKind>(i % 7)));
}

// A number as %g writes it (0.05, 1.2e-05).
std::string general(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

// The engines of the sensitivity pass: the device's unquantized precision, windows of o.window.
infer::EngineOptions sensitivity_engine_options(const infer::HfModel& model, const QuantizeModelOptions& o) {
  infer::EngineOptions eo;
  eo.precision = o.device == "cuda" ? infer::Precision::bf16 : infer::Precision::fp32;
  eo.max_context = std::max(2, std::min(o.window, model.config().seq_len));
  eo.max_sequences = 4;
  return eo;
}

// Each layer's K and V amax over the rows appended to the cache.
struct KvAmax final : infer::KvCacheObserver {
  std::vector<float> k, v;
  explicit KvAmax(int layers) : k(static_cast<size_t>(layers), 0.0f), v(static_cast<size_t>(layers), 0.0f) {}
  void observe(int layer, const float* kr, const float* vr, int64_t N, int64_t KD) override {
    float& ka = k.at(static_cast<size_t>(layer));
    float& va = v.at(static_cast<size_t>(layer));
    for (int64_t i = 0; i < N * KD; ++i) {
      ka = std::max(ka, std::fabs(kr[i]));  // NaN rows leave the amax as it was
      va = std::max(va, std::fabs(vr[i]));
    }
  }
};

// A decode scale from an amax: amax / 448 (E4M3's largest), 1 for an amax of 0 or not finite.
float kv_scale_from_amax(float amax) {
  if (!(amax > 0.0f) || !std::isfinite(amax)) return 1.0f;
  return amax / fmt::kE4M3Max;
}

// Runs `tokens` through the device's unquantized engine (FP32 CPU, BF16 CUDA) observed by
// `observer`, in windows of `window`.
void run_windows(const infer::HfModel& model, std::span<const int32_t> tokens, int window,
                 infer::LinearInputObserver* observer, const std::string& device,
                 infer::KvCacheObserver* kv_observer = nullptr) {
  infer::EngineOptions ro;
  ro.precision = device == "cuda" ? infer::Precision::bf16 : infer::Precision::fp32;
  ro.max_context = std::max(1, std::min(window, model.config().seq_len));
  ro.observer = observer;
  ro.kv_observer = kv_observer;
  const auto engine = infer::make_engine(model, ro, device);
  std::vector<float> logits;
  for (size_t at = 0; at < tokens.size(); at += static_cast<size_t>(ro.max_context)) {
    const size_t n = std::min(tokens.size() - at, static_cast<size_t>(ro.max_context));
    engine->reset(0);
    const infer::SeqChunk ch{0, tokens.subspan(at, n), false};
    engine->forward(std::span<const infer::SeqChunk>(&ch, 1), logits);
  }
}

// The model with `layers` as its NVFP4 layers, evaluated on the sensitivity tokens against
// `reference` (the unquantized model), per layer too when asked.
infer::EvalResult evaluate_quantized(const infer::HfModel& model, const std::vector<io::Nvfp4Linear>& layers,
                                     const QuantizeModelOptions& o, infer::Engine& reference, bool per_layer,
                                     const std::function<void(size_t, size_t, const std::string&)>& progress) {
  const infer::HfModel q = infer::HfModel::open_with_layers(model.dir(), layers, o.w4a4);
  const auto engine = infer::make_engine(q, sensitivity_engine_options(model, o), o.device);
  infer::EvalOptions eo;
  eo.ctx = reference.max_context();
  eo.per_layer = per_layer;
  eo.per_layer_tokens = o.sensitivity_scored;
  if (progress) {
    eo.progress = [&](int64_t done, int64_t total, const std::string& what) {
      if (what == "layers") progress(static_cast<size_t>(done), static_cast<size_t>(total), "sensitivity");
    };
  }
  const infer::EvalDocument doc{o.sensitivity_tokens, -1, "the held-out tokens"};
  return infer::evaluate(*engine, &reference, std::span<const infer::EvalDocument>(&doc, 1), eo);
}

void measure_and_fall_back(const infer::HfModel& model, const QuantizeModelOptions& o,
                           const std::vector<infer::LinearPlan>& plan, QuantizeModelResult& r,
                           const std::function<void(size_t, size_t, const std::string&)>& progress) {
  const auto reference = infer::make_engine(model, sensitivity_engine_options(model, o), o.device);
  const infer::EvalResult all = evaluate_quantized(model, r.layers, o, *reference, true, progress);
  r.sensitivity_scored = all.tokens;
  r.unquantized_ppl = std::exp(*all.reference_nll);
  r.before = ModelQuality{all.ppl, *all.kl_mean, *all.top1_agree};
  r.after = r.before;
  std::map<std::string, const infer::LayerSensitivity*> by_name;
  for (const auto& s : all.per_layer) by_name[s.name] = &s;
  for (auto& rep : r.report) {
    const auto it = by_name.find(rep.module);
    if (!rep.quantized || it == by_name.end()) continue;
    rep.kl = it->second->kl_mean;
    rep.output_rel_error = it->second->rel_error;
  }
  if (o.auto_fallback_kl <= 0.0 && o.bf16_budget <= 0.0) return;

  // Groups (by their first linear), their largest KL and their weights.
  const auto idx = model::param_index(model.config());
  const auto weights_of = [&](size_t i) { return model.specs()[block_linear_spec(idx, i)].numel; };
  struct Group {
    size_t first;
    double kl = 0;
    int64_t weights = 0;
  };
  std::vector<Group> groups;
  for (size_t i = 0; i + 1 < plan.size(); ++i) {
    r.block_weights += weights_of(i);
    if (!r.report[i].quantized) continue;
    const size_t first = fused_group(i, plan.size()).first;
    if (groups.empty() || groups.back().first != first) groups.push_back({first});
    groups.back().kl = std::max(groups.back().kl, r.report[i].kl);
    groups.back().weights += weights_of(i);
  }
  std::vector<bool> falls(plan.size(), false);
  const auto fall = [&](const Group& g) {
    const auto [g0, g1] = fused_group(g.first, plan.size());
    for (size_t k = g0; k < g1; ++k) falls[k] = r.report[k].quantized;
    r.fallback_weights += g.weights;
  };
  if (o.auto_fallback_kl > 0.0) {
    r.fallback_rule = "auto-fallback: a member's KL > " + general(o.auto_fallback_kl);
    for (const auto& g : groups) {
      if (g.kl > o.auto_fallback_kl) fall(g);
    }
  } else {
    // The most sensitive groups first; each that still fits the budget falls back.
    r.fallback_rule = "bf16-budget: the most sensitive groups within " + general(o.bf16_budget) + " of the weights";
    std::vector<Group> order = groups;
    std::stable_sort(order.begin(), order.end(), [](const Group& a, const Group& b) { return a.kl > b.kl; });
    const double budget = o.bf16_budget * static_cast<double>(r.block_weights);
    for (const auto& g : order) {
      if (static_cast<double>(r.fallback_weights + g.weights) <= budget) fall(g);
    }
  }
  std::vector<io::Nvfp4Linear> kept_layers;
  size_t at = 0;
  for (size_t i = 0; i + 1 < plan.size(); ++i) {
    if (!r.report[i].quantized) continue;
    if (falls[i]) {
      r.report[i].quantized = false;
      r.report[i].fallback = true;
      r.report[i].why_not = "BF16 fallback (" + r.fallback_rule + "; its group's KL " +
                            general(r.report[fused_group(i, plan.size()).first].kl) + ")";
    } else {
      kept_layers.push_back(std::move(r.layers[at]));
    }
    ++at;
  }
  r.layers = std::move(kept_layers);
  if (r.fallback_weights == 0) return;
  const infer::EvalResult after = evaluate_quantized(model, r.layers, o, *reference, false, progress);
  r.after = ModelQuality{after.ppl, *after.kl_mean, *after.top1_agree};
}

}  // namespace

void require_unquantized(const infer::HfModel& model) {
  if (model.quantization()) {
    throw Error(model.dir() + " is already an NVFP4 checkpoint (" +
                std::string(io::quant_format_name(model.quantization()->format)) +
                "): quantize the unquantized model it was made from");
  }
}

QuantizeModelResult quantize_model(const infer::HfModel& model, std::span<const int32_t> calib,
                                   const QuantizeModelOptions& o,
                                   const std::function<void(size_t, size_t, const std::string&)>& progress) {
  if (!(o.act_percentile > 0.0 && o.act_percentile <= 100.0)) {
    throw Error("--act-scale percentile:" + std::to_string(o.act_percentile) + ": the percentile must be in (0, 100]");
  }
  if (calib.empty()) throw Error("quantize: no calibration tokens");
  require_unquantized(model);
  if (!(o.auto_fallback_kl >= 0.0 && std::isfinite(o.auto_fallback_kl))) {
    throw Error("--auto-fallback " + std::to_string(o.auto_fallback_kl) + ": a KL threshold is finite and >= 0 (nats)");
  }
  if (!(o.bf16_budget >= 0.0 && o.bf16_budget < 1.0)) {
    throw Error("--bf16-budget " + std::to_string(o.bf16_budget) + ": the share of the weights kept in BF16 is in [0, 1)");
  }
  if (o.auto_fallback_kl > 0.0 && o.bf16_budget > 0.0) throw Error("give --auto-fallback or --bf16-budget, not both");
  if ((o.auto_fallback_kl > 0.0 || o.bf16_budget > 0.0) && o.sensitivity_tokens.size() < 2) {
    throw Error("--auto-fallback and --bf16-budget need the per-layer sensitivity: held-out tokens to measure it on "
                "(at least 2)");
  }
  const model::ModelConfig& c = model.config();
  const auto idx = model::param_index(c);
  // Module names and which layers stay unquantized: the engine's plan (its --keep-bf16 errors too).
  infer::EngineOptions eo;
  eo.precision = infer::Precision::w4a16;
  eo.keep_bf16 = o.keep_bf16;
  auto plan = infer::resolve_linear_plan(c, eo, infer::Precision::fp32);
  const size_t n_block = plan.size() - 1;  // the head stays unquantized
  // A fused group keeps one precision (vLLM refuses a q/k/v or gate/up with some members quantized).
  std::vector<std::string> kept_with(plan.size());
  for (size_t i = 0; i < n_block; ++i) {
    if (plan[i].precision == infer::Precision::w4a16) continue;
    const auto [g0, g1] = fused_group(i, plan.size());
    for (size_t k = g0; k < g1; ++k) {
      if (plan[k].precision != infer::Precision::w4a16) continue;
      plan[k].precision = infer::Precision::fp32;
      kept_with[k] = plan[i].name;
    }
  }

  // Calibration: the FP32 CPU engine over the tokens, in windows.
  Calibrator cal(plan.size(), o.gptq);
  if (o.kv_cache_fp8 && o.device != "cpu") {
    throw Error("--kv-cache fp8: the K/V calibration runs on the CPU engine only for now (use --device cpu)");
  }
  KvAmax kv_amax(model.config().n_layer);
  run_windows(model, calib, o.window, &cal, o.device, o.kv_cache_fp8 ? &kv_amax : nullptr);

  // Weights, and the groups' shared amax (q/k/v; gate/up).
  const auto spec_of = [&](size_t i) { return block_linear_spec(idx, i); };
  // (One weight in memory at a time: each is read for its amax here and again when quantized.)
  const auto read_weight = [&](size_t i) {
    std::vector<float> v(static_cast<size_t>(model.specs()[spec_of(i)].numel));
    model.read_f32(spec_of(i), v);
    return v;
  };
  std::vector<float> amax(n_block, 0.0f);
  for (size_t i = 0; i < n_block; ++i) {
    for (float v : read_weight(i)) amax[i] = std::max(amax[i], std::fabs(v));
  }

  QuantizeModelResult r;
  r.calib_tokens = static_cast<int64_t>(calib.size());
  if (o.kv_cache_fp8) {
    r.k_amax = kv_amax.k;
    r.v_amax = kv_amax.v;
    io::KvCacheScales ks;
    for (float a : kv_amax.k) ks.k.push_back(kv_scale_from_amax(a));
    for (float a : kv_amax.v) ks.v.push_back(kv_scale_from_amax(a));
    r.kv_scales = std::move(ks);
  }
  for (size_t i = 0; i < n_block; ++i) {
    if (progress) progress(i, n_block, plan[i].name);
    const auto& s = model.specs()[spec_of(i)];
    const int64_t OC = s.shape[0], C = s.shape[1];
    LayerReport rep;
    rep.module = plan[i].name;
    rep.calib_rows = cal.rows(i);
    rep.input_amax = o.act_percentile == 100.0 ? cal.input_stats(i).amax() : cal.input_stats(i).percentile(o.act_percentile);
    if (!kept_with[i].empty()) {
      rep.why_not = "kept with its fused sibling " + kept_with[i] + " (--keep-bf16)";
    } else if (plan[i].precision != infer::Precision::w4a16) {
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
  if (!o.sensitivity_tokens.empty()) measure_and_fall_back(model, o, plan, r, progress);
  r.kept.clear();
  for (const auto& rep : r.report) {
    if (!rep.quantized) r.kept.push_back(rep.module);
  }
  r.kept.push_back("lm_head");
  // W4A4: how often held-out activations exceed the calibrated input amax.
  if (o.w4a4 && !o.holdout.empty()) {
    std::vector<float> threshold(plan.size(), 0.0f);
    for (size_t k = 0; k < r.report.size(); ++k) {  // report[k] is linear k
      if (r.report[k].quantized) threshold[k] = r.report[k].input_amax;
    }
    SaturationCounter sat(threshold);
    run_windows(model, o.holdout, o.window, &sat, o.device);
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
