// Replays the checked-in corpora of the two tokenizer fuzz targets (tests/fuzz/corpus_tokenizer_json,
// tests/fuzz/corpus_tokenizer_encode) through their entry points, so every CI run rechecks each
// input that once crashed or widened coverage, without clang or libFuzzer (docs/fuzzing.md). An
// entry point aborts on a broken invariant and lets any exception but nvfp4::Error escape.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz/fuzz_tokenizer.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_tokenizer.hpp"

namespace {

namespace fs = std::filesystem;
using nvfp4::io::HfTokenizer;

const fs::path kJsonCorpus = NVFP4_TESTS_DIR "/fuzz/corpus_tokenizer_json";
const fs::path kEncodeCorpus = NVFP4_TESTS_DIR "/fuzz/corpus_tokenizer_encode";
// The reference tokenizers cut down by tests/fuzz/make_tokenizer_seeds.py (each ~10 KB).
const std::vector<std::string> kTrimmed = {"trim_gptoss.json", "trim_llama2.json", "trim_llama3.json"};

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

TEST(FuzzTokenizerCorpus, JsonReplaysEveryFile) {
  ASSERT_TRUE(fs::is_directory(kJsonCorpus)) << "fuzz corpus folder not found at " << kJsonCorpus;
  size_t files = 0, loaded = 0, rejected = 0;
  for (const fs::path& p : files_in(kJsonCorpus)) {
    ++files;
    const std::string bytes = read_all(p);
    SCOPED_TRACE(p.string());
    EXPECT_EQ(nvfp4::fuzz::tokenizer_json_one_input(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), 0);
    try {
      (void)HfTokenizer::from_json(bytes, p.filename().string());
      ++loaded;
    } catch (const nvfp4::Error&) {
      ++rejected;
    }
  }
  EXPECT_GE(files, 40u) << "the corpus in " << kJsonCorpus << " has shrunk; see docs/fuzzing.md";
  // A useful corpus holds both files the loader accepts and files it rejects.
  EXPECT_GT(loaded, 0u);
  EXPECT_GT(rejected, 0u);
}

// Every text of the encode corpus through fuzz_tokenizer_encode's entry, on the tokenizers at
// `paths`; returns how many of them were lossless (decode(encode(x)) == x checked).
size_t replay_encode_corpus(const std::vector<std::string>& paths) {
  auto& tokenizers = nvfp4::fuzz::encode_tokenizers();
  tokenizers.clear();
  for (const std::string& p : paths) {
    try {
      tokenizers.push_back(nvfp4::fuzz::load_encode_tokenizer(p));
    } catch (const nvfp4::Error& e) {
      ADD_FAILURE() << e.what();
    }
  }
  size_t lossless = 0;
  for (const auto& t : tokenizers) lossless += t.lossless ? 1 : 0;
  size_t files = 0;
  for (const fs::path& p : files_in(kEncodeCorpus)) {
    ++files;
    const std::string bytes = read_all(p);
    SCOPED_TRACE(p.string());
    EXPECT_EQ(nvfp4::fuzz::tokenizer_encode_one_input(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), 0);
  }
  EXPECT_GE(files, 90u) << "the corpus in " << kEncodeCorpus << " has shrunk; see docs/fuzzing.md";
  EXPECT_EQ(tokenizers.size(), paths.size());
  tokenizers.clear();
  return lossless;
}

// Always runs, on every machine: the trimmed tokenizers are checked in with the corpus.
TEST(FuzzTokenizerCorpus, EncodeReplaysEveryTextOnTheTrimmedTokenizers) {
  std::vector<std::string> paths;
  for (const std::string& name : kTrimmed) paths.push_back((kJsonCorpus / name).string());
  ASSERT_EQ(paths.size(), 3u);
  // Llama-3's and gpt-oss's byte-level tokenizers give every text back; Llama-2's does not.
  EXPECT_EQ(replay_encode_corpus(paths), 2u);
}

// The real tokenizers, where this checkout has them (bash scripts/tokenizer_reference.sh install)
// or NVFP4_FUZZ_TOKENIZERS names them: the fuzzer's own set. Reported as skipped otherwise.
TEST(FuzzTokenizerCorpus, EncodeReplaysEveryTextOnTheRealTokenizers) {
  const std::vector<std::string> paths = nvfp4::fuzz::default_tokenizer_paths(NVFP4_TESTS_DIR "/..");
  if (paths.empty()) {
    GTEST_SKIP() << "no tokenizer-data/*/tokenizer.json in this checkout and NVFP4_FUZZ_TOKENIZERS unset "
                    "(bash scripts/tokenizer_reference.sh install writes them); the trimmed tokenizers ran instead";
  }
  const size_t lossless = replay_encode_corpus(paths);
  RecordProperty("tokenizers", static_cast<int>(paths.size()));
  RecordProperty("lossless", static_cast<int>(lossless));
}

}  // namespace
