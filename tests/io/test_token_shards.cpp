// The token side of the data pipeline: the byte tokenizer, token shard files (layout,
// validation, every error naming its file) and the shard loader (windows, epochs, resume).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "io/data_test_util.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/token_shards.hpp"
#include "nvfp4/tokenizer.hpp"

namespace {

namespace fs = std::filesystem;
namespace io = nvfp4::io;
using namespace nvfp4::data_test;

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

}  // namespace
