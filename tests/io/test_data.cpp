// The training-data pipeline: tokenizer, token shards (format, validation), the shard loader
// (windows, epochs, resume), document splitting and the train/val split, inputs (folders, globs,
// .gz, GNU info) and `nvfp4 data` end to end through the built binary.
#include <gtest/gtest.h>

#include "support/test_support.hpp"
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "nvfp4/error.hpp"
#include "nvfp4/token_shards.hpp"
#include "nvfp4/tokenizer.hpp"

namespace fs = std::filesystem;
namespace io = nvfp4::io;

namespace {

// ---- helpers --------------------------------------------------------------------------------

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
std::string Prose(int seed, int paragraphs) {
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

std::vector<uint16_t> ShardFileTokens(const std::string& p) {
  const auto s = io::TokenShard::open(p);
  return {s.tokens().begin(), s.tokens().end()};
}

// The documents (texts between end-of-text tokens) of a split, decoded, in order.
std::vector<std::string> Documents(const std::string& dir, io::Split split) {
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

// ---- tokenizer ------------------------------------------------------------------------------

TEST(ByteTokenizer, RoundTripsAll256Bytes) {
  const io::ByteTokenizer tok;
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  const auto ids = tok.encode(all);
  ASSERT_EQ(ids.size(), 256u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(ids[static_cast<size_t>(b)], b);
  EXPECT_EQ(tok.decode(ids), all);
}

TEST(ByteTokenizer, RoundTripsUtf8Text) {
  const io::ByteTokenizer tok;
  const std::string text = "Grüße, 世界! λx.x 🙂\n\ttabs and\r\nCRLF";
  const auto ids = tok.encode(text);
  ASSERT_EQ(ids.size(), text.size());  // one token per UTF-8 byte, not per code point
  EXPECT_EQ(ids[2], 0xC3);             // ü is two bytes, two tokens
  EXPECT_EQ(ids[3], 0xBC);
  EXPECT_EQ(tok.decode(ids), text);
  std::vector<int32_t> appended = {7};
  tok.encode_append("ab", appended);
  EXPECT_EQ(appended, (std::vector<int32_t>{7, 'a', 'b'}));
}

TEST(ByteTokenizer, VocabularyEndOfTextAndBadIds) {
  const io::ByteTokenizer tok;
  EXPECT_EQ(tok.vocab_size(), 257);
  EXPECT_EQ(tok.eot_token(), 256);
  EXPECT_EQ(tok.shard_id(), 1);
  const std::vector<int32_t> with_eot = {'h', 'i', 256, 'x'};
  EXPECT_EQ(tok.decode(with_eot), "hi<|endoftext|>x");
  ExpectError([&] { tok.decode(std::vector<int32_t>{'a', 257}); }, {"257", "position 1"});
  ExpectError([&] { tok.decode(std::vector<int32_t>{-1}); }, {"-1", "position 0"});
  const auto d = nlohmann::json::parse(tok.describe());
  EXPECT_EQ(d.at("name"), "byte");
  EXPECT_EQ(d.at("vocab_size"), 257);
  EXPECT_EQ(d.at("eot_token"), 256);
}

TEST(Tokenizer, FactoryKnowsByteAndRejectsUnknownNames) {
  const auto tok = io::make_tokenizer("byte");
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->name(), "byte");
  EXPECT_EQ(tok->vocab_size(), 257);
  EXPECT_EQ(io::tokenizer_name_for_id(1), "byte");
  EXPECT_EQ(io::tokenizer_name_for_id(0), "unknown");
  ExpectError([] { io::make_tokenizer("gpt2"); }, {"gpt2", "byte"});
}

// ---- shard files ----------------------------------------------------------------------------

class TokenShardTest : public TempDir {
 protected:
  std::string MakeShard(const std::string& name, size_t n, io::Split split = io::Split::train) {
    std::vector<uint16_t> t(n);
    for (size_t i = 0; i < n; ++i) t[i] = static_cast<uint16_t>((i * 7 + 3) % 257);
    io::ShardHeader h;
    h.vocab_size = 257;
    h.tokenizer_id = 1;
    h.split = split;
    h.index = 4;
    h.documents = 2;
    io::write_token_shard(path(name), h, t);
    return path(name);
  }
  // Overwrites the int32 header slot `i` of a shard.
  void PatchHeader(const std::string& p, int i, int32_t v) {
    std::string b = read(p);
    std::memcpy(b.data() + 4 * i, &v, 4);
    std::ofstream(p, std::ios::binary | std::ios::trunc).write(b.data(), static_cast<std::streamsize>(b.size()));
  }
};

TEST_F(TokenShardTest, WriteReadRoundTrip) {
  std::mt19937 rng(5);
  std::vector<uint16_t> t(10007);
  for (auto& v : t) v = static_cast<uint16_t>(rng() % 257);
  io::ShardHeader h;
  h.vocab_size = 257;
  h.tokenizer_id = 1;
  h.split = io::Split::val;
  h.index = 3;
  h.documents = 11;
  io::write_token_shard(path("s.bin"), h, t);
  const auto s = io::TokenShard::open(path("s.bin"));
  EXPECT_EQ(s.path(), path("s.bin"));
  EXPECT_EQ(s.size(), 10007);
  EXPECT_EQ(std::vector<uint16_t>(s.tokens().begin(), s.tokens().end()), t);
  EXPECT_EQ(s.header().vocab_size, 257);
  EXPECT_EQ(s.header().tokenizer_id, 1);
  EXPECT_EQ(s.header().split, io::Split::val);
  EXPECT_EQ(s.header().index, 3);
  EXPECT_EQ(s.header().documents, 11);
  // No temp files left behind by the atomic write.
  int files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++files;
  EXPECT_EQ(files, 1);
}

TEST_F(TokenShardTest, HeaderFieldsAreAtTheirDocumentedByteOffsets) {
  const std::string p = MakeShard("s.bin", 300, io::Split::val);
  const std::string b = read(p);
  ASSERT_EQ(b.size(), 1024u + 2 * 300);
  int32_t h[256];
  std::memcpy(h, b.data(), sizeof h);
  EXPECT_EQ(h[0], 20240520);
  EXPECT_EQ(h[1], 2);  // layout version 2: header[8] holds the token width
  EXPECT_EQ(h[2], 300);
  EXPECT_EQ(h[3], 257);
  EXPECT_EQ(h[4], 1);
  EXPECT_EQ(h[5], 1);  // val
  EXPECT_EQ(h[6], 4);
  EXPECT_EQ(h[7], 2);
  EXPECT_EQ(h[8], 2);  // uint16 tokens
  for (int i = 9; i < 256; ++i) EXPECT_EQ(h[i], 0) << "slot " << i;
  // Tokens: little-endian uint16 right after the header.
  const auto tok = [&](size_t i) {
    return static_cast<int>(static_cast<unsigned char>(b[1024 + 2 * i])) |
           (static_cast<int>(static_cast<unsigned char>(b[1024 + 2 * i + 1])) << 8);
  };
  EXPECT_EQ(tok(0), 3);
  EXPECT_EQ(tok(37), (37 * 7 + 3) % 257);
  EXPECT_EQ(tok(299), (299 * 7 + 3) % 257);
}

TEST_F(TokenShardTest, ReadsLlmcShardsWithoutOurMetadata) {
  const std::string p = MakeShard("llmc.bin", 50);
  for (int i = 3; i < 8; ++i) PatchHeader(p, i, 0);  // llm.c writes only magic, version, count
  const auto s = io::TokenShard::open(p);
  EXPECT_EQ(s.header().vocab_size, 0);
  EXPECT_EQ(s.header().tokenizer_id, 0);
  EXPECT_EQ(s.size(), 50);
  // With no vocabulary recorded, the caller's is checked: token 52 (position 7) is outside 50.
  EXPECT_EQ(io::TokenShard::open(p, 257).size(), 50);
  ExpectError([&] { io::TokenShard::open(p, 50); }, {p, "token 52 at position 7", "outside the vocabulary of 50"});
}

TEST_F(TokenShardTest, EmptyShardIsValid) {
  const std::string p = MakeShard("e.bin", 0);
  EXPECT_EQ(io::TokenShard::open(p).size(), 0);
}

TEST_F(TokenShardTest, TruncatedShardIsAnErrorNamingTheFile) {
  const std::string p = MakeShard("t.bin", 100);
  fs::resize_file(p, 1024 + 2 * 99);
  ExpectError([&] { io::TokenShard::open(p); }, {p, "truncated", "100 tokens"});
  fs::resize_file(p, 1000);  // not even a header
  ExpectError([&] { io::TokenShard::open(p); }, {p, "1000 bytes", "shorter than the 1024-byte"});
  ExpectError([&] { io::TokenShard::open(path("missing.bin")); }, {path("missing.bin"), "cannot open"});
}

TEST_F(TokenShardTest, WrongMagicIsAnErrorNamingTheFile) {
  const std::string p = MakeShard("m.bin", 10);
  PatchHeader(p, 0, 12345);
  ExpectError([&] { io::TokenShard::open(p); }, {p, "magic 12345", "20240520"});
  PatchHeader(p, 0, 20240801);
  ExpectError([&] { io::TokenShard::open(p); }, {p, "LLaMA-3"});
}

TEST_F(TokenShardTest, WrongVersionIsAnErrorNamingTheFile) {
  const std::string p = MakeShard("v.bin", 10);
  PatchHeader(p, 1, 3);
  ExpectError([&] { io::TokenShard::open(p); }, {p, "version 3"});
}

TEST_F(TokenShardTest, TokenCountMismatchIsAnErrorNamingTheFile) {
  const std::string p = MakeShard("c.bin", 10);
  PatchHeader(p, 2, 9);  // header says fewer tokens than the file holds
  ExpectError([&] { io::TokenShard::open(p); }, {p, "9 tokens", "does not match the file size"});
  PatchHeader(p, 2, 11);  // more than the file holds
  ExpectError([&] { io::TokenShard::open(p); }, {p, "11 tokens", "truncated"});
  PatchHeader(p, 2, -1);
  ExpectError([&] { io::TokenShard::open(p); }, {p, "negative"});
}

TEST_F(TokenShardTest, OutOfVocabularyTokenIsAnErrorNamingTheShard) {
  const std::string p = MakeShard("o.bin", 10);
  std::string b = read(p);
  const uint16_t bad = 300;
  std::memcpy(b.data() + 1024 + 2 * 6, &bad, 2);
  std::ofstream(p, std::ios::binary | std::ios::trunc).write(b.data(), static_cast<std::streamsize>(b.size()));
  ExpectError([&] { io::TokenShard::open(p); }, {p, "token 300", "position 6", "vocabulary of 257"});
  // The loader reports it too, naming the same shard.
  ExpectError([&] { io::ShardLoader({p}, 1, 2); }, {p, "token 300"});
}

TEST_F(TokenShardTest, ShardOfAnotherTokenizerIsRejected) {
  const std::string p = MakeShard("x.bin", 10);
  ExpectError([&] { io::TokenShard::open(p, 50257); }, {p, "257", "50257"});
}

TEST_F(TokenShardTest, WriterRefusesTokensOutsideTheVocabulary) {
  io::ShardHeader h;
  h.vocab_size = 257;
  const std::vector<uint16_t> t = {1, 2, 257};
  ExpectError([&] { io::write_token_shard(path("w.bin"), h, t); }, {path("w.bin"), "257"});
  EXPECT_FALSE(fs::exists(path("w.bin")));
  h.vocab_size = 70000;
  ExpectError([&] { io::write_token_shard(path("w.bin"), h, std::vector<uint16_t>{1}); }, {path("w.bin"), "70000"});
}

// ---- shard loader ---------------------------------------------------------------------------

class ShardLoaderTest : public TempDir {
 protected:
  // Shard k holds tokens v(k, i) = (31 * k + i) % 256, n[k] of them.
  static uint16_t V(int k, int64_t i) { return static_cast<uint16_t>((31 * k + i) % 256); }
  std::vector<std::string> MakeShards(const std::vector<int64_t>& n) {
    std::vector<std::string> paths;
    for (size_t k = 0; k < n.size(); ++k) {
      std::vector<uint16_t> t(static_cast<size_t>(n[k]));
      for (int64_t i = 0; i < n[k]; ++i) t[static_cast<size_t>(i)] = V(static_cast<int>(k), i);
      io::ShardHeader h;
      h.vocab_size = 257;
      h.tokenizer_id = 1;
      h.index = static_cast<int32_t>(k);
      paths.push_back(path("train_" + std::to_string(k) + ".bin"));
      io::write_token_shard(paths.back(), h, t);
    }
    return paths;
  }
  // The window llm.c's loader gives at (shard k, offset): row b = tokens[off + b*T .. off + b*T + T].
  static std::vector<int32_t> Expected(int k, int64_t off, int64_t B, int64_t T) {
    std::vector<int32_t> w;
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t <= T; ++t) w.push_back(V(k, off + b * T + t));
    }
    return w;
  }
};

TEST_F(ShardLoaderTest, WindowsAreExactlyTheExpectedTokens) {
  // B*T = 8. Shard 0: 30 tokens -> windows at 0, 8, 16 (16 + 9 = 25 <= 30; 24 + 9 > 30).
  // Shard 1: 17 tokens -> windows at 0, 8 (8 + 9 = 17).
  const auto paths = MakeShards({30, 17});
  io::ShardLoader L(paths, 2, 4);
  EXPECT_EQ(L.batches_per_epoch(), 5);
  const std::vector<std::pair<int, int64_t>> order = {{0, 0}, {0, 8}, {0, 16}, {1, 0}, {1, 8}, {0, 0}};
  for (size_t i = 0; i < order.size(); ++i) {
    const auto [k, off] = order[i];
    EXPECT_EQ(L.position().shard, k) << "batch " << i;
    EXPECT_EQ(L.position().offset, off) << "batch " << i;
    EXPECT_EQ(L.next(), Expected(k, off, 2, 4)) << "batch " << i;
  }
  // Inputs / targets: row b's targets are its inputs shifted by one.
  const auto w = Expected(0, 0, 2, 4);
  EXPECT_EQ(w[4], w[5]);  // row 0 ends where row 1 begins (rows overlap by one token)
}

TEST_F(ShardLoaderTest, IsDeterministic) {
  const auto paths = MakeShards({101, 64, 77});
  io::ShardLoader a(paths, 3, 5), b(paths, 3, 5);
  for (int i = 0; i < 40; ++i) ASSERT_EQ(a.next(), b.next()) << "batch " << i;
  EXPECT_EQ(a.position(), b.position());
}

TEST_F(ShardLoaderTest, WrapAroundCountsEpochs) {
  const auto paths = MakeShards({30, 17});
  io::ShardLoader L(paths, 2, 4);
  const auto first = L.next();
  for (int e = 0; e < 3; ++e) {
    for (int64_t i = 1; i < L.batches_per_epoch(); ++i) {  // batch 0 of each epoch was taken already
      EXPECT_EQ(L.position().epoch, e);
      L.next();
    }
    EXPECT_EQ(L.position(), (io::LoaderPosition{0, 0, e + 1}));
    if (e < 2) {
      EXPECT_EQ(L.next(), first);  // the next epoch starts again at shard 0, offset 0
    }
  }
}

TEST_F(ShardLoaderTest, SaveAndRestorePositionContinuesIdentically) {
  const auto paths = MakeShards({101, 64, 77});
  io::ShardLoader a(paths, 2, 6);
  ASSERT_EQ(a.batches_per_epoch(), 8 + 5 + 6);
  for (int i = 0; i < 25; ++i) a.next();  // into the second epoch
  const io::LoaderPosition saved = a.position();
  EXPECT_GE(saved.epoch, 1);
  std::vector<std::vector<int32_t>> rest;
  for (int i = 0; i < 20; ++i) rest.push_back(a.next());

  io::ShardLoader b(paths, 2, 6, 0, saved);  // as after a restart
  EXPECT_EQ(b.position(), saved);
  for (int i = 0; i < 20; ++i) ASSERT_EQ(b.next(), rest[static_cast<size_t>(i)]) << "batch " << i;
  EXPECT_EQ(a.position(), b.position());

  io::ShardLoader c(paths, 2, 6);
  c.seek(saved);  // and by seek
  EXPECT_EQ(c.next(), rest[0]);
}

TEST_F(ShardLoaderTest, RejectsBadConfigurations) {
  const auto paths = MakeShards({30, 8});
  ExpectError([&] { io::ShardLoader(paths, 2, 4); }, {paths[1], "8 tokens", "B*T+1 = 9"});
  ExpectError([&] { io::ShardLoader({}, 2, 4); }, {"no shard files"});
  ExpectError([&] { io::ShardLoader({paths[0]}, 0, 4); }, {"B = 0"});
  ExpectError([&] { io::ShardLoader({paths[0]}, 2, 4, 0, {1, 0, 0}); }, {"shard 1", "not inside"});
  ExpectError([&] { io::ShardLoader({paths[0]}, 2, 4, 0, {0, 31, 0}); }, {"offset 31"});
  io::ShardLoader L({paths[0]}, 2, 4);
  std::vector<int32_t> wrong(9);
  ExpectError([&] { L.next(wrong); }, {"B*(T+1) = 10"});
}

// ---- documents and the split ----------------------------------------------------------------

TEST(DataSplit, SmallTextIsOneDocument) {
  EXPECT_TRUE(io::split_documents("", 10).empty());
  const auto d = io::split_documents("hello\n\nworld\n", 64);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0], "hello\n\nworld\n");
}

