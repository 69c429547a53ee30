// nvfp4 quantize MODEL OUT (--calib FILES | --calib-data SHARDS): post-training quantization of a Hugging Face model to an
// NVFP4 checkpoint in the ModelOpt or compressed-tensors layout (nvfp4/quantize_model.hpp,
// nvfp4/ptq_export.hpp). This file reads the calibration text, parses options and prints.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <random>

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

namespace nvfp4::cli {

namespace {

struct QuantizeArgs {
  std::string model, out;
  std::vector<std::string> calib, calib_data, holdout;
  int64_t calib_tokens = 65536;
  uint64_t seed = 0;
  std::string format = "modelopt", scheme = "w4a4", scales = "max", act_scale = "max";
  bool gptq = false, act_order = false;
  double damp = 0.01;
  std::vector<std::string> keep_bf16;
  int window = 512;
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

// The calibration tokens: each --calib file one document (the model's tokenizer, as `eval --text`),
// or each --calib-data shard one (a dataset folder: its train split); the documents shuffled with
// the seed, concatenated, cut to --calib-tokens.
std::vector<int32_t> calibration_tokens(const QuantizeArgs& a, const infer::HfModel& m, size_t& documents) {
  if (a.calib.empty() == a.calib_data.empty()) throw Error("give --calib FILES or --calib-data SHARDS (one of them)");
  std::vector<std::vector<int32_t>> docs;
  for (const std::string& f : io::expand_inputs(a.calib)) docs.push_back(m.encode_prompt(io::read_input_text(f)));
  if (!a.calib_data.empty()) {
    for (auto& [f, ids] : read_token_shards(a.calib_data, io::Split::train, m, "--calib-data")) docs.push_back(std::move(ids));
  }
  if (docs.empty()) throw Error("--calib: no files");
  documents = docs.size();
  std::mt19937_64 rng(a.seed);
  std::shuffle(docs.begin(), docs.end(), rng);
  std::vector<int32_t> ids;
  for (const auto& d : docs) {
    ids.insert(ids.end(), d.begin(), d.end());
    if (static_cast<int64_t>(ids.size()) >= a.calib_tokens) break;
  }
  if (static_cast<int64_t>(ids.size()) > a.calib_tokens) ids.resize(static_cast<size_t>(a.calib_tokens));
  return ids;
}

// The held-out tokens: every --holdout file, in order.
std::vector<int32_t> holdout_tokens(const QuantizeArgs& a, const infer::HfModel& m) {
  std::vector<int32_t> ids;
  for (const std::string& f : io::expand_inputs(a.holdout)) {
    const auto d = m.encode_prompt(io::read_input_text(f));
    ids.insert(ids.end(), d.begin(), d.end());
  }
  if (!a.holdout.empty() && ids.empty()) throw Error("--holdout: no files");
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

  size_t documents = 0;
  const std::vector<int32_t> calib = calibration_tokens(a, m, documents);
  o.holdout = holdout_tokens(a, m);
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
        if (!a.json) std::fprintf(stderr, tty ? "\r\033[K[%zu/%zu] %s" : "[%zu/%zu] %s\n", i + 1, n, name.c_str());
      });
  if (!a.json && tty) std::fprintf(stderr, "\n");
  eo.config.ignore = r.kept;
  eo.metadata = {{"producer", "nvfp4 " NVFP4_VERSION},
                 {"scheme", a.scheme},
                 {"scale_rule", a.scales},
                 {"gptq", a.gptq ? "damp " + std::to_string(a.damp) + (a.act_order ? ", act_order" : "") : "off"},
                 {"act_scale", a.act_scale},
                 {"calib_tokens", std::to_string(calib.size())},
                 {"calib_hash", hash},
                 {"kept_bf16", nlohmann::json(r.kept).dump()}};
  if (!o.holdout.empty()) {
    eo.metadata["holdout_tokens"] = std::to_string(o.holdout.size());
    eo.metadata["holdout_js_divergence_bits"] = std::to_string(cov.js_divergence_bits);
    if (o.w4a4) eo.metadata["holdout_saturated_blocks"] = std::to_string(r.holdout_saturated) + " of " + std::to_string(r.holdout_blocks);
  }
  const auto files = ptq::write_quantized_folder(a.model, a.out, r.layers, eo);

  nlohmann::ordered_json j = {{"model", a.model},
                              {"out", a.out},
                              {"format", a.format},
                              {"scheme", a.scheme},
                              {"scales", a.scales},
                              {"gptq", a.gptq},
                              {"act_scale", a.act_scale},
                              {"calib_documents", documents},
                              {"calib_tokens", calib.size()},
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
  auto layers = nlohmann::ordered_json::array();
  for (const auto& l : r.report) {
    nlohmann::ordered_json x = {{"module", l.module},
                                {"quantized", l.quantized},
                                {"why_not", l.why_not},
                                {"input_amax", l.input_amax},
                                {"weight_rel_error", l.weight_rel_error}};
    if (l.holdout_blocks) x["holdout_saturated_share"] = share(l.holdout_saturated, l.holdout_blocks);
    layers.push_back(x);
  }
  j["layers"] = layers;
  if (a.json) {
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::printf("%s -> %s (%s, %s, scales %s%s; %zu calibration tokens from %zu documents, %s)\n", a.model.c_str(),
              a.out.c_str(), a.format.c_str(), a.scheme.c_str(), a.scales.c_str(), a.gptq ? ", GPTQ" : "",
              calib.size(), documents, hash.c_str());
  const bool sat = o.w4a4 && !o.holdout.empty();
  std::printf("%-48s %12s %14s%s\n", "layer", "input amax", "weight error", sat ? "  held-out blocks above" : "");
  for (const auto& l : r.report) {
    if (!l.quantized) {
      std::printf("%-48s %12s %14s  (%s)\n", l.module.c_str(), "-", "BF16", l.why_not.c_str());
      continue;
    }
    std::printf("%-48s %12.4g %13.3f%%", l.module.c_str(), l.input_amax, 100 * l.weight_rel_error);
    if (sat) std::printf("  %10.4f%%", 100 * share(l.holdout_saturated, l.holdout_blocks));
    std::printf("\n");
  }
  std::printf("%zu layers quantized; kept unquantized: %s\n", r.layers.size(), nlohmann::json(r.kept).dump().c_str());
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
                "Calibration token shards (each one document), or a dataset folder from `nvfp4 data` (its train split)");
  c->add_option("--holdout", a->holdout,
                "Held-out text files: their token coverage by the calibration set and (W4A4) the share of input "
                "blocks above the calibrated amax");
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
  c->add_option("--keep-bf16", a->keep_bf16, "Modules left unquantized (names or globs, e.g. '*.down_proj')");
  c->add_option("--window", a->window, "Calibration tokens per forward")
      ->capture_default_str()
      ->transform(integer_in(2, 1 << 20));
  c->add_flag("--json", a->json, "Print the result as JSON");
  c->callback([a] { run(*a); });
}

}  // namespace nvfp4::cli
