// nvfp4 quantize MODEL OUT (--calib FILES | --calib-data SHARDS): post-training quantization of a Hugging Face model to an
// NVFP4 checkpoint in the ModelOpt or compressed-tensors layout (nvfp4/quantize_model.hpp,
// nvfp4/ptq_export.hpp). This file reads the calibration text, parses options and prints.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "common.hpp"
#include "infer_options.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_model.hpp"
#include "nvfp4/output_paths.hpp"
#include "nvfp4/ptq.hpp"
#include "nvfp4/ptq_export.hpp"
#include "nvfp4/quantize_model.hpp"
#include "nvfp4/token_shards.hpp"
#include "train/report.hpp"

namespace nvfp4::cli {

namespace {

struct QuantizeArgs {
  std::string model, out;
  std::vector<std::string> calib, calib_data, holdout;
  int64_t calib_tokens = 65536;
  int64_t holdout_tokens = 32768;
  uint64_t seed = 0;
  std::string format = "modelopt", scheme = "w4a4", scales = "max", act_scale = "max";
  std::string kv_cache = "model";  // fp8: calibrate and write ModelOpt's k_scale / v_scale
  bool gptq = false, act_order = false;
  double damp = 0.01;
  std::vector<std::string> keep_bf16;
  int window = 512;
  bool sensitivity = false;
  double auto_fallback = 0, bf16_budget = 0;
  int64_t sensitivity_tokens = 512;
  std::string device = "auto";
  std::string report;
  bool json = false;
};

// "max" -> 100; "percentile:P" -> P.
double parse_act_scale(const std::string& v) {
  if (v == "max") return 100.0;
  const std::string prefix = "percentile:";
  if (v.starts_with(prefix)) {
    try {
      size_t used = 0;
      const double p = std::stod(v.substr(prefix.size()), &used);
      if (used == v.size() - prefix.size() && p > 0 && p <= 100) return p;
    } catch (const std::exception&) {
    }
  }
  throw Error("--act-scale " + v + ": use max or percentile:P with P in (0, 100], e.g. percentile:99.99");
}

// The default calibration set: the main job's corpus (scripts/corpus.sh), its train split.
constexpr const char* kDefaultCorpus = "data/python-doc";

// The calibration tokens: each --calib file one document (the model's tokenizer, as `eval --text`),
// or the documents of each --calib-data shard (a dataset folder: its train split; neither given:
// the default corpus), a shard split before each of its end-of-text tokens (`nvfp4 data` puts one
// before every document). Every document is cut into pieces of --window tokens (at most the
// model's context; a shorter document stays whole, a longer one's short tail is left out); the
// pieces are shuffled with the seed, concatenated and cut to --calib-tokens, so the calibration
// windows come from many documents.
// `documents`: how many documents the tokens came from.
std::vector<int32_t> calibration_tokens(const QuantizeArgs& a, const infer::HfModel& m, size_t& documents) {
  if (!a.calib.empty() && !a.calib_data.empty()) throw Error("give --calib FILES or --calib-data SHARDS, not both");
  std::vector<std::string> data = a.calib_data;
  if (a.calib.empty() && data.empty()) {
    if (!is_dataset_folder(kDefaultCorpus)) {
      throw Error(std::string("give --calib FILES or --calib-data SHARDS (the default, the main job's corpus ") +
                  kDefaultCorpus + ", is not here: bash scripts/corpus.sh makes it)");
    }
    data = {kDefaultCorpus};
    if (!a.json) std::fprintf(stderr, "calibrating on %s (the default corpus), its train split\n", kDefaultCorpus);
  }
  std::vector<std::vector<int32_t>> docs;
  for (const std::string& f : io::expand_inputs(a.calib)) docs.push_back(m.encode_prompt(io::read_input_text(f)));
  if (!data.empty()) {
    const std::optional<int32_t> eot =
        m.has_tokenizer() ? std::optional<int32_t>(m.tokenizer().eot_token()) : std::nullopt;
    for (auto& [f, ids] : read_token_shards(data, io::Split::train, m, "--calib-data")) {
      size_t begin = 0;
      for (size_t k = 1; eot && k < ids.size(); ++k) {
        if (ids[k] != *eot) continue;
        docs.emplace_back(ids.begin() + static_cast<std::ptrdiff_t>(begin), ids.begin() + static_cast<std::ptrdiff_t>(k));
        begin = k;
      }
      docs.emplace_back(ids.begin() + static_cast<std::ptrdiff_t>(begin), ids.end());
    }
  }
  std::erase_if(docs, [](const std::vector<int32_t>& d) { return d.empty(); });
  if (docs.empty()) throw Error(a.calib.empty() ? "--calib-data: no tokens" : "--calib: no text in the files");
  const size_t w = static_cast<size_t>(std::min(a.window, m.config().seq_len));  // the engine's window
  std::vector<std::pair<size_t, size_t>> pieces;  // (document, first token)
  for (size_t d = 0; d < docs.size(); ++d) {
    if (docs[d].size() <= w) pieces.emplace_back(d, 0);
    for (size_t at = 0; docs[d].size() > w && at + w <= docs[d].size(); at += w) pieces.emplace_back(d, at);
  }
  std::mt19937_64 rng(a.seed);
  std::shuffle(pieces.begin(), pieces.end(), rng);
  std::vector<int32_t> ids;
  std::set<size_t> used;
  for (const auto& [d, at] : pieces) {
    if (static_cast<int64_t>(ids.size()) >= a.calib_tokens) break;
    const auto first = docs[d].begin() + static_cast<std::ptrdiff_t>(at);
    ids.insert(ids.end(), first, first + static_cast<std::ptrdiff_t>(std::min(w, docs[d].size() - at)));
    used.insert(d);
  }
  if (static_cast<int64_t>(ids.size()) > a.calib_tokens) ids.resize(static_cast<size_t>(a.calib_tokens));
  documents = used.size();
  return ids;
}

// The held-out tokens: every --holdout item in order — a dataset folder from `nvfp4 data` its val
// split's tokens, a text file its tokens (the model's tokenizer) — and of that stream the last
// --holdout-tokens (`eval --data` scores a split from its start: the two do not overlap while the
// split holds both).
std::vector<int32_t> holdout_tokens(const QuantizeArgs& a, const infer::HfModel& m) {
  std::vector<int32_t> ids;
  for (const std::string& x : a.holdout) {
    if (is_dataset_folder(x)) {
      for (auto& [f, t] : read_token_shards({x}, io::Split::val, m, "--holdout")) ids.insert(ids.end(), t.begin(), t.end());
      continue;
    }
    for (const std::string& f : io::expand_inputs({x})) {
      const auto d = m.encode_prompt(io::read_input_text(f));
      ids.insert(ids.end(), d.begin(), d.end());
    }
  }
  if (!a.holdout.empty() && ids.empty()) throw Error("--holdout: no tokens in " + a.holdout.front() + (a.holdout.size() > 1 ? " ..." : ""));
  if (static_cast<int64_t>(ids.size()) > a.holdout_tokens) {
    ids.erase(ids.begin(), ids.end() - static_cast<std::ptrdiff_t>(a.holdout_tokens));
  }
  return ids;
}

void run(const QuantizeArgs& a) {
  io::require_output_folder("OUT", a.out);
  const infer::HfModel m = infer::HfModel::open(a.model);
  ptq::require_unquantized(m);
  ptq::QuantizeModelOptions o;
  o.rule = ptq::parse_scale_rule(a.scales);
  o.gptq = a.gptq;
  o.gptq_options.damp = a.damp;
  o.gptq_options.act_order = a.act_order;
  if (a.scheme != "w4a4" && a.scheme != "w4a16") throw Error("--scheme " + a.scheme + ": use w4a4 or w4a16");
  o.w4a4 = a.scheme == "w4a4";
  o.act_percentile = parse_act_scale(a.act_scale);
  o.keep_bf16 = a.keep_bf16;
  o.window = a.window;
  ptq::ExportOptions eo;
  eo.config.format = io::parse_quant_format(a.format);
  eo.config.w4a4 = o.w4a4;
  eo.config.producer_version = NVFP4_VERSION;
  o.kv_cache_fp8 = infer::parse_kv_cache(a.kv_cache) == infer::KvCache::fp8;
  eo.config.kv_cache_fp8 = o.kv_cache_fp8;
  if (o.kv_cache_fp8 && eo.config.format != io::QuantFormat::modelopt) {
    throw Error("--kv-cache fp8 is written in ModelOpt checkpoints only (k_proj.k_scale / v_proj.v_scale); "
                "compressed-tensors' kv_cache_scheme is not written yet: use --format modelopt");
  }

  o.auto_fallback_kl = a.auto_fallback;
  o.bf16_budget = a.bf16_budget;
  o.sensitivity_scored = a.sensitivity_tokens;
  const bool sensitivity = a.sensitivity || a.auto_fallback > 0 || a.bf16_budget > 0 || !a.report.empty();
  if (!a.report.empty()) {
    if (!a.report.ends_with(".html")) throw Error("--report " + a.report + ": give a file name ending in .html");
    std::vector<std::string> inputs = m.input_files();
    io::refuse_output_over_input(a.report, inputs);
  }
  {
    EngineArgs e;
    e.device = a.device;
    o.device = engine_device(e);
  }

  size_t documents = 0;
  std::vector<int32_t> calib = calibration_tokens(a, m, documents);
  o.holdout = holdout_tokens(a, m);
  // The sensitivity's held-out tokens: --holdout, else the calibration stream's last
  // --sensitivity-tokens + 1 tokens, which are then not calibrated on.
  std::string sensitivity_source;
  if (sensitivity) {
    if (!o.holdout.empty()) {
      o.sensitivity_tokens = o.holdout;
      sensitivity_source = "--holdout";
    } else {
      const size_t h = static_cast<size_t>(a.sensitivity_tokens) + 1;
      if (2 * h > calib.size()) {
        throw Error("--sensitivity-tokens " + std::to_string(a.sensitivity_tokens) + ": holding out " + std::to_string(h) +
                    " of the " + std::to_string(calib.size()) + " calibration tokens would leave fewer than half to "
                    "calibrate on; give more calibration text, fewer --sensitivity-tokens, or --holdout FILES");
      }
      o.sensitivity_tokens.assign(calib.end() - static_cast<std::ptrdiff_t>(h), calib.end());
      calib.resize(calib.size() - h);
      sensitivity_source = "the calibration stream's last " + std::to_string(h) + " tokens, not calibrated on";
    }
  }
  const ptq::Coverage cov = o.holdout.empty() ? ptq::Coverage{} : ptq::token_coverage(calib, o.holdout);
  const std::string hash = [&] {
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx",
                  static_cast<unsigned long long>(io::fnv1a64(std::string_view(
                      reinterpret_cast<const char*>(calib.data()), calib.size() * sizeof(int32_t)))));
    return std::string("fnv1a64:") + hex;
  }();
  // Progress: one line redrawn on a terminal, a line per layer otherwise (logs), none with --json.
  const bool tty = isatty(fileno(stderr)) != 0;
  const ptq::QuantizeModelResult r =
      ptq::quantize_model(m, calib, o, [&](size_t i, size_t n, const std::string& name) {
        if (a.json) return;
        if (name == "sensitivity") {
          std::fprintf(stderr, tty ? "\r\033[Ksensitivity: layer %zu/%zu" : "sensitivity: layer %zu/%zu\n", i, n);
        } else {
          std::fprintf(stderr, tty ? "\r\033[K[%zu/%zu] %s" : "[%zu/%zu] %s\n", i + 1, n, name.c_str());
        }
      });
  if (!a.json && tty) std::fprintf(stderr, "\n");
  eo.config.ignore = r.kept;
  eo.kv_scales = r.kv_scales;
  eo.metadata = {{"producer", "nvfp4 " NVFP4_VERSION},
                 {"scheme", a.scheme},
                 {"scale_rule", a.scales},
                 {"gptq", a.gptq ? "damp " + std::to_string(a.damp) + (a.act_order ? ", act_order" : "") : "off"},
                 {"act_scale", a.act_scale},
                 {"calib_tokens", std::to_string(calib.size())},
                 {"calib_device", o.device},
                 {"calib_hash", hash},
                 {"kept_bf16", nlohmann::json(r.kept).dump()},
                 {"kv_cache", a.kv_cache}};
  // Sensitivity: the whole model before/after the fallback, and each measured layer's KL alone.
  nlohmann::ordered_json sens;
  if (r.before) {
    nlohmann::ordered_json per = nlohmann::ordered_json::object();
    for (const auto& l : r.report) {
      if (std::isfinite(l.kl)) per[l.module] = {{"kl", l.kl}, {"output_rel_error", l.output_rel_error}, {"fallback", l.fallback}};
    }
    sens = {{"device", o.device},
            {"tokens", sensitivity_source},
            {"scored", r.sensitivity_scored},
            {"unquantized_ppl", r.unquantized_ppl},
            {"before", {{"ppl", r.before->ppl}, {"kl", r.before->kl}, {"top1_agree", r.before->top1_agree}}},
            {"after", {{"ppl", r.after->ppl}, {"kl", r.after->kl}, {"top1_agree", r.after->top1_agree}}},
            {"fallback_rule", r.fallback_rule},
            {"fallback_weight_share", r.block_weights ? double(r.fallback_weights) / double(r.block_weights) : 0.0},
            {"layers", per}};
    eo.metadata["fallback_policy"] = r.fallback_rule.empty() ? "none" : r.fallback_rule;
    eo.metadata["sensitivity"] = sens.dump();
  }
  if (!o.holdout.empty()) {
    eo.metadata["holdout_tokens"] = std::to_string(o.holdout.size());
    eo.metadata["holdout_js_divergence_bits"] = std::to_string(cov.js_divergence_bits);
    if (o.w4a4) eo.metadata["holdout_saturated_blocks"] = std::to_string(r.holdout_saturated) + " of " + std::to_string(r.holdout_blocks);
  }
  const auto files = ptq::write_quantized_folder(a.model, a.out, r.layers, eo);
  if (!a.report.empty()) {
    train::PtqReport rep;
    rep.title = "nvfp4 quantize: " + a.model;
    rep.model_description = m.hf_config().architecture + ", " + m.config().to_json();
    rep.command = "nvfp4 quantize " + a.model + " " + a.out + " --format " + a.format + " --scheme " + a.scheme +
                  " --scales " + a.scales + (a.gptq ? " --gptq" : "") + " --act-scale " + a.act_scale;
    rep.calibration = std::to_string(calib.size()) + " tokens from " + std::to_string(documents) + " documents, " + hash;
    rep.sensitivity = std::to_string(r.sensitivity_scored) + " scored tokens: " + sensitivity_source + ", on " + o.device;
    rep.fallback_rule = r.fallback_rule;
    rep.threshold = o.auto_fallback_kl;
    for (const auto& l : r.report) {
      if (std::isfinite(l.kl)) rep.layers.push_back({l.module, l.kl, l.output_rel_error, l.fallback});
    }
    const double nan = std::nan("");
    rep.quality = {{"unquantized", r.unquantized_ppl, nan, nan},
                   {"every layer quantized", r.before->ppl, r.before->kl, r.before->top1_agree}};
    if (!r.fallback_rule.empty()) rep.quality.push_back({"after the fallback", r.after->ppl, r.after->kl, r.after->top1_agree});
    io::write_text_file_atomic(a.report, train::render_ptq_html(rep));
  }