TEST(DataSplit, BigTextIsCutAtBlankLinesIntoDocumentsOfAboutDocBytes) {
  const std::string text = Prose(1, 400);
  const int64_t limit = 1000;
  const auto docs = io::split_documents(text, limit);
  ASSERT_GT(docs.size(), text.size() / 1000);
  std::string joined;
  for (const auto d : docs) {
    EXPECT_LE(d.size(), 1000u);
    EXPECT_GT(d.size(), 500u - 200u) << "greedy grouping fills documents";  // paragraphs are < 200 bytes here
    joined += d;
  }
  EXPECT_EQ(joined, text);
  // Every document but the last ends at a paragraph boundary (a blank line).
  for (size_t i = 0; i + 1 < docs.size(); ++i) EXPECT_TRUE(docs[i].ends_with("\n\n")) << "document " << i;
}

TEST(DataSplit, OversizedParagraphsAreCutAtNewlinesThenCharacterBoundaries) {
  std::string lines;
  for (int i = 0; i < 50; ++i) lines += "line " + std::to_string(i) + " of one long paragraph\n";
  auto docs = io::split_documents(lines, 100);
  std::string joined;
  for (const auto d : docs) {
    EXPECT_LE(d.size(), 100u);
    EXPECT_TRUE(d.ends_with("\n"));
    joined += d;
  }
  EXPECT_EQ(joined, lines);

  std::string wide;
  for (int i = 0; i < 200; ++i) wide += "é";  // 2-byte characters, no newline
  docs = io::split_documents(wide, 33);
  joined.clear();
  for (const auto d : docs) {
    EXPECT_LE(d.size(), 33u);
    EXPECT_NE(static_cast<unsigned char>(d[0]) & 0xC0, 0x80) << "a document starts inside a character";
    joined += d;
  }
  EXPECT_EQ(joined, wide);
}

