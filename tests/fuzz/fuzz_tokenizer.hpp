// The entry points of the two tokenizer fuzz targets (docs/fuzzing.md), shared by the libFuzzer
// binaries (tests/fuzz/CMakeLists.txt) and the GoogleTest replay of their corpora
// (test_fuzz_tokenizer_corpus.cpp). Each entry returns 0. nvfp4::Error is how the library rejects
// input and is caught inside; any other exception escapes, and a broken invariant prints what
// broke and aborts, so libFuzzer reports both as crashes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nvfp4/hf_tokenizer.hpp"

namespace nvfp4::fuzz {

// fuzz_tokenizer_json: the input bytes as a tokenizer.json; when it loads, encode and decode a
// fixed text and the input's first 200 bytes through it.
int tokenizer_json_one_input(const uint8_t* data, size_t size);

// A tokenizer the encode target runs every input through.
struct EncodeTokenizer {
  std::string path;
  std::unique_ptr<io::HfTokenizer> tok;
  // decode(encode(x)) must give back x (invalid UTF-8 replaced): byte-level, no normalizer, all
  // 256 byte-level characters in the vocabulary, no stripping added token (Llama-3, gpt-oss).
  bool lossless = false;
};

// Loads a tokenizer.json and decides whether it is lossless (nvfp4::Error if it does not load).
EncodeTokenizer load_encode_tokenizer(const std::string& path);

// The tokenizers fuzz_tokenizer_encode uses (the libFuzzer binary sets them at start-up from
// NVFP4_FUZZ_TOKENIZERS or tokenizer-data/*/tokenizer.json; the replay test sets its own).
std::vector<EncodeTokenizer>& encode_tokenizers();

// The paths fuzz_tokenizer_encode loads: NVFP4_FUZZ_TOKENIZERS (colon-separated) when set, else
// every tokenizer-data/*/tokenizer.json under `root`, sorted.
std::vector<std::string> default_tokenizer_paths(const std::string& root);

// fuzz_tokenizer_encode: the input bytes as text, through every tokenizer of encode_tokenizers().
int tokenizer_encode_one_input(const uint8_t* data, size_t size);

}  // namespace nvfp4::fuzz
