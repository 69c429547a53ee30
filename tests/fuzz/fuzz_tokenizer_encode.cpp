// libFuzzer target fuzz_tokenizer_encode: arbitrary bytes through real tokenizers (docs/fuzzing.md).
//
// The libFuzzer binary `fuzz_tokenizer_encode` (tests/fuzz/CMakeLists.txt) loads its tokenizers
// once at start-up: the paths in NVFP4_FUZZ_TOKENIZERS (colon-separated), else every
// tokenizer-data/*/tokenizer.json under the current folder (bash scripts/tokenizer_reference.sh
// install writes Llama-3's, Llama-2's and gpt-oss's there). The GoogleTest binary
// `test_fuzz_tokenizer` replays tests/fuzz/corpus_tokenizer_encode/ through the same entry with
// tokenizers of its own choosing.
//
// For every input (any bytes; the API replaces invalid UTF-8) and every tokenizer, with and
// without special tokens:
//   - encode does not throw, and every id is in [0, vocab_size);
//   - encoding again (without special tokens) gives the same ids: the second run comes from the
//     word cache;
//   - decode(ids), skip_special or not, does not throw and gives valid UTF-8;
//   - on a lossless tokenizer (see EncodeTokenizer), decode(encode(x)) == utf8_replace_invalid(x).
// A broken invariant prints the tokenizer and what broke, then aborts.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_tokenizer.hpp"
#include "io/tokenizer/pipeline.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_tokenizer.hpp"

namespace nvfp4::fuzz {

namespace {

using nlohmann::json;

[[noreturn]] void fail(const EncodeTokenizer& t, bool add_special, const std::string& what) {
  std::fprintf(stderr, "fuzz_tokenizer_encode: %s (add_special %d): %s\n", t.path.c_str(), add_special ? 1 : 0,
               what.c_str());
  std::abort();
}

std::string type_of(const json& j) {
  if (!j.is_object()) return "";
  const auto it = j.find("type");
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

bool flag(const json& j, const char* key, bool def) {
  const auto it = j.find(key);
  return it != j.end() && it->is_boolean() ? it->get<bool>() : def;
}

// Byte-level with nothing that drops or adds text: no normalizer; pre-tokenizers that only cut
// (Split without Removed, Digits) ending in a ByteLevel without a prefix space; a ByteLevel
// decoder; every byte-level character in the vocabulary; added tokens that strip nothing and
// decode to themselves.
bool is_lossless(const json& j, const io::HfTokenizer& t) {
  if (j.contains("normalizer") && !j["normalizer"].is_null()) return false;
  if (!j.contains("decoder") || type_of(j["decoder"]) != "ByteLevel") return false;
  if (!j.contains("pre_tokenizer")) return false;
  const json& pre = j["pre_tokenizer"];
  std::vector<json> parts;
  if (type_of(pre) == "Sequence" && pre.contains("pretokenizers") && pre["pretokenizers"].is_array()) {
    parts.assign(pre["pretokenizers"].begin(), pre["pretokenizers"].end());
  } else {
    parts.push_back(pre);
  }
  if (parts.empty() || type_of(parts.back()) != "ByteLevel" || flag(parts.back(), "add_prefix_space", true)) return false;
  for (const json& p : parts) {
    const std::string type = type_of(p);
    const bool cuts = type == "ByteLevel" || type == "Digits" ||
                      (type == "Split" && p.contains("behavior") && p["behavior"] != "Removed");
    if (!cuts) return false;
  }
  for (const std::string& c : io::hf::byte_level_chars()) {
    if (!t.token_to_id(c)) return false;
  }
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const json& a : j["added_tokens"]) {
      if (flag(a, "lstrip", false) || flag(a, "rstrip", false)) return false;
      if (!a.contains("content") || !a["content"].is_string()) return false;
      const auto raw = io::hf::byte_level_decode(a["content"].get<std::string>());
      if (raw && *raw != a["content"].get<std::string>()) return false;
    }
  }
  return true;
}

void check(const EncodeTokenizer& e, std::string_view input) {
  const io::HfTokenizer& t = *e.tok;
  const int32_t vocab = t.vocab_size();
  for (const bool add_special : {false, true}) {
    std::vector<int32_t> ids;
    try {
      ids = t.encode(input, add_special);
    } catch (const Error& err) {
      fail(e, add_special, std::string("encode threw: ") + err.what());
    }
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= vocab) {
        fail(e, add_special, "id " + std::to_string(ids[i]) + " at " + std::to_string(i) + " is outside [0, " +
                                 std::to_string(vocab) + ")");
      }
    }
    if (!add_special && t.encode(input) != ids) fail(e, add_special, "a second encode (word cache) gave other ids");
    for (const bool skip_special : {false, true}) {
      std::string text;
      try {
        text = t.decode(ids, skip_special);
      } catch (const Error& err) {
        fail(e, add_special, std::string("decode threw: ") + err.what());
      }
      if (io::utf8_replace_invalid(text) != text) fail(e, add_special, "decode produced invalid UTF-8");
      if (e.lossless && !add_special && !skip_special && text != io::utf8_replace_invalid(input)) {
        fail(e, add_special, "decode(encode(x)) != x (invalid UTF-8 replaced) on a lossless tokenizer");
      }
    }
  }
}

}  // namespace