TEST(DataSplit, AssignmentIsDeterministicPerSeedAndDiffersAcrossSeeds) {
  const auto a = io::assign_splits(7, 400, 0.05);
  EXPECT_EQ(a, io::assign_splits(7, 400, 0.05));
  const auto b = io::assign_splits(8, 400, 0.05);
  EXPECT_NE(a, b);
  const auto val = std::count(a.begin(), a.end(), io::Split::val);
  EXPECT_GE(val, 8);   // expected 20; this range holds with probability > 0.999
  EXPECT_LE(val, 36);
  // The draw is a function of (seed, index) only: a longer list extends a shorter one.
  const auto longer = io::assign_splits(7, 800, 0.05);
  EXPECT_TRUE(std::equal(a.begin(), a.end(), longer.begin()));
  EXPECT_NE(io::split_draw(7, 0), io::split_draw(7, 1));
  EXPECT_NE(io::split_draw(7, 0), io::split_draw(8, 0));
}

TEST(DataSplit, AtLeastOneValAndOneTrainDocumentFromTwoDocumentsOn) {
  for (uint64_t seed = 0; seed < 200; ++seed) {
    for (int64_t n : {2, 3, 5}) {
      const auto s = io::assign_splits(seed, n, 0.05);
      EXPECT_GE(std::count(s.begin(), s.end(), io::Split::val), 1) << "seed " << seed << " n " << n;
      EXPECT_GE(std::count(s.begin(), s.end(), io::Split::train), 1) << "seed " << seed << " n " << n;
    }
    const auto most = io::assign_splits(seed, 4, 0.999);
    EXPECT_EQ(std::count(most.begin(), most.end(), io::Split::train), 1);
  }
  EXPECT_EQ(io::assign_splits(3, 1, 0.5), std::vector<io::Split>{io::Split::train});
  const auto none = io::assign_splits(3, 50, 0.0);
  EXPECT_EQ(std::count(none.begin(), none.end(), io::Split::val), 0);
  ExpectError([] { io::assign_splits(1, 5, 1.0); }, {"--val-fraction"});
  ExpectError([] { io::assign_splits(1, 5, -0.1); }, {"--val-fraction"});
}

