// nvfp4 tokenize TOKENIZER FILE: token ids of a text with a Hugging Face tokenizer.json (or the
// byte tokenizer), the same ids the reference `tokenizers` library gives.
//   --jsonl            each line of FILE (without its newline) encoded on its own, printed as one
//                      JSON array of ids per line; an empty line gives []
//   --jsonl --decode   FILE holds such arrays; each is decoded to one line of text
//   (neither)          the whole file encoded once: tokens, bytes per token, time
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "common.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_tokenizer.hpp"

namespace nvfp4::cli {

namespace {

struct TokenizeArgs {
  std::string tokenizer, file;
  bool jsonl = false, decode = false, add_special = false, json = false, bench = false;
};

std::string read_all(const std::string& path) {
  if (path == "-") {
    std::ostringstream ss;
    ss << std::cin.rdbuf();
    return ss.str();
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open the input file");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The lines of `text`: split on '\n', the final newline ending the last line rather than
// starting an empty one.
std::vector<std::string_view> lines_of(std::string_view text) {
  std::vector<std::string_view> out;
  size_t at = 0;
  while (at < text.size()) {
    const size_t nl = text.find('\n', at);
    if (nl == std::string_view::npos) {
      out.push_back(text.substr(at));
      break;
    }
    out.push_back(text.substr(at, nl - at));
    at = nl + 1;
  }
  return out;
}

void run_tokenize(const TokenizeArgs& a) {
  if (a.decode && !a.jsonl) throw Error("--decode reads JSON arrays of ids, one per line: add --jsonl");
  std::unique_ptr<io::Tokenizer> tok;
  const io::HfTokenizer* hf = nullptr;
  if (a.tokenizer == "byte") {
    tok = io::make_tokenizer("byte");
  } else {
    auto h = io::HfTokenizer::load(a.tokenizer);
    hf = h.get();
    tok = std::move(h);
  }
  const std::string text = read_all(a.file);
  std::string out;
  if (a.jsonl && a.decode) {
    const auto lines = lines_of(text);
    for (size_t i = 0; i < lines.size(); ++i) {
      const auto j = nlohmann::json::parse(lines[i], nullptr, false);
      std::vector<int32_t> ids;
      bool ok = !j.is_discarded() && j.is_array();
      if (ok) {
        for (const auto& v : j) {
          if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
            ok = false;
            break;
          }
          ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
        }
      }
      if (!ok) {
        throw Error(a.file + ": line " + std::to_string(i + 1) +
                    " is not a JSON array of token ids (--jsonl --decode reads what --jsonl prints)");
      }
      try {
        out += hf ? hf->decode(ids, false) : tok->decode(ids);
      } catch (const Error& e) {
        throw Error(a.file + ": line " + std::to_string(i + 1) + ": " + e.what());
      }
      out += '\n';
      if (out.size() > (1 << 20)) {
        std::fwrite(out.data(), 1, out.size(), stdout);
        out.clear();
      }
    }
  } else if (a.jsonl) {
    for (std::string_view line : lines_of(text)) {
      const std::vector<int32_t> ids = hf ? hf->encode(line, a.add_special) : tok->encode(line);
      out += '[';
      for (size_t k = 0; k < ids.size(); ++k) {
        if (k) out += ',';
        out += std::to_string(ids[k]);
      }
      out += "]\n";
      if (out.size() > (1 << 20)) {
        std::fwrite(out.data(), 1, out.size(), stdout);
        out.clear();
      }
    }
  } else {
    // --bench: one warm-up run, then the median of three (as the reference's benchmark does).
    std::vector<double> times;
    std::vector<int32_t> ids;
    for (int run = 0; run < (a.bench ? 4 : 1); ++run) {
      const auto t0 = std::chrono::steady_clock::now();
      ids = hf ? hf->encode(text, a.add_special) : tok->encode(text);
      if (!a.bench || run > 0) times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(times.begin(), times.end());
    const double s = times[times.size() / 2];
    if (a.json) {
      std::cout << json_text(nlohmann::json{{"tokens", ids.size()}, {"bytes", text.size()}, {"seconds", s}}) << "\n";
    } else {
      std::printf("%s: %zu tokens, %zu bytes, %.2f bytes/token, %.3f s (%.1f MB/s, one thread)\n", a.file.c_str(),
                  ids.size(), text.size(), ids.empty() ? 0.0 : double(text.size()) / double(ids.size()), s,
                  s > 0 ? double(text.size()) / s / 1e6 : 0.0);
    }
    return;
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
}

}  // namespace

void register_tokenize(CLI::App& app) {
  const auto [c, args] = add_command<TokenizeArgs>(
      app, "tokenize", "Token ids of a text with a Hugging Face tokenizer.json, as the tokenizers library gives them");
  c->add_option("tokenizer", args->tokenizer, "tokenizer.json, a model folder holding one, or \"byte\"")->required();
  c->add_option("file", args->file, "Text file to encode (\"-\": standard input); with --decode, JSON id arrays")
      ->required();
  c->add_flag("--jsonl", args->jsonl, "Encode each line on its own; print one JSON array of ids per line");
  c->add_flag("--decode", args->decode, "With --jsonl: read arrays of ids, print their text one per line");
  c->add_flag("--add-special", args->add_special, "Add the post-processor's special tokens (e.g. BOS)");
  c->add_flag("--json", args->json, "Without --jsonl: print the summary as JSON");
  c->add_flag("--bench", args->bench, "Without --jsonl: time a warm-up and three runs, report the median");
  c->callback([args] { run_tokenize(*args); });
}

}  // namespace nvfp4::cli