EncodeTokenizer load_encode_tokenizer(const std::string& path) {
  EncodeTokenizer e;
  e.path = path;
  e.tok = io::HfTokenizer::load(path);
  const json j = json::parse(e.tok->json(), nullptr, /*allow_exceptions=*/false);
  e.lossless = j.is_object() && is_lossless(j, *e.tok);
  return e;
}

std::vector<EncodeTokenizer>& encode_tokenizers() {
  static std::vector<EncodeTokenizer> tokenizers;
  return tokenizers;
}

std::vector<std::string> default_tokenizer_paths(const std::string& root) {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("NVFP4_FUZZ_TOKENIZERS"); env && *env) {
    const std::string_view list(env);
    size_t start = 0;
    while (start <= list.size()) {
      const size_t colon = std::min(list.find(':', start), list.size());
      if (colon > start) paths.emplace_back(list.substr(start, colon - start));
      start = colon + 1;
    }
    return paths;
  }
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path data = fs::path(root) / "tokenizer-data";
  if (!fs::is_directory(data, ec)) return paths;
  for (const auto& d : fs::directory_iterator(data, ec)) {
    const fs::path f = d.path() / "tokenizer.json";
    if (fs::is_regular_file(f, ec)) paths.push_back(f.string());
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

int tokenizer_encode_one_input(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  for (const EncodeTokenizer& e : encode_tokenizers()) check(e, input);
  return 0;
}

}  // namespace nvfp4::fuzz

#ifdef NVFP4_LIBFUZZER
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  using namespace nvfp4::fuzz;
  const std::vector<std::string> paths = default_tokenizer_paths(".");
  if (paths.empty()) {
    std::fprintf(stderr,
                 "fuzz_tokenizer_encode: no tokenizer to fuzz. Set NVFP4_FUZZ_TOKENIZERS=a/tokenizer.json:b/tokenizer.json, "
                 "or run from a folder holding tokenizer-data/*/tokenizer.json (bash scripts/tokenizer_reference.sh "
                 "install writes them in the repository root).\n");
    std::exit(1);
  }
  for (const std::string& p : paths) {
    try {
      encode_tokenizers().push_back(load_encode_tokenizer(p));
    } catch (const nvfp4::Error& err) {
      std::fprintf(stderr, "fuzz_tokenizer_encode: %s\n", err.what());
      std::exit(1);
    }
    const EncodeTokenizer& e = encode_tokenizers().back();
    std::fprintf(stderr, "fuzz_tokenizer_encode: %s: vocab_size %d, %s\n", p.c_str(), e.tok->vocab_size(),
                 e.lossless ? "lossless (decode(encode(x)) == x checked)" : "not lossless");
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return nvfp4::fuzz::tokenizer_encode_one_input(data, size);
}
#endif