// ---- inputs ---------------------------------------------------------------------------------

class DataInputs : public TempDir {};

TEST_F(DataInputs, FoldersAreWalkedRecursivelyInSortedOrder) {
  write("t/zeta.txt", "z");
  write("t/b/2.txt", "2");
  write("t/a.txt", "a");
  write("t/b/1.txt", "1");
  write("t/.hidden", "h");
  write("t/.git/obj", "o");
  const auto files = io::expand_inputs({path("t")});
  const std::vector<std::string> want = {path("t/a.txt"), path("t/b/1.txt"), path("t/b/2.txt"), path("t/zeta.txt")};
  EXPECT_EQ(files, want);
}

TEST_F(DataInputs, GlobsAreSortedAndFilesAreKeptOnce) {
  write("g/c.txt", "c");
  write("g/a.txt", "a");
  write("g/b.md", "b");
  write("g/b.txt", "b");
  const auto files = io::expand_inputs({path("g/*.txt"), path("g/a.txt")});
  EXPECT_EQ(files, (std::vector<std::string>{path("g/a.txt"), path("g/b.txt"), path("g/c.txt")}));
  // Arguments keep their order; each argument's files are sorted.
  const auto two = io::expand_inputs({path("g/c.txt"), path("g/b.md")});
  EXPECT_EQ(two, (std::vector<std::string>{path("g/c.txt"), path("g/b.md")}));
}