  nlohmann::ordered_json j = {{"model", a.model},
                              {"out", a.out},
                              {"format", a.format},
                              {"scheme", a.scheme},
                              {"scales", a.scales},
                              {"gptq", a.gptq},
                              {"act_scale", a.act_scale},
                              {"calib_documents", documents},
                              {"calib_tokens", calib.size()},
                              {"calib_device", o.device},
                              {"calib_hash", hash},
                              {"quantized_layers", r.layers.size()},
                              {"kept_bf16", r.kept},
                              {"files", files}};
  const auto share = [](int64_t k, int64_t n) { return n ? static_cast<double>(k) / static_cast<double>(n) : 0.0; };
  if (!o.holdout.empty()) {
    j["coverage"] = {{"calib_tokens", cov.calib_tokens},
                     {"calib_distinct", cov.calib_distinct},
                     {"holdout_tokens", cov.eval_tokens},
                     {"holdout_distinct", cov.eval_distinct},
                     {"holdout_unseen_share", cov.eval_unseen_share},
                     {"js_divergence_bits", cov.js_divergence_bits}};
    if (o.w4a4) j["holdout_saturated_share"] = share(r.holdout_saturated, r.holdout_blocks);
  }
  if (r.before) {
    sens.erase("layers");  // per layer below
    j["sensitivity"] = sens;
  }
  auto layers = nlohmann::ordered_json::array();
  for (const auto& l : r.report) {
    nlohmann::ordered_json x = {{"module", l.module},
                                {"quantized", l.quantized},
                                {"why_not", l.why_not},
                                {"input_amax", l.input_amax},
                                {"weight_rel_error", l.weight_rel_error}};
    if (l.holdout_blocks) x["holdout_saturated_share"] = share(l.holdout_saturated, l.holdout_blocks);
    if (std::isfinite(l.kl)) {
      x["kl"] = l.kl;
      x["output_rel_error"] = l.output_rel_error;
      x["fallback"] = l.fallback;
    }
    layers.push_back(x);
  }
  j["layers"] = layers;
  if (r.kv_scales) {
    auto kv = nlohmann::ordered_json::array();
    for (size_t l = 0; l < r.kv_scales->k.size(); ++l) {
      kv.push_back({{"layer", l}, {"k_amax", r.k_amax[l]}, {"v_amax", r.v_amax[l]}, {"k_scale", r.kv_scales->k[l]},
                    {"v_scale", r.kv_scales->v[l]}});
    }
    j["kv_cache"] = kv;
  }
  if (a.json) {
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::printf("%s -> %s (%s, %s, scales %s%s; %zu calibration tokens from %zu documents, %s)\n", a.model.c_str(),
              a.out.c_str(), a.format.c_str(), a.scheme.c_str(), a.scales.c_str(), a.gptq ? ", GPTQ" : "",
              calib.size(), documents, hash.c_str());
  if (r.kv_scales) {
    std::printf("FP8 KV cache scales (amax / 448), per layer k_scale / v_scale:");
    for (size_t l = 0; l < r.kv_scales->k.size(); ++l) std::printf(" %g/%g", r.kv_scales->k[l], r.kv_scales->v[l]);
    std::printf("\n");
  }
  const bool sat = o.w4a4 && !o.holdout.empty();
  const bool kl = r.before.has_value();
  std::printf("%-48s %12s %14s%s%s\n", "layer", "input amax", "weight error", kl ? "   KL alone  out error" : "",
              sat ? "  held-out blocks above" : "");
  for (const auto& l : r.report) {
    if (!l.quantized && !l.fallback) {
      std::printf("%-48s %12s %14s  (%s)\n", l.module.c_str(), "-", "BF16", l.why_not.c_str());
      continue;
    }
    std::printf("%-48s %12.4g %13.3f%%", l.module.c_str(), l.input_amax, 100 * l.weight_rel_error);
    if (kl) std::printf("  %10.3g %9.4f", l.kl, l.output_rel_error);
    if (sat) std::printf("  %10.4f%%", 100 * share(l.holdout_saturated, l.holdout_blocks));
    std::printf("%s\n", l.fallback ? "  -> BF16 (fallback)" : "");
  }
  std::printf("%zu layers quantized; kept unquantized: %s\n", r.layers.size(), nlohmann::json(r.kept).dump().c_str());
  if (kl) {
    std::printf("on %lld scored held-out tokens (%s; %s): unquantized perplexity %.4f; every layer quantized %.4f, KL %.4g nats, "
                "top-1 %.2f%%\n",
                static_cast<long long>(r.sensitivity_scored), sensitivity_source.c_str(), o.device.c_str(),
                r.unquantized_ppl, r.before->ppl, r.before->kl, 100 * r.before->top1_agree);
    if (!r.fallback_rule.empty()) {
      std::printf("%s: %.2f%% of the block weights kept in BF16 -> perplexity %.4f, KL %.4g nats, top-1 %.2f%%\n",
                  r.fallback_rule.c_str(), 100 * share(r.fallback_weights, r.block_weights), r.after->ppl, r.after->kl,
                  100 * r.after->top1_agree);
    }
  }
  if (!o.holdout.empty()) {
    std::printf("held-out text: %zu tokens, %lld distinct (%lld in calibration), %.2f%% of them unseen in calibration, "
                "Jensen-Shannon divergence %.3f bits\n",
                o.holdout.size(), static_cast<long long>(cov.eval_distinct), static_cast<long long>(cov.calib_distinct),
                100 * cov.eval_unseen_share, cov.js_divergence_bits);
    if (sat) {
      std::printf("W4A4 input blocks above their calibrated amax on it: %.4f%% (%lld of %lld)\n",
                  100 * share(r.holdout_saturated, r.holdout_blocks), static_cast<long long>(r.holdout_saturated),
                  static_cast<long long>(r.holdout_blocks));
    }
  }
}

}  // namespace

void register_quantize(CLI::App& app) {
  const auto [c, a] = add_command<QuantizeArgs>(app, "quantize",
                                                 "Post-training quantization of a Hugging Face model to an NVFP4 checkpoint");
  c->add_option("MODEL", a->model, "The model folder")->required();
  c->add_option("OUT", a->out, "The folder to write (new, or without a model in it)")->required();
  c->add_option("--calib", a->calib, "Calibration text files (each one document; folders and globs expand)");
  c->add_option("--calib-data", a->calib_data,
                "Calibration token shards, or a dataset folder from `nvfp4 data` (its train split), split into "
                "documents at end-of-text; neither this nor --calib: data/python-doc, the main job's corpus");
  c->add_option("--holdout", a->holdout,
                "Held-out text files or a dataset folder (its val split): their token coverage by the calibration "
                "set, (W4A4) the share of input blocks above the calibrated amax, and the sensitivity pass's tokens");
  c->add_option("--holdout-tokens", a->holdout_tokens, "Held-out tokens at most (the stream's last)")
      ->capture_default_str()
      ->transform(integer_in(2, int64_t{1} << 40));
  c->add_option("--calib-tokens", a->calib_tokens, "Calibration tokens at most")
      ->capture_default_str()
      ->transform(integer_in(1, int64_t{1} << 40));
  c->add_option("--seed", a->seed, "Shuffles the calibration documents")->capture_default_str();
  c->add_option("--format", a->format, "modelopt (vLLM modelopt_fp4, TensorRT-LLM) or compressed-tensors")
      ->capture_default_str();
  c->add_option("--scheme", a->scheme, "w4a4 (weights and activations NVFP4) or w4a16 (weights only)")
      ->capture_default_str();
  c->add_option("--scales", a->scales, "Block scales: max, mse or 4over6")->capture_default_str();
  c->add_flag("--gptq", a->gptq, "GPTQ on the NVFP4 grid with the calibration Hessians");
  c->add_option("--gptq-damp", a->damp, "GPTQ damping, a fraction of the Hessian's mean diagonal")->capture_default_str();
  c->add_flag("--act-order", a->act_order, "GPTQ: columns in decreasing Hessian diagonal (scales fixed up front)");
  c->add_option("--act-scale", a->act_scale, "W4A4 input scales: max or percentile:P of |x| over calibration")
      ->capture_default_str();
  c->add_option("--kv-cache", a->kv_cache,
                "model (no KV cache scales) | fp8: calibrate each layer's K (after RoPE) and V amax and write "
                "k_scale = amax/448, v_scale = amax/448 with kv_cache_quant_algo FP8 (ModelOpt format; CPU calibration)")
      ->capture_default_str()
      ->check(CLI::IsMember({"model", "fp8"}));
  c->add_option("--keep-bf16", a->keep_bf16, "Modules left unquantized (names or globs, e.g. '*.down_proj')");
  c->add_option("--window", a->window, "Calibration tokens per forward")
      ->capture_default_str()
      ->transform(integer_in(2, 1 << 20));
  c->add_flag("--sensitivity", a->sensitivity,
              "Per-layer sensitivity on held-out tokens: KL and output error with only that layer quantized");
  c->add_option("--auto-fallback", a->auto_fallback,
                "Keep in BF16 every fused group with a layer above this KL (nats), e.g. 0.05 (implies --sensitivity)")
      ->check(CLI::Range(0.0, 1e9));
  c->add_option("--bf16-budget", a->bf16_budget,
                "Keep in BF16 the most sensitive groups up to this share of the weights, e.g. 0.1 (implies --sensitivity)")
      ->check(CLI::Range(0.0, 0.999999));
  c->add_option("--sensitivity-tokens", a->sensitivity_tokens,
                "Scored held-out tokens of the per-layer pass (without --holdout: taken off the calibration stream)")
      ->capture_default_str()
      ->transform(integer_in(1, int64_t{1} << 30));
  c->add_option("--device", a->device,
                "The engine of calibration and sensitivity: cpu (the FP32 model), cuda (the BF16 model) or auto")
      ->capture_default_str();
  c->add_option("--report", a->report,
                "An HTML report: per-layer sensitivity, the fallback set, the model before and after (implies "
                "--sensitivity)");
  c->add_flag("--json", a->json, "Print the result as JSON");
  c->callback([a] { run(*a); });
}

}  // namespace nvfp4::cli
