// nvfp4 eval MODEL (--text FILES | --data SHARDS | --ids FILE.jsonl): perplexity, bits per byte,
// and against a reference precision KL, top-1 agreement and per-layer sensitivity
// (nvfp4/evaluate.hpp). This file reads the inputs, parses options and prints.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>

#include "common.hpp"
#include "infer_options.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/evaluate.hpp"
#include "nvfp4/hf_tokenizer.hpp"
#include "nvfp4/output_paths.hpp"
#include "nvfp4/safetensors.hpp"
#include "nvfp4/token_shards.hpp"

namespace nvfp4::cli {

namespace {

struct EvalArgs {
  EngineArgs engine;
  std::vector<std::string> text, data;
  std::string ids;
  std::string reference, reference_model;
  int ctx = 0, stride = 0, batch = 4;
  int64_t max_tokens = 0;
  bool per_layer = false;
  int64_t per_layer_tokens = 512;
  std::string save_logits;
  bool json = false;
};

// Bytes of the text the scored tokens (all but the first) spell, special tokens left out; -1
// without a tokenizer.
int64_t scored_bytes(const infer::HfModel& m, const std::vector<int32_t>& ids) {
  if (!m.has_tokenizer() || ids.size() < 2) return ids.size() < 2 ? 0 : -1;
  const std::span<const int32_t> rest(ids.data() + 1, ids.size() - 1);
  if (const auto* hf = dynamic_cast<const io::HfTokenizer*>(&m.tokenizer())) {
    return static_cast<int64_t>(hf->decode(rest, /*skip_special=*/true).size());
  }
  // The byte tokenizer spells end-of-text "<|endoftext|>"; it stands for no bytes of the text.
  std::vector<int32_t> text;
  for (int32_t t : rest) {
    if (t != m.tokenizer().eot_token()) text.push_back(t);
  }
  return static_cast<int64_t>(m.tokenizer().decode(text).size());
}

std::vector<infer::EvalDocument> read_documents(const EvalArgs& a, const infer::HfModel& m) {
  std::vector<infer::EvalDocument> docs;
  const int32_t V = m.config().vocab;
  if (!a.text.empty()) {
    for (const std::string& f : io::expand_inputs(a.text)) {
      const std::string text = io::read_input_text(f);
      infer::EvalDocument d;
      d.ids = m.encode_prompt(text);
      d.bytes = scored_bytes(m, d.ids);
      d.name = f;
      docs.push_back(std::move(d));
    }
  } else if (!a.data.empty()) {
    for (auto& [f, ids] : read_token_shards(a.data, io::Split::val, m, "--data")) {
      infer::EvalDocument d;
      d.ids = std::move(ids);
      d.bytes = scored_bytes(m, d.ids);
      d.name = f;
      docs.push_back(std::move(d));
    }
  } else {
    if (std::filesystem::is_directory(a.ids)) throw Error("--ids " + a.ids + ": is a folder; give a JSON lines file");
    std::ifstream in(a.ids);
    if (!in) throw Error(a.ids + ": cannot be read");
    std::string line;
    for (int64_t n = 1; std::getline(in, line); ++n) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const auto j = nlohmann::json::parse(line, nullptr, false);
      const std::string where = a.ids + " line " + std::to_string(n);
      if (j.is_discarded() || !j.is_array()) throw Error(where + ": not a JSON array of token ids");
      infer::EvalDocument d;
      for (const auto& x : j) {
        // Unsigned JSON integers are checked as such: a huge one read as int64 would wrap.
        const bool id = x.is_number_unsigned() ? x.get<uint64_t>() < static_cast<uint64_t>(V)
                        : x.is_number_integer() && x.get<int64_t>() >= 0 && x.get<int64_t>() < V;
        if (!id) throw Error(where + ": token " + x.dump() + " is not an id in [0, " + std::to_string(V) + ")");
        d.ids.push_back(x.get<int32_t>());
      }
      if (d.ids.size() < 2) throw Error(where + ": needs at least 2 tokens (the first is never predicted)");
      if (!a.save_logits.empty() && static_cast<int64_t>(d.ids.size()) > m.config().seq_len) {
        throw Error(where + ": " + std::to_string(d.ids.size()) + " tokens; --save-logits runs each line whole, " +
                    "and the model's max_position_embeddings is " + std::to_string(m.config().seq_len) +
                    " (shorten the line)");
      }
      d.bytes = scored_bytes(m, d.ids);
      d.name = where;
      docs.push_back(std::move(d));
    }
    if (docs.empty()) throw Error(a.ids + ": no lines of token ids");
  }
  return docs;
}

// Every --ids line's logits (T, V) as "logits.<line index>" F32, for checking against another
// implementation (tests/hf/check_hf_models.py).
void save_logits(infer::Engine& e, const std::vector<infer::EvalDocument>& docs, const std::string& path) {
  std::vector<std::vector<float>> all(docs.size());
  for (size_t i = 0; i < docs.size(); ++i) {
    e.reset(0);
    const infer::SeqChunk ch{0, docs[i].ids, true};
    e.forward(std::span<const infer::SeqChunk>(&ch, 1), all[i]);
    if (!std::all_of(all[i].begin(), all[i].end(), [](float x) { return std::isfinite(x); })) {
      throw Error("--save-logits: the logits of " + docs[i].name + " are NaN or infinite (the activations overflow); "
                  "nothing was written");
    }
  }
  std::vector<io::TensorRef> refs;
  for (size_t i = 0; i < docs.size(); ++i) {
    refs.push_back({"logits." + std::to_string(i), DType::F32,
                    {static_cast<int64_t>(docs[i].ids.size()), e.config().vocab},
                    std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(all[i].data()), all[i].size() * 4)});
  }
  io::write_file(path, refs, {{"nvfp4.device", std::string(e.device())}});
}