TEST_F(DataInputs, MissingPathsAndEmptyGlobsAreErrors) {
  ExpectError([&] { io::expand_inputs({path("nope.txt")}); }, {path("nope.txt"), "does not exist"});
  ExpectError([&] { io::expand_inputs({path("*.nothing")}); }, {path("*.nothing"), "matches no file"});
}

TEST_F(DataInputs, GzipReadsTheSameTextAsThePlainFile) {
  const std::string text = Prose(3, 300);
  write("p.txt", text);
  write_gz("p.txt.gz", text);
  write_gz("multi.txt.gz", text, 3);  // concatenated gzip members, as `cat a.gz b.gz` makes
  EXPECT_EQ(io::read_input_text(path("p.txt")), text);
  EXPECT_EQ(io::read_input_text(path("p.txt.gz")), text);
  EXPECT_EQ(io::read_input_text(path("multi.txt.gz")), text);
}

TEST_F(DataInputs, CorruptOrTruncatedGzipIsAnErrorNamingTheFile) {
  write_gz("t.gz", Prose(4, 200));
  const std::string whole = read(path("t.gz"));
  write("trunc.gz", whole.substr(0, whole.size() / 2));
  ExpectError([&] { io::read_input_text(path("trunc.gz")); }, {path("trunc.gz"), "truncated"});
  std::string bad = whole;
  for (size_t i = 20; i < 60; ++i) bad[i] = static_cast<char>(bad[i] ^ 0x5A);
  write("bad.gz", bad);
  ExpectError([&] { io::read_input_text(path("bad.gz")); }, {path("bad.gz")});
  write("plain.gz", "not compressed");
  ExpectError([&] { io::read_input_text(path("plain.gz")); }, {path("plain.gz"), "not gzip"});
}

