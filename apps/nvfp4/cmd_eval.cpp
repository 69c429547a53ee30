// nvfp4 eval MODEL (--text FILES | --data SHARDS | --ids FILE.jsonl): perplexity, bits per byte,
// and against a reference precision KL, top-1 agreement and per-layer sensitivity
// (nvfp4/evaluate.hpp). This file reads the inputs, parses options and prints.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>

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
  std::string reference;
  int ctx = 0, stride = 0, batch = 4;
  bool per_layer = false;
  int64_t per_layer_tokens = 512;
  std::string save_logits;
  bool json = false;
};

// Bytes of the text the scored tokens (all but the first) spell; -1 without a tokenizer.
int64_t scored_bytes(const infer::HfModel& m, const std::vector<int32_t>& ids) {
  if (!m.has_tokenizer() || ids.size() < 2) return ids.size() < 2 ? 0 : -1;
  const std::span<const int32_t> rest(ids.data() + 1, ids.size() - 1);
  if (const auto* hf = dynamic_cast<const io::HfTokenizer*>(&m.tokenizer())) {
    return static_cast<int64_t>(hf->decode(rest, /*skip_special=*/true).size());
  }
  return static_cast<int64_t>(m.tokenizer().decode(rest).size());
}

std::vector<infer::EvalDocument> read_documents(const EvalArgs& a, const infer::HfModel& m) {
  const int given = !a.text.empty() + !a.data.empty() + !a.ids.empty();
  if (given != 1) throw Error("eval: give exactly one of --text FILES, --data SHARDS, --ids FILE.jsonl");
  std::vector<infer::EvalDocument> docs;
  const int32_t V = m.config().vocab;
  if (!a.text.empty()) {
    for (const std::string& f : io::expand_inputs(a.text)) {
      const std::string text = io::read_input_text(f);
      infer::EvalDocument d;
      d.ids = m.encode_prompt(text);
      d.bytes = scored_bytes(m, d.ids);
      docs.push_back(std::move(d));
    }
  } else if (!a.data.empty()) {
    std::vector<std::string> files;
    for (const std::string& x : a.data) {
      if (std::filesystem::is_directory(x) && std::filesystem::exists(std::filesystem::path(x) / "manifest.json")) {
        for (const auto& s : io::manifest_shards(x, io::Split::val)) files.push_back(s);
      } else {
        for (const auto& s : io::expand_inputs({x})) files.push_back(s);
      }
    }
    for (const std::string& f : files) {
      const io::TokenShard shard = io::TokenShard::open(f, 0);
      if (shard.header().vocab_size > V) {
        throw Error(f + ": its tokenizer has " + std::to_string(shard.header().vocab_size) +
                    " ids; the model's vocabulary is " + std::to_string(V) + " (tokenized for another model?)");
      }
      infer::EvalDocument d;
      d.ids.assign(shard.tokens().begin(), shard.tokens().end());
      d.bytes = scored_bytes(m, d.ids);
      docs.push_back(std::move(d));
    }
  } else {
    std::ifstream in(a.ids);
    if (!in) throw Error(a.ids + ": cannot be read");
    std::string line;
    for (int64_t n = 1; std::getline(in, line); ++n) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const auto j = nlohmann::json::parse(line, nullptr, false);
      const std::string where = a.ids + " line " + std::to_string(n) + ": ";
      if (j.is_discarded() || !j.is_array()) throw Error(where + "not a JSON array of token ids");
      infer::EvalDocument d;
      for (const auto& x : j) {
        if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= V) {
          throw Error(where + "token " + x.dump() + " is not an id in [0, " + std::to_string(V) + ")");
        }
        d.ids.push_back(x.get<int32_t>());
      }
      if (d.ids.size() < 2) throw Error(where + "needs at least 2 tokens (the first is never predicted)");
      d.bytes = scored_bytes(m, d.ids);
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
  const std::string device = engine_device(a.engine);
  const infer::HfModel model = infer::HfModel::open(a.engine.model);
  const std::vector<infer::EvalDocument> docs = read_documents(a, model);
  int64_t longest = 0;
  for (const auto& d : docs) longest = std::max<int64_t>(longest, static_cast<int64_t>(d.ids.size()));
  const int ctx = a.ctx > 0 ? a.ctx : static_cast<int>(std::min<int64_t>({longest, model.config().seq_len, 4096}));
  if (ctx > model.config().seq_len) {
    throw Error("--ctx " + std::to_string(ctx) + " exceeds the model's max_position_embeddings " +
                std::to_string(model.config().seq_len));
  }
  const int context = a.save_logits.empty() ? ctx : static_cast<int>(std::max<int64_t>(ctx, longest));
  const auto engine = infer::make_engine(model, engine_options(a.engine, device, a.batch, context), device);
  std::unique_ptr<infer::Engine> reference;
  if (!a.reference.empty()) {
    EngineArgs r = a.engine;
    r.precision = a.reference;
    r.keep_bf16.clear();
    reference = infer::make_engine(model, engine_options(r, device, a.batch, context), device);
  }
  if (!a.save_logits.empty()) {
    if (a.ids.empty()) throw Error("--save-logits needs --ids (one tensor per line)");
    io::refuse_output_over_input(a.save_logits, {a.ids});
    save_logits(*engine, docs, a.save_logits);
  }
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

  const std::string precision(infer::precision_name(engine_precision(a.engine, device)));
  if (a.json) {
    nlohmann::ordered_json j;
    j["model"] = a.engine.model;
    j["device"] = device;
    j["precision"] = precision;
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
      j["reference"] = a.reference;
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
  std::cout << "  [" << precision << " on " << device << "]\n";
  if (reference) {
    std::cout << "reference " << a.reference << ": perplexity " << fixed(std::exp(*r.reference_nll), 4) << ", KL "
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
  c->add_option("--stride", a->stride, "Tokens between window starts (default: --ctx)")->transform(integer_in(1, 1 << 20));
  c->add_option("--reference", a->reference, "A second precision to compare with: KL, top-1 agreement");
  c->add_flag("--per-layer", a->per_layer, "KL and output error with only one linear layer quantized, for each");
  c->add_option("--per-layer-tokens", a->per_layer_tokens, "Scored tokens each per-layer run covers")
      ->capture_default_str()
      ->transform(integer_in(1, int64_t{1} << 40));
  c->add_option("--batch", a->batch, "Windows run together")->capture_default_str()->transform(integer_in(1, 4096));
  c->add_option("--save-logits", a->save_logits, "With --ids: every line's logits to this .safetensors file");
  c->add_flag("--json", a->json, "Print the result as JSON");
  c->callback([a] { run(*a); });
}

}  // namespace nvfp4::cli