void run(EvalArgs& a) {
  // Options first: a mistake is an error before a large model loads.
  const int given = !a.text.empty() + !a.data.empty() + !a.ids.empty();
  if (given != 1) throw Error("eval: give exactly one of --text FILES, --data SHARDS, --ids FILE.jsonl");
  if (!a.save_logits.empty()) {
    if (a.ids.empty()) throw Error("--save-logits needs --ids (one tensor per line)");
    const std::filesystem::path out(a.save_logits), folder = out.parent_path();
    if (std::filesystem::is_directory(out)) throw Error("--save-logits " + a.save_logits + ": is a folder; give a file name");
    if (!folder.empty() && !std::filesystem::is_directory(folder)) {
      throw Error("--save-logits " + a.save_logits + ": the folder " + folder.string() + " does not exist; create it first");
    }
  }
  if (a.ctx > 0 && a.stride > a.ctx) {
    throw Error("--stride " + std::to_string(a.stride) + " must be in [1, --ctx = " + std::to_string(a.ctx) + "]");
  }
  const std::string device = engine_device(a.engine);
  const infer::Precision precision = engine_precision(a.engine, device);
  if (!a.reference.empty()) device_precision(a.reference, device, "--reference");
  const infer::HfModel model = infer::HfModel::open(a.engine.model);
  if (model.quantization()) {
    const std::string what = a.engine.model + " is an NVFP4 checkpoint (" +
                             std::string(io::quant_format_name(model.quantization()->format)) + ")";
    if (a.per_layer) {
      throw Error("--per-layer quantizes one layer at a time, but " + what +
                  ": every stored layer is quantized already (run --per-layer on the unquantized model)");
    }
    if (!a.reference.empty() && a.reference_model.empty()) {
      throw Error("--reference " + a.reference + ": " + what + ", whose reference is the unquantized model; give "
                  "--reference-model DIR (the folder it was quantized from)");
    }
  }
  if (a.per_layer && !infer::is_quantized(precision)) {
    throw Error("--per-layer: --precision " + std::string(infer::precision_name(precision)) +
                " quantizes no linear layer (choose --precision w4a16, w4a4 or fp8)");
  }
  std::optional<infer::HfModel> reference_model;
  if (!a.reference_model.empty()) {
    reference_model.emplace(infer::HfModel::open(a.reference_model));
    if (reference_model->config().to_json() != model.config().to_json()) {
      throw Error("--reference-model " + a.reference_model + ": its architecture differs from " + a.engine.model +
                  "'s (" + reference_model->config().to_json() + " vs " + model.config().to_json() +
                  "); the reference must be the same model unquantized");
    }
  }
  if (!a.save_logits.empty()) {
    std::vector<std::string> inputs = model.input_files();
    inputs.push_back(a.ids);
    io::refuse_output_over_input(a.save_logits, inputs);
  }
  std::vector<infer::EvalDocument> docs = read_documents(a, model);
  if (a.max_tokens > 0) {  // the first documents, the last one cut: at most max_tokens scored
    int64_t left = a.max_tokens;
    size_t keep = 0;
    for (; keep < docs.size() && left > 0; ++keep) {
      auto& d = docs[keep];
      const int64_t scored = std::max<int64_t>(0, static_cast<int64_t>(d.ids.size()) - 1);
      if (scored > left) {
        d.ids.resize(static_cast<size_t>(left + 1));
        d.bytes = scored_bytes(model, d.ids);
      }
      left -= std::min(scored, left);
    }
    docs.resize(keep);
  }
  int64_t longest = 0;
  for (const auto& d : docs) longest = std::max<int64_t>(longest, static_cast<int64_t>(d.ids.size()));
  if (longest < 2) {
    throw Error("eval: nothing to score: " + docs.front().name + (docs.size() > 1 ? " and every other input" : "") +
                " holds fewer than 2 tokens (the first token is never predicted)" +
                (a.text.empty() ? "" : "; is the text empty?"));
  }
  const int64_t seq_len = model.config().seq_len;
  if (a.ctx > seq_len) {
    throw Error("--ctx " + std::to_string(a.ctx) + " exceeds the model's max_position_embeddings " +
                std::to_string(seq_len) + "; give --ctx " + std::to_string(seq_len) + " or less");
  }
  const int ctx = a.ctx > 0 ? a.ctx : static_cast<int>(std::min<int64_t>({longest, seq_len, 4096}));
  if (a.stride > ctx) {
    throw Error("--stride " + std::to_string(a.stride) + " must be in [1, " + std::to_string(ctx) +
                "], the window length (--ctx defaults to the longest document, " + std::to_string(ctx) + " tokens)");
  }
  const int context = a.save_logits.empty() ? ctx : static_cast<int>(std::max<int64_t>(ctx, longest));
  // No more sequence slots than windows: each slot holds a whole KV cache.
  const int64_t windows = static_cast<int64_t>(infer::sliding_windows(docs, ctx, a.stride > 0 ? a.stride : ctx).size());
  const int sequences = static_cast<int>(std::clamp<int64_t>(windows, 1, a.batch));
  const auto engine = infer::make_engine(model, engine_options(a.engine, device, sequences, context), device);
  std::unique_ptr<infer::Engine> reference;
  if (!a.reference.empty() || reference_model) {
    EngineArgs r = a.engine;
    r.precision = a.reference;  // empty with --reference-model alone: the device's unquantized precision
    r.keep_bf16.clear();
    r.kv_cache = "model";  // the reference keeps the unquantized cache
    reference = infer::make_engine(reference_model ? *reference_model : model, engine_options(r, device, sequences, context),
                                   device);
  }
  if (!a.save_logits.empty()) save_logits(*engine, docs, a.save_logits);
  infer::EvalOptions o;
  o.ctx = ctx;
  o.stride = a.stride;
  o.per_layer = a.per_layer;
  o.per_layer_tokens = a.per_layer_tokens;
  const bool bar = isatty(2) != 0;
  o.progress = [bar](int64_t done, int64_t total, const std::string& what) {
    if (!bar) return;
    std::cerr << "\r" << what << " " << done << " / " << total << (done == total ? "\n" : "") << std::flush;
  };
  const infer::EvalResult r = infer::evaluate(*engine, reference.get(), docs, o);

  const std::string precision_text = run_precision_text(*engine, model, precision);
  const infer::Precision reference_precision =
      a.reference.empty() ? engine_precision(EngineArgs{}, device) : device_precision(a.reference, device, "--reference");
  const std::string reference_text =
      !reference ? ""
      : reference_model
          ? run_precision_text(*reference, *reference_model, reference_precision) + " of " + a.reference_model
          : a.reference;
  if (a.json) {
    nlohmann::ordered_json j;
    j["model"] = a.engine.model;
    j["device"] = device;
    j["precision"] = precision_text;
    j["ctx"] = ctx;
    j["stride"] = a.stride > 0 ? a.stride : ctx;
    j["documents"] = docs.size();
    j["windows"] = r.windows;
    j["tokens"] = r.tokens;
    j["nll"] = r.nll;
    j["ppl"] = r.ppl;
    j["bits_per_byte"] = r.bits_per_byte ? nlohmann::ordered_json(*r.bits_per_byte) : nlohmann::ordered_json();
    j["bytes"] = r.bytes;
    if (reference) {
      j["reference"] = reference_text;
      j["reference_nll"] = *r.reference_nll;
      j["reference_ppl"] = std::exp(*r.reference_nll);
      j["kl_mean"] = *r.kl_mean;
      j["top1_agree"] = *r.top1_agree;
    }
    if (r.guard.total_rows() > 0) {
      j["fallback_rate"] = r.guard.rate();
      j["fallback_rows"] = r.guard.total_fallbacks();
    }
    if (a.per_layer) {
      auto layers = nlohmann::ordered_json::array();
      for (const auto& s : r.per_layer) {
        layers.push_back({{"layer", s.name}, {"kl_mean", s.kl_mean}, {"rel_error", s.rel_error}, {"flagged", s.flagged}});
      }
      j["per_layer"] = layers;
    }
    j["seconds"] = r.seconds;
    std::cout << json_text(j) << "\n";
    return;
  }
  std::cout << "tokens " << r.tokens << " (" << r.windows << " windows of up to " << ctx << ")\n"
            << "nll " << fixed(r.nll, 5) << " nats/token, perplexity " << fixed(r.ppl, 4);
  if (r.bits_per_byte) std::cout << ", " << fixed(*r.bits_per_byte, 4) << " bits/byte";
  std::cout << "  [" << precision_text << " on " << device << "]\n";
  if (reference) {
    std::cout << "reference " << reference_text << ": perplexity " << fixed(std::exp(*r.reference_nll), 4) << ", KL "
              << general(*r.kl_mean, 4) << " nats/token, top-1 agreement " << fixed(*r.top1_agree * 100, 2) << " %\n";
  }
  if (r.guard.total_rows() > 0) {
    std::cout << "fallback rate " << general(r.guard.rate() * 100, 4) << " % (" << r.guard.total_fallbacks() << " of "
              << r.guard.total_rows() << " activation rows)\n";
  }
  if (a.per_layer) {
    Table t({"layer (only it " + std::string(infer::precision_name(r.per_layer_precision)) + ")", "KL", "rel. error",
             "flag"});
    for (const auto& s : r.per_layer) t.add({s.name, general(s.kl_mean, 4), general(s.rel_error, 4), s.flagged ? "> 0.05" : ""});
    t.print();
  }
}

}  // namespace