TEST_F(DataInputs, InfoFilesLoseTheirNavigation) {
  EXPECT_TRUE(io::is_info_name("/usr/share/info/python3.11.info.gz"));
  EXPECT_TRUE(io::is_info_name("x.info"));
  EXPECT_TRUE(io::is_info_name("emacs.info-12.gz"));
  EXPECT_FALSE(io::is_info_name("info.txt"));
  EXPECT_FALSE(io::is_info_name("x.info-.gz"));
  const std::string raw =
      "This is x.info, produced by makeinfo.\n\n"
      "\x1f\nFile: x.info,  Node: Top,  Next: Intro,  Up: (dir)\n\nTop text.\n"
      "\x1f\nFile: x.info,  Node: Intro,  Prev: Top\n\nIntro text.\n\nSecond paragraph.\n\n"
      "\x1f\nTag Table:\nNode: Top\x7f" "42\n\x1f\nEnd Tag Table\n\n\x1f\nLocal Variables:\ncoding: utf-8\nEnd:\n";
  EXPECT_EQ(io::clean_info_text(raw),
            "This is x.info, produced by makeinfo.\n\nTop text.\n\nIntro text.\n\nSecond paragraph.\n");
  EXPECT_EQ(io::clean_info_text("no separators\n"), "no separators\n");
  write("x.info", raw);
  write_gz("y.info.gz", raw);
  EXPECT_EQ(io::read_input_text(path("x.info")), io::clean_info_text(raw));
  EXPECT_EQ(io::read_input_text(path("y.info.gz")), io::clean_info_text(raw));
}

// ---- building datasets ----------------------------------------------------------------------

class DataBuild : public TempDir {
 protected:
  // A tree of 12 small files (one document each) and 2 big ones (split into documents).
  void MakeTree() {
    for (int i = 0; i < 12; ++i) write("corpus/small/f" + std::to_string(100 + i) + ".txt", Prose(i, 3));
    write("corpus/big/a.txt", Prose(50, 300));
    write("corpus/big/b.txt", Prose(51, 300));
  }
  io::DataOptions Options(const std::string& out, uint64_t seed = 1) {
    io::DataOptions o;
    o.inputs = {path("corpus")};
    o.out_dir = path(out);
    o.seed = seed;
    o.val_fraction = 0.2;
    o.doc_bytes = 2048;
    o.shard_tokens = 5000;
    return o;
  }
  std::string ShardBytes(const std::string& dir) {
    std::string all;
    for (const auto split : {io::Split::train, io::Split::val}) {
      for (const auto& p : io::manifest_shards(dir, split)) all += read(p);
    }
    return all;
  }
};

TEST_F(DataBuild, EveryDocumentLandsInExactlyOneSplit) {
  MakeTree();
  const auto s = io::build_token_dataset(Options("out"));
  // The documents the inputs hold, in order.
  std::vector<std::string> want;
  for (const auto& f : io::expand_inputs({path("corpus")})) {
    const std::string text = read(f);
    for (const auto d : io::split_documents(text, 2048)) want.emplace_back(d);
  }
  const auto train = Documents(path("out"), io::Split::train);
  const auto val = Documents(path("out"), io::Split::val);
  EXPECT_EQ(static_cast<int64_t>(train.size()), s.train.documents);
  EXPECT_EQ(static_cast<int64_t>(val.size()), s.val.documents);
  ASSERT_EQ(train.size() + val.size(), want.size());
  EXPECT_GE(val.size(), 1u);
  // Each split holds its input documents (by the split rule) in the seeded shuffled order:
  // none lost, none twice.
  const auto splits = io::assign_splits(1, static_cast<int64_t>(want.size()), 0.2);
  std::vector<std::string> want_split[2];
  for (size_t i = 0; i < want.size(); ++i) want_split[splits[i] == io::Split::val].push_back(want[i]);
  for (int k = 0; k < 2; ++k) {
    const auto& got = k ? val : train;
    const auto order = io::document_order(1 + k, static_cast<int64_t>(want_split[k].size()));
    ASSERT_EQ(got.size(), order.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], want_split[k][order[i]]) << "split " << k << " document " << i;
  }
  // The order really is shuffled, and --no-shuffle keeps the input order.
  std::vector<int64_t> identity(want_split[0].size());
  for (size_t i = 0; i < identity.size(); ++i) identity[i] = static_cast<int64_t>(i);
  EXPECT_NE(io::document_order(1, static_cast<int64_t>(identity.size())), identity);
  auto plain = Options("plain");
  plain.shuffle = false;
  io::build_token_dataset(plain);
  EXPECT_EQ(Documents(path("plain"), io::Split::train), want_split[0]);
  EXPECT_EQ(Documents(path("plain"), io::Split::val), want_split[1]);
  std::set<std::string> tset(train.begin(), train.end());
  for (const auto& v : val) EXPECT_FALSE(tset.contains(v)) << "a val document is also in train";
  // Token counts: one end-of-text per document plus one token per byte.
  EXPECT_EQ(s.train.tokens, static_cast<int64_t>(s.train.text_bytes) + s.train.documents);
  EXPECT_EQ(s.val.tokens, static_cast<int64_t>(s.val.text_bytes) + s.val.documents);
}

