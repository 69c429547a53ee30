// Replays the checked-in corpus of the chat-template fuzz target (tests/fuzz/corpus_chat_template)
// through its entry point, so every CI run rechecks each input that once crashed or widened
// coverage, without clang or libFuzzer (docs/fuzzing.md). The entry point aborts on a broken
// invariant and lets any exception but nvfp4::Error escape.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "nvfp4/chat_template.hpp"
#include "nvfp4/error.hpp"

namespace nvfp4::fuzz {
int chat_template_one_input(const uint8_t* data, size_t size);  // fuzz_chat_template.cpp
}

namespace {

namespace fs = std::filesystem;

const fs::path kCorpus = NVFP4_TESTS_DIR "/fuzz/corpus_chat_template";

TEST(FuzzChatTemplateCorpus, ReplaysEveryFile) {
  ASSERT_TRUE(fs::is_directory(kCorpus)) << "fuzz corpus folder not found at " << kCorpus;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(kCorpus)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  size_t parsed = 0, rejected = 0;
  for (const fs::path& p : files) {
    std::ifstream in(p, std::ios::binary);
    const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    SCOPED_TRACE(p.string());
    EXPECT_EQ(nvfp4::fuzz::chat_template_one_input(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), 0);
    try {
      (void)nvfp4::io::ChatTemplate::parse(bytes, p.filename().string());
      ++parsed;
    } catch (const nvfp4::Error&) {
      ++rejected;
    }
  }
  EXPECT_GE(files.size(), 100u) << "the corpus in " << kCorpus << " has shrunk; see docs/fuzzing.md";
  // A useful corpus holds both templates that parse and templates that do not.
  EXPECT_GT(parsed, 0u);
  EXPECT_GT(rejected, 0u);
}

}  // namespace
