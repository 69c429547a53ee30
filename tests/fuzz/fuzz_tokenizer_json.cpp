// libFuzzer target fuzz_tokenizer_json: a tokenizer.json comes with a downloaded model, so
// HfTokenizer::from_json reads untrusted bytes (docs/fuzzing.md).
//
// Built twice: into the libFuzzer binary `fuzz_tokenizer_json` (tests/fuzz/CMakeLists.txt, clang,
// -fsanitize=fuzzer,address,undefined) and into the GoogleTest binary `test_fuzz_tokenizer`,
// whose replay test runs every file of tests/fuzz/corpus_tokenizer_json/ through it on every CI
// run.
//
// Contract checked here: from_json either throws nvfp4::Error whose message starts with
// "fuzz.json: " (the source it was given), or returns a tokenizer that, on a fixed text and on
// the input's own first 200 bytes, with and without special tokens,
//   - encodes without special tokens to ids in [0, vocab_size) that it can name (id_to_token),
//   - decodes any encoding to valid UTF-8, skip_special or not.
// Encoding and decoding may throw nvfp4::Error (a pattern that back-tracks too much, a template
// id outside the vocabulary); anything else escapes, and a broken invariant aborts.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_tokenizer.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_tokenizer.hpp"

namespace nvfp4::fuzz {

namespace {

constexpr std::string_view kSource = "fuzz.json";
// Letters, digits, punctuation, white-space runs, a combining accent, the Metaspace character and
// the special tokens of the three reference tokenizers.
constexpr std::string_view kFixedText =
    "Hello, World! It's 2024: x=3.14; <|begin_of_text|>caf\xC3\xA9 nai\xCC\x88ve \xE2\x96\x81sp  \t\n\n"
    "</s><s> <|endoftext|>\xF0\x9F\x98\x80 123456";

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_tokenizer_json: %s\n", what.c_str());
  std::abort();
}

void exercise(const io::HfTokenizer& t, std::string_view text) {
  const int32_t vocab = t.vocab_size();
  for (const bool add_special : {false, true}) {
    std::vector<int32_t> ids;
    try {
      ids = t.encode(text, add_special);
    } catch (const Error&) {
      continue;
    }
    if (!add_special) {  // the post-processor may add ids of its own; the model and added tokens may not
      for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || ids[i] >= vocab || !t.id_to_token(ids[i])) {
          fail("encode produced id " + std::to_string(ids[i]) + " at " + std::to_string(i) +
               ", which the tokenizer cannot name (vocab_size " + std::to_string(vocab) + ")");
        }
      }
    }
    for (const bool skip_special : {false, true}) {
      try {
        const std::string s = t.decode(ids, skip_special);
        if (io::utf8_replace_invalid(s) != s) fail("decode produced invalid UTF-8");
      } catch (const Error&) {
      }
    }
  }
}

}  // namespace

int tokenizer_json_one_input(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  std::unique_ptr<io::HfTokenizer> t;
  try {
    t = io::HfTokenizer::from_json(json, std::string(kSource));
  } catch (const Error& e) {
    const std::string_view what = e.what();
    if (what.substr(0, kSource.size() + 2) != "fuzz.json: ") fail("a load error does not name the file: " + std::string(what));
    return 0;
  }
  exercise(*t, kFixedText);
  exercise(*t, json.substr(0, 200));
  try {
    (void)t->describe();  // needs an end-of-text token: an nvfp4::Error without one
  } catch (const Error&) {
  }
  return 0;
}

}  // namespace nvfp4::fuzz

#ifdef NVFP4_LIBFUZZER
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return nvfp4::fuzz::tokenizer_json_one_input(data, size);
}
#endif
