// Replays the checked-in fuzz corpus (tests/fuzz/corpus) through the fuzz entry point, so every
// CI run rechecks each input that once crashed or widened coverage, without clang or libFuzzer.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "nvfp4/error.hpp"
#include "nvfp4/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(FuzzCorpus, ReplaysEveryFile) {
  const fs::path dir = NVFP4_TESTS_DIR "/fuzz/corpus";
  ASSERT_TRUE(fs::is_directory(dir)) << "fuzz corpus folder not found at " << dir;
  size_t files = 0, valid = 0, rejected = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    ++files;
    const std::vector<uint8_t> bytes = read_all(entry.path());
    SCOPED_TRACE(entry.path().string());
    // The entry point aborts on a broken invariant and lets foreign exceptions escape.
    EXPECT_EQ(LLVMFuzzerTestOneInput(bytes.data(), bytes.size()), 0);
    try {
      nvfp4::io::parse_header(bytes, entry.path().filename().string());
      ++valid;
    } catch (const nvfp4::Error&) {
      ++rejected;
    }
  }
  EXPECT_GE(files, 20u) << "the corpus in " << dir << " has shrunk; see docs/fuzzing.md";
  // A useful corpus holds both files the parser accepts and files it rejects.
  EXPECT_GT(valid, 0u);
  EXPECT_GT(rejected, 0u);
}

}  // namespace
