// nvfp4 tokenizer train FILES... --vocab N --out tokenizer.json: a byte-level BPE tokenizer
// learned from text (io::train_bpe, nvfp4/bpe_trainer.hpp; docs/tokenizer_training.md), written
// as a Hugging Face tokenizer.json plus a tokenizer_config.json beside it whose eos_token is the
// first --special (what `nvfp4 data --tokenizer` looks for).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "common.hpp"
#include "nvfp4/bpe_trainer.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/output_paths.hpp"
#include "nvfp4/token_shards.hpp"

namespace nvfp4::cli {

namespace {

namespace fs = std::filesystem;

struct TrainArgs {
  io::BpeTrainOptions o;
  std::string out;
  bool no_config = false, json = false;
};

// Progress on stderr: one redrawn line on a terminal; in a log, a line when a phase starts, at
// each tenth of it and at most every 30 s, so a long run logs a few dozen lines.
class Progress {
 public:
  void operator()(const io::BpeTrainProgress& p) {
    const auto now = std::chrono::steady_clock::now();
    const bool merges = p.phase == io::BpeTrainProgress::Phase::merges;
    if (merges != in_merges_) {
      end_line();
      in_merges_ = merges;
      decile_ = -1;
      phase_start_ = now;
    }
    // Work done within a second shows no progress at all.
    if (!shown_ && std::chrono::duration<double>(now - start_).count() < 1.0) return;
    shown_ = true;
    const int decile = p.total ? static_cast<int>(10 * p.done / p.total) : 0;
    const double since = std::chrono::duration<double>(now - last_).count();
    if (tty_ ? since < 0.2 : (decile == decile_ && since < 30.0)) return;
    decile_ = decile;
    last_ = now;
    const double secs = std::chrono::duration<double>(now - phase_start_).count();
    const double pct = p.total ? 100.0 * static_cast<double>(p.done) / static_cast<double>(p.total) : 0.0;
    char line[256];
    if (merges) {
      std::snprintf(line, sizeof line, "merges: %5.1f%%  vocabulary %llu of %llu, last pair seen %llu times, %.1f s", pct,
                    static_cast<unsigned long long>(p.done), static_cast<unsigned long long>(p.total),
                    static_cast<unsigned long long>(p.last_count), secs);
    } else {
      std::snprintf(line, sizeof line, "counting words: %5.1f%%  %s of %s read, %llu distinct words, %.1f s", pct,
                    human_bytes(static_cast<double>(p.done)).c_str(), human_bytes(static_cast<double>(p.total)).c_str(),
                    static_cast<unsigned long long>(p.distinct_words), secs);
    }
    std::fprintf(stderr, tty_ ? "\r%-100s" : "%s\n", line);
    open_ = tty_;
    std::fflush(stderr);
  }
  void end_line() {
    if (open_) std::fputc('\n', stderr);
    open_ = false;
  }