TEST_F(DataBuild, SameSeedSameBytesOtherSeedOtherSplit) {
  MakeTree();
  io::build_token_dataset(Options("a", 1));
  io::build_token_dataset(Options("b", 1));
  io::build_token_dataset(Options("c", 2));
  EXPECT_EQ(ShardBytes(path("a")), ShardBytes(path("b")));
  EXPECT_EQ(read(path("a/manifest.json")), read(path("b/manifest.json")));  // no time stamps, no absolute out dir
  EXPECT_NE(Documents(path("a"), io::Split::val), Documents(path("c"), io::Split::val));
}

TEST_F(DataBuild, GzipInputGivesTheSameTokensAsThePlainFile) {
  const std::string text = Prose(9, 400);
  write("plain/doc.txt", text);
  write_gz("gz/doc.txt.gz", text);
  io::DataOptions o;
  o.val_fraction = 0.1;
  o.doc_bytes = 1500;
  o.shard_tokens = 4000;
  o.inputs = {path("plain")};
  o.out_dir = path("out_plain");
  io::build_token_dataset(o);
  o.inputs = {path("gz")};
  o.out_dir = path("out_gz");
  const auto s = io::build_token_dataset(o);
  ASSERT_EQ(s.sources.size(), 1u);
  EXPECT_TRUE(s.sources[0].gzip);
  EXPECT_EQ(s.sources[0].text_bytes, text.size());
  EXPECT_LT(s.sources[0].file_bytes, text.size());
  EXPECT_EQ(ShardBytes(path("out_plain")), ShardBytes(path("out_gz")));
}

TEST_F(DataBuild, ShardsHoldAtMostShardTokensAndTheManifestListsThem) {
  MakeTree();
  const auto s = io::build_token_dataset(Options("out"));
  const auto train = io::manifest_shards(path("out"), io::Split::train);
  EXPECT_EQ(static_cast<int64_t>(train.size()), s.train.shards);
  EXPECT_GE(train.size(), 3u);
  int64_t total = 0;
  for (size_t i = 0; i < train.size(); ++i) {
    const auto sh = io::TokenShard::open(train[i]);
    char name[32];
    std::snprintf(name, sizeof name, "train_%06zu.bin", i);
    EXPECT_EQ(fs::path(train[i]).filename().string(), name);
    EXPECT_LE(sh.size(), 5000);
    if (i + 1 < train.size()) {
      EXPECT_EQ(sh.size(), 5000);  // every shard but the last is full
    }
    EXPECT_EQ(sh.header().index, static_cast<int32_t>(i));
    EXPECT_EQ(sh.header().split, io::Split::train);
    EXPECT_EQ(sh.header().vocab_size, 257);
    EXPECT_EQ(sh.header().tokenizer_id, 1);
    total += sh.size();
  }
  EXPECT_EQ(total, s.train.tokens);
  const auto m = nlohmann::json::parse(read(path("out/manifest.json")));
  EXPECT_EQ(m.at("format"), "nvfp4.token_shards");
  EXPECT_EQ(m.at("tokenizer").at("name"), "byte");
  EXPECT_EQ(m.at("options").at("seed"), 1);
  EXPECT_EQ(m.at("options").at("val_fraction"), 0.2);
  EXPECT_EQ(m.at("sources").size(), 14u);
  EXPECT_EQ(m.at("sources")[0].at("path"), path("corpus/big/a.txt"));
  EXPECT_GT(m.at("sources")[0].at("documents").get<int>(), 1);
  EXPECT_EQ(m.at("splits").at("train").at("tokens"), s.train.tokens);
  // The loader reads the dataset straight from the manifest.
  io::ShardLoader L(train, 4, 64, 257);
  EXPECT_EQ(L.next().front(), 256);  // the first window starts with the first document's end-of-text
}