void register_eval(CLI::App& app) {
  const auto [c, a] = add_command<EvalArgs>(app, "eval", "Perplexity, KL and per-layer sensitivity of a Hugging Face model");
  add_engine_options(c, a->engine);
  c->add_option("--text", a->text, "Text files (each one document; folders and globs expand)");
  c->add_option("--data", a->data, "Token shards, or a dataset folder from `nvfp4 data` (its val split)");
  c->add_option("--ids", a->ids, "JSON lines, each an array of token ids scored on its own");
  c->add_option("--ctx", a->ctx, "Window length (default: the longest document, at most 4096)")
      ->transform(integer_in(2, 1 << 20));
  c->add_option("--stride", a->stride,
                "Tokens each window after the first newly scores, with the ctx - stride before them as context "
                "(default: --ctx, i.e. ctx - 1 new tokens and one of overlap)")
      ->transform(integer_in(1, 1 << 20));
  c->add_option("--reference", a->reference, "A second precision to compare with: KL, top-1 agreement");
  c->add_option("--reference-model", a->reference_model,
                "The reference's model folder (default: MODEL): the unquantized model an NVFP4 checkpoint was made "
                "from; its precision is --reference or the device's unquantized one");
  c->add_flag("--per-layer", a->per_layer, "KL and output error with only one linear layer quantized, for each");
  c->add_option("--per-layer-tokens", a->per_layer_tokens, "Scored tokens each per-layer run covers")
      ->capture_default_str()
      ->transform(integer_in(1, int64_t{1} << 40));
  c->add_option("--max-tokens", a->max_tokens,
                "Score at most this many tokens: the first documents, the last one cut (default: all)")
      ->transform(integer_in(1, int64_t{1} << 40));
  c->add_option("--batch", a->batch, "Windows run together")->capture_default_str()->transform(integer_in(1, 4096));
  c->add_option("--save-logits", a->save_logits, "With --ids: every line's logits to this .safetensors file");
  c->add_flag("--json", a->json, "Print the result as JSON");
  c->callback([a] { run(*a); });
}

}  // namespace nvfp4::cli
