// Helpers of the data pipeline tests (test_data.cpp, test_token_shards.cpp): a temp-folder
// fixture, an error matcher, synthetic prose, and reading shards back.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "nvfp4/error.hpp"
#include "nvfp4/token_shards.hpp"
#include "nvfp4/tokenizer.hpp"

namespace nvfp4::data_test {

namespace fs = std::filesystem;
namespace io = nvfp4::io;

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("nvfp4_data_" + std::to_string(::getpid()) + "_" + info->test_suite_name() + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  void write(const std::string& name, const std::string& bytes) const {
    const fs::path p = dir_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream f(p, std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  std::string read(const std::string& p) const {
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  }
  // Writes `text` gzip-compressed with zlib, as `members` concatenated gzip members.
  void write_gz(const std::string& name, const std::string& text, int members = 1) const {
    const std::string p = path(name);
    fs::create_directories(fs::path(p).parent_path());
    std::remove(p.c_str());
    const size_t step = (text.size() + static_cast<size_t>(members) - 1) / static_cast<size_t>(members);
    for (int m = 0; m < members; ++m) {
      gzFile f = gzopen(p.c_str(), m == 0 ? "wb" : "ab");
      ASSERT_NE(f, nullptr);
      const size_t b = std::min(text.size(), static_cast<size_t>(m) * step);
      const size_t e = std::min(text.size(), b + step);
      if (e > b) {
        ASSERT_EQ(gzwrite(f, text.data() + b, static_cast<unsigned>(e - b)), static_cast<int>(e - b));
      }
      ASSERT_EQ(gzclose(f), Z_OK);
    }
  }

  fs::path dir_;
};

// Runs `body`, which must throw nvfp4::Error whose message contains every one of `parts`.
template <class F>
void ExpectError(F&& body, const std::vector<std::string>& parts) {
  try {
    body();
    ADD_FAILURE() << "no nvfp4::Error thrown; expected one mentioning '" << parts.front() << "'";
  } catch (const nvfp4::Error& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "message: " << e.what() << "\nmissing: " << p;
  }
}

// Prose in paragraphs, different per seed, `paragraphs` of them.
inline std::string Prose(int seed, int paragraphs) {
  static const char* words[] = {"the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "naïve", "café",
                                "Python", "list", "→", "data", "shard", "token", "λ", "epoch"};
  std::mt19937 rng(static_cast<unsigned>(seed));
  std::string out;
  for (int p = 0; p < paragraphs; ++p) {
    const int lines = 1 + static_cast<int>(rng() % 4);
    for (int l = 0; l < lines; ++l) {
      const int n = 3 + static_cast<int>(rng() % 9);
      for (int w = 0; w < n; ++w) out += std::string(w ? " " : "") + words[rng() % std::size(words)];
      out += "\n";
    }
    out += "\n";
  }
  return out;
}

inline std::vector<uint16_t> ShardFileTokens(const std::string& p) {
  const auto s = io::TokenShard::open(p);
  return {s.tokens().begin(), s.tokens().end()};
}

// The documents (texts between end-of-text tokens) of a split, decoded, in order.
inline std::vector<std::string> Documents(const std::string& dir, io::Split split) {
  std::vector<int32_t> all;
  for (const auto& p : io::manifest_shards(dir, split)) {
    for (uint16_t t : ShardFileTokens(p)) all.push_back(t);
  }
  std::vector<std::string> docs;
  const io::ByteTokenizer tok;
  size_t i = 0;
  EXPECT_TRUE(!all.empty() && all[0] == io::ByteTokenizer::kEot) << "a split starts with end-of-text";
  while (i < all.size()) {
    size_t j = i + 1;
    while (j < all.size() && all[j] != io::ByteTokenizer::kEot) ++j;
    docs.push_back(tok.decode(std::span<const int32_t>(all.data() + i + 1, j - i - 1)));
    i = j;
  }
  return docs;
}
}  // namespace nvfp4::data_test
