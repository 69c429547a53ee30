// nvfp4 data INPUT... --out DIR: text files, folders, globs and .gz / GNU info files become
// token shards (llm.c layout) plus DIR/manifest.json, split into train and val by document.
// The work is io::build_token_dataset (nvfp4/token_shards.hpp); this file parses options,
// shows progress on stderr and prints the summary.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "common.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/token_shards.hpp"
#include "nvfp4/tokenizer.hpp"

namespace nvfp4::cli {

namespace {

struct DataArgs {
  io::DataOptions o;
  bool json = false;
};

// Progress is worth showing from this much text on (the python3.11-doc corpus, ~19 MB, takes
// about a second).
constexpr uint64_t kProgressFromBytes = 8ull << 20;

// The shortest decimal that reads back as v ("0.05", not "0.050000000000000003").
std::string shortest(double v) {
  for (int digits = 1; digits <= 17; ++digits) {
    const std::string s = general(v, digits);
    if (std::strtod(s.c_str(), nullptr) == v) return s;
  }
  return general(v, 17);
}

// The command with every option resolved, as recorded in the manifest.
std::string resolved_command(const io::DataOptions& o) {
  std::string c = "nvfp4 data";
  for (const auto& in : o.inputs) c += " " + shell_quote(in);
  c += " --out " + shell_quote(o.out_dir) + " --tokenizer " + shell_quote(o.tokenizer) + " --val-fraction " +
       shortest(o.val_fraction) + " --seed " + std::to_string(o.seed) + " --shard-tokens " +
       std::to_string(o.shard_tokens) + " --doc-bytes " + std::to_string(o.doc_bytes);
  if (!o.shuffle) c += " --no-shuffle";
  if (o.force) c += " --force";
  return c;
}

// Throttled progress on stderr: one rewritten line on a terminal, a line every few seconds in a log.
class Progress {
 public:
  void operator()(uint64_t done, uint64_t total) {
    if (total < kProgressFromBytes) return;
    const auto now = std::chrono::steady_clock::now();
    const double since = std::chrono::duration<double>(now - last_).count();
    const bool end = done == total;
    if (!end && since < (tty_ ? 0.2 : 5.0)) return;
    if (end && !shown_) return;  // finished before the first update was due: say nothing
    last_ = now;
    shown_ = true;
    const double secs = std::chrono::duration<double>(now - start_).count();
    const double pct = 100.0 * static_cast<double>(done) / static_cast<double>(total);
    std::fprintf(stderr, "%stokenizing: %5.1f%%  %s of %s  %.1f s%s", tty_ ? "\r" : "", pct,
                 human_bytes(static_cast<double>(done)).c_str(), human_bytes(static_cast<double>(total)).c_str(), secs,
                 tty_ && !end ? "" : "\n");
    std::fflush(stderr);
  }