 private:
  bool tty_ = ::isatty(2) != 0;
  bool open_ = false, in_merges_ = false, shown_ = false;
  int decile_ = -1;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point phase_start_ = start_;
  std::chrono::steady_clock::time_point last_ = phase_start_ - std::chrono::hours(1);
};

std::string resolved_command(const TrainArgs& a) {
  std::string c = "nvfp4 tokenizer train";
  for (const auto& i : a.o.inputs) c += " " + shell_quote(i);
  c += " --vocab " + std::to_string(a.o.vocab_size) + " --min-frequency " + std::to_string(a.o.min_frequency);
  for (const auto& s : a.o.special_tokens) c += " --special " + shell_quote(s);
  c += " --out " + shell_quote(a.out);
  if (a.no_config) c += " --no-config";
  return c;
}

void run_train(TrainArgs& a) {
  // --out FOLDER (an existing one, or a path ending in '/'): FOLDER/tokenizer.json.
  std::error_code ec;
  fs::path out = a.out;
  if (a.out.ends_with('/') || fs::is_directory(out, ec)) out /= "tokenizer.json";
  const fs::path config = out.parent_path() / "tokenizer_config.json";
  if (out.filename() == "tokenizer_config.json" && !a.no_config) {
    throw Error("--out " + a.out + ": that name is the tokenizer_config.json written beside it; name it tokenizer.json");
  }
  const std::vector<std::string> files = io::expand_inputs(a.o.inputs);
  io::refuse_output_over_input(out.string(), files);
  if (!a.no_config) io::refuse_output_over_input(config.string(), files);
  // Before training: the folder must be one we can create or write into. It is created only
  // after training succeeded, so a failed run leaves nothing behind.
  // The nearest existing folder up the path ("." above a relative one: tok/ in a new folder tok).
  fs::path existing = out.parent_path().empty() ? fs::path(".") : out.parent_path();
  while (!fs::exists(existing, ec)) {
    const fs::path up = existing.parent_path();
    if (up == existing) break;
    existing = up.empty() ? fs::path(".") : up;
  }
  if (!fs::is_directory(existing, ec) || ::access(existing.c_str(), W_OK) != 0) {
    throw Error("--out " + a.out + ": cannot write into " + existing.string() +
                (fs::exists(existing, ec) && !fs::is_directory(existing, ec) ? " (a file, not a folder)" : " (no permission)"));
  }

  a.o.command = resolved_command(a);
  Progress progress;
  a.o.progress = [&](const io::BpeTrainProgress& p) { progress(p); };
  const io::BpeTrainResult r = io::train_bpe(a.o);
  progress.end_line();
  if (out.has_parent_path()) {
    fs::create_directories(out.parent_path(), ec);
    if (ec) throw Error("--out " + a.out + ": cannot create the folder " + out.parent_path().string() + " (" + ec.message() + ")");
  }
  io::write_text_file_atomic(out.string(), r.tokenizer_json);
  if (!a.no_config) io::write_text_file_atomic(config.string(), r.tokenizer_config_json);

  const io::BpeTrainStats& s = r.stats;
  const double bytes_per_token = s.tokens ? static_cast<double>(s.text_bytes) / static_cast<double>(s.tokens) : 0.0;
  if (!s.complete) {
    std::fprintf(stderr,
                 "nvfp4: warning: the vocabulary has %lld tokens, not --vocab %lld: no pair is left that occurs "
                 "--min-frequency %llu times; give more text or a smaller --vocab or --min-frequency\n",
                 static_cast<long long>(s.vocab_size), static_cast<long long>(a.o.vocab_size),
                 static_cast<unsigned long long>(a.o.min_frequency));
  }
  if (a.o.special_tokens.empty() && !a.no_config) {
    std::fprintf(stderr, "note: no --special given: tokenizer_config.json has no eos_token, and `nvfp4 data` needs "
                         "an end-of-text token (e.g. --special '<|endoftext|>')\n");
  }
  if (a.json) {
    nlohmann::ordered_json j;
    j["tokenizer_json"] = out.string();
    j["tokenizer_config_json"] = a.no_config ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(config.string());
    j["command"] = a.o.command;
    j["files"] = s.input_files;
    j["text_bytes"] = s.text_bytes;
    j["words"] = s.words;
    j["distinct_words"] = s.distinct_words;
    j["special_matches"] = s.special_matches;
    j["vocab_size"] = s.vocab_size;
    j["requested_vocab_size"] = a.o.vocab_size;
    j["complete"] = s.complete;
    j["merges"] = s.merges;
    j["special_tokens"] = a.o.special_tokens;
    j["min_frequency"] = a.o.min_frequency;
    j["last_merge_count"] = s.last_merge_count;
    j["tokens"] = s.tokens;
    j["bytes_per_token"] = bytes_per_token;
    j["count_seconds"] = s.count_seconds;
    j["merge_seconds"] = s.merge_seconds;
    std::cout << json_text(j) << "\n";
    return;
  }
  std::printf("nvfp4 tokenizer train: %llu file%s, %s of text, %llu words (%llu distinct)",
              static_cast<unsigned long long>(s.input_files), s.input_files == 1 ? "" : "s",
              human_bytes(static_cast<double>(s.text_bytes)).c_str(), static_cast<unsigned long long>(s.words),
              static_cast<unsigned long long>(s.distinct_words));
  if (!a.o.special_tokens.empty()) {
    std::printf(", special tokens cut out %llu times", static_cast<unsigned long long>(s.special_matches));
  }
  std::printf("\nvocabulary %lld: 256 bytes + %lld merges", static_cast<long long>(s.vocab_size),
              static_cast<long long>(s.merges));
  std::printf(" + %zu special", a.o.special_tokens.size());
  if (s.merges) std::printf("; the last merged pair occurs %llu times", static_cast<unsigned long long>(s.last_merge_count));
  std::printf("\n");
  std::printf("the training text is %llu tokens: %.3f bytes per token\n", static_cast<unsigned long long>(s.tokens),
              bytes_per_token);
  std::printf("counting words %.1f s, merges %.1f s\n", s.count_seconds, s.merge_seconds);
  std::printf("wrote %s", out.string().c_str());
  if (!a.no_config) {
    std::printf(" and %s (eos_token %s)", config.string().c_str(),
                a.o.special_tokens.empty() ? "none" : a.o.special_tokens.front().c_str());
  }
  std::printf("\n");
}

}  // namespace

void register_tokenizer(CLI::App& app) {
  CLI::App* tok = app.add_subcommand("tokenizer", "Tokenizer tools: train a byte-level BPE tokenizer");
  tok->require_subcommand(1);
  const auto [c, args] = add_command<TrainArgs>(
      *tok, "train",
      "Learn a byte-level BPE tokenizer (GPT-4 / Llama-3 split pattern) from text; write a Hugging Face tokenizer.json "
      "and tokenizer_config.json");
  io::BpeTrainOptions& o = args->o;
  c->add_option("files", o.inputs, "Text files, .gz files, folders (recursive, sorted) or globs")->required();
  c->add_option("--vocab", o.vocab_size,
                "Vocabulary size: 256 byte tokens + merges + special tokens")
      ->required()
      ->transform(integer_in(256, io::kBpeMaxVocab));
  c->add_option("--out", args->out,
                "The tokenizer.json to write (an existing folder or a path ending in '/': FOLDER/tokenizer.json)")
      ->required();
  c->add_option("--special", o.special_tokens,
                "A special token (repeatable; ids after the merges, in order; the first is eos_token)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  c->add_option("--min-frequency", o.min_frequency, "Never merge a pair seen fewer times")
      ->capture_default_str()
      ->transform(unsigned_in(1, UINT64_MAX));
  c->add_option("--threads", o.threads, "Word-counting threads (0: one per core)")
      ->capture_default_str()
      ->transform(integer_in(0, 256));
  c->add_flag("--no-config", args->no_config, "Do not write tokenizer_config.json beside the tokenizer.json");
  c->add_flag("--json", args->json, "Print the summary as JSON");
  c->callback([args] { run_train(*args); });
}

}  // namespace nvfp4::cli