TEST_F(DataBuild, ExistingOutputNeedsForceAndForceRemovesStaleShards) {
  MakeTree();
  auto o = Options("out");
  o.shard_tokens = 2000;
  const auto first = io::build_token_dataset(o);
  ASSERT_GE(first.train.shards, 5);
  write("out/notes.txt", "mine");
  ExpectError([&] { io::build_token_dataset(o); }, {path("out"), "--force"});
  o.shard_tokens = 100000;
  o.force = true;
  const auto second = io::build_token_dataset(o);
  EXPECT_EQ(second.train.shards, 1);
  EXPECT_FALSE(fs::exists(path("out/train_000001.bin")));
  EXPECT_TRUE(fs::exists(path("out/notes.txt")));  // not ours: left alone
  EXPECT_EQ(io::manifest_shards(path("out"), io::Split::train).size(), 1u);
}

TEST_F(DataBuild, EmptyInputAndBinaryFiles) {
  write("empty/a.txt", "");
  write("empty/b.txt", "");
  io::DataOptions o;
  o.inputs = {path("empty")};
  o.out_dir = path("out");
  ExpectError([&] { io::build_token_dataset(o); }, {"no text", "2 input files"});
  EXPECT_FALSE(fs::exists(path("out")));
  write("mixed/a.txt", "some text\n");
  write("mixed/b.bin", std::string("\x01\x00\x02", 3));
  o.inputs = {path("mixed")};
  const auto s = io::build_token_dataset(o);
  ASSERT_EQ(s.skipped.size(), 1u);
  EXPECT_EQ(s.skipped[0].path, path("mixed/b.bin"));
  EXPECT_EQ(s.train.documents, 1);
  EXPECT_EQ(s.val.documents, 0);
  ExpectError([&] { io::manifest_shards(path("out"), io::Split::val); }, {"manifest.json", "no val shards"});
}

// ---- the CLI --------------------------------------------------------------------------------

using RunResult = nvfp4::test::CliResult;
inline RunResult RunCli(const std::string& args) { return nvfp4::test::run_cli(args); }

class DataCli : public TempDir {
 protected:
  void MakeTree() {
    for (int i = 0; i < 6; ++i) write("tree/d" + std::to_string(i) + "/notes.txt", Prose(20 + i, 5));
    write_gz("tree/packed.txt.gz", Prose(30, 200));
  }
};

TEST_F(DataCli, BuildsShardsAndReportsThemAsJson) {
  MakeTree();
  const RunResult r = RunCli("data " + path("tree") + " --out " + path("out") + " --shard-tokens 3000 --doc-bytes 1024 --seed 4 --json");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j.at("inputs"), 7);
  const int64_t train = j.at("splits").at("train").at("tokens"), val = j.at("splits").at("val").at("tokens");
  EXPECT_GT(train, val);
  EXPECT_GT(val, 0);
  int64_t listed = 0;
  for (const auto& s : j.at("shards")) {
    const auto sh = io::TokenShard::open(path("out/" + s.at("file").get<std::string>()));
    EXPECT_EQ(sh.size(), s.at("tokens").get<int64_t>());
    listed += sh.size();
  }
  EXPECT_EQ(listed, train + val);
  const auto m = nlohmann::json::parse(read(path("out/manifest.json")));
  EXPECT_NE(m.at("command").get<std::string>().find("--seed 4"), std::string::npos);
  EXPECT_NE(m.at("created_by").get<std::string>().find("nvfp4"), std::string::npos);
}

TEST_F(DataCli, PrintsASummaryTable) {
  MakeTree();
  const RunResult r = RunCli("data " + path("tree") + " --out " + path("out"));
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* s : {"split", "documents", "train", "val", "total", "manifest.json"}) {
    EXPECT_NE(r.output.find(s), std::string::npos) << s << "\n" << r.output;
  }
}

TEST_F(DataCli, ErrorsNameThePathAndWhatToDo) {
  MakeTree();
  RunResult r = RunCli("data " + path("missing.txt") + " --out " + path("out"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find(path("missing.txt") + ": does not exist"), std::string::npos) << r.output;

  ASSERT_EQ(RunCli("data " + path("tree") + " --out " + path("out")).status, 0);
  r = RunCli("data " + path("tree") + " --out " + path("out"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find(path("out") + ": exists and is not empty"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--force"), std::string::npos) << r.output;
  r = RunCli("data " + path("tree") + " --out " + path("out") + " --force");
  EXPECT_EQ(r.status, 0) << r.output;

  write("blank.txt", "");
  r = RunCli("data " + path("blank.txt") + " --out " + path("out2"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("no text"), std::string::npos) << r.output;

  r = RunCli("data " + path("tree") + " --out " + path("out3") + " --tokenizer gpt9");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("unknown tokenizer 'gpt9'"), std::string::npos) << r.output;

  r = RunCli("data " + path("tree") + " --out " + path("out4") + " --val-fraction 1.5");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("--val-fraction"), std::string::npos) << r.output;

  r = RunCli("data " + path("tree"));  // --out is required
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("--out"), std::string::npos) << r.output;
}

}  // namespace