 private:
  bool tty_ = ::isatty(2) != 0;
  bool shown_ = false;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_ = start_;
};

void run_data(DataArgs& a) {
  a.o.command = resolved_command(a.o);
  a.o.tool = std::string("nvfp4 ") + NVFP4_VERSION;
  Progress progress;
  const io::DataSummary s = io::build_token_dataset(a.o, [&](uint64_t d, uint64_t t) { progress(d, t); });
  for (const auto& c : s.cleaned) std::fprintf(stderr, "left by a killed run: %s\n", c.c_str());

  const auto tok = io::make_tokenizer(a.o.tokenizer);
  int64_t docs = 0;
  uint64_t text = 0;
  for (const auto& src : s.sources) {
    docs += src.documents;
    text += src.text_bytes;
  }
  const int64_t tokens = s.train.tokens + s.val.tokens;
  if (a.json) {
    nlohmann::json j;
    j["out_dir"] = s.out_dir;
    j["manifest"] = s.manifest_path;
    j["command"] = a.o.command;
    j["tokenizer"] = nlohmann::json::parse(s.tokenizer_description);
    j["options"] = {{"val_fraction", a.o.val_fraction}, {"seed", a.o.seed}, {"shard_tokens", a.o.shard_tokens},
                    {"doc_bytes", a.o.doc_bytes}};
    j["inputs"] = s.sources.size();
    j["skipped"] = nlohmann::json::array();
    for (const auto& k : s.skipped) j["skipped"].push_back({{"path", k.path}, {"reason", k.reason}});
    for (const auto& [name, st] : {std::pair{"train", s.train}, std::pair{"val", s.val}}) {
      j["splits"][name] = {{"documents", st.documents}, {"text_bytes", st.text_bytes}, {"tokens", st.tokens},
                           {"shards", st.shards}};
    }
    j["shards"] = nlohmann::json::array();
    for (const auto& r : s.shards) {
      j["shards"].push_back({{"file", r.file}, {"split", io::split_name(r.split)}, {"tokens", r.tokens},
                             {"documents", r.documents}});
    }
    j["seconds"] = s.seconds;
    j["tokens_per_second"] = s.seconds > 0 ? static_cast<double>(tokens) / s.seconds : 0.0;
    std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return;
  }

  std::cout << "nvfp4 data: " << s.sources.size() << " input file" << (s.sources.size() == 1 ? "" : "s") << ", "
            << human_bytes(static_cast<double>(text)) << " of text, " << docs << " documents; tokenizer "
            << tok->name() << " (vocabulary " << tok->vocab_size() << "), val fraction " << general(a.o.val_fraction)
            << ", seed " << a.o.seed << ", doc bytes " << a.o.doc_bytes << ", shard tokens " << a.o.shard_tokens
            << "\n\n";
  Table t({"split", "documents", "text bytes", "tokens", "shards"});
  for (const auto& [name, st] : {std::pair{"train", s.train}, std::pair{"val", s.val}}) {
    t.add({name, std::to_string(st.documents), std::to_string(st.text_bytes), std::to_string(st.tokens),
           std::to_string(st.shards)});
  }
  t.add({"total", std::to_string(s.train.documents + s.val.documents), std::to_string(s.train.text_bytes + s.val.text_bytes),
         std::to_string(tokens), std::to_string(s.train.shards + s.val.shards)});
  t.print();
  for (const auto& k : s.skipped) std::cout << "skipped " << k.path << ": " << k.reason << "\n";
  std::cout << "\nwrote " << s.shards.size() << " shard" << (s.shards.size() == 1 ? "" : "s") << " and "
            << io::kManifestName << " to " << s.out_dir << " in " << fixed(s.seconds, 2) << " s ("
            << general(s.seconds > 0 ? static_cast<double>(tokens) / s.seconds / 1e6 : 0.0, 3) << " M tokens/s)\n";
}

}  // namespace

void register_data(CLI::App& app) {
  std::string names;
  for (const auto& n : io::tokenizer_names()) names += (names.empty() ? "" : "|") + n;
  const auto [c, args] = add_command<DataArgs>(app,
      "data", "Tokenize text files, folders, globs and .gz / GNU info files into llm.c-style token shards "
              "(train/val split by document) plus manifest.json");
  io::DataOptions& o = args->o;
  c->add_option("inputs", o.inputs, "Text files, .gz files, folders (recursive, sorted) or globs")->required();
  c->add_option("--out", o.out_dir, "Output folder for the shards and manifest.json")->required();
  c->add_option("--tokenizer", o.tokenizer, "Tokenizer: " + names)->capture_default_str();
  c->add_option("--val-fraction", o.val_fraction,
                "Fraction of documents for validation, in [0, 1); at least one val document when there are >= 2")
      ->capture_default_str();
  c->add_option("--seed", o.seed, "Seed of the train/val split")->capture_default_str()->transform(any_seed());
  c->add_option("--shard-tokens", o.shard_tokens, "Tokens per shard at most")->capture_default_str();
  c->add_option("--doc-bytes", o.doc_bytes, "Files larger than this are cut at blank lines into documents of about this many bytes")
      ->capture_default_str();
  c->add_flag("!--no-shuffle", o.shuffle,
              "Write documents in input order (default: a seeded random order per split; that holds the text in memory)");
  c->add_flag("--force", o.force, "Write into an existing, non-empty --out folder, replacing the dataset in it");
  c->add_flag("--json", args->json, "Print JSON instead of tables");
  c->callback([args] { run_data(*args); });
}

}  // namespace nvfp4::cli
